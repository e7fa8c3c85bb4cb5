"""Reduction: sum-like reductions over all axes from ``axis`` on.

``reduction_param``: ``operation`` SUM (default), ASUM, SUMSQ or MEAN; ``axis``
(default 0, negative counts from the end); ``coeff`` (default 1). The top has
the bottom's leading axes ``shape[:axis]`` (a scalar for axis 0). Viewing the
bottom as M x D (D: the product of the reduced axes)::

    SUM:   y = coeff * sum_d x          dx = coeff * dy
    ASUM:  y = coeff * sum_d |x|        dx = coeff * sign(x) * dy   (sign(0) = 0)
    SUMSQ: y = coeff * sum_d x^2        dx = 2 * coeff * x * dy
    MEAN:  y = coeff * sum_d x / D      dx = coeff / D * dy

GPU: Forward gives each of the M rows a block of threads (128, or the power of
two that covers a shorter row), which strides over the row's D values and sums
them (x, |x| or x^2) in float64 in a shared-memory tree; the block's first
thread scales the sum into the top. Backward is one thread per bottom element,
with the CPU's order of operations.
"""

import math

import numpy as np

from .. import gpu
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register

_OPS = caffe_pb2.ReductionParameter.ReductionOp
_OPERATION_CODES = {"SUM": 0, "ASUM": 1, "SUMSQ": 2, "MEAN": 3}
_THREADS = gpu.THREADS      # a global of this module: numba needs the shared array size as a constant


@gpu.jit
def _reduce_rows_gpu(x, y, operation, length, coeff):
    """y[row] = coeff * the sum over the row's ``length`` values (operation: SUM, ASUM, SUMSQ, MEAN = 0..3);
    one block per row, its size a power of two up to _THREADS."""
    partial = cuda.shared.array(_THREADS, dtype=np.float64)
    row = cuda.blockIdx.x
    thread = cuda.threadIdx.x
    threads = cuda.blockDim.x
    total = 0.0
    for d in range(thread, length, threads):
        value = x[row * length + d]
        if operation == 1:
            total += abs(value)
        elif operation == 2:
            total += value * value
        else:
            total += value
    partial[thread] = total
    cuda.syncthreads()
    stride = threads // 2
    while stride > 0:
        if thread < stride:
            partial[thread] += partial[thread + stride]
        cuda.syncthreads()
        stride //= 2
    if thread == 0:
        result = partial[0]
        if operation == 3:
            result = result / length if length > 0 else math.nan     # numpy's mean of nothing
        y[row] = result * coeff


@gpu.jit
def _reduction_backward_gpu(x, dy, dx, operation, length, coeff):
    i = cuda.grid(1)
    if i < dx.size:
        scaled = dy[i // length] * coeff
        if operation == 0:
            dx[i] = scaled
        elif operation == 1:
            value = x[i]
            if value > 0:
                dx[i] = scaled
            elif value < 0:
                dx[i] = -scaled
            elif value == 0:
                dx[i] = 0 * scaled
            else:
                dx[i] = value       # sign(NaN) is NaN
        elif operation == 2:
            dx[i] = x[i] * (scaled * 2)
        else:
            dx[i] = scaled / length


@register("Reduction")
class ReductionLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.reduction_param
        self.operation = _OPS.Name(param.operation) if param.operation in _OPS.values() else None
        if self.operation is None:
            raise GraphError(f"unknown reduction operation {param.operation}", layer=self.name)
        self.coeff = float(param.coeff)

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.layer_param.reduction_param.axis, layer=self.name)
        self.view = (bottom[0].count_axes(0, axis), bottom[0].count_axes(axis))
        top[0].reshape(bottom[0].shape[:axis])

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        if self.operation == "SUM":
            y = x.sum(axis=1)
        elif self.operation == "ASUM":
            y = np.abs(x).sum(axis=1)
        elif self.operation == "SUMSQ":
            y = np.einsum("md,md->m", x, x)
        else:
            y = x.sum(axis=1) / x.dtype.type(self.view[1])
        if self.coeff != 1:
            y *= x.dtype.type(self.coeff)
        top[0].data.reshape(-1)[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dtype = self.dtype.type
        dy = top[0].diff.reshape(-1, 1) * dtype(self.coeff)
        dx = bottom[0].diff.reshape(self.view)
        if self.operation == "SUM":
            dx[...] = dy
        elif self.operation == "ASUM":
            np.multiply(np.sign(bottom[0].data.reshape(self.view)), dy, out=dx)
        elif self.operation == "SUMSQ":
            np.multiply(bottom[0].data.reshape(self.view), dy * dtype(2), out=dx)
        else:
            dx[...] = dy / dtype(self.view[1])

    def forward_gpu(self, bottom, top):
        rows, length = self.view
        if rows:
            # short rows get a smaller block: a power of two at least the row's length
            threads = min(_THREADS, 1 << max(length - 1, 0).bit_length())
            _reduce_rows_gpu[rows, threads](bottom[0].gpu_data, top[0].gpu_data_to_overwrite(),
                                            _OPERATION_CODES[self.operation], length, float(self.coeff))

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0] or not bottom[0].count:
            return
        rows, length = self.view
        dtype = self.dtype.type
        _reduction_backward_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
            bottom[0].gpu_data, top[0].gpu_diff, bottom[0].mutable_gpu_diff, _OPERATION_CODES[self.operation],
            length, dtype(self.coeff))
