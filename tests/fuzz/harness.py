"""The fuzz harness's oracle, sandbox and entry points (tests/fuzz, issue 23).

The oracle: an input may be refused, but only with a :class:`minicaffe.errors.MinicaffeError` (or a
subclass: PrototxtError, GraphError, ShapeError, WeightsError, DataError, MemoryLimitError...). Anything
else escaping an entry point (a KeyError, numpy's ValueError, protobuf's EncodeError, h5py's OSError,
a MemoryError) fails the test with its traceback, and hypothesis shrinks the input to the fewest edits.

Every example runs in :func:`sandbox`: the working directory is a temporary folder (a mutated path or
snapshot prefix can only write there), HOME points there too (no ``~/.caffeinit`` is read), nets are held
to :data:`MAX_MEMORY` by the memory estimate (minicaffe.memory_budget), so an absurd shape is refused
before it allocates, the address space may grow by :data:`HEADROOM` at most (what the estimate misses is a
MemoryError, a failure, not the OOM killer), a damaged HDF5 file that makes the HDF5 library loop is
stopped after :data:`HDF5_READ_TIMEOUT` seconds, and warnings are silenced. No Python layer is ever loaded: inputs that name the
type ``Python`` are skipped (a Python layer's own exceptions pass through unchanged, by design).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import warnings

import numpy as np
from hypothesis import assume, event, settings
from hypothesis.errors import InvalidArgument

import minicaffe
from minicaffe.errors import MinicaffeError
from minicaffe.memory_budget import max_memory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
MAX_MEMORY = "256M"

#: The layer types a mutation may give a layer in the ``ci`` profile: few, so that few numba kernels are
#: compiled or loaded from the cache. The ``long`` profile uses every registered type but Python.
CI_TYPES = ["Input", "DummyData", "Convolution", "Pooling", "InnerProduct", "ReLU", "Sigmoid", "TanH",
            "Softmax", "SoftmaxWithLoss", "EuclideanLoss", "Eltwise", "Concat", "Slice", "Flatten", "Reshape",
            "Split", "Dropout", "BatchNorm", "Scale", "Accuracy", "Power", "Silence", "Reduction", "Crop",
            "ArgMax", "Tile", "Bias", "Deconvolution", "LRN", "Embed", "Filter", "Data", "Parameter"]


def examples(count: int) -> int:
    """Examples per test: ``count`` in the ``ci`` profile (times ``FUZZ_SCALE``), else the profile's own."""
    if settings.default.derandomize:
        return max(1, int(count * float(os.environ.get("FUZZ_SCALE", "1"))))
    return settings.default.max_examples


def long_run() -> bool:
    return not settings.default.derandomize


def layer_types() -> list:
    if long_run():
        from minicaffe.registry import known_types
        return [name for name in known_types() if name != "Python"]
    return CI_TYPES


_folder = None
_counter = itertools.count()


def work_folder() -> str:
    """The harness's temporary folder (one per process, removed at exit)."""
    global _folder
    if _folder is None:
        _folder = tempfile.mkdtemp(prefix="minicaffe-fuzz-")
        import atexit
        atexit.register(shutil.rmtree, _folder, ignore_errors=True)
    return _folder


def fresh_path(name: str) -> str:
    """A path in the work folder no earlier example used (databases are cached by path)."""
    folder = os.path.join(work_folder(), f"x{next(_counter)}")
    os.makedirs(folder)
    return os.path.join(folder, name)


#: How much more address space than it already has an example may take (RLIMIT_AS, soft): an allocation the
#: memory estimate missed then raises MemoryError (a failure, with its traceback) instead of letting the
#: kernel's OOM killer end the run.
HEADROOM = 3 << 30
#: Seconds the child process reading an HDF5 file may take (minicaffe.solvers.hdf5.READ_TIMEOUT, 30 s by
#: default): the seeds read in milliseconds, and a damaged file that makes the HDF5 library loop is
#: reported (a WeightsError) this much later.
HDF5_READ_TIMEOUT = 5.0


@contextlib.contextmanager
def address_space_limit(headroom=HEADROOM):
    """Lower the soft RLIMIT_AS to the address space in use plus ``headroom`` for the block."""
    try:
        import resource
        with open("/proc/self/status") as status:
            in_use = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = in_use + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def sandbox():
    """Run an example inside the work folder, with the memory limit, HOME there and warnings off."""
    folder = work_folder()
    previous = os.getcwd()
    home = os.environ.get("HOME")
    os.chdir(folder)
    os.environ["HOME"] = folder
    logger = logging.getLogger("minicaffe")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    from minicaffe.solvers import hdf5
    read_timeout = hdf5.READ_TIMEOUT
    hdf5.READ_TIMEOUT = HDF5_READ_TIMEOUT
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), max_memory(MAX_MEMORY, "fuzz harness"), \
                address_space_limit():
            warnings.simplefilter("ignore")
            yield folder
    finally:
        hdf5.READ_TIMEOUT = read_timeout
        logger.setLevel(level)
        os.chdir(previous)
        if home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = home


def accept(call, *args, **kwargs):
    """The oracle: ``call``'s result, or None when it refuses with a MinicaffeError. Anything else raises."""
    try:
        return call(*args, **kwargs)
    except MinicaffeError as exc:
        if os.environ.get("FUZZ_REASONS"):       # --hypothesis-show-statistics then lists the refusals
            count(f"{getattr(call, '__name__', call)}: {type(exc).__name__}: {str(exc)[:90]}")
        return None


def count(what: str):
    """A hypothesis event (``--hypothesis-show-statistics`` shows how far the examples got); no-op outside one."""
    try:
        event(what)
    except InvalidArgument:
        pass


def no_python_layers(text: str):
    """Skip inputs that would load a Python layer (their code's own exceptions pass through by design)."""
    assume('"Python"' not in text and "'Python'" not in text and "python_param" not in text)


def close_net(net):
    """Stop data layers' prefetch threads and close their databases."""
    if net is None:
        return
    for layer in net.layers:
        close = getattr(layer, "close", None)
        if close is not None:
            try:
                close()
            except MinicaffeError:
                pass


# ---------------------------------------------------------------- entry points

def exercise_net_file(path, phases=("TEST", "TRAIN")):
    """What ``minicaffe upgrade``, ``check`` and ``forward``/``train`` do with a net file: parse and upgrade it
    (and write the upgrade), infer its shapes (and describe them), build it for real within the memory
    limit, run Forward, Backward and Forward again."""
    from minicaffe.check import check_net, describe
    from minicaffe.convert import upgrade_file
    accept(upgrade_file, path, os.path.join(os.path.dirname(path), "upgraded.prototxt"), "net")
    for phase in phases:
        checked = accept(check_net, path, phase)
        if checked is not None:
            accept(describe, checked)
        net = accept(minicaffe.Net, path, phase)
        if net is None:
            count("net refused")
            continue
        try:
            if accept(net.forward) is not None:
                count("forward ran")
                accept(net.backward)
                accept(net.forward)         # a second pass: reshapes and data layers' next batch
        finally:
            close_net(net)


def read_seed(*parts) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as handle:
        return handle.read()
