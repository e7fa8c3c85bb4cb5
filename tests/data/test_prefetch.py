"""The prefetch thread on its own, a LevelDB glue check, and missing optional packages."""

import sys
import threading

import numpy as np
import pytest

import minicaffe
from minicaffe.check import check_net
from minicaffe.data.common import DataError, MissingDependency
from minicaffe.data.prefetch import Prefetcher

from .helpers import bytes_pixels, data_net, datum, write_image, write_text


def test_prefetcher_keeps_order_and_hands_errors_in_their_turn():
    produced = []
    release = threading.Event()

    def produce():
        produced.append(threading.current_thread())
        if len(produced) == 4:
            release.wait(5)
            raise DataError("record 'k4' is broken")
        return len(produced)

    prefetcher = Prefetcher(produce, depth=2)
    prefetcher.start()
    assert [prefetcher.get() for _ in range(3)] == [1, 2, 3]
    release.set()
    for _ in range(2):                      # the error comes in its turn, and again after
        with pytest.raises(DataError, match="k4"):
            prefetcher.get()
    assert threading.main_thread() not in produced
    prefetcher.stop()
    assert not prefetcher.running
    produced.clear()
    assert prefetcher.get() == 1            # restarts after stop


def test_prefetcher_stop_drops_what_was_read_ahead():
    counter = iter(range(100))
    prefetcher = Prefetcher(lambda: next(counter), depth=3)
    assert prefetcher.get() == 0
    prefetcher.stop()
    assert prefetcher.ready == 0
    assert prefetcher.get() > 1             # what was read ahead (1, ...) was dropped


class _FakeLevelDB:
    """plyvel.DB's reading surface over a dict (plyvel itself is an optional extra)."""

    stores = {}

    def __init__(self, path, create_if_missing=False):
        self.records = self.stores[path]

    def iterator(self, start=None, include_value=True):
        return iter(sorted((k, v) for k, v in self.records.items() if start is None or k >= start))

    def close(self):
        pass


def test_leveldb_sources_through_plyvel(tmp_path, monkeypatch):
    fake = type(sys)("plyvel")
    fake.DB = _FakeLevelDB
    monkeypatch.setitem(sys.modules, "plyvel", fake)
    items = [bytes_pixels((1, 2, 2), i) for i in range(3)]
    (tmp_path / "ldb").mkdir()
    _FakeLevelDB.stores[str(tmp_path / "ldb")] = {f"{i}".encode(): datum(a, i).SerializeToString()
                                                  for i, a in enumerate(items)}
    net = minicaffe.Net(data_net(tmp_path, tmp_path / "ldb", "batch_size: 2"), minicaffe.TEST)   # LEVELDB: the default
    out = [net.forward()["label"].copy() for _ in range(2)]
    np.testing.assert_array_equal(np.concatenate(out), [0, 1, 2, 0])
    saved = net.layers[0].state()
    following = net.forward()["label"].copy()
    net.layers[0].restore(saved)
    np.testing.assert_array_equal(net.forward()["label"], following)


def test_missing_packages_name_the_extra_and_check_still_passes(tmp_path, monkeypatch):
    write_text(tmp_path / "list.txt", "a.png 0\n")
    write_image(tmp_path / "a.png", bytes_pixels((2, 2, 3), 0))
    image_net = data_net(tmp_path, tmp_path / "list.txt", f'batch_size: 1 root_folder: "{tmp_path}/"',
                         layer_type="ImageData", param_name="image_data_param", name="i.prototxt")
    (tmp_path / "h.txt").write_text("x.h5\n")
    hdf5_net = data_net(tmp_path, tmp_path / "h.txt", "batch_size: 1", layer_type="HDF5Data",
                        param_name="hdf5_data_param", tops=("data",), name="h.prototxt")
    for module, path, purpose in (("PIL", image_net, "reading images"), ("h5py", hdf5_net, "reading HDF5 files")):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)
            patch.setitem(sys.modules, module + ".Image", None)
            with pytest.raises(MissingDependency, match=rf"{purpose} needs the .* pip install 'minicaffe\[data\]'"):
                minicaffe.Net(path, minicaffe.TEST)
            checked = check_net(path)
            assert checked.unknown_shapes and "minicaffe[data]" in next(iter(checked.unknown_reasons.values()))


def test_check_shapes_from_present_sources(tmp_path):
    import h5py
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        handle["data"] = np.zeros((7, 3, 5), np.float32)
        handle["label"] = np.zeros(7)
    (tmp_path / "h.txt").write_text("x.h5\n")
    net = check_net(data_net(tmp_path, tmp_path / "h.txt", "batch_size: 4", layer_type="HDF5Data",
                             param_name="hdf5_data_param", name="h.prototxt"))
    assert net.blobs["data"].shape == (4, 3, 5) and net.blobs["label"].shape == (4,) and not net.unknown_shapes
    write_text(tmp_path / "list.txt", "a.png 0\n")
    image_net = data_net(tmp_path, tmp_path / "list.txt", f'batch_size: 2 root_folder: "{tmp_path}/"',
                         "crop_size: 2", layer_type="ImageData", param_name="image_data_param", name="i.prototxt")
    missing = check_net(image_net)
    assert missing.unknown_shapes == {"data", "label"}
    assert "image '" in missing.unknown_reasons["data"] and "does not exist" in missing.unknown_reasons["data"]
    write_image(tmp_path / "a.png", bytes_pixels((3, 4, 3), 1))
    assert check_net(image_net).blobs["data"].shape == (2, 3, 2, 2)
    window = write_text(tmp_path / "w.prototxt", f'layer {{ name: "w" type: "WindowData" top: "d" top: "l" '
                        f'window_data_param {{ source: "{tmp_path / "none.txt"}" batch_size: 2 }} '
                        "transform_param { crop_size: 3 } }\n")
    assert check_net(window).unknown_shapes == {"d", "l"}
    with pytest.raises(DataError, match=r"window file '.*none.txt' \(window_data_param.source\) does not exist"):
        minicaffe.Net(window, minicaffe.TEST)
