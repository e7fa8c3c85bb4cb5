"""Slice: cut one blob into several along one axis (the inverse of Concat).

``slice_param.axis`` (default 1, negative allowed) or the legacy ``slice_dim``
(non-negative; not both) names the axis. With ``slice_point``s there must be one
fewer point than tops, strictly increasing from above 0, and no more tops than
the axis is long; top i gets [point[i-1], point[i]) (the last top runs to the
end of the axis). Without points the axis is split into equal parts, which the
number of tops must divide. Backward writes each top's diff back into its slab.
With a single top, the top shares the bottom's data and diff.

GPU: Concat's part-copy kernel, one thread per element of a top: Forward copies the
top's slab of the bottom out, Backward copies the top's diff into that slab of
the bottom's diff (every element of it belongs to exactly one top). A single
top is shared, so neither direction launches anything.
"""

from .. import gpu
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register
from .concat import part_copy_gpu


@register("Slice")
class SliceLayer(Layer):
    exact_bottoms = 1
    min_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.slice_param
        if param.HasField("axis") and param.HasField("slice_dim"):
            raise GraphError("slice_param: give either axis or slice_dim, not both", layer=self.name)
        self.slice_points = [int(p) for p in param.slice_point]

    def _axis(self, blob):
        param = self.layer_param.slice_param
        if param.HasField("slice_dim"):
            axis = int(param.slice_dim)
            if axis >= blob.ndim:
                raise GraphError(f"slice_dim {axis} is out of range for a {blob.ndim}-D input "
                                 f"of shape {blob.shape}", layer=self.name)
            return axis
        return blob.canonical_axis(param.axis, layer=self.name)

    def reshape(self, bottom, top):
        source = bottom[0]
        self.axis = axis = self._axis(source)
        length = source.shape[axis]
        points = self.slice_points
        if points:
            if len(points) != len(top) - 1:
                raise GraphError(f"{len(points)} slice_point(s) for {len(top)} tops: "
                                 "give one fewer slice_point than tops", layer=self.name)
            if len(top) > length:
                raise self.shape_error(f"{len(top)} tops cannot slice axis {axis} of length {length} "
                                       f"(input shape {source.shape})")
            previous = 0
            for point in points:
                if point <= previous:
                    raise GraphError(f"slice_points {points} must be strictly increasing and positive",
                                     layer=self.name)
                previous = point
            if previous > length:
                raise self.shape_error(f"slice_point {previous} lies past the end of axis {axis} "
                                       f"(length {length}, input shape {source.shape})")
            bounds = list(zip([0] + points, points + [length]))
        else:
            if length % len(top):
                raise self.shape_error(f"{len(top)} tops do not evenly divide axis {axis} of length {length} "
                                       f"(input shape {source.shape})")
            step = length // len(top)
            bounds = [(i * step, (i + 1) * step) for i in range(len(top))]
        self.bounds = bounds
        for blob, (start, end) in zip(top, bounds):
            shape = list(source.shape)
            shape[axis] = end - start
            blob.reshape(shape)
        if len(top) == 1:
            top[0].share_data(source)
            top[0].share_diff(source)

    def _slab(self, index):
        start, end = self.bounds[index]
        return (slice(None),) * self.axis + (slice(start, end),)

    def forward(self, bottom, top):
        if len(top) == 1:
            return  # the top is a view of the bottom
        data = bottom[0].data
        for index, blob in enumerate(top):
            blob.data[...] = data[self._slab(index)]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or len(top) == 1:
            return
        diff = bottom[0].diff
        for index, blob in enumerate(top):
            diff[self._slab(index)] = blob.diff

    def _launch(self, bottom_array, top_array, forward, blob, bottom_axis, start):
        slab = blob.count_axes(self.axis + 1)
        part_copy_gpu[gpu.blocks_for(blob.count), gpu.THREADS](     # the top is the part, the bottom the whole
            top_array, bottom_array, not forward, slab, bottom_axis, blob.shape[self.axis], start)

    def forward_gpu(self, bottom, top):
        if len(top) == 1:
            return  # the top is a view of the bottom
        data = bottom[0].gpu_data
        length = bottom[0].shape[self.axis]
        for blob, (start, _) in zip(top, self.bounds):
            if blob.count:
                self._launch(data, blob.gpu_data_to_overwrite(), True, blob, length, start)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0] or len(top) == 1:
            return
        diff = bottom[0].mutable_gpu_diff
        length = bottom[0].shape[self.axis]
        for blob, (start, _) in zip(top, self.bounds):
            if blob.count:
                self._launch(diff, blob.gpu_diff, False, blob, length, start)
