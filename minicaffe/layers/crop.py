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
"""

import numpy as np

from ..errors import GraphError
from ..layer import Layer
from ..registry import register


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
