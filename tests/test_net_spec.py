"""NetSpec, minicaffe.layers as L, minicaffe.params as P: pycaffe's net-writing API.

The nets here are pycaffe's own test nets (python/caffe/test/test_net_spec.py)
and small ones whose prototxt is written out by hand below.
"""

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import layers as L
from minicaffe import params as P
from minicaffe.proto import caffe_pb2
from minicaffe.proto.text import parse_net


def lenet(batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]), dict(dim=[batch_size, 1, 1, 1])],
                                  transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def anon_lenet(batch_size):
    data, label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]), dict(dim=[batch_size, 1, 1, 1])],
                              transform_param=dict(scale=1. / 255), ntop=2)
    conv1 = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    conv2 = L.Convolution(pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    pool2 = L.Pooling(conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool2, num_output=500, weight_filler=dict(type="xavier"))
    relu1 = L.ReLU(ip1, in_place=True)
    ip2 = L.InnerProduct(relu1, num_output=10, weight_filler=dict(type="xavier"))
    loss = L.SoftmaxWithLoss(ip2, label)
    return loss.to_proto()


def silent_net():
    n = caffe.NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    return n.to_proto()


def test_lenet_builds_with_the_assigned_names():
    proto = lenet(50)
    assert [layer.name for layer in proto.layer] == [
        "data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss"]
    assert [layer.type for layer in proto.layer] == [
        "DummyData", "Convolution", "Pooling", "Convolution", "Pooling", "InnerProduct", "ReLU",
        "InnerProduct", "SoftmaxWithLoss"]
    relu = proto.layer[6]
    assert list(relu.bottom) == list(relu.top) == ["ip1"]           # in place
    assert list(proto.layer[0].top) == ["data", "label"]
    assert list(proto.layer[-1].bottom) == ["ip2", "label"]
    assert proto.layer[1].convolution_param.kernel_size == [5]      # a lone value fills a repeated field
    assert proto.layer[0].transform_param.scale == pytest.approx(1 / 255)
    net = caffe.Net(proto, caffe.TEST)
    assert len(net.layers) == 9
    assert net.blobs["pool2"].data.shape == (50, 50, 4, 4)
    assert net.blobs["ip2"].data.shape == (50, 10)


def test_anonymous_lenet_gets_type_and_count_names():
    proto = anon_lenet(50)
    assert [layer.name for layer in proto.layer] == [
        "DummyData1", "Convolution1", "Pooling1", "Convolution2", "Pooling2", "InnerProduct1", "ReLU1",
        "InnerProduct2", "SoftmaxWithLoss1"]
    assert list(proto.layer[0].top) == ["DummyData1", "DummyData2"]
    relu = proto.layer[6]
    assert list(relu.bottom) == list(relu.top) == ["InnerProduct1"]
    assert list(proto.layer[-1].bottom) == ["InnerProduct2", "DummyData2"]
    net = caffe.Net(proto, caffe.TEST)
    assert len(net.layers) == 9
    assert float(net.forward()["SoftmaxWithLoss1"]) > 0


def test_layers_without_tops():
    proto = silent_net()
    assert [layer.name for layer in proto.layer] == ["data", "silence_data", "silence_data2"]
    assert list(proto.layer[1].top) == [] and list(proto.layer[1].bottom) == ["data"]
    assert list(proto.layer[0].dummy_data_param.shape[0].dim) == [3]
    net = caffe.Net(proto, caffe.TEST)
    assert len(net.forward()) == 0
    assert isinstance(L.Silence(L.Input(shape=dict(dim=[1])), ntop=0), caffe.net_spec.Function)


def test_an_input_that_is_not_a_top_is_a_type_error():
    data = L.DummyData(ntop=2)                  # a tuple of two Tops
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)                    # each element is a Top


def test_prototxt_text_is_exact():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1, bias_term=False,
                           param=dict(lr_mult=1, decay_mult=1), weight_filler=dict(type="msra"))
    n.pool = L.Pooling(n.conv, pool="AVE", global_pooling=True)
    n.loss = L.EuclideanLoss(n.pool, n.pool, loss_weight=0.5)
    proto = n.to_proto()
    proto.name = "tiny"
    assert str(proto) == '''name: "tiny"
layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param {
    shape {
      dim: 2
      dim: 3
      dim: 8
      dim: 8
    }
  }
}
layer {
  name: "conv"
  type: "Convolution"
  bottom: "data"
  top: "conv"
  param {
    lr_mult: 1
    decay_mult: 1
  }
  convolution_param {
    num_output: 4
    bias_term: false
    pad: 1
    kernel_size: 3
    weight_filler {
      type: "msra"
    }
  }
}
layer {
  name: "pool"
  type: "Pooling"
  bottom: "conv"
  top: "pool"
  pooling_param {
    pool: AVE
    global_pooling: true
  }
}
layer {
  name: "loss"
  type: "EuclideanLoss"
  bottom: "pool"
  bottom: "pool"
  top: "loss"
  loss_weight: 0.5
}
'''
    assert parse_net(str(proto)) == proto


def test_enums_by_value_and_by_name():
    # caffe.proto's numbers: PoolMethod MAX 0, AVE 1, STOCHASTIC 2; EltwiseOp PROD 0, SUM 1, MAX 2.
    assert (P.Pooling.MAX, P.Pooling.AVE, P.Pooling.STOCHASTIC) == (0, 1, 2)
    assert (P.Eltwise.PROD, P.Eltwise.SUM, P.Eltwise.MAX) == (0, 1, 2)
    assert P.LRN.WITHIN_CHANNEL == 1 and P.Loss.VALID == 1 and P.Convolution.CAFFE == 1
    x = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    by_value = L.Pooling(x, pool=P.Pooling.STOCHASTIC, kernel_size=2).to_proto().layer[1]
    by_name = L.Pooling(x, pool="STOCHASTIC", kernel_size=2).to_proto().layer[1]
    assert by_value.pooling_param == by_name.pooling_param
    assert by_name.pooling_param.pool == caffe_pb2.PoolingParameter.STOCHASTIC
    test_only = L.Accuracy(x, x, include=dict(phase="TEST")).to_proto().layer[1]
    assert test_only.include[0].phase == caffe_pb2.TEST
    with pytest.raises(AttributeError, match="no enum value 'MAXIMUM'.*MAX, AVE, STOCHASTIC"):
        P.Pooling.MAXIMUM
    with pytest.raises(AttributeError, match="no message NoSuchParameter"):
        P.NoSuch


def test_repeated_fields_param_specs_and_loss_weight():
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[2, 3, 5, 5]), dict(dim=[2])],
                                  data_filler=[dict(type="gaussian", std=0.5), dict(type="constant")], ntop=2)
    n.ip = L.InnerProduct(n.data, num_output=3, param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                          weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label, loss_weight=0.3, propagate_down=[True, False])
    n.mean = L.Reduction(n.data, operation=P.Reduction.MEAN, axis=1, loss_weight=[2.0])
    proto = n.to_proto()
    data, ip, loss, mean = proto.layer
    assert [list(s.dim) for s in data.dummy_data_param.shape] == [[2, 3, 5, 5], [2]]
    assert [f.type for f in data.dummy_data_param.data_filler] == ["gaussian", "constant"]
    assert [(p.lr_mult, p.decay_mult) for p in ip.param] == [(1, 1), (2, 0)]
    assert list(loss.loss_weight) == [pytest.approx(0.3)]
    assert list(loss.propagate_down) == [True, False]
    assert list(mean.loss_weight) == [2.0]
    assert mean.reduction_param.operation == caffe_pb2.ReductionParameter.MEAN
    net = caffe.Net(proto, caffe.TRAIN)
    assert net.blob_loss_weights["loss"] == pytest.approx(0.3)
    assert net.blob_loss_weights["mean"] == 2.0
    assert net.params_lr == [1.0, 2.0]


def test_tuples_count_as_lists_and_messages_are_copied():
    filler = caffe_pb2.FillerParameter(type="constant", value=3)
    x = L.Input(shape=dict(dim=(1, 3, 2, 2)))
    proto = L.Scale(x, filler=filler, bias_term=True, bias_filler={"type": "constant", "value": 1}).to_proto()
    assert list(proto.layer[0].input_param.shape[0].dim) == [1, 3, 2, 2]
    assert proto.layer[1].scale_param.filler == filler
    net = caffe.Net(proto, caffe.TEST)
    np.testing.assert_array_equal(net.params["Scale1"][0].data, 3)
    np.testing.assert_array_equal(net.params["Scale1"][1].data, 1)


def test_fields_go_to_the_types_message_then_the_layer():
    x = L.Input(shape=dict(dim=[1, 21, 4, 4]))
    # Deconvolution and Im2col read convolution_param (Caffe's layers do).
    up = L.Deconvolution(x, num_output=21, group=21, kernel_size=4, stride=2, bias_term=False,
                         weight_filler=dict(type="bilinear"), param=[dict(lr_mult=0)])
    layer = up.to_proto().layer[1]
    assert layer.convolution_param.group == 21 and list(layer.convolution_param.stride) == [2]
    assert layer.param[0].lr_mult == 0
    # pycaffe's spelling with the message named works as well.
    same = L.Deconvolution(x, convolution_param=dict(num_output=21, group=21, kernel_size=4, stride=2,
                                                     bias_term=False, weight_filler=dict(type="bilinear")),
                           param=[dict(lr_mult=0)]).to_proto().layer[1]
    assert same == layer
    # A loss type without a message of its own finds loss_param's fields.
    loss = L.SoftmaxWithLoss(x, x, ignore_label=255, normalize=False, softmax_param=dict(axis=1)).to_proto().layer[1]
    assert loss.loss_param.ignore_label == 255
    assert loss.loss_param.HasField("normalize") and loss.loss_param.normalize is False
    assert loss.softmax_param.axis == 1
    # Accuracy's own ignore_label wins over the layer's.
    accuracy = L.Accuracy(x, x, ignore_label=7, top_k=5).to_proto().layer[1]
    assert accuracy.accuracy_param.ignore_label == 7 and accuracy.accuracy_param.top_k == 5
    # name= renames the layer, not its top (the trick BVLC's GoogLeNet needs: layer loss1/loss, top loss1/loss1).
    named = L.ReLU(x, name="relu_custom").to_proto().layer[1]
    assert named.name == "relu_custom" and list(named.top) == ["ReLU1"]
    with pytest.raises(AttributeError, match=r"Convolution layer 'Convolution1': no field named 'kernal_size' "
                                             r"\(searched convolution_param, LayerParameter\)"):
        L.Convolution(x, kernal_size=3).to_proto()


def test_in_place_and_ntop():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4]))
    n.a, n.b = L.Slice(n.data, slice_point=1, ntop=2)
    n.relu = L.ReLU(n.b, in_place=True)
    n.drop = L.Dropout(n.relu, in_place=True, dropout_ratio=0.25)
    proto = n.to_proto()
    assert [layer.name for layer in proto.layer] == ["data", "a", "relu", "drop"]
    assert list(proto.layer[1].top) == ["a", "b"]
    assert list(proto.layer[2].bottom) == list(proto.layer[2].top) == ["b"]
    assert list(proto.layer[3].bottom) == list(proto.layer[3].top) == ["b"]
    tops = L.Slice(n.data, ntop=3, slice_point=[1, 2])
    assert isinstance(tops, tuple) and len(tops) == 3 and {t.n for t in tops} == {0, 1, 2}
    net = caffe.Net(proto, caffe.TEST)
    assert net.blobs["b"].data.shape == (1, 3)
    with pytest.raises(ValueError, match="in_place needs a bottom"):
        L.ReLU(in_place=True)


def test_netspec_as_a_mapping():
    n = caffe.NetSpec()
    n["data"] = L.Input(shape=dict(dim=[1, 2]))
    n.ip = L.InnerProduct(n["data"], num_output=3)
    assert n.keys() == ["data", "ip"] and n.vals() == [n.data, n.ip]
    assert "ip" in n and "nothing" not in n
    n.update("ip", dict(bias_term=False))
    assert n.to_proto().layer[1].inner_product_param.bias_term is False
    del n["ip"]
    assert n.keys() == ["data"]
    assert not hasattr(n, "missing")
    with pytest.raises(KeyError):
        n["missing"]
    with pytest.raises(TypeError, match="assign each top to a name"):
        n.pair = L.DummyData(shape=dict(dim=[1]), ntop=2)
    with pytest.raises(TypeError, match="must be a Top or a Function"):
        n.number = 3


def test_a_tops_to_proto_has_only_the_layers_it_needs():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    n.left = L.InnerProduct(n.data, num_output=3)
    n.right = L.InnerProduct(n.data, num_output=4)
    proto = n.left.to_proto()
    assert [layer.type for layer in proto.layer] == ["Input", "InnerProduct"]
    both = caffe.to_proto(n.left, n.right)
    assert [layer.name for layer in both.layer] == ["Input1", "InnerProduct1", "InnerProduct2"]


def test_layers_package_is_both_implementations_and_factory():
    import importlib

    import minicaffe.layers as layers_package
    assert layers_package is L is caffe.layers
    module = importlib.import_module("minicaffe.layers.convolution")
    assert L.convolution is module                      # implementation modules still import
    top = L.Convolution(L.Input(shape=dict(dim=[1, 1, 3, 3])), num_output=1, kernel_size=1)
    assert isinstance(top, caffe.net_spec.Top) and top.fn.type_name == "Convolution"
    assert L.AnyNewType.__name__ == "AnyNewType"        # any capitalised name is a layer type
    with pytest.raises(AttributeError, match="has no attribute 'not_a_module'"):
        L.not_a_module
    assert "Convolution" in caffe.layer_type_list()     # the registry still finds every layer


def test_net_from_netspec_runs_forward_and_backward():
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[4, 2, 6, 6]), dict(dim=[4])],
                                  data_filler=[dict(type="gaussian", std=1), dict(type="constant", value=1)], ntop=2)
    n.conv = L.Convolution(n.data, num_output=3, kernel_size=3, weight_filler=dict(type="gaussian", std=0.1))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.pool = L.Pooling(n.relu, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip = L.InnerProduct(n.pool, num_output=5, weight_filler=dict(type="gaussian", std=0.1))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    caffe.set_random_seed(3)
    net = caffe.Net(n.to_proto(), caffe.TRAIN)
    assert net.blobs["pool"].data.shape == (4, 3, 2, 2)
    loss = float(net.forward()["loss"])
    assert np.isfinite(loss) and 0 < loss < 10
    net.backward()
    assert np.abs(net.params["conv"][0].diff).sum() > 0

