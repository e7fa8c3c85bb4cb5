"""Softmax over one axis (``softmax_param.axis``, default 1, negative counts from the end).

The blob is viewed as outer x channels x inner, with channels the size of the
softmax axis; each (outer, inner) slice is normalized independently. Forward
subtracts the slice's maximum before ``exp`` so nothing overflows. Backward, as
Caffe: ``dx = y * (dy - sum_c(dy * y))``. Both work in place.
"""

import numpy as np

from ..layer import Layer
from ..registry import register


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
