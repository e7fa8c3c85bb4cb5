"""benchmarks/bench_inference.py: its deploy nets, and its PyTorch twin computes what minicaffe computes.

The twin test needs PyTorch (the ``bench`` extra) and skips without it; the benchmark itself is never run here.
"""

import importlib.util
import os

import numpy as np
import pytest

from minicaffe import TEST, Net
from minicaffe.proto.text import parse_net

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "bench_inference.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_inference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Every layer type the twin translates, with the geometry that trips translations: grouped and dilated
# convolution, Caffe's ceil rounding with padding, an AVE pooling whose last window lies past the input
# (Caffe keeps it, torch drops it), Caffe's LRN alpha, BatchNorm's scale factor, Scale with bias.
TINY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 9 dim: 11 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 pad: 2 dilation: 2 group: 2
    weight_filler { type: "xavier" } bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
  scale_param { bias_term: true filler { type: "uniform" min: 0.5 max: 1.5 }
    bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1"
  prelu_param { filler { type: "uniform" min: 0.1 max: 0.3 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
layer { name: "a" type: "Convolution" bottom: "norm1" top: "a"
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "b" type: "Convolution" bottom: "norm1" top: "b"
  convolution_param { num_output: 3 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 weight_filler { type: "xavier" } } }
layer { name: "relu_b" type: "ReLU" bottom: "b" top: "b" relu_param { negative_slope: 0.1 } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum"
  eltwise_param { operation: SUM coeff: 1 coeff: -0.5 } }
layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "sum" bottom: "prod" top: "max" eltwise_param { operation: MAX } }
layer { name: "cat" type: "Concat" bottom: "max" bottom: "a" top: "cat" }
layer { name: "pool2" type: "Pooling" bottom: "cat" top: "pool2" pooling_param { pool: AVE kernel_size: 1 stride: 3 } }
layer { name: "drop" type: "Dropout" bottom: "pool2" top: "pool2" }
layer { name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_torch_twin_equals_minicaffe_forward(bench):
    torch = pytest.importorskip("torch")
    net = Net(parse_net(TINY), TEST)
    rng = np.random.default_rng(0)
    mean, variance, factor = net.layer_dict["bn1"].blobs
    mean.data[...] = rng.normal(0, 0.1, mean.shape)
    variance.data[...] = rng.uniform(0.5, 1.5, variance.shape)
    factor.data[...] = 2.0
    data = rng.standard_normal(net.blobs["data"].shape).astype(np.float32)
    net.blobs["data"].data[...] = data
    net.forward()
    with torch.inference_mode():
        blobs = bench.torch_twin(net)(torch.from_numpy(data))
    assert tuple(blobs["pool2"].shape) == net.blobs["pool2"].shape       # the window past the input is kept
    for name in ("conv1", "pool1", "norm1", "cat", "pool2", "fc", "prob"):
        ours = net.blobs[name].data
        np.testing.assert_allclose(blobs[name].numpy(), ours, rtol=1e-4, atol=1e-5 * np.abs(ours).max(),
                                   err_msg=name)


def test_classic_deploy_keeps_only_the_last_classifier(bench):
    param, input_range = bench.deploy("googlenet", 3)
    types = {layer.type for layer in param.layer}
    assert not types & {"DummyData", "SoftmaxWithLoss", "Accuracy"}
    assert input_range == (-128.0, 128.0)
    net = Net(param, TEST, shape_inference=True)
    assert net.outputs == ["prob"]                  # the auxiliary classifiers are gone
    assert net.blobs["data"].shape == (3, 3, 224, 224)
    assert net.blobs["prob"].shape == (3, 1000)


@pytest.mark.parametrize("name, outputs", [("pnet", ["conv4-2", "prob1"]),
                                           ("rnet", ["conv5-2", "prob1"]),
                                           ("onet", ["fc6-2", "fc6-3", "prob1"])])
def test_mtcnn_nets_build(bench, name, outputs):
    param, _ = bench.deploy(name, 2)
    net = Net(param, TEST, shape_inference=True)
    assert net.outputs == outputs
    assert net.blobs["prob1"].shape[:2] == (2, 2)
