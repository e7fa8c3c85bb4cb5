"""MultinomialLogisticLoss: the negative log of the probability given to the true class.

Probabilities in (a Softmax's output, say; use SoftmaxWithLoss on raw scores, it
is more stable). Probabilities are clamped at 1e-20 before the log, as Caffe
(kLOG_THRESHOLD) and Mocha.jl do. Two views of the prediction p, told apart by
the label count:

- Caffe's (one label per item): p is viewed as (N, D), N = p.shape[0], with one
  label ``g_n`` in [0, D) per row; unset, ``normalization`` is BATCH_SIZE, Caffe's
  fixed divisor N, and FULL and VALID count rows.
- Mocha.jl's (one label per location, which Caffe does not accept): p of shape
  N x C x S1 x ... with N * S labels (S = S1 * ...), classes on axis 1; unset,
  ``normalization`` is VALID, which is Mocha's N * S when nothing is ignored.

::

    loss           = -sum over counted locations of W * log(max(p[n, g, s], 1e-20)) / normalizer
    dp[n, g, s]    = -w W / (normalizer * max(p[n, g, s], 1e-20)),   every other element 0

``W`` is 1, or the class weight of the location's label (``loss_param.class_weight``
or an optional third bottom, see :mod:`.class_weights`). ``w`` is the loss weight
in ``top[0].diff``. ``loss_param.ignore_label`` skips locations. (Caffe ignores
``loss_param`` on this layer; minicaffe applies it when set.)

CPU: one kernel reads the picked probabilities and keeps them, with their
labels, for Backward, which zeroes the gradient and writes one element per
location.

GPU: one thread per location for the loss (summed and normalized on the device),
one thread per element for the gradient.
"""

import math

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError, MinicaffeError
from ...layer import LossLayer
from ...proto import caffe_pb2
from ...registry import register
from .class_weights import ClassWeights

#: Caffe's kLOG_THRESHOLD: probabilities are clamped here before the log.
LOG_THRESHOLD = 1e-20


@kernels.cpu_kernel
def _multinomial_logistic(prob, labels, threshold, has_ignore, ignore_label, picked_labels, picked, weights,
                          weighted):
    """Returns (loss sum, counted locations, first location with an out-of-range label or -1).

    prob is (N, D, inner), labels (N * inner,). Keeps each location's label (-1 where
    ignored) and clamped probability for Backward. ``weighted``: each location's
    loss is scaled by ``weights[location]`` (unread otherwise).
    """
    outer, dim, inner = prob.shape
    loss = 0.0
    valid = 0
    bad = -1
    for o in range(outer):
        for i in range(inner):
            location = o * inner + i
            label = int(labels[location])
            picked_labels[location] = -1
            if has_ignore and label == ignore_label:
                continue
            if label < 0 or label >= dim:
                if bad < 0:
                    bad = location
                continue
            value = max(prob[o, label, i], threshold)
            picked_labels[location] = label
            picked[location] = value
            term = math.log(value)
            loss -= term * weights[location] if weighted else term
            valid += 1
    return loss, valid, bad


@kernels.cpu_kernel
def _multinomial_logistic_gradient(picked_labels, picked, scale, diff, weights, weighted):
    """diff (N, D, inner) = 0 except -scale [* W] / max(p, threshold) at each counted location's label."""
    outer, dim, inner = diff.shape
    diff[:] = 0.0
    for o in range(outer):
        for i in range(inner):
            location = o * inner + i
            label = picked_labels[location]
            if label >= 0:
                factor = scale * weights[location] if weighted else scale
                diff[o, label, i] = -factor / picked[location]


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _multinomial_logistic_gpu(prob, labels, dim, inner, threshold, has_ignore, ignore_label, losses, valid, bad,
                              weights, weighted):
    location = cuda.grid(1)
    if location >= losses.size:
        return
    losses[location] = 0.0
    valid[location] = 0.0
    label = gpu.class_label(labels, location, dim, has_ignore, ignore_label, bad)
    if label < 0:
        return
    o = location // inner
    term = -math.log(max(prob[(o * dim + label) * inner + location % inner], threshold))
    losses[location] = term * weights[location] if weighted else term
    valid[location] = 1.0


@gpu.jit
def _multinomial_logistic_gradient_gpu(prob, labels, dim, inner, threshold, has_ignore, ignore_label, totals,
                                       top_diff, diff, weights, weighted):
    i = cuda.grid(1)
    if i >= prob.size:
        return
    per_item = dim * inner
    location = (i // per_item) * inner + i % inner
    label = int(labels[location])
    if (i % per_item) // inner != label or (has_ignore and label == ignore_label):
        diff[i] = 0.0
        return
    scale = -top_diff[0] / totals[2]
    if weighted:
        scale *= weights[location]
    diff[i] = scale / max(prob[i], threshold)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(LossLayer):
    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 3             # the optional third: class weights
    never_backward_bottoms = (1, 2)
    classification = True
    default_normalization = "BATCH_SIZE"

    def loss_setup(self, bottom, top):
        loss_param = self.layer_param.loss_param
        self.explicit_normalization = loss_param.HasField("normalization") or loss_param.HasField("normalize")
        self.class_weights = ClassWeights(self, len(bottom), self.max_bottoms)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        shape = bottom[0].shape
        self.outer = shape[0]
        labels = bottom[1].count
        spatial = bottom[0].count // max(self.outer * (shape[1] if len(shape) > 1 else 1), 1)
        if labels == self.outer:                       # Caffe: one label per item, classes flattened
            self.dim = bottom[0].count // max(self.outer, 1)
            self.inner = 1
        elif spatial > 1 and labels == self.outer * spatial:   # Mocha: one label per location, classes on axis 1
            self.dim = shape[1]
            self.inner = spatial
        else:
            expected = f"{self.outer}" + (f" or {self.outer * spatial}" if spatial > 1 else "")
            raise self.shape_error(f"needs one label per row of the probabilities ({expected} labels for "
                                   f"{tuple(shape)})", expected=(self.outer,), actual=bottom[1].shape)
        if not self.explicit_normalization:
            modes = caffe_pb2.LossParameter
            self.normalization = modes.VALID if self.inner > 1 else modes.BATCH_SIZE
        self.class_weights.reshape(shape, self.outer, self.outer, self.dim, self.inner, bottom)
        self.threshold = bottom[0].dtype.type(LOG_THRESHOLD)
        self.picked_labels = np.empty(self.outer * self.inner, np.int64)
        self.picked = np.empty(self.outer * self.inner, bottom[0].dtype)

    # The per-pass Python work is kept small: at a classifier's size the kernels take microseconds,
    # so Backward reads what Forward kept rather than the bottoms.
    def forward(self, bottom, top):
        prob = bottom[0].data.reshape(self.outer, self.dim, self.inner)
        labels = bottom[1].data.reshape(-1)
        weighted = self.class_weights.weighted
        if weighted:
            weights = self.class_weights.location_weights(
                bottom, labels.reshape(self.outer, self.inner).astype(prob.dtype, copy=False), self.has_ignore_label,
                self.ignore_label).reshape(-1)
        else:
            weights = self.picked      # unread: the same type keeps one compilation
        self.location_weights = weights
        loss, valid, bad = _multinomial_logistic(prob, labels, self.threshold, self.has_ignore_label,
                                                 self.ignore_label, self.picked_labels, self.picked, weights, weighted)
        if bad >= 0:
            self._bad_label(bottom, bad)
        self.loss_normalizer = self.normalizer(self.outer, self.inner, valid)
        top[0].data[...] = loss / self.loss_normalizer

    def backward(self, top, propagate_down, bottom):
        if not self._backward_needed(propagate_down):
            return
        scale = self.picked.dtype.type(self.loss_weight_scale(top, self.loss_normalizer))
        _multinomial_logistic_gradient(self.picked_labels, self.picked, scale,
                                       bottom[0].diff.reshape(self.outer, self.dim, self.inner),
                                       self.location_weights, self.class_weights.weighted)

    def forward_gpu(self, bottom, top):
        locations = self.outer * self.inner
        losses = gpu.scratch(self, "losses", locations, np.float64)
        valid = gpu.scratch(self, "valid", locations, np.float64)
        bad = gpu.bad_location_flag(self)
        weighted = self.class_weights.weighted
        weights = (self.class_weights.location_weights_gpu(bottom, bottom[1].gpu_data, self.has_ignore_label,
                                                           self.ignore_label) if weighted else valid)
        self.gpu_location_weights = weights
        _multinomial_logistic_gpu[gpu.blocks_for(locations), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, self.dim, self.inner, LOG_THRESHOLD, self.has_ignore_label,
            int(self.ignore_label), losses, valid, bad, weights, weighted)
        bad_location = gpu.bad_location(bad)
        if bad_location >= 0:
            self._bad_label(bottom, bad_location)
        self.gpu_totals = gpu.reduce_loss(self, losses, valid, self.normalization, self.outer, self.inner,
                                          top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if not self._backward_needed(propagate_down):
            return
        _multinomial_logistic_gradient_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, self.dim, self.inner, LOG_THRESHOLD, self.has_ignore_label,
            int(self.ignore_label), self.gpu_totals, top[0].gpu_diff, bottom[0].mutable_gpu_diff,
            self.gpu_location_weights, self.class_weights.weighted)

    def _backward_needed(self, propagate_down):
        if propagate_down[1]:
            raise GraphError("MultinomialLogisticLoss cannot backpropagate to its label input", layer=self.name)
        if len(propagate_down) > 2 and propagate_down[2]:
            raise GraphError("MultinomialLogisticLoss cannot backpropagate to its class weights", layer=self.name)
        return propagate_down[0]

    def _bad_label(self, bottom, location):
        value = bottom[1].data.reshape(-1)[location]
        where = "of each row" if self.inner == 1 else "on axis 1"
        raise MinicaffeError(f"layer '{self.name}': label {value:g} at position {location} is outside "
                             f"[0, {self.dim}) (the {self.dim} classes {where} of {bottom[0].shape})")
