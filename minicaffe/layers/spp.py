"""SPP: spatial pyramid pooling (He et al.), a fixed-length output from any H x W.

``spp_param``: ``pyramid_height`` (levels, at least 1) and ``pool`` (MAX, AVE or
STOCHASTIC). Level ``l`` pools the N x C x H x W bottom into ``b x b`` bins,
``b = 2^l``, with the geometry BVLC's spp_layer.cpp computes per axis::

    kernel = ceil(H / b)
    pad    = (kernel * b - H + 1) // 2
    stride = kernel

and Pooling's rules otherwise (output extent rounded up, last window dropped
when it starts inside the padding; AVE divides by the window clipped to the
padded bounds). Caffe builds SPP from internal Split, Pooling, Flatten and
Concat layers; the numbers are the same as computing them directly:

- ``pyramid_height: 1``: the top is that single level, N x C x 1 x 1 (Caffe
  returns the Pooling layer's top itself, not flattened);
- otherwise the top is N x (C * sum_l b_l^2): for each image, level 0's C values,
  then level 1's C x 2 x 2 (channel-major, then row, column), and so on.

Backward is each level's Pooling Backward, summed over the levels. Like Caffe,
SPP refuses inputs too small for the pyramid (a level whose padding would not
be smaller than its kernel, e.g. H = 5 with 4 bins).

CPU: Pooling's numba kernels, one call per level, into per-level buffers kept
between iterations.

GPU: Pooling's device kernels (the Pooler's ``forward_gpu``/``backward_gpu``),
one call per level into per-level device buffers, whose columns a kernel places
into the top (and takes back from its diff); Backward writes the first level's
gradient into the bottom diff and adds the others' to it, as the CPU path's
zeroed sum. Nothing leaves the device.
"""

from __future__ import annotations

import math

import numpy as np

from .. import gpu
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..graph import TRAIN
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register
from .bias import gpu_scratch, launch
from .pooling import AVE, MAX, STOCHASTIC, Pooler

_METHODS = {caffe_pb2.SPPParameter.MAX: MAX, caffe_pb2.SPPParameter.AVE: AVE,
            caffe_pb2.SPPParameter.STOCHASTIC: STOCHASTIC}


def spp_level_geometry(level, height, width):
    """(kernel_h, kernel_w, pad_h, pad_w) of pyramid level ``level`` (2^level bins), as Caffe's GetPoolingParam."""
    bins = 2 ** level
    kernel_h = math.ceil(height / bins)
    kernel_w = math.ceil(width / bins)
    pad_h = (kernel_h * bins - height + 1) // 2
    pad_w = (kernel_w * bins - width + 1) // 2
    return kernel_h, kernel_w, pad_h, pad_w


@gpu.jit
def _columns_gpu(level, top, columns, total, start, to_top):
    """A level's (N, columns) block <-> columns [start, start + columns) of the (N, total) top (``to_top``:
    level into top; else top into level)."""
    i = cuda.grid(1)
    if i < level.size:
        at = (i // columns) * total + start + i % columns
        if to_top:
            top[at] = level[i]
        else:
            level[i] = top[at]


@register("SPP")
class SPPLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.spp_param
        self.pyramid_height = param.pyramid_height
        if self.pyramid_height < 1:
            raise GraphError(f"spp_param.pyramid_height must be at least 1, got {self.pyramid_height}",
                             layer=self.name)
        if param.pool not in _METHODS:
            raise GraphError(f"unknown SPP pool method {param.pool}", layer=self.name)
        self.method = _METHODS[param.pool]
        self.poolers = []
        self.input_hw = None
        self._buffers = {}

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.shape_error("SPP takes a 4-D bottom (num, channels, height, width)",
                                   expected=("N", "C", "H", "W"), actual=shape)
        if top[0] is bottom[0]:
            raise GraphError("SPP does not allow in-place computation", layer=self.name)
        num, channels, height, width = shape
        if height <= 0 or width <= 0:
            raise self.shape_error("SPP needs a non-empty input plane", actual=shape)
        if self.input_hw != (height, width):
            self.poolers = []
            self.levels = []     # (pooled_h, pooled_w) per level
            for level in range(self.pyramid_height):
                kernel_h, kernel_w, pad_h, pad_w = spp_level_geometry(level, height, width)
                if pad_h >= kernel_h or pad_w >= kernel_w:
                    raise self.shape_error(f"the {height}x{width} input is too small for pyramid_height "
                                           f"{self.pyramid_height}: level {level} ({2 ** level}x{2 ** level} "
                                           f"bins) would need pad ({pad_h}, {pad_w}) not smaller than its "
                                           f"kernel ({kernel_h}, {kernel_w})", actual=shape)
                pooler = Pooler(self.method, kernel_h, kernel_w, kernel_h, kernel_w, pad_h, pad_w,
                                train=self.phase == TRAIN, layer=self.name)
                pooled_h, pooled_w, ok = pooler.output_shape(height, width)
                if not ok:
                    raise self.shape_error(f"level {level} of the pyramid leaves a window in the padding "
                                           f"of the {height}x{width} input", actual=shape)
                self.poolers.append(pooler)
                self.levels.append((pooled_h, pooled_w))
            self.input_hw = (height, width)
        if self.pyramid_height == 1:
            top[0].reshape((num, channels) + self.levels[0])
        else:
            top[0].reshape((num, channels * sum(h * w for h, w in self.levels)))

    def _buffer(self, name, shape):
        array = self._buffers.get(name)
        if array is None or array.shape != shape:
            array = np.empty(shape, dtype=self.dtype)
            self._buffers[name] = array
        return array

    def _slices(self, num, channels):
        """(level, start, stop) of each level's columns in the N x total top."""
        start = 0
        for level, (pooled_h, pooled_w) in enumerate(self.levels):
            stop = start + channels * pooled_h * pooled_w
            yield level, start, stop
            start = stop

    def forward(self, bottom, top):
        x = bottom[0].data
        num, channels, height, width = x.shape
        planes = x.reshape(num * channels, height, width)
        if self.pyramid_height == 1:
            self.poolers[0].forward(planes, top[0].data.reshape((num * channels,) + self.levels[0]))
            return
        out = top[0].data
        for level, start, stop in self._slices(num, channels):
            pooled = self._buffer(f"level{level}", (num * channels,) + self.levels[level])
            self.poolers[level].forward(planes, pooled)
            out[:, start:stop] = pooled.reshape(num, stop - start)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].data
        num, channels, height, width = x.shape
        planes = x.reshape(num * channels, height, width)
        diff = bottom[0].diff
        diff[...] = 0
        diff_planes = diff.reshape(num * channels, height, width)
        if self.pyramid_height == 1:
            self.poolers[0].backward(top[0].diff.reshape((num * channels,) + self.levels[0]), planes, diff_planes)
            return
        top_diff = top[0].diff
        for level, start, stop in self._slices(num, channels):
            gradient = self._buffer(f"level{level}", (num * channels,) + self.levels[level])
            gradient.reshape(num, stop - start)[...] = top_diff[:, start:stop]
            self.poolers[level].backward(gradient, planes, diff_planes)

    def forward_gpu(self, bottom, top):
        num, channels, height, width = bottom[0].shape
        planes = num * channels
        x = bottom[0].gpu_data
        if self.pyramid_height == 1:
            self.poolers[0].forward_gpu(x, top[0].mutable_gpu_data, planes, height, width, *self.levels[0])
            return
        out = top[0].mutable_gpu_data
        total = top[0].shape[1]
        for level, start, stop in self._slices(num, channels):
            pooled = gpu_scratch(self, f"level{level}", planes * self.levels[level][0] * self.levels[level][1],
                                 bottom[0].dtype)
            self.poolers[level].forward_gpu(x, pooled, planes, height, width, *self.levels[level])
            if pooled.size:
                launch(_columns_gpu, pooled.size)(pooled, out, int(stop - start), int(total), int(start), True)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        num, channels, height, width = bottom[0].shape
        planes = num * channels
        x = bottom[0].gpu_data
        diff = bottom[0].mutable_gpu_diff
        if self.pyramid_height == 1:
            self.poolers[0].backward_gpu(top[0].gpu_diff, x, diff, planes, height, width, *self.levels[0])
            return
        top_diff = top[0].gpu_diff
        total = top[0].shape[1]
        for level, start, stop in self._slices(num, channels):
            gradient = gpu_scratch(self, f"level{level}", planes * self.levels[level][0] * self.levels[level][1],
                                   bottom[0].dtype)
            if gradient.size:
                launch(_columns_gpu, gradient.size)(gradient, top_diff, int(stop - start), int(total), int(start),
                                                    False)
            self.poolers[level].backward_gpu(gradient, x, diff, planes, height, width, *self.levels[level],
                                             accumulate=level > 0)
