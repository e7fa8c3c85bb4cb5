"""HDF5Data (file lists, wrap-around to the first file, shuffle, state) and HDF5Output."""

import h5py
import numpy as np
import pytest

import minicaffe
from minicaffe.data.common import DataError
from minicaffe.errors import GraphError

from .helpers import data_net, write_text

A_DATA = np.arange(3 * 2 * 2 * 2, dtype=np.float64).reshape(3, 2, 2, 2) / 7
B_DATA = -np.arange(2 * 2 * 2 * 2, dtype=np.float64).reshape(2, 2, 2, 2) - 1
A_LABEL = np.array([0, 1, 2], dtype=np.int32)
B_LABEL = np.array([3, 4], dtype=np.int32)


@pytest.fixture
def files(tmp_path):
    for name, data, label in (("a.h5", A_DATA, A_LABEL), ("b.h5", B_DATA, B_LABEL)):
        with h5py.File(tmp_path / name, "w") as handle:
            handle["data"] = data
            handle["label"] = label
    # a.h5 by its full path, b.h5 relative to the list's folder
    write_text(tmp_path / "list.txt", f"{tmp_path / 'a.h5'}\nb.h5\n")
    return tmp_path


def hdf5_net(tmp_path, batch=4, extra="", source=None, tops=("data", "label"), transform=""):
    return data_net(tmp_path, source or tmp_path / "list.txt", f"batch_size: {batch} {extra}", transform, tops=tops,
                    layer_type="HDF5Data", param_name="hdf5_data_param")


def test_rows_file_after_file_wrapping_to_the_first(files):
    net = minicaffe.Net(hdf5_net(files), minicaffe.TEST)
    assert net.blobs["data"].shape == (4, 2, 2, 2) and net.blobs["label"].shape == (4,)
    rows = np.concatenate([A_DATA, B_DATA]).astype(np.float32)
    labels = np.concatenate([A_LABEL, B_LABEL])
    order = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    for batch in range(3):
        out = net.forward()
        picked = order[4 * batch:4 * batch + 4]
        np.testing.assert_array_equal(out["data"], rows[picked])
        np.testing.assert_array_equal(out["label"], labels[picked])


def test_shuffle_covers_every_row_once_per_pass(files):
    minicaffe.set_random_seed(4)
    net = minicaffe.Net(hdf5_net(files, batch=5, extra="shuffle: true"), minicaffe.TRAIN)
    passes = [tuple(int(v) for v in net.forward()["label"]) for _ in range(4)]
    assert all(sorted(p) == [0, 1, 2, 3, 4] for p in passes)
    assert len(set(passes)) > 1
    for labels in passes:   # rows of one file stay together: a file is read whole, then the next
        first = labels[0] in (0, 1, 2)
        assert set(labels[:3] if first else labels[:2]) == ({0, 1, 2} if first else {3, 4})


def test_state_and_restore(files):
    net = minicaffe.Net(hdf5_net(files, batch=2), minicaffe.TEST)
    net.forward()
    net.forward()
    saved = net.layers[0].state()
    assert saved == {"epoch": 0, "file": 1, "row": 1, "seed": None}
    expected = [net.forward()["label"].copy() for _ in range(2)]
    np.testing.assert_array_equal(expected[0], [4, 0])
    other = minicaffe.Net(hdf5_net(files, batch=2), minicaffe.TEST)
    other.layers[0].restore(saved)
    for labels in expected:
        np.testing.assert_array_equal(other.forward()["label"], labels)


def test_double_nets_read_doubles(files):
    net = minicaffe.Net(hdf5_net(files, batch=3), minicaffe.TEST, dtype=np.float64)
    np.testing.assert_array_equal(net.forward()["data"], A_DATA)


def test_errors(files, tmp_path):
    with pytest.raises(GraphError, match="HDF5Data does not transform data"):
        minicaffe.Net(hdf5_net(files, transform="scale: 2"), minicaffe.TEST)
    with pytest.raises(DataError, match=r"HDF5 file '.*a.h5' has no dataset 'weights'"):
        minicaffe.Net(hdf5_net(files, tops=("data", "weights")), minicaffe.TEST)
    with pytest.raises(DataError, match=r"HDF5 file list '.*none.txt' \(hdf5_data_param.source\) does not exist"):
        minicaffe.Net(hdf5_net(files, source=tmp_path / "none.txt"), minicaffe.TEST)
    write_text(tmp_path / "gone.txt", f"{tmp_path / 'a.h5'} {tmp_path / 'gone.h5'}\n")
    net = minicaffe.Net(hdf5_net(files, source=tmp_path / "gone.txt", batch=4), minicaffe.TEST)
    with pytest.raises(DataError, match=r"HDF5 file '.*gone.h5' \(listed in .*gone.txt\) does not exist"):
        net.forward()
    with h5py.File(tmp_path / "odd.h5", "w") as handle:
        handle["data"] = np.zeros((2, 2, 2, 2))
        handle["label"] = np.zeros(3)
    write_text(tmp_path / "odd.txt", f"{tmp_path / 'odd.h5'}\n")
    net = minicaffe.Net(hdf5_net(files, source=tmp_path / "odd.txt"), minicaffe.TEST)
    with pytest.raises(DataError, match="dataset 'label' has 3 rows but 'data' has 2"):
        net.forward()
    write_text(tmp_path / "empty.txt", "\n")
    with pytest.raises(DataError, match="names no files"):
        minicaffe.Net(hdf5_net(files, source=tmp_path / "empty.txt"), minicaffe.TEST)


def test_hdf5_output_appends_each_forward(tmp_path):
    out_file = tmp_path / "out.h5"
    path = write_text(tmp_path / "net.prototxt", f'''
layer {{ name: "data" type: "MemoryData" top: "data" top: "label"
  memory_data_param {{ batch_size: 2 channels: 1 height: 2 width: 3 }} }}
layer {{ name: "save" type: "HDF5Output" bottom: "data" bottom: "label"
  hdf5_output_param {{ file_name: "{out_file}" }} }}
''')
    net = minicaffe.Net(path, minicaffe.TEST)
    with h5py.File(out_file, "r") as handle:      # created at setup, as Caffe
        assert list(handle.keys()) == []
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([5, 6, 7, 8], dtype=np.float32)
    net.set_input_arrays(data, labels)
    net.forward()
    net.forward()
    with h5py.File(out_file, "r") as handle:
        assert handle["data"].dtype == np.float32
        np.testing.assert_array_equal(handle["data"][...], data)
        np.testing.assert_array_equal(handle["label"][...], labels.reshape(4, 1, 1, 1))
