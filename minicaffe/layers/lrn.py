"""LRN: local response normalization over an N x C x H x W blob (Krizhevsky et al.).

``local_size`` (n, odd), ``alpha``, ``beta``, ``k``; ``norm_region``:

- ACROSS_CHANNELS (default): with the sum over the channels ``c'`` within
  ``(n - 1) / 2`` of ``c`` (zero beyond the first and last channel)::

      s[c] = k + alpha / n * sum_c' x[c']^2
      y[c] = x[c] * s[c]^-beta
      dx[c] = dy[c] * s[c]^-beta - (2 alpha beta / n) * x[c] * sum_c' dy[c'] y[c'] / s[c']

- WITHIN_CHANNEL: Caffe builds it from internal layers (square, AVE pooling of
  n x n with pad (n - 1) / 2 and stride 1, power, product), and minicaffe
  computes the same numbers: with ``P`` that AVE pooling (whose divisor counts
  the padded cells, so it is n^2 everywhere), and no ``k`` (Caffe ignores it
  here)::

      s = 1 + alpha * P(x^2)
      y = x * s^-beta
      dx = dy * s^-beta + 2 x * P^T(-alpha beta * dy * y / s)

CPU: numba kernels (one thread). ACROSS_CHANNELS walks blocks of spatial
positions of each image, channel by channel over contiguous runs (which
vectorize); ``beta = 0.75``, the value of every classic net, is computed with
square roots instead of ``pow``. WITHIN_CHANNEL reuses Pooling's AVE kernels.
The scale ``s`` (and WITHIN_CHANNEL's intermediates) stay in buffers that are
kept between iterations. In-place computation is refused (Backward needs x).
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..errors import GraphError
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register
from .pooling import AVE, Pooler

ACROSS_CHANNELS = caffe_pb2.LRNParameter.ACROSS_CHANNELS
WITHIN_CHANNEL = caffe_pb2.LRNParameter.WITHIN_CHANNEL

_BLOCK = 512  # spatial positions per block


@kernels.cpu_kernel
def _power(s, beta, three_quarters, one):
    """s^-beta; for beta = 0.75 as 1 / (sqrt(s) sqrt(sqrt(s))), which vectorizes. ``one`` is 1 in s's type."""
    if three_quarters:
        root = np.sqrt(s)
        return one / (root * np.sqrt(root))
    return s ** -beta


# ACROSS_CHANNELS kernels take (N*C, H*W) arrays: row n*C + c is channel c of image n. Each
# block is one image's run of _BLOCK positions, walked channel by channel.

@kernels.cpu_kernel
def lrn_across_forward(x, scale, top, channels, size, alpha_over_size, beta, k):
    """scale = k + alpha/n * window sum of x^2; top = x * scale^-beta."""
    rows, spatial = x.shape
    num = rows // channels
    pre = (size - 1) // 2
    blocks = (spatial + _BLOCK - 1) // _BLOCK
    three_quarters = beta == 0.75
    one = x.dtype.type(1.0)
    for task in range(num * blocks):
        first = (task // blocks) * channels
        start = (task % blocks) * _BLOCK
        stop = min(start + _BLOCK, spatial)
        m = stop - start
        for c in range(channels):
            s = scale[first + c, start:stop]
            s[:] = 0.0
            for other in range(max(c - pre, 0), min(c + pre + 1, channels)):
                values = x[first + other, start:stop]
                for j in range(m):
                    s[j] += values[j] * values[j]
            values = x[first + c, start:stop]
            out = top[first + c, start:stop]
            for j in range(m):
                s[j] = k + alpha_over_size * s[j]
                out[j] = values[j] * _power(s[j], beta, three_quarters, one)


@kernels.cpu_kernel
def lrn_across_backward(x, top, scale, top_diff, ratio, bottom_diff, channels, size, ratio_coefficient, beta):
    """dx = dy * s^-beta - ratio_coefficient * x * window sum of (dy * y / s); ``ratio`` is scratch."""
    rows, spatial = x.shape
    num = rows // channels
    pre = (size - 1) // 2
    blocks = (spatial + _BLOCK - 1) // _BLOCK
    three_quarters = beta == 0.75
    one = x.dtype.type(1.0)
    for task in range(num * blocks):
        first = (task // blocks) * channels
        start = (task % blocks) * _BLOCK
        stop = min(start + _BLOCK, spatial)
        m = stop - start
        for c in range(channels):
            dy = top_diff[first + c, start:stop]
            y = top[first + c, start:stop]
            s = scale[first + c, start:stop]
            r = ratio[first + c, start:stop]
            for j in range(m):
                r[j] = dy[j] * y[j] / s[j]
        for c in range(channels):
            dx = bottom_diff[first + c, start:stop]    # first the window sum of the ratios
            dx[:] = 0.0
            for other in range(max(c - pre, 0), min(c + pre + 1, channels)):
                r = ratio[first + other, start:stop]
                for j in range(m):
                    dx[j] += r[j]
            dy = top_diff[first + c, start:stop]
            s = scale[first + c, start:stop]
            values = x[first + c, start:stop]
            for j in range(m):
                dx[j] = dy[j] * _power(s[j], beta, three_quarters, one) - ratio_coefficient * values[j] * dx[j]


@kernels.cpu_kernel
def _square(x, out):
    for i in range(x.size):
        out[i] = x[i] * x[i]


@kernels.cpu_kernel
def _within_forward(x, pooled, alpha, beta, top):
    """pooled (the AVE of x^2) becomes s = 1 + alpha * pooled; top = x * s^-beta. Flat arrays."""
    three_quarters = beta == 0.75
    one = x.dtype.type(1.0)
    for i in range(x.size):
        s = one + alpha * pooled[i]
        pooled[i] = s
        top[i] = x[i] * _power(s, beta, three_quarters, one)


@kernels.cpu_kernel
def _within_backward_ratio(top, top_diff, scale, coefficient, ratio):
    """ratio = coefficient * dy * y / s (the gradient reaching the AVE pooling's output). Flat arrays."""
    for i in range(top.size):
        ratio[i] = coefficient * top_diff[i] * top[i] / scale[i]


@kernels.cpu_kernel
def _within_backward(x, top_diff, scale, pooled_back, beta, bottom_diff):
    """dx = dy * s^-beta + 2 x * (P^T of the ratio). Flat arrays."""
    three_quarters = beta == 0.75
    one = x.dtype.type(1.0)
    for i in range(x.size):
        bottom_diff[i] = (top_diff[i] * _power(scale[i], beta, three_quarters, one)
                          + (x[i] + x[i]) * pooled_back[i])


@register("LRN")
class LRNLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.lrn_param
        self.size = param.local_size
        if self.size % 2 != 1:
            raise GraphError(f"LRN only supports odd values for local_size, got {self.size}", layer=self.name)
        self.alpha = param.alpha
        self.beta = param.beta
        self.k = param.k
        self.region = param.norm_region
        if self.region not in (ACROSS_CHANNELS, WITHIN_CHANNEL):
            raise GraphError(f"unknown LRN norm_region {self.region}", layer=self.name)
        pre_pad = (self.size - 1) // 2
        self.pooler = Pooler(AVE, self.size, self.size, 1, 1, pre_pad, pre_pad, layer=self.name)
        self._buffers = {}

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.shape_error("LRN takes a 4-D bottom (num, channels, height, width)",
                                   expected=("N", "C", "H", "W"), actual=shape)
        if top[0] is bottom[0]:
            raise GraphError("LRN does not allow in-place computation", layer=self.name)
        top[0].reshape(shape)

    def _buffer(self, name, shape):
        """A scratch array kept between iterations (reallocated only when the shape changes)."""
        array = self._buffers.get(name)
        if array is None or array.shape != shape:
            array = np.empty(shape, dtype=self.dtype)
            self._buffers[name] = array
        return array

    def _scalar(self, value):
        return self.dtype.type(value)

    def forward(self, bottom, top):
        x = bottom[0].data
        n, c, h, w = x.shape
        if self.region == ACROSS_CHANNELS:
            scale = self._buffer("scale", (n * c, h * w))
            lrn_across_forward(x.reshape(n * c, h * w), scale, top[0].data.reshape(n * c, h * w), c,
                               self.size, self._scalar(self.alpha / self.size), self._scalar(self.beta),
                               self._scalar(self.k))
            return
        squares = self._buffer("squares", (n * c, h, w))
        scale = self._buffer("scale", (n * c, h, w))
        _square(x.reshape(-1), squares.reshape(-1))
        self.pooler.forward(squares, scale)
        _within_forward(x.reshape(-1), scale.reshape(-1), self._scalar(self.alpha), self._scalar(self.beta),
                        top[0].data.reshape(-1))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].data
        n, c, h, w = x.shape
        expected = (n * c, h * w) if self.region == ACROSS_CHANNELS else (n * c, h, w)
        if self._buffers.get("scale") is None or self._buffers["scale"].shape != expected:
            raise GraphError("LRN Backward before a Forward at this shape", layer=self.name)
        if self.region == ACROSS_CHANNELS:
            shape = (n * c, h * w)
            lrn_across_backward(x.reshape(shape), top[0].data.reshape(shape), self._buffers["scale"],
                                top[0].diff.reshape(shape), self._buffer("ratio", shape), bottom[0].diff.reshape(shape),
                                c, self.size,
                                self._scalar(2.0 * self.alpha * self.beta / self.size), self._scalar(self.beta))
            return
        scale = self._buffers["scale"]
        ratio = self._buffer("ratio", (n * c, h, w))
        _within_backward_ratio(top[0].data.reshape(-1), top[0].diff.reshape(-1), scale.reshape(-1),
                               self._scalar(-self.alpha * self.beta), ratio.reshape(-1))
        pooled_back = self._buffer("squares", (n * c, h, w))   # x^2 is no longer needed
        pooled_back[...] = 0
        self.pooler.backward(ratio, None, pooled_back)
        _within_backward(x.reshape(-1), top[0].diff.reshape(-1), scale.reshape(-1), pooled_back.reshape(-1),
                         self._scalar(self.beta), bottom[0].diff.reshape(-1))
