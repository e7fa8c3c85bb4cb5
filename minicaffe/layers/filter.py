"""Filter: keep the items (along axis 0) whose selector is non-zero.

Bottoms: K blobs to filter, then the selector (its last bottom), with one
value per item (shape (N) or N x 1 x ...); K tops. Every filtered bottom has
the selector's N items. Top ``t`` holds the items of bottom ``t`` whose
selector value is non-zero, in order, so its first axis is the number of
selected items and the rest of its shape is the bottom's.

That number depends on the selector's values, so setup shapes the tops with
all N items (Caffe's first reshape does the same), and each Forward reshapes
them to the selected count; the layers after it see the new shapes, since
every layer reshapes before its Forward when a blob's shape changed.

Gradient: each selected item's top diff goes back to its place in the bottom's
diff, zeros for the items left out. The selector takes no gradient: the net
never asks for one, and asking explicitly is an error.

GPU: the tops' shapes depend on the selector's values, so Forward reads the
selector on the host, as Caffe's GPU Filter does: one small device->host copy
of the selector bottom when its newest values are on the device (none when the
host copy is current). The selected item numbers go to the device, and one
thread per top element gathers its item's values. Backward zeroes the bottom's
diff and scatters each top element's diff back to its item (one thread each;
the items are distinct, so no two threads write the same place).
"""

import numpy as np

from .. import gpu, gpu_blas
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register


@gpu.jit
def _filter_gpu(bottom, selected, top, inner, forward):
    """Top element i is element selected[i // inner] * inner + i % inner of the bottom: forward gathers it,
    otherwise the top's value (a diff) is scattered there."""
    i = cuda.grid(1)
    if i < top.size:
        b = selected[i // inner] * inner + i % inner
        if forward:
            top[i] = bottom[b]
        else:
            bottom[b] = top[i]


@register("Filter")
class FilterLayer(Layer):
    min_bottoms = 2
    min_tops = 1

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise GraphError(f"Filter takes one top per filtered bottom: {len(bottom) - 1} bottom(s) before the "
                             f"selector, {len(top)} top(s)", layer=self.name)
        self.never_backward_bottoms = (len(bottom) - 1,)
        self.selected = None

    def reshape(self, bottom, top):
        selector = bottom[-1].shape
        if not selector or any(dim != 1 for dim in selector[1:]):
            raise self.shape_error("the selector (last bottom) must have one value per item: shape (N) or "
                                   "N x 1 x ...", expected=selector[:1] + (1,) * max(len(selector) - 1, 0),
                                   actual=selector)
        for index, blob in enumerate(bottom[:-1]):
            if blob.shape[:1] != selector[:1]:
                raise self.shape_error(f"bottom {index} must have as many items (axis 0) as the selector",
                                       expected=selector[:1], actual=blob.shape)
        for blob, out in zip(bottom[:-1], top):
            out.reshape(blob.shape)

    def forward(self, bottom, top):
        self.selected = np.flatnonzero(bottom[-1].data.reshape(-1))
        for blob, out in zip(bottom[:-1], top):
            out.reshape((self.selected.size,) + blob.shape[1:])
            np.take(blob.data, self.selected, axis=0, out=out.data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise GraphError("Filter cannot propagate a gradient to its selector (the last bottom)",
                             layer=self.name)
        for index, (blob, out) in enumerate(zip(bottom[:-1], top)):
            if propagate_down[index]:
                diff = blob.diff
                diff[...] = 0
                diff[self.selected] = out.diff

    def forward_gpu(self, bottom, top):
        # read_data: a copy only if the device holds the newest selector, and the device copy stays current
        self.selected = np.flatnonzero(bottom[-1].read_data().reshape(-1))
        self.gpu_selected = gpu.to_device(self.selected.astype(np.int64)) if self.selected.size else None
        for blob, out in zip(bottom[:-1], top):
            out.reshape((self.selected.size,) + blob.shape[1:])
            if out.count:
                _filter_gpu[gpu.blocks_for(out.count), gpu.THREADS](
                    blob.gpu_data, self.gpu_selected, out.gpu_data_to_overwrite(), out.count_axes(1), True)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise GraphError("Filter cannot propagate a gradient to its selector (the last bottom)",
                             layer=self.name)
        for index, (blob, out) in enumerate(zip(bottom[:-1], top)):
            if propagate_down[index] and blob.count:
                diff = blob.mutable_gpu_diff
                gpu_blas.fill(diff, 0)
                if out.count:
                    _filter_gpu[gpu.blocks_for(out.count), gpu.THREADS](
                        diff, self.gpu_selected, out.gpu_diff, out.count_axes(1), False)
