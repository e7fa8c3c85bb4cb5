"""Tile: ``tiles`` copies of the bottom laid end to end along ``axis``.

``tile_param.axis`` (default 1, negative counts from the end), ``tiles`` (> 0,
required). Viewing the bottom as outer x inner (inner: the axes from ``axis``
on), the top is outer x tiles x inner, each copy the whole inner block, so a
(2, 2, 3) bottom tiled 3 times on axis 1 gives (2, 6, 3) with channels
0, 1, 0, 1, 0, 1. Gradient: the sum of the copies' diffs,
``dx[o, :] = sum_t dy[o, t, :]``.

GPU: Caffe's tile kernels: Forward, one thread per top element reading its
bottom element; Backward, one thread per bottom element summing its ``tiles``
copies' diffs in order (as the CPU's sum over the tiles axis).
"""

import numpy as np

from .. import gpu
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register


@gpu.jit
def _tile_forward_gpu(x, y, tiles, inner):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = x[i // (tiles * inner) * inner + i % inner]


@gpu.jit
def _tile_backward_gpu(dy, dx, tiles, inner):
    i = cuda.grid(1)
    if i < dx.size:
        start = (i // inner * tiles) * inner + i % inner
        total = dy[start]
        for t in range(1, tiles):
            total += dy[start + t * inner]
        dx[i] = total


@register("Tile")
class TileLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        self.tiles = int(self.layer_param.tile_param.tiles)
        if self.tiles <= 0:
            raise GraphError(f"tile_param.tiles must be positive, got {self.tiles}", layer=self.name)

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.layer_param.tile_param.axis, layer=self.name)
        shape = list(bottom[0].shape)
        shape[axis] *= self.tiles
        self.outer = bottom[0].count_axes(0, axis)
        self.inner = bottom[0].count_axes(axis)
        top[0].reshape(tuple(shape))

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, 1, self.inner)
        top[0].data.reshape(self.outer, self.tiles, self.inner)[...] = x

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff.reshape(self.outer, self.tiles, self.inner)
            np.sum(dy, axis=1, out=bottom[0].diff.reshape(self.outer, self.inner))

    def forward_gpu(self, bottom, top):
        if top[0].count:
            _tile_forward_gpu[gpu.blocks_for(top[0].count), gpu.THREADS](
                bottom[0].gpu_data, top[0].gpu_data_to_overwrite(), self.tiles, self.inner)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0] and bottom[0].count:
            _tile_backward_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
                top[0].gpu_diff, bottom[0].mutable_gpu_diff, self.tiles, self.inner)
