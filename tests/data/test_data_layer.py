"""The Data layer: LMDB Datum records through transform_param, wrap-around, prefetching, errors."""

import json
import sys
import threading
import time

import numpy as np
import pytest

import minicaffe
from minicaffe.data.common import DataError, MissingDependency
from minicaffe.data.sources import DatumSource
from minicaffe.errors import MinicaffeError
from minicaffe.io import write_binaryproto

from .helpers import (bytes_pixels, caffe_transform, data_net, datum, matching_crops, png_bytes, rgb_to_bgr_chw,
                      write_lmdb)

ITEMS = [bytes_pixels((3, 4, 4), seed) for seed in range(5)]
LABELS = [10, 11, 12, 13, 14]


@pytest.fixture
def lmdb_source(tmp_path):
    return write_lmdb(tmp_path / "db", [(f"{i:03d}", datum(a, label)) for i, (a, label) in enumerate(zip(ITEMS, LABELS))])


def lmdb_net(tmp_path, source, batch=3, transform="", extra=""):
    return data_net(tmp_path, source, f"batch_size: {batch} backend: LMDB {extra}", transform)


def test_raw_records_in_key_order_wrap_around_mid_batch(tmp_path, lmdb_source):
    net = minicaffe.Net(lmdb_net(tmp_path, lmdb_source), minicaffe.TEST)
    assert net.blobs["data"].shape == (3, 3, 4, 4) and net.blobs["label"].shape == (3,)
    order = []
    for _ in range(3):
        out = net.forward()
        for item, label in zip(out["data"], out["label"]):
            index = LABELS.index(int(label))
            np.testing.assert_array_equal(item, ITEMS[index].astype(np.float32))
            order.append(index)
    assert order == [0, 1, 2, 3, 4, 0, 1, 2, 3]


def test_scale_and_mean_values_as_caffe(tmp_path, lmdb_source):
    for transform, options in [("scale: 0.00390625", {"scale": 0.00390625}),
                               ("mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.017",
                                {"mean_values": [104, 117, 123], "scale": 0.017}),
                               ("mean_value: 127.5", {"mean_values": [127.5]})]:
        net = minicaffe.Net(lmdb_net(tmp_path, lmdb_source, transform=transform), minicaffe.TEST)
        out = net.forward()
        for n in range(3):
            np.testing.assert_array_equal(out["data"][n], caffe_transform(ITEMS[n], **options))


def test_mean_file_test_crop_is_centred_with_floor_division(tmp_path, lmdb_source):
    mean = np.random.default_rng(1).uniform(0, 255, (1, 3, 4, 4)).astype(np.float32)
    write_binaryproto(mean, tmp_path / "mean.binaryproto")
    net = minicaffe.Net(lmdb_net(tmp_path, lmdb_source, transform=f'crop_size: 3 scale: 0.5 '
                                 f'mean_file: "{tmp_path / "mean.binaryproto"}"'), minicaffe.TEST)
    out = net.forward()
    assert out["data"].shape == (3, 3, 3, 3)
    for n in range(3):   # (4 - 3) // 2 = 0: the top-left 3 x 3, mean cropped at the same offset
        np.testing.assert_array_equal(out["data"][n], caffe_transform(ITEMS[n], mean_image=mean[0], scale=0.5,
                                                                      crop=3, h_off=0, w_off=0))


def test_train_crops_and_mirrors_at_random_and_reproducibly(tmp_path, lmdb_source):
    mean = np.random.default_rng(2).uniform(0, 255, (1, 3, 4, 4)).astype(np.float32)
    write_binaryproto(mean, tmp_path / "mean.binaryproto")
    path = lmdb_net(tmp_path, lmdb_source, batch=5,
                    transform=f'crop_size: 2 mirror: true mean_file: "{tmp_path / "mean.binaryproto"}"')
    seen = set()
    minicaffe.set_random_seed(3)
    net = minicaffe.Net(path, minicaffe.TRAIN)
    first = [net.forward()["data"].copy() for _ in range(6)]
    for batch in first:
        for n in range(5):
            found = matching_crops(batch[n], ITEMS[n], 2, mean_image=mean[0])
            assert len(found) == 1, found
            seen.add(found[0])
    assert len({offset[:2] for offset in seen}) >= 6 and {offset[2] for offset in seen} == {False, True}
    minicaffe.set_random_seed(3)
    again = minicaffe.Net(path, minicaffe.TRAIN)
    for batch in first:
        np.testing.assert_array_equal(again.forward()["data"], batch)


def test_mirror_flips_at_random_in_test_too(tmp_path, lmdb_source):
    minicaffe.set_random_seed(0)
    net = minicaffe.Net(lmdb_net(tmp_path, lmdb_source, batch=5, transform="mirror: true"), minicaffe.TEST)
    flips = set()
    for _ in range(4):
        out = net.forward()["data"]
        for n in range(5):
            plain = np.array_equal(out[n], ITEMS[n].astype(np.float32))
            flipped = np.array_equal(out[n], ITEMS[n][:, :, ::-1].astype(np.float32))
            assert plain != flipped
            flips.add(flipped)
    assert flips == {False, True}


def test_float_data_records_and_double_nets(tmp_path):
    values = np.random.default_rng(4).standard_normal((2, 2, 3, 3)).astype(np.float32)
    source = write_lmdb(tmp_path / "db", [(f"{i}", datum(v, i)) for i, v in enumerate(values)])
    net = minicaffe.Net(lmdb_net(tmp_path, source, batch=2, transform="scale: 3 mean_value: 0.25"),
                        minicaffe.TEST, dtype=np.float64)
    out = net.forward()["data"]
    assert out.dtype == np.float64
    for n in range(2):
        np.testing.assert_array_equal(out[n], caffe_transform(values[n], mean_values=[0.25], scale=3,
                                                              dtype=np.float64))


def test_encoded_png_records_decode_as_opencv(tmp_path):
    rgb = bytes_pixels((4, 5, 3), 7)
    gray = rgb[:, :, 0].copy()
    source = write_lmdb(tmp_path / "db", [("a", datum(None, 1, encoded=png_bytes(rgb))),
                                           ("b", datum(None, 2, encoded=png_bytes(gray)))])
    native = minicaffe.Net(lmdb_net(tmp_path, source, batch=1), minicaffe.TEST)
    np.testing.assert_array_equal(native.forward()["data"][0], rgb_to_bgr_chw(rgb))       # BGR
    np.testing.assert_array_equal(native.forward()["data"][0], gray[None])                # grey stays 1 channel
    colour = minicaffe.Net(lmdb_net(tmp_path, source, batch=2, transform="force_color: true"), minicaffe.TEST)
    out = colour.forward()["data"]
    np.testing.assert_array_equal(out[1], np.stack([gray] * 3))
    grey = minicaffe.Net(lmdb_net(tmp_path, source, batch=2, transform="force_gray: true"), minicaffe.TEST)
    out = grey.forward()["data"]
    r, g, b = (rgb[:, :, i].astype(np.int64) for i in range(3))
    libpng = (9797 * r + 19234 * g + 3737 * b) >> 15       # libpng's rgb_to_gray, as OpenCV reads PNGs
    np.testing.assert_array_equal(out[0, 0], libpng)
    np.testing.assert_array_equal(out[1, 0], gray)


def test_encoded_jpeg_matches_a_plain_decode(tmp_path):
    import io

    from PIL import Image
    rgb = bytes_pixels((8, 8, 3), 8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    source = write_lmdb(tmp_path / "db", [("a", datum(None, 0, encoded=buffer.getvalue()))])
    out = minicaffe.Net(lmdb_net(tmp_path, source, batch=1, transform="crop_size: 4"), minicaffe.TEST).forward()
    np.testing.assert_array_equal(out["data"][0], rgb_to_bgr_chw(decoded)[:, 2:6, 2:6])
    grey = minicaffe.Net(lmdb_net(tmp_path, source, batch=1, transform="force_gray: true"), minicaffe.TEST)
    luma = decoded.astype(np.float64) @ [0.299, 0.587, 0.114]     # JPEG's own Y, up to its rounding
    assert np.abs(grey.forward()["data"][0, 0] - luma).max() <= 3


def test_single_top_and_default_prefetch_depth(tmp_path, lmdb_source):
    net = minicaffe.Net(data_net(tmp_path, lmdb_source, "batch_size: 2 backend: LMDB", tops=("data",)),
                        minicaffe.TEST)
    assert list(net.blobs) == ["data"]
    assert net.layers[0]._prefetcher.depth == 4
    np.testing.assert_array_equal(net.forward()["data"][1], ITEMS[1])


def test_prefetch_reads_ahead_on_another_thread(tmp_path, lmdb_source, monkeypatch):
    threads = []
    original = DatumSource.read_batch

    def recording(self, count):
        threads.append(threading.current_thread())
        return original(self, count)

    monkeypatch.setattr(DatumSource, "read_batch", recording)
    net = minicaffe.Net(lmdb_net(tmp_path, lmdb_source, batch=2, extra="prefetch: 2"), minicaffe.TEST)
    layer = net.layers[0]
    deadline = time.time() + 10
    while layer._prefetcher.ready < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert layer._prefetcher.ready == 2                      # two batches ready before any Forward
    assert threads and threading.main_thread() not in threads
    assert layer.state() == {"epoch": 0, "position": 0, "key": None}
    net.forward()
    assert layer.state()["position"] == 2                     # consumed, not read ahead
    assert layer.source.position > 2 or layer.source.epoch > 0


def test_state_and_restore_continue_where_the_snapshot_was(tmp_path, lmdb_source):
    net = minicaffe.Net(lmdb_net(tmp_path, lmdb_source, batch=3), minicaffe.TEST)
    net.forward()
    saved = net.layers[0].state()
    assert saved == {"epoch": 0, "position": 3, "key": b"002".hex()}
    expected = [net.forward()["label"].copy() for _ in range(2)]
    np.testing.assert_array_equal(expected[0], [13, 14, 10])
    other = minicaffe.Net(lmdb_net(tmp_path, lmdb_source, batch=3), minicaffe.TEST)
    other.layers[0].restore_cursor(json.loads(json.dumps(saved)))   # as a solverstate keeps it
    assert other.layers[0].cursor_state() == saved
    for labels in expected:
        np.testing.assert_array_equal(other.forward()["label"], labels)
    net.layers[0].restore(saved)
    np.testing.assert_array_equal(net.forward()["label"], expected[0])


def test_rand_skip_skips_fewer_than_asked(tmp_path, lmdb_source):
    firsts = set()
    for seed in range(8):
        minicaffe.set_random_seed(seed)
        net = minicaffe.Net(lmdb_net(tmp_path, lmdb_source, batch=1, extra="rand_skip: 3"), minicaffe.TEST)
        firsts.add(int(net.forward()["label"][0]))
    assert firsts <= {10, 11, 12} and len(firsts) > 1


# ---------------------------------------------------------------- errors

def test_missing_source_names_layer_and_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"layer 'data': source '.*nowhere' \(data_param.source\) does not exist"):
        minicaffe.Net(lmdb_net(tmp_path, missing), minicaffe.TEST)


def test_corrupt_record_names_its_key(tmp_path):
    source = write_lmdb(tmp_path / "db", [("000", datum(ITEMS[0], 0)), ("001-broken", b"\xff\xff\xff\x07")])
    net = minicaffe.Net(lmdb_net(tmp_path, source, batch=2), minicaffe.TEST)
    with pytest.raises(DataError, match=r"layer 'data': record '001-broken' in '.*db' is not a valid Datum"):
        net.forward()
    short = write_lmdb(tmp_path / "db2", [("000", datum(ITEMS[0], 0)),
                                          ("001-short", datum(ITEMS[0][:, :2], 0).SerializeToString()
                                           .replace(b"\x10\x02", b"\x10\x04", 1))])
    net = minicaffe.Net(lmdb_net(tmp_path, short, batch=2), minicaffe.TEST)
    with pytest.raises(DataError, match=r"record '001-short' .* holds 24 bytes of data, but its shape \(3, 4, 4\)"):
        net.forward()


def test_default_backend_is_leveldb(tmp_path, lmdb_source, monkeypatch):
    path = data_net(tmp_path, lmdb_source, "batch_size: 1")
    with pytest.raises(DataError, match="is an LMDB database but backend is LEVELDB"):
        minicaffe.Net(path, minicaffe.TEST)
    (tmp_path / "ldb").mkdir()
    monkeypatch.setitem(sys.modules, "plyvel", None)
    with pytest.raises(MissingDependency, match=r"'plyvel' package.*pip install 'minicaffe\[leveldb\]'"):
        minicaffe.Net(data_net(tmp_path, tmp_path / "ldb", "batch_size: 1"), minicaffe.TEST)


def test_missing_lmdb_package_names_the_extra(tmp_path, lmdb_source, monkeypatch):
    monkeypatch.setitem(sys.modules, "lmdb", None)
    with pytest.raises(MissingDependency, match=r"layer 'data': reading LMDB databases needs the 'lmdb' "
                                                r"package.*pip install 'minicaffe\[data\]'"):
        minicaffe.Net(lmdb_net(tmp_path, lmdb_source), minicaffe.TEST)


@pytest.mark.parametrize("transform, message", [
    ("crop_size: 5", r"crop_size 5 is larger than the first record \(4 x 4\)"),
    ("mean_value: 1 mean_value: 2", "give 1 mean_value or one per channel: 2 given for 3 channels"),
    ('mean_value: 1 mean_file: "m"', "give mean_file or mean_value, not both"),
    ("force_color: true force_gray: true", "force_color and force_gray cannot both be set"),
    ('mean_file: "absent.binaryproto"', r"mean file 'absent.binaryproto' \(transform_param.mean_file\) does not exist"),
])
def test_transform_param_errors(tmp_path, lmdb_source, transform, message):
    with pytest.raises(MinicaffeError, match=message):
        minicaffe.Net(lmdb_net(tmp_path, lmdb_source, transform=transform), minicaffe.TEST)


def test_mean_file_of_another_size(tmp_path, lmdb_source):
    write_binaryproto(np.zeros((1, 3, 5, 5), np.float32), tmp_path / "m.binaryproto")
    with pytest.raises(DataError, match=r"mean file '.*m.binaryproto' is 3 x 5 x 5 but the first record is 3 x 4 x 4"):
        minicaffe.Net(lmdb_net(tmp_path, lmdb_source, transform=f'mean_file: "{tmp_path / "m.binaryproto"}"'),
                      minicaffe.TEST)


def test_records_of_another_size_without_crop(tmp_path):
    source = write_lmdb(tmp_path / "db", [("a", datum(ITEMS[0], 0)), ("b", datum(ITEMS[0][:, :3, :3], 1))])
    net = minicaffe.Net(lmdb_net(tmp_path, source, batch=2), minicaffe.TEST)
    with pytest.raises(DataError, match=r"record 'b' .* is 3 x 3 x 3 but the batch's first item is 3 x 4 x 4"):
        net.forward()
    cropped = minicaffe.Net(lmdb_net(tmp_path, source, batch=2, transform="crop_size: 3"), minicaffe.TEST)
    out = cropped.forward()["data"]       # with a crop, sizes may differ: each is centred on its own
    np.testing.assert_array_equal(out[0], ITEMS[0][:, :3, :3])
    np.testing.assert_array_equal(out[1], ITEMS[0][:, :3, :3])


def test_empty_database_and_zero_batch(tmp_path):
    source = write_lmdb(tmp_path / "db", [])
    with pytest.raises(DataError, match="holds no records"):
        minicaffe.Net(lmdb_net(tmp_path, source), minicaffe.TEST)
    with pytest.raises(MinicaffeError, match="data_param.batch_size must be positive"):
        minicaffe.Net(lmdb_net(tmp_path, source, batch=0), minicaffe.TEST)


def test_batches_of_another_size_reshape_the_layers_after(tmp_path):
    source = write_lmdb(tmp_path / "db", [("a", datum(ITEMS[0], 0)), ("b", datum(ITEMS[1][:, :2, :3], 1))])
    path = data_net(tmp_path, source, "batch_size: 1 backend: LMDB")
    with open(path, "a") as handle:
        handle.write('layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }\n')
    net = minicaffe.Net(path, minicaffe.TEST)
    assert net.forward()["flat"].shape == (1, 48)
    out = net.forward()              # each batch takes its first record's shape, as Caffe
    assert out["flat"].shape == (1, 18)
    np.testing.assert_array_equal(out["flat"][0], ITEMS[1][:, :2, :3].ravel())


def test_solver_snapshot_keeps_the_data_cursor(tmp_path):
    from minicaffe.solvers import Solver
    source = write_lmdb(tmp_path / "db", [(f"{i:03d}", datum(bytes_pixels((1, 4, 4), i), i % 3)) for i in range(7)])
    write_text = (tmp_path / "net.prototxt").write_text
    write_text(f'''
layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{source}" backend: LMDB batch_size: 3 }}
  transform_param {{ crop_size: 3 mirror: true scale: 0.01 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
''')
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "fixed" max_iter: 6 snapshot: 3 '
        f'snapshot_prefix: "{tmp_path / "snap"}" random_seed: 3\n')
    straight = Solver(str(tmp_path / "solver.prototxt"))
    straight.solve()
    resumed = Solver(str(tmp_path / "solver.prototxt"))
    resumed.restore(str(tmp_path / "snap_iter_3.solverstate"))
    assert resumed.net.layers[0].cursor_state()["position"] == 2       # 3 batches of 3 from 7 records
    resumed.solve()
    np.testing.assert_array_equal(resumed.net.params["ip"][0].data, straight.net.params["ip"][0].data)
