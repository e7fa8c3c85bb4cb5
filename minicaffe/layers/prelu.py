"""PReLU: ReLU with a learned slope for negative inputs, per channel or shared.

``y = max(x, 0) + a_c * min(x, 0)`` with ``c`` the channel (axis 1; the bottom
needs at least 2 axes). The slopes ``a`` are one parameter blob: shape (C), or
a scalar (shape ()) with ``prelu_param.channel_shared``; filled by
``prelu_param.filler``, or the constant 0.25 when none is given (Caffe's default).

Gradients: ``dx = dy * (1 if x > 0 else a_c)``;
``da_c += sum over channel c of dy * x * [x <= 0]`` (over everything when shared).
In place, the input is kept for Backward.

Deviation from (some builds of) Caffe: the slope diff accumulates as every
parameter diff does; BVLC's older CPU code zeroed it first.
"""

import numpy as np

from ..fillers import fill
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register


@register("PReLU")
class PReLULayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.prelu_param
        if bottom[0].ndim < 2:
            raise self.shape_error("PReLU needs a bottom with at least 2 axes (N x C x ...)",
                                   actual=bottom[0].shape)
        self.channel_shared = param.channel_shared
        self.channels = bottom[0].shape[1]
        self.blobs = [self.new_param_blob(() if self.channel_shared else (self.channels,))]
        filler = param.filler if param.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=0.25)
        fill(self.blobs[0], filler, self.name)
        self._saved_input = None

    def reshape(self, bottom, top):
        if bottom[0].ndim < 2 or (not self.channel_shared and bottom[0].shape[1] != self.channels):
            raise self.shape_error(f"the bottom must keep its {self.channels} channels (axis 1)",
                                   expected=(None, self.channels), actual=bottom[0].shape)
        self.view = (bottom[0].shape[0], bottom[0].shape[1], bottom[0].count_axes(2))
        top[0].reshape(bottom[0].shape)

    def _slopes(self):
        slope = self.blobs[0].data
        return slope.reshape(()) if self.channel_shared else slope.reshape(1, -1, 1)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        if bottom[0] is top[0]:
            self._saved_input = x.copy()
        top[0].data.reshape(self.view)[...] = np.where(x > 0, x, x * self._slopes())

    def backward(self, top, propagate_down, bottom):
        x = self._saved_input if bottom[0] is top[0] else bottom[0].data.reshape(self.view)
        dy = top[0].diff.reshape(self.view)
        negative = x <= 0
        if self.param_propagate_down[0]:    # before dx: in place, dx overwrites dy
            masked = np.where(negative, x, 0)
            if self.channel_shared:
                self.blobs[0].diff[...] += np.vdot(dy, masked)
            else:
                self.blobs[0].diff[...] += np.einsum("ncs,ncs->c", dy, masked)
        if propagate_down[0]:
            np.multiply(dy, np.where(negative, self._slopes(), 1), out=bottom[0].diff.reshape(self.view))
