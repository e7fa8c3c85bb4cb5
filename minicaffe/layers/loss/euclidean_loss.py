"""EuclideanLoss (Mocha's SquareLoss): ``loss = sum((a - b)^2) / (2N)``, N = a.shape[0].

Gradients: ``da = +w (a - b) / N`` and ``db = -w (a - b) / N`` for the bottoms
``propagate_down`` asks for, ``w`` the loss weight in ``top[0].diff``. Both
bottoms can take a gradient: it regresses one blob onto another, so neither is
a label. The divisor is fixed (N): ``loss_param.normalization`` does not apply.

CPU: one fused pass computes ``a - b`` (kept for Backward) and its squared norm.

GPU: one thread per element computes the difference (kept on the device) and its
square; the sum is reduced on the device and divided by 2N into the top.
"""

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...layer import LossLayer
from ...registry import register


@kernels.cpu_kernel
def _difference_and_sum_of_squares(a, b, difference):
    total = 0.0
    for i in range(a.size):
        value = a[i] - b[i]
        difference[i] = value
        total += value * value
    return total


@kernels.cpu_kernel
def _scaled_copy(source, alpha, target):
    for i in range(source.size):
        target[i] = alpha * source[i]


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _difference_gpu(a, b, difference, squares, ones):
    i = cuda.grid(1)
    if i < a.size:
        value = a[i] - b[i]
        difference[i] = value
        squares[i] = value * value
        ones[i] = 1.0


@gpu.jit
def _scaled_gpu(difference, top_diff, factor, target):
    i = cuda.grid(1)
    if i < difference.size:
        target[i] = factor * top_diff[0] * difference[i]


@register("EuclideanLoss", "SquareLoss")
class EuclideanLossLayer(LossLayer):
    never_backward_bottoms = ()

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.shape_error("the two inputs must have the same number of elements",
                                   expected=bottom[0].shape, actual=bottom[1].shape)

    def forward(self, bottom, top):
        a = bottom[0].data.reshape(-1)
        b = bottom[1].data.reshape(-1)
        if getattr(self, "difference", None) is None or self.difference.shape != a.shape \
                or self.difference.dtype != a.dtype:
            self.difference = np.empty_like(a)
        total = _difference_and_sum_of_squares(a, b.astype(a.dtype, copy=False), self.difference)
        top[0].data[...] = total / bottom[0].shape[0] / 2

    def forward_gpu(self, bottom, top):
        count = bottom[0].count
        self.gpu_difference = gpu.scratch(self, "gpu_difference", count, bottom[0].dtype)
        squares = gpu.scratch(self, "squares", count, np.float64)
        ones = gpu.scratch(self, "ones", count, np.float64)
        _difference_gpu[gpu.blocks_for(count), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, self.gpu_difference, squares, ones)
        gpu.reduce_loss(self, squares, ones, gpu.FIXED_DIVISOR, 2 * bottom[0].shape[0], 1, top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        num = bottom[0].shape[0]
        for index, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[index]:
                _scaled_gpu[gpu.blocks_for(bottom[index].count), gpu.THREADS](
                    self.gpu_difference, top[0].gpu_diff, sign / num, bottom[index].mutable_gpu_diff)

    def backward(self, top, propagate_down, bottom):
        num = bottom[0].shape[0]
        for index, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[index]:
                alpha = sign * self.loss_weight_scale(top, num)
                _scaled_copy(self.difference, bottom[index].dtype.type(alpha), bottom[index].diff.reshape(-1))
