"""Reading solver states (``.solverstate`` and ``.solverstate.h5``), checked before anything is restored.

A solver state is the one file that resuming trusts for the iteration, the
update history, the random generator and the data layers' positions, so every
value is checked here, where the file's content enters, and a bad one is a
:class:`WeightsError` naming the file, the field and the value: ``iter`` and
``current_step`` in range, history blobs whose values fill their shape, a
``learned_net`` path without NUL bytes, and minicaffe's ``rng_state`` and
``data_cursor`` entries being the JSON it writes (``rng_state`` is one
generator's state, or ``{"ranks": [state, ...]}`` from a data-parallel
run). Nothing is unpickled or executed: binary files are protobuf, HDF5 ones
numeric datasets and strings.
What depends on the solver (how many history blobs, their sizes, which data
layers exist) is checked by :meth:`minicaffe.solvers.solver.Solver.restore`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..errors import WeightsError
from ..fillers import check_random_state
from ..io import _parse_binary, _read_bytes, check_blob
from ..proto import caffe_pb2

#: The largest iteration a SolverState can record (its ``iter`` is an int32).
MAX_ITER = 2 ** 31 - 1


@dataclass
class CheckedState:
    """A SolverState whose values passed :func:`check_state`, with its JSON fields parsed."""

    state: "caffe_pb2.SolverState"
    rng_state: dict | None = None                    # the generator state of rank 0 (of the only process)
    rank_rng_states: list = field(default_factory=list)   # every rank's, in rank order (one without MPI)
    cursors: dict = field(default_factory=dict)      # (net, layer) -> the cursor's JSON object


def read_state(path) -> CheckedState:
    """Read and check the solver state at ``path`` (HDF5 when the name ends in ``.h5``)."""
    path = os.fspath(path)
    if path.endswith(".h5"):
        from .hdf5 import read_state_hdf5
        state = read_state_hdf5(path)
    else:
        payload = _read_bytes(path, "cannot read solver state")
        state = _parse_binary(path, payload, caffe_pb2.SolverState(), "SolverState (.solverstate)")
    return check_state(state, path)


def check_state(state: "caffe_pb2.SolverState", path) -> CheckedState:
    """Check the values of a SolverState read from ``path`` (see the module's docstring)."""
    if not 0 <= state.iter <= MAX_ITER:
        raise WeightsError(path, f"iter is {state.iter}; an iteration is between 0 and {MAX_ITER}")
    if state.current_step < 0:
        raise WeightsError(path, f"current_step is {state.current_step}; a step count cannot be negative")
    if "\0" in state.learned_net:
        raise WeightsError(path, f"learned_net {state.learned_net[:200]!r} contains a NUL byte, which no path can")
    for index, blob in enumerate(state.history):
        check_blob(blob, path, f"history blob {index}")
    checked = CheckedState(state)
    if state.rng_state:
        rng = _json(state.rng_state, path, "rng_state")
        ranks = [rng]
        per_rank = isinstance(rng, dict) and set(rng) == {"ranks"}     # a data-parallel run's, one per rank
        if per_rank:
            ranks = rng["ranks"]
            if not isinstance(ranks, list) or not ranks:
                raise WeightsError(path, f"rng_state's 'ranks' is {ranks!r:.80}, not a list of generator states")
        for index, value in enumerate(ranks):
            problem = check_random_state(value)
            if problem:
                where = f"rng_state of rank {index}" if per_rank else "rng_state"
                raise WeightsError(path, f"{where} is not a generator state minicaffe wrote: {problem}")
        checked.rng_state = ranks[0]
        checked.rank_rng_states = ranks
    for cursor in state.data_cursor:
        where = f"data_cursor of layer '{cursor.layer}' in the {cursor.net} net"
        value = _json(cursor.state, path, where)
        if not isinstance(value, dict):
            raise WeightsError(path, f"{where} is a JSON {type(value).__name__} ({cursor.state[:80]!r}), "
                               "not an object")
        checked.cursors[(cursor.net, cursor.layer)] = value
    return checked


def _json(text, path, where):
    try:
        return json.loads(text)
    except ValueError as exc:       # JSONDecodeError, and int strings past Python's digit limit
        raise WeightsError(path, f"{where} is not the JSON minicaffe writes ({exc}): {text[:80]!r}") from None
    except RecursionError:
        raise WeightsError(path, f"{where} is JSON nested too deeply: {text[:80]!r}") from None
