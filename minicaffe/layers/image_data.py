"""ImageData: images named in a list file (``path label`` per line), transformed, read ahead.

``image_data_param``: ``source`` (the list; the label follows the last space),
``root_folder`` (prefixed to each path), ``batch_size``, ``new_height`` and
``new_width`` (both or neither: resize with OpenCV's bilinear arithmetic),
``is_color`` (3 BGR channels, or 1 grey), ``shuffle`` (reshuffled at every
pass, as Caffe), ``rand_skip``. ``transform_param`` applies. Tops: the data
and the labels. Caffe's deprecated ``scale``/``mean_file``/``crop_size``/``mirror``
here are ignored (with a warning), as Caffe ignores them.

GPU: the prefetch thread copies each batch's decoded images to the device and
Forward transforms them there (images of different sizes: on the host), see
:mod:`minicaffe.data.layer_base`.
"""

from ..data.common import DataError, warn_deprecated_fields
from ..data.images import COLOR, GRAY
from ..data.layer_base import TransformingDataLayer, source_path
from ..data.sources import ImageListSource
from ..distributed import shard
from ..fillers import rng
from ..memory import shape_inference_active
from ..registry import register


@register("ImageData")
class ImageDataLayer(TransformingDataLayer):
    exact_tops = 2

    def open_source(self):
        param = self.layer_param.image_data_param
        warn_deprecated_fields(self, param, "image_data_param", ("scale", "mean_file", "crop_size", "mirror"))
        self.batch_size = self.positive_batch_size(param.batch_size, "image_data_param.batch_size")
        if (param.new_height > 0) != (param.new_width > 0):
            raise DataError("image_data_param: set new_height and new_width together (or neither)",
                            layer=self.name)
        path = source_path(self, param.source, "image list", "image_data_param.source")
        running = not shape_inference_active()
        seed = int(rng().integers(2 ** 63)) if param.shuffle and running else None
        source = ImageListSource(path, param.root_folder, param.new_height, param.new_width,
                                 COLOR if param.is_color else GRAY, seed=seed, layer=self.name,
                                 shard=shard(self.phase))
        if param.rand_skip and running:
            skip = int(rng().integers(param.rand_skip))
            if skip >= len(source.entries):
                raise DataError(f"rand_skip drew {skip}, but '{path}' lists only {len(source.entries)} images",
                                layer=self.name, path=path)
            source.position = skip
        return source

    def first_item_shape(self):
        source_path(self, self.source.first_path(), "image", f"first entry of {self.source.list_path}")
        return self.source.first_shape()
