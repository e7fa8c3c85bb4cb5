"""Crop: cut bottom 0 to the shape of bottom 1 on the axes from ``axis`` on.

``crop_param.axis`` (default 2, negative counts from the end): axes before it
are kept whole; each axis ``i >= axis`` becomes ``bottom1.shape[i]`` long,
starting at an offset: ``offset`` given once applies to every cropped axis,
given once per cropped axis applies to each in turn, not given means 0. Bottom
1 only supplies a shape (it has at least as many axes as bottom 0).

Forward copies the window ``x[..., o_i : o_i + size_i, ...]``. Gradient: the
top's diff goes back into that window of bottom 0's diff, zeros elsewhere.
The reference bottom takes no gradient (its values do not matter), so the net
never asks for one; asked explicitly, it gets zeros.

GPU: one thread per top element finds its element of bottom 0 from the top's
shape, bottom 0's strides and the offsets (small device arrays, made when the
shapes change): Forward gathers from the window, Backward zeroes bottom 0's diff
and scatters the top's diff into the window (each window element has one top
element, so no two threads write the same place).
"""

import numpy as np

from .. import gpu, gpu_blas
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register


@gpu.jit
def _crop_gpu(bottom, top, forward, top_shape, bottom_strides, offsets):
    """Element i of the top is element sum((index_d + offset_d) * stride_d) of bottom 0: forward gathers it,
    otherwise the top's value is scattered there."""
    i = cuda.grid(1)
    if i < top.size:
        rest = i
        source = 0
        for d in range(top_shape.size - 1, -1, -1):
            size = top_shape[d]
            source += (rest % size + offsets[d]) * bottom_strides[d]
            rest //= size
        if forward:
            top[i] = bottom[source]
        else:
            bottom[source] = top[i]


@register("Crop")
class CropLayer(Layer):
    exact_bottoms = 2
    exact_tops = 1
    never_backward_bottoms = (1,)

    def setup(self, bottom, top):
        param = self.layer_param.crop_param
        self.axis = bottom[0].canonical_axis(param.axis, layer=self.name)
        self.offsets = [int(offset) for offset in param.offset]
        cropped = bottom[0].ndim - self.axis
        if len(self.offsets) > 1 and len(self.offsets) != cropped:
            raise GraphError(f"crop_param gives {len(self.offsets)} offsets for the {cropped} cropped axes "
                             f"(axis {self.axis} of a {bottom[0].ndim}-D bottom): give one offset, "
                             "or one per cropped axis", layer=self.name)

    def reshape(self, bottom, top):
        data, reference = bottom[0].shape, bottom[1].shape
        if len(reference) < len(data):
            raise self.shape_error(f"the reference bottom needs at least the {len(data)} axes of bottom 0",
                                   expected=data, actual=reference)
        shape, window = [], []
        for i, size in enumerate(data):
            if i < self.axis:
                shape.append(size)
                window.append(slice(None))
                continue
            offset = 0 if not self.offsets else self.offsets[0 if len(self.offsets) == 1 else i - self.axis]
            new_size = reference[i]
            if offset + new_size > size:
                raise self.shape_error(f"the crop of axis {i} (offset {offset}, size {new_size}) goes past "
                                       f"bottom 0's {size}", expected=data, actual=reference)
            shape.append(new_size)
            window.append(slice(offset, offset + new_size))
        self.window = tuple(window)
        top[0].reshape(tuple(shape))

    def forward(self, bottom, top):
        np.copyto(top[0].data, bottom[0].data[self.window])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].diff
            dx[...] = 0
            dx[self.window] = top[0].diff
        if propagate_down[1]:
            bottom[1].diff[...] = 0

    def _geometry(self, bottom, top):
        """(top shape, bottom 0's strides, offsets) as device arrays, remade when the shapes change."""
        key = (bottom[0].shape, top[0].shape)
        if getattr(self, "_gpu_geometry_key", None) != key:
            shape = bottom[0].shape
            strides = [1] * len(shape)
            for d in range(len(shape) - 2, -1, -1):
                strides[d] = strides[d + 1] * shape[d + 1]
            offsets = [0 if window.start is None else window.start for window in self.window]
            self._gpu_geometry = tuple(gpu.to_device(np.array(values, dtype=np.int64))
                                       for values in (top[0].shape, strides, offsets))
            self._gpu_geometry_key = key
        return self._gpu_geometry

    def forward_gpu(self, bottom, top):
        if top[0].count:
            _crop_gpu[gpu.blocks_for(top[0].count), gpu.THREADS](
                bottom[0].gpu_data, top[0].gpu_data_to_overwrite(), True, *self._geometry(bottom, top))

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0] and bottom[0].count:
            diff = bottom[0].mutable_gpu_diff
            gpu_blas.fill(diff, 0)
            if top[0].count:
                _crop_gpu[gpu.blocks_for(top[0].count), gpu.THREADS](
                    diff, top[0].gpu_diff, False, *self._geometry(bottom, top))
        if propagate_down[1] and bottom[1].count:
            gpu_blas.fill(bottom[1].mutable_gpu_diff, 0)
