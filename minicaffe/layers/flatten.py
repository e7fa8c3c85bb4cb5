"""Flatten: merge axes ``axis`` .. ``end_axis`` (inclusive; defaults 1 and -1) into one.

The top is a view of the bottom: it shares the bottom's data and diff (as Caffe
does), so Forward and Backward have nothing to copy.

GPU: the same sharing holds for the device copies, so ``forward_gpu`` and
``backward_gpu`` do nothing (and nothing crosses to the host).
"""

from ..errors import GraphError
from ..layer import Layer
from ..registry import register


@register("Flatten")
class FlattenLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise GraphError("Flatten does not allow in-place computation", layer=self.name)
        param = self.layer_param.flatten_param
        source = bottom[0]
        start = source.canonical_axis(param.axis, layer=self.name)
        end = source.canonical_axis(param.end_axis, layer=self.name)
        if end < start:
            raise self.shape_error(f"flatten_param end_axis {param.end_axis} comes before axis {param.axis} "
                                   f"for a {source.ndim}-D bottom", actual=source.shape)
        shape = source.shape[:start] + (source.count_axes(start, end + 1),) + source.shape[end + 1:]
        top[0].reshape(shape)
        top[0].share_data(source)
        top[0].share_diff(source)

    def forward(self, bottom, top):
        pass  # the top's data is a view of the bottom's

    def backward(self, top, propagate_down, bottom):
        pass  # the bottom's diff is the top's (shared)

    forward_gpu = forward
    backward_gpu = backward
