"""BatchReindex: pick items of bottom 0 (along axis 0) by the indices in bottom 1.

Bottom 1 is 1-D, K indices (floats, truncated to integers as Caffe does; each
must then lie in [0, N)); the top is
K x (bottom 0's shape after axis 0): ``y[k] = x[index[k]]``. An index may occur
more than once, or not at all. Gradient: ``dx[n] = sum of dy[k] over the k with
index[k] == n`` (0 for items never picked). The indices take no gradient: the
net never asks for one, and asking explicitly is an error.
"""

import numpy as np

from ..errors import GraphError
from ..layer import Layer
from ..registry import register


@register("BatchReindex")
class BatchReindexLayer(Layer):
    exact_bottoms = 2
    exact_tops = 1
    never_backward_bottoms = (1,)

    def setup(self, bottom, top):
        self.indices = None

    def reshape(self, bottom, top):
        if bottom[1].ndim != 1:
            raise self.shape_error("the indices (bottom 1) must be 1-D", expected=(bottom[1].count,),
                                   actual=bottom[1].shape)
        if bottom[0].ndim < 1:
            raise self.shape_error("bottom 0 needs an axis 0 to pick items from", actual=bottom[0].shape)
        top[0].reshape(bottom[1].shape + bottom[0].shape[1:])

    def forward(self, bottom, top):
        values = bottom[1].data
        indices = values.astype(np.int64)
        count = bottom[0].shape[0]
        bad = (indices < 0) | (indices >= count)
        if bad.any():
            raise GraphError(f"index {values[bad][0]:g} is outside [0, {count}) (the items of bottom 0)",
                             layer=self.name)
        self.indices = indices
        np.take(bottom[0].data, indices, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise GraphError("BatchReindex cannot propagate a gradient to its indices (bottom 1)",
                             layer=self.name)
        if propagate_down[0]:
            diff = bottom[0].diff
            diff[...] = 0
            np.add.at(diff, self.indices, top[0].diff)
