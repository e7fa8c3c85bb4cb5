"""Input: blobs the user fills (pycaffe's ``net.blobs['data'].data[...] = ...``).

GPU: no compute either: the user's values reach the device when the next layer
reads them (the blob's SyncedArray copies them once), so ``forward_gpu`` and
``backward_gpu`` do nothing.
"""

from ..blob import check_shape
from ..layer import Layer
from ..registry import register


@register("Input")
class InputLayer(Layer):
    """Tops of the shapes in ``input_param.shape``: one shape for all tops, or one per top."""

    exact_bottoms = 0
    min_tops = 1

    def setup(self, bottom, top):
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.shape_error(f"input_param gives {len(shapes)} shapes for {len(top)} tops: "
                                   "give one shape, or one per top")
        for index, shape in enumerate(shapes):
            check_shape(shape.dim, f"input_param.shape[{index}]" if len(shapes) > 1 else "input_param.shape",
                        self.name)
        for index, blob in enumerate(top):
            if shapes:
                blob.reshape(shapes[0] if len(shapes) == 1 else shapes[index])

    def reshape(self, bottom, top):
        pass  # the user reshapes inputs; they keep their shape otherwise

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass  # no bottoms: force_backward reaches here, and there is nothing to do

    forward_gpu = forward
    backward_gpu = backward
