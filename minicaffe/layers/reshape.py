"""Reshape: give the bottom a new shape without copying (the top shares data and diff).

``reshape_param.shape`` replaces the bottom axes ``[axis, axis + num_axes)``
(``num_axes`` -1: through the last axis; a negative ``axis`` counts from the
end, -1 meaning "after the last axis"). In the new shape a 0 copies the bottom
dimension at the same position and one -1 is inferred from the count. The
rules and checks follow BVLC Caffe's ReshapeLayer.

GPU: the top shares the bottom's device copies too, so ``forward_gpu`` and
``backward_gpu`` do nothing (and nothing crosses to the host).
"""

from ..errors import GraphError
from ..layer import Layer
from ..registry import register


@register("Reshape")
class ReshapeLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise GraphError("Reshape does not allow in-place computation", layer=self.name)
        param = self.layer_param.reshape_param
        self.new_dims = [int(d) for d in param.shape.dim]
        self.copy_axes = [i for i, d in enumerate(self.new_dims) if d == 0]
        inferred = [i for i, d in enumerate(self.new_dims) if d == -1]
        if len(inferred) > 1:
            raise GraphError(f"reshape_param.shape {tuple(self.new_dims)} contains several -1 dims; "
                             "at most one may be inferred", layer=self.name)
        bad = [d for d in self.new_dims if d < -1]
        if bad:
            raise GraphError(f"reshape_param.shape {tuple(self.new_dims)} has a negative dim other than -1",
                             layer=self.name)
        self.inferred_axis = inferred[0] if inferred else None
        self.constant_count = 1
        for d in self.new_dims:
            if d > 0:
                self.constant_count *= d
        if param.num_axes < -1:
            raise GraphError(f"reshape_param.num_axes must be >= 0, or -1 for all; got {param.num_axes}",
                             layer=self.name)

    def reshape(self, bottom, top):
        param = self.layer_param.reshape_param
        source = bottom[0]
        ndim = source.ndim
        start = param.axis if param.axis >= 0 else ndim + param.axis + 1
        if not 0 <= start <= ndim:
            raise self.shape_error(f"reshape_param.axis {param.axis} is out of range for a {ndim}-D bottom",
                                   actual=source.shape)
        end = ndim if param.num_axes == -1 else start + param.num_axes
        if end > ndim:
            raise self.shape_error(f"reshape_param axis + num_axes = {end} is out of range for a "
                                   f"{ndim}-D bottom", actual=source.shape)
        shape = list(source.shape[:start]) + list(self.new_dims) + list(source.shape[end:])
        for i in self.copy_axes:
            if start + i >= ndim:
                raise self.shape_error(f"reshape_param.shape {tuple(self.new_dims)} has a 0 at position {i} "
                                       "but there is no bottom axis to copy", actual=source.shape)
            shape[start + i] = source.shape[start + i]
        if self.inferred_axis is not None:
            explicit = self.constant_count * source.count_axes(0, start) * source.count_axes(end)
            for i in self.copy_axes:
                explicit *= shape[start + i]
            if explicit == 0 or source.count % explicit:
                raise self.shape_error(f"bottom count ({source.count}) must be divisible by the product of "
                                       f"the specified dimensions ({explicit})", actual=source.shape)
            shape[start + self.inferred_axis] = source.count // explicit
        shape = tuple(shape)
        count = 1
        for d in shape:
            count *= d
        if count != source.count:
            raise self.shape_error(f"output count ({count}) must match input count ({source.count})",
                                   expected=source.shape, actual=shape)
        top[0].reshape(shape)
        top[0].share_data(source)
        top[0].share_diff(source)

    def forward(self, bottom, top):
        pass  # the top's data is a view of the bottom's

    def backward(self, top, propagate_down, bottom):
        pass  # the bottom's diff is the top's (shared)

    forward_gpu = forward
    backward_gpu = backward
