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

GPU: the per group sums (of x, of d^2, of dy and of dy * y) are Bias's GEMVs
with a vector of ones through cuBLAS; the centering, the division and the
gradient are one thread per element, the standard deviations one thread per
group. The normalized output is kept in a device buffer for Backward.
"""

import math

import numpy as np

from .. import gpu
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register
from .bias import SUM_PRODUCT, channel_sums_gpu, copy_gpu, gpu_scratch, launch


@gpu.jit
def _center_gpu(x, y, sums, size, dim):
    """y = x - sums[g] / size, g the element's group (of ``dim`` elements); ``size`` in the blob's type."""
    i = cuda.grid(1)
    if i < y.size:
        y[i] = x[i] - sums[i // dim] / size


@gpu.jit
def _deviation_gpu(squares, size, eps, std, denominator):
    """Per group: std = sqrt(sum of squares / size), denominator = std + eps."""
    g = cuda.grid(1)
    if g < std.size:
        value = math.sqrt(squares[g] / size)
        std[g] = value
        denominator[g] = value + eps


@gpu.jit
def _divide_gpu(y, denominator, dim):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = y[i] / denominator[i // dim]


@gpu.jit
def _mvn_backward_gpu(dy, y, dx, sum_dy, sum_dy_y, std, denominator, size, dim, normalize_variance, zero):
    """dx = dy - mean(dy), or (dy - mean(dy)) / (s + eps) - y * mean(dy * y) / s (0 where s = 0); dx may be dy."""
    i = cuda.grid(1)
    if i < dx.size:
        g = i // dim
        centered = dy[i] - sum_dy[g] / size
        if normalize_variance:
            s = std[g]
            ratio = (sum_dy_y[g] / size) / s if s > 0 else zero
            dx[i] = centered / denominator[g] - y[i] * ratio
        else:
            dx[i] = centered


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

    def forward_gpu(self, bottom, top):
        groups, dim = self.view
        if not groups * dim:
            return
        dtype = bottom[0].dtype
        x, y = bottom[0].gpu_data, top[0].mutable_gpu_data
        layout = (1, groups, dim)
        sums = channel_sums_gpu(self, x, layout, gpu_scratch(self, "sums", groups, dtype))
        launch(_center_gpu, x.size)(x, y, sums, dtype.type(dim), int(dim))
        if not self.normalize_variance:
            return
        squares = channel_sums_gpu(self, y, layout, gpu_scratch(self, "squares", groups, dtype), b=y,
                                   mode=SUM_PRODUCT)
        self._gpu_std = gpu_scratch(self, "std", groups, dtype)
        self._gpu_denominator = gpu_scratch(self, "denominator", groups, dtype)
        launch(_deviation_gpu, groups)(squares, dtype.type(dim), dtype.type(self.eps), self._gpu_std,
                                       self._gpu_denominator)
        launch(_divide_gpu, y.size)(y, self._gpu_denominator, int(dim))
        self._gpu_y = gpu_scratch(self, "y", y.size, dtype)
        copy_gpu(y, self._gpu_y)

    def backward_gpu(self, top, propagate_down, bottom):
        groups, dim = self.view
        if not propagate_down[0] or not groups * dim:
            return
        dtype = bottom[0].dtype
        dy = top[0].gpu_diff
        layout = (1, groups, dim)
        # Both sums are taken before dx is written: in place, dx is dy.
        sum_dy = channel_sums_gpu(self, dy, layout, gpu_scratch(self, "sum dy", groups, dtype))
        if self.normalize_variance:
            y, std, denominator = self._gpu_y, self._gpu_std, self._gpu_denominator
            sum_dy_y = channel_sums_gpu(self, dy, layout, gpu_scratch(self, "sum dy y", groups, dtype), b=y,
                                        mode=SUM_PRODUCT)
        else:
            y = std = denominator = sum_dy_y = sum_dy      # unread
        launch(_mvn_backward_gpu, dy.size)(dy, y, bottom[0].mutable_gpu_diff, sum_dy, sum_dy_y, std, denominator,
                                           dtype.type(dim), int(dim), bool(self.normalize_variance), dtype.type(0))
