"""MVN: mean (and variance) normalization per item and channel, or per item.

``mvn_param``: ``normalize_variance`` (default true), ``across_channels``
(default false), ``eps`` (default 1e-9). Each group is one (item, channel)
slice over the remaining axes (N x C x ...), or one whole item with
``across_channels``; ``D`` is the group's size. Per group::

    d = x - mean(x)
    y = d                                 (normalize_variance: false)
    y = d / (s + eps),  s = sqrt(mean(d^2))

eps is added to the standard deviation, not to the variance, as Caffe does.
Gradients (means over the group): without variance normalization
``dx = dy - mean(dy)``; with it::

    dx = (dy - mean(dy)) / (s + eps) - y * mean(dy * y) / s

(the second term is 0 for a constant group, where s = 0). The output is cached
for Backward, so later in-place layers may overwrite the top.

Deviations from Caffe: the gradient above is the exact one; Caffe divides the
second term by ``s + eps`` too, which differs from it by a relative ``eps / s``
(1e-9 / s with the default eps). The top keeps the bottom's shape (Caffe's is
N x C x H x W, so a 2-D bottom gives a 4-D top there).
"""

import numpy as np

from ..layer import Layer
from ..registry import register


@register("MVN")
class MVNLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.mvn_param
        self.normalize_variance = param.normalize_variance
        self.across_channels = param.across_channels
        self.eps = float(param.eps)
        self.y = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if not shape:
            raise self.shape_error("MVN needs a bottom with at least one axis", actual=shape)
        groups = shape[0] if self.across_channels or len(shape) < 2 else shape[0] * shape[1]
        self.view = (groups, bottom[0].count // groups if groups else 0)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        dtype = x.dtype.type
        y = top[0].data.reshape(self.view)
        np.subtract(x, x.mean(axis=1, keepdims=True), out=y)
        if not self.normalize_variance:
            return
        self.std = np.sqrt(np.einsum("gd,gd->g", y, y) / dtype(self.view[1]))[:, None]
        self.denominator = self.std + dtype(self.eps)
        y /= self.denominator
        self.y = y.copy()

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.view)
        dx = bottom[0].diff.reshape(self.view)
        mean_dy = dy.mean(axis=1, keepdims=True)
        if not self.normalize_variance:
            np.subtract(dy, mean_dy, out=dx)
            return
        y = self.y
        mean_dy_y = (np.einsum("gd,gd->g", dy, y) / dy.dtype.type(self.view[1]))[:, None]
        positive = self.std > 0
        ratio = np.divide(mean_dy_y, self.std, out=np.zeros_like(self.std), where=positive)
        # Both means are taken before dx is written: in place, dx is dy.
        np.subtract(dy, mean_dy, out=dx)
        dx /= self.denominator
        dx -= y * ratio
