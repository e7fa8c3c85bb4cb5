#!/usr/bin/env python
"""Write the classic architectures in examples/classic/ with NetSpec, as pycaffe users do.

    .venv/bin/python examples/classic/make_nets.py           # (re)write every NAME.prototxt here
    .venv/bin/python examples/classic/make_nets.py --check   # exit 1 if a committed file differs

Each net is a training net whose data come from DummyData (random images,
label 0) or Input, so it builds and runs without a dataset: TRAIN has the
loss, TEST adds the accuracy layers. The architectures are the published
ones (BVLC Caffe's model zoo definitions, He et al.'s ResNet, Shelhamer et
al.'s FCN, Iandola et al.'s SqueezeNet, Howard et al.'s MobileNet); names of
layers and blobs follow the Caffe releases of each, so key blobs can be
compared with BVLC Caffe's shapes (tests/test_classic_nets.py).

The ImageNet-sized nets are written at batch 1; `minicaffe check NET` shows
their shapes without allocating memory, `minicaffe time NET` times them.
"""

from __future__ import annotations

import os
import sys

from minicaffe import TEST, NetSpec
from minicaffe import layers as L
from minicaffe import params as P

HERE = os.path.dirname(os.path.abspath(__file__))

# Caffe's usual learning-rate multipliers: weights 1 (decayed), biases 2 (not decayed).
WEIGHT_BIAS = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
TEST_ONLY = dict(phase=TEST)


def dummy_images(n, batch, shape, low, high):
    """``n.data`` (batch x shape, uniform in [low, high]) and ``n.label`` (batch, all 0)."""
    n.data, n.label = L.DummyData(
        shape=[dict(dim=[batch] + list(shape)), dict(dim=[batch])],
        data_filler=[dict(type="uniform", min=low, max=high), dict(type="constant", value=0)],
        ntop=2)


def conv(bottom, num_output, kernel_size, stride=1, pad=0, group=1, weight_filler=None, bias=0.0,
         bias_term=True, param=WEIGHT_BIAS):
    fields = dict(num_output=num_output, kernel_size=kernel_size,
                  weight_filler=weight_filler or dict(type="xavier"))
    if pad:
        fields["pad"] = pad
    if stride != 1:
        fields["stride"] = stride
    if group != 1:
        fields["group"] = group
    if bias_term:
        fields["bias_filler"] = dict(type="constant", value=bias)
    else:
        fields["bias_term"] = False
        param = param[:1]
    return L.Convolution(bottom, param=param, **fields)


def fc(bottom, num_output, weight_filler=None, bias=0.0):
    return L.InnerProduct(bottom, param=WEIGHT_BIAS, num_output=num_output,
                          weight_filler=weight_filler or dict(type="xavier"),
                          bias_filler=dict(type="constant", value=bias))


def max_pool(bottom, kernel_size, stride, pad=0):
    if pad:
        return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=kernel_size, stride=stride, pad=pad)
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=kernel_size, stride=stride)


def relu(bottom):
    return L.ReLU(bottom, in_place=True)


def gaussian(std):
    return dict(type="gaussian", std=std)


def classifier_outputs(n, scores, prefix="", top5=False):
    """Loss in every phase; accuracy (and top-5 accuracy) in TEST."""
    n[prefix + "accuracy"] = L.Accuracy(scores, n.label, include=TEST_ONLY)
    if top5:
        n[prefix + "accuracy_top5"] = L.Accuracy(scores, n.label, top_k=5, include=TEST_ONLY)
    n[prefix + "loss"] = L.SoftmaxWithLoss(scores, n.label)


# ----------------------------------------------------------------------------- small nets

def lenet(batch=64):
    """LeNet on 28x28 grey digits (BVLC's examples/mnist/lenet_train_test.prototxt)."""
    n = NetSpec()
    dummy_images(n, batch, (1, 28, 28), 0, 1)
    n.conv1 = L.Convolution(n.data, param=[dict(lr_mult=1), dict(lr_mult=2)], num_output=20, kernel_size=5,
                            weight_filler=dict(type="xavier"), bias_filler=dict(type="constant"))
    n.pool1 = max_pool(n.conv1, 2, 2)
    n.conv2 = L.Convolution(n.pool1, param=[dict(lr_mult=1), dict(lr_mult=2)], num_output=50, kernel_size=5,
                            weight_filler=dict(type="xavier"), bias_filler=dict(type="constant"))
    n.pool2 = max_pool(n.conv2, 2, 2)
    n.ip1 = L.InnerProduct(n.pool2, param=[dict(lr_mult=1), dict(lr_mult=2)], num_output=500,
                           weight_filler=dict(type="xavier"), bias_filler=dict(type="constant"))
    n.relu1 = relu(n.ip1)
    n.ip2 = L.InnerProduct(n.relu1, param=[dict(lr_mult=1), dict(lr_mult=2)], num_output=10,
                           weight_filler=dict(type="xavier"), bias_filler=dict(type="constant"))
    classifier_outputs(n, n.ip2)
    return n.to_proto(), "LeNet"


def cifar10_quick(batch=100):
    """CIFAR-10 "quick" (BVLC's examples/cifar10/cifar10_quick_train_test.prototxt)."""
    n = NetSpec()
    dummy_images(n, batch, (3, 32, 32), -128, 128)
    lr = [dict(lr_mult=1), dict(lr_mult=2)]
    n.conv1 = L.Convolution(n.data, param=lr, num_output=32, pad=2, kernel_size=5,
                            weight_filler=gaussian(0.0001), bias_filler=dict(type="constant"))
    n.pool1 = max_pool(n.conv1, 3, 2)
    n.relu1 = relu(n.pool1)
    n.conv2 = L.Convolution(n.relu1, param=lr, num_output=32, pad=2, kernel_size=5,
                            weight_filler=gaussian(0.01), bias_filler=dict(type="constant"))
    n.relu2 = relu(n.conv2)
    n.pool2 = L.Pooling(n.relu2, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.conv3 = L.Convolution(n.pool2, param=lr, num_output=64, pad=2, kernel_size=5,
                            weight_filler=gaussian(0.01), bias_filler=dict(type="constant"))
    n.relu3 = relu(n.conv3)
    n.pool3 = L.Pooling(n.relu3, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.ip1 = L.InnerProduct(n.pool3, param=lr, num_output=64, weight_filler=gaussian(0.1),
                           bias_filler=dict(type="constant"))
    n.ip2 = L.InnerProduct(n.ip1, param=lr, num_output=10, weight_filler=gaussian(0.1),
                           bias_filler=dict(type="constant"))
    classifier_outputs(n, n.ip2)
    return n.to_proto(), "CIFAR10_quick"


def cifar10_full(batch=100):
    """CIFAR-10 "full" (BVLC's examples/cifar10/cifar10_full_train_test.prototxt): adds LRN."""
    n = NetSpec()
    dummy_images(n, batch, (3, 32, 32), -128, 128)
    lr = [dict(lr_mult=1), dict(lr_mult=2)]
    lrn = dict(local_size=3, alpha=5e-05, beta=0.75, norm_region=P.LRN.WITHIN_CHANNEL)
    n.conv1 = L.Convolution(n.data, param=lr, num_output=32, pad=2, kernel_size=5,
                            weight_filler=gaussian(0.0001), bias_filler=dict(type="constant"))
    n.pool1 = max_pool(n.conv1, 3, 2)
    n.relu1 = relu(n.pool1)
    n.norm1 = L.LRN(n.relu1, **lrn)
    n.conv2 = L.Convolution(n.norm1, param=lr, num_output=32, pad=2, kernel_size=5,
                            weight_filler=gaussian(0.01), bias_filler=dict(type="constant"))
    n.relu2 = relu(n.conv2)
    n.pool2 = L.Pooling(n.relu2, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.norm2 = L.LRN(n.pool2, **lrn)
    n.conv3 = L.Convolution(n.norm2, num_output=64, pad=2, kernel_size=5,
                            weight_filler=gaussian(0.01), bias_filler=dict(type="constant"))
    n.relu3 = relu(n.conv3)
    n.pool3 = L.Pooling(n.relu3, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.ip1 = L.InnerProduct(n.pool3, param=[dict(lr_mult=1, decay_mult=250), dict(lr_mult=2, decay_mult=0)],
                           num_output=10, weight_filler=gaussian(0.01), bias_filler=dict(type="constant"))
    classifier_outputs(n, n.ip1)
    return n.to_proto(), "CIFAR10_full"


# ----------------------------------------------------------------------------- ImageNet nets

def caffenet(batch=1):
    """CaffeNet (BVLC's models/bvlc_reference_caffenet): AlexNet with pooling before LRN, 227x227."""
    n = NetSpec()
    dummy_images(n, batch, (3, 227, 227), -128, 128)
    lrn = dict(local_size=5, alpha=0.0001, beta=0.75)
    n.conv1 = conv(n.data, 96, 11, stride=4, weight_filler=gaussian(0.01))
    n.relu1 = relu(n.conv1)
    n.pool1 = max_pool(n.relu1, 3, 2)
    n.norm1 = L.LRN(n.pool1, **lrn)
    n.conv2 = conv(n.norm1, 256, 5, pad=2, group=2, weight_filler=gaussian(0.01), bias=1)
    n.relu2 = relu(n.conv2)
    n.pool2 = max_pool(n.relu2, 3, 2)
    n.norm2 = L.LRN(n.pool2, **lrn)
    n.conv3 = conv(n.norm2, 384, 3, pad=1, weight_filler=gaussian(0.01))
    n.relu3 = relu(n.conv3)
    n.conv4 = conv(n.relu3, 384, 3, pad=1, group=2, weight_filler=gaussian(0.01), bias=1)
    n.relu4 = relu(n.conv4)
    n.conv5 = conv(n.relu4, 256, 3, pad=1, group=2, weight_filler=gaussian(0.01), bias=1)
    n.relu5 = relu(n.conv5)
    n.pool5 = max_pool(n.relu5, 3, 2)
    n.fc6 = fc(n.pool5, 4096, gaussian(0.005), bias=1)
    n.relu6 = relu(n.fc6)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7 = fc(n.drop6, 4096, gaussian(0.005), bias=1)
    n.relu7 = relu(n.fc7)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.fc8 = fc(n.drop7, 1000, gaussian(0.01))
    classifier_outputs(n, n.fc8)
    return n.to_proto(), "CaffeNet"


def vgg_body(n, bottom, pad1=1):
    """VGG-16's 13 convolutions (3x3, pad 1) and 5 max pools; the first conv's pad is ``pad1``."""
    stages = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
    top = bottom
    for stage, (width, count) in enumerate(stages, start=1):
        for index in range(1, count + 1):
            pad = pad1 if (stage, index) == (1, 1) else 1
            n[f"conv{stage}_{index}"] = conv(top, width, 3, pad=pad)
            n[f"relu{stage}_{index}"] = top = relu(n[f"conv{stage}_{index}"])
        n[f"pool{stage}"] = top = max_pool(top, 2, 2)
    return top


def vgg16(batch=1):
    """VGG-16 (Simonyan and Zisserman's configuration D, as in their Caffe release), 224x224."""
    n = NetSpec()
    dummy_images(n, batch, (3, 224, 224), -128, 128)
    pool5 = vgg_body(n, n.data)
    n.fc6 = fc(pool5, 4096, gaussian(0.005), bias=0.1)
    n.relu6 = relu(n.fc6)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7 = fc(n.drop6, 4096, gaussian(0.005), bias=0.1)
    n.relu7 = relu(n.fc7)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.fc8 = fc(n.drop7, 1000, gaussian(0.01))
    classifier_outputs(n, n.fc8, top5=True)
    return n.to_proto(), "VGG_ILSVRC_16_layers"


# GoogLeNet's inception modules: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def inception(n, bottom, name):
    one, reduce3, three, reduce5, five, proj = INCEPTION[name]
    p = f"inception_{name}/"

    def branch(key, source, width, kernel_size, pad=0):
        n[p + key] = conv(source, width, kernel_size, pad=pad, bias=0.2)
        n[p + "relu_" + key] = relu(n[p + key])
        return n[p + "relu_" + key]

    b1 = branch("1x1", bottom, one, 1)
    b3 = branch("3x3", branch("3x3_reduce", bottom, reduce3, 1), three, 3, pad=1)
    b5 = branch("5x5", branch("5x5_reduce", bottom, reduce5, 1), five, 5, pad=2)
    n[p + "pool"] = max_pool(bottom, 3, 1, pad=1)
    bp = branch("pool_proj", n[p + "pool"], proj, 1)
    n[p + "output"] = L.Concat(b1, b3, b5, bp)
    return n[p + "output"]


def googlenet_aux(n, bottom, prefix):
    """An auxiliary classifier (loss1 after 4a, loss2 after 4d), its loss weighted 0.3."""
    n[prefix + "/ave_pool"] = L.Pooling(bottom, pool=P.Pooling.AVE, kernel_size=5, stride=3)
    n[prefix + "/conv"] = conv(n[prefix + "/ave_pool"], 128, 1, bias=0.2)
    n[prefix + "/relu_conv"] = relu(n[prefix + "/conv"])
    n[prefix + "/fc"] = fc(n[prefix + "/relu_conv"], 1024, bias=0.2)
    n[prefix + "/relu_fc"] = relu(n[prefix + "/fc"])
    n[prefix + "/drop_fc"] = L.Dropout(n[prefix + "/relu_fc"], dropout_ratio=0.7, in_place=True)
    n[prefix + "/classifier"] = fc(n[prefix + "/drop_fc"], 1000)
    scores = n[prefix + "/classifier"]
    # As in BVLC's file: layer "loss1/loss", top "loss1/loss1" (``name`` renames the layer).
    n[f"{prefix}/{prefix}"] = L.SoftmaxWithLoss(scores, n.label, loss_weight=0.3, name=prefix + "/loss")
    n[prefix + "/top-1"] = L.Accuracy(scores, n.label, include=TEST_ONLY)
    n[prefix + "/top-5"] = L.Accuracy(scores, n.label, top_k=5, include=TEST_ONLY)


def googlenet(batch=1):
    """GoogLeNet (BVLC's models/bvlc_googlenet), 224x224, with both auxiliary classifiers."""
    lrn = dict(local_size=5, alpha=0.0001, beta=0.75)
    n = NetSpec()
    dummy_images(n, batch, (3, 224, 224), -128, 128)
    n["conv1/7x7_s2"] = conv(n.data, 64, 7, stride=2, pad=3, bias=0.2)
    n["conv1/relu_7x7"] = relu(n["conv1/7x7_s2"])
    n["pool1/3x3_s2"] = max_pool(n["conv1/relu_7x7"], 3, 2)
    n["pool1/norm1"] = L.LRN(n["pool1/3x3_s2"], **lrn)
    n["conv2/3x3_reduce"] = conv(n["pool1/norm1"], 64, 1, bias=0.2)
    n["conv2/relu_3x3_reduce"] = relu(n["conv2/3x3_reduce"])
    n["conv2/3x3"] = conv(n["conv2/relu_3x3_reduce"], 192, 3, pad=1, bias=0.2)
    n["conv2/relu_3x3"] = relu(n["conv2/3x3"])
    n["conv2/norm2"] = L.LRN(n["conv2/relu_3x3"], **lrn)
    n["pool2/3x3_s2"] = max_pool(n["conv2/norm2"], 3, 2)
    top = inception(n, n["pool2/3x3_s2"], "3a")
    top = inception(n, top, "3b")
    n["pool3/3x3_s2"] = top = max_pool(top, 3, 2)
    top = inception(n, top, "4a")
    googlenet_aux(n, top, "loss1")
    for name in ("4b", "4c", "4d"):
        top = inception(n, top, name)
    googlenet_aux(n, top, "loss2")
    top = inception(n, top, "4e")
    n["pool4/3x3_s2"] = top = max_pool(top, 3, 2)
    top = inception(n, top, "5a")
    top = inception(n, top, "5b")
    n["pool5/7x7_s1"] = L.Pooling(top, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n["pool5/drop_7x7_s1"] = L.Dropout(n["pool5/7x7_s1"], dropout_ratio=0.4, in_place=True)
    n["loss3/classifier"] = fc(n["pool5/drop_7x7_s1"], 1000)
    scores = n["loss3/classifier"]
    n["loss3/loss3"] = L.SoftmaxWithLoss(scores, n.label, loss_weight=1)
    n["loss3/top-1"] = L.Accuracy(scores, n.label, include=TEST_ONLY)
    n["loss3/top-5"] = L.Accuracy(scores, n.label, top_k=5, include=TEST_ONLY)
    return n.to_proto(), "GoogleNet"


def conv_bn_scale(n, bottom, conv_name, bn_name, scale_name, num_output, kernel_size, stride=1, pad=0,
                  group=1, bias_term=False):
    """Convolution (without bias), BatchNorm and Scale (with bias) in place: the ResNet/MobileNet unit."""
    n[conv_name] = conv(bottom, num_output, kernel_size, stride=stride, pad=pad, group=group,
                        weight_filler=dict(type="msra"), bias_term=bias_term)
    n[bn_name] = L.BatchNorm(n[conv_name], in_place=True)
    n[scale_name] = L.Scale(n[bn_name], bias_term=True, in_place=True)
    return n[scale_name]


def resnet_unit(n, bottom, name, width, stride, project):
    """A bottleneck unit ``res{name}``: 1x1 (width), 3x3 (width), 1x1 (4 width), plus the shortcut."""
    def unit(branch, source, num_output, kernel_size, stride=1, pad=0):
        return conv_bn_scale(n, source, f"res{name}_{branch}", f"bn{name}_{branch}", f"scale{name}_{branch}",
                             num_output, kernel_size, stride=stride, pad=pad)

    shortcut = unit("branch1", bottom, 4 * width, 1, stride=stride) if project else bottom
    top = unit("branch2a", bottom, width, 1, stride=stride)
    n[f"res{name}_branch2a_relu"] = top = relu(top)
    top = unit("branch2b", top, width, 3, pad=1)
    n[f"res{name}_branch2b_relu"] = top = relu(top)
    top = unit("branch2c", top, 4 * width, 1)
    n[f"res{name}"] = L.Eltwise(shortcut, top)
    n[f"res{name}_relu"] = relu(n[f"res{name}"])
    return n[f"res{name}_relu"]


def resnet50(batch=1):
    """ResNet-50 (He et al., their Caffe release's layer names), BatchNorm + Scale, 224x224."""
    n = NetSpec()
    dummy_images(n, batch, (3, 224, 224), -128, 128)
    # conv1 keeps its bias, as in He et al.'s released net (so its caffemodel loads).
    top = conv_bn_scale(n, n.data, "conv1", "bn_conv1", "scale_conv1", 64, 7, stride=2, pad=3, bias_term=True)
    n.conv1_relu = relu(top)
    n.pool1 = top = max_pool(n.conv1_relu, 3, 2)
    for stage, width, blocks in ((2, 64, 3), (3, 128, 4), (4, 256, 6), (5, 512, 3)):
        for index in range(blocks):
            stride = 2 if index == 0 and stage > 2 else 1
            top = resnet_unit(n, top, f"{stage}{'abcdef'[index]}", width, stride, project=index == 0)
    n.pool5 = L.Pooling(top, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n.fc1000 = fc(n.pool5, 1000, dict(type="msra"))
    classifier_outputs(n, n.fc1000, top5=True)
    return n.to_proto(), "ResNet-50"


def fcn32s(height=500, width=500):
    """FCN-32s (Long, Shelhamer and Darrell): VGG-16 made fully convolutional, 32x upsampling.

    The input is padded by 100 so every size fits; the upsampled scores are
    cropped back to the input (offset 19) and scored per pixel, 255 ignored.
    """
    n = NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[1, 3, height, width]), dict(dim=[1, 1, height, width])], ntop=2)
    pool5 = vgg_body(n, n.data, pad1=100)
    n.fc6 = conv(pool5, 4096, 7)
    n.relu6 = relu(n.fc6)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7 = conv(n.drop6, 4096, 1)
    n.relu7 = relu(n.fc7)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.score_fr = conv(n.drop7, 21, 1, weight_filler=dict(type="constant"))
    # Bilinear upsampling, each class on its own (group 21), kept fixed (lr_mult 0).
    n.upscore = L.Deconvolution(n.score_fr, param=[dict(lr_mult=0)],
                                convolution_param=dict(num_output=21, group=21, kernel_size=64, stride=32,
                                                       bias_term=False, weight_filler=dict(type="bilinear")))
    n.score = L.Crop(n.upscore, n.data, axis=2, offset=19)
    n.loss = L.SoftmaxWithLoss(n.score, n.label, loss_param=dict(normalize=False, ignore_label=255))
    return n.to_proto(), "FCN-32s"


def fire(n, bottom, name, squeeze, expand):
    p = f"{name}/"
    n[p + "squeeze1x1"] = conv(bottom, squeeze, 1, param=[])
    n[p + "relu_squeeze1x1"] = relu(n[p + "squeeze1x1"])
    n[p + "expand1x1"] = conv(n[p + "relu_squeeze1x1"], expand, 1, param=[])
    n[p + "relu_expand1x1"] = relu(n[p + "expand1x1"])
    n[p + "expand3x3"] = conv(n[p + "relu_squeeze1x1"], expand, 3, pad=1, param=[])
    n[p + "relu_expand3x3"] = relu(n[p + "expand3x3"])
    n[p + "concat"] = L.Concat(n[p + "relu_expand1x1"], n[p + "relu_expand3x3"])
    return n[p + "concat"]


def squeezenet(batch=1):
    """SqueezeNet v1.1 (Iandola et al., forresti/SqueezeNet), 227x227."""
    n = NetSpec()
    dummy_images(n, batch, (3, 227, 227), -128, 128)
    n.conv1 = conv(n.data, 64, 3, stride=2, param=[])
    n.relu_conv1 = relu(n.conv1)
    n.pool1 = top = max_pool(n.relu_conv1, 3, 2)
    top = fire(n, top, "fire2", 16, 64)
    top = fire(n, top, "fire3", 16, 64)
    n.pool3 = top = max_pool(top, 3, 2)
    top = fire(n, top, "fire4", 32, 128)
    top = fire(n, top, "fire5", 32, 128)
    n.pool5 = top = max_pool(top, 3, 2)
    top = fire(n, top, "fire6", 48, 192)
    top = fire(n, top, "fire7", 48, 192)
    top = fire(n, top, "fire8", 64, 256)
    top = fire(n, top, "fire9", 64, 256)
    n.drop9 = L.Dropout(top, dropout_ratio=0.5, in_place=True)
    n.conv10 = conv(n.drop9, 1000, 1, weight_filler=dict(type="gaussian", mean=0.0, std=0.01), param=[])
    n.relu_conv10 = relu(n.conv10)
    n.pool10 = L.Pooling(n.relu_conv10, pool=P.Pooling.AVE, global_pooling=True)
    classifier_outputs(n, n.pool10, top5=True)
    return n.to_proto(), "SqueezeNet_v1.1"


# MobileNet v1's depthwise-separable blocks: name, output channels, stride of the depthwise conv.
MOBILENET_BLOCKS = [("2_1", 64, 1), ("2_2", 128, 2), ("3_1", 128, 1), ("3_2", 256, 2), ("4_1", 256, 1),
                    ("4_2", 512, 2), ("5_1", 512, 1), ("5_2", 512, 1), ("5_3", 512, 1), ("5_4", 512, 1),
                    ("5_5", 512, 1), ("5_6", 1024, 2), ("6", 1024, 1)]


def mobilenet(batch=1):
    """MobileNet v1 (Howard et al.; shicai/MobileNet-Caffe's names), depthwise convolutions as groups."""
    n = NetSpec()
    dummy_images(n, batch, (3, 224, 224), -2, 2)
    top = conv_bn_scale(n, n.data, "conv1", "conv1/bn", "conv1/scale", 32, 3, stride=2, pad=1)
    n.relu1 = top = relu(top)
    channels = 32
    for name, width, stride in MOBILENET_BLOCKS:
        # Depthwise: one 3x3 filter per channel (group = channels); then a 1x1 "separable" mix.
        top = conv_bn_scale(n, top, f"conv{name}/dw", f"conv{name}/dw/bn", f"conv{name}/dw/scale",
                            channels, 3, stride=stride, pad=1, group=channels)
        n[f"relu{name}/dw"] = top = relu(top)
        top = conv_bn_scale(n, top, f"conv{name}/sep", f"conv{name}/sep/bn", f"conv{name}/sep/scale",
                            width, 1)
        n[f"relu{name}/sep"] = top = relu(top)
        channels = width
    n.pool6 = L.Pooling(top, pool=P.Pooling.AVE, global_pooling=True)
    n.fc7 = conv(n.pool6, 1000, 1, weight_filler=dict(type="msra"))
    classifier_outputs(n, n.fc7, top5=True)
    return n.to_proto(), "MobileNet"


NETS = {
    "lenet": lenet,
    "cifar10_quick": cifar10_quick,
    "cifar10_full": cifar10_full,
    "caffenet": caffenet,
    "vgg16": vgg16,
    "googlenet": googlenet,
    "resnet50": resnet50,
    "fcn32s": fcn32s,
    "squeezenet_v1.1": squeezenet,
    "mobilenet": mobilenet,
}


def render(name) -> str:
    """The text of ``NAME.prototxt``: a header, then the NetParameter as prototxt."""
    proto, net_name = NETS[name]()
    proto.name = net_name
    summary = " ".join(NETS[name].__doc__.split("\n\n")[0].split())
    header = (f"# {summary}\n"
              "# Written by examples/classic/make_nets.py (NetSpec); edit the script, not this file.\n")
    return header + str(proto)


def path_of(name) -> str:
    return os.path.join(HERE, name + ".prototxt")


def main(argv) -> int:
    check = "--check" in argv
    stale = []
    for name in NETS:
        text = render(name)
        path = path_of(name)
        if check:
            with open(path) as handle:
                if handle.read() != text:
                    stale.append(path)
        else:
            with open(path, "w") as handle:
                handle.write(text)
            print("wrote", os.path.relpath(path))
    for path in stale:
        print("differs from make_nets.py's output:", os.path.relpath(path))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
