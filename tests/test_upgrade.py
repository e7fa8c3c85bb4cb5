"""Legacy-format upgrades (minicaffe.proto.upgrade).

The V0 nets and their expected V1/current forms are BVLC Caffe's own upgrade
test cases (src/caffe/test/test_upgrade_proto.cpp): padding layers folded into
convolutions, every V0 field mapping, and CaffeNet taken from V0 to V1 to the
current format. Messages are compared as messages, not as text.
"""

import pytest
from google.protobuf import text_format

from minicaffe.errors import UpgradeError
from minicaffe.proto import caffe_pb2
from minicaffe.proto import upgrade as up


def net(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def solver(text):
    return text_format.Parse(text, caffe_pb2.SolverParameter())


def assert_same(actual, expected):
    # Compare messages; on failure show both as text for a readable diff.
    if actual != expected:
        assert text_format.MessageToString(actual) == text_format.MessageToString(expected)
    assert actual == expected


# ---------------------------------------------------------------------------
# BVLC's CaffeNet in V0 form, with padding layers, and its upgrades
# ---------------------------------------------------------------------------

_DATA_V0 = """
layers {
  layer { name: 'data' type: 'data'
          source: '/home/jiayq/Data/ILSVRC12/train-leveldb'
          meanfile: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto'
          batchsize: 256 cropsize: 227 mirror: true }
  top: 'data' top: 'label'
}
"""

# Per-blob multipliers every learned V0 layer of CaffeNet carries.
_LR_V0 = "blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0."


def _v0_conv(name, bottom, num_output, kernel, extra="", bias=0.0):
    return f"""
layers {{
  layer {{ name: '{name}' type: 'conv' num_output: {num_output} {extra} kernelsize: {kernel}
          weight_filler {{ type: 'gaussian' std: 0.01 }}
          bias_filler {{ type: 'constant' value: {bias} }}
          {_LR_V0} }}
  bottom: '{bottom}' top: '{name}'
}}
"""


def _v0_simple(name, type_, bottom, top, extra=""):
    layer = f"layer {{ name: '{name}' type: '{type_}' {extra} }}"
    return f"layers {{ {layer} bottom: '{bottom}' top: '{top}' }}\n"


def _v0_ip(name, bottom, num_output, std, bias):
    return f"""
layers {{
  layer {{ name: '{name}' type: 'innerproduct' num_output: {num_output}
          weight_filler {{ type: 'gaussian' std: {std} }}
          bias_filler {{ type: 'constant' value: {bias} }}
          {_LR_V0} }}
  bottom: '{bottom}' top: '{name}'
}}
"""


_LRN_V0 = "local_size: 5 alpha: 0.0001 beta: 0.75"
_POOL_V0 = "pool: MAX kernelsize: 3 stride: 2"
_LOSS_V0 = "layers { layer { name: 'loss' type: 'softmax_loss' } bottom: 'fc8' bottom: 'label' }\n"


def _caffenet_v0(padded):
    """CaffeNet in V0 form; with ``padded``, conv2..conv5 read padding layers."""

    def padding(name, bottom, pad):
        return _v0_simple(name, "padding", bottom, name, f"pad: {pad}") if padded else ""

    def conv(name, bottom, pad_name, num_output, kernel, group, bias, pad):
        extra = (f"group: {group} " if group else "") + ("" if padded else f"pad: {pad}")
        return _v0_conv(name, pad_name if padded else bottom, num_output, kernel, extra, bias)

    return (
        "name: 'CaffeNet'\n"
        + _DATA_V0
        + _v0_conv("conv1", "data", 96, 11, "stride: 4")
        + _v0_simple("relu1", "relu", "conv1", "conv1")
        + _v0_simple("pool1", "pool", "conv1", "pool1", _POOL_V0)
        + _v0_simple("norm1", "lrn", "pool1", "norm1", _LRN_V0)
        + padding("pad2", "norm1", 2)
        + conv("conv2", "norm1", "pad2", 256, 5, 2, 1.0, 2)
        + _v0_simple("relu2", "relu", "conv2", "conv2")
        + _v0_simple("pool2", "pool", "conv2", "pool2", _POOL_V0)
        + _v0_simple("norm2", "lrn", "pool2", "norm2", _LRN_V0)
        + padding("pad3", "norm2", 1)
        + conv("conv3", "norm2", "pad3", 384, 3, 0, 0.0, 1)
        + _v0_simple("relu3", "relu", "conv3", "conv3")
        + padding("pad4", "conv3", 1)
        + conv("conv4", "conv3", "pad4", 384, 3, 2, 1.0, 1)
        + _v0_simple("relu4", "relu", "conv4", "conv4")
        + padding("pad5", "conv4", 1)
        + conv("conv5", "conv4", "pad5", 256, 3, 2, 1.0, 1)
        + _v0_simple("relu5", "relu", "conv5", "conv5")
        + _v0_simple("pool5", "pool", "conv5", "pool5", _POOL_V0)
        + _v0_ip("fc6", "pool5", 4096, 0.005, 1.0)
        + _v0_simple("relu6", "relu", "fc6", "fc6")
        + _v0_simple("drop6", "dropout", "fc6", "fc6", "dropout_ratio: 0.5")
        + _v0_ip("fc7", "fc6", 4096, 0.005, 1.0)
        + _v0_simple("relu7", "relu", "fc7", "fc7")
        + _v0_simple("drop7", "dropout", "fc7", "fc7", "dropout_ratio: 0.5")
        + _v0_ip("fc8", "fc7", 1000, 0.01, 0)
        + _LOSS_V0
    )


# The V1 and current forms are written out in full, as in BVLC's test.
CAFFENET_V1 = """
name: 'CaffeNet'
layers {
  name: 'data' type: DATA
  data_param { source: '/home/jiayq/Data/ILSVRC12/train-leveldb' batch_size: 256 }
  transform_param { crop_size: 227 mirror: true
                    mean_file: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto' }
  top: 'data' top: 'label'
}
layers {
  name: 'conv1' type: CONVOLUTION
  convolution_param { num_output: 96 kernel_size: 11 stride: 4
    weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'constant' value: 0. } }
  blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  bottom: 'data' top: 'conv1'
}
layers { name: 'relu1' type: RELU bottom: 'conv1' top: 'conv1' }
layers { name: 'pool1' type: POOLING pooling_param { pool: MAX kernel_size: 3 stride: 2 }
         bottom: 'conv1' top: 'pool1' }
layers { name: 'norm1' type: LRN lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }
         bottom: 'pool1' top: 'norm1' }
layers {
  name: 'conv2' type: CONVOLUTION
  convolution_param { num_output: 256 group: 2 kernel_size: 5 pad: 2
    weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'constant' value: 1. } }
  blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  bottom: 'norm1' top: 'conv2'
}
layers { name: 'relu2' type: RELU bottom: 'conv2' top: 'conv2' }
layers { name: 'pool2' type: POOLING pooling_param { pool: MAX kernel_size: 3 stride: 2 }
         bottom: 'conv2' top: 'pool2' }
layers { name: 'norm2' type: LRN lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }
         bottom: 'pool2' top: 'norm2' }
layers {
  name: 'conv3' type: CONVOLUTION
  convolution_param { num_output: 384 kernel_size: 3 pad: 1
    weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'constant' value: 0. } }
  blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  bottom: 'norm2' top: 'conv3'
}
layers { name: 'relu3' type: RELU bottom: 'conv3' top: 'conv3' }
layers {
  name: 'conv4' type: CONVOLUTION
  convolution_param { num_output: 384 group: 2 kernel_size: 3 pad: 1
    weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'constant' value: 1. } }
  blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  bottom: 'conv3' top: 'conv4'
}
layers { name: 'relu4' type: RELU bottom: 'conv4' top: 'conv4' }
layers {
  name: 'conv5' type: CONVOLUTION
  convolution_param { num_output: 256 group: 2 kernel_size: 3 pad: 1
    weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'constant' value: 1. } }
  blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  bottom: 'conv4' top: 'conv5'
}
layers { name: 'relu5' type: RELU bottom: 'conv5' top: 'conv5' }
layers { name: 'pool5' type: POOLING pooling_param { kernel_size: 3 pool: MAX stride: 2 }
         bottom: 'conv5' top: 'pool5' }
layers {
  name: 'fc6' type: INNER_PRODUCT
  inner_product_param { num_output: 4096
    weight_filler { type: 'gaussian' std: 0.005 } bias_filler { type: 'constant' value: 1. } }
  blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  bottom: 'pool5' top: 'fc6'
}
layers { name: 'relu6' type: RELU bottom: 'fc6' top: 'fc6' }
layers { name: 'drop6' type: DROPOUT dropout_param { dropout_ratio: 0.5 } bottom: 'fc6' top: 'fc6' }
layers {
  name: 'fc7' type: INNER_PRODUCT
  inner_product_param { num_output: 4096
    weight_filler { type: 'gaussian' std: 0.005 } bias_filler { type: 'constant' value: 1. } }
  blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  bottom: 'fc6' top: 'fc7'
}
layers { name: 'relu7' type: RELU bottom: 'fc7' top: 'fc7' }
layers { name: 'drop7' type: DROPOUT dropout_param { dropout_ratio: 0.5 } bottom: 'fc7' top: 'fc7' }
layers {
  name: 'fc8' type: INNER_PRODUCT
  inner_product_param { num_output: 1000
    weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'constant' value: 0 } }
  blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  bottom: 'fc7' top: 'fc8'
}
layers { name: 'loss' type: SOFTMAX_LOSS bottom: 'fc8' bottom: 'label' }
"""

_PARAMS_V2 = "param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }"

CAFFENET_V2 = f"""
name: 'CaffeNet'
layer {{
  name: 'data' type: 'Data'
  data_param {{ source: '/home/jiayq/Data/ILSVRC12/train-leveldb' batch_size: 256 }}
  transform_param {{ crop_size: 227 mirror: true
                    mean_file: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto' }}
  top: 'data' top: 'label'
}}
layer {{
  name: 'conv1' type: 'Convolution'
  convolution_param {{ num_output: 96 kernel_size: 11 stride: 4
    weight_filler {{ type: 'gaussian' std: 0.01 }} bias_filler {{ type: 'constant' value: 0. }} }}
  {_PARAMS_V2}
  bottom: 'data' top: 'conv1'
}}
layer {{ name: 'relu1' type: 'ReLU' bottom: 'conv1' top: 'conv1' }}
layer {{ name: 'pool1' type: 'Pooling' pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }}
        bottom: 'conv1' top: 'pool1' }}
layer {{ name: 'norm1' type: 'LRN' lrn_param {{ local_size: 5 alpha: 0.0001 beta: 0.75 }}
        bottom: 'pool1' top: 'norm1' }}
layer {{
  name: 'conv2' type: 'Convolution'
  convolution_param {{ num_output: 256 group: 2 kernel_size: 5 pad: 2
    weight_filler {{ type: 'gaussian' std: 0.01 }} bias_filler {{ type: 'constant' value: 1. }} }}
  {_PARAMS_V2}
  bottom: 'norm1' top: 'conv2'
}}
layer {{ name: 'relu2' type: 'ReLU' bottom: 'conv2' top: 'conv2' }}
layer {{ name: 'pool2' type: 'Pooling' pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }}
        bottom: 'conv2' top: 'pool2' }}
layer {{ name: 'norm2' type: 'LRN' lrn_param {{ local_size: 5 alpha: 0.0001 beta: 0.75 }}
        bottom: 'pool2' top: 'norm2' }}
layer {{
  name: 'conv3' type: 'Convolution'
  convolution_param {{ num_output: 384 kernel_size: 3 pad: 1
    weight_filler {{ type: 'gaussian' std: 0.01 }} bias_filler {{ type: 'constant' value: 0. }} }}
  {_PARAMS_V2}
  bottom: 'norm2' top: 'conv3'
}}
layer {{ name: 'relu3' type: 'ReLU' bottom: 'conv3' top: 'conv3' }}
layer {{
  name: 'conv4' type: 'Convolution'
  convolution_param {{ num_output: 384 group: 2 kernel_size: 3 pad: 1
    weight_filler {{ type: 'gaussian' std: 0.01 }} bias_filler {{ type: 'constant' value: 1. }} }}
  {_PARAMS_V2}
  bottom: 'conv3' top: 'conv4'
}}
layer {{ name: 'relu4' type: 'ReLU' bottom: 'conv4' top: 'conv4' }}
layer {{
  name: 'conv5' type: 'Convolution'
  convolution_param {{ num_output: 256 group: 2 kernel_size: 3 pad: 1
    weight_filler {{ type: 'gaussian' std: 0.01 }} bias_filler {{ type: 'constant' value: 1. }} }}
  {_PARAMS_V2}
  bottom: 'conv4' top: 'conv5'
}}
layer {{ name: 'relu5' type: 'ReLU' bottom: 'conv5' top: 'conv5' }}
layer {{ name: 'pool5' type: 'Pooling' pooling_param {{ kernel_size: 3 pool: MAX stride: 2 }}
        bottom: 'conv5' top: 'pool5' }}
layer {{
  name: 'fc6' type: 'InnerProduct'
  inner_product_param {{ num_output: 4096
    weight_filler {{ type: 'gaussian' std: 0.005 }} bias_filler {{ type: 'constant' value: 1. }} }}
  {_PARAMS_V2}
  bottom: 'pool5' top: 'fc6'
}}
layer {{ name: 'relu6' type: 'ReLU' bottom: 'fc6' top: 'fc6' }}
layer {{ name: 'drop6' type: 'Dropout' dropout_param {{ dropout_ratio: 0.5 }}
        bottom: 'fc6' top: 'fc6' }}
layer {{
  name: 'fc7' type: 'InnerProduct'
  inner_product_param {{ num_output: 4096
    weight_filler {{ type: 'gaussian' std: 0.005 }} bias_filler {{ type: 'constant' value: 1. }} }}
  {_PARAMS_V2}
  bottom: 'fc6' top: 'fc7'
}}
layer {{ name: 'relu7' type: 'ReLU' bottom: 'fc7' top: 'fc7' }}
layer {{ name: 'drop7' type: 'Dropout' dropout_param {{ dropout_ratio: 0.5 }}
        bottom: 'fc7' top: 'fc7' }}
layer {{
  name: 'fc8' type: 'InnerProduct'
  inner_product_param {{ num_output: 1000
    weight_filler {{ type: 'gaussian' std: 0.01 }} bias_filler {{ type: 'constant' value: 0 }} }}
  {_PARAMS_V2}
  bottom: 'fc7' top: 'fc8'
}}
layer {{ name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc8' bottom: 'label' }}
"""


# ---------------------------------------------------------------------------
# Padding layers (UpgradeV0PaddingLayers)
# ---------------------------------------------------------------------------

def _run_padding_fold(v0_text, expected_text):
    actual = net(v0_text)
    assert up.fold_v0_padding_layers(actual, "t.prototxt") is True
    assert_same(actual, net(expected_text))
    # Folding again changes nothing.
    again = caffe_pb2.NetParameter()
    again.CopyFrom(actual)
    assert up.fold_v0_padding_layers(again, "t.prototxt") is False
    assert_same(again, actual)


_PAD1 = _v0_simple("pad1", "padding", "data", "pad1", "pad: 2")
_FC8_FROM_CONV1 = _v0_ip("fc8", "conv1", 1000, 0.01, 0)
_CONV1_FROM_PAD1 = _v0_conv("conv1", "pad1", 96, 11, "stride: 4")
_CONV1_PADDED = _v0_conv("conv1", "data", 96, 11, "stride: 4 pad: 2")


def test_padding_layer_folded_into_conv():
    v0 = ("name: 'CaffeNet'" + _DATA_V0 + _PAD1 + _CONV1_FROM_PAD1
          + _FC8_FROM_CONV1 + _LOSS_V0)
    expected = ("name: 'CaffeNet'" + _DATA_V0 + _CONV1_PADDED + _FC8_FROM_CONV1 + _LOSS_V0)
    _run_padding_fold(v0, expected)


def test_padding_layer_read_by_two_convs():
    v0 = ("name: 'CaffeNet'" + _DATA_V0 + _PAD1 + _CONV1_FROM_PAD1
          + _FC8_FROM_CONV1 + _v0_conv("conv2", "pad1", 96, 11, "stride: 4") + _LOSS_V0)
    expected = ("name: 'CaffeNet'" + _DATA_V0 + _CONV1_PADDED + _FC8_FROM_CONV1
                + _v0_conv("conv2", "data", 96, 11, "stride: 4 pad: 2") + _LOSS_V0)
    _run_padding_fold(v0, expected)


def test_padding_layers_of_caffenet_folded():
    _run_padding_fold(_caffenet_v0(padded=True), _caffenet_v0(padded=False))


def test_padding_layer_into_pooling():
    v0 = """
      input: 'data'
      layers { layer { name: 'pad' type: 'padding' pad: 1 } bottom: 'data' top: 'padded' }
      layers { layer { name: 'pool' type: 'pool' pool: MAX kernelsize: 3 stride: 2 }
               bottom: 'padded' top: 'pool' }
    """
    actual = net(v0)
    up.upgrade_v0_to_v1(actual, "t.prototxt")
    assert_same(actual, net("""
      input: 'data'
      layers { name: 'pool' type: POOLING
               pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }
               bottom: 'data' top: 'pool' }
    """))


@pytest.mark.parametrize("consumer", [
    "layer { name: 'fc' type: 'innerproduct' num_output: 10 } bottom: 'pad1' top: 'fc'",
    "layer { name: 'fc' type: 'relu' } bottom: 'pad1' top: 'fc'",
])
def test_padding_into_non_conv_layer_is_an_error(consumer):
    v0 = net(_DATA_V0 + _PAD1 + f"layers {{ {consumer} }}")
    with pytest.raises(UpgradeError) as info:
        up.upgrade_net(v0, "old.prototxt")
    message = str(info.value)
    assert "old.prototxt" in message and "'fc'" in message and "pad1" in message
    assert "neither 'conv' nor 'pool'" in message


def test_padding_into_conv_with_two_bottoms_is_an_error():
    v0 = net(_DATA_V0 + _PAD1 + """
      layers { layer { name: 'c' type: 'conv' num_output: 1 kernelsize: 1 }
               bottom: 'pad1' bottom: 'label' top: 'c' }""")
    with pytest.raises(UpgradeError, match=r"old.prototxt: layer 'c': .*2 bottoms"):
        up.upgrade_net(v0, "old.prototxt")


def test_padding_with_two_tops_is_an_error():
    v0 = net(_DATA_V0 + """
      layers { layer { name: 'p' type: 'padding' pad: 1 } bottom: 'data' top: 'a' top: 'b' }
      layers { layer { name: 'c' type: 'conv' num_output: 1 kernelsize: 1 }
               bottom: 'a' top: 'c' }""")
    with pytest.raises(UpgradeError, match=r"layer 'p': padding layer has 1 bottoms and 2 tops"):
        up.upgrade_net(v0, "old.prototxt")


def test_v0_bottom_from_nowhere_is_an_error():
    v0 = net("layers { layer { name: 'r' type: 'relu' } bottom: 'ghost' top: 'r' }")
    with pytest.raises(UpgradeError, match=r"old.prototxt: layer 'r': bottom 'ghost'"):
        up.upgrade_net(v0, "old.prototxt")


# ---------------------------------------------------------------------------
# V0 -> V1 -> current (UpgradeV0Net, UpgradeV1Net)
# ---------------------------------------------------------------------------

def test_v0_simple_net_to_v1_then_current():
    v0_text = ("name: 'CaffeNet'" + _DATA_V0 + _PAD1 + _CONV1_FROM_PAD1
               + _FC8_FROM_CONV1 + _LOSS_V0)
    v1_expected = net("""
      name: 'CaffeNet'
      layers { name: 'data' type: DATA
        data_param { source: '/home/jiayq/Data/ILSVRC12/train-leveldb' batch_size: 256 }
        transform_param { crop_size: 227 mirror: true
                          mean_file: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto' }
        top: 'data' top: 'label' }
      layers { name: 'conv1' type: CONVOLUTION
        convolution_param { num_output: 96 kernel_size: 11 stride: 4 pad: 2
          weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'constant' value: 0. } }
        blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
        bottom: 'data' top: 'conv1' }
      layers { name: 'fc8' type: INNER_PRODUCT
        inner_product_param { num_output: 1000
          weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'constant' value: 0 } }
        blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
        bottom: 'conv1' top: 'fc8' }
      layers { name: 'loss' type: SOFTMAX_LOSS bottom: 'fc8' bottom: 'label' }
    """)
    v2_expected = net(f"""
      name: 'CaffeNet'
      layer {{ name: 'data' type: 'Data'
        data_param {{ source: '/home/jiayq/Data/ILSVRC12/train-leveldb' batch_size: 256 }}
        transform_param {{ crop_size: 227 mirror: true
                          mean_file: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto' }}
        top: 'data' top: 'label' }}
      layer {{ name: 'conv1' type: 'Convolution'
        convolution_param {{ num_output: 96 kernel_size: 11 stride: 4 pad: 2
          weight_filler {{ type: 'gaussian' std: 0.01 }}
          bias_filler {{ type: 'constant' value: 0. }} }}
        {_PARAMS_V2}
        bottom: 'data' top: 'conv1' }}
      layer {{ name: 'fc8' type: 'InnerProduct'
        inner_product_param {{ num_output: 1000
          weight_filler {{ type: 'gaussian' std: 0.01 }}
          bias_filler {{ type: 'constant' value: 0 }} }}
        {_PARAMS_V2}
        bottom: 'conv1' top: 'fc8' }}
      layer {{ name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc8' bottom: 'label' }}
    """)
    staged = net(v0_text)
    up.upgrade_v0_to_v1(staged, "t")
    assert_same(staged, v1_expected)
    up.upgrade_v1_to_v2(staged, "t")
    assert_same(staged, v2_expected)

    whole = net(v0_text)
    assert up.upgrade_net(whole, "t") == [up.NOTE_V0, up.NOTE_V1]
    assert_same(whole, v2_expected)


def test_caffenet_v0_to_v1_to_current():
    v0 = net(_caffenet_v0(padded=True))
    up.upgrade_v0_to_v1(v0, "caffenet")
    assert_same(v0, net(CAFFENET_V1))

    v1 = net(CAFFENET_V1)
    up.upgrade_v1_to_v2(v1, "caffenet")
    assert_same(v1, net(CAFFENET_V2))

    whole = net(_caffenet_v0(padded=True))
    assert up.net_needs_upgrade(whole)
    up.upgrade_net(whole, "caffenet")
    assert_same(whole, net(CAFFENET_V2))
    assert not up.net_needs_upgrade(whole)


ALL_PARAMS_V0 = """
name: 'CaffeNet'
input: 'input_data'
input_dim: 64 input_dim: 3 input_dim: 32 input_dim: 32
layers {
  layer { name: 'data' type: 'data'
    source: '/home/jiayq/Data/ILSVRC12/train-leveldb'
    meanfile: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto'
    batchsize: 256 cropsize: 227 mirror: true scale: 0.25 rand_skip: 73 }
  top: 'data' top: 'label'
}
layers {
  layer { name: 'images' type: 'images'
    source: '/home/jiayq/Data/ILSVRC12/train-images'
    meanfile: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto'
    batchsize: 256 cropsize: 227 mirror: true scale: 0.25 rand_skip: 73
    shuffle_images: true new_height: 40 new_width: 30 }
  top: 'images_data' top: 'images_label'
}
layers {
  layer { name: 'window_data' type: 'window_data'
    source: '/home/jiayq/Data/ILSVRC12/train-leveldb'
    meanfile: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto'
    batchsize: 256 cropsize: 227 mirror: true
    det_fg_threshold: 0.25 det_bg_threshold: 0.75 det_fg_fraction: 0.5
    det_context_pad: 16 det_crop_mode: 'square' }
  top: 'window_data' top: 'window_label'
}
layers {
  layer { name: 'hdf5data' type: 'hdf5_data' source: '/my/hdf5/data' batchsize: 256 }
  top: 'hdf5data'
}
layers {
  layer { name: 'conv1' type: 'conv' num_output: 96 biasterm: false pad: 4 kernelsize: 11 stride: 4
    weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'constant' value: 3. }
    blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0. }
  bottom: 'data' top: 'conv1'
}
layers {
  layer { name: 'pool1ave' type: 'pool' pool: AVE kernelsize: 3 stride: 2 }
  bottom: 'conv1' top: 'pool1ave'
}
layers {
  layer { name: 'pool1stoch' type: 'pool' pool: STOCHASTIC kernelsize: 4 stride: 5 }
  bottom: 'conv1' top: 'pool1stoch'
}
layers {
  layer { name: 'concat' type: 'concat' concat_dim: 2 }
  bottom: 'pool1ave' bottom: 'pool1stoch' top: 'pool1concat'
}
layers {
  layer { name: 'norm1' type: 'lrn' local_size: 5 alpha: 0.0001 beta: 0.75 }
  bottom: 'pool1concat' top: 'norm1'
}
layers {
  layer { name: 'fc6' type: 'innerproduct' num_output: 4096 biasterm: false
    weight_filler { type: 'gaussian' std: 0.005 } bias_filler { type: 'constant' value: 1. }
    blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0. }
  bottom: 'norm1' top: 'fc6'
}
layers { layer { name: 'relu6' type: 'relu' } bottom: 'fc6' top: 'fc6' }
layers { layer { name: 'drop6' type: 'dropout' dropout_ratio: 0.2 } bottom: 'fc6' top: 'fc6' }
layers {
  layer { name: 'loss' type: 'infogain_loss' source: '/my/infogain/matrix' }
  bottom: 'fc6' bottom: 'label'
}
layers { layer { name: 'accuracy' type: 'accuracy' } }
layers { layer { name: 'bnll' type: 'bnll' } }
layers { layer { name: 'euclidean_loss' type: 'euclidean_loss' } }
layers { layer { name: 'flatten' type: 'flatten' } }
layers { layer { name: 'hdf5_output' type: 'hdf5_output'
                 hdf5_output_param { file_name: '/my/hdf5/output/file' } } }
layers { layer { name: 'im2col' type: 'im2col' } }
layers { layer { name: 'images' type: 'images' } }
layers { layer { name: 'multinomial_logistic_loss' type: 'multinomial_logistic_loss' } }
layers { layer { name: 'sigmoid' type: 'sigmoid' } }
layers { layer { name: 'softmax' type: 'softmax' } }
layers { layer { name: 'split' type: 'split' } }
layers { layer { name: 'tanh' type: 'tanh' } }
"""

ALL_PARAMS_V1 = """
name: 'CaffeNet'
input: 'input_data'
input_dim: 64 input_dim: 3 input_dim: 32 input_dim: 32
layers {
  name: 'data' type: DATA
  data_param { source: '/home/jiayq/Data/ILSVRC12/train-leveldb' batch_size: 256 rand_skip: 73 }
  transform_param { crop_size: 227 mirror: true scale: 0.25
                    mean_file: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto' }
  top: 'data' top: 'label'
}
layers {
  name: 'images' type: IMAGE_DATA
  image_data_param { source: '/home/jiayq/Data/ILSVRC12/train-images' batch_size: 256
                     rand_skip: 73 shuffle: true new_height: 40 new_width: 30 }
  transform_param { mean_file: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto'
                    crop_size: 227 mirror: true scale: 0.25 }
  top: 'images_data' top: 'images_label'
}
layers {
  name: 'window_data' type: WINDOW_DATA
  window_data_param { source: '/home/jiayq/Data/ILSVRC12/train-leveldb' batch_size: 256
                      fg_threshold: 0.25 bg_threshold: 0.75 fg_fraction: 0.5
                      context_pad: 16 crop_mode: 'square' }
  transform_param { mirror: true crop_size: 227
                    mean_file: '/home/jiayq/Data/ILSVRC12/image_mean.binaryproto' }
  top: 'window_data' top: 'window_label'
}
layers {
  name: 'hdf5data' type: HDF5_DATA
  hdf5_data_param { source: '/my/hdf5/data' batch_size: 256 }
  top: 'hdf5data'
}
layers {
  name: 'conv1' type: CONVOLUTION
  convolution_param { num_output: 96 bias_term: false pad: 4 kernel_size: 11 stride: 4
    weight_filler { type: 'gaussian' std: 0.01 } bias_filler { type: 'constant' value: 3. } }
  blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  bottom: 'data' top: 'conv1'
}
layers { name: 'pool1ave' type: POOLING pooling_param { pool: AVE kernel_size: 3 stride: 2 }
         bottom: 'conv1' top: 'pool1ave' }
layers { name: 'pool1stoch' type: POOLING
         pooling_param { pool: STOCHASTIC kernel_size: 4 stride: 5 }
         bottom: 'conv1' top: 'pool1stoch' }
layers { name: 'concat' type: CONCAT concat_param { concat_dim: 2 }
         bottom: 'pool1ave' bottom: 'pool1stoch' top: 'pool1concat' }
layers { name: 'norm1' type: LRN lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }
         bottom: 'pool1concat' top: 'norm1' }
layers {
  name: 'fc6' type: INNER_PRODUCT
  inner_product_param { num_output: 4096 bias_term: false
    weight_filler { type: 'gaussian' std: 0.005 } bias_filler { type: 'constant' value: 1. } }
  blobs_lr: 1. blobs_lr: 2. weight_decay: 1. weight_decay: 0.
  bottom: 'norm1' top: 'fc6'
}
layers { name: 'relu6' type: RELU bottom: 'fc6' top: 'fc6' }
layers { name: 'drop6' type: DROPOUT dropout_param { dropout_ratio: 0.2 } bottom: 'fc6' top: 'fc6' }
layers { name: 'loss' type: INFOGAIN_LOSS infogain_loss_param { source: '/my/infogain/matrix' }
         bottom: 'fc6' bottom: 'label' }
layers { name: 'accuracy' type: ACCURACY }
layers { name: 'bnll' type: BNLL }
layers { name: 'euclidean_loss' type: EUCLIDEAN_LOSS }
layers { name: 'flatten' type: FLATTEN }
layers { name: 'hdf5_output' type: HDF5_OUTPUT
         hdf5_output_param { file_name: '/my/hdf5/output/file' } }
layers { name: 'im2col' type: IM2COL }
layers { name: 'images' type: IMAGE_DATA }
layers { name: 'multinomial_logistic_loss' type: MULTINOMIAL_LOGISTIC_LOSS }
layers { name: 'sigmoid' type: SIGMOID }
layers { name: 'softmax' type: SOFTMAX }
layers { name: 'split' type: SPLIT }
layers { name: 'tanh' type: TANH }
"""


def test_v0_every_layer_type_and_field_mapping():
    actual = net(ALL_PARAMS_V0)
    up.upgrade_v0_to_v1(actual, "all")
    assert_same(actual, net(ALL_PARAMS_V1))


def test_v0_every_layer_type_all_the_way():
    actual = net(ALL_PARAMS_V0)
    notes = up.upgrade_net(actual, "all")
    assert notes == [up.NOTE_V0, up.NOTE_V1, up.NOTE_INPUT]
    assert [(layer.name, layer.type) for layer in actual.layer] == [
        ("input", "Input"), ("data", "Data"), ("images", "ImageData"),
        ("window_data", "WindowData"), ("hdf5data", "HDF5Data"), ("conv1", "Convolution"),
        ("pool1ave", "Pooling"), ("pool1stoch", "Pooling"), ("concat", "Concat"),
        ("norm1", "LRN"), ("fc6", "InnerProduct"), ("relu6", "ReLU"), ("drop6", "Dropout"),
        ("loss", "InfogainLoss"), ("accuracy", "Accuracy"), ("bnll", "BNLL"),
        ("euclidean_loss", "EuclideanLoss"), ("flatten", "Flatten"),
        ("hdf5_output", "HDF5Output"), ("im2col", "Im2col"), ("images", "ImageData"),
        ("multinomial_logistic_loss", "MultinomialLogisticLoss"), ("sigmoid", "Sigmoid"),
        ("softmax", "Softmax"), ("split", "Split"), ("tanh", "TanH"),
    ]
    assert_same(actual.layer[0], net("""
      layer { name: 'input' type: 'Input' top: 'input_data'
              input_param { shape { dim: 64 dim: 3 dim: 32 dim: 32 } } }""").layer[0])
    assert not actual.input and not actual.input_dim and not actual.layers


def test_v0_keeps_only_name_inputs_and_force_backward():
    v0 = net("""
      name: 'n' input: 'x' input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1
      force_backward: true debug_info: true state { phase: TEST }
      layers { layer { name: 'r' type: 'relu' } bottom: 'x' top: 'y' }""")
    up.upgrade_v0_to_v1(v0, "t")
    assert_same(v0, net("""
      name: 'n' input: 'x' input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1
      force_backward: true
      layers { name: 'r' type: RELU bottom: 'x' top: 'y' }"""))


def test_v0_layer_blobs_are_kept():
    v0 = net("""
      layers { layer { name: 'ip' type: 'innerproduct'
                       blobs { num: 1 channels: 1 height: 2 width: 3 data: [1, 2, 3, 4, 5, 6] }
                       blobs { num: 1 channels: 1 height: 1 width: 2 data: [7, 8] } } }""")
    up.upgrade_net(v0, "old.caffemodel")
    assert_same(v0, net("""
      layer { name: 'ip' type: 'InnerProduct'
              blobs { num: 1 channels: 1 height: 2 width: 3 data: [1, 2, 3, 4, 5, 6] }
              blobs { num: 1 channels: 1 height: 1 width: 2 data: [7, 8] } }"""))


def test_unknown_v0_layer_type_is_an_error():
    v0 = net("layers { layer { name: 'weird' type: 'warp_drive' } }")
    expected = r"old.prototxt: layer 'weird': unknown V0 layer type 'warp_drive'"
    with pytest.raises(UpgradeError, match=expected):
        up.upgrade_net(v0, "old.prototxt")


def test_v0_parameter_on_wrong_layer_type_is_an_error():
    v0 = net("layers { layer { name: 'r' type: 'relu' num_output: 3 } }")
    with pytest.raises(UpgradeError, match=r"layer 'r': V0 parameter 'num_output' does not apply"):
        up.upgrade_net(v0, "old.prototxt")


def test_layer_mixing_v0_and_v1_fields_is_an_error():
    mixed = net("""
      layers { name: 'c' type: CONVOLUTION convolution_param { num_output: 2 }
               layer { name: 'c' type: 'conv' num_output: 2 } }""")
    with pytest.raises(UpgradeError) as info:
        up.upgrade_net(mixed, "mixed.prototxt")
    assert "mixed.prototxt: layer 'c': mixes the V0 format" in str(info.value)
    assert "convolution_param" in str(info.value)


def test_v1_layer_inside_v0_net_is_an_error():
    mixed = net("""
      layers { layer { name: 'a' type: 'relu' } }
      layers { name: 'b' type: RELU }""")
    with pytest.raises(UpgradeError, match=r"mixed.prototxt: layer 'b': is a V1 layer in a V0 net"):
        up.upgrade_net(mixed, "mixed.prototxt")


def test_v1_layer_with_nested_v0_layer_is_an_error():
    v1 = net("layers { name: 'c' type: RELU layer { name: 'c' type: 'relu' } }")
    with pytest.raises(UpgradeError, match=r"layer 'c': has a nested V0"):
        up.upgrade_v1_to_v2(v1, "m.prototxt")


# ---------------------------------------------------------------------------
# V1 -> current details (UpgradeV1LayerParameter)
# ---------------------------------------------------------------------------

def test_v1_rules_loss_weight_and_param_specs():
    v1 = net("""
      name: 'n' force_backward: true
      layers {
        name: 'ip' type: INNER_PRODUCT bottom: 'x' top: 'y' top: 'z'
        include { phase: TRAIN } include { stage: 'a' min_level: 1 }
        exclude { not_stage: 'b' }
        param: 'w_shared' param: 'b_shared'
        blob_share_mode: PERMISSIVE blob_share_mode: STRICT
        blobs_lr: 1 blobs_lr: 2 blobs_lr: 3
        weight_decay: 0.5
        loss_weight: 1 loss_weight: 0.25
        inner_product_param { num_output: 10 }
      }""")
    assert up.upgrade_net(v1, "t") == [up.NOTE_V1]
    assert_same(v1, net("""
      name: 'n' force_backward: true
      layer {
        name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'y' top: 'z'
        include { phase: TRAIN } include { stage: 'a' min_level: 1 }
        exclude { not_stage: 'b' }
        param { name: 'w_shared' share_mode: PERMISSIVE lr_mult: 1 decay_mult: 0.5 }
        param { name: 'b_shared' share_mode: STRICT lr_mult: 2 }
        param { lr_mult: 3 }
        loss_weight: 1 loss_weight: 0.25
        inner_product_param { num_output: 10 }
      }"""))


# Every typed sub-message Caffe's UpgradeV1LayerParameter carries over.
V1_SUB_PARAMS = [
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param",
    "image_data_param", "infogain_loss_param", "inner_product_param", "lrn_param",
    "memory_data_param", "mvn_param", "pooling_param", "power_param", "relu_param",
    "sigmoid_param", "softmax_param", "slice_param", "tanh_param", "threshold_param",
    "window_data_param", "transform_param", "loss_param",
]


@pytest.mark.parametrize("field", V1_SUB_PARAMS)
def test_v1_every_sub_param_is_carried_over(field):
    v1 = caffe_pb2.NetParameter()
    entry = v1.layers.add(name="l")
    getattr(entry, field).SetInParent()
    up.upgrade_v1_to_v2(v1, "t")
    assert v1.layer[0].HasField(field)


def test_v1_sub_params_keep_their_contents():
    v1 = net("""
      layers { name: 'e' type: ELTWISE eltwise_param { operation: MAX } }
      layers { name: 'd' type: DUMMY_DATA dummy_data_param { shape { dim: 2 dim: 3 } } }
      layers { name: 's' type: SLICE slice_param { slice_dim: 1 slice_point: 2 } }
      layers { name: 'l' type: SOFTMAX_LOSS loss_param { ignore_label: 255 } }""")
    up.upgrade_net(v1, "t")
    assert_same(v1, net("""
      layer { name: 'e' type: 'Eltwise' eltwise_param { operation: MAX } }
      layer { name: 'd' type: 'DummyData' dummy_data_param { shape { dim: 2 dim: 3 } } }
      layer { name: 's' type: 'Slice' slice_param { slice_dim: 1 slice_point: 2 } }
      layer { name: 'l' type: 'SoftmaxWithLoss' loss_param { ignore_label: 255 } }"""))


# Caffe's V1 enum -> type string map, spelled out independently of the module.
V1_TYPE_NAMES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU",
    "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}


@pytest.mark.parametrize("enum_name", sorted(caffe_pb2.V1LayerParameter.LayerType.keys()))
def test_v1_enum_type_becomes_type_string(enum_name):
    v1 = net(f"layers {{ name: 'l' type: {enum_name} }}")
    up.upgrade_net(v1, "t")
    if enum_name == "NONE":
        assert_same(v1, net("layer { name: 'l' type: '' }"))  # set, but empty, as in Caffe
    else:
        assert_same(v1, net(f"layer {{ name: 'l' type: '{V1_TYPE_NAMES[enum_name]}' }}"))


def test_v1_layer_without_type_gets_none():
    v1 = net("layers { name: 'l' bottom: 'a' }")
    up.upgrade_net(v1, "t")
    assert_same(v1, net("layer { name: 'l' bottom: 'a' }"))
    assert not v1.layer[0].HasField("type")


def test_v1_and_current_layers_together_is_an_error():
    mixed = net("layers { name: 'a' type: RELU } layer { name: 'b' type: 'ReLU' }")
    with pytest.raises(UpgradeError, match=r"mixed.prototxt: the net has both V1 `layers` \(1\)"):
        up.upgrade_net(mixed, "mixed.prototxt")


def test_v1_caffemodel_blobs_are_kept():
    # What an old .caffemodel holds: names, types and weights; the input has no dims.
    model = net("""
      name: 'LeNet' input: 'data'
      layers { name: 'conv1' type: CONVOLUTION bottom: 'data' top: 'conv1'
               blobs { num: 2 channels: 1 height: 1 width: 2 data: [0.5, -1, 2, 3] }
               blobs { num: 1 channels: 1 height: 1 width: 2 data: [0.25, 0] } }
      layers { name: 'relu1' type: RELU bottom: 'conv1' top: 'conv1' }
      layers { name: 'ip' type: INNER_PRODUCT bottom: 'conv1' top: 'ip'
               blobs { shape { dim: 1 dim: 2 } double_data: [1.5, 2.5] } }""")
    binary = caffe_pb2.NetParameter()
    binary.ParseFromString(model.SerializeToString())
    notes = up.upgrade_net(binary, "lenet.caffemodel")
    assert notes == [up.NOTE_V1, up.NOTE_INPUT_DROPPED]
    assert_same(binary, net("""
      name: 'LeNet'
      layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1'
              blobs { num: 2 channels: 1 height: 1 width: 2 data: [0.5, -1, 2, 3] }
              blobs { num: 1 channels: 1 height: 1 width: 2 data: [0.25, 0] } }
      layer { name: 'relu1' type: 'ReLU' bottom: 'conv1' top: 'conv1' }
      layer { name: 'ip' type: 'InnerProduct' bottom: 'conv1' top: 'ip'
              blobs { shape { dim: 1 dim: 2 } double_data: [1.5, 2.5] } }"""))


# ---------------------------------------------------------------------------
# Data transformation fields (UpgradeNetDataTransformation)
# ---------------------------------------------------------------------------

def test_data_transformation_fields_move_to_transform_param():
    v1 = net("""
      layers { name: 'd' type: DATA top: 'data'
               data_param { source: 'db' batch_size: 8 scale: 0.5 mean_file: 'm.binaryproto'
                            crop_size: 20 mirror: true } }
      layers { name: 'i' type: IMAGE_DATA top: 'img'
               image_data_param { source: 'list.txt' scale: 2 mirror: false } }
      layers { name: 'w' type: WINDOW_DATA top: 'win'
               window_data_param { source: 'win.txt' crop_size: 10 } }
      layers { name: 'j' type: IMAGE_DATA top: 'img2' }
      layers { name: 'r' type: RELU bottom: 'data' top: 'data' }""")
    assert up.net_needs_data_upgrade(v1)
    up.upgrade_data_transformation(v1)
    # As in Caffe, every V1 data layer ends up with both sub-messages present.
    assert_same(v1, net("""
      layers { name: 'd' type: DATA top: 'data'
               data_param { source: 'db' batch_size: 8 }
               transform_param { scale: 0.5 mean_file: 'm.binaryproto'
                                 crop_size: 20 mirror: true } }
      layers { name: 'i' type: IMAGE_DATA top: 'img'
               image_data_param { source: 'list.txt' }
               transform_param { scale: 2 mirror: false } }
      layers { name: 'w' type: WINDOW_DATA top: 'win'
               window_data_param { source: 'win.txt' }
               transform_param { crop_size: 10 } }
      layers { name: 'j' type: IMAGE_DATA top: 'img2' image_data_param { } transform_param { } }
      layers { name: 'r' type: RELU bottom: 'data' top: 'data' }"""))
    assert not up.net_needs_data_upgrade(v1)


def test_data_transformation_then_v1_upgrade():
    v1 = net("""
      layers { name: 'd' type: DATA top: 'data' top: 'label'
               data_param { source: 'db' batch_size: 8 scale: 0.00390625 backend: LMDB }
               include { phase: TRAIN } }""")
    assert up.upgrade_net(v1, "t") == [up.NOTE_DATA, up.NOTE_V1]
    assert_same(v1, net("""
      layer { name: 'd' type: 'Data' top: 'data' top: 'label'
              data_param { source: 'db' batch_size: 8 backend: LMDB }
              transform_param { scale: 0.00390625 }
              include { phase: TRAIN } }"""))


def test_current_data_layer_fields_are_left_alone():
    # Caffe only upgrades these fields in V1 layers.
    current = net("layer { name: 'd' type: 'Data' data_param { source: 'db' scale: 0.5 } }")
    before = caffe_pb2.NetParameter()
    before.CopyFrom(current)
    assert up.upgrade_net(current, "t") == []
    assert_same(current, before)


# ---------------------------------------------------------------------------
# Net inputs (UpgradeNetInput)
# ---------------------------------------------------------------------------

def test_input_dim_becomes_leading_input_layer():
    legacy = net("""
      name: 'deploy'
      input: 'data' input_dim: 10 input_dim: 3 input_dim: 227 input_dim: 227
      input: 'rois' input_dim: 5 input_dim: 5 input_dim: 1 input_dim: 1
      layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1'
              convolution_param { num_output: 4 kernel_size: 3 } }""")
    assert up.net_needs_input_upgrade(legacy)
    assert up.upgrade_net(legacy, "deploy.prototxt") == [up.NOTE_INPUT]
    assert_same(legacy, net("""
      name: 'deploy'
      layer { name: 'input' type: 'Input' top: 'data' top: 'rois'
              input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 }
                            shape { dim: 5 dim: 5 dim: 1 dim: 1 } } }
      layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1'
              convolution_param { num_output: 4 kernel_size: 3 } }"""))


def test_input_shape_becomes_input_layer():
    legacy = net("""
      input: 'data' input_shape { dim: 1 dim: 3 dim: 4 dim: 5 }
      input: 'seq' input_shape { dim: 7 dim: 2 }
      layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' }""")
    up.upgrade_net(legacy, "t")
    assert_same(legacy, net("""
      layer { name: 'input' type: 'Input' top: 'data' top: 'seq'
              input_param { shape { dim: 1 dim: 3 dim: 4 dim: 5 } shape { dim: 7 dim: 2 } } }
      layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' }"""))


def test_input_shape_wins_over_input_dim():
    legacy = net("input: 'data' input_shape { dim: 2 dim: 3 } "
                 "input_dim: 9 input_dim: 9 input_dim: 9 input_dim: 9")
    up.upgrade_net(legacy, "t")
    assert_same(legacy, net("""
      layer { name: 'input' type: 'Input' top: 'data'
              input_param { shape { dim: 2 dim: 3 } } }"""))


def test_bare_input_is_dropped():
    legacy = net("""
      name: 'm' input: 'data'
      layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' }""")
    assert up.upgrade_net(legacy, "m.caffemodel") == [up.NOTE_INPUT_DROPPED]
    assert_same(legacy, net("name: 'm' layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' }"))


def test_v1_net_with_inputs_gets_input_layer_first():
    legacy = net("""
      input: 'data' input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2
      layers { name: 'r' type: RELU bottom: 'data' top: 'r' }""")
    assert up.upgrade_net(legacy, "t") == [up.NOTE_V1, up.NOTE_INPUT]
    assert [layer.type for layer in legacy.layer] == ["Input", "ReLU"]


@pytest.mark.parametrize("text, count", [
    ("input: 'a' input: 'b' input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4", "4 input_dim"),
    ("input: 'a' input_dim: 1 input_dim: 2 input_dim: 3", "3 input_dim"),
    ("input: 'a' input: 'b' input_shape { dim: 1 }", "1 input_shape"),
])
def test_input_count_mismatch_is_an_error(text, count):
    with pytest.raises(UpgradeError, match=rf"deploy.prototxt: .*{count}"):
        up.upgrade_net(net(text), "deploy.prototxt")


# ---------------------------------------------------------------------------
# BatchNorm (UpgradeNetBatchNorm)
# ---------------------------------------------------------------------------

def test_batch_norm_param_specs_are_zeroed_but_keep_names():
    legacy = net("""
      layer { name: 'bn0' type: 'BatchNorm' bottom: 'x' top: 'x'
              param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
      layer { name: 'bn1' type: 'BatchNorm' bottom: 'x' top: 'x'
              param { name: 'm' lr_mult: 1 decay_mult: 1 } param { name: 'v' lr_mult: 1 }
              param { name: 'f' share_mode: PERMISSIVE }
              batch_norm_param { use_global_stats: true } }
      layer { name: 'bn2' type: 'BatchNorm' bottom: 'x' top: 'x' }
      layer { name: 'bn3' type: 'BatchNorm' bottom: 'x' top: 'x' param { lr_mult: 1 } }
      layer { name: 'sc' type: 'Scale' bottom: 'x' top: 'x'
              param { lr_mult: 1 } param { lr_mult: 2 } param { lr_mult: 3 } }""")
    assert up.net_needs_batch_norm_upgrade(legacy)
    assert up.upgrade_net(legacy, "t") == [up.NOTE_BATCH_NORM]
    assert_same(legacy, net("""
      layer { name: 'bn0' type: 'BatchNorm' bottom: 'x' top: 'x'
              param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
              param { lr_mult: 0 decay_mult: 0 } }
      layer { name: 'bn1' type: 'BatchNorm' bottom: 'x' top: 'x'
              param { name: 'm' lr_mult: 0 decay_mult: 0 }
              param { name: 'v' lr_mult: 0 decay_mult: 0 }
              param { name: 'f' share_mode: PERMISSIVE lr_mult: 0 decay_mult: 0 }
              batch_norm_param { use_global_stats: true } }
      layer { name: 'bn2' type: 'BatchNorm' bottom: 'x' top: 'x' }
      layer { name: 'bn3' type: 'BatchNorm' bottom: 'x' top: 'x' param { lr_mult: 1 } }
      layer { name: 'sc' type: 'Scale' bottom: 'x' top: 'x'
              param { lr_mult: 1 } param { lr_mult: 2 } param { lr_mult: 3 } }"""))
    assert not up.net_needs_batch_norm_upgrade(legacy)


# ---------------------------------------------------------------------------
# Solver (UpgradeSolverType)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("enum_name, type_name", [
    ("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"),
    ("RMSPROP", "RMSProp"), ("ADADELTA", "AdaDelta"), ("ADAM", "Adam"),
])
def test_solver_type_enum_becomes_type_string(enum_name, type_name):
    legacy = solver(f"base_lr: 0.01 solver_type: {enum_name}")
    assert up.solver_needs_upgrade(legacy)
    assert up.upgrade_solver(legacy, "solver.prototxt") == [up.NOTE_SOLVER_TYPE]
    assert_same(legacy, solver(f"base_lr: 0.01 type: '{type_name}'"))
    assert not up.solver_needs_upgrade(legacy)


def test_every_solver_type_enum_value_is_mapped():
    assert set(up.SOLVER_TYPES) == set(caffe_pb2.SolverParameter.SolverType.keys())


def test_solver_type_and_contradicting_type_is_an_error():
    legacy = solver("solver_type: ADAM type: 'SGD'")
    with pytest.raises(UpgradeError) as info:
        up.upgrade_solver(legacy, "solver.prototxt")
    message = str(info.value)
    assert message.startswith("solver.prototxt: ")
    assert "ADAM" in message and '"SGD"' in message


def test_solver_type_and_agreeing_type_is_accepted():
    legacy = solver("solver_type: NESTEROV type: 'Nesterov'")
    assert up.upgrade_solver(legacy) == [up.NOTE_SOLVER_TYPE]
    assert_same(legacy, solver("type: 'Nesterov'"))


def test_current_solver_is_unchanged():
    current = solver("net: 'n.prototxt' type: 'Adam' base_lr: 0.001")
    before = caffe_pb2.SolverParameter()
    before.CopyFrom(current)
    assert up.upgrade_solver(current) == []
    assert_same(current, before)


# ---------------------------------------------------------------------------
# Already current; detection
# ---------------------------------------------------------------------------

def test_current_net_is_unchanged():
    current = net(CAFFENET_V2 + """
      layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 1 } } }
      layer { name: 'bn' type: 'BatchNorm' bottom: 'x' top: 'y'
              param { lr_mult: 0 } param { lr_mult: 0 } }""")
    before = caffe_pb2.NetParameter()
    before.CopyFrom(current)
    assert not up.net_needs_upgrade(current)
    assert up.upgrade_net(current, "current.prototxt") == []
    assert_same(current, before)


@pytest.mark.parametrize("text", [
    "layers { layer { name: 'r' type: 'relu' } }",
    "layers { name: 'r' type: RELU }",
    "input: 'data'",
    "layer { type: 'BatchNorm' param {} param {} param {} }",
])
def test_legacy_nets_need_upgrade(text):
    assert up.net_needs_upgrade(net(text))


def test_upgraded_net_needs_no_further_upgrade():
    for text in (ALL_PARAMS_V0, _caffenet_v0(padded=True), CAFFENET_V1):
        upgraded = net(text)
        up.upgrade_net(upgraded, "t")
        assert not up.net_needs_upgrade(upgraded)
        again = caffe_pb2.NetParameter()
        again.CopyFrom(upgraded)
        assert up.upgrade_net(again, "t") == []
        assert_same(again, upgraded)
