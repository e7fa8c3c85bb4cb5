"""Softmax over one axis (``softmax_param.axis``, default 1, negative counts from the end).

The blob is viewed as outer x channels x inner, with channels the size of the
softmax axis; each (outer, inner) slice is normalized independently. Forward
subtracts the slice's maximum before ``exp`` so nothing overflows. Backward, as
Caffe: ``dx = y * (dy - sum_c(dy * y))``. Both work in place.

GPU: one thread per (outer, inner) location walks its channels: the maximum,
the exponentials and their sum, the division (Forward); the dot product of
``dy`` and ``y``, then ``dx`` (Backward). Sums are in the blob's type, as on
the CPU.
"""

import math

import numpy as np

from .. import gpu
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register
from .bias import launch


@gpu.jit
def _softmax_forward_gpu(x, y, channels, inner, locations, zero):
    location = cuda.grid(1)
    if location < locations:
        base = (location // inner) * channels * inner + location % inner
        peak = x[base]
        for c in range(1, channels):
            peak = max(peak, x[base + c * inner])
        total = zero
        for c in range(channels):       # x[at] is read before y[at] is written: x may be y
            at = base + c * inner
            value = math.exp(x[at] - peak)
            y[at] = value
            total += value
        for c in range(channels):
            y[base + c * inner] /= total


@gpu.jit
def _softmax_backward_gpu(y, dy, dx, channels, inner, locations, zero):
    location = cuda.grid(1)
    if location < locations:
        base = (location // inner) * channels * inner + location % inner
        dot = zero
        for c in range(channels):       # before dx is written: dy may be dx
            dot += dy[base + c * inner] * y[base + c * inner]
        for c in range(channels):
            at = base + c * inner
            dx[at] = (dy[at] - dot) * y[at]


@register("Softmax")
class SoftmaxLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.layer_param.softmax_param.axis, layer=self.name)
        shape = bottom[0].shape
        self.view_shape = (bottom[0].count_axes(0, self.axis), shape[self.axis],
                           bottom[0].count_axes(self.axis + 1))
        top[0].reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view_shape)
        y = top[0].data.reshape(self.view_shape)
        peak = x.max(axis=1, keepdims=True)      # before y is written: x may be y (in place)
        np.subtract(x, peak, out=y)
        np.exp(y, out=y)
        y /= y.sum(axis=1, keepdims=True)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data.reshape(self.view_shape)
        dy = top[0].diff.reshape(self.view_shape)
        dx = bottom[0].diff.reshape(self.view_shape)
        inner = np.einsum("ocn,ocn->on", dy, y)[:, None, :]   # before dx is written: dy may be dx
        np.subtract(dy, inner, out=dx)
        dx *= y

    def forward_gpu(self, bottom, top):
        outer, channels, inner = self.view_shape
        if outer * inner * channels:
            launch(_softmax_forward_gpu, outer * inner)(bottom[0].gpu_data, top[0].mutable_gpu_data, int(channels),
                                                         int(inner), int(outer * inner), bottom[0].dtype.type(0))

    def backward_gpu(self, top, propagate_down, bottom):
        outer, channels, inner = self.view_shape
        if propagate_down[0] and outer * inner * channels:
            launch(_softmax_backward_gpu, outer * inner)(top[0].gpu_data, top[0].gpu_diff,
                                                          bottom[0].mutable_gpu_diff, int(channels), int(inner),
                                                          int(outer * inner), bottom[0].dtype.type(0))
