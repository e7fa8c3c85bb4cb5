"""The crashes the fuzz harness (tests/fuzz) found, each as the smallest input that escaped as a raw Python
exception, now a minicaffe error that names the file, the field and the bad value."""

import pytest

import minicaffe
from minicaffe import io
from minicaffe.check import check_net
from minicaffe.errors import ShapeError, WeightsError
from minicaffe.proto import caffe_pb2
from minicaffe.solvers.state import read_state

h5py = pytest.importorskip("h5py")

NET = '''name: "small"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 4
  weight_filler { type: "gaussian" std: 0.1 } } }
'''


@pytest.fixture
def net(write_file):
    return minicaffe.Net(write_file("net.prototxt", NET), minicaffe.TEST)


# ---------------------------------------------------------------- strings that are not UTF-8
# protobuf's parser hands a proto2 string field whose bytes are not UTF-8 back as bytes (no error), so a
# learned_net of b'a\xff' met `"\0" in state.learned_net` as bytes: TypeError.

def not_utf8(message, text):
    """``message`` serialized, with the string ``text`` in it made invalid UTF-8 (its last byte 0xFF)."""
    payload = message.SerializeToString()
    encoded = text.encode()
    assert payload.count(encoded) == 1
    return payload.replace(encoded, encoded[:-1] + b"\xff")


def test_a_solverstate_string_that_is_not_utf8_names_the_field(tmp_path):
    state = caffe_pb2.SolverState(iter=1, learned_net="model.caffemodel")
    path = tmp_path / "bad.solverstate"
    path.write_bytes(not_utf8(state, "model.caffemodel"))
    with pytest.raises(WeightsError, match=rf"^{path}: not a valid SolverState \(\.solverstate\): 'learned_net' is "
                                           r"not UTF-8 text: b'model\.caffemode\\xff'"):
        read_state(path)


def test_a_data_cursor_that_is_not_utf8_names_the_field(tmp_path):
    state = caffe_pb2.SolverState(iter=1)
    state.data_cursor.add(net="train", layer="data", state='{"epoch": 0}')
    path = tmp_path / "bad.solverstate"
    path.write_bytes(not_utf8(state, '{"epoch": 0}'))
    with pytest.raises(WeightsError, match=r"'data_cursor\[0\]\.state' is not UTF-8 text: b'\{\"epoch\": 0\\xff'"):
        read_state(path)


def test_a_caffemodel_layer_field_that_is_not_utf8_names_the_field(tmp_path, net):
    proto = net.to_proto()
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(not_utf8(proto, "ip"))      # layer 1's name
    message = rf"^{path}: not a valid binary NetParameter \(\.caffemodel\): 'layer\[1\]\.name' is not UTF-8 " \
              r"text: b'i\\xff'"
    with pytest.raises(WeightsError, match=message):
        net.copy_from(str(path))
    with pytest.raises(WeightsError, match=message):
        io.read_caffemodel(path)


# ---------------------------------------------------------------- shapes


def test_an_empty_shape_too_large_for_numpy_names_the_file_and_the_shape(tmp_path):
    # (2^31-1, 2^31-1, 0, 0) holds 0 elements, so the count check passed, but numpy refuses even an empty
    # array whose other dimensions multiply past 2^60: "ValueError: array is too big".
    blob = caffe_pb2.BlobProto(num=2 ** 31 - 1, channels=2 ** 31 - 1, height=0, width=0)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(WeightsError, match=rf"^{path}: blob: shape \(2147483647, 2147483647, 0, 0\) is empty \(a zero "
                                           r"dimension\), but its other dimensions multiply to 4611686014132420609"):
        io.read_binaryproto(path)


def test_an_empty_input_shape_too_large_for_numpy_names_the_field(write_file):
    path = write_file("net.prototxt", 'layer { name: "in" type: "Input" top: "x" '
                                      'input_param { shape { dim: 4294967296 dim: 4294967296 dim: 0 } } }')
    message = (r"^layer 'in': input_param\.shape \(4294967296, 4294967296, 0\) is empty \(a zero dimension\), but its "
               r"other dimensions multiply to 18446744073709551616")
    with pytest.raises(ShapeError, match=message):
        check_net(path, "TEST")
    with pytest.raises(ShapeError, match=message):
        minicaffe.Net(path, minicaffe.TEST)
