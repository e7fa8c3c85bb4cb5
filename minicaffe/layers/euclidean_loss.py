"""EuclideanLoss: ``loss = sum((a - b)^2) / (2N)``, N the size of the first axis.

Gradients: ``da = +w (a - b) / N`` and ``db = -w (a - b) / N``, with ``w`` the
loss weight the net stores in ``top[0].diff`` (Caffe's convention, seed 004).
Both bottoms can take a gradient (it regresses one blob onto another).
"""

import numpy as np

from ..layer import Layer
from ..registry import register


@register("EuclideanLoss")
class EuclideanLossLayer(Layer):
    exact_bottoms = 2
    exact_tops = 1

    def reshape(self, bottom, top):
        if bottom[0].count_axes(1) != bottom[1].count_axes(1) or bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.shape_error("the two inputs must have the same dimension",
                                   expected=bottom[0].shape, actual=bottom[1].shape)
        top[0].reshape(())

    def forward(self, bottom, top):
        self.difference = bottom[0].data.reshape(-1) - bottom[1].data.reshape(-1)
        num = bottom[0].shape[0]
        top[0].data[...] = np.dot(self.difference, self.difference) / num / 2

    def backward(self, top, propagate_down, bottom):
        num = bottom[0].shape[0]
        for index, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[index]:
                alpha = sign * top[0].diff.flat[0] / num
                bottom[index].diff[...] = (alpha * self.difference).reshape(bottom[index].shape)
