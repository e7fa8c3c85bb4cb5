"""HDF5 snapshots (``snapshot_format: HDF5``), laid out as Caffe's: weights in
``data/LAYER/i`` (and ``diff/LAYER/i``); the solver state as ``iter``,
``learned_net``, ``current_step`` and ``history/i``, plus minicaffe's resume
extras as attributes. Written to a temporary file and renamed. Needs h5py
(``minicaffe[data]``).
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from ..errors import MinicaffeError, WeightsError
from ..proto import caffe_pb2
from ..io import array_to_blobproto, give_default_mode


def _h5py():
    try:
        import h5py
    except ImportError:
        raise MinicaffeError("HDF5 snapshots need h5py: pip install 'minicaffe[data]'") from None
    return h5py


def _atomic_h5(path, write):
    h5py = _h5py()
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp_path = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        with h5py.File(tmp_path, "w") as h5:
            write(h5)
        give_default_mode(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def write_net_hdf5(net, path, write_diff=False):
    def write(h5):
        groups = [("data", "data")] + ([("diff", "diff")] if write_diff else [])
        owned = {(entry.layer, entry.index) for entry in net.learnable_param_specs}
        for group_name, field in groups:
            group = h5.create_group(group_name)
            for layer in net.layers:
                layer_group = group.create_group(layer.name)
                for index, blob in enumerate(layer.blobs):
                    if (layer.name, index) in owned:
                        layer_group.create_dataset(str(index), data=getattr(blob, field))
    _atomic_h5(path, write)


def read_net_hdf5(path) -> "caffe_pb2.NetParameter":
    """A ``.caffemodel.h5`` as a NetParameter with blobs, so Net.copy_from treats both formats alike."""
    h5py = _h5py()
    try:
        h5 = h5py.File(os.fspath(path), "r")
    except OSError as exc:
        raise WeightsError(path, f"cannot read HDF5 weights: {exc}") from None
    net = caffe_pb2.NetParameter()
    with h5:
        if "data" not in h5:
            raise WeightsError(path, "no 'data' group: not a Caffe HDF5 model")
        for layer_name, group in h5["data"].items():
            layer = net.layer.add(name=layer_name)
            for index in sorted(group.keys(), key=int):
                layer.blobs.append(array_to_blobproto(np.asarray(group[index])))
    return net


def write_state_hdf5(state, path):
    def write(h5):
        h5.create_dataset("iter", data=np.int32(state.iter))
        h5.create_dataset("learned_net", data=state.learned_net)
        h5.create_dataset("current_step", data=np.int32(state.current_step))
        history = h5.create_group("history")
        from ..io import blobproto_to_array
        for index, blob in enumerate(state.history):
            history.create_dataset(str(index), data=blobproto_to_array(blob))
        h5.attrs["minicaffe_rng_state"] = state.rng_state
        h5.attrs["minicaffe_smoothed_loss"] = state.smoothed_loss
        h5.attrs["minicaffe_data_cursors"] = json.dumps(
            [[cursor.net, cursor.layer, cursor.state] for cursor in state.data_cursor])
    _atomic_h5(path, write)


def read_state_hdf5(path) -> "caffe_pb2.SolverState":
    h5py = _h5py()
    try:
        h5 = h5py.File(os.fspath(path), "r")
    except OSError as exc:
        raise MinicaffeError(f"{path}: cannot read HDF5 solver state: {exc}") from None
    state = caffe_pb2.SolverState()
    with h5:
        state.iter = int(np.asarray(h5["iter"]))
        learned = h5["learned_net"][()]
        state.learned_net = learned.decode() if isinstance(learned, bytes) else str(learned)
        state.current_step = int(np.asarray(h5["current_step"])) if "current_step" in h5 else 0
        history = h5.get("history", {})
        for index in sorted(history.keys(), key=int):
            state.history.append(array_to_blobproto(np.asarray(history[index])))
        if "minicaffe_rng_state" in h5.attrs:
            state.rng_state = h5.attrs["minicaffe_rng_state"]
        if "minicaffe_smoothed_loss" in h5.attrs:
            state.smoothed_loss = float(h5.attrs["minicaffe_smoothed_loss"])
        for net_name, layer, cursor in json.loads(h5.attrs.get("minicaffe_data_cursors", "[]")):
            state.data_cursor.add(net=net_name, layer=layer, state=cursor)
    return state
