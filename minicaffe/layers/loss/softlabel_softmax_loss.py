"""SoftlabelSoftmaxLoss (Mocha.jl): softmax cross entropy against soft labels.

With the scores x viewed as (outer, C, inner) around ``softmax_param.axis``
(default 1), soft labels q of x's shape (a distribution over the C classes per
location), p = softmax(x) and L = outer * inner locations (Mocha's N*S)::

    loss = -sum over locations and classes of q log max(p, 1e-20) / L
    dx   = w (p - q) / L

Mocha documents this as a KL divergence but computes the cross entropy above,
which differs from KL(q || p) by q's entropy (a constant); minicaffe follows the
code. The gradient is exact when each location's q sums to 1, and a one-hot q
gives SoftmaxWithLoss exactly. ``w`` is the loss weight in ``top[0].diff``; the
labels take no gradient. The divisor is fixed (L).
"""

import math

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...layer import LossLayer
from ...registry import register

_LOG_FLOOR = math.log(1e-20)
_BLOCK = 256


@kernels.cpu_kernel
def _softlabel_forward(x, q, prob):
    """Fills prob (outer, C, inner) with softmax(x); returns the summed cross entropy."""
    outer, channels, inner = x.shape
    maxima_buffer = np.empty(_BLOCK, x.dtype)
    totals_buffer = np.empty(_BLOCK, x.dtype)
    scratch_buffer = np.empty(_BLOCK, x.dtype)
    loss = 0.0
    for o in range(outer):
        for start in range(0, inner, _BLOCK):
            n = min(_BLOCK, inner - start)
            stop = start + n
            maxima, totals = maxima_buffer[:n], totals_buffer[:n]
            kernels.softmax_block(x, prob, o, start, maxima, totals, scratch_buffer[:n])
            for j in range(n):
                maxima[j] += kernels.log(totals[j])          # now log(sum exp x): log p = x - this
            for c in range(channels):
                scores = x[o, c, start:stop]
                labels = q[o, c, start:stop]
                for j in range(n):
                    loss -= labels[j] * max(scores[j] - maxima[j], _LOG_FLOOR)
    return loss


@kernels.cpu_kernel
def _softlabel_rows(x, q, prob):
    """inner == 1: each location's C scores are a contiguous row; returns the summed cross entropy."""
    outer, channels = x.shape
    loss = 0.0
    for o in range(outer):
        row, labels = x[o], q[o]
        top, total = kernels.softmax_row(row, prob[o])
        shift = top + kernels.log(total)
        for c in range(channels):
            loss -= labels[c] * max(row[c] - shift, _LOG_FLOOR)
    return loss


@kernels.cpu_kernel
def _softlabel_gradient(prob, q, scale, diff):
    for i in range(prob.size):
        diff[i] = scale * (prob[i] - q[i])


@gpu.jit
def _softlabel_forward_gpu(x, q, prob, losses, ones, channels, inner):
    location = cuda.grid(1)
    if location >= losses.size:
        return
    base = (location // inner) * channels * inner + location % inner
    top, total = gpu.softmax_at(x, prob, base, channels, inner)
    shift = top + math.log(total)
    loss = 0.0
    for c in range(channels):
        loss -= q[base + c * inner] * max(x[base + c * inner] - shift, -46.051701859880914)
    losses[location] = loss
    ones[location] = 1.0


@gpu.jit
def _softlabel_gradient_gpu(prob, q, top_diff, inverse_locations, diff):
    i = cuda.grid(1)
    if i < prob.size:
        diff[i] = top_diff[0] * inverse_locations * (prob[i] - q[i])


@register("SoftlabelSoftmaxLoss")
class SoftlabelSoftmaxLossLayer(LossLayer):

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].shape != bottom[1].shape:
            raise self.shape_error("soft labels must have the scores' shape (a distribution per location)",
                                   expected=bottom[0].shape, actual=bottom[1].shape)
        scores = bottom[0]
        self.axis = scores.canonical_axis(self.layer_param.softmax_param.axis, layer=self.name)
        self.outer = scores.count_axes(0, self.axis)
        self.channels = scores.shape[self.axis]
        self.inner = scores.count_axes(self.axis + 1)

    def _shape3(self):
        return (self.outer, self.channels, self.inner)

    def forward(self, bottom, top):
        x = bottom[0].data
        if getattr(self, "probabilities", None) is None or self.probabilities.shape != x.shape \
                or self.probabilities.dtype != x.dtype:
            self.probabilities = np.empty_like(x)
        q = bottom[1].data.astype(x.dtype, copy=False)
        if self.inner == 1:
            rows = (self.outer, self.channels)
            loss = _softlabel_rows(x.reshape(rows), q.reshape(rows), self.probabilities.reshape(rows))
        else:
            loss = _softlabel_forward(x.reshape(self._shape3()), q.reshape(self._shape3()),
                                      self.probabilities.reshape(self._shape3()))
        top[0].data[...] = loss / (self.outer * self.inner)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        scale = bottom[0].dtype.type(self.loss_weight_scale(top, self.outer * self.inner))
        q = bottom[1].data.reshape(-1).astype(bottom[0].dtype, copy=False)
        _softlabel_gradient(self.probabilities.reshape(-1), q, scale, bottom[0].diff.reshape(-1))

    def forward_gpu(self, bottom, top):
        locations = self.outer * self.inner
        self.gpu_probabilities = gpu.scratch(self, "gpu_probabilities", bottom[0].count, bottom[0].dtype)
        losses = gpu.scratch(self, "losses", locations, np.float64)
        ones = gpu.scratch(self, "ones", locations, np.float64)
        _softlabel_forward_gpu[gpu.blocks_for(locations), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, self.gpu_probabilities, losses, ones, self.channels, self.inner)
        gpu.reduce_loss(self, losses, ones, gpu.FIXED_DIVISOR, locations, 1, top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        _softlabel_gradient_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
            self.gpu_probabilities, bottom[1].gpu_data, top[0].gpu_diff, 1.0 / (self.outer * self.inner),
            bottom[0].mutable_gpu_diff)
