"""Device-side linear algebra for the GPU kernels: GEMM through cuBLAS, vector updates and reductions.

**GEMM** goes to cuBLAS through CuPy (``cupy.matmul`` on the very memory numba
allocated, shared through ``__cuda_array_interface__``: no copy). CuPy because
it is the well-kept, widely installed binding whose ``matmul`` picks the cuBLAS
GEMM (and its transposes) from the operands' strides, and it shares numba's
default stream, so its products are ordered with our kernels without an
explicit synchronization. It is in the ``gpu`` extra (``cupy-cuda12x``).

Under numba's CUDA simulator (no GPU: CI) device arrays are numpy arrays in
disguise, and GEMM is numpy's ``matmul`` on them: the stand-in for cuBLAS.

**Vector operations** (fill, copy, scale, axpy, axpby) and **reductions** (sum,
absolute sum, dot) are numba.cuda kernels, so they run, and are compiled to
PTX, like every other kernel. A reduction returns a Python float: the one
number crosses to the host, as Caffe's ``caffe_gpu_dot``/``asum`` do.

Arrays are flat or 2-D device arrays (views of a blob's ``gpu_data`` are fine).
"""

from __future__ import annotations

import numpy as np

from . import gpu
from .errors import MinicaffeError
from .gpu import cuda

_cupy_module = None


def _cupy():
    global _cupy_module
    if _cupy_module is None:
        try:
            import cupy
        except ImportError as exc:
            raise MinicaffeError("GPU matrix products need CuPy (cuBLAS): install the GPU extra, "
                                 "pip install 'minicaffe[gpu]' (it brings cupy-cuda12x)") from exc
        _cupy_module = cupy
    return _cupy_module


def host_view(device_array) -> np.ndarray:
    """Under the simulator, the numpy array behind a device array (no copy)."""
    return device_array._ary


def gemm(a, b, out, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
    """``out = alpha * op(a) @ op(b) + beta * out`` on the device; op transposes when asked.

    ``a``, ``b`` and ``out`` are 2-D device arrays of one dtype. ``beta`` 0 ignores what ``out`` held
    (it may be uninitialized memory), as BLAS does.
    """
    if gpu.simulated():
        left, right, target = host_view(a), host_view(b), host_view(out)
        product = (left.T if trans_a else left) @ (right.T if trans_b else right)
        if beta == 0:
            target[...] = product if alpha == 1 else alpha * product
        else:
            target *= target.dtype.type(beta)
            target += (alpha * product).astype(target.dtype, copy=False)
        return out
    cupy = _cupy()
    left, right, target = cupy.asarray(a), cupy.asarray(b), cupy.asarray(out)
    left = left.T if trans_a else left
    right = right.T if trans_b else right
    # cuBLAS reads the operands while it writes ``out``: an ``out`` that overlaps one (a layer run in place,
    # e.g. an InnerProduct with num_output = its input size whose top is its bottom) would be read after
    # other threads overwrote it. The product then goes to a fresh array first, as numpy's matmul (and so
    # the simulator's branch above) does on the host.
    overlaps = cupy.may_share_memory(target, left) or cupy.may_share_memory(target, right)
    if beta == 0 and alpha == 1 and not overlaps:
        cupy.matmul(left, right, out=target)
    elif beta == 0 and alpha == 1:
        target[...] = cupy.matmul(left, right)
    else:
        product = cupy.matmul(left, right)
        if beta == 0:
            cupy.multiply(product, alpha, out=target)
        else:
            target *= beta
            target += alpha * product
    return out


def gemv(a, x, out, trans_a=False, alpha=1.0, beta=0.0):
    """``out = alpha * op(a) @ x + beta * out`` (x and out flat): a GEMM with one column."""
    columns = x.reshape(x.size, 1)
    return gemm(a, columns, out.reshape(out.size, 1), trans_a=trans_a, alpha=alpha, beta=beta)


# ---------------------------------------------------------------- element-wise kernels

@gpu.jit
def _fill(target, value):
    for i in range(cuda.grid(1), target.size, cuda.gridsize(1)):
        target[i] = value


@gpu.jit
def _axpby(alpha, x, beta, y):
    """y = alpha * x + beta * y (beta 0: y is only written)."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        if beta == 0:
            y[i] = alpha * x[i]
        else:
            y[i] = alpha * x[i] + beta * y[i]


@gpu.jit
def _scale(target, alpha):
    for i in range(cuda.grid(1), target.size, cuda.gridsize(1)):
        target[i] = alpha * target[i]


def _launch(kernel, count, *arguments):
    """The element-wise kernels here are grid-stride loops (:func:`minicaffe.gpu.strided`)."""
    if count:
        kernel[gpu.strided(count)](*arguments)


def _number(array, value):
    """``value`` as the array's element type: kernels are compiled for one signature per dtype."""
    return array.dtype.type(value)


def fill(target, value):
    _launch(_fill, target.size, target, _number(target, value))


def copy(source, target):
    """target = source (same count)."""
    _launch(_axpby, target.size, _number(target, 1), source, _number(target, 0), target)


def scale(target, alpha):
    _launch(_scale, target.size, target, _number(target, alpha))


def axpy(alpha, x, y):
    """y += alpha * x."""
    _launch(_axpby, y.size, _number(y, alpha), x, _number(y, 1), y)


def axpby(alpha, x, beta, y):
    """y = alpha * x + beta * y."""
    _launch(_axpby, y.size, _number(y, alpha), x, _number(y, beta), y)


# ---------------------------------------------------------------- reductions

_SUM, _ABS_SUM, _DOT = 0, 1, 2
_THREADS = gpu.THREADS      # a global of this module: numba needs the shared array size as a constant


@gpu.jit
def _reduce(kind, x, y, total):
    """total[0] += sum of x (kind 0), |x| (1) or x * y (2): each thread sums its grid-stride share, the
    block adds them up in a shared-memory tree (blockDim a power of two), one atomic per block; float64."""
    partial = cuda.shared.array(_THREADS, dtype=np.float64)
    thread = cuda.threadIdx.x
    value = 0.0
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        if kind == 0:
            value += x[index]
        elif kind == 1:
            value += abs(x[index])
        else:
            value += x[index] * y[index]
    partial[thread] = value
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if thread < stride:
            partial[thread] += partial[thread + stride]
        cuda.syncthreads()
        stride //= 2
    if thread == 0:
        cuda.atomic.add(total, 0, partial[0])


def _reduction(kind, x, y):
    if x.size == 0:
        return 0.0
    total = gpu.device_zeros(1, np.float64)
    _reduce[gpu.reduction_launch(x.size)](np.int32(kind), x, y, total)
    return float(total.copy_to_host()[0])


def total(x) -> float:
    """sum(x), as a Python float."""
    return _reduction(_SUM, x, x)


def absolute_sum(x) -> float:
    """sum(|x|) (Caffe's asum)."""
    return _reduction(_ABS_SUM, x, x)


def dot(x, y) -> float:
    """sum(x * y)."""
    return _reduction(_DOT, x, y)
