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

GPU: entries are ranked in one total order (larger value first, equal values
by larger index, NaN below every number, as numpy's sort puts it last). Rows of
at most 128 entries: one thread per bottom entry counts the entries of its row
that rank above it and, when that rank is below ``top_k``, writes its index (and
value) into that place of the top (the ranks of a row are distinct, so each
place is written once). Longer rows (ArgMax over a whole image, say) would make
that quadratic: there each row gets a block of threads, which finds its
``top_k`` entries in ``top_k`` rounds, each a block-wide maximum (strided scan,
then a shared-memory tree) over the entries ranked below the previous round's.
"""

import numpy as np

from .. import gpu, gpu_blas
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register

_THREADS = gpu.THREADS      # a global of this module: numba needs the shared array size as a constant
#: Rows up to this long are ranked one thread per entry; longer ones by a block per row, in top_k rounds.
SHORT_ROW = _THREADS


@gpu.device
def _ranks_above(a, i, b, j):
    """Whether entry (a, index i) ranks above (b, index j): NaN lowest, ties to the larger index."""
    if a != a:
        return b != b and i > j
    if b != b:
        return True
    return a > b or (a == b and i > j)


@gpu.device
def _write(y, o, s, inner, top_k, rank, index, value, out_max_val, has_axis):
    """Put the entry of ``rank`` (its index, or its value) where Caffe's top shape wants it."""
    if has_axis:
        y[(o * top_k + rank) * inner + s] = value if out_max_val else index
    else:
        row = o * (2 if out_max_val else 1) * top_k
        y[row + rank] = index
        if out_max_val:
            y[row + top_k + rank] = value


@gpu.jit
def _argmax_by_rank_gpu(x, y, dim, inner, top_k, out_max_val, has_axis):
    """Short rows: one thread per entry of x (outer x dim x inner); y: outer x top_k x inner (an axis) or
    outer x (1 or 2) x top_k (no axis)."""
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
            _write(y, o, s, inner, top_k, rank, j, value, out_max_val, has_axis)


@gpu.jit
def _argmax_by_rounds_gpu(x, y, dim, inner, top_k, out_max_val, has_axis):
    """Long rows: block b handles row (o, s) = (b // inner, b % inner); round r finds the entry ranked r."""
    best_values = cuda.shared.array(_THREADS, dtype=np.float64)
    best_indices = cuda.shared.array(_THREADS, dtype=np.int64)
    block = cuda.blockIdx.x
    thread = cuda.threadIdx.x
    o = block // inner
    s = block % inner
    base = o * dim * inner + s
    previous_value = 0.0
    previous_index = -1         # none yet: every entry is a candidate
    for rank in range(top_k):
        best_value = 0.0
        best_index = -1
        for c in range(thread, dim, _THREADS):
            value = x[base + c * inner] * 1.0
            if previous_index >= 0 and not _ranks_above(previous_value, previous_index, value, c):
                continue        # picked in an earlier round
            if best_index < 0 or _ranks_above(value, c, best_value, best_index):
                best_value = value
                best_index = c
        best_values[thread] = best_value
        best_indices[thread] = best_index
        cuda.syncthreads()
        stride = _THREADS // 2
        while stride > 0:
            if thread < stride:
                other = best_indices[thread + stride]
                mine = best_indices[thread]
                if other >= 0 and (mine < 0 or _ranks_above(best_values[thread + stride], other,
                                                             best_values[thread], mine)):
                    best_values[thread] = best_values[thread + stride]
                    best_indices[thread] = other
            cuda.syncthreads()
            stride //= 2
        previous_value = best_values[0]
        previous_index = best_indices[0]
        if thread == 0:
            _write(y, o, s, inner, top_k, rank, previous_index, previous_value, out_max_val, has_axis)
        cuda.syncthreads()      # every thread has read this round's winner before the next round writes


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
        if not bottom[0].count:
            return
        outer, dim, inner = self.view
        x = bottom[0].gpu_data
        if top[0] is bottom[0]:     # in place (top_k = dim): threads read entries other threads write
            x = gpu.scratch(self, "in-place input", x.size, x.dtype)
            gpu_blas.copy(bottom[0].gpu_data, x)
        arguments = (x, top[0].gpu_data_to_overwrite(), dim, inner, self.top_k,
                     bool(self.out_max_val), self.has_axis)
        if dim <= SHORT_ROW:
            _argmax_by_rank_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](*arguments)
        else:
            _argmax_by_rounds_gpu[outer * inner, _THREADS](*arguments)
