"""Bad files and absurd values get a minicaffe error naming the file, the field and the value (issue 23).

Each case is the smallest input that used to escape as a raw Python exception
(ValueError, KeyError, AttributeError, OverflowError, protobuf's EncodeError,
h5py's errors...). Fillers, solver values and solver states have their cases
in test_fillers.py, tests/solvers/test_solvers.py and tests/solvers/test_snapshots.py.
"""

import pickle

import numpy as np
import pytest
from click.testing import CliRunner

import minicaffe
from minicaffe import io
from minicaffe.cli import main
from minicaffe.data.common import DataError
from minicaffe.errors import MinicaffeError, ShapeError, WeightsError
from minicaffe.proto import caffe_pb2

h5py = pytest.importorskip("h5py")

NET = '''name: "small"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 4
  weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.5 } } }
'''


@pytest.fixture
def net(write_file):
    return minicaffe.Net(write_file("net.prototxt", NET), minicaffe.TEST)


def write_proto(path, message):
    path.write_bytes(message.SerializePartialToString())
    return str(path)


# ---------------------------------------------------------------- .caffemodel

def model_with(net, change):
    proto = net.to_proto()
    change(proto.layer[1].blobs[0])
    return proto


BLOB0 = "layer 'ip' blob 0: "


@pytest.mark.parametrize("change, message", [
    (lambda b: b.data.__delitem__(slice(None)),
     r"layer 'ip' blob 0: shape \(4, 3\) needs 12 values but the blob holds none"),
    (lambda b: b.data.__delitem__(slice(0, 5)), BLOB0 + r"shape \(4, 3\) needs 12 values but 'data' holds 7"),
    (lambda b: b.double_data.extend([1.0] * 5), BLOB0 + r"shape \(4, 3\) needs 12 values but 'double_data' holds 5"),
    (lambda b: b.diff.extend([1.0] * 2), r"layer 'ip' blob 0: shape \(4, 3\) needs 12 values but 'diff' holds 2"),
    (lambda b: b.shape.dim.__setitem__(1, -3), r"layer 'ip' blob 0: shape.dim\[1\] is -3 in shape \(4, -3\)"),
    (lambda b: (b.shape.dim.extend([2 ** 62, 2 ** 62])),
     r"layer 'ip' blob 0: shape \(4, 3, 4611686018427387904, 4611686018427387904\) has \d+ elements, more than the "
     r"9223372036854775807"),
    (lambda b: (b.ClearField("shape"), setattr(b, "num", -1), setattr(b, "channels", 4)),
     "layer 'ip' blob 0: 'num' is -1; a dimension cannot be negative"),
    (lambda b: b.shape.dim.extend([1] * 31), "layer 'ip' blob 0: shape has 33 dims, more than the 32"),
])
def test_caffemodel_blobs_must_fill_their_shape(tmp_path, net, change, message):
    path = write_proto(tmp_path / "bad.caffemodel", model_with(net, change))
    with pytest.raises(WeightsError, match=f"^{path}: " + message):
        net.copy_from(path)
    with pytest.raises(WeightsError, match=f"^{path}: " + message):
        io.read_caffemodel(path)


def test_an_in_memory_netparameter_is_checked_as_a_file_is(net):
    proto = model_with(net, lambda b: b.data.__delitem__(slice(None)))
    with pytest.raises(WeightsError, match=r"^<NetParameter>: layer 'ip' blob 0: shape \(4, 3\) needs 12 values"):
        net.copy_from(proto)


def test_upgrading_a_caffemodel_missing_required_fields_is_an_error_not_an_encode_error(tmp_path):
    model = caffe_pb2.NetParameter()
    layer = model.layer.add(name="clip", type="Clip")
    layer.clip_param.SetInParent()                  # min and max are `required` in caffe.proto
    path = write_proto(tmp_path / "clip.caffemodel", model)
    result = CliRunner().invoke(main, ["upgrade", path, str(tmp_path / "out.caffemodel")])
    assert result.exit_code != 0 and "Traceback" not in result.output and "EncodeError" not in result.output
    assert f"{path}: not a valid binary NetParameter (.caffemodel): required field(s) missing: " \
           "layer[0].clip_param.min, layer[0].clip_param.max" in result.output
    assert not (tmp_path / "out.caffemodel").exists()


# ---------------------------------------------------------------- .caffemodel.h5

def h5_model(tmp_path, build, name="bad.caffemodel.h5"):
    path = tmp_path / name
    with h5py.File(path, "w") as h5:
        build(h5)
    return str(path)


def layer_group(h5):
    return h5.create_group("data").create_group("ip")


@pytest.mark.parametrize("build, message", [
    (lambda h5: None, "no 'data' group: not a Caffe HDF5 model"),
    (lambda h5: h5.create_dataset("data", data=[1, 2]), r"'data' is a dataset, not a group \(not a Caffe HDF5 model\)"),
    (lambda h5: h5.create_group("data").create_dataset("ip", data=[1.0]), "'data/ip' is a dataset, not a group"),
    (lambda h5: layer_group(h5).create_dataset("0", data="hello"),
     r"'data/ip/0' holds strings, not real numbers \(floats or integers\)"),
    (lambda h5: layer_group(h5).create_dataset("0", data=np.bytes_(b"\xff\xfe")), "'data/ip/0' holds strings"),
    (lambda h5: layer_group(h5).create_dataset("0", data=np.zeros(3, dtype=np.complex64)),
     "'data/ip/0' holds complex64 values, not real numbers"),
    (lambda h5: layer_group(h5).create_dataset("0", data=np.zeros(3, dtype=[("a", "f4")])),
     r"'data/ip/0' holds \[\('a', '<f4'\)\] values"),
    (lambda h5: layer_group(h5).create_group("0"), "'data/ip/0' is a group, not a dataset"),
    (lambda h5: layer_group(h5).create_dataset("weights", data=[1.0]),
     r"'data/ip/weights': blobs are named 0, 1, 2, \.\.\., not 'weights'"),
    (lambda h5: (layer_group(h5).create_dataset("1", data=[1.0])), r"'data/ip' holds blobs \[1\]; expected 0 to 0"),
    (lambda h5: layer_group(h5).__setitem__("0", h5py.SoftLink("/nowhere")),
     "'data/ip/0' is a SoftLink, not a dataset stored in the file"),
    (lambda h5: layer_group(h5).__setitem__("0", h5py.ExternalLink("/etc/other.h5", "/x")),
     "'data/ip/0' is a ExternalLink, not a dataset stored in the file"),
    (lambda h5: h5.create_group("data").create_group(b"\xff\xfe"), "'data' holds a member whose name .* is not UTF-8"),
])
def test_hdf5_weights_with_a_wrong_layout_name_the_file_and_the_object(tmp_path, net, build, message):
    path = h5_model(tmp_path, build)
    with pytest.raises(WeightsError, match=f"^{path}: " + message):
        net.copy_from(path)


def test_hdf5_weights_that_are_not_hdf5_are_a_weights_error(tmp_path, net):
    for content in (b"", b"not hdf5 at all"):
        path = tmp_path / "empty.caffemodel.h5"
        path.write_bytes(content)
        with pytest.raises(WeightsError, match=f"^{path}: cannot read HDF5 weights"):
            net.copy_from(str(path))


def test_good_hdf5_weights_still_load(tmp_path, net):
    path = str(tmp_path / "good.caffemodel.h5")
    net.save_hdf5(path)
    other = minicaffe.Net(net.to_proto(), minicaffe.TEST)
    other.params["ip"][0].data[...] = 0
    other.copy_from(path)
    np.testing.assert_array_equal(other.params["ip"][0].data, net.params["ip"][0].data)


# ---------------------------------------------------------------- .binaryproto (mean files)

def blob(dims, values=None, legacy=None):
    proto = caffe_pb2.BlobProto()
    if legacy:
        proto.num, proto.channels, proto.height, proto.width = legacy
    else:
        proto.shape.dim.extend(dims)
    if values is not None:
        proto.data.extend([0.0] * values)
    return proto


@pytest.mark.parametrize("proto, message", [
    (blob([1, 4, 4, 2 ** 63 - 1, 2 ** 63 - 1], 16),     # np.prod in int64 wraps this to 16
     r"blob: shape \(1, 4, 4, 9223372036854775807, 9223372036854775807\) has \d+ elements, more than the "
     r"9223372036854775807 \(2\^63 - 1\) an array can hold"),
    (blob([1, -3, 2, 2], 0), r"blob: shape.dim\[1\] is -3 in shape \(1, -3, 2, 2\); a dimension cannot be negative"),
    (blob(None, 4, legacy=(1, -1, -1, 4)), "blob: 'channels' is -1; a dimension cannot be negative"),
    (blob([1, 3, 2, 2], 11), r"blob: shape \(1, 3, 2, 2\) needs 12 values but 'data' holds 11"),
    (blob([1, 3, 2, 2]), r"blob: shape \(1, 3, 2, 2\) needs 12 values but the blob holds none"),
])
def test_bad_mean_files_name_the_file_the_field_and_the_value(tmp_path, proto, message):
    path = write_proto(tmp_path / "mean.binaryproto", proto)
    with pytest.raises(WeightsError, match=f"^{path}: " + message):
        io.read_binaryproto(path)


def test_a_mean_file_in_a_net_reports_its_problem(tmp_path, write_file):
    mean = write_proto(tmp_path / "mean.binaryproto", blob([1, -3, 2, 2], 0))
    from PIL import Image
    Image.new("RGB", (2, 2)).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.png'} 0\n")
    path = write_file("net.prototxt", f'''name: "m"
layer {{ name: "d" type: "ImageData" top: "x" top: "l" transform_param {{ mean_file: "{mean}" }}
  image_data_param {{ source: "{tmp_path / 'list.txt'}" batch_size: 1 }} }}
''')
    with pytest.raises(MinicaffeError, match=r"shape.dim\[1\] is -3"):
        minicaffe.Net(path, minicaffe.TRAIN)


def test_blobprotovector_helpers_check_their_blobs():
    vector = caffe_pb2.BlobProtoVector()
    vector.blobs.append(blob([2, 2], 3))
    with pytest.raises(WeightsError, match=r"blob 0: shape \(2, 2\) needs 4 values but 'data' holds 3"):
        io.blobprotovector_str_to_arraylist(vector.SerializeToString())


# ---------------------------------------------------------------- shapes whose count overflows int64

@pytest.mark.parametrize("layer, message", [
    ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4294967296 dim: 4294967296 dim: 3 } } }',
     r"layer 'in': input_param.shape \(4294967296, 4294967296, 3\) has 55340232221128654848"),
    ('layer { name: "d" type: "DummyData" top: "x" dummy_data_param { shape { dim: 4294967296 dim: 4294967296 '
     'dim: 3 } } }',
     r"layer 'd': dummy_data_param shape of top 0 \(4294967296, 4294967296, 3\) has 55340232221128654848"),
    ('layer { name: "p" type: "Parameter" top: "x" parameter_param { shape { dim: 4294967296 dim: 4294967296 '
     'dim: 3 } } }', r"layer 'p': parameter_param.shape \(4294967296, 4294967296, 3\) has 55340232221128654848"),
])
def test_shapes_past_int64_are_refused_with_the_shape(write_file, layer, message):
    # In int64 this count wraps to 0: `check` used to print OK and "0 bytes".
    path = write_file("net.prototxt", 'name: "huge"\n' + layer + "\n")
    with pytest.raises(ShapeError, match=message + r" elements, more than the 9223372036854775807"):
        minicaffe.Net(path, minicaffe.TEST)
    result = CliRunner().invoke(main, ["check", path])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "55340232221128654848 elements" in result.output


def test_blob_counts_are_python_ints():
    blob_ = minicaffe.Blob((2 ** 31, 2 ** 31))          # a shape only: nothing is allocated
    assert blob_.count == 2 ** 62 and type(blob_.count) is int and blob_.count_axes(0, 1) == 2 ** 31
    with pytest.raises(ShapeError, match=r"blob 'b': shape \(4294967296, 4294967296, 4294967296\) has"):
        minicaffe.Blob((2 ** 32,) * 3, name="b")


# ---------------------------------------------------------------- data cursors (solverstate data_cursor)

def memory_net(write_file):
    net = minicaffe.Net(write_file("mem.prototxt", '''name: "mem"
layer { name: "data" type: "MemoryData" top: "x" top: "l"
  memory_data_param { batch_size: 2 channels: 1 height: 1 width: 1 } }
'''), minicaffe.TRAIN)
    net.set_input_arrays(np.zeros((4, 1, 1, 1), np.float32), np.zeros(4, np.float32))
    return net


@pytest.mark.parametrize("state, message", [
    ({}, r"the saved data cursor has no 'position' \(it has \[\]\)"),
    ({"position": -1}, r"the saved data cursor's 'position' is -1; expected an integer in \[0, 4\)"),
    ({"position": 9}, r"the saved data cursor's 'position' is 9; expected an integer in \[0, 4\)"),
    ({"position": "0"}, r"the saved data cursor's 'position' is '0'; expected an integer"),
    ({"position": 10 ** 30}, r"the saved data cursor's 'position' is 1000000000000000000000000000000; expected"),
    ([1], r"the saved data cursor is \[1\], not an object"),
])
def test_a_data_cursor_that_minicaffe_did_not_write_names_the_layer_and_the_field(write_file, state, message):
    net = memory_net(write_file)
    with pytest.raises(DataError, match="layer 'data': " + message):
        net.layers[0].restore_cursor(state)


def test_source_cursors_are_checked_against_their_data(tmp_path):
    from minicaffe.data.sources import DatumSource, ImageListSource
    (tmp_path / "list.txt").write_text("a.png 0\nb.png 1\n")
    images = ImageListSource(str(tmp_path / "list.txt"), layer="img")
    with pytest.raises(DataError, match=r"layer 'img': the saved data cursor's 'position' is 2; expected an integer "
                                        r"in \[0, 2\)"):
        images.restore({"epoch": 0, "position": 2, "seed": None})
    with pytest.raises(DataError, match="layer 'img': the saved data cursor's 'seed' is -4"):
        images.restore({"epoch": 0, "position": 1, "seed": -4})
    pytest.importorskip("lmdb")
    records = DatumSource(str(tmp_path / "db"), "LMDB", layer="db")
    with pytest.raises(DataError, match="layer 'db': the saved data cursor's 'key' is 'zz', not a record key in hex"):
        records.restore({"epoch": 0, "position": 1, "key": "zz"})
    with pytest.raises(DataError, match="layer 'db': the saved data cursor's 'epoch' is None"):
        records.restore({"epoch": None, "position": 1, "key": None})


# ---------------------------------------------------------------- trust: loading never executes code

class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_weight_mean_and_state_files_never_executes_code(tmp_path, net, monkeypatch):
    """.caffemodel, .caffemodel.h5, .binaryproto, .solverstate and .solverstate.h5 are read as protobuf
    messages, numeric HDF5 datasets and JSON strings: a pickle in any of them is data, never run."""
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Payload(str(marker)))
    calls = []
    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, lambda *args, _name=name, **kwargs: calls.append(_name))
    real_np_load = np.load

    def np_load(*args, **kwargs):
        assert not kwargs.get("allow_pickle", False), "np.load with allow_pickle=True"
        return real_np_load(*args, **kwargs)
    monkeypatch.setattr(np, "load", np_load)

    model = str(tmp_path / "good.caffemodel")
    net.save(model)
    net.copy_from(model)
    (tmp_path / "pickle.caffemodel").write_bytes(payload)      # a pickle where a caffemodel should be
    with pytest.raises(MinicaffeError):
        net.copy_from(str(tmp_path / "pickle.caffemodel"))
    h5_good = str(tmp_path / "good.caffemodel.h5")
    net.save_hdf5(h5_good)
    net.copy_from(h5_good)
    h5_bad = h5_model(tmp_path, lambda h5: layer_group(h5).create_dataset("0", data=np.void(payload)))
    with pytest.raises(WeightsError, match="holds .* not real numbers"):
        net.copy_from(h5_bad)
    mean = write_proto(tmp_path / "mean.binaryproto", blob([1, 1, 2, 2], 4))
    io.read_binaryproto(mean)
    (tmp_path / "pickle.binaryproto").write_bytes(payload)
    with pytest.raises(MinicaffeError):
        io.read_binaryproto(str(tmp_path / "pickle.binaryproto"))
    for suffix, kind in ((".solverstate", "binary"), (".solverstate.h5", "HDF5")):
        param = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", type="SGD", display=0,
                                          snapshot_prefix=str(tmp_path / kind))
        param.net_param.CopyFrom(net.to_proto())
        param.snapshot_format = (caffe_pb2.SolverParameter.HDF5 if kind == "HDF5"
                                 else caffe_pb2.SolverParameter.BINARYPROTO)
        solver = minicaffe.Solver(param)
        _, state = solver.snapshot()
        solver.restore(state)
        if kind == "binary":
            bad = caffe_pb2.SolverState()
            bad.ParseFromString(open(state, "rb").read())
            bad.rng_state = payload.decode("latin-1")
            state = write_proto(tmp_path / f"pickle{suffix}", bad)
        else:
            with h5py.File(state, "r+") as h5:
                h5.attrs["minicaffe_rng_state"] = np.void(payload)
        with pytest.raises(WeightsError):
            solver.restore(state)
    assert not marker.exists() and calls == []
