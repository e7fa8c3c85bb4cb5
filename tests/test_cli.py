"""The minicaffe command: check and upgrade, one-line errors, --debug."""

import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from minicaffe import io
from minicaffe.cli import main
from minicaffe.errors import MinicaffeError
from minicaffe.layer import Layer
from minicaffe.registry import register
from minicaffe.proto import caffe_pb2
from minicaffe.proto.text import read_net, read_solver

from tests.conftest import EXAMPLES

LENET = os.path.join(EXAMPLES, "lenet", "lenet_train_test.prototxt")
MLP = os.path.join(EXAMPLES, "mlp", "mlp_regression.prototxt")
MLP_V1 = os.path.join(EXAMPLES, "legacy", "mlp_v1.prototxt")


def run(*args):
    return CliRunner().invoke(main, list(args))


@register("MinicaffeTestDataShaped")
class _DataShaped(Layer):
    """A layer whose top shape depends on its bottom's values, like a data layer without its source."""
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape((int(bottom[0].data.max()) + 1, 3))

    def forward(self, bottom, top):
        top[0].data[...] = 0


def test_check_prints_shapes_params_and_backward_per_phase():
    train = run("check", MLP)
    assert train.exit_code == 0, train.output
    assert "state: phase TRAIN, level 0" in train.output
    assert re.search(r"data\s+DummyData\s+-> features \(32x16\), targets \(32x8\), zeros \(32x32\)", train.output)
    assert re.search(r"hidden\s+InnerProduct\s+features -> hidden \(32x32\)\s+\[params 544; backward\]", train.output)
    assert re.search(r"hidden_relu_0_split\s+Split\s+hidden -> hidden_relu_0_split_0 \(32x32\), "
                     r"hidden_relu_0_split_1 \(32x32\)", train.output)
    assert re.search(r"activity\s+EuclideanLoss.*-> activity \(scalar\)\s+\[backward; loss_weight 0.01\]",
                     train.output)
    assert "parameters: 808 in 4 blobs" in train.output
    assert train.output.rstrip().endswith("OK")
    test = run("check", MLP, "--phase", "test")
    assert test.exit_code == 0, test.output
    assert "state: phase TEST" in test.output
    assert "hidden -> hidden (in place) (32x32)" in test.output
    assert "outputs: activity (scalar), loss (scalar)" in test.output


def test_check_allocates_no_blob_memory(monkeypatch):
    import numpy
    allocations = []
    real_zeros = numpy.zeros
    monkeypatch.setattr(numpy, "zeros", lambda *a, **k: allocations.append(a) or real_zeros(*a, **k))
    result = run("check", MLP)
    assert result.exit_code == 0, result.output
    assert allocations == []


def test_check_input_shape_override(write_file):
    result = run("check", MLP_V1, "--input-shape", "data=2,1,4,4")
    assert result.exit_code == 0, result.output
    assert "inputs: data (2x1x4x4)" in result.output
    assert re.search(r"ip1\s+InnerProduct\s+data -> ip1 \(2x32\)\s+\[params 544", result.output)
    bad = run("check", MLP_V1, "--input-shape", "nope=1,2")
    assert bad.exit_code == 1 and "no Input layer produces 'nope'" in bad.output
    malformed = run("check", MLP_V1, "--input-shape", "data")
    assert malformed.exit_code == 2 and "NAME=D1,D2" in malformed.output


def test_check_unknown_shape_shows_question_marks(write_file):
    path = write_file("q.prototxt", 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
                      'layer { name: "probe" type: "MinicaffeTestDataShaped" bottom: "x" top: "y" }\n'
                      'layer { name: "ip" type: "InnerProduct" bottom: "y" top: "z" inner_product_param { num_output: 2 } }\n')
    result = run("check", path)
    assert result.exit_code == 0, result.output
    assert re.search(r"probe\s+MinicaffeTestDataShaped\s+x -> y \?", result.output)
    assert re.search(r"ip\s+InnerProduct\s+y -> z \?$", result.output, re.M)
    assert "not counting the layers with ? shapes" in result.output


def test_check_stage_and_level(write_file):
    path = write_file("s.prototxt", 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                      'layer { name: "deploy_only" type: "ReLU" bottom: "x" top: "y" include { stage: "deploy" } }\n'
                      'layer { name: "deep" type: "ReLU" bottom: "x" top: "z" include { min_level: 2 } }\n')
    plain = run("check", path)
    assert "deploy_only" not in plain.output and "deep" not in plain.output
    staged = run("check", path, "--stage", "deploy", "--level", "2")
    assert "deploy_only" in staged.output and "deep" in staged.output
    assert "stages: deploy" in staged.output


def test_check_reads_legacy_nets():
    result = run("check", MLP_V1)
    assert result.exit_code == 0, result.output
    assert re.search(r"input\s+Input\s+-> data \(10x1x8x8\)", result.output)
    assert re.search(r"prob\s+Softmax\s+ip2 -> prob \(10x10\)", result.output)


def test_check_unknown_type_names_the_nearest(write_file):
    path = write_file("t.prototxt", 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                      'layer { name: "act" type: "Sigmod" bottom: "x" top: "y" }\n')
    result = run("check", path)
    assert result.exit_code == 1
    assert "layer 'act': unknown layer type 'Sigmod'; did you mean 'Sigmoid'" in result.output


def test_check_shows_shared_params(write_file):
    path = write_file("share.prototxt", 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
                      'layer { name: "a" type: "InnerProduct" bottom: "x" top: "ya" param { name: "w" } '
                      'inner_product_param { num_output: 2 } }\n'
                      'layer { name: "b" type: "InnerProduct" bottom: "x" top: "yb" param { name: "w" } '
                      'inner_product_param { num_output: 2 } }\n')
    result = run("check", path)
    assert result.exit_code == 0, result.output
    assert "param 0 'w' shared with a[0]" in result.output
    assert "parameters: 10 in 3 blobs" in result.output     # w shared: 6 + 2 + 2


def test_forward_prints_caffe_style_losses():
    result = run("forward", MLP, "--phase", "TRAIN", "--iterations", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()      # stderr has the warning that the weights are the fillers'
    assert lines[0].startswith("Iteration 0, loss = ")
    activity = re.search(r"activity = ([\d.e+-]+) \(\* 0.01 = ([\d.e+-]+) loss\)", result.output)
    assert activity and float(activity.group(2)) == pytest.approx(0.01 * float(activity.group(1)), rel=1e-4)
    assert "Averages over 2 iterations:" in result.output
    assert lines[-1].startswith("Loss: ")


def test_forward_prints_summaries_of_larger_outputs(tmp_path):
    result = run("forward", MLP_V1)
    assert result.exit_code == 0, result.output
    assert re.search(r"prob: shape 10x10, mean 0.1, std", result.output)
    assert result.output.strip().splitlines()[-1] == "Loss: 0"


def test_forward_with_weights(tmp_path):
    from minicaffe import Net, TEST
    net = Net(MLP_V1, TEST)
    for blob in net.params["ip2"]:
        blob.data[...] = 0                                  # all scores equal: uniform probabilities
    weights = tmp_path / "w.caffemodel"
    net.save(weights)
    result = run("forward", MLP_V1, "--weights", str(weights))
    assert result.exit_code == 0, result.output
    assert re.search(r"prob: shape 10x10, mean 0.1, std [0-9.e-]+, min 0.1, max 0.1", result.output)
    assert float(re.search(r"std ([0-9.e-]+)", result.output).group(1)) < 1e-6


def test_layers_lists_known_types():
    result = run("layers")
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.strip().splitlines()]
    assert names == sorted(names) and {"InnerProduct", "ReLU", "Split", "EuclideanLoss"} <= set(names)


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
    result = run("upgrade", MLP_V1, str(target))
    assert result.exit_code == 0, result.output
    assert "upgraded net" in result.output
    text = target.read_text()
    assert "layers {" not in text and "blobs_lr" not in text
    assert "lr_mult: 2" in text and "input_dim" not in text and 'type: "InnerProduct"' in text
    assert read_net(target) == read_net(MLP_V1)


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
