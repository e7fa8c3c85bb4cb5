"""Concat: join several blobs along one axis.

``concat_param.axis`` (default 1, negative counts from the end) names the axis;
the legacy ``concat_dim`` (non-negative only) does the same, and giving both is
an error, as in Caffe. Every bottom must have the same number of axes and agree
on every axis but the concatenation one. Backward hands each bottom its slab of
the top's diff. With a single bottom the top simply shares its data and diff.

GPU: Caffe's concat kernel, one thread per element of a bottom: Forward copies
the bottom into its slab of the top, Backward copies the slab of the top's diff
back into the bottom's diff (only for the bottoms that ask for a gradient). A
single bottom is shared, so neither direction launches anything.
"""

import numpy as np

from .. import gpu
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register


@gpu.jit
def part_copy_gpu(part, whole, into_whole, slab, whole_axis, part_axis, offset):
    """Between a part (outer x part_axis x slab) and its place at ``offset`` along the whole's axis
    (outer x whole_axis x slab): copy the part into the whole (``into_whole``) or the whole's slab out into
    the part. Concat's Forward and Slice's Backward copy in, the other two out."""
    i = cuda.grid(1)
    if i < part.size:
        part_run = part_axis * slab
        outer = i // part_run
        w = (outer * whole_axis + offset) * slab + i % part_run
        if into_whole:
            whole[w] = part[i]
        else:
            part[i] = whole[w]


@register("Concat")
class ConcatLayer(Layer):
    min_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.concat_param
        if param.HasField("axis") and param.HasField("concat_dim"):
            raise GraphError("concat_param: give either axis or concat_dim, not both", layer=self.name)

    def _axis(self, blob):
        param = self.layer_param.concat_param
        if param.HasField("concat_dim"):
            axis = int(param.concat_dim)
            if axis >= blob.ndim:
                raise GraphError(f"concat_dim {axis} is out of range for a {blob.ndim}-D input "
                                 f"of shape {blob.shape}", layer=self.name)
            return axis
        return blob.canonical_axis(param.axis, layer=self.name)

    def reshape(self, bottom, top):
        first = bottom[0]
        self.axis = axis = self._axis(first)
        top_shape = list(first.shape)
        for index, blob in enumerate(bottom[1:], start=1):
            if blob.ndim != first.ndim:
                raise self.shape_error(f"bottom {index} has {blob.ndim} axes but bottom 0 has {first.ndim}: "
                                       "all inputs must have the same number of axes",
                                       expected=first.shape, actual=blob.shape)
            others_differ = any(blob.shape[j] != first.shape[j] for j in range(first.ndim) if j != axis)
            if others_differ:
                raise self.shape_error(f"bottom {index} differs from bottom 0 outside the concat axis {axis}",
                                       expected=first.shape, actual=blob.shape)
            top_shape[axis] += blob.shape[axis]
        top[0].reshape(top_shape)
        # Where along the axis each bottom's slab starts and ends in the top.
        sizes = [blob.shape[axis] for blob in bottom]
        ends = np.cumsum(sizes)
        self.bounds = [(int(end - size), int(end)) for size, end in zip(sizes, ends)]
        if len(bottom) == 1:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def _slab(self, index):
        start, end = self.bounds[index]
        return (slice(None),) * self.axis + (slice(start, end),)

    def forward(self, bottom, top):
        if len(bottom) == 1:
            return  # the top is a view of the bottom
        out = top[0].data
        for index, blob in enumerate(bottom):
            out[self._slab(index)] = blob.data

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            return  # the bottom's diff is the top's
        diff = top[0].diff
        for index, blob in enumerate(bottom):
            if propagate_down[index]:
                blob.diff[...] = diff[self._slab(index)]

    def _launch(self, bottom_array, top_array, forward, blob, top_axis, start):
        slab = blob.count_axes(self.axis + 1)
        part_copy_gpu[gpu.blocks_for(blob.count), gpu.THREADS](
            bottom_array, top_array, forward, slab, top_axis, blob.shape[self.axis], start)

    def forward_gpu(self, bottom, top):
        if len(bottom) == 1:
            return  # the top is a view of the bottom
        out = top[0].gpu_data_to_overwrite()
        top_axis = top[0].shape[self.axis]
        for blob, (start, _) in zip(bottom, self.bounds):
            if blob.count:
                self._launch(blob.gpu_data, out, True, blob, top_axis, start)

    def backward_gpu(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            return  # the bottom's diff is the top's
        diff = top[0].gpu_diff
        top_axis = top[0].shape[self.axis]
        for index, (blob, (start, _)) in enumerate(zip(bottom, self.bounds)):
            if propagate_down[index] and blob.count:
                self._launch(blob.mutable_gpu_diff, diff, False, blob, top_axis, start)
