"""MultinomialLogisticLoss: the negative log of the probability given to the true class.

Probabilities in (a Softmax's output, say; use SoftmaxWithLoss on raw scores, it
is more stable). The prediction is viewed as (N, D), N = p.shape[0], with one
label ``g_n`` in [0, D) per row; probabilities are clamped at 1e-20 before the
log, as Caffe does (kLOG_THRESHOLD)::

    loss   = -sum over non-ignored rows of log(max(p[n, g_n], 1e-20)) / normalizer
    dp[n, g_n] = -w / (normalizer * max(p[n, g_n], 1e-20)),   every other element 0

``w`` is the loss weight in ``top[0].diff``. ``loss_param.ignore_label`` skips
rows; ``normalization`` FULL and VALID count rows, BATCH_SIZE is N, NONE is 1,
and unset it is BATCH_SIZE: Caffe's fixed divisor N. (Caffe ignores
``loss_param`` on this layer; minicaffe applies it when set.)

CPU: one kernel reads the N picked probabilities and keeps them, with their
labels, for Backward, which zeroes the gradient and writes one element per row.

GPU: one thread per row for the loss (summed and normalized on the device),
one thread per element for the gradient.
"""

import math

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError, MinicaffeError
from ...layer import LossLayer
from ...registry import register

#: Caffe's kLOG_THRESHOLD: probabilities are clamped here before the log.
LOG_THRESHOLD = 1e-20


@kernels.cpu_kernel
def _multinomial_logistic(prob, labels, threshold, has_ignore, ignore_label, picked_labels, picked):
    """Returns (loss sum, counted rows, first row with an out-of-range label or -1); prob is (N, D).

    Keeps each row's label (-1 where ignored) and clamped probability for Backward.
    """
    outer, dim = prob.shape
    loss = 0.0
    valid = 0
    bad = -1
    for o in range(outer):
        label = int(labels[o])
        picked_labels[o] = -1
        if has_ignore and label == ignore_label:
            continue
        if label < 0 or label >= dim:
            if bad < 0:
                bad = o
            continue
        value = max(prob[o, label], threshold)
        picked_labels[o] = label
        picked[o] = value
        loss -= math.log(value)
        valid += 1
    return loss, valid, bad


@kernels.cpu_kernel
def _multinomial_logistic_gradient(picked_labels, picked, scale, diff):
    """diff = 0 except diff[n, g_n] = -scale / max(p, threshold) on counted rows (as Forward kept them)."""
    diff[:] = 0.0
    for o in range(picked_labels.size):
        label = picked_labels[o]
        if label >= 0:
            diff[o, label] = -scale / picked[o]


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _multinomial_logistic_gpu(prob, labels, dim, threshold, has_ignore, ignore_label, losses, valid, bad):
    o = cuda.grid(1)
    if o >= losses.size:
        return
    losses[o] = 0.0
    valid[o] = 0.0
    label = int(labels[o])
    if has_ignore and label == ignore_label:
        return
    if label < 0 or label >= dim:
        cuda.atomic.max(bad, 0, o)
        return
    losses[o] = -math.log(max(prob[o * dim + label], threshold))
    valid[o] = 1.0


@gpu.jit
def _multinomial_logistic_gradient_gpu(prob, labels, dim, threshold, has_ignore, ignore_label, totals, top_diff,
                                       diff):
    i = cuda.grid(1)
    if i >= prob.size:
        return
    o = i // dim
    label = int(labels[o])
    if i % dim != label or (has_ignore and label == ignore_label):
        diff[i] = 0.0
        return
    diff[i] = -top_diff[0] / totals[2] / max(prob[i], threshold)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(LossLayer):
    classification = True
    default_normalization = "BATCH_SIZE"

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.outer = bottom[0].shape[0]
        self.dim = bottom[0].count // max(self.outer, 1)
        if bottom[1].count != self.outer:
            raise self.shape_error(f"needs one label per row of the probabilities ({self.outer} rows of {self.dim})",
                                   expected=(self.outer,), actual=bottom[1].shape)
        self.threshold = bottom[0].dtype.type(LOG_THRESHOLD)
        self.picked_labels = np.empty(self.outer, np.int64)
        self.picked = np.empty(self.outer, bottom[0].dtype)

    # The per-pass Python work is kept small: at a classifier's size the kernels take microseconds,
    # so Backward reads what Forward kept rather than the bottoms.
    def forward(self, bottom, top):
        prob = bottom[0].data.reshape(self.outer, self.dim)
        labels = bottom[1].data.reshape(-1)
        loss, valid, bad = _multinomial_logistic(prob, labels, self.threshold, self.has_ignore_label,
                                                 self.ignore_label, self.picked_labels, self.picked)
        if bad >= 0:
            self._bad_label(bottom, bad)
        self.loss_normalizer = self.normalizer(self.outer, 1, valid)
        top[0].data[...] = loss / self.loss_normalizer

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise GraphError("MultinomialLogisticLoss cannot backpropagate to its label input", layer=self.name)
        if not propagate_down[0]:
            return
        scale = self.picked.dtype.type(self.loss_weight_scale(top, self.loss_normalizer))
        _multinomial_logistic_gradient(self.picked_labels, self.picked, scale,
                                       bottom[0].diff.reshape(self.outer, self.dim))

    def forward_gpu(self, bottom, top):
        losses = gpu.device_empty(self.outer, np.float64)
        valid = gpu.device_empty(self.outer, np.float64)
        bad = gpu.to_device(np.array([-1], dtype=np.int64))
        _multinomial_logistic_gpu[gpu.blocks_for(self.outer), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, self.dim, LOG_THRESHOLD, self.has_ignore_label,
            int(self.ignore_label), losses, valid, bad)
        bad_row = int(bad.copy_to_host()[0])
        if bad_row >= 0:
            self._bad_label(bottom, bad_row)
        self.gpu_totals = gpu.reduce_loss(losses, valid, self.normalization, self.outer, 1, top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise GraphError("MultinomialLogisticLoss cannot backpropagate to its label input", layer=self.name)
        if not propagate_down[0]:
            return
        _multinomial_logistic_gradient_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, self.dim, LOG_THRESHOLD, self.has_ignore_label,
            int(self.ignore_label), self.gpu_totals, top[0].gpu_diff, bottom[0].mutable_gpu_diff)

    def _bad_label(self, bottom, row):
        value = bottom[1].data.reshape(-1)[row]
        raise MinicaffeError(f"layer '{self.name}': label {value:g} at position {row} is outside [0, {self.dim}) "
                             f"(the {self.dim} classes of each row of {bottom[0].shape})")
