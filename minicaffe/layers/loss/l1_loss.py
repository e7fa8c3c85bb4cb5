"""L1Loss: the mean absolute difference per sample, ``loss = sum |a - b| / N``, N = a.shape[0].

Not a BVLC Caffe layer (seed 001 lists it; several forks have one). Gradients,
``w`` the loss weight in ``top[0].diff``, for the bottoms ``propagate_down`` asks
for::

    da = +w sign(a - b) / N,    db = -w sign(a - b) / N,    sign(0) = 0 (a subgradient)

Both bottoms can take a gradient (it regresses one blob onto another, like
EuclideanLoss). The divisor is fixed (N): ``loss_param.normalization`` does not
apply. The two bottoms need the same number of elements.

CPU: one vectorized pass for the sum; Backward recomputes the signs from the
inputs (cheaper than storing them) and writes every requested diff in one pass.

GPU: one thread per element; the sum is reduced and divided by N on the device.
"""

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...layer import LossLayer
from ...registry import register


@kernels.cpu_kernel
def _absolute_sum(a, b):
    total = 0.0
    for i in range(a.size):
        total += abs(a[i] - b[i])
    return total


@kernels.cpu_kernel
def _sign_gradient(a, b, scale, diff):
    """diff = scale * sign(a - b), sign(0) = 0."""
    zero = a.dtype.type(0.0)
    for i in range(a.size):
        value = a[i] - b[i]
        diff[i] = scale if value > zero else (-scale if value < zero else zero)


@kernels.cpu_kernel
def _sign_gradients(a, b, scale, diff_a, diff_b):
    """Both bottoms at once: diff_a = scale * sign(a - b), diff_b = -diff_a."""
    zero = a.dtype.type(0.0)
    for i in range(a.size):
        value = a[i] - b[i]
        gradient = scale if value > zero else (-scale if value < zero else zero)
        diff_a[i] = gradient
        diff_b[i] = -gradient


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _absolute_gpu(a, b, values):
    i = cuda.grid(1)
    if i < a.size:
        values[i] = abs(a[i] - b[i])


@gpu.jit
def _sign_gradient_gpu(a, b, factor, top_diff, diff):
    i = cuda.grid(1)
    if i < a.size:
        value = a[i] - b[i]
        scale = factor * top_diff[0]
        diff[i] = scale if value > 0 else (-scale if value < 0 else 0.0)


@register("L1Loss")
class L1LossLayer(LossLayer):
    never_backward_bottoms = ()

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.shape_error("the two inputs must have the same number of elements",
                                   expected=bottom[0].shape, actual=bottom[1].shape)
        self.num = bottom[0].shape[0]

    def _inputs(self, bottom):
        a = bottom[0].data.reshape(-1)
        return a, bottom[1].data.reshape(-1).astype(a.dtype, copy=False)

    def forward(self, bottom, top):
        a, b = self._inputs(bottom)
        top[0].data[...] = _absolute_sum(a, b) / self.num

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        a, b = self._inputs(bottom)
        scale = a.dtype.type(self.loss_weight_scale(top, self.num))
        if propagate_down[0] and propagate_down[1]:
            _sign_gradients(a, b, scale, bottom[0].diff.reshape(-1), bottom[1].diff.reshape(-1))
        elif propagate_down[0]:
            _sign_gradient(a, b, scale, bottom[0].diff.reshape(-1))
        else:
            _sign_gradient(a, b, -scale, bottom[1].diff.reshape(-1))

    def forward_gpu(self, bottom, top):
        count = bottom[0].count
        values = gpu.scratch(self, "values", count, np.float64)
        _absolute_gpu[gpu.blocks_for(count), gpu.THREADS](bottom[0].gpu_data, bottom[1].gpu_data, values)
        gpu.reduce_loss(self, values, values, gpu.FIXED_DIVISOR, self.num, 1, top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        for index, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[index]:
                _sign_gradient_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
                    bottom[0].gpu_data, bottom[1].gpu_data, sign / self.num, top[0].gpu_diff,
                    bottom[index].mutable_gpu_diff)
