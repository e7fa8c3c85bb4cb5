"""Parameter: a learned blob exposed as a top (no bottoms).

``parameter_param.shape`` gives the blob's shape. The top shares the
parameter's data and diff, as in Caffe: the gradient that reaches the top is the
parameter's gradient, so Backward has nothing to do. The blob is not filled
(zeros until weights are loaded or set).

GPU: the top shares the parameter's device copies as well: Forward only
re-shares (no kernel, no copy), Backward has nothing to do.
"""

from ..blob import check_shape
from ..layer import Layer
from ..registry import register


@register("Parameter")
class ParameterLayer(Layer):
    exact_bottoms = 0
    exact_tops = 1

    def setup(self, bottom, top):
        check_shape(self.layer_param.parameter_param.shape.dim, "parameter_param.shape", self.name)
        self.blobs = [self.new_param_blob(self.layer_param.parameter_param.shape)]

    def reshape(self, bottom, top):
        self._share(top)

    def _share(self, top):
        # Re-shared on every Forward: loading weights or sharing params by name may replace blobs[0].
        top[0].reshape(self.blobs[0].shape)
        top[0].share_data(self.blobs[0])
        top[0].share_diff(self.blobs[0])

    def forward(self, bottom, top):
        self._share(top)

    def backward(self, top, propagate_down, bottom):
        pass  # the top's diff is the parameter's diff

    forward_gpu = forward
    backward_gpu = backward
