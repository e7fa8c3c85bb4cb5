"""A Net's parameters to and from files and other nets (``copy_from``, ``save``, ``share_with``).

A mixin of :class:`minicaffe.net.Net`: weights are matched by layer name, as
Caffe's CopyTrainedLayersFrom and ShareTrainedLayersWith do.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import GraphError, ShapeError, WeightsError
from .proto import caffe_pb2


class NetWeights:
    """Mixed into Net; uses its ``_layers``, ``plan`` and ``dtype``."""

    def share_with(self, other):
        """Share parameter data with ``other`` by layer name (Caffe's ShareTrainedLayersWith).

        The test net of a solver shares its weights with the train net this way.
        """
        mine = {layer.name: layer for layer in self._layers}
        for layer in other._layers:
            target = mine.get(layer.name)
            if target is None or not layer.blobs:
                continue
            if len(target.blobs) != len(layer.blobs):
                raise GraphError(f"cannot share: {len(layer.blobs)} parameter blobs in the source net, "
                                 f"{len(target.blobs)} here", layer=layer.name)
            for index, (source, blob) in enumerate(zip(layer.blobs, target.blobs)):
                if source.shape != blob.shape:
                    raise ShapeError(f"cannot share param {index}: shapes differ", layer=layer.name,
                                     expected=source.shape, actual=blob.shape)
                blob.share_data(source)

    def copy_from(self, weights):
        """Copy parameters from a ``.caffemodel`` or ``.caffemodel.h5`` (path) or NetParameter, by layer name.

        Layers in the file but not in the net are skipped, as Caffe does.
        """
        from .io import blob_shape, check_net_blobs, read_caffemodel
        source = os.fspath(weights) if not isinstance(weights, caffe_pb2.NetParameter) else "<NetParameter>"
        if isinstance(weights, caffe_pb2.NetParameter):
            model = weights
            check_net_blobs(model, source)      # files are checked as they are read
        elif source.endswith(".h5"):
            from .solvers.hdf5 import read_net_hdf5
            model = read_net_hdf5(source)
        else:
            model = read_caffemodel(source)
        by_name = {layer.name: layer for layer in self._layers}
        copied = 0
        for saved in model.layer:
            layer = by_name.get(saved.name)
            if layer is None or not saved.blobs:
                continue
            copied += 1
            if len(saved.blobs) != len(layer.blobs):
                raise WeightsError(source, f"layer '{saved.name}' has {len(layer.blobs)} parameter blob(s) in the "
                                   f"net but {len(saved.blobs)} in the file")
            for index, (blob_proto, blob) in enumerate(zip(saved.blobs, layer.blobs)):
                if not _shape_matches(blob.shape, blob_proto):
                    raise WeightsError(
                        source, f"layer '{saved.name}' param {index}: shape mismatch, file has "
                        f"{blob_shape(blob_proto)} and the net has {blob.shape}. To learn this layer from scratch "
                        "instead, rename it in the net")
                values = blob_proto.double_data if len(blob_proto.double_data) else blob_proto.data
                blob.data[...] = np.asarray(values, dtype=self.dtype).reshape(blob.shape)
        with_weights = [saved.name for saved in model.layer if saved.blobs]
        if not copied and with_weights and any(layer.blobs for layer in self._layers):
            # Caffe skips unmatched layers one INFO line each; a file that matches nothing at all is
            # nearly always the wrong file, and the net would run on its fillers' weights unnoticed.
            import warnings
            from .errors import MinicaffeWarning
            shown = ", ".join(f"'{name}'" for name in with_weights[:3]) + (", ..." if len(with_weights) > 3 else "")
            warnings.warn(MinicaffeWarning(
                f"{source}: none of its {len(with_weights)} layers with weights ({shown}) is a layer of the net; "
                "the net keeps its fillers' weights (weights are matched by layer name)"), stacklevel=2)

    def to_proto(self, write_diff=False) -> "caffe_pb2.NetParameter":
        """The net's layers with their parameter blobs, as Caffe's ``Net::ToProto``."""
        from .io import array_to_blobproto
        net = caffe_pb2.NetParameter()
        net.name = self.plan.name
        for planned, layer in zip(self.plan.layers, self._layers):
            entry = net.layer.add()
            entry.CopyFrom(planned.param)
            if planned.automatic_tops:      # as Caffe, the file keeps the layer as it was written
                kept = [name for name in entry.top if name not in planned.automatic_tops]
                del entry.top[:]
                entry.top.extend(kept)
            del entry.blobs[:]
            for blob in layer.blobs:
                entry.blobs.append(array_to_blobproto(blob.read_data(), blob.read_diff() if write_diff else None))
        return net

    def save(self, path):
        """Write the parameters as a ``.caffemodel`` (atomically)."""
        from .io import write_caffemodel
        write_caffemodel(self.to_proto(), path)

    def save_hdf5(self, path, write_diff=False):
        """Write the parameters in Caffe's HDF5 layout (``data/LAYER/i``), whatever the file is called.

        pycaffe's ``Net.save_hdf5``; needs the ``data`` extra (h5py).
        """
        from .solvers.hdf5 import write_net_hdf5
        write_net_hdf5(self, os.fspath(path), write_diff=write_diff)

    def load_hdf5(self, path):
        """Copy parameters, by layer name, from a file :meth:`save_hdf5` (or Caffe) wrote.

        pycaffe's ``Net.load_hdf5``: the file is read as HDF5 whatever its extension.
        """
        from .solvers.hdf5 import read_net_hdf5
        self.copy_from(read_net_hdf5(os.fspath(path)))


def _shape_matches(shape, blob_proto):
    """Caffe's ShapeEquals: legacy 4-D fields compare against the blob's last four axes, padded with 1s."""
    if any(blob_proto.HasField(f) for f in ("num", "channels", "height", "width")):
        if len(shape) > 4:
            return False
        legacy = (1,) * (4 - len(shape)) + tuple(shape)
        return legacy == (blob_proto.num, blob_proto.channels, blob_proto.height, blob_proto.width)
    return tuple(shape) == tuple(blob_proto.shape.dim)
