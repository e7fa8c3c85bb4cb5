"""Dropout: in TRAIN, zero each element with probability ``dropout_ratio`` and scale
the survivors by ``1 / (1 - ratio)``; in TEST, copy the input unchanged.

TRAIN draws a fresh keep-mask (keep probability ``1 - ratio``) on every Forward
from minicaffe's generator (reseed with :func:`minicaffe.set_random_seed`);
Backward applies the same mask and scale to the gradient. TEST's Backward is
a copy. Works in place, as Dropout usually is in Caffe nets.
"""

import numpy as np

from ..errors import GraphError
from ..fillers import rng
from ..graph import TRAIN
from ..layer import Layer
from ..registry import register


@register("Dropout")
class DropoutLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        self.ratio = self.layer_param.dropout_param.dropout_ratio
        # Caffe only DCHECKs 0 < ratio < 1; ratio 0 is harmless (mask all ones),
        # ratio 1 would make the scale infinite.
        if not 0.0 <= self.ratio < 1.0:
            raise GraphError(f"dropout_param.dropout_ratio must be in [0, 1), got {self.ratio}",
                             layer=self.name)
        self.scale = 1.0 / (1.0 - self.ratio)
        self.mask = None

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)
        self.mask = None

    def forward(self, bottom, top):
        if self.phase != TRAIN:
            if top[0].data is not bottom[0].data:
                top[0].data[...] = bottom[0].data
            return
        keep = rng().random(bottom[0].shape) < (1.0 - self.ratio)
        # The mask with the scale folded in: 0 or 1/(1-ratio), in the blob's dtype.
        self.mask = keep.astype(self.dtype) * self.dtype.type(self.scale)
        np.multiply(bottom[0].data, self.mask, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.phase != TRAIN:
            if bottom[0].diff is not top[0].diff:
                bottom[0].diff[...] = top[0].diff
            return
        if self.mask is None or self.mask.shape != top[0].shape:
            raise GraphError("Dropout Backward before a TRAIN Forward at this shape", layer=self.name)
        np.multiply(top[0].diff, self.mask, out=bottom[0].diff)
