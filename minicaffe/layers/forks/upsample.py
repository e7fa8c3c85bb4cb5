"""Upsample: y = 0, then y[n, c].flat[mask[n, c, i]] = x[n, c].flat[i] (unpooling with a max-pooling mask).

From SegNet's Caffe (alexgkendall/caffe-segnet). Bottom 0 is the values ``x``
(N, C, H, W); bottom 1 the mask of the same shape, in SegNet the second top of
the encoder's ``Pooling`` (MAX), which holds each maximum's place in its input
plane as a float ``h * W + w`` (minicaffe's Pooling mask top is the same). Each
value goes back to that place in a zero top (N, C, OH, OW); the mask's floats
are truncated to integers, as C's cast does.

The output size, as the fork picks it:

- ``upsample_h`` and ``upsample_w`` both given: ``OH x OW = upsample_h x
  upsample_w`` (each must exceed 1); the ``scale*`` fields are not read;
- otherwise ``scale`` (default 2), or ``scale_h`` and ``scale_w`` together
  (not with ``scale``), each above 1: ``OH = H scale_h - pad_out_h``,
  ``OW = W scale_w - pad_out_w``; ``pad_out_h``/``pad_out_w`` (one row/column
  less, for an odd-sized encoder map) need a scale of 2 on their axis. One of
  ``upsample_h``/``upsample_w`` alone is ignored (minicaffe warns).

Every other combination is refused, as the fork's set-up check does.

Quirks kept: where two mask entries of a plane name the same place (pooling
windows that overlap), the later entry's value wins (the fork's CPU loop; its
GPU kernel races); Backward is the fork's gather ``dx[i] = dy[mask[i]]``, so
both entries then get that place's gradient. The mask takes no gradient.

Deviations, where the fork is undefined or at fault: the output size is
recomputed from the bottom at every reshape (the fork works out the scale
rule's size at its first Reshape and keeps it, so a net reshaped later keeps an
output of the first size); a mask entry below 0 (a MAX pooling window that held
only NaN or -inf marks its maximum -1), or NaN, places nothing and takes no
gradient (the fork writes before the plane); an entry past the output plane is
an error naming the layer (the fork's CPU code aborts, its GPU code writes past
the plane).

CPU: numba kernels over chunks of the N*C planes on minicaffe's threads.

GPU: the fork's scatter races where mask entries collide; here each bottom
element claims its top cell with an atomic max of its own index (the later
entry wins, as on the CPU), then one thread per top cell copies the winner's
value or writes 0. The first out-of-range entry is found with an atomic min,
and that one index is read back to the host to raise the error (as the loss
layers read back a bad label). Backward is the gather, one thread per bottom
element.
"""

from __future__ import annotations

import warnings

import numpy as np

from ... import gpu, kernels, threads
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError, MinicaffeWarning
from ...layer import Layer
from ...registry import register


# ====================================================================== kernels
# Arrays are (planes, H*W) for the bottoms and (planes, OH*OW) for the top.

@kernels.cpu_kernel(nogil=True)
def unpool_forward(x, mask, top):
    """top[p, mask[p, i]] = x[p, i]; returns the first out-of-range mask value's flat position, or -1."""
    planes, count = x.shape
    size = top.shape[1]
    for p in range(planes):
        row = top[p]
        values = x[p]
        where = mask[p]
        for i in range(count):
            place = where[i]
            if not place > -1.0:          # NaN, or a negative index once truncated
                continue
            if place >= size:
                return p * count + i
            row[int(place)] = values[i]
    return -1


@kernels.cpu_kernel(nogil=True)
def unpool_backward(top_diff, mask, bottom_diff):
    """bottom_diff[p, i] = top_diff[p, mask[p, i]] (0 where the mask places nothing)."""
    planes, count = bottom_diff.shape
    size = top_diff.shape[1]
    for p in range(planes):
        row = bottom_diff[p]
        gradient = top_diff[p]
        where = mask[p]
        for i in range(count):
            place = where[i]
            if place > -1.0 and place < size:
                row[i] = gradient[int(place)]
            else:
                row[i] = 0


# ---------------------------------------------------------------- GPU kernels
# Flat arrays: bottom element i is in plane i // count, top cell j in plane j // size.

_NONE = np.iinfo(np.int64).max


@gpu.jit
def _clear_winners_gpu(winner):
    i = cuda.grid(1)
    if i < winner.size:
        winner[i] = -1


@gpu.jit
def _claim_gpu(mask, winner, bad, count, size):
    """winner[cell] = the largest bottom index whose mask entry names the cell; bad[0] = min bad index."""
    i = cuda.grid(1)
    if i < mask.size:
        place = mask[i]
        if not place > -1.0:              # NaN, or a negative index once truncated
            return
        if place >= size:
            cuda.atomic.min(bad, 0, i)
            return
        cuda.atomic.max(winner, (i // count) * size + int(place), i)


@gpu.jit
def _gather_winners_gpu(x, winner, top):
    j = cuda.grid(1)
    if j < top.size:
        source = winner[j]
        if source >= 0:
            top[j] = x[source]
        else:
            top[j] = 0


@gpu.jit
def _unpool_backward_gpu(top_diff, mask, bottom_diff, count, size):
    i = cuda.grid(1)
    if i < bottom_diff.size:
        place = mask[i]
        if place > -1.0 and place < size:
            bottom_diff[i] = top_diff[(i // count) * size + int(place)]
        else:
            bottom_diff[i] = 0


# ====================================================================== layer

@register("Upsample")
class UpsampleLayer(Layer):
    exact_bottoms = 2
    exact_tops = 1
    never_backward_bottoms = (1,)
    fork = "SegNet (alexgkendall/caffe-segnet)"

    def setup(self, bottom, top):
        param = self.layer_param.upsample_param
        has = param.HasField
        if not ((has("upsample_h") and has("upsample_w"))
                or (not has("scale") and has("scale_h") and has("scale_w"))
                or (not has("scale_h") and not has("scale_w"))):
            raise GraphError("upsample_param: give upsample_h and upsample_w, or (deprecated) scale, or scale_h "
                             "and scale_w together without scale", layer=self.name)
        self.size = None
        self.scale = None
        self.pad_out = (0, 0)
        if has("upsample_h") and has("upsample_w"):
            if param.upsample_h <= 1 or param.upsample_w <= 1:
                raise GraphError(f"upsample_param: upsample_h and upsample_w must exceed 1, got "
                                 f"{param.upsample_h} x {param.upsample_w}", layer=self.name)
            self.size = (int(param.upsample_h), int(param.upsample_w))
            return
        if has("upsample_h") or has("upsample_w"):
            warnings.warn(f"layer '{self.name}': upsample_param gives only one of upsample_h and upsample_w; "
                          "SegNet's Upsample then ignores it and uses scale", MinicaffeWarning, stacklevel=2)
        if has("scale_h"):
            scale = (int(param.scale_h), int(param.scale_w))
        else:
            scale = (int(param.scale), int(param.scale))
        if min(scale) <= 1:
            raise GraphError(f"upsample_param: the scale must exceed 1, got {scale[0]} x {scale[1]}",
                             layer=self.name)
        pad_out = (int(param.pad_out_h), int(param.pad_out_w))
        for axis, flag, factor in (("h", pad_out[0], scale[0]), ("w", pad_out[1], scale[1])):
            if flag and factor != 2:
                raise GraphError(f"upsample_param: pad_out_{axis} needs scale_{axis} 2, got {factor} "
                                 "(the output size is ill-defined otherwise)", layer=self.name)
        self.scale = scale
        self.pad_out = pad_out

    def output_size(self, height, width):
        if self.size is not None:
            return self.size
        return height * self.scale[0] - self.pad_out[0], width * self.scale[1] - self.pad_out[1]

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.shape_error("Upsample takes a 4-D bottom (num, channels, height, width)",
                                   expected=("N", "C", "H", "W"), actual=shape)
        if bottom[1].shape != shape:
            raise self.shape_error("Upsample's mask (bottom 1) must have the shape of its values (bottom 0)",
                                   expected=shape, actual=bottom[1].shape)
        if top[0] is bottom[0] or top[0] is bottom[1]:
            raise GraphError("Upsample does not allow in-place computation", layer=self.name)
        top[0].reshape(shape[:2] + self.output_size(shape[2], shape[3]))

    def forward(self, bottom, top):
        num, channels, height, width = bottom[0].shape
        planes = num * channels
        x = bottom[0].data.reshape(planes, -1)
        mask = bottom[1].data.reshape(planes, -1)
        out = top[0].data.reshape(planes, -1)
        out[...] = 0
        bad = []

        def body(first, last):
            found = unpool_forward(x[first:last], mask[first:last], out[first:last])
            if found >= 0:
                bad.append(first * height * width + found)

        threads.parallel_for(planes, body, height * width)
        if bad:
            position = min(bad)
            place = mask.reshape(-1)[position]
            where = np.unravel_index(position, bottom[1].shape)
            raise GraphError(f"mask value {place:g} at {tuple(int(i) for i in where)} is past the "
                             f"{top[0].shape[2]}x{top[0].shape[3]} output plane: the upsampling size does not "
                             "match the pooling layer that made the mask", layer=self.name)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        num, channels, height, width = bottom[0].shape
        planes = num * channels
        diff = bottom[0].diff.reshape(planes, -1)
        mask = bottom[1].data.reshape(planes, -1)
        top_diff = top[0].diff.reshape(planes, -1)
        threads.parallel_for(planes, lambda a, b: unpool_backward(top_diff[a:b], mask[a:b], diff[a:b]),
                             height * width)

    # ------------------------------------------------------------ GPU
    def forward_gpu(self, bottom, top):
        count = bottom[0].count_axes(2)
        size = top[0].count_axes(2)
        cells = top[0].count
        winner = getattr(self, "_winner_gpu", None)
        if winner is None or winner.size != cells:
            winner = self._winner_gpu = gpu.device_empty(cells, np.int64)
        if not cells:
            return
        _clear_winners_gpu[gpu.blocks_for(cells), gpu.THREADS](winner)
        bad = gpu.to_device(np.array([_NONE], dtype=np.int64))
        if bottom[0].count:
            _claim_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](bottom[1].gpu_data, winner, bad, int(count),
                                                                     int(size))
        _gather_winners_gpu[gpu.blocks_for(cells), gpu.THREADS](bottom[0].gpu_data, winner, top[0].mutable_gpu_data)
        position = int(bad.copy_to_host()[0])
        if position != _NONE:
            place = bottom[1].data.reshape(-1)[position]
            where = np.unravel_index(position, bottom[1].shape)
            raise GraphError(f"mask value {place:g} at {tuple(int(i) for i in where)} is past the "
                             f"{top[0].shape[2]}x{top[0].shape[3]} output plane: the upsampling size does not "
                             "match the pooling layer that made the mask", layer=self.name)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0] or not bottom[0].count:
            return
        _unpool_backward_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
            top[0].gpu_diff, bottom[1].gpu_data, bottom[0].mutable_gpu_diff, int(bottom[0].count_axes(2)),
            int(top[0].count_axes(2)))
