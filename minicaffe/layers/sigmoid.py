"""Sigmoid: ``y = 1 / (1 + exp(-x))``.

Evaluated through ``z = exp(-|x|)``, which never overflows: ``1 / (1 + z)`` for
``x >= 0`` and ``z / (1 + z)`` for ``x < 0``. This keeps full relative precision
for large negative ``x`` too (BVLC Caffe's ``0.5 * tanh(0.5 * x) + 0.5`` rounds
those to 0; both agree to rounding elsewhere). Gradient from the output alone:
``dx = dy * y * (1 - y)``, so it works in place.
"""

import numpy as np

from ..layer import Layer
from ..registry import register


@register("Sigmoid")
class SigmoidLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        negative = x < 0                      # before y is written: x may be y (in place)
        z = np.exp(-np.abs(x))
        y = top[0].data
        np.divide(np.where(negative, z, 1), 1 + z, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data
        bottom[0].diff[...] = top[0].diff * y * (1 - y)
