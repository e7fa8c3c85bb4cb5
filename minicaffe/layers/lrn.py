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

CPU: numba kernels on minicaffe's threads (:mod:`minicaffe.threads`; a small
blob stays on one thread). ACROSS_CHANNELS walks blocks of spatial positions
of each image (the tasks handed to the threads, so one image is split too),
channel by channel over contiguous runs (which vectorize); ``beta = 0.75``,
the value of every classic net, is computed with square roots instead of
``pow``. WITHIN_CHANNEL reuses Pooling's AVE kernels and runs its
element-wise kernels over chunks of the blob. (ACROSS_CHANNELS over
4x96x55x55: 6.4 ms on one thread, 3.3 ms on two, on a 2-core machine; the
kernels ran on one thread while BLAS's spinning threads shared the cores.)
The scale ``s`` (and WITHIN_CHANNEL's intermediates) stay in buffers that are
kept between iterations. In-place computation is refused (Backward needs x).

GPU: ACROSS_CHANNELS is Caffe's lrn_layer.cu in three numba.cuda kernels (fill
the scale, compute the output, compute the diff through the ratio
``dy * y / s``), with one thread per element summing its own window of
channels in the CPU's order rather than Caffe's one thread per position
sliding a running sum (which adds and subtracts, so it drifts from the CPU's
numbers, and runs C times fewer threads). WITHIN_CHANNEL is the CPU's
composite on the device: the square, Pooling's AVE kernels (the Pooler's
``forward_gpu``/``backward_gpu``), and the element-wise kernels. The scale
and the intermediates stay in device buffers kept between iterations.
"""

from __future__ import annotations

import math

import numpy as np

from .. import gpu, kernels, threads
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register
from .bias import SUM_PRODUCT, gpu_scratch, launch, product_gpu
from .pooling import AVE, Pooler

ACROSS_CHANNELS = caffe_pb2.LRNParameter.ACROSS_CHANNELS
WITHIN_CHANNEL = caffe_pb2.LRNParameter.WITHIN_CHANNEL

_BLOCK = 512  # spatial positions per block


@kernels.cpu_kernel(nogil=True)
def _power(s, beta, three_quarters, one):
    """s^-beta; for beta = 0.75 as 1 / (sqrt(s) sqrt(sqrt(s))), which vectorizes. ``one`` is 1 in s's type."""
    if three_quarters:
        root = np.sqrt(s)
        return one / (root * np.sqrt(root))
    return s ** -beta


# ACROSS_CHANNELS kernels take (N*C, H*W) arrays: row n*C + c is channel c of image n. Each
# task is one image's run of _BLOCK positions (a block), walked channel by channel; task
# n * blocks + b is block b of image n.

@kernels.cpu_kernel(nogil=True)
def lrn_across_forward(x, scale, top, channels, size, alpha_over_size, beta, k, first_task, last_task):
    """scale = k + alpha/n * window sum of x^2; top = x * scale^-beta, for tasks [first_task, last_task)."""
    spatial = x.shape[1]
    pre = (size - 1) // 2
    blocks = (spatial + _BLOCK - 1) // _BLOCK
    three_quarters = beta == 0.75
    one = x.dtype.type(1.0)
    for task in range(first_task, last_task):
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


@kernels.cpu_kernel(nogil=True)
def lrn_across_backward(x, top, scale, top_diff, ratio, bottom_diff, channels, size, ratio_coefficient, beta,
                        first_task, last_task):
    """dx = dy * s^-beta - ratio_coefficient * x * window sum of (dy * y / s), for tasks
    [first_task, last_task); ``ratio`` is scratch."""
    spatial = x.shape[1]
    pre = (size - 1) // 2
    blocks = (spatial + _BLOCK - 1) // _BLOCK
    three_quarters = beta == 0.75
    one = x.dtype.type(1.0)
    for task in range(first_task, last_task):
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


@kernels.cpu_kernel(nogil=True)
def _square(x, out, start, stop):
    x, out = x[start:stop], out[start:stop]      # indexed from 0: vectorizes (see relu.py)
    for i in range(x.size):
        out[i] = x[i] * x[i]


@kernels.cpu_kernel(nogil=True)
def _within_forward(x, pooled, alpha, beta, top, start, stop):
    """pooled (the AVE of x^2) becomes s = 1 + alpha * pooled; top = x * s^-beta. Flat arrays."""
    x, pooled, top = x[start:stop], pooled[start:stop], top[start:stop]
    three_quarters = beta == 0.75
    one = x.dtype.type(1.0)
    for i in range(x.size):
        s = one + alpha * pooled[i]
        pooled[i] = s
        top[i] = x[i] * _power(s, beta, three_quarters, one)


@kernels.cpu_kernel(nogil=True)
def _within_backward_ratio(top, top_diff, scale, coefficient, ratio, start, stop):
    """ratio = coefficient * dy * y / s (the gradient reaching the AVE pooling's output). Flat arrays."""
    top, top_diff, scale, ratio = top[start:stop], top_diff[start:stop], scale[start:stop], ratio[start:stop]
    for i in range(top.size):
        ratio[i] = coefficient * top_diff[i] * top[i] / scale[i]


@kernels.cpu_kernel(nogil=True)
def _within_backward(x, top_diff, scale, pooled_back, beta, bottom_diff, start, stop):
    """dx = dy * s^-beta + 2 x * (P^T of the ratio). Flat arrays."""
    x, top_diff, scale = x[start:stop], top_diff[start:stop], scale[start:stop]
    pooled_back, bottom_diff = pooled_back[start:stop], bottom_diff[start:stop]
    three_quarters = beta == 0.75
    one = x.dtype.type(1.0)
    for i in range(x.size):
        bottom_diff[i] = (top_diff[i] * _power(scale[i], beta, three_quarters, one)
                          + (x[i] + x[i]) * pooled_back[i])


# ---------------------------------------------------------------- GPU kernels
# Flat N*C*H*W arrays; ``spatial`` is H*W. Scalars are of the blob's type.

@gpu.device
def _power_gpu(s, beta, three_quarters, one):
    """s^-beta, as the CPU's _power."""
    if three_quarters:
        root = math.sqrt(s)
        return one / (root * math.sqrt(root))
    return s ** -beta


@gpu.jit
def _across_scale_gpu(x, scale, channels, spatial, size, alpha_over_size, k, zero):
    """scale = k + alpha/n * the sum of x^2 over the channels within (n - 1) / 2 (LRNFillScale)."""
    i = cuda.grid(1)
    if i < scale.size:
        c = (i // spatial) % channels
        first = i - c * spatial          # channel 0 at this image and position
        pre = (size - 1) // 2
        total = zero
        for other in range(max(c - pre, 0), min(c + pre + 1, channels)):
            value = x[first + other * spatial]
            total += value * value
        scale[i] = k + alpha_over_size * total


@gpu.jit
def _across_output_gpu(x, scale, top, beta, three_quarters, one):
    """top = x * scale^-beta (LRNComputeOutput)."""
    i = cuda.grid(1)
    if i < top.size:
        top[i] = x[i] * _power_gpu(scale[i], beta, three_quarters, one)


@gpu.jit
def _across_ratio_gpu(top, top_diff, scale, ratio):
    i = cuda.grid(1)
    if i < ratio.size:
        ratio[i] = top_diff[i] * top[i] / scale[i]


@gpu.jit
def _across_diff_gpu(x, scale, top_diff, ratio, bottom_diff, channels, spatial, size, coefficient, beta,
                     three_quarters, one, zero):
    """dx = dy * s^-beta - coefficient * x * the window sum of the ratios (LRNComputeDiff)."""
    i = cuda.grid(1)
    if i < bottom_diff.size:
        c = (i // spatial) % channels
        first = i - c * spatial
        pre = (size - 1) // 2
        total = zero
        for other in range(max(c - pre, 0), min(c + pre + 1, channels)):
            total += ratio[first + other * spatial]
        bottom_diff[i] = top_diff[i] * _power_gpu(scale[i], beta, three_quarters, one) - coefficient * x[i] * total


@gpu.jit
def _within_forward_gpu(x, pooled, alpha, beta, top, three_quarters, one):
    """pooled (the AVE of x^2) becomes s = 1 + alpha * pooled; top = x * s^-beta."""
    i = cuda.grid(1)
    if i < top.size:
        s = one + alpha * pooled[i]
        pooled[i] = s
        top[i] = x[i] * _power_gpu(s, beta, three_quarters, one)


@gpu.jit
def _within_ratio_gpu(top, top_diff, scale, coefficient, ratio):
    i = cuda.grid(1)
    if i < ratio.size:
        ratio[i] = coefficient * top_diff[i] * top[i] / scale[i]


@gpu.jit
def _within_backward_gpu(x, top_diff, scale, pooled_back, beta, bottom_diff, three_quarters, one):
    """dx = dy * s^-beta + 2 x * (P^T of the ratio)."""
    i = cuda.grid(1)
    if i < bottom_diff.size:
        bottom_diff[i] = (top_diff[i] * _power_gpu(scale[i], beta, three_quarters, one)
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

    def _across_tasks(self, n, c, h, w, body):
        """``body(first_task, last_task)`` over the (image, block) tasks of ACROSS_CHANNELS, on the threads."""
        blocks = (h * w + _BLOCK - 1) // _BLOCK
        threads.parallel_for(n * blocks, body, c * min(_BLOCK, h * w))

    def forward(self, bottom, top):
        x = bottom[0].data
        n, c, h, w = x.shape
        if self.region == ACROSS_CHANNELS:
            shape = (n * c, h * w)
            scale = self._buffer("scale", shape)
            x_rows, y_rows = x.reshape(shape), top[0].data.reshape(shape)
            alpha_over_size, beta, k = (self._scalar(self.alpha / self.size), self._scalar(self.beta),
                                        self._scalar(self.k))
            self._across_tasks(n, c, h, w, lambda first, last: lrn_across_forward(
                x_rows, scale, y_rows, c, self.size, alpha_over_size, beta, k, first, last))
            return
        squares = self._buffer("squares", (n * c, h, w))
        scale = self._buffer("scale", (n * c, h, w))
        flat_x, flat_squares, flat_scale = x.reshape(-1), squares.reshape(-1), scale.reshape(-1)
        flat_top = top[0].data.reshape(-1)
        threads.parallel_for(flat_x.size, lambda start, stop: _square(flat_x, flat_squares, start, stop))
        self.pooler.forward(squares, scale)
        alpha, beta = self._scalar(self.alpha), self._scalar(self.beta)
        threads.parallel_for(flat_x.size, lambda start, stop: _within_forward(flat_x, flat_scale, alpha, beta,
                                                                              flat_top, start, stop))

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
            x_rows, y_rows = x.reshape(shape), top[0].data.reshape(shape)
            dy_rows, dx_rows = top[0].diff.reshape(shape), bottom[0].diff.reshape(shape)
            scale, ratio = self._buffers["scale"], self._buffer("ratio", shape)
            coefficient, beta = self._scalar(2.0 * self.alpha * self.beta / self.size), self._scalar(self.beta)
            self._across_tasks(n, c, h, w, lambda first, last: lrn_across_backward(
                x_rows, y_rows, scale, dy_rows, ratio, dx_rows, c, self.size, coefficient, beta, first, last))
            return
        scale = self._buffers["scale"].reshape(-1)
        ratio = self._buffer("ratio", (n * c, h, w))
        flat_ratio = ratio.reshape(-1)
        flat_x, flat_y = x.reshape(-1), top[0].data.reshape(-1)
        flat_dy, flat_dx = top[0].diff.reshape(-1), bottom[0].diff.reshape(-1)
        coefficient, beta = self._scalar(-self.alpha * self.beta), self._scalar(self.beta)
        threads.parallel_for(flat_x.size, lambda start, stop: _within_backward_ratio(
            flat_y, flat_dy, scale, coefficient, flat_ratio, start, stop))
        pooled_back = self._buffer("squares", (n * c, h, w))   # x^2 is no longer needed
        flat_back = pooled_back.reshape(-1)
        threads.parallel_for(flat_back.size, lambda start, stop: flat_back[start:stop].fill(0))
        self.pooler.backward(ratio, None, pooled_back)
        threads.parallel_for(flat_x.size, lambda start, stop: _within_backward(
            flat_x, flat_dy, scale, flat_back, beta, flat_dx, start, stop))

    def forward_gpu(self, bottom, top):
        n, c, h, w = bottom[0].shape
        count = bottom[0].count
        dtype = bottom[0].dtype.type
        self._gpu_shape = bottom[0].shape
        if not count:
            return
        x, y = bottom[0].gpu_data, top[0].mutable_gpu_data
        scale = self._gpu_scale = gpu_scratch(self, "scale", count, bottom[0].dtype)
        beta, one = dtype(self.beta), dtype(1)
        if self.region == ACROSS_CHANNELS:
            launch(_across_scale_gpu, count)(x, scale, int(c), int(h * w), int(self.size),
                                             dtype(self.alpha / self.size), dtype(self.k), dtype(0))
            launch(_across_output_gpu, count)(x, scale, y, beta, self.beta == 0.75, one)
            return
        squares = gpu_scratch(self, "squares", count, bottom[0].dtype)
        launch(product_gpu, count)(x, x, SUM_PRODUCT, squares)
        self.pooler.forward_gpu(squares, scale, n * c, h, w, h, w)
        launch(_within_forward_gpu, count)(x, scale, dtype(self.alpha), beta, y, self.beta == 0.75, one)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if getattr(self, "_gpu_shape", None) != bottom[0].shape:
            raise GraphError("LRN Backward before a Forward at this shape", layer=self.name)
        n, c, h, w = bottom[0].shape
        count = bottom[0].count
        dtype = bottom[0].dtype.type
        if not count:
            return
        x, y, dy = bottom[0].gpu_data, top[0].gpu_data, top[0].gpu_diff
        dx = bottom[0].mutable_gpu_diff
        scale = self._gpu_scale
        ratio = gpu_scratch(self, "ratio", count, bottom[0].dtype)
        beta, one = dtype(self.beta), dtype(1)
        if self.region == ACROSS_CHANNELS:
            launch(_across_ratio_gpu, count)(y, dy, scale, ratio)
            launch(_across_diff_gpu, count)(x, scale, dy, ratio, dx, int(c), int(h * w), int(self.size),
                                            dtype(2.0 * self.alpha * self.beta / self.size), beta,
                                            self.beta == 0.75, one, dtype(0))
            return
        launch(_within_ratio_gpu, count)(y, dy, scale, dtype(-self.alpha * self.beta), ratio)
        pooled_back = gpu_scratch(self, "squares", count, bottom[0].dtype)   # x^2 is no longer needed
        self.pooler.backward_gpu(ratio, x, pooled_back, n * c, h, w, h, w)
        launch(_within_backward_gpu, count)(x, dy, scale, pooled_back, beta, dx, self.beta == 0.75, one)
