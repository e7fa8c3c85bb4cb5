"""ReLU6: ``y = min(max(x, 0) + negative_slope * min(x, 0), 6)`` (leaky below 0 when negative_slope != 0).

From the MobileNet-v2 Caffe ports (rog93/Caffe-MobileNetV2-ReLU6, by RuiminChen),
with ``relu6_param { negative_slope }`` (default 0) at LayerParameter field 100000.
The clamp at 6 comes last, as in the fork: with a negative slope, ``slope * x``
for a large negative ``x`` is clamped at 6 too.

Gradient, the fork's: ``dx = dy * (1 if 0 < x < 6 else negative_slope if x <= 0
else 0)``, so ``x == 0`` takes the slope and ``x == 6`` takes 0. As in the fork
(and Caffe's ReLU), ``x`` is the bottom's data, which in place is already the
output. NaN stays NaN forward (OpenCV's ReLU6 clamps it to 0) and gives a 0
factor backward, as the fork's comparisons do.

CPU: numba kernels over chunks of rows on minicaffe's threads, as ReLU's
(:mod:`minicaffe.layers.relu`); the result is the same at any thread count.

GPU: one thread per element for Forward and for Backward, with the same
comparisons (so NaN and the points 0 and 6 behave as on the CPU); in place the
kernels read and write the one device array.
"""

from ... import gpu, threads
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...kernels import cpu_kernel
from ...layer import Layer
from ...registry import register
from ..relu import rows_view


@cpu_kernel(nogil=True, inline="always")
def _clamped_leaky(value, slope, zero, six):
    # value >= 0 keeps -0.0 as -0.0 (the fork's max(x, 0) + slope * min(x, 0) does too); a negative
    # value times a zero slope plus +0 gives +0. NaN fails both comparisons and stays NaN.
    out = value if value >= zero else value * slope + zero
    return six if out > six else out


@cpu_kernel(nogil=True, inline="always")
def _factor(value, slope, zero, one, six):
    if value > zero:
        return one if value < six else zero
    return slope if value <= zero else zero       # NaN: neither side, factor 0


@cpu_kernel(nogil=True)
def relu6_forward(x, y, in_place, slope, start, stop):
    """y = min(leaky(x), 6) over rows [start, stop) of (rows, S) views; ``in_place``: x is y."""
    zero = y.dtype.type(0.0)
    six = y.dtype.type(6.0)
    for r in range(start, stop):
        out = y[r]
        if in_place:                      # one array: LLVM vectorizes without an overlap check
            for j in range(out.size):
                out[j] = _clamped_leaky(out[j], slope, zero, six)
        else:
            row = x[r]
            for j in range(row.size):
                out[j] = _clamped_leaky(row[j], slope, zero, six)


@cpu_kernel(nogil=True)
def relu6_backward(x, dy, dx, in_place, slope, start, stop):
    """dx = dy * factor(x) over rows [start, stop); ``in_place``: dx is dy."""
    zero = dx.dtype.type(0.0)
    one = dx.dtype.type(1.0)
    six = dx.dtype.type(6.0)
    for r in range(start, stop):
        row, out = x[r], dx[r]
        if in_place:
            for j in range(row.size):
                out[j] = out[j] * _factor(row[j], slope, zero, one, six)
        else:
            gradient = dy[r]
            for j in range(row.size):
                out[j] = gradient[j] * _factor(row[j], slope, zero, one, six)


@gpu.jit
def _relu6_forward_gpu(x, y, slope):
    i = cuda.grid(1)
    if i < y.size:
        value = x[i]
        out = value if value >= 0 else value * slope + 0.0
        y[i] = 6.0 if out > 6.0 else out


@gpu.jit
def _relu6_backward_gpu(x, dy, dx, slope):
    i = cuda.grid(1)
    if i < dx.size:
        value = x[i]
        factor = 0.0                      # NaN: neither side, factor 0
        if value > 0:
            factor = 1.0 if value < 6.0 else 0.0
        elif value <= 0:
            factor = slope
        dx[i] = dy[i] * factor


@register("ReLU6")
class ReLU6Layer(Layer):
    exact_bottoms = 1
    exact_tops = 1
    fork = "MobileNet-v2 ReLU6 layers (e.g. rog93/Caffe-MobileNetV2-ReLU6)"

    def setup(self, bottom, top):
        self.negative_slope = self.layer_param.relu6_param.negative_slope

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x, y = rows_view(bottom[0].data), rows_view(top[0].data)
        slope = y.dtype.type(self.negative_slope)
        in_place = bottom[0] is top[0]
        threads.parallel_for(x.shape[0], lambda start, stop: relu6_forward(x, y, in_place, slope, start, stop),
                             x.shape[1])

    def forward_gpu(self, bottom, top):
        x = bottom[0].gpu_data
        y = top[0].mutable_gpu_data
        _relu6_forward_gpu[gpu.blocks_for(y.size), gpu.THREADS](x, y, y.dtype.type(self.negative_slope))

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dy = bottom[0].gpu_data, top[0].gpu_diff
        dx = bottom[0].mutable_gpu_diff
        _relu6_backward_gpu[gpu.blocks_for(dx.size), gpu.THREADS](x, dy, dx, dx.dtype.type(self.negative_slope))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dy, dx = rows_view(bottom[0].data), rows_view(top[0].diff), rows_view(bottom[0].diff)
        slope = dx.dtype.type(self.negative_slope)
        in_place = bottom[0] is top[0]
        threads.parallel_for(x.shape[0], lambda start, stop: relu6_backward(x, dy, dx, in_place, slope,
                                                                             start, stop), x.shape[1])
