"""GPU mode end to end: device-query, --gpu, and nets mixing GPU and CPU layers."""

import numpy as np
import pytest
from click.testing import CliRunner

import minicaffe as caffe
import minicaffe.mode
from minicaffe.cli import main
from minicaffe.proto.text import parse_net

from ..layers.loss.reference import softmax_with_loss

MIXED = '''force_backward: true
layer { name: "x" type: "Input" top: "x" top: "label" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "score" inner_product_param { num_output: 5
  weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "score" top: "score" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" loss_weight: 0.5 }
layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy" include { phase: TEST } }
'''


def run_mixed(use_gpu, x, labels):
    caffe.set_random_seed(3)
    net = caffe.Net(parse_net(MIXED), caffe.TRAIN)
    (caffe.set_mode_gpu if use_gpu else caffe.set_mode_cpu)()
    try:
        out = net.forward(x=x, label=labels)
        net.backward()
        return float(out["loss"]), net.blobs["x"].diff.copy(), net.params["ip"][0].diff.copy()
    finally:
        caffe.set_mode_cpu()


def test_gpu_and_cpu_layers_in_one_net_agree_with_cpu_mode():
    rng = np.random.default_rng(4)
    x, labels = rng.standard_normal((4, 3)), np.array([0, 4, 2, 1])
    gpu_loss, gpu_x_diff, gpu_w_diff = run_mixed(True, x, labels)
    cpu_loss, cpu_x_diff, cpu_w_diff = run_mixed(False, x, labels)
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-5)
    np.testing.assert_allclose(gpu_x_diff, cpu_x_diff, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gpu_w_diff, cpu_w_diff, rtol=1e-4, atol=1e-7)


def test_device_query_lists_the_device():
    result = CliRunner().invoke(main, ["device-query"])
    assert result.exit_code == 0, result.output
    assert "Device id:                     0" in result.output
    assert "Major revision number:" in result.output
    missing = CliRunner().invoke(main, ["device-query", "--gpu", "3"])
    assert missing.exit_code == 1 and "device 3 does not exist" in missing.output


def test_forward_with_gpu_flag(tmp_path):
    path = tmp_path / "n.prototxt"
    path.write_text(MIXED.replace("force_backward: true\n", ""))
    result = CliRunner().invoke(main, ["forward", str(path), "--phase", "TRAIN", "--gpu", "0"])
    assert result.exit_code == 0, result.output
    assert "loss = " in result.output and "(* 0.5 = " in result.output
    assert caffe.mode.mode() == "gpu"
    caffe.set_mode_cpu()
