"""The classic architectures in examples/classic: BVLC Caffe's blob shapes, the published
parameter counts, and Forward + Backward at batch 1 for the small ones.

Expected shapes are BVLC Caffe's (its model zoo definitions run through Caffe's
shape rules, pooling rounded up); parameter counts are the published ones.
The big nets are built with shape inference only (`minicaffe check`: no blob
memory), so this file stays fast.
"""

import glob
import os
import runpy

import numpy as np
import pytest

import minicaffe
from minicaffe.check import check_net
from minicaffe.net import Net
from minicaffe.proto.text import read_net

from tests.conftest import EXAMPLES

HERE = os.path.join(EXAMPLES, "classic")
make_nets = runpy.run_path(os.path.join(HERE, "make_nets.py"), run_name="make_nets")


def path(name):
    return os.path.join(HERE, name + ".prototxt")


@pytest.fixture(scope="module")
def checked():
    """Shapes-only nets (TEST phase, so the accuracy layers are there too), built once each."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = check_net(path(name), phase="TEST")
        return cache[name]
    return get


# --------------------------------------------------------------------------- the files

@pytest.mark.parametrize("name", sorted(make_nets["NETS"]))
def test_committed_prototxt_is_what_the_netspec_script_writes(name):
    with open(path(name)) as handle:
        assert handle.read() == make_nets["render"](name), (
            f"examples/classic/{name}.prototxt is stale: run .venv/bin/python examples/classic/make_nets.py")


def test_every_prototxt_here_comes_from_the_script():
    files = {os.path.basename(p)[:-len(".prototxt")] for p in glob.glob(os.path.join(HERE, "*.prototxt"))}
    assert files == set(make_nets["NETS"])


# --------------------------------------------------------------------------- BVLC Caffe's shapes

# (net, blob, shape without the batch axis). Inputs: CaffeNet and SqueezeNet 227x227, the others 224x224.
KEY_SHAPES = [
    ("lenet", "conv1", (20, 24, 24)), ("lenet", "pool2", (50, 4, 4)), ("lenet", "ip2", (10,)),
    ("cifar10_quick", "pool1", (32, 16, 16)), ("cifar10_quick", "pool3", (64, 4, 4)),
    ("cifar10_full", "norm2", (32, 8, 8)), ("cifar10_full", "pool3", (64, 4, 4)), ("cifar10_full", "ip1", (10,)),
    ("caffenet", "conv1", (96, 55, 55)), ("caffenet", "pool1", (96, 27, 27)), ("caffenet", "conv2", (256, 27, 27)),
    ("caffenet", "pool2", (256, 13, 13)), ("caffenet", "conv5", (256, 13, 13)), ("caffenet", "pool5", (256, 6, 6)),
    ("caffenet", "fc6", (4096,)), ("caffenet", "fc8", (1000,)),
    ("vgg16", "conv1_2", (64, 224, 224)), ("vgg16", "pool3", (256, 28, 28)), ("vgg16", "conv5_3", (512, 14, 14)),
    ("vgg16", "pool5", (512, 7, 7)), ("vgg16", "fc7", (4096,)),
    ("googlenet", "conv1/7x7_s2", (64, 112, 112)), ("googlenet", "pool1/3x3_s2", (64, 56, 56)),
    ("googlenet", "pool2/3x3_s2", (192, 28, 28)), ("googlenet", "inception_3a/output", (256, 28, 28)),
    ("googlenet", "inception_3b/output", (480, 28, 28)), ("googlenet", "inception_4a/output", (512, 14, 14)),
    ("googlenet", "inception_4d/output", (528, 14, 14)), ("googlenet", "inception_4e/output", (832, 14, 14)),
    ("googlenet", "pool4/3x3_s2", (832, 7, 7)), ("googlenet", "inception_5b/output", (1024, 7, 7)),
    ("googlenet", "pool5/7x7_s1", (1024, 1, 1)), ("googlenet", "loss3/classifier", (1000,)),
    ("googlenet", "loss1/ave_pool", (512, 4, 4)), ("googlenet", "loss1/conv", (128, 4, 4)),
    ("googlenet", "loss2/ave_pool", (528, 4, 4)), ("googlenet", "loss2/fc", (1024,)),
    ("resnet50", "conv1", (64, 112, 112)), ("resnet50", "pool1", (64, 56, 56)), ("resnet50", "res2c", (256, 56, 56)),
    ("resnet50", "res3a_branch2a", (128, 28, 28)), ("resnet50", "res3d", (512, 28, 28)),
    ("resnet50", "res4f", (1024, 14, 14)), ("resnet50", "res5c", (2048, 7, 7)), ("resnet50", "pool5", (2048, 1, 1)),
    ("resnet50", "fc1000", (1000,)),
    ("squeezenet_v1.1", "conv1", (64, 113, 113)), ("squeezenet_v1.1", "pool1", (64, 56, 56)),
    ("squeezenet_v1.1", "fire3/concat", (128, 56, 56)), ("squeezenet_v1.1", "pool3", (128, 28, 28)),
    ("squeezenet_v1.1", "pool5", (256, 14, 14)), ("squeezenet_v1.1", "fire9/concat", (512, 14, 14)),
    ("squeezenet_v1.1", "conv10", (1000, 14, 14)), ("squeezenet_v1.1", "pool10", (1000, 1, 1)),
    ("mobilenet", "conv1", (32, 112, 112)), ("mobilenet", "conv2_2/dw", (64, 56, 56)),
    ("mobilenet", "conv3_2/sep", (256, 28, 28)), ("mobilenet", "conv4_2/sep", (512, 14, 14)),
    ("mobilenet", "conv5_5/sep", (512, 14, 14)), ("mobilenet", "conv5_6/dw", (512, 7, 7)),
    ("mobilenet", "conv5_6/sep", (1024, 7, 7)), ("mobilenet", "conv6/sep", (1024, 7, 7)),
    ("mobilenet", "pool6", (1024, 1, 1)), ("mobilenet", "fc7", (1000, 1, 1)),
    ("fcn32s", "pool5", (512, 22, 22)), ("fcn32s", "fc7", (4096, 16, 16)), ("fcn32s", "score_fr", (21, 16, 16)),
    ("fcn32s", "upscore", (21, 544, 544)), ("fcn32s", "score", (21, 500, 500)),
]


@pytest.mark.parametrize("name, blob, shape", KEY_SHAPES, ids=[f"{n}:{b}" for n, b, _ in KEY_SHAPES])
def test_key_blob_shapes_match_bvlc_caffe(checked, name, blob, shape):
    net = checked(name)
    assert tuple(net.blobs[blob].shape[1:]) == shape


@pytest.mark.parametrize("name", ["caffenet", "vgg16", "googlenet", "resnet50", "squeezenet_v1.1", "mobilenet",
                                  "fcn32s"])
def test_imagenet_sized_nets_are_written_at_batch_1(checked, name):
    assert checked(name).blobs["data"].shape[0] == 1


def _count(net, layer_filter=lambda name, type_: True):
    return sum(blob.count for layer in net.layers if layer_filter(layer.name, layer.type) for blob in layer.blobs)


# Published sizes: LeNet and CIFAR-10 as BVLC's examples; CaffeNet (AlexNet in one tower)
# 60,965,224; VGG-16 138,357,544; GoogLeNet without its auxiliary classifiers 6,998,552 (BVLC's
# deploy net); ResNet-50 as He et al. released it 25,610,269 (conv1 keeps a bias; 25,557,032 learned
# weights plus 53,237 BatchNorm statistics: 2 x 26,560 channels + 53 scale factors); SqueezeNet 1.1
# 1,235,496; MobileNet v1 4,231,976 learned (plus 2 x 10,944 BatchNorm statistics + 27 factors);
# FCN-32s: VGG-16's convolutions 14,714,688, fc6 as a 7x7 convolution 102,764,544, fc7 16,781,312,
# score_fr 86,037, the per-class bilinear upsampling 21 x 64 x 64.
PARAMETERS = {"lenet": 431_080, "cifar10_quick": 145_578, "cifar10_full": 89_578, "caffenet": 60_965_224,
              "vgg16": 138_357_544, "resnet50": 25_610_269, "squeezenet_v1.1": 1_235_496,
              "mobilenet": 4_231_976 + 2 * 10_944 + 27,
              "fcn32s": 14_714_688 + 102_764_544 + 16_781_312 + 86_037 + 21 * 64 * 64}


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts(checked, name):
    assert _count(checked(name)) == PARAMETERS[name]


def test_googlenet_parameters_and_loss_weights(checked):
    net = checked("googlenet")
    assert _count(net, lambda name, _: not name.startswith(("loss1/", "loss2/"))) == 6_998_552
    weights = net.blob_loss_weights
    assert weights["loss1/loss1"] == pytest.approx(0.3)
    assert weights["loss2/loss2"] == pytest.approx(0.3)
    assert weights["loss3/loss3"] == 1
    layer = net.layer_dict["loss1/loss"]                 # BVLC's naming: layer loss1/loss, top loss1/loss1
    assert layer.type == "SoftmaxWithLoss"
    concats = [layer for layer in net.layers if layer.type == "Concat"]
    assert len(concats) == 9                             # nine inception modules


def test_resnet50_counts_and_batch_norm(checked):
    net = checked("resnet50")
    assert _count(net, lambda _, type_: type_ != "BatchNorm") == 25_557_032 + 64
    types = [layer.type for layer in net.layers]
    assert types.count("Convolution") == 53 and types.count("BatchNorm") == 53 and types.count("Scale") == 53
    assert types.count("Eltwise") == 16
    for i, layer in enumerate(net.layers):               # every convolution is followed by BatchNorm + Scale
        if layer.type == "Convolution":
            assert types[i + 1:i + 3] == ["BatchNorm", "Scale"], layer.name
            assert (len(layer.blobs) == 2) == (layer.name == "conv1"), layer.name
    batch_norm = net.layer_dict["bn2a_branch1"]
    assert [blob.shape for blob in batch_norm.blobs] == [(256,), (256,), (1,)]
    assert not any(batch_norm.param_propagate_down)      # statistics are not learned (lr_mult 0)


def test_mobilenet_uses_depthwise_convolutions(checked):
    net = checked("mobilenet")
    depthwise = [layer for layer in net.layers if layer.name.endswith("/dw") and layer.type == "Convolution"]
    assert len(depthwise) == 13
    for layer in depthwise:
        channels = layer.layer_param.convolution_param.num_output
        assert layer.layer_param.convolution_param.group == channels
        assert layer.blobs[0].shape == (channels, 1, 3, 3)
    assert _count(net, lambda _, type_: type_ != "BatchNorm") == 4_231_976


@pytest.mark.parametrize("height, width", [(500, 500), (375, 500), (224, 224), (1, 1), (33, 47)])
def test_fcn_scores_every_input_pixel(height, width):
    net = check_net(path("fcn32s"), phase="TRAIN",
                    input_shapes={"data": [1, 3, height, width], "label": [1, 1, height, width]})
    assert net.blobs["score"].shape == (1, 21, height, width)


def test_fcn_upsampling_is_a_fixed_bilinear_deconvolution():
    net_param = read_net(path("fcn32s"))
    layers = {layer.name: layer for layer in net_param.layer}
    up = layers["upscore"]
    assert up.type == "Deconvolution"
    assert up.convolution_param.weight_filler.type == "bilinear"
    assert up.param[0].lr_mult == 0 and not up.convolution_param.bias_term
    assert layers["score"].type == "Crop" and layers["score"].crop_param.offset == [19]
    assert layers["loss"].loss_param.ignore_label == 255
    net = check_net(path("fcn32s"), phase="TRAIN")
    assert net.layer_dict["upscore"].param_propagate_down == [False]
    assert net.layer_dict["upscore"].blobs[0].shape == (21, 1, 64, 64)   # one kernel per class (group 21)


# --------------------------------------------------------------------------- running them

def _at_batch_1(name, image_size=None):
    net_param = read_net(path(name))
    for layer in net_param.layer:
        if layer.type == "DummyData":
            for shape in layer.dummy_data_param.shape:
                shape.dim[0] = 1
                if image_size is not None and len(shape.dim) == 4:
                    shape.dim[2] = shape.dim[3] = image_size
    return net_param


# MobileNet runs at 128x128 (one of its published resolutions) to keep the suite fast.
@pytest.mark.parametrize("name, image_size, last", [
    ("lenet", None, "ip2"), ("cifar10_quick", None, "ip2"), ("cifar10_full", None, "ip1"),
    ("squeezenet_v1.1", None, "pool10"), ("mobilenet", 128, "fc7"),
])
def test_small_nets_run_forward_and_backward_at_batch_1(name, image_size, last):
    minicaffe.set_random_seed(1)
    net = Net(_at_batch_1(name, image_size), minicaffe.TRAIN)
    outputs = net.forward()
    assert set(outputs) == {"loss"}
    loss = float(outputs["loss"])
    assert np.isfinite(loss) and loss > 0
    assert net.blobs[last].data.shape[:2] == (1, 10 if name in ("lenet", "cifar10_quick", "cifar10_full") else 1000)
    net.backward()
    first = next(layer for layer in net.layers if layer.type == "Convolution")
    assert np.abs(first.blobs[0].diff).sum() > 0          # the gradient reaches the first layer
    for layer in net.layers:
        for blob in layer.blobs:
            assert np.isfinite(blob.diff).all(), layer.name
