"""The minicaffe command: check and upgrade, one-line errors, --debug."""

import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from minicaffe import io
from minicaffe.cli import main
from minicaffe.errors import MinicaffeError
from minicaffe.proto import caffe_pb2
from minicaffe.proto.text import read_net, read_solver

from conftest import EXAMPLES

LENET = os.path.join(EXAMPLES, "lenet", "lenet_train_test.prototxt")
LENET_V1 = os.path.join(EXAMPLES, "legacy", "lenet_v1.prototxt")


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_check_prints_the_plan_per_phase():
    train = run("check", LENET)
    assert train.exit_code == 0, train.output
    assert "state: phase TRAIN, level 0" in train.output
    assert "accuracy" not in train.output                  # TEST-only layer
    assert re.search(r"loss\s+SoftmaxWithLoss\s+ip2, label -> loss\s+\[loss_weight 1\]", train.output)
    assert train.output.rstrip().endswith("OK")
    test = run("check", LENET, "--phase", "test")
    assert test.exit_code == 0, test.output
    assert re.search(r"ip2_ip2_0_split\s+Split", test.output)
    assert "ip2 -> ip2_ip2_0_split_0, ip2_ip2_0_split_1" in test.output
    assert "ip1 -> ip1 (in place)" in test.output
    assert "outputs: accuracy, loss" in test.output


def test_check_stage_and_level(write_file):
    path = write_file("s.prototxt", 'layer { name: "in" type: "Input" top: "x" }\n'
                      'layer { name: "deploy_only" type: "ReLU" bottom: "x" top: "y" include { stage: "deploy" } }\n'
                      'layer { name: "deep" type: "ReLU" bottom: "x" top: "z" include { min_level: 2 } }\n')
    plain = run("check", path)
    assert "deploy_only" not in plain.output and "deep" not in plain.output
    staged = run("check", path, "--stage", "deploy", "--level", "2")
    assert "deploy_only" in staged.output and "deep" in staged.output
    assert "stages: deploy" in staged.output


def test_check_reads_legacy_nets():
    result = run("check", LENET_V1)
    assert result.exit_code == 0, result.output
    assert re.search(r"input\s+Input", result.output) and re.search(r"conv1\s+Convolution", result.output)


def test_check_shows_shared_params(write_file):
    path = write_file("share.prototxt", 'layer { name: "in" type: "Input" top: "x" }\n'
                      'layer { name: "a" type: "InnerProduct" bottom: "x" top: "ya" param { name: "w" } }\n'
                      'layer { name: "b" type: "InnerProduct" bottom: "x" top: "yb" param { name: "w" } }\n')
    result = run("check", path)
    assert "param 0 'w' shared with a[0]" in result.output


@pytest.mark.parametrize("content, expected", [
    ('layer {\n  name: "a"\n  botom: "x"\n}\n', r"bad.prototxt:3:3: .*botom"),
    ('layer { name: "a" type: "ReLU" bottom: "x" top: "y" }\n', r"layer 'a', blob 'x': bottom 0 'x' is not produced"),
])
def test_invalid_net_exits_1_with_one_line(write_file, content, expected):
    path = write_file("bad.prototxt", content)
    result = run("check", path)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minicaffe: error: ")
    assert re.search(expected, lines[0])


def test_debug_shows_the_exception(write_file):
    path = write_file("bad.prototxt", 'layer { name: "a" type: "ReLU" bottom: "x" top: "y" }\n')
    result = run("--debug", "check", path)
    assert result.exit_code == 1
    assert isinstance(result.exception, MinicaffeError)


def test_upgrade_v1_net(tmp_path):
    target = tmp_path / "lenet.prototxt"
    result = run("upgrade", LENET_V1, str(target))
    assert result.exit_code == 0, result.output
    assert "upgraded net" in result.output
    text = target.read_text()
    assert "layers {" not in text and "blobs_lr" not in text and 'type: "Convolution"' in text
    assert "lr_mult: 2" in text and "input_dim" not in text
    assert read_net(target) == read_net(LENET_V1)


def test_upgrade_current_net_says_so(tmp_path):
    result = run("upgrade", LENET, str(tmp_path / "same.prototxt"))
    assert result.exit_code == 0 and "already in the current net format" in result.output
    assert read_net(tmp_path / "same.prototxt") == read_net(LENET)


def test_upgrade_solver(write_file, tmp_path):
    source = write_file("solver.prototxt", 'net: "n.prototxt"\nbase_lr: 0.01\nsolver_type: NESTEROV\n')
    target = tmp_path / "new_solver.prototxt"
    result = run("upgrade", source, str(target))
    assert result.exit_code == 0, result.output
    assert "upgraded solver" in result.output
    assert 'type: "Nesterov"' in target.read_text() and "solver_type" not in target.read_text()
    assert read_solver(target).base_lr == pytest.approx(0.01)


def test_upgrade_binary_caffemodel(tmp_path):
    legacy = caffe_pb2.NetParameter(name="old")
    old = legacy.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    old.blobs.append(io.array_to_blobproto(np.arange(6, dtype=np.float32).reshape(2, 3)))
    source = tmp_path / "old.caffemodel"
    source.write_bytes(legacy.SerializeToString())
    target = tmp_path / "new.caffemodel"
    result = run("upgrade", str(source), str(target))
    assert result.exit_code == 0, result.output
    assert "upgraded caffemodel" in result.output
    net = io.read_caffemodel(target)
    assert not net.layers and net.layer[0].type == "InnerProduct"
    assert io.caffemodel_arrays(net)["ip"][0].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_upgrade_unparsable_file_reports_position(write_file, tmp_path):
    source = write_file("junk.prototxt", 'base_lr: 0.1\nlayer { name: "x" }\nwhat\n')
    result = run("upgrade", source, str(tmp_path / "out.prototxt"))
    assert result.exit_code == 1
    assert "junk.prototxt:" in result.output


def test_help_describes_commands():
    result = run("--help")
    assert result.exit_code == 0
    assert "check" in result.output and "upgrade" in result.output
    assert "Validate NET" in run("check", "--help").output
