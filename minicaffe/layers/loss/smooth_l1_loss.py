"""SmoothL1Loss, as Fast/Faster R-CNN's Caffe fork defines it (box regression).

Bottoms: prediction ``a``, target ``b``, and optionally inside weights ``u``
and outside weights ``v`` (both or neither), all with ``a``'s element count.
With ``s = smooth_l1_loss_param.sigma`` (default 1) and N = a.shape[0]::

    d_i    = u_i (a_i - b_i)                                (u = 1 without weights)
    f(d)   = 0.5 s^2 d^2          if |d| < 1/s^2
           = |d| - 0.5 / s^2      otherwise
    loss   = sum_i v_i f(d_i) / N                          (v = 1 without weights)
    f'(d)  = s^2 d                if |d| < 1/s^2,   sign(d) otherwise
    da_i   = +w v_i u_i f'(d_i) / N,    db_i = -da_i       (per propagate_down)

``w`` is the loss weight in ``top[0].diff``. Inside weights scale the
difference (a zero weight switches a coordinate off), outside weights scale
each element's loss. The weights never take a gradient. The divisor is fixed
(N): ``loss_param.normalization`` does not apply. The parameter message is
minicaffe's copy of the fork's, under the same text name
(``smooth_l1_loss_param { sigma: 3 }``) so the fork's prototxts parse.

CPU: one vectorized pass for the loss; Backward recomputes ``d`` from the
inputs and writes every requested diff in one pass.

GPU: one thread per element; the sum is reduced and divided by N on the device.
"""

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError
from ...layer import LossLayer
from ...registry import register


# With no weights the kernels get ``weighted=False`` and ``a`` in the weights'
# places (never read): LLVM unswitches the loop-invariant branch.

@kernels.cpu_kernel
def _smooth_l1(a, b, inside, outside, weighted, sigma2):
    quadratic = a.dtype.type(0.5) * sigma2
    limit = a.dtype.type(1.0) / sigma2
    offset = a.dtype.type(0.5) / sigma2
    total = 0.0
    for i in range(a.size):
        d = a[i] - b[i]
        if weighted:
            d *= inside[i]
        magnitude = abs(d)
        error = quadratic * d * d if magnitude < limit else magnitude - offset
        if weighted:
            error *= outside[i]
        total += error
    return total


@kernels.cpu_kernel
def _smooth_l1_gradient(a, b, inside, outside, weighted, sigma2, scale, diff_a, diff_b, to_a, to_b):
    """diff_a = scale * v u f'(d) where to_a, diff_b = -that where to_b."""
    zero = a.dtype.type(0.0)
    one = a.dtype.type(1.0)
    limit = one / sigma2
    for i in range(a.size):
        d = a[i] - b[i]
        if weighted:
            d *= inside[i]
        if abs(d) < limit:
            gradient = sigma2 * d
        else:
            gradient = one if d > zero else (-one if d < zero else zero)
        gradient *= scale
        if weighted:
            gradient *= inside[i] * outside[i]
        if to_a:
            diff_a[i] = gradient
        if to_b:
            diff_b[i] = -gradient


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _smooth_l1_gpu(a, b, inside, outside, weighted, sigma2, errors):
    i = cuda.grid(1)
    if i >= a.size:
        return
    d = a[i] - b[i]
    if weighted:
        d *= inside[i]
    magnitude = abs(d)
    if magnitude < 1.0 / sigma2:
        error = 0.5 * sigma2 * d * d
    else:
        error = magnitude - 0.5 / sigma2
    if weighted:
        error *= outside[i]
    errors[i] = error


@gpu.jit
def _smooth_l1_gradient_gpu(a, b, inside, outside, weighted, sigma2, factor, top_diff, diff):
    i = cuda.grid(1)
    if i >= a.size:
        return
    d = a[i] - b[i]
    if weighted:
        d *= inside[i]
    if abs(d) < 1.0 / sigma2:
        gradient = sigma2 * d
    elif d > 0:
        gradient = 1.0
    elif d < 0:
        gradient = -1.0
    else:
        gradient = 0.0
    gradient *= factor * top_diff[0]
    if weighted:
        gradient *= inside[i] * outside[i]
    diff[i] = gradient


@register("SmoothL1Loss")
class SmoothL1LossLayer(LossLayer):
    fork = "py-faster-rcnn (rbgirshick/caffe-fast-rcnn)"
    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 4
    never_backward_bottoms = (2, 3)

    def loss_setup(self, bottom, top):
        if len(bottom) == 3:
            raise GraphError("SmoothL1Loss takes 2 bottoms, or 4 with weights: give both the inside and the "
                             "outside weights", layer=self.name)
        sigma = float(self.layer_param.smooth_l1_loss_param.sigma)
        self.sigma2 = sigma * sigma
        self.weighted = len(bottom) == 4

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        names = ("the target", "the inside weights", "the outside weights")
        for index in range(1, len(bottom)):
            if bottom[index].count != bottom[0].count:
                raise self.shape_error(f"{names[index - 1]} must have the prediction's shape",
                                       expected=bottom[0].shape, actual=bottom[index].shape)
        self.num = bottom[0].shape[0]

    def _inputs(self, bottom):
        a = bottom[0].data.reshape(-1)
        arrays = [a] + [blob.data.reshape(-1).astype(a.dtype, copy=False) for blob in bottom[1:]]
        if not self.weighted:
            arrays += [a, a]
        return arrays

    def forward(self, bottom, top):
        a, b, inside, outside = self._inputs(bottom)
        sigma2 = a.dtype.type(self.sigma2)
        top[0].data[...] = _smooth_l1(a, b, inside, outside, self.weighted, sigma2) / self.num

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down[2:]):
            raise GraphError("SmoothL1Loss cannot backpropagate to its weights", layer=self.name)
        if not (propagate_down[0] or propagate_down[1]):
            return
        a, b, inside, outside = self._inputs(bottom)
        dtype = a.dtype.type
        scale = dtype(self.loss_weight_scale(top, self.num))
        diff_a = bottom[0].diff.reshape(-1) if propagate_down[0] else a
        diff_b = bottom[1].diff.reshape(-1) if propagate_down[1] else a
        _smooth_l1_gradient(a, b, inside, outside, self.weighted, dtype(self.sigma2), scale, diff_a, diff_b,
                            bool(propagate_down[0]), bool(propagate_down[1]))

    def forward_gpu(self, bottom, top):
        count = bottom[0].count
        errors = gpu.scratch(self, "errors", count, np.float64)
        weights = (bottom[2].gpu_data, bottom[3].gpu_data) if self.weighted else (bottom[0].gpu_data,) * 2
        _smooth_l1_gpu[gpu.blocks_for(count), gpu.THREADS](bottom[0].gpu_data, bottom[1].gpu_data, *weights,
                                                           self.weighted, self.sigma2, errors)
        gpu.reduce_loss(self, errors, errors, gpu.FIXED_DIVISOR, self.num, 1, top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if any(propagate_down[2:]):
            raise GraphError("SmoothL1Loss cannot backpropagate to its weights", layer=self.name)
        weights = (bottom[2].gpu_data, bottom[3].gpu_data) if self.weighted else (bottom[0].gpu_data,) * 2
        for index, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[index]:
                _smooth_l1_gradient_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
                    bottom[0].gpu_data, bottom[1].gpu_data, *weights, self.weighted, self.sigma2,
                    sign / self.num, top[0].gpu_diff, bottom[index].mutable_gpu_diff)
