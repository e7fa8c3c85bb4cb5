"""ShuffleChannel: ``y[:, j * g + i] = x[:, i * (C / g) + j]`` (the channels as a g x C/g matrix, transposed).

From ShuffleNet's Caffe code (farmingyard/ShuffleNet), with
``shuffle_channel_param { group: g }`` (default 1) at LayerParameter field 164.
The bottom is (N, C, ...) with C a multiple of g; everything after the channel
axis moves with its channel. The top has the bottom's shape. ``group: 1`` and
``group: C`` leave the order as it is.

Gradient: the inverse permutation, ``dx[:, i * (C / g) + j] = dy[:, j * g + i]``
(the C/g x g matrix of ``dy``'s channels, transposed back).

Checks: the fork refuses ``group: 0`` at set-up and a C that g does not divide
at Forward; here both are errors naming the layer, the second at reshape.
In place (bottom = top), which the fork's copy would scramble, the input is
copied aside first.

CPU: numpy copies of whole channel planes (a strided transpose, no per-element
Python), cut by output channel into chunks on minicaffe's threads.

GPU: one thread per element reads its source element through the same index
arithmetic (the fork's ShuffleChannel GPU code is the same copy); in place the
input is first copied aside into a device buffer kept on the layer.
"""

import numpy as np

from ... import gpu, gpu_blas, threads
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError
from ...layer import Layer
from ...registry import register


def transpose_channels(source, target, rows, columns):
    """``target`` (N, columns, rows, S) = ``source`` (N, rows, columns, S) with the middle two axes swapped.

    Both are C-contiguous arrays of N * rows * columns * S elements. Chunks run over the
    N * columns output channel groups; each copies, per sample, a block of whole planes.
    """
    count = source.shape[0]
    source = source.reshape(count, rows, columns, -1)
    target = target.reshape(count, columns, rows, -1)

    def copy(start, stop):
        n = start // columns
        while n * columns < stop:
            first = max(start - n * columns, 0)
            last = min(stop - n * columns, columns)
            np.copyto(target[n, first:last], source[n, :, first:last].transpose(1, 0, 2))
            n += 1

    threads.parallel_for(count * columns, copy, rows * source.shape[3])


@gpu.jit
def _transpose_channels_gpu(source, target, rows, columns, spatial):
    """target (N, columns, rows, S) = source (N, rows, columns, S) with the middle two axes swapped."""
    i = cuda.grid(1)
    if i < target.size:
        s = i % spatial
        rest = i // spatial
        r = rest % rows
        rest //= rows
        c = rest % columns
        n = rest // columns
        target[i] = source[((n * rows + r) * columns + c) * spatial + s]


@register("ShuffleChannel")
class ShuffleChannelLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1
    fork = "ShuffleNet (farmingyard/ShuffleNet)"

    def setup(self, bottom, top):
        self.group = self.layer_param.shuffle_channel_param.group
        if self.group <= 0:
            raise GraphError(f"shuffle_channel_param.group must be positive, got {self.group}", layer=self.name)
        self._scratch = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2:
            raise self.shape_error("ShuffleChannel needs a bottom with a channel axis (N x C x ...)",
                                   actual=shape)
        if shape[1] % self.group:
            raise self.shape_error(f"shuffle_channel_param.group {self.group} does not divide the "
                                   f"{shape[1]} channels of bottom '{bottom[0].name}'", actual=shape)
        top[0].reshape(shape)

    def _source(self, array, in_place):
        """``array``, or in place a copy of it (the permutation reads what it overwrites)."""
        if not in_place:
            return array
        if self._scratch is None or self._scratch.shape != array.shape or self._scratch.dtype != array.dtype:
            self._scratch = np.empty_like(array)
        np.copyto(self._scratch, array)
        return self._scratch

    def forward(self, bottom, top):
        channels = bottom[0].shape[1]
        x = self._source(bottom[0].data, bottom[0] is top[0])
        transpose_channels(x, top[0].data, self.group, channels // self.group)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        channels = bottom[0].shape[1]
        dy = self._source(top[0].diff, bottom[0] is top[0])
        transpose_channels(dy, bottom[0].diff, channels // self.group, self.group)

    # ------------------------------------------------------------ GPU
    def _source_gpu(self, array, in_place):
        if not in_place:
            return array
        scratch = getattr(self, "_gpu_scratch", None)
        if scratch is None or scratch.size != array.size or scratch.dtype != array.dtype:
            scratch = self._gpu_scratch = gpu.device_empty(array.size, array.dtype)
        gpu_blas.copy(array, scratch)
        return scratch

    def _launch_gpu(self, source, target, rows, columns, spatial):
        if target.size:
            _transpose_channels_gpu[gpu.blocks_for(target.size), gpu.THREADS](
                source, target, int(rows), int(columns), int(spatial))

    def forward_gpu(self, bottom, top):
        shape = bottom[0].shape
        in_place = bottom[0] is top[0]
        x = self._source_gpu(bottom[0].gpu_data, in_place)
        self._launch_gpu(x, top[0].mutable_gpu_data, self.group, shape[1] // self.group, bottom[0].count_axes(2))

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        shape = bottom[0].shape
        in_place = bottom[0] is top[0]
        dy = self._source_gpu(top[0].gpu_diff, in_place)
        self._launch_gpu(dy, bottom[0].mutable_gpu_diff, shape[1] // self.group, self.group, bottom[0].count_axes(2))
