"""ReLU: ``y = max(x, 0) + negative_slope * min(x, 0)`` (leaky when negative_slope != 0).

Gradient: ``dx = dy * (1 if x > 0 else negative_slope)``, testing the bottom's
data as Caffe does (in place, that is already the output, as in Caffe).
"""

import numpy as np

from ..layer import Layer
from ..registry import register


@register("ReLU")
class ReLULayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        self.negative_slope = self.layer_param.relu_param.negative_slope

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.negative_slope == 0:
            np.maximum(x, 0, out=top[0].data)
        else:
            top[0].data[...] = np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        positive = bottom[0].data > 0
        slope = top[0].diff.dtype.type(self.negative_slope)
        bottom[0].diff[...] = top[0].diff * np.where(positive, 1, slope)
