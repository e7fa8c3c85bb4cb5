"""Reduction: sum-like reductions over all axes from ``axis`` on.

``reduction_param``: ``operation`` SUM (default), ASUM, SUMSQ or MEAN; ``axis``
(default 0, negative counts from the end); ``coeff`` (default 1). The top has
the bottom's leading axes ``shape[:axis]`` (a scalar for axis 0). Viewing the
bottom as M x D (D: the product of the reduced axes)::

    SUM:   y = coeff * sum_d x          dx = coeff * dy
    ASUM:  y = coeff * sum_d |x|        dx = coeff * sign(x) * dy   (sign(0) = 0)
    SUMSQ: y = coeff * sum_d x^2        dx = 2 * coeff * x * dy
    MEAN:  y = coeff * sum_d x / D      dx = coeff / D * dy
"""

import numpy as np

from ..errors import GraphError
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register

_OPS = caffe_pb2.ReductionParameter.ReductionOp


@register("Reduction")
class ReductionLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.reduction_param
        self.operation = _OPS.Name(param.operation) if param.operation in _OPS.values() else None
        if self.operation is None:
            raise GraphError(f"unknown reduction operation {param.operation}", layer=self.name)
        self.coeff = float(param.coeff)

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.layer_param.reduction_param.axis, layer=self.name)
        self.view = (bottom[0].count_axes(0, axis), bottom[0].count_axes(axis))
        top[0].reshape(bottom[0].shape[:axis])

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        if self.operation == "SUM":
            y = x.sum(axis=1)
        elif self.operation == "ASUM":
            y = np.abs(x).sum(axis=1)
        elif self.operation == "SUMSQ":
            y = np.einsum("md,md->m", x, x)
        else:
            y = x.sum(axis=1) / x.dtype.type(self.view[1])
        if self.coeff != 1:
            y *= x.dtype.type(self.coeff)
        top[0].data.reshape(-1)[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dtype = self.dtype.type
        dy = top[0].diff.reshape(-1, 1) * dtype(self.coeff)
        dx = bottom[0].diff.reshape(self.view)
        if self.operation == "SUM":
            dx[...] = dy
        elif self.operation == "ASUM":
            np.multiply(np.sign(bottom[0].data.reshape(self.view)), dy, out=dx)
        elif self.operation == "SUMSQ":
            np.multiply(bottom[0].data.reshape(self.view), dy * dtype(2), out=dx)
        else:
            dx[...] = dy / dtype(self.view[1])
