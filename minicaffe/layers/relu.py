"""ReLU: ``y = max(x, 0) + negative_slope * min(x, 0)`` (leaky when negative_slope != 0).

Gradient: ``dx = dy * (1 if x > 0 else negative_slope)``, testing the bottom's
data as Caffe does (in place, that is already the output, as in Caffe).

CPU: the one-pass numba kernels below, shared with PReLU (one slope per row,
here the same for all), over chunks of rows run on minicaffe's threads
(:mod:`minicaffe.threads`; a small blob stays on one thread). A negative input
times a zero slope gives ``+0``, as Caffe's sum does; NaN stays NaN.

GPU: one thread per element for Forward and for Backward, as Caffe's
``ReLUForward``/``ReLUBackward``; in place the kernels read and write the one
device array, element by element, so they need no copy.
"""

import math

from .. import gpu, threads
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..kernels import cpu_kernel
from ..layer import Layer
from ..registry import register


# The kernels take (rows, S) views, one slope per row: slopes[r % channels]. In place they
# loop over the one array, because LLVM vectorizes a loop over two arrays only after a
# run-time check that they do not overlap, which the same array fails (scalar code, 2.4x
# slower on a ReLU).

@cpu_kernel(nogil=True, inline="always")
def _leaky(value, slope, zero):
    return value if value > 0 else value * slope + zero


@cpu_kernel(nogil=True)
def leaky_forward(x, y, in_place, saved, keep, slopes, channels, start, stop):
    """y = x if x > 0 else slope * x over rows [start, stop) (``in_place``: x is y); with ``keep``,
    each row of x is first copied to ``saved``."""
    zero = y.dtype.type(0.0)
    for r in range(start, stop):
        slope = slopes[r % channels]
        out = y[r]
        if keep:
            saved[r, :] = x[r]
        if in_place:
            for j in range(out.size):
                out[j] = _leaky(out[j], slope, zero)
        else:
            row = x[r]
            for j in range(row.size):
                out[j] = _leaky(row[j], slope, zero)


@cpu_kernel(nogil=True)
def leaky_backward(x, dy, dx, in_place, slopes, channels, start, stop):
    """dx = dy * (1 if x > 0 else slope) over rows [start, stop); ``in_place``: dx is dy."""
    for r in range(start, stop):
        slope = slopes[r % channels]
        row, out = x[r], dx[r]
        if in_place:
            for j in range(row.size):
                out[j] = out[j] if row[j] > 0 else out[j] * slope
        else:
            gradient = dy[r]
            for j in range(row.size):
                out[j] = gradient[j] if row[j] > 0 else gradient[j] * slope


@gpu.jit
def _relu_forward_gpu(x, y, slope):
    i = cuda.grid(1)
    if i < y.size:
        value = x[i]
        # + 0.0 as on the CPU: a negative value times a zero slope gives +0.
        y[i] = value if value > 0 else value * slope + 0.0


@gpu.jit
def _relu_backward_gpu(x, dy, dx, slope):
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = dy[i] if x[i] > 0 else dy[i] * slope


def rows_view(array):
    """(rows, S) view of a blob's array: S the product of the axes after the first two (the last for 2-D)."""
    if array.ndim <= 1:
        return array.reshape(1, array.size)
    if array.ndim == 2:
        return array
    return array.reshape(array.shape[0] * array.shape[1], math.prod(array.shape[2:]))


@register("ReLU")
class ReLULayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        self.negative_slope = self.layer_param.relu_param.negative_slope

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x, y = rows_view(bottom[0].data), rows_view(top[0].data)
        slopes = x.dtype.type(self.negative_slope).reshape(1)
        in_place = bottom[0] is top[0]
        threads.parallel_for(x.shape[0], lambda start, stop: leaky_forward(x, y, in_place, x, False, slopes, 1,
                                                                           start, stop), x.shape[1])

    def forward_gpu(self, bottom, top):
        x = bottom[0].gpu_data
        y = top[0].mutable_gpu_data
        _relu_forward_gpu[gpu.blocks_for(y.size), gpu.THREADS](x, y, y.dtype.type(self.negative_slope))

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dy = bottom[0].gpu_data, top[0].gpu_diff
        dx = bottom[0].mutable_gpu_diff
        _relu_backward_gpu[gpu.blocks_for(dx.size), gpu.THREADS](x, dy, dx, dx.dtype.type(self.negative_slope))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dy, dx = rows_view(bottom[0].data), rows_view(top[0].diff), rows_view(bottom[0].diff)
        slopes = dx.dtype.type(self.negative_slope).reshape(1)
        in_place = bottom[0] is top[0]
        threads.parallel_for(x.shape[0], lambda start, stop: leaky_backward(x, dy, dx, in_place, slopes, 1,
                                                                            start, stop), x.shape[1])
