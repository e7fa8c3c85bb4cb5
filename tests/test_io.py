"""Binary files: .caffemodel and .binaryproto round trips, legacy blobs, corrupt files."""

import os

import numpy as np
import pytest

from minicaffe import io
from minicaffe.errors import WeightsError
from minicaffe.proto import caffe_pb2


def make_model():
    rng = np.random.default_rng(0)
    net = caffe_pb2.NetParameter(name="tiny")
    conv = net.layer.add(name="conv", type="Convolution", bottom=["data"], top=["conv"])
    conv.blobs.append(io.array_to_blobproto(rng.standard_normal((2, 1, 3, 3)).astype(np.float32)))
    conv.blobs.append(io.array_to_blobproto(rng.standard_normal(2).astype(np.float32)))
    ip = net.layer.add(name="ip", type="InnerProduct", bottom=["conv"], top=["ip"])
    ip.blobs.append(io.array_to_blobproto(rng.standard_normal((3, 8))))     # float64 -> double_data
    net.layer.add(name="relu", type="ReLU", bottom=["ip"], top=["ip"])
    return net


def test_caffemodel_round_trip_is_byte_identical(tmp_path):
    first, second = tmp_path / "a.caffemodel", tmp_path / "b.caffemodel"
    io.write_caffemodel(make_model(), first)
    io.write_caffemodel(io.read_caffemodel(first), second)
    assert first.read_bytes() == second.read_bytes()


def test_caffemodel_arrays_keep_values_and_precision(tmp_path):
    model = make_model()
    path = tmp_path / "m.caffemodel"
    io.write_caffemodel(model, path)
    arrays = io.caffemodel_arrays(io.read_caffemodel(path))
    assert sorted(arrays) == ["conv", "ip"]                 # layers without blobs are left out
    assert arrays["conv"][0].shape == (2, 1, 3, 3) and arrays["conv"][0].dtype == np.float32
    assert arrays["ip"][0].dtype == np.float64
    np.testing.assert_array_equal(arrays["ip"][0], io.blobproto_to_array(model.layer[1].blobs[0]))
    assert len(model.layer[1].blobs[0].double_data) == 24 and not model.layer[1].blobs[0].data


def test_legacy_4d_blob_fields():
    blob = caffe_pb2.BlobProto(num=2, channels=3, height=1, width=2, data=np.arange(12.0).tolist())
    array = io.blobproto_to_array(blob)
    assert array.shape == (2, 3, 1, 2) and array.dtype == np.float32
    assert array[1, 2, 0, 1] == 11.0
    # only some legacy fields set: the others are 0, as Caffe reads them
    assert io.blob_shape(caffe_pb2.BlobProto(num=4)) == (4, 0, 0, 0)
    # shape.dim when no legacy field is set
    assert io.blob_shape(caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[5, 6]))) == (5, 6)


def test_blob_diff_and_double_diff():
    data = np.ones((2, 2), dtype=np.float32)
    blob = io.array_to_blobproto(data, diff=np.full((2, 2), 3.0, dtype=np.float32))
    np.testing.assert_array_equal(io.blobproto_to_array(blob, return_diff=True), 3.0)
    with pytest.raises(ValueError, match="diff shape"):
        io.array_to_blobproto(data, diff=np.ones(3))


def test_v1_caffemodel_is_upgraded(tmp_path):
    legacy = caffe_pb2.NetParameter(name="old")
    old = legacy.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT, bottom=["x"], top=["y"])
    old.blobs.append(caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3, data=[1, 2, 3, 4, 5, 6]))
    path = tmp_path / "old.caffemodel"
    path.write_bytes(legacy.SerializeToString())
    net = io.read_caffemodel(path)
    assert [(layer.name, layer.type) for layer in net.layer] == [("ip", "InnerProduct")]
    assert io.caffemodel_arrays(net)["ip"][0].shape == (1, 1, 2, 3)


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_truncated_caffemodel_names_the_file(tmp_path, cut):
    path = tmp_path / "m.caffemodel"
    io.write_caffemodel(make_model(), path)
    payload = path.read_bytes()
    path.write_bytes(payload[: int(len(payload) * cut)])
    with pytest.raises(WeightsError) as info:
        io.read_caffemodel(path)
    assert str(path) in str(info.value)


def test_blob_with_too_few_values_is_caught(tmp_path):
    # What a file cut at a field boundary inside a blob looks like: it parses, but is short.
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="ip", type="InnerProduct")
    layer.blobs.add(shape=caffe_pb2.BlobShape(dim=[2, 3]), data=[1.0, 2.0])
    path = tmp_path / "short.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(WeightsError, match=r"layer 'ip' blob 0: shape \(2, 3\) needs 6 values but 'data' holds 2"):
        io.read_caffemodel(path)


def test_garbage_and_text_and_empty_files(tmp_path):
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(WeightsError, match="garbage.caffemodel: not a valid binary NetParameter"):
        io.read_caffemodel(garbage)
    text = tmp_path / "net.prototxt"
    text.write_text('name: "n"\nlayer { name: "a" type: "ReLU" }\n')
    with pytest.raises(WeightsError, match="is it a .prototxt"):
        io.read_caffemodel(text)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="holds no layers"):
        io.read_caffemodel(empty)
    with pytest.raises(WeightsError, match="cannot read file"):
        io.read_caffemodel(tmp_path / "missing.caffemodel")


def test_binaryproto_round_trip(tmp_path):
    mean = np.arange(24, dtype=np.float32).reshape(1, 3, 2, 4)
    path = tmp_path / "mean.binaryproto"
    io.write_binaryproto(mean, path)
    np.testing.assert_array_equal(io.read_binaryproto(path), mean)
    # a mean file as Caffe writes it: legacy 4-D fields
    legacy = caffe_pb2.BlobProto(num=1, channels=1, height=1, width=2, data=[0.5, 1.5])
    path.write_bytes(legacy.SerializeToString())
    assert io.read_binaryproto(path).tolist() == [[[[0.5, 1.5]]]]
    path.write_bytes(b"\xff\xff\xff")
    with pytest.raises(WeightsError, match="mean.binaryproto"):
        io.read_binaryproto(path)


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "snap.caffemodel"
    io.write_caffemodel(make_model(), path)
    before = path.read_bytes()

    def crash(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        io.write_caffemodel(caffe_pb2.NetParameter(name="new"), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["snap.caffemodel"]       # no temporary left behind


def test_written_files_get_the_umask_mode_not_mkstemps_owner_only(tmp_path):
    mask = os.umask(0o022)
    try:
        path = tmp_path / "model.caffemodel"
        io.write_caffemodel(make_model(), path)
        assert path.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)


def test_pycaffe_io_helpers():
    arrays = [np.ones((2, 3), dtype=np.float32), np.zeros(4, dtype=np.float32)]
    back = io.blobprotovector_str_to_arraylist(io.arraylist_to_blobprotovector_str(arrays))
    assert [a.shape for a in back] == [(2, 3), (4,)]
    image = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    datum = io.array_to_datum(image, label=7)
    assert datum.label == 7 and datum.data == image.tobytes()
    np.testing.assert_array_equal(io.datum_to_array(datum), image)
    floats = io.datum_to_array(io.array_to_datum(image.astype(np.float32)))
    assert floats.dtype == np.float32 and floats[2, 1, 1] == 11.0
