"""BinaryCrossEntropyLoss (Mocha.jl): probabilities p in, labels y in [0, 1].

With N = p.shape[0] (the batch) and p clamped to [1e-7, 1 - 1e-7] only to keep
the logs finite (which changes nothing inside that range; Mocha does not clamp)::

    loss = -1/N sum(y log p + (1 - y) log(1 - p))
    dp   = -w (y / p - (1 - y) / (1 - p)) / N
    dy   = -w log(p / (1 - p)) / N

The labels take a gradient too, so soft targets produced by another net learn.
``w`` is the loss weight in ``top[0].diff``. The divisor is fixed (N).
"""

import math

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...layer import LossLayer
from ...registry import register

_EPSILON = 1e-7


# Constants in the array's dtype: a float64 literal would turn float32 arithmetic
# into float64 and send kernels.log to the scalar libm call (no SIMD).

@kernels.cpu_kernel
def _bce_sum(p, y):
    total = 0.0
    one = p.dtype.type(1.0)
    low, high = p.dtype.type(_EPSILON), p.dtype.type(1.0 - _EPSILON)
    for i in range(p.size):
        q = min(max(p[i], low), high)
        total -= y[i] * kernels.log(q) + (one - y[i]) * kernels.log(one - q)
    return total


@kernels.cpu_kernel
def _bce_gradients(p, y, scale, want_p, want_y, p_diff, y_diff):
    one = p.dtype.type(1.0)
    low, high = p.dtype.type(_EPSILON), p.dtype.type(1.0 - _EPSILON)
    if want_p:
        for i in range(p.size):
            q = min(max(p[i], low), high)
            p_diff[i] = -scale * (y[i] / q - (one - y[i]) / (one - q))
    if want_y:
        for i in range(p.size):
            q = min(max(p[i], low), high)
            y_diff[i] = -scale * (kernels.log(q) - kernels.log(one - q))


@gpu.jit
def _bce_terms_gpu(p, y, terms, ones):
    i = cuda.grid(1)
    if i < p.size:
        q = min(max(p[i], 1e-7), 1.0 - 1e-7)
        terms[i] = -(y[i] * math.log(q) + (1.0 - y[i]) * math.log(1.0 - q))
        ones[i] = 1.0


@gpu.jit
def _bce_gradients_gpu(p, y, top_diff, inverse_num, want_p, want_y, p_diff, y_diff):
    i = cuda.grid(1)
    if i < p.size:
        scale = top_diff[0] * inverse_num
        q = min(max(p[i], 1e-7), 1.0 - 1e-7)
        if want_p:
            p_diff[i] = -scale * (y[i] / q - (1.0 - y[i]) / (1.0 - q))
        if want_y:
            y_diff[i] = -scale * (math.log(q) - math.log(1.0 - q))


@register("BinaryCrossEntropyLoss")
class BinaryCrossEntropyLossLayer(LossLayer):
    never_backward_bottoms = ()

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.shape_error("probabilities and labels must have the same number of elements",
                                   expected=bottom[0].shape, actual=bottom[1].shape)

    def forward(self, bottom, top):
        p = bottom[0].data.reshape(-1)
        y = bottom[1].data.reshape(-1).astype(p.dtype, copy=False)
        top[0].data[...] = _bce_sum(p, y) / bottom[0].shape[0]

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        p = bottom[0].data.reshape(-1)
        scale = p.dtype.type(self.loss_weight_scale(top, bottom[0].shape[0]))
        _bce_gradients(p, bottom[1].data.reshape(-1).astype(p.dtype, copy=False), scale, bool(propagate_down[0]),
                       bool(propagate_down[1]), bottom[0].diff.reshape(-1), bottom[1].diff.reshape(-1))

    def forward_gpu(self, bottom, top):
        count = bottom[0].count
        terms = gpu.scratch(self, "terms", count, np.float64)
        ones = gpu.scratch(self, "ones", count, np.float64)
        _bce_terms_gpu[gpu.blocks_for(count), gpu.THREADS](bottom[0].gpu_data, bottom[1].gpu_data, terms, ones)
        gpu.reduce_loss(self, terms, ones, gpu.FIXED_DIVISOR, bottom[0].shape[0], 1, top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        count = bottom[0].count
        _bce_gradients_gpu[gpu.blocks_for(count), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, top[0].gpu_diff, 1.0 / bottom[0].shape[0],
            bool(propagate_down[0]), bool(propagate_down[1]), bottom[0].mutable_gpu_diff, bottom[1].mutable_gpu_diff)
