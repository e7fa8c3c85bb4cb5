"""TanH: ``y = tanh(x)``; gradient ``dx = dy * (1 - y^2)`` (from the output, so it works in place)."""

import numpy as np

from ..layer import Layer
from ..registry import register


@register("TanH")
class TanHLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        np.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data
        bottom[0].diff[...] = top[0].diff * (1 - y * y)
