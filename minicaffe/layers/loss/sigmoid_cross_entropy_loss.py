"""SigmoidCrossEntropyLoss: cross-entropy of sigmoid(x) against targets t in [0, 1].

Per element, in the form that is stable for large |x|::

    loss_i = max(x, 0) - x t + log(1 + exp(-|x|))
    loss   = sum over non-ignored elements / normalizer
    dx_i   = w * (sigmoid(x_i) - t_i) / normalizer,   0 where ignored

Raw scores in (not probabilities); soft targets allowed. ``loss_param.ignore_label``
skips elements whose target, truncated to an integer, equals it. The
normalization defaults to BATCH_SIZE (x.shape[0]), not VALID, for historical
reasons (seed 003); FULL is the element count; VALID the non-ignored count.

CPU: one fused pass over the elements (float32 with the vectorizable exp and
log1p of :mod:`minicaffe.kernels`).

GPU: one thread per element; the sum and the valid count are reduced on the
device and normalized into the top there.
"""

import math

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError
from ...layer import LossLayer
from ...registry import register



# Branch-free loops (ignored elements are masked, not skipped) with constants in
# the array's dtype: LLVM vectorizes them, including the arithmetic exp/log1p.

@kernels.cpu_kernel
def _sigmoid_cross_entropy(x, target, has_ignore, ignore_label):
    zero = x.dtype.type(0.0)
    loss = 0.0
    valid = 0
    for i in range(x.size):
        t = target[i]
        v = x[i]
        keep = not (has_ignore and int(t) == ignore_label)
        term = max(v, zero) - v * t + kernels.log1p_unit(kernels.exp(-abs(v)))
        loss += term if keep else zero
        valid += 1 if keep else 0
    return loss, valid


@kernels.cpu_kernel
def _sigmoid_cross_entropy_gradient(x, target, has_ignore, ignore_label, scale, diff):
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    for i in range(x.size):
        t = target[i]
        v = x[i]
        e = kernels.exp(-abs(v))
        inverse = one / (one + e)
        sigmoid = inverse if v >= zero else e * inverse
        keep = not (has_ignore and int(t) == ignore_label)
        diff[i] = scale * (sigmoid - t) if keep else zero


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _sigmoid_cross_entropy_gpu(x, target, losses, valid, has_ignore, ignore_label):
    i = cuda.grid(1)
    if i >= x.size:
        return
    t = target[i]
    if has_ignore and int(t) == ignore_label:
        losses[i] = 0.0
        valid[i] = 0.0
        return
    v = x[i]
    losses[i] = max(v, 0.0) - v * t + math.log1p(math.exp(-abs(v)))
    valid[i] = 1.0


@gpu.jit
def _sigmoid_cross_entropy_gradient_gpu(x, target, totals, top_diff, has_ignore, ignore_label, diff):
    i = cuda.grid(1)
    if i >= x.size:
        return
    t = target[i]
    if has_ignore and int(t) == ignore_label:
        diff[i] = 0.0
        return
    v = x[i]
    e = math.exp(-abs(v))
    sigmoid = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
    diff[i] = top_diff[0] / totals[2] * (sigmoid - t)


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(LossLayer):
    classification = True
    default_normalization = "BATCH_SIZE"

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.shape_error("scores and targets must have the same number of elements",
                                   expected=bottom[0].shape, actual=bottom[1].shape)
        self.outer = bottom[0].shape[0] if bottom[0].shape else 1
        self.inner = bottom[0].count // max(self.outer, 1)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(-1)
        target = bottom[1].data.reshape(-1).astype(x.dtype, copy=False)
        loss, valid = _sigmoid_cross_entropy(x, target, self.has_ignore_label, int(self.ignore_label))
        self.loss_normalizer = self.normalizer(self.outer, self.inner, valid)
        top[0].data[...] = loss / self.loss_normalizer

    def forward_gpu(self, bottom, top):
        count = bottom[0].count
        losses = gpu.scratch(self, "losses", count, np.float64)
        valid = gpu.scratch(self, "valid", count, np.float64)
        _sigmoid_cross_entropy_gpu[gpu.blocks_for(count), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, losses, valid, self.has_ignore_label, int(self.ignore_label))
        self.gpu_totals = gpu.reduce_loss(self, losses, valid, self.normalization, self.outer, self.inner,
                                          top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise GraphError("SigmoidCrossEntropyLoss cannot backpropagate to its target input", layer=self.name)
        if not propagate_down[0]:
            return
        _sigmoid_cross_entropy_gradient_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, self.gpu_totals, top[0].gpu_diff, self.has_ignore_label,
            int(self.ignore_label), bottom[0].mutable_gpu_diff)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise GraphError("SigmoidCrossEntropyLoss cannot backpropagate to its target input", layer=self.name)
        if not propagate_down[0]:
            return
        x = bottom[0].data.reshape(-1)
        target = bottom[1].data.reshape(-1).astype(x.dtype, copy=False)
        scale = x.dtype.type(self.loss_weight_scale(top, self.loss_normalizer))
        _sigmoid_cross_entropy_gradient(x, target, self.has_ignore_label, int(self.ignore_label), scale,
                                        bottom[0].diff.reshape(-1))
