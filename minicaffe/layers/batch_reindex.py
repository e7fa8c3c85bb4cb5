"""BatchReindex: pick items of bottom 0 (along axis 0) by the indices in bottom 1.

Bottom 1 is 1-D, K indices (floats, truncated to integers as Caffe does; each
must then lie in [0, N)); the top is
K x (bottom 0's shape after axis 0): ``y[k] = x[index[k]]``. An index may occur
more than once, or not at all. Gradient: ``dx[n] = sum of dy[k] over the k with
index[k] == n`` (0 for items never picked). The indices take no gradient: the
net never asks for one, and asking explicitly is an error.

GPU: Forward checks the indices on the device (the first bad position and a
flag come back to the host: one small copy, as the loss layers' label checks)
and gathers, one thread per top element. Backward is Caffe's deterministic
scheme without the host-side index lists: one thread per element of bottom 0's
diff adds, in order, the top diffs of the k whose index is its item (the CPU's
order of additions, so no atomics and the same rounding).
"""

import numpy as np

from .. import gpu, gpu_blas
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register


@gpu.jit
def _check_indices_gpu(indices, count, bad):
    """bad[0]: the first position whose truncated index lies outside [0, count) (bad starts at indices.size)."""
    k = cuda.grid(1)
    if k < indices.size:
        index = indices[k]
        if not (index > -1 and index < count):     # truncation toward zero keeps (-1, count) in range; NaN fails
            cuda.atomic.min(bad, 0, k)


@gpu.jit
def _gather_gpu(x, indices, y, inner):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = x[int(indices[i // inner]) * inner + i % inner]


@gpu.jit
def _scatter_add_gpu(dy, indices, dx, inner, zero):
    i = cuda.grid(1)
    if i < dx.size:
        item = i // inner
        offset = i % inner
        total = zero        # of the diff's type: the sum rounds as the CPU's
        for k in range(indices.size):
            if int(indices[k]) == item:
                total += dy[k * inner + offset]
        dx[i] = total


@register("BatchReindex")
class BatchReindexLayer(Layer):
    exact_bottoms = 2
    exact_tops = 1
    never_backward_bottoms = (1,)

    def setup(self, bottom, top):
        self.indices = None

    def reshape(self, bottom, top):
        if bottom[1].ndim != 1:
            raise self.shape_error("the indices (bottom 1) must be 1-D", expected=(bottom[1].count,),
                                   actual=bottom[1].shape)
        if bottom[0].ndim < 1:
            raise self.shape_error("bottom 0 needs an axis 0 to pick items from", actual=bottom[0].shape)
        top[0].reshape(bottom[1].shape + bottom[0].shape[1:])

    def forward(self, bottom, top):
        values = bottom[1].data
        indices = values.astype(np.int64)
        count = bottom[0].shape[0]
        bad = (indices < 0) | (indices >= count)
        if bad.any():
            raise GraphError(f"index {values[bad][0]:g} is outside [0, {count}) (the items of bottom 0)",
                             layer=self.name)
        self.indices = indices
        np.take(bottom[0].data, indices, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise GraphError("BatchReindex cannot propagate a gradient to its indices (bottom 1)",
                             layer=self.name)
        if propagate_down[0]:
            diff = bottom[0].diff
            diff[...] = 0
            np.add.at(diff, self.indices, top[0].diff)

    def forward_gpu(self, bottom, top):
        indices = bottom[1].gpu_data
        count = bottom[0].shape[0]
        if bottom[1].count:
            if getattr(self, "_gpu_bad", None) is None:
                self._gpu_bad = gpu.device_empty(1, np.int64)
            bad = self._gpu_bad
            gpu_blas.fill(bad, bottom[1].count)
            _check_indices_gpu[gpu.blocks_for(bottom[1].count), gpu.THREADS](indices, count, bad)
            position = int(bad.copy_to_host()[0])
            if position < bottom[1].count:
                value = bottom[1].read_data().reshape(-1)[position]
                raise GraphError(f"index {value:g} is outside [0, {count}) (the items of bottom 0)",
                                 layer=self.name)
        if top[0].count:
            x = bottom[0].gpu_data
            if top[0] is bottom[0]:     # in place: a thread would read an item another one has overwritten
                x = _private_copy(self, "in-place input", x)
            _gather_gpu[gpu.blocks_for(top[0].count), gpu.THREADS](
                x, indices, top[0].gpu_data_to_overwrite(), top[0].count_axes(1))

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise GraphError("BatchReindex cannot propagate a gradient to its indices (bottom 1)",
                             layer=self.name)
        if propagate_down[0] and bottom[0].count:
            dy = top[0].gpu_diff
            if top[0] is bottom[0]:     # in place: dx is dy, whose items other threads read
                dy = _private_copy(self, "in-place top diff", dy)
            _scatter_add_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
                dy, bottom[1].gpu_data, bottom[0].mutable_gpu_diff, bottom[0].count_axes(1),
                bottom[0].dtype.type(0))


def _private_copy(owner, name, array):
    """A copy of the device array ``array`` in a buffer kept on ``owner``: the kernels here read items other
    than their own, so in place they must read a copy (on a GPU the threads run concurrently)."""
    copy = gpu.scratch(owner, name, array.size, array.dtype)
    gpu_blas.copy(array, copy)
    return copy
