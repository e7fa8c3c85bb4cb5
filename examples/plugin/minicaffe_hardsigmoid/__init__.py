"""An example minicaffe plugin: an in-house Caffe fork's HardSigmoid layer.

Installing this package (``pip install examples/plugin``) makes minicaffe run
nets that use the fork's layer, with its parameters written as the fork's own
files write them::

    layer { name: "gate" type: "HardSigmoid" bottom: "x" top: "y"
            hard_sigmoid_param { alpha: 0.25 beta: 0.5 } }

The package's pyproject.toml names this module in the entry point group
``minicaffe.layers``; minicaffe imports it before it parses a net or looks up a
layer type. Importing it does the two things a plugin does: add the fork's
LayerParameter field at the fork's number, and register the layer type.
"""

import numpy as np

from minicaffe.layer import Layer
from minicaffe.plugins import add_layer_field, layer_field
from minicaffe.registry import register

from .hard_sigmoid_pb2 import HardSigmoidParameter

# The fork's caffe.proto: `optional HardSigmoidParameter hard_sigmoid_param = 4321;`
add_layer_field("hard_sigmoid_param", 4321, HardSigmoidParameter)


@register("HardSigmoid")
class HardSigmoidLayer(Layer):
    """HardSigmoid: ``y = min(max(alpha * x + beta, 0), 1)``; the gradient is ``alpha`` where 0 < y < 1."""

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = layer_field(self.layer_param, "hard_sigmoid_param")
        self.alpha, self.beta = float(param.alpha), float(param.beta)

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        linear = bottom[0].data * self.dtype.type(self.alpha) + self.dtype.type(self.beta)
        np.clip(linear, 0, 1, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        linear = bottom[0].data * self.alpha + self.beta
        inside = (linear > 0) & (linear < 1)
        bottom[0].diff[...] = np.where(inside, top[0].diff * self.alpha, 0)
