"""Silence: swallows blobs nobody else uses, so the net does not report them as outputs.

It takes any number of bottoms and makes no tops. Forward does nothing;
Backward writes zeros into the diff of each bottom that asks for a gradient, as
Caffe does (a Split feeding it then sums in a zero).

GPU: Forward does nothing; Backward fills those diffs with zeros on the device.
"""

from .. import gpu_blas
from ..layer import Layer
from ..registry import register


@register("Silence")
class SilenceLayer(Layer):
    min_bottoms = 1
    exact_tops = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for flag, blob in zip(propagate_down, bottom):
            if flag:
                blob.diff[...] = 0

    forward_gpu = forward

    def backward_gpu(self, top, propagate_down, bottom):
        for flag, blob in zip(propagate_down, bottom):
            if flag and blob.count:
                gpu_blas.fill(blob.mutable_gpu_diff, 0)
