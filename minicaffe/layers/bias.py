"""Bias: ``y = x + b``, with ``b`` broadcast over the axes of ``x`` it does not cover.

``b`` comes from a second bottom or is a learned parameter blob. It lines up
with ``x`` from ``bias_param.axis`` (default 1, negative counts from the end);
its shape must equal that stretch of ``x``'s shape. A learned ``b`` takes the
shape of ``num_axes`` axes of ``x`` from ``axis`` (default 1; -1 = through the
last axis; 0 = a scalar), filled by ``bias_param.filler`` (default constant 0).
A scalar ``b`` (no axes) always applies from axis 0.

Viewing ``x`` as outer x dim x inner (dim = ``b``'s count):
``y[o, d, i] = x[o, d, i] + b[d]``. Gradients: ``dx = dy``;
``db[d] = sum_{o,i} dy[o, d, i]``, accumulated into a learned ``b``'s diff and
written into a second bottom's diff. Works in place.
"""

import numpy as np

from ..errors import GraphError
from ..fillers import fill
from ..layer import Layer
from ..registry import register


def learned_operand_shape(layer, bottom0, axis_param, num_axes, what):
    """Shape of a learned Scale/Bias blob: ``num_axes`` axes of bottom 0 from ``axis`` (Caffe's rule)."""
    axis = bottom0.canonical_axis(axis_param, layer=layer.name)
    if num_axes < -1:
        raise GraphError(f"num_axes must be non-negative, or -1 to extend to the end of bottom 0; "
                         f"got {num_axes}", layer=layer.name)
    if num_axes >= 0 and bottom0.ndim < axis + num_axes:
        raise layer.shape_error(f"the {what} blob's {num_axes} axes extend past bottom 0's shape when applied "
                                f"from axis {axis}", expected=bottom0.shape[axis:], actual=(num_axes,))
    return bottom0.shape[axis:] if num_axes == -1 else bottom0.shape[axis:axis + num_axes]


def broadcast_layout(layer, bottom0, operand_shape, axis_param, what):
    """(outer, dim, inner) for an operand of ``operand_shape`` lined up with bottom 0 from ``axis``.

    A scalar operand applies from axis 0 whatever the axis says (Caffe does the
    same: the result does not depend on it).
    """
    operand_shape = tuple(operand_shape)
    count = len(operand_shape)
    axis = 0 if count == 0 else bottom0.canonical_axis(axis_param, layer=layer.name)
    stretch = bottom0.shape[axis:axis + count]
    if stretch != operand_shape:
        raise layer.shape_error(f"the {what} must have the shape of bottom 0 {bottom0.shape} from axis {axis}",
                                expected=stretch, actual=operand_shape)
    return (bottom0.count_axes(0, axis), int(np.prod(operand_shape, dtype=np.int64)),
            bottom0.count_axes(axis + count))


@register("Bias")
class BiasLayer(Layer):
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.bias_param
        if len(bottom) == 1:
            shape = learned_operand_shape(self, bottom[0], param.axis, param.num_axes, "bias")
            self.blobs = [self.new_param_blob(shape)]
            fill(self.blobs[0], param.filler, self.name)

    def _operand(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        self.layout = broadcast_layout(self, bottom[0], self._operand(bottom).shape,
                                       self.layer_param.bias_param.axis, "bias")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        outer, dim, inner = self.layout
        bias = self._operand(bottom).data.reshape(1, dim, 1)
        np.add(bottom[0].data.reshape(self.layout), bias, out=top[0].data.reshape(self.layout))

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.layout)
        if len(bottom) == 1:
            if self.param_propagate_down[0]:
                self.blobs[0].diff.reshape(-1)[...] += dy.sum(axis=(0, 2))
        elif propagate_down[1]:
            bottom[1].diff.reshape(-1)[...] = dy.sum(axis=(0, 2))
        if propagate_down[0] and bottom[0] is not top[0]:
            np.copyto(bottom[0].diff, top[0].diff)
