"""HDF5Data and HDF5Output: rows of HDF5 datasets in, blobs out to an HDF5 file.

HDF5Data: ``hdf5_data_param.source`` is a text file listing ``.h5`` files;
each top reads the dataset of its own name, ``batch_size`` rows at a time
(converted to the net's dtype; any number of axes). Whole files are loaded,
one after another; after the last file the first comes again, in the middle
of a batch if need be. ``shuffle`` shuffles the file order at every pass and
the rows of each file as it is loaded, as Caffe. No ``transform_param``
(Caffe refuses it). Reading runs ahead on a thread like the other data layers.

HDF5Output: writes its two bottoms to ``hdf5_output_param.file_name`` as the
datasets ``data`` and ``label`` (4-D, as Caffe writes them; float32 for a
float net). Caffe creates the file at setup and fails on a second Forward
(the datasets exist); here each Forward appends its batch, so a file holds
every pass.

GPU: HDF5Data's prefetch thread copies each batch's rows to the device and
Forward hands them to the tops without a copy (see :mod:`minicaffe.data.layer_base`).
"""

import numpy as np

from ..data.common import DataError, optional_import
from ..data.layer_base import PrefetchingDataLayer, source_path
from ..data.sources import HDF5Source
from ..errors import GraphError
from ..distributed import shard
from ..fillers import rng
from ..layer import Layer
from ..memory import shape_inference_active
from ..registry import register


@register("HDF5Data")
class HDF5DataLayer(PrefetchingDataLayer):
    min_tops = 1
    stacks_items = False

    def open_source(self):
        if self.layer_param.HasField("transform_param"):
            raise GraphError("HDF5Data does not transform data: remove transform_param", layer=self.name)
        param = self.layer_param.hdf5_data_param
        self.batch_size = self.positive_batch_size(param.batch_size, "hdf5_data_param.batch_size")
        path = source_path(self, param.source, "HDF5 file list", "hdf5_data_param.source")
        seed = int(rng().integers(2 ** 63)) if param.shuffle and not shape_inference_active() else None
        return HDF5Source(path, self.layer_param.top, self.dtype, seed=seed, layer=self.name,
                          shard=shard(self.phase))

    def initial_top_shapes(self, top):
        source_path(self, self.source.first_file(), "HDF5 file", f"listed in {self.source.list_path}")
        return [(self.batch_size,) + shape[1:] for shape in self.source.first_shapes()]

    def fill_tops(self, batch, top):
        for blob, values in zip(top, batch.tops):
            blob.reshape(values.shape)
            blob.data[...] = values


@register("HDF5Output")
class HDF5OutputLayer(Layer):
    exact_bottoms = 2
    exact_tops = 0

    def setup(self, bottom, top):
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            raise GraphError("hdf5_output_param.file_name is required", layer=self.name)
        if shape_inference_active():
            return
        self._h5py = optional_import("h5py", "writing HDF5 files", self.name)
        try:
            self._h5py.File(self.file_name, "w").close()      # created (truncated) at setup, as Caffe
        except OSError as exc:
            raise DataError(f"cannot create HDF5 file '{self.file_name}': {exc}", layer=self.name,
                            path=self.file_name) from None

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.shape_error("data and label must have the same number of rows",
                                   expected=bottom[0].shape, actual=bottom[1].shape)

    def forward(self, bottom, top):
        dtype = np.float32 if self.dtype == np.float32 else np.float64
        with self._h5py.File(self.file_name, "a") as handle:
            for name, blob in (("data", bottom[0]), ("label", bottom[1])):
                values = np.asarray(blob.read_data(), dtype=dtype)
                if values.ndim < 4:     # Caffe writes num x channels x height x width
                    values = values.reshape(values.shape + (1,) * (4 - values.ndim))
                if name not in handle:
                    handle.create_dataset(name, data=values, maxshape=(None,) + values.shape[1:], chunks=True)
                    continue
                dataset = handle[name]
                if dataset.shape[1:] != values.shape[1:]:
                    raise DataError(f"'{name}' rows are {values.shape[1:]} now but {dataset.shape[1:]} in "
                                    f"'{self.file_name}' from earlier passes", layer=self.name,
                                    path=self.file_name)
                dataset.resize(dataset.shape[0] + values.shape[0], axis=0)
                dataset[-values.shape[0]:] = values

    def backward(self, top, propagate_down, bottom):
        pass  # Caffe's HDF5Output has an empty Backward
