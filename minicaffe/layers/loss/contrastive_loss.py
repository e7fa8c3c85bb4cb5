"""ContrastiveLoss: pulls similar pairs together, pushes dissimilar ones past a margin.

Bottoms: two feature blobs ``a`` and ``b`` of N rows each (any shape with the
same count; Caffe's N x C x 1 x 1), and N pair labels ``y`` (nonzero, after
truncation to an integer, means similar). With ``d_n = ||a_n - b_n||`` and
``m`` = ``contrastive_loss_param.margin`` (default 1)::

    similar:     l_n = d_n^2
    dissimilar:  l_n = max(m - d_n, 0)^2            (default, Hadsell et al.)
                 l_n = max(m - d_n^2, 0)            (legacy_version: true)
    loss = sum_n l_n / (2N)

Gradients, ``w`` the loss weight in ``top[0].diff``, for ``a`` (``b`` gets the
negative), per propagate_down::

    similar:     da_n = w (a_n - b_n) / N
    dissimilar:  da_n = -w (m - d_n) / (d_n + 1e-4) (a_n - b_n) / N   where m - d_n > 0, else 0
    legacy:      da_n = -w (a_n - b_n) / N                           where m - d_n^2 > 0, else 0

The 1e-4 in the denominator is Caffe's (it keeps coincident dissimilar pairs
finite), so that gradient is the derivative of the loss only up to a relative
1e-4/d. The divisor is fixed (2N): ``loss_param.normalization`` does not apply.
The labels never take a gradient.

CPU: one pass computes the differences (kept for Backward) and each pair's
squared distance; Backward scales each pair's row of differences.

GPU: one thread per pair for the distances and losses (summed and divided by 2N
on the device), one thread per element for the gradients.
"""

import math

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError
from ...layer import LossLayer
from ...registry import register

#: Caffe's guard against dividing by a zero distance in the non-legacy gradient.
DISTANCE_EPSILON = 1e-4


@kernels.cpu_kernel
def _contrastive(a, b, similar, margin, legacy, difference, distances):
    """Fills difference = a - b and the squared distances; returns the sum of the pair losses."""
    pairs, dim = a.shape
    loss = 0.0
    for n in range(pairs):
        left = a[n]
        right = b[n]
        row = difference[n]
        squared = a.dtype.type(0.0)
        for k in range(dim):
            value = left[k] - right[k]
            row[k] = value
            squared += value * value
        distances[n] = squared
        if int(similar[n]) != 0:
            loss += squared
        elif legacy:
            loss += max(margin - squared, 0.0)
        else:
            gap = max(margin - math.sqrt(squared), 0.0)
            loss += gap * gap
    return loss


@kernels.cpu_kernel
def _contrastive_gradient(difference, distances, similar, margin, legacy, alpha, diff):
    """diff row n = coefficient_n * (a_n - b_n), alpha = +-w/N."""
    pairs, dim = difference.shape
    for n in range(pairs):
        squared = distances[n]
        if int(similar[n]) != 0:
            coefficient = alpha
        elif legacy:
            coefficient = -alpha if margin - squared > 0.0 else 0.0
        else:
            distance = math.sqrt(squared)
            gap = margin - distance
            coefficient = -alpha * gap / (distance + DISTANCE_EPSILON) if gap > 0.0 else 0.0
        factor = difference.dtype.type(coefficient)
        source = difference[n]
        target = diff[n]
        for k in range(dim):
            target[k] = factor * source[k]


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _contrastive_gpu(a, b, similar, dim, margin, legacy, difference, distances, losses):
    n = cuda.grid(1)
    if n >= distances.size:
        return
    squared = 0.0
    for k in range(n * dim, (n + 1) * dim):
        value = a[k] - b[k]
        difference[k] = value
        squared += value * value
    distances[n] = squared
    if int(similar[n]) != 0:
        losses[n] = squared
    elif legacy:
        losses[n] = max(margin - squared, 0.0)
    else:
        gap = max(margin - math.sqrt(squared), 0.0)
        losses[n] = gap * gap


@gpu.jit
def _contrastive_gradient_gpu(difference, distances, similar, dim, margin, legacy, factor, top_diff, diff):
    i = cuda.grid(1)
    if i >= difference.size:
        return
    n = i // dim
    alpha = factor * top_diff[0]
    squared = distances[n]
    if int(similar[n]) != 0:
        coefficient = alpha
    elif legacy:
        coefficient = -alpha if margin - squared > 0.0 else 0.0
    else:
        distance = math.sqrt(squared)
        gap = margin - distance
        coefficient = -alpha * gap / (distance + DISTANCE_EPSILON) if gap > 0.0 else 0.0
    diff[i] = coefficient * difference[i]


@register("ContrastiveLoss")
class ContrastiveLossLayer(LossLayer):
    exact_bottoms = 3
    never_backward_bottoms = (2,)

    def loss_setup(self, bottom, top):
        param = self.layer_param.contrastive_loss_param
        self.margin = float(param.margin)
        self.legacy = bool(param.legacy_version)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.shape_error("the two feature blobs must have the same shape",
                                   expected=bottom[0].shape, actual=bottom[1].shape)
        self.pairs = bottom[0].shape[0]
        self.dim = bottom[0].count // max(self.pairs, 1)
        if bottom[2].count != self.pairs:
            raise self.shape_error(f"needs one similarity label per pair ({self.pairs} pairs)",
                                   expected=(self.pairs,), actual=bottom[2].shape)

    def forward(self, bottom, top):
        shape = (self.pairs, self.dim)
        a = bottom[0].data.reshape(shape)
        b = bottom[1].data.reshape(shape).astype(a.dtype, copy=False)
        if getattr(self, "difference", None) is None or self.difference.shape != shape \
                or self.difference.dtype != a.dtype:
            self.difference = np.empty(shape, a.dtype)
            self.distances = np.empty(self.pairs, a.dtype)
        similar = bottom[2].data.reshape(-1).astype(a.dtype, copy=False)
        loss = _contrastive(a, b, similar, self.margin, self.legacy, self.difference, self.distances)
        top[0].data[...] = loss / self.pairs / 2

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise GraphError("ContrastiveLoss cannot backpropagate to its similarity labels", layer=self.name)
        similar = bottom[2].data.reshape(-1).astype(self.difference.dtype, copy=False)
        for index, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[index]:
                alpha = sign * self.loss_weight_scale(top, self.pairs)
                _contrastive_gradient(self.difference, self.distances, similar, self.margin, self.legacy, alpha,
                                      bottom[index].diff.reshape(self.pairs, self.dim))

    def forward_gpu(self, bottom, top):
        self.gpu_difference = gpu.scratch(self, "gpu_difference", bottom[0].count, bottom[0].dtype)
        self.gpu_distances = gpu.scratch(self, "gpu_distances", self.pairs, np.float64)
        losses = gpu.scratch(self, "losses", self.pairs, np.float64)
        _contrastive_gpu[gpu.blocks_for(self.pairs), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, bottom[2].gpu_data, self.dim, self.margin, self.legacy,
            self.gpu_difference, self.gpu_distances, losses)
        gpu.reduce_loss(self, losses, losses, gpu.FIXED_DIVISOR, 2 * self.pairs, 1, top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise GraphError("ContrastiveLoss cannot backpropagate to its similarity labels", layer=self.name)
        for index, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[index]:
                _contrastive_gradient_gpu[gpu.blocks_for(bottom[index].count), gpu.THREADS](
                    self.gpu_difference, self.gpu_distances, bottom[2].gpu_data, self.dim, self.margin, self.legacy,
                    sign / self.pairs, top[0].gpu_diff, bottom[index].mutable_gpu_diff)
