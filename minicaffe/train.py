"""``minicaffe train`` and ``minicaffe test``: Caffe's ``caffe train`` and ``caffe test``.

Library functions the CLI calls; logs go to the ``minicaffe`` logger in glog's
format (see :mod:`minicaffe.logs`). ``train`` draws the CLI's ProgressLine, so
the solver's own (Python) progress bar is off there: one bar, never two.

Under ``mpiexec -n K`` (:mod:`minicaffe.distributed`) every rank runs
:func:`train`: rank 0 checks the snapshot folder, loads ``--weights`` (sent to
the others when training starts), logs and draws the progress line; a rank that
fails stops them all. With ``--gpu``, rank r on a machine uses the r-th of the
ids given (``all``: device r), as Caffe's ``-gpu 0,1,2,3`` gives each solver one.
"""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import contextmanager

import numpy as np

from . import distributed
from .errors import MinicaffeError
from .logs import ProgressLine, attach_progress
from .net import Net
from .proto.text import read_solver
from .solvers import Solver

log = logging.getLogger("minicaffe")
EFFECTS = ("stop", "snapshot", "none")


def select_mode(gpu):
    """``--gpu``: None for the CPU, an id, or 'all' (minicaffe uses one device: the first)."""
    from .mode import set_device, set_mode_cpu, set_mode_gpu
    if gpu is None:
        set_mode_cpu()
        log.info("Use CPU.")
        return
    world = distributed.world()
    if world.size > 1:      # data-parallel: each rank on a machine takes the next id
        ids = None if str(gpu) == "all" else [int(part) for part in str(gpu).split(",") if part.strip()]
        device = world.local_rank if ids is None else ids[world.local_rank % len(ids)]
    else:
        device = 0 if str(gpu) == "all" else _device_id(gpu)
    set_device(device)
    set_mode_gpu()
    log.info("Using GPUs %d", device)


def _device_id(gpu):
    ids = [part for part in str(gpu).split(",") if part.strip()]
    try:
        values = [int(part) for part in ids]
    except ValueError:
        raise MinicaffeError(f"--gpu takes a device id, a comma-separated list or 'all', not {gpu!r}") from None
    if len(values) > 1:
        log.warning("minicaffe trains on one GPU; using device %d of %s", values[0], gpu)
    return values[0]


def train(solver_path, weights=None, snapshot=None, gpu=None, level=0, stages=(), sigint_effect="stop",
          sighup_effect="snapshot", nan_check=True, progress_stream=None, setup=None):
    """Train as ``caffe train`` does; returns the Solver when done (or stopped).

    ``setup``: called with the Solver once it is built, before training (to add callbacks: ``train --plot``).
    """
    if weights and snapshot:
        raise MinicaffeError("give --snapshot to resume training or --weights to fine-tune, not both")
    world = distributed.world()
    try:
        return _train(world, solver_path, weights, snapshot, gpu, level, stages, sigint_effect, sighup_effect,
                      nan_check, progress_stream, setup)
    except Exception as exc:
        world.fail(exc)         # data-parallel: print it and stop every rank (nothing in one process)
        raise


def _train(world, solver_path, weights, snapshot, gpu, level, stages, sigint_effect, sighup_effect, nan_check,
           progress_stream, setup):
    param = read_solver(solver_path)
    param.train_state.level = level
    param.train_state.stage.extend(stages)
    if world.rank == 0:
        check_snapshot_folder(param, solver_path)
    select_mode(gpu)
    solver = Solver(param, source=solver_path)
    solver.nan_check = nan_check
    solver.progress_bar = False   # the ProgressLine below is the CLI's bar
    if weights and world.rank == 0:     # the other ranks get rank 0's weights when training starts
        for path in str(weights).split(","):
            log.info("Finetuning from %s", path)
            for net in [solver.net] + solver.test_nets:
                net.copy_from(path)
    progress = ProgressLine(progress_stream if progress_stream is not None else sys.stderr,
                            solver.param.max_iter, solver.iter)
    progress.enabled = progress.enabled and world.rank == 0
    attach_progress(progress)
    solver.add_callback(on_start=lambda: progress.update(solver.iter))
    if setup is not None:
        setup(solver)
    log.info("Starting Optimization")
    try:
        with _signal_effects(solver, sigint_effect, sighup_effect):
            solver.solve(resume=snapshot)
    finally:
        progress.clear()
        attach_progress(None)
    return solver


def check_snapshot_folder(param, solver_path):
    """Refuse to start when snapshots could not be written (Caffe's CheckSnapshotWritePermissions), rather
    than fail at the first snapshot, maybe hours in: the folder of ``snapshot_prefix`` (as the solver
    completes it) must exist and take new files. Only when the solver snapshots (``snapshot`` > 0 or
    ``snapshot_after_train``)."""
    if not (param.snapshot > 0 or param.snapshot_after_train):
        return
    from .atomic import check_folder_writable
    from .proto import caffe_pb2
    from .solvers.solver import _fill_snapshot_prefix
    completed = caffe_pb2.SolverParameter()
    completed.CopyFrom(param)
    _fill_snapshot_prefix(completed, solver_path)
    prefix = completed.snapshot_prefix
    check_folder_writable(prefix, f"the snapshot_prefix of {solver_path}")


@contextmanager
def _signal_effects(solver, sigint_effect, sighup_effect):
    """SIGINT and SIGHUP request 'stop' or 'snapshot' from the solver, which acts between iterations."""
    installed = []
    for signum, effect in ((signal.SIGINT, sigint_effect), (getattr(signal, "SIGHUP", None), sighup_effect)):
        if signum is None or effect == "none":
            continue

        def handler(received, frame, effect=effect):
            log.info("Received %s: requesting %s", signal.Signals(received).name, effect)
            solver.requested_action = effect
        try:
            installed.append((signum, signal.signal(signum, handler)))
        except ValueError:  # not the main thread: signals cannot be handled here
            pass
    try:
        yield
    finally:
        for signum, previous in installed:
            signal.signal(signum, previous)


def test(model, weights, iterations=50, gpu=None, level=0, stages=()):
    """Score a model as ``caffe test``: per-batch outputs, then their averages; returns the averages."""
    select_mode(gpu)
    net = Net(model, "TEST", level=level, stages=stages, weights=weights)
    log.info("Running for %d iterations.", iterations)
    totals = {}
    loss = 0.0
    weights_by_blob = net.blob_loss_weights
    for batch in range(iterations):
        net.forward()
        loss += net.last_loss
        for name in net.outputs:
            values = net.blobs[name].read_data().astype(np.float64).reshape(-1)
            totals[name] = totals.get(name, 0.0) + values
            for value in values:
                log.info("Batch %d, %s = %.6g", batch, name, value)
    log.info("Loss: %.6g", loss / iterations)
    means = {}
    for name, total in totals.items():
        for value in total / iterations:
            weight = weights_by_blob[name]
            extra = f" (* {weight:g} = {weight * value:.6g} loss)" if weight else ""
            log.info("%s = %.6g%s", name, value, extra)
        means[name] = total / iterations
    return means
