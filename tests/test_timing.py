"""`minicaffe time` (minicaffe.timing): per-layer averages, pass totals, Caffe's report lines, the command."""

import re

import numpy as np
import pytest
from click.testing import CliRunner

from minicaffe.cli import main
from minicaffe.fillers import set_random_seed
from minicaffe.net import Net
from minicaffe.timing import report_lines, time_net

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 2 dim: 6 dim: 6 } shape { dim: 2 }
    data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.fixture
def net_path(write_file):
    return write_file("tiny.prototxt", NET)


def test_every_layer_is_timed_and_the_totals_hold_the_layers(net_path):
    net = Net(net_path, "TRAIN")
    report = time_net(net, iterations=3)
    assert [(layer.name, layer.type) for layer in report.layers] == [
        ("data", "DummyData"), ("conv", "Convolution"), ("relu", "ReLU"), ("ip", "InnerProduct"),
        ("loss", "SoftmaxWithLoss")]
    assert report.iterations == 3
    assert all(layer.forward_ms >= 0 and layer.backward_ms >= 0 for layer in report.layers)
    assert sum(layer.forward_ms for layer in report.layers) <= report.forward_ms + 1e-9
    assert sum(layer.backward_ms for layer in report.layers) <= report.backward_ms + 1e-9
    assert report.forward_ms + report.backward_ms <= report.forward_backward_ms + 1e-9
    assert report.total_ms == pytest.approx(3 * report.forward_backward_ms)
    assert report.initial_loss == pytest.approx(float(net.blobs["loss"].data))


def test_each_iteration_runs_forward_and_backward_once(net_path):
    """One untimed pass plus the timed ones: parameter gradients accumulate, as in `caffe time`."""
    set_random_seed(3)
    net = Net(net_path, "TRAIN")
    calls = []
    conv = net.layer_dict["conv"]
    original = conv.forward
    conv.forward = lambda bottom, top: (calls.append(1), original(bottom, top))
    net.forward()
    net.backward()
    single = [blob.diff.copy() for blob in conv.blobs]
    net.clear_param_diffs()
    calls.clear()
    time_net(net, iterations=4)
    assert len(calls) == 5
    for blob, once in zip(conv.blobs, single):
        assert np.abs(once).max() > 0
        np.testing.assert_allclose(blob.diff, 5 * once, rtol=1e-5)


def test_report_has_caffes_lines(net_path):
    report = time_net(Net(net_path, "TRAIN"), iterations=2)
    lines = list(report_lines(report))
    assert lines[0].startswith("Initial loss: ")
    assert lines[1:4] == ["*** Benchmark begins ***", "Testing for 2 iterations.", lines[3]]
    assert re.fullmatch(r"Iteration: 1 forward-backward time: [0-9.e+-]+ ms\.", lines[3])
    assert re.fullmatch(r"Iteration: 2 forward-backward time: [0-9.e+-]+ ms\.", lines[4])
    assert len(report.iteration_ms) == 2
    assert sum(report.iteration_ms) == pytest.approx(report.total_ms, rel=0.05)
    assert lines[5] == "Average time per layer: "
    per_layer = lines[6:6 + 2 * len(report.layers)]
    for layer, forward, backward in zip(report.layers, per_layer[::2], per_layer[1::2]):
        path = re.escape(f" [{layer.path}]") if layer.path else ""      # the convolution's path, after Caffe's line
        assert re.fullmatch(rf" {{{10 - len(layer.name)}}}{layer.name}\tforward: [0-9.e+-]+ ms\.{path}", forward)
        assert re.fullmatch(rf" {{{10 - len(layer.name)}}}{layer.name}\tbackward: [0-9.e+-]+ ms\.{path}", backward)
    assert [layer.path for layer in report.layers] == ["", "direct", "", "", ""]
    tail = lines[6 + 2 * len(report.layers):]
    assert [line.split(":")[0] for line in tail[:4]] == ["Average Forward pass", "Average Backward pass",
                                                          "Average Forward-Backward", "Total Time"]
    assert all(re.search(r": [0-9.e+-]+ ms\.$", line) for line in tail[:4])
    assert tail[4:] == ["*** Benchmark ends ***"]


def test_zero_iterations_is_refused(net_path):
    with pytest.raises(ValueError, match="at least 1"):
        time_net(Net(net_path, "TRAIN"), iterations=0)


def test_time_command(net_path):
    result = CliRunner().invoke(main, ["time", net_path, "--iterations", "2"])
    assert result.exit_code == 0, result.output
    assert "conv\tforward: " in result.output and "conv\tbackward: " in result.output
    assert re.search(r"conv\tforward: [0-9.e+-]+ ms\. \[direct\]\n", result.output)
    assert "Average Forward-Backward: " in result.output
    assert result.output.rstrip().endswith("*** Benchmark ends ***")
    test_phase = CliRunner().invoke(main, ["time", net_path, "--iterations", "1", "--phase", "TEST"])
    assert test_phase.exit_code == 0, test_phase.output
    assert "acc\tforward: " in test_phase.output
    refused = CliRunner().invoke(main, ["time", net_path, "--iterations", "0"])
    assert refused.exit_code == 2 and "--iterations" in refused.output
    missing = CliRunner().invoke(main, ["time", net_path + ".absent"])
    assert missing.exit_code == 1 and missing.output.startswith("minicaffe: error: ")


PATHS_NET = NET.replace('bottom: "conv" top: "conv" }', 'bottom: "dense" top: "dense" }').replace(
    'type: "InnerProduct" bottom: "conv"', 'type: "InnerProduct" bottom: "dense"').replace('layer { name: "relu"', '''
layer { name: "pw" type: "Convolution" bottom: "conv" top: "pw" convolution_param { num_output: 12 kernel_size: 1 } }
layer { name: "dense" type: "Convolution" bottom: "pw" top: "dense"
  convolution_param { num_output: 12 kernel_size: 2 } }
layer { name: "relu"''')


def test_each_convolution_shows_the_path_it_took(write_file, monkeypatch):
    """1x1, direct (few channels per group) and im2row layers; then the im2row path forced for every layer."""
    path = write_file("paths.prototxt", PATHS_NET)
    report = time_net(Net(path, "TRAIN"), iterations=1)
    paths = {layer.name: layer.path for layer in report.layers if layer.type == "Convolution"}
    assert paths == {"conv": "direct", "pw": "1x1", "dense": "im2row"}
    pw_lines = [line for line in report_lines(report) if line.lstrip().startswith("pw\t")]
    assert len(pw_lines) == 2 and all(line.endswith(" ms. [1x1]") for line in pw_lines)
    monkeypatch.setenv("MINICAFFE_CONV_PATH", "im2row")
    forced = time_net(Net(path, "TRAIN"), iterations=1)
    assert {layer.path for layer in forced.layers if layer.type == "Convolution"} == {"im2row"}
