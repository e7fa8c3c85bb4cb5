"""Data: Datum records from an LMDB or LevelDB database, transformed, read ahead on a thread.

``data_param``: ``source`` (the database), ``batch_size``, ``backend`` (LEVELDB
by default, as in Caffe; LMDB through the ``lmdb`` package, LevelDB through the
optional ``plyvel``), ``rand_skip`` (skip a random number of records, below
it, at start), ``prefetch`` (batches read ahead, 4), ``force_encoded_color``.
Records are read in key order and the database starts over at its end, in
the middle of a batch if need be. A Datum holds raw uint8 bytes (C x H x W),
``float_data`` (one float per value) or an encoded image (JPEG, PNG, ...,
decoded with Pillow as OpenCV would: BGR). ``transform_param`` applies
(see :mod:`minicaffe.data.transform`). Tops: the data, and optionally the labels.
The top's shape comes from the first record of each batch, as in Caffe.

GPU: the prefetch thread copies each batch's raw records to the device and
Forward transforms them there (see :mod:`minicaffe.data.layer_base`).
"""

from ..data.common import DataError, warn_deprecated_fields
from ..data.db import LEVELDB, backend_name, looks_like_lmdb
from ..data.images import COLOR
from ..data.layer_base import TransformingDataLayer, source_path
from ..data.sources import DatumSource
from ..distributed import shard
from ..fillers import rng
from ..memory import shape_inference_active
from ..registry import register


@register("Data")
class DataLayer(TransformingDataLayer):
    min_tops = 1
    max_tops = 2

    def open_source(self):
        param = self.layer_param.data_param
        warn_deprecated_fields(self, param, "data_param", ("scale", "mean_file", "crop_size", "mirror"))
        self.batch_size = self.positive_batch_size(param.batch_size, "data_param.batch_size")
        path = source_path(self, param.source, "source", "data_param.source")
        backend = backend_name(param.backend)
        if backend == LEVELDB and looks_like_lmdb(path):
            raise DataError(f"source '{path}' is an LMDB database but backend is LEVELDB "
                            "(Caffe's default): add 'backend: LMDB' to data_param", layer=self.name, path=path)
        skip = 0
        if param.rand_skip and not shape_inference_active():
            skip = int(rng().integers(param.rand_skip))
        mode = COLOR if param.force_encoded_color else self.transformer.decode_mode
        return DatumSource(path, backend, mode, self.name, skip=skip, shard=shard(self.phase))
