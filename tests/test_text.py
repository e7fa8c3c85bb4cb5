"""Reading .prototxt files: errors name file:line:column; legacy files are upgraded."""

import pytest

from minicaffe.errors import MinicaffeError, PrototxtError
from minicaffe.proto import caffe_pb2
from minicaffe.proto.text import parse_net, read_net, read_solver


def test_syntax_error_names_file_line_column(write_file):
    path = write_file("bad.prototxt", 'name: "n"\nlayer {\n  name: "a"\n  type "ReLU"\n}\n')
    with pytest.raises(PrototxtError) as info:
        read_net(path)
    err = info.value
    assert (err.path, err.line, err.column) == (path, 4, 8)
    assert str(err).startswith(f"{path}:4:8: ")
    assert "type \"ReLU\"" in str(err)                # the offending line is quoted


def test_unknown_field_names_field_and_position(write_file):
    path = write_file("typo.prototxt", 'layer {\n  name: "a"\n  type: "ReLU"\n  botom: "x"\n}\n')
    with pytest.raises(PrototxtError) as info:
        read_net(path)
    assert (info.value.line, info.value.column) == (4, 3)
    assert "botom" in str(info.value)
    assert 'Did you mean "bottom"?' in str(info.value)


def test_bad_enum_value(write_file):
    path = write_file("enum.prototxt", 'layer { name: "p" type: "Pooling" pooling_param { pool: MAXX } }\n')
    with pytest.raises(PrototxtError) as info:
        read_net(path)
    assert info.value.line == 1 and "MAXX" in str(info.value)


def test_missing_file_is_a_minicaffe_error(tmp_path):
    missing = str(tmp_path / "nope.prototxt")
    with pytest.raises(MinicaffeError, match="nope.prototxt: cannot read file"):
        read_net(missing)


def test_binary_file_as_prototxt(write_file):
    path = write_file("weights.caffemodel", caffe_pb2.NetParameter(name="x\xff").SerializeToString() + b"\x00\x9f\xff")
    with pytest.raises(PrototxtError, match="not UTF-8 text"):
        read_net(path)


def test_read_current_net_unchanged(write_file):
    text = 'name: "n"\nlayer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
    net = read_net(write_file("n.prototxt", text))
    assert net.name == "n" and [layer.type for layer in net.layer] == ["Input"]


def test_read_net_upgrades_v1_and_input_fields(write_file):
    text = ('input: "data" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4\n'
            'layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip" blobs_lr: 1 blobs_lr: 2 '
            'inner_product_param { num_output: 3 } }\n')
    net = read_net(write_file("v1.prototxt", text))
    assert not net.layers and not net.input
    assert [(layer.name, layer.type) for layer in net.layer] == [("input", "Input"), ("ip", "InnerProduct")]
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 2, 3, 4]
    assert [spec.lr_mult for spec in net.layer[1].param] == [1, 2]


def test_read_solver_upgrades_solver_type(write_file):
    solver = read_solver(write_file("s.prototxt", 'net: "n.prototxt"\nbase_lr: 0.1\nsolver_type: ADAGRAD\n'))
    assert solver.type == "AdaGrad" and not solver.HasField("solver_type")


def test_solver_error_position(write_file):
    path = write_file("s.prototxt", 'base_lr: 0.1\nlr_policy: step\n')
    with pytest.raises(PrototxtError) as info:
        read_solver(path)
    assert info.value.line == 2


def test_parse_net_from_string_names_source():
    with pytest.raises(PrototxtError, match=r"^<string>:1:"):
        parse_net("layer { nme: 'x' }")
