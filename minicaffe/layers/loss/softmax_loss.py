"""SoftmaxWithLoss (Mocha's SoftmaxLoss): the multinomial logistic loss of a softmax.

With ``x`` viewed as (outer, C, inner) around ``softmax_param.axis`` (default 1,
negative counts from the end) and one integer label ``g`` per location
(outer x inner of them, in any shape with that count)::

    loss(o, i) = log(sum_c exp(x[o, c, i])) - x[o, g, i]          (log-sum-exp, never inf)
    loss       = sum over non-ignored locations / normalizer
    dx[o, c, i] = w * (softmax(x)[o, c, i] - [c == g]) / normalizer,   0 where ignored

``w`` is the loss weight stored in ``top[0].diff``. ``loss_param.ignore_label``
skips locations; ``normalization`` is VALID by default (the count of
non-ignored labels), FULL (outer * inner), BATCH_SIZE (outer) or NONE; the
normalizer is at least 1. An optional second top holds the probabilities
(Caffe aborts on it; minicaffe allows it).

Class weights (minicaffe, after Mocha.jl): ``loss_param.class_weight`` (one per
class) or an optional third bottom (one data point's shape or the prediction's;
no gradient), rescaled as ``loss_param.weight_normalization`` says (LOCAL,
GLOBAL, AS_GIVEN; see :mod:`.class_weights`). With W the weight of a location's
own label, its loss and its whole gradient are scaled by W; the normalizer is
unchanged. Equal weights give the unweighted loss.

CPU: per location, one pass finds the max, one computes exp and the sum, one
normalizes; locations are processed in blocks of 256 so every inner loop runs
over contiguous memory and vectorizes (float32 uses the arithmetic exp of
:mod:`minicaffe.kernels`; float64 the exact one). When each location's scores
are contiguous (inner == 1, a classifier), rows are processed one by one
instead. Backward is one pass of ``w/normalizer * prob`` and a subtraction at
each label.

GPU: one thread per location computes its softmax and loss; the losses and the
valid count are summed on the device, and the normalized loss is written into
the top there; Backward uses one thread per element and reads the loss weight
and the normalizer on the device, so only the final scalar reaches the host.
"""

import math

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError, MinicaffeError
from ...layer import LossLayer
from ...registry import register
from .class_weights import ClassWeights

_BLOCK = 256


# The kernels index 1-D slices (a channel's run of locations) rather than the 3-D
# arrays: LLVM vectorizes those loops, and not the 3-D indexing (5x faster).

@kernels.cpu_kernel
def _softmax_rows(x, prob, labels, has_ignore, ignore_label, weights, weighted):
    """inner == 1: each location's C scores are contiguous. Returns (loss sum, valid count, bad index).

    ``weighted``: each location's loss is scaled by ``weights[o, 0]`` (unread otherwise).
    """
    outer, channels = x.shape
    loss = 0.0
    valid = 0
    bad = -1
    for o in range(outer):
        row = x[o]
        top, total = kernels.softmax_row(row, prob[o])
        label = int(labels[o])
        if has_ignore and label == ignore_label:
            continue
        if label < 0 or label >= channels:
            if bad < 0:
                bad = o
            continue
        value = kernels.log(total) - (row[label] - top)
        loss += value * weights[o, 0] if weighted else value
        valid += 1
    return loss, valid, bad


@kernels.cpu_kernel
def _softmax_blocked(x, prob, labels, has_ignore, ignore_label, weights, weighted):
    """inner > 1: blocks of locations, channel by channel. Returns (loss sum, valid count, bad index).

    ``weighted``: each location's loss is scaled by ``weights[o, i]`` (unread otherwise).
    """
    outer, channels, inner = x.shape
    maxima_buffer = np.empty(_BLOCK, x.dtype)
    totals_buffer = np.empty(_BLOCK, x.dtype)
    inverse_buffer = np.empty(_BLOCK, x.dtype)
    loss = 0.0
    valid = 0
    bad = -1
    for o in range(outer):
        for start in range(0, inner, _BLOCK):
            n = min(_BLOCK, inner - start)
            stop = start + n
            maxima = maxima_buffer[:n]
            totals = totals_buffer[:n]
            kernels.softmax_block(x, prob, o, start, maxima, totals, inverse_buffer[:n])
            block_labels = labels[o, start:stop]
            for j in range(n):
                label = int(block_labels[j])
                if has_ignore and label == ignore_label:
                    continue
                if label < 0 or label >= channels:
                    if bad < 0:
                        bad = o * inner + start + j
                    continue
                value = kernels.log(totals[j]) - (x[o, label, start + j] - maxima[j])
                loss += value * weights[o, start + j] if weighted else value
                valid += 1
    return loss, valid, bad


@kernels.cpu_kernel
def _softmax_rows_gradient(prob, labels, has_ignore, ignore_label, scale, diff, weights, weighted):
    """inner == 1: diff = scale * (prob - onehot(label)) row by row, zero rows where ignored.

    ``weighted``: row o's scale is ``scale * weights[o, 0]``.
    """
    outer, channels = prob.shape
    for o in range(outer):
        source = prob[o]
        target = diff[o]
        label = int(labels[o])
        if has_ignore and label == ignore_label:
            target[:] = 0.0
            continue
        factor = scale * weights[o, 0] if weighted else scale
        for c in range(channels):
            target[c] = factor * source[c]
        target[label] -= factor


@kernels.cpu_kernel
def _softmax_loss_gradient(prob, labels, has_ignore, ignore_label, scale, diff, weights, weighted):
    """diff = scale * (prob - onehot(label)), zero at ignored locations; arrays as (outer, C, inner).

    ``weighted``: location (o, i)'s scale is ``scale * weights[o, i]``.
    """
    outer, channels, inner = prob.shape
    for o in range(outer):
        location_weights = weights[o]
        for c in range(channels):
            source = prob[o, c]
            target = diff[o, c]
            if weighted:
                for i in range(inner):
                    target[i] = (scale * location_weights[i]) * source[i]
            else:
                for i in range(inner):
                    target[i] = scale * source[i]
        location_labels = labels[o]
        for i in range(inner):
            label = int(location_labels[i])
            if has_ignore and label == ignore_label:
                for c in range(channels):
                    diff[o, c, i] = 0.0
            else:
                diff[o, label, i] -= scale * location_weights[i] if weighted else scale


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _softmax_forward_gpu(x, labels, prob, losses, valid, channels, inner, has_ignore, ignore_label, bad, weights,
                         weighted):
    location = cuda.grid(1)
    if location >= losses.size:
        return
    base = (location // inner) * channels * inner + location % inner
    top, total = gpu.softmax_at(x, prob, base, channels, inner)
    losses[location] = 0.0
    valid[location] = 0.0
    label = gpu.class_label(labels, location, channels, has_ignore, ignore_label, bad)
    if label < 0:
        return
    value = math.log(total) - (x[base + label * inner] - top)
    losses[location] = value * weights[location] if weighted else value
    valid[location] = 1.0


@gpu.jit
def _softmax_backward_gpu(prob, labels, totals, top_diff, channels, inner, has_ignore, ignore_label, diff, weights,
                          weighted):
    index = cuda.grid(1)
    if index >= prob.size:
        return
    per_outer = channels * inner
    c = (index % per_outer) // inner
    location = (index // per_outer) * inner + index % inner
    label = int(labels[location])
    if has_ignore and label == ignore_label:
        diff[index] = 0.0
        return
    scale = top_diff[0] / totals[2]
    if weighted:
        scale *= weights[location]
    diff[index] = scale * (prob[index] - (1.0 if c == label else 0.0))


@register("SoftmaxWithLoss", "SoftmaxLoss")
class SoftmaxWithLossLayer(LossLayer):
    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 3             # the optional third: class weights
    never_backward_bottoms = (1, 2)
    exact_tops = None
    min_tops = 1
    max_tops = 2
    classification = True
    default_normalization = "VALID"

    def loss_setup(self, bottom, top):
        self.class_weights = ClassWeights(self, len(bottom), self.max_bottoms)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        scores = bottom[0]
        self.axis = scores.canonical_axis(self.layer_param.softmax_param.axis, layer=self.name)
        self.outer = scores.count_axes(0, self.axis)
        self.channels = scores.shape[self.axis]
        self.inner = scores.count_axes(self.axis + 1)
        if self.outer * self.inner != bottom[1].count:
            raise self.shape_error(
                f"the label count must equal the number of predictions ({self.outer} x {self.inner} "
                f"locations for softmax over axis {self.axis} of {scores.shape})",
                expected=(self.outer * self.inner,), actual=bottom[1].shape)
        if len(top) > 1:
            top[1].reshape(scores.shape)
        self.class_weights.reshape(scores.shape, scores.shape[0] if self.axis > 0 else 1, self.outer, self.channels,
                                   self.inner, bottom)

    def _prob(self, bottom, top):
        """Probabilities: the second top when there is one, else an internal buffer."""
        if len(top) > 1:
            return top[1].data
        buffer = getattr(self, "_prob_buffer", None)
        if buffer is None or buffer.shape != bottom[0].shape or buffer.dtype != bottom[0].dtype:
            buffer = self._prob_buffer = np.empty(bottom[0].shape, dtype=bottom[0].dtype)
        return buffer

    def forward(self, bottom, top):
        scores = bottom[0].data
        labels = bottom[1].data.reshape(self.outer, self.inner).astype(scores.dtype, copy=False)
        prob = self._prob(bottom, top)
        ignore = int(self.ignore_label)
        weighted = self.class_weights.weighted
        # unweighted, the kernels are handed the labels in place of weights (same type: one compilation)
        weights = (self.class_weights.location_weights(bottom, labels, self.has_ignore_label, ignore)
                   if weighted else labels)
        self.location_weights = weights
        if self.inner == 1:
            loss, valid, bad = _softmax_rows(scores.reshape(self.outer, self.channels),
                                             prob.reshape(self.outer, self.channels),
                                             labels.reshape(-1), self.has_ignore_label, ignore,
                                             weights, weighted)
        else:
            loss, valid, bad = _softmax_blocked(scores.reshape(self.outer, self.channels, self.inner),
                                                prob.reshape(self.outer, self.channels, self.inner),
                                                labels, self.has_ignore_label, ignore, weights, weighted)
        if bad >= 0:
            value = bottom[1].data.reshape(-1)[bad]
            raise MinicaffeError(f"layer '{self.name}': label {value:g} at position {bad} is outside "
                                 f"[0, {self.channels}) (the {self.channels} classes of axis {self.axis})")
        self.probabilities = prob
        self.valid_count = valid
        self.loss_normalizer = self.normalizer(self.outer, self.inner, valid)
        top[0].data[...] = loss / self.loss_normalizer

    def forward_gpu(self, bottom, top):
        locations = self.outer * self.inner
        prob = (top[1].mutable_gpu_data if len(top) > 1
                else gpu.scratch(self, "probabilities", bottom[0].count, bottom[0].dtype))
        losses = gpu.scratch(self, "losses", locations, np.float64)
        valid = gpu.scratch(self, "valid", locations, np.float64)
        bad = gpu.bad_location_flag(self)
        weighted = self.class_weights.weighted
        weights = (self.class_weights.location_weights_gpu(bottom, bottom[1].gpu_data, self.has_ignore_label,
                                                           self.ignore_label) if weighted else valid)
        self.gpu_location_weights = weights
        _softmax_forward_gpu[gpu.blocks_for(locations), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, prob, losses, valid, self.channels, self.inner,
            self.has_ignore_label, int(self.ignore_label), bad, weights, weighted)
        bad_index = gpu.bad_location(bad)
        if bad_index >= 0:
            value = bottom[1].data.reshape(-1)[bad_index]
            raise MinicaffeError(f"layer '{self.name}': label {value:g} at position {bad_index} is outside "
                                 f"[0, {self.channels}) (the {self.channels} classes of axis {self.axis})")
        self.gpu_probabilities = prob
        self.gpu_totals = gpu.reduce_loss(self, losses, valid, self.normalization, self.outer, self.inner,
                                          top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if not self._backward_needed(propagate_down):
            return
        _softmax_backward_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
            self.gpu_probabilities, bottom[1].gpu_data, self.gpu_totals, top[0].gpu_diff, self.channels,
            self.inner, self.has_ignore_label, int(self.ignore_label), bottom[0].mutable_gpu_diff,
            self.gpu_location_weights, self.class_weights.weighted)

    def _backward_needed(self, propagate_down):
        if propagate_down[1]:
            raise GraphError("SoftmaxWithLoss cannot backpropagate to its label input", layer=self.name)
        if len(propagate_down) > 2 and propagate_down[2]:
            raise GraphError("SoftmaxWithLoss cannot backpropagate to its class weights", layer=self.name)
        return propagate_down[0]

    def backward(self, top, propagate_down, bottom):
        if not self._backward_needed(propagate_down):
            return
        scale = bottom[0].dtype.type(self.loss_weight_scale(top, self.loss_normalizer))
        labels = bottom[1].data.reshape(self.outer, self.inner).astype(bottom[0].dtype, copy=False)
        if self.inner == 1:
            shape = (self.outer, self.channels)
            _softmax_rows_gradient(self.probabilities.reshape(shape), labels.reshape(-1), self.has_ignore_label,
                                   int(self.ignore_label), scale, bottom[0].diff.reshape(shape),
                                   self.location_weights, self.class_weights.weighted)
        else:
            shape = (self.outer, self.channels, self.inner)
            _softmax_loss_gradient(self.probabilities.reshape(shape), labels, self.has_ignore_label,
                                   int(self.ignore_label), scale, bottom[0].diff.reshape(shape),
                                   self.location_weights, self.class_weights.weighted)
