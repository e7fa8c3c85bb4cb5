"""Split: one blob fed to several consumers (the graph planner inserts these).

Each top shares the bottom's data; Backward sums the tops' diffs into the bottom,
which is how a blob used several times gets the sum of its gradients.

GPU: Forward has nothing to do (the tops share the bottom's data on either
device). Backward sums the tops' diffs into the bottom's diff on the device
(gpu_blas copy, then one axpy per further top: the CPU's order of additions).
"""

import numpy as np

from .. import gpu_blas
from ..layer import Layer
from ..registry import register


@register("Split")
class SplitLayer(Layer):
    exact_bottoms = 1
    min_tops = 1

    def reshape(self, bottom, top):
        for blob in top:
            blob.reshape(bottom[0].shape)
            blob.share_data(bottom[0])

    def forward(self, bottom, top):
        pass  # tops are views of the bottom's data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if len(top) == 1:
            bottom[0].diff[...] = top[0].diff
            return
        np.add(top[0].diff, top[1].diff, out=bottom[0].diff)
        for blob in top[2:]:
            bottom[0].diff += blob.diff

    def forward_gpu(self, bottom, top):
        pass  # tops are views of the bottom's data

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0] or not bottom[0].count:
            return
        diff = bottom[0].mutable_gpu_diff
        gpu_blas.copy(top[0].gpu_diff, diff)
        for blob in top[1:]:
            gpu_blas.axpy(1, blob.gpu_diff, diff)
