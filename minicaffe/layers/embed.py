"""Embed: a lookup table from integer indices to learned vectors.

``embed_param``: ``num_output`` (N, the vector length), ``input_dim`` (K, the
number of indices), ``bias_term`` (default true), ``weight_filler`` and
``bias_filler``. Parameter blobs: the weight, K x N (row ``k`` is index ``k``'s
vector), then the bias (N).

The bottom holds indices (as floats; each must be a whole number in [0, K)); the
top has the bottom's shape with an extra last axis of N:
``y[..., :] = W[x[...], :] + b``.

Gradients: ``dW[k] += sum of dy over the positions holding k`` (an index that
occurs twice gets both diffs), ``db += sum of all dy``. The indices take no
gradient: the net never asks for one, and asking explicitly is an error.
"""

import numpy as np

from ..errors import GraphError
from ..fillers import fill
from ..layer import Layer
from ..registry import register


@register("Embed")
class EmbedLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1
    never_backward_bottoms = (0,)

    def setup(self, bottom, top):
        param = self.layer_param.embed_param
        self.num_output = int(param.num_output)
        self.input_dim = int(param.input_dim)
        if self.num_output <= 0:
            raise GraphError("embed_param.num_output must be positive", layer=self.name)
        if self.input_dim <= 0:
            raise GraphError("embed_param.input_dim must be positive", layer=self.name)
        self.bias_term = param.bias_term
        self.blobs = [self.new_param_blob((self.input_dim, self.num_output))]
        fill(self.blobs[0], param.weight_filler, self.name, "embed_param.weight_filler")
        if self.bias_term:
            self.blobs.append(self.new_param_blob((self.num_output,)))
            fill(self.blobs[1], param.bias_filler, self.name, "embed_param.bias_filler")
        self.indices = None

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def forward(self, bottom, top):
        values = bottom[0].data.reshape(-1)
        indices = values.astype(np.int64)
        bad = (indices != values) | (indices < 0) | (indices >= self.input_dim)
        if bad.any():
            raise GraphError(f"index {values[bad][0]:g} is not a whole number in [0, {self.input_dim}) "
                             "(embed_param.input_dim)", layer=self.name)
        self.indices = indices
        out = top[0].data.reshape(-1, self.num_output)
        np.take(self.blobs[0].data, indices, axis=0, out=out)
        if self.bias_term:
            out += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise GraphError("Embed cannot propagate a gradient to its indices (bottom 0)", layer=self.name)
        dy = top[0].diff.reshape(-1, self.num_output)
        if self.param_propagate_down[0]:
            np.add.at(self.blobs[0].diff, self.indices, dy)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)
