"""Permute: ``top = bottom.transpose(order)``, axes missing from ``order`` following in their old order.

From the SSD fork (weiliu89/caffe, branch ``ssd``), where it turns a
prediction map N x C x H x W into N x H x W x C (``order: 0 order: 2 order: 3
order: 1``) before it is flattened, so that each location's predictions are
contiguous.

``permute_param.order`` lists the bottom axes in their new order. Every entry
must be a bottom axis (below the bottom's axis count) and appear once; the axes
left out are appended in increasing order, so ``order: 1`` on a 4-D bottom is
(1, 0, 2, 3) and no ``order`` at all is the identity. Backward writes the top's
diff back through the inverse permutation.

When the full order is the identity (the fork's ``need_permute_`` false), the
top shares the bottom's data and diff and nothing is copied, as in the fork;
only then may the layer run in place (the fork would read a bottom it is
overwriting). The bottom must keep its number of axes after set-up.

CPU: the permutation is first simplified (axes of size 1 dropped, axes that
stay neighbours merged). When what is left swaps the last two axes of a
batch of matrices (SSD's (0, 2, 3, 1) is (B, C, HW) -> (B, HW, C); its
inverse, Backward's, the other way) a numba kernel copies 32 x 32 tiles, in
strips of the destination run on minicaffe's threads (:mod:`minicaffe.threads`).
numpy's strided copy was up to six times slower than the tiles on some such
shapes (a 1444 x 512 matrix: 4.6 ms against 0.8 ms, one thread), if up to
twice as fast on others. Other orders use numpy's copy, cut along the
destination's first axis longer than 1 into chunks on the same threads.

GPU: the fork's PermuteKernel: one thread per top element walks the top's
strides to find its bottom element (Forward reads it, Backward writes the
diff back there), over the simplified permutation; the strides and the order
go to the device once per shape.
"""

import math

import numpy as np

from ... import gpu, threads
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError
from ...kernels import cpu_kernel
from ...layer import Layer
from ...registry import register

TILE = 32


@cpu_kernel(nogil=True)
def transpose_strips(source, destination, start, stop):
    """destination[b, j, i] = source[b, i, j], tile by tile, for strips [start, stop): strip k is the
    TILE destination rows from (k % strips) * TILE of batch k // strips."""
    rows, columns = source.shape[1], source.shape[2]
    strips = (columns + TILE - 1) // TILE
    for item in range(start, stop):
        b = item // strips
        j0 = (item % strips) * TILE
        j1 = min(j0 + TILE, columns)
        for i0 in range(0, rows, TILE):
            i1 = min(i0 + TILE, rows)
            for j in range(j0, j1):
                out = destination[b, j]
                for i in range(i0, i1):
                    out[i] = source[b, i, j]


def permute_order(requested, num_axes, layer=None):
    """The fork's full axis order: ``requested`` (checked) then the remaining axes in increasing order."""
    order = []
    for axis in requested:
        axis = int(axis)
        if axis >= num_axes:
            raise GraphError(f"permute_param.order {tuple(requested)} names axis {axis}, but the bottom has "
                             f"{num_axes} axes", layer=layer)
        if axis in order:
            raise GraphError(f"permute_param.order {tuple(requested)} names axis {axis} twice", layer=layer)
        order.append(axis)
    order += [axis for axis in range(num_axes) if axis not in order]
    return tuple(order)


def simplify(shape, order):
    """(shape, order) of the same permutation with size-1 axes dropped and neighbours that stay
    neighbours merged: (2, 3, 4, 5) by (0, 2, 3, 1) is (2, 3, 20) by (0, 2, 1)."""
    kept = [axis for axis in order if shape[axis] != 1]
    runs = []                                   # runs of consecutive bottom axes, in top order
    for axis in kept:
        if runs and runs[-1][-1] + 1 == axis:
            runs[-1].append(axis)
        else:
            runs.append([axis])
    by_bottom = sorted(range(len(runs)), key=lambda index: runs[index][0])
    merged_shape = tuple(math.prod(shape[axis] for axis in runs[index]) for index in by_bottom)
    rank = {index: position for position, index in enumerate(by_bottom)}
    return merged_shape, tuple(rank[index] for index in range(len(runs)))


def batched_transpose(shape, order):
    """(B, R, C) when permuting ``shape`` by ``order`` turns a (B, R, C) array into (B, C, R), else None."""
    merged, merged_order = simplify(shape, order)
    if merged_order == (1, 0):
        return (1,) + merged
    if merged_order == (0, 2, 1):
        return merged
    return None


@gpu.jit
def _permute_gpu(source, destination, order, old_steps, new_steps, backward):
    """Top element i <- bottom element old(i) (Forward), or bottom diff old(i) <- top diff i (Backward)."""
    i = cuda.grid(1)
    count = destination.size if backward == 0 else source.size
    if i < count:
        rest = i
        old = 0
        for axis in range(order.size):
            old += (rest // new_steps[axis]) * old_steps[order[axis]]
            rest %= new_steps[axis]
        if backward == 0:
            destination[i] = source[old]
        else:
            destination[old] = source[i]


def _steps(shape):
    steps = np.ones(len(shape), dtype=np.int64)
    for axis in range(len(shape) - 2, -1, -1):
        steps[axis] = steps[axis + 1] * shape[axis + 1]
    return steps


@register("Permute")
class PermuteLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1
    fork = "SSD (weiliu89/caffe, branch ssd)"

    def setup(self, bottom, top):
        self.num_axes = bottom[0].ndim
        self.setup_shape = bottom[0].shape
        self.order = permute_order(self.layer_param.permute_param.order, self.num_axes, self.name)
        self.need_permute = self.order != tuple(range(self.num_axes))
        self.inverse = tuple(self.order.index(axis) for axis in range(self.num_axes))
        if self.need_permute and top[0] is bottom[0]:
            raise GraphError(f"Permute with order {self.order} does not allow in-place computation",
                             layer=self.name)

    def reshape(self, bottom, top):
        source = bottom[0]
        if source.ndim != self.num_axes:
            raise self.shape_error(f"the bottom must keep the {self.num_axes} axes it was set up with "
                                   f"(order {self.order})", expected=self.setup_shape, actual=source.shape)
        top[0].reshape(tuple(source.shape[axis] for axis in self.order))
        if not self.need_permute:
            top[0].share_data(source)
            top[0].share_diff(source)
        self.matrices = batched_transpose(source.shape, self.order) if self.need_permute else None

    def _permute(self, source, destination, order, matrices):
        """destination[...] = source.transpose(order); ``matrices``: the (B, R, C) source view, if any."""
        if matrices is not None:
            batches, rows, columns = matrices
            source = source.reshape(matrices)
            destination = destination.reshape(batches, columns, rows)
            strips = batches * ((columns + TILE - 1) // TILE)
            threads.parallel_for(strips, lambda start, stop: transpose_strips(source, destination, start, stop),
                                 TILE * rows)
            return
        source = source.transpose(order)
        axis = next((i for i, size in enumerate(destination.shape) if size > 1), None)
        if axis is None:
            destination[...] = source
            return
        lead = (slice(None),) * axis

        def body(start, stop):
            where = lead + (slice(start, stop),)
            destination[where] = source[where]

        threads.parallel_for(destination.shape[axis], body, destination.size // destination.shape[axis])

    def forward(self, bottom, top):
        if self.need_permute:
            self._permute(bottom[0].data, top[0].data, self.order, self.matrices)

    def backward(self, top, propagate_down, bottom):
        if self.need_permute and propagate_down[0]:
            matrices = self.matrices
            if matrices is not None:                 # the top's diff is (B, C, R)
                matrices = (matrices[0], matrices[2], matrices[1])
            self._permute(top[0].diff, bottom[0].diff, self.inverse, matrices)

    # ------------------------------------------------------------ GPU
    def _gpu_tables(self, shape):
        """(order, bottom strides, top strides) of the simplified permutation, on the device, per shape."""
        cached = getattr(self, "_gpu_cache", None)
        if cached is None or cached[0] != shape:
            merged, order = simplify(shape, self.order)
            if not merged:                              # every axis of size 1
                merged, order = (1,), (0,)
            top_shape = tuple(merged[axis] for axis in order)
            tables = tuple(gpu.to_device(array) for array in (np.array(order, dtype=np.int64), _steps(merged),
                                                               _steps(top_shape)))
            cached = self._gpu_cache = (shape, tables)
        return cached[1]

    def _permute_gpu(self, shape, source, destination, backward, count):
        if count:
            order, old_steps, new_steps = self._gpu_tables(shape)
            _permute_gpu[gpu.blocks_for(count), gpu.THREADS](source, destination, order, old_steps, new_steps,
                                                             int(backward))

    def forward_gpu(self, bottom, top):
        if self.need_permute:
            self._permute_gpu(bottom[0].shape, bottom[0].gpu_data, top[0].mutable_gpu_data, 0, top[0].count)

    def backward_gpu(self, top, propagate_down, bottom):
        if self.need_permute and propagate_down[0]:
            self._permute_gpu(bottom[0].shape, top[0].gpu_diff, bottom[0].mutable_gpu_diff, 1, top[0].count)
