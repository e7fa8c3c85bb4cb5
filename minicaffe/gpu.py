"""The GPU side: numba.cuda, guarded, plus the device-side pieces loss kernels share.

numba's CUDA target comes from the ``numba-cuda`` package (``minicaffe[gpu]``);
on machines without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is
imported) runs the same kernels in numba's simulator. Kernels are declared with
:func:`jit` (numba's ``cuda.jit``), which compiles on first launch, so importing
minicaffe never needs a GPU.
"""

from __future__ import annotations

import math
import re

import numpy as np

try:
    from numba import cuda
except ImportError:  # pragma: no cover - numba ships or delegates its CUDA module
    cuda = None

from .errors import MinicaffeError

#: Threads per block for the element-wise and reduction kernels.
THREADS = 128


def available() -> bool:
    return cuda is not None and cuda.is_available()


def simulated() -> bool:
    """True under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): device arrays are numpy arrays."""
    from numba import config
    return bool(getattr(config, "ENABLE_CUDASIM", 0))


def require():
    """numba.cuda, or a clear error naming what to install."""
    if cuda is None:
        raise MinicaffeError("numba.cuda cannot be imported: install the GPU extra, pip install 'minicaffe[gpu]'")
    return cuda


class _Unavailable:
    """Stands in for a kernel when numba.cuda is missing: launching it says what to install."""

    def __init__(self, name):
        self.name = name

    def __getitem__(self, launch_configuration):
        require()


class Kernel:
    """A ``numba.cuda.jit`` kernel that remembers, under the simulator, the argument types it was launched with.

    The simulator runs Python that real NVVM refuses, so ``make test`` compiles every kernel to PTX for the
    GPUs we support (``tests/gpu_ptx``) with exactly the types the simulator tests launched it with: the
    signatures are recorded here (:data:`launched_signatures`) and written out at the end of the simulator
    run, so they cannot drift from real use. ``function`` is the Python source kernel.
    """

    def __init__(self, function):
        self.function = function
        self.dispatcher = cuda.jit(function)
        self.key = f"{function.__module__}:{function.__qualname__}"
        KERNELS[self.key] = self
        self._record = simulated()

    def __getitem__(self, launch_configuration):
        launch = self.dispatcher[launch_configuration]
        if not self._record:
            return launch

        def recorded(*arguments):
            launched_signatures.setdefault(self.key, set()).add(tuple(type_name(a) for a in arguments))
            if any(isinstance(a, np.ndarray) for a in arguments):
                host_array_launches.add(self.key)
            return launch(*arguments)
        return recorded

    def __call__(self, *arguments):     # numba's own form is kernel[grid, block](...); calling needs one
        raise TypeError(f"kernel {self.key} is launched as kernel[blocks, threads](...)")


#: Every kernel declared with :func:`jit`, by "module:qualname".
KERNELS = {}
#: Under the simulator: "module:qualname" -> the set of argument-type tuples it was launched with.
launched_signatures = {}
#: Under the simulator: the kernels launched with a host (numpy) array, which a GPU copies there and back at
#: every launch; the GPU tests fail on any (tests/gpu/conftest.py).
host_array_launches = set()


def type_name(argument) -> str:
    """numba's name of a kernel argument's type, as :func:`numba_type` reads it back."""
    numba_type = getattr(argument, "_numba_type_", None)      # device arrays, real or simulated
    if numba_type is None:
        if isinstance(argument, np.ndarray):
            return f"array({argument.dtype.name}, {argument.ndim}, {'C' if argument.flags.c_contiguous else 'A'})"
        if isinstance(argument, (bool, np.bool_)):
            return "boolean"
        if isinstance(argument, (int, np.integer)):
            return np.dtype(type(argument)).name if isinstance(argument, np.integer) else "int64"
        if isinstance(argument, (float, np.floating)):
            return np.dtype(type(argument)).name if isinstance(argument, np.floating) else "float64"
        raise TypeError(f"kernel argument of type {type(argument).__name__}: pass arrays and numbers only")
    return f"array({numba_type.dtype}, {numba_type.ndim}, {numba_type.layout})"


def numba_type(name: str):
    """The numba type :func:`type_name` wrote (for ``numba.cuda.compile_ptx``)."""
    from numba import types
    match = re.fullmatch(r"array\((\w+), (\d+), (\w)\)", name)
    if match:
        element = types.boolean if match[1] in ("bool", "boolean") else getattr(types, match[1])
        return types.Array(element, int(match[2]), match[3])
    return getattr(types, name)


def jit(function):
    """A :class:`Kernel` (``numba.cuda.jit``, lazy: compiles at the first launch)."""
    if cuda is None:
        return _Unavailable(function.__name__)
    return Kernel(function)


def device(function):
    """``numba.cuda.jit(device=True)``: a function kernels call on the device."""
    if cuda is None:
        return function
    return cuda.jit(device=True)(function)


def blocks_for(count: int) -> int:
    return max(1, math.ceil(count / THREADS))


#: Threads a grid-stride kernel gets under the simulator, where each CUDA thread is a Python thread
#: (about 0.2 ms to start): a few threads looping over the elements there, a full grid on a GPU.
SIMULATOR_THREADS = 16


#: Blocks a grid-stride reduction uses at most on a GPU: each thread sums several elements before the tree.
MAX_REDUCTION_BLOCKS = 1024


def reduction_launch(count: int) -> tuple:
    """(blocks, threads) for a grid-stride reduction with a shared-memory tree: threads a power of two
    (THREADS on a GPU, SIMULATOR_THREADS under the simulator)."""
    if simulated():
        return 1, SIMULATOR_THREADS
    return min(blocks_for(count), MAX_REDUCTION_BLOCKS), THREADS


def strided(count: int) -> tuple:
    """(blocks, threads) for a kernel written as a grid-stride loop over ``count`` elements
    (``for i in range(cuda.grid(1), n, cuda.gridsize(1))``): one thread per element on a GPU, a handful
    of threads under the simulator. Launch as ``kernel[gpu.strided(n)](...)``."""
    if simulated():
        return 1, max(1, min(count, SIMULATOR_THREADS))
    return blocks_for(count), THREADS


def device_empty(count: int, dtype):
    return require().device_array(count, dtype=dtype)


def to_device(array):
    return require().to_device(np.ascontiguousarray(array))


def scratch(owner, name: str, count: int, dtype):
    """A device buffer kept on ``owner`` (a layer) under ``name``: allocated again only when its size or
    dtype changes, so a Forward does not allocate device memory at every iteration. Contents are whatever
    the last use left."""
    buffers = owner.__dict__.setdefault("_gpu_scratch", {})
    dtype = np.dtype(dtype)
    buffer = buffers.get(name)
    if buffer is None or buffer.size != count or buffer.dtype != dtype:
        buffer = buffers[name] = require().device_array(count, dtype=dtype)
    return buffer


def scratch_filled(owner, name: str, count: int, dtype, value):
    """:func:`scratch` set to ``value`` on the device (a kernel: no copy from the host)."""
    from . import gpu_blas
    buffer = scratch(owner, name, count, dtype)
    gpu_blas.fill(buffer, value)
    return buffer


def device_zeros(count: int, dtype):
    return require().to_device(np.zeros(count, dtype=dtype))


# -------------------------------------------------------------- shared kernels

if cuda is not None:  # pragma: no branch
    @jit
    def accumulate(values, valid, totals):
        """totals[0] += sum(values), totals[1] += sum(valid): each thread sums its grid-stride share, the
        block a shared-memory tree (blockDim a power of two, at most THREADS), then one atomic per block."""
        partial_sum = cuda.shared.array(THREADS, dtype=np.float64)
        partial_count = cuda.shared.array(THREADS, dtype=np.float64)
        thread = cuda.threadIdx.x
        value_sum = 0.0
        count_sum = 0.0
        for index in range(cuda.grid(1), values.size, cuda.gridsize(1)):
            value_sum += values[index]
            count_sum += valid[index]
        partial_sum[thread] = value_sum
        partial_count[thread] = count_sum
        cuda.syncthreads()
        stride = cuda.blockDim.x // 2
        while stride > 0:
            if thread < stride:
                partial_sum[thread] += partial_sum[thread + stride]
                partial_count[thread] += partial_count[thread + stride]
            cuda.syncthreads()
            stride //= 2
        if thread == 0:
            cuda.atomic.add(totals, 0, partial_sum[0])
            cuda.atomic.add(totals, 1, partial_count[0])

    @jit
    def finish_loss(totals, mode, outer, inner, top_data):
        """top = totals[0] / normalizer, with Caffe's normalizer for ``mode``; keep it in totals[2].

        mode: 0 FULL, 1 VALID, 2 BATCH_SIZE, 3 NONE (LossParameter's values), 4 a fixed divisor
        ``outer`` (EuclideanLoss's 2N is passed as outer).
        """
        if cuda.grid(1) == 0:
            if mode == 0:
                normalizer = outer * inner
            elif mode == 1:
                normalizer = totals[1]
            elif mode == 2:
                normalizer = outer
            elif mode == 3:
                normalizer = 1.0
            else:
                normalizer = outer
            if mode != 4 and normalizer < 1.0:
                normalizer = 1.0
            totals[2] = normalizer
            top_data[0] = totals[0] / normalizer


FIXED_DIVISOR = 4


# -------------------------------------------------------------- device functions
# Pieces the softmax-family loss kernels share; a location's C values sit
# ``inner`` apart from ``base``, as in an (outer, C, inner) array.

@device
def softmax_at(x, prob, base, channels, inner):
    """prob = softmax of one location's C scores; returns (their max, sum of exp(x - max))."""
    top = x[base]
    for c in range(1, channels):
        top = max(top, x[base + c * inner])
    total = 0.0
    for c in range(channels):
        e = math.exp(x[base + c * inner] - top)
        prob[base + c * inner] = e
        total += e
    for c in range(channels):
        prob[base + c * inner] /= total
    return top, total


@device
def class_label(labels, location, channels, has_ignore, ignore_label, bad):
    """The location's class, or -1 when it is ignored or outside [0, C) (that also goes into bad[0])."""
    label = int(labels[location])
    if has_ignore and label == ignore_label:
        return -1
    if label < 0 or label >= channels:
        cuda.atomic.min(bad, 0, location)       # the first bad location, as the CPU kernels report
        return -1
    return label


#: What a bad-location flag holds while no location was bad (the kernels keep the smallest bad one).
NO_BAD_LOCATION = np.iinfo(np.int64).max


def bad_location_flag(owner):
    """A one-element device array (kept on ``owner``) for kernels to record the first bad location in
    (``atomic.min``), reset to :data:`NO_BAD_LOCATION`."""
    return scratch_filled(owner, "bad_location", 1, np.int64, NO_BAD_LOCATION)


def bad_location(flag) -> int:
    """The first bad location a kernel recorded in ``flag``, or -1 (one number crosses to the host)."""
    value = int(flag.copy_to_host()[0])
    return -1 if value == NO_BAD_LOCATION else value


def reduce_loss(owner, values, valid, mode, outer, inner, top_data):
    """Sum per-element losses on the device and write the normalized loss into ``top_data`` (device).

    Returns the device array ``totals`` = [loss sum, valid count, normalizer], kept on ``owner`` (the
    layer): Backward reads the normalizer from it, so nothing returns to the host.
    """
    totals = scratch_filled(owner, "loss_totals", 3, np.float64, 0.0)
    accumulate[reduction_launch(values.size)](values, valid, totals)
    finish_loss[1, 1](totals, mode, float(outer), float(inner), top_data)
    return totals
