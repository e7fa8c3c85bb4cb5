"""ArgMax: the indices (or values) of the ``top_k`` largest entries.

``argmax_param``: ``top_k`` (default 1), ``out_max_val`` (default false), ``axis``.

- With ``axis`` (negative counts from the end): along that axis; the top has
  the bottom's shape with that axis ``top_k`` long, holding the indices, or the
  values themselves with ``out_max_val``.
- Without ``axis``: over each item's flattened entries (all axes after the
  first). The top is N x 1 x top_k (indices), or N x 2 x top_k with
  ``out_max_val`` (the top_k indices, then the top_k values), padded with 1s to
  the bottom's number of axes (at least 3), as Caffe shapes it.

Ranked from the largest; among equal values the larger index comes first
(Caffe sorts (value, index) pairs in descending order). Indices are stored as
floats in the top. Caffe gives ArgMax no Backward: a gradient asked of it is an
error.

GPU: one thread per bottom entry counts the entries of its row that rank
above it (larger value, or equal value and larger index; NaN below every
number, as numpy's sort puts it last) and, when that rank is below
``top_k``, writes its index (and value) into that place of the top: the ranks of
a row are distinct, so each top place is written once.
"""

import numpy as np

from .. import gpu
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register


@gpu.device
def _ranks_above(a, i, b, j):
    """Whether entry (a, index i) ranks above (b, index j): NaN lowest, ties to the larger index."""
    if a != a:
        return b != b and i > j
    if b != b:
        return True
    return a > b or (a == b and i > j)


@gpu.jit
def _argmax_gpu(x, y, dim, inner, top_k, out_max_val, has_axis):
    """x: outer x dim x inner; y: outer x top_k x inner (an axis) or outer x (1 or 2) x top_k (no axis)."""
    e = cuda.grid(1)
    if e < x.size:
        o = e // (dim * inner)
        j = e // inner % dim
        s = e % inner
        base = o * dim * inner + s
        value = x[e]
        rank = 0
        for c in range(dim):
            if c != j and _ranks_above(x[base + c * inner], c, value, j):
                rank += 1
        if rank < top_k:
            if has_axis:
                y[(o * top_k + rank) * inner + s] = value if out_max_val else j
            else:
                row = o * (2 if out_max_val else 1) * top_k
                y[row + rank] = j
                if out_max_val:
                    y[row + top_k + rank] = value


@register("ArgMax")
class ArgMaxLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1
    has_backward = False

    def setup(self, bottom, top):
        param = self.layer_param.argmax_param
        self.top_k = int(param.top_k)
        self.out_max_val = param.out_max_val
        self.has_axis = param.HasField("axis")
        if self.top_k < 1:
            raise GraphError(f"argmax_param.top_k must be at least 1, got {self.top_k}", layer=self.name)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if self.has_axis:
            axis = bottom[0].canonical_axis(self.layer_param.argmax_param.axis, layer=self.name)
            dim = shape[axis]
            self.view = (bottom[0].count_axes(0, axis), dim, bottom[0].count_axes(axis + 1))
            top_shape = shape[:axis] + (self.top_k,) + shape[axis + 1:]
            where = f"axis {axis} ({dim} entries)"
        else:
            if bottom[0].ndim < 1:
                raise self.shape_error("ArgMax without an axis needs a bottom with a first (batch) axis",
                                       actual=shape)
            dim = bottom[0].count_axes(1)
            self.view = (shape[0], dim, 1)
            top_shape = [1] * max(bottom[0].ndim, 3)
            top_shape[0] = shape[0]
            top_shape[1] = 2 if self.out_max_val else 1
            top_shape[2] = self.top_k
            top_shape = tuple(top_shape)
            where = f"each item ({dim} entries)"
        if self.top_k > dim:
            raise GraphError(f"top_k {self.top_k} is more than the entries of {where}", layer=self.name)
        top[0].reshape(top_shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        dim = self.view[1]
        # A stable sort of the reversed axis by descending value ranks ties by larger index first.
        reversed_order = np.argsort(-x[:, ::-1, :], axis=1, kind="stable")[:, :self.top_k, :]
        indices = dim - 1 - reversed_order
        out = top[0].data
        if self.has_axis:
            values = np.take_along_axis(x, indices, axis=1) if self.out_max_val else indices
            out.reshape(self.view[0], self.top_k, self.view[2])[...] = values
        else:
            rows = out.reshape(self.view[0], -1)
            rows[:, :self.top_k] = indices[:, :, 0]
            if self.out_max_val:
                rows[:, self.top_k:] = np.take_along_axis(x, indices, axis=1)[:, :, 0]

    def backward(self, top, propagate_down, bottom):
        pass  # run_backward refuses any gradient request first; with none asked there is nothing to do

    def forward_gpu(self, bottom, top):
        if bottom[0].count:
            outer, dim, inner = self.view
            _argmax_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
                bottom[0].gpu_data, top[0].gpu_data_to_overwrite(), dim, inner, self.top_k, bool(self.out_max_val),
                self.has_axis)
