"""The Net running its plan: each graph rule checked numerically, need-backward, sharing."""

import numpy as np
import pytest

from minicaffe import Net, TEST, TRAIN
from minicaffe.errors import GraphError, MinicaffeError, ShapeError
from minicaffe.layer import Layer
from minicaffe.proto.text import parse_net
from minicaffe.registry import register
from minicaffe.testing import GradientChecker

rng = np.random.default_rng(7)


def build(text, phase=TRAIN, dtype=np.float64, **inputs):
    net = Net(parse_net(text), phase, dtype=dtype)
    for name, value in inputs.items():
        net.blobs[name].data[...] = value
    return net


def ip(name, bottom, top, num_output=3, extra=""):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top}" {extra} '
            f'inner_product_param {{ num_output: {num_output} weight_filler {{ type: "gaussian" std: 0.5 }} '
            'bias_filler { type: "gaussian" std: 0.5 } } }\n')


def inputs(*specs):
    return "".join(f'layer {{ name: "in_{n}" type: "Input" top: "{n}" input_param {{ shape {{ dim: 4 dim: {d} }} }} }}\n'
                   for n, d in specs)


X = rng.standard_normal((4, 5))
T = rng.standard_normal((4, 3))


def test_forward_returns_outputs_and_loss_is_weighted_sum():
    net = build(inputs(("x", 5), ("t", 3)) + ip("ip", "x", "y") +
                'layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" loss_weight: 2 }',
                x=X, t=T)
    out = net.forward()
    assert list(out) == ["loss"]
    weight, bias = net.params["ip"][0].data, net.params["ip"][1].data
    expected = np.sum((X @ weight.T + bias - T) ** 2) / 4 / 2
    assert out["loss"] == pytest.approx(expected)
    assert net.forward_from_to(0, len(net.layers) - 1) == pytest.approx(2 * expected)
    assert net.blobs["loss"].diff == pytest.approx(2.0)    # the loss weight, seeded in the top's diff
    assert net.blob_loss_weights["loss"] == 2.0 and net.blob_loss_weights["y"] == 0.0


def test_split_sums_diffs_of_a_shared_blob():
    # x feeds two branches: its gradient is the sum of both (through the inserted Split)
    text = ('force_backward: true\n' + inputs(("x", 5), ("t", 3)) + ip("ip1", "x", "a") + ip("ip2", "x", "b") +
            'layer { name: "l1" type: "EuclideanLoss" bottom: "a" bottom: "t" top: "l1" }\n'
            'layer { name: "l2" type: "EuclideanLoss" bottom: "b" bottom: "t" top: "l2" loss_weight: 0.5 }\n')
    net = build(text, x=X, t=T)
    assert "x_in_x_0_split" in net.layer_dict
    net.forward()
    net.backward()
    w1, b1 = net.params["ip1"][0].data, net.params["ip1"][1].data
    w2, b2 = net.params["ip2"][0].data, net.params["ip2"][1].data
    expected = ((X @ w1.T + b1 - T) / 4) @ w1 + 0.5 * ((X @ w2.T + b2 - T) / 4) @ w2
    np.testing.assert_allclose(net.blobs["x"].diff, expected, rtol=1e-10)
    assert GradientChecker(stepsize=1e-4).check_net(net, blobs=["x", "t"]) > 0


def test_loss_weight_split_on_a_non_loss_top():
    # Caffe's lw_ip_top_and_swl pattern: ip's top has loss_weight 0.5 and also feeds a loss at 0.3
    text = (inputs(("x", 5), ("t", 3)) + ip("ip", "x", "score", extra="loss_weight: 0.5") +
            'layer { name: "loss" type: "EuclideanLoss" bottom: "score" bottom: "t" top: "loss" loss_weight: 0.3 }\n')
    net = build(text, x=X, t=T)
    loss = net.forward_from_to(0, len(net.layers) - 1)
    score = net.blobs["score"].data
    assert loss == pytest.approx(0.5 * score.sum() + 0.3 * np.sum((score - T) ** 2) / 8)
    net.backward()
    np.testing.assert_allclose(net.blobs["score"].diff, 0.5 + 0.3 * (score - T) / 4)
    assert GradientChecker(stepsize=1e-4).check_net(net) > 0


def test_non_loss_layer_as_a_loss():
    text = inputs(("x", 5)) + ip("ip", "x", "h") + 'layer { name: "r" type: "ReLU" bottom: "h" top: "r" loss_weight: 2 }\n'
    net = build(text, x=X)
    loss = net.forward_from_to(0, len(net.layers) - 1)
    assert loss == pytest.approx(2 * np.maximum(net.blobs["h"].data, 0).sum())
    assert net.layer_need_backward == [False, True, True]
    assert GradientChecker(stepsize=1e-4).check_net(net) > 0


def test_in_place_layer_in_a_net():
    text = (inputs(("x", 5), ("t", 3)) + ip("ip", "x", "h") +
            'layer { name: "relu" type: "ReLU" bottom: "h" top: "h" relu_param { negative_slope: 0.1 } }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "h" bottom: "t" top: "loss" }\n')
    net = build(text, x=X, t=T)
    net.forward()
    pre = X @ net.params["ip"][0].data.T + net.params["ip"][1].data
    np.testing.assert_allclose(net.blobs["h"].data, np.where(pre > 0, pre, 0.1 * pre))
    assert GradientChecker(stepsize=1e-4, kink_range=1e-3).check_net(net) > 0


def test_loss_weight_zero_sends_no_gradient():
    text = (inputs(("x", 5), ("t", 3)) + ip("ip", "x", "y") + ip("ip_other", "x", "z") +
            'layer { name: "dead" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "dead" loss_weight: 0 }\n'
            'layer { name: "live" type: "EuclideanLoss" bottom: "z" bottom: "t" top: "live" }\n')
    net = build(text, x=X, t=T)
    out = net.forward()
    assert out["dead"] > 0                                # still computed in Forward
    need = dict(zip([layer.name for layer in net.layers], net.layer_need_backward))
    assert need["dead"] is False and need["ip"] is False and need["live"] is True
    net.backward()
    assert not net.params["ip"][0].diff.any()
    assert net.params["ip_other"][0].diff.any()


def test_propagate_down_false_stops_a_branch():
    # Caffe's propagate_down_false: b gets no diff and ip2's params no gradient
    text = (inputs(("x", 5)) + ip("ip1", "x", "a") + ip("ip2", "x", "b") +
            'layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" '
            'propagate_down: true propagate_down: false }\n')
    net = build(text, x=X)
    net.forward()
    net.backward()
    assert net.bottom_need_backward[-1] == [True, False]
    assert not net.blobs["b"].diff.any()
    assert not net.params["ip2"][0].diff.any() and net.params["ip1"][0].diff.any()
    assert net.layer_need_backward[net.layers.index(net.layer_dict["ip2"])] is False


def test_lr_mult_zero_needs_no_backward():
    text = inputs(("x", 5), ("t", 3)) + ip("ip", "x", "y", extra="param { lr_mult: 0 } param { lr_mult: 0 }") + \
        'layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }\n'
    net = build(text, x=X, t=T)
    assert net.layer_need_backward[net.layers.index(net.layer_dict["ip"])] is False
    assert net.layer_dict["ip"].param_propagate_down == [False, False]


def test_force_backward_reaches_inputs():
    body = inputs(("x", 5), ("t", 3)) + ip("ip", "x", "y") + \
        'layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }\n'
    plain = build(body, x=X, t=T)
    plain.forward()
    plain.backward()
    assert not plain.blobs["x"].diff.any()
    forced = build("force_backward: true\n" + body, x=X, t=T)
    forced.forward()
    forced.backward()
    expected = ((X @ forced.params["ip"][0].data.T + forced.params["ip"][1].data - T) / 4) @ forced.params["ip"][0].data
    np.testing.assert_allclose(forced.blobs["x"].diff, expected)


@register("MinicaffeTestNoBackward")
class _NoBackward(Layer):
    """A layer without Backward, like Caffe's Accuracy or ArgMax."""
    exact_bottoms = 1
    exact_tops = 1
    has_backward = False

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data


def test_force_backward_through_a_layer_without_backward_is_a_clear_error():
    text = ("force_backward: true\n" + inputs(("x", 5)) +
            'layer { name: "probe" type: "MinicaffeTestNoBackward" bottom: "x" top: "y" }\n')
    net = build(text, x=X)
    net.forward()                                          # Forward is fine
    with pytest.raises(GraphError, match="layer 'probe': MinicaffeTestNoBackward has no Backward"):
        net.backward()
    # without force_backward nothing asks it for a gradient
    build(text.replace("force_backward: true", ""), x=X).backward()


def test_shared_params_sum_gradients():
    text = (inputs(("x", 5), ("t", 3)) +
            ip("ip1", "x", "a", extra='param { name: "w" } param { name: "b" }') +
            ip("ip2", "x", "b", extra='param { name: "w" } param { name: "b" }') +
            'layer { name: "l1" type: "EuclideanLoss" bottom: "a" bottom: "t" top: "l1" }\n'
            'layer { name: "l2" type: "EuclideanLoss" bottom: "b" bottom: "t" top: "l2" loss_weight: 3 }\n')
    net = build(text, x=X, t=T)
    assert net.params["ip1"][0] is net.params["ip2"][0]
    assert len(net.learnable_params) == 2
    net.forward()
    net.backward()
    w, b = net.params["ip1"][0].data, net.params["ip1"][1].data
    residual = (X @ w.T + b - T) / 4
    np.testing.assert_allclose(net.params["ip1"][0].diff, (1 + 3) * residual.T @ X)
    assert GradientChecker(stepsize=1e-4).check_net(net) > 0


def test_shared_param_shape_mismatch_names_both_shapes():
    text = (inputs(("x", 5)) + ip("ip1", "x", "a", extra='param { name: "w" }') +
            ip("ip2", "x", "b", num_output=4, extra='param { name: "w" }'))
    with pytest.raises(ShapeError, match=r"layer 'ip2'.*cannot share param 'w'.*expected \(3, 5\), got \(4, 5\)"):
        build(text)
    permissive = (inputs(("x", 6)) + ip("ip1", "x", "a", num_output=2, extra='param { name: "w" }') +
                  ip("ip2", "x", "b", num_output=3,
                     extra='param { name: "w" share_mode: PERMISSIVE } param { lr_mult: 1 }').replace("dim: 6", "dim: 6"))
    with pytest.raises(ShapeError, match="counts differ"):
        build(permissive)


def test_too_many_param_specs_is_an_error():
    with pytest.raises(GraphError, match="layer 'r': 1 param specs given but ReLU has 0"):
        build(inputs(("x", 5)) + 'layer { name: "r" type: "ReLU" bottom: "x" top: "y" param { lr_mult: 1 } }')


def test_param_diffs_accumulate_until_cleared():
    net = build(inputs(("x", 5), ("t", 3)) + ip("ip", "x", "y") +
                'layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }', x=X, t=T)
    net.forward()
    net.backward()
    once = net.params["ip"][0].diff.copy()
    net.backward()
    np.testing.assert_allclose(net.params["ip"][0].diff, 2 * once)
    net.clear_param_diffs()
    assert not net.params["ip"][0].diff.any()


def test_whole_net_gradient_check_on_an_mlp():
    text = ('force_backward: true\n' + inputs(("x", 5), ("t", 3)) + ip("ip1", "x", "h", num_output=6) +
            'layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }\n' + ip("ip2", "h", "y") +
            'layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }\n')
    net = build(text, x=X, t=T)
    assert GradientChecker(stepsize=1e-4, kink_range=1e-3).check_net(net, blobs=["x"]) >= 20 + 30 + 6 + 18 + 3


def test_unknown_layer_type_suggests_names():
    with pytest.raises(GraphError, match="layer 'ip': unknown layer type 'InnerProdcut'; did you mean 'InnerProduct'"):
        build(inputs(("x", 5)) + 'layer { name: "ip" type: "InnerProdcut" bottom: "x" top: "y" }')


def test_phase_and_constructor_forms(tmp_path):
    path = tmp_path / "n.prototxt"
    path.write_text(inputs(("x", 5)) + ip("ip", "x", "y") +
                    'layer { name: "only_test" type: "ReLU" bottom: "y" top: "z" include { phase: TEST } }')
    assert "only_test" not in Net(str(path), TRAIN).layer_dict
    test_net = Net(str(path), TEST)
    assert "only_test" in test_net.layer_dict and test_net.phase == TEST
    with pytest.raises(TypeError, match="phase"):
        Net(str(path))
    with pytest.raises(MinicaffeError, match="not an input"):
        Net(str(path), TRAIN).forward(y=np.zeros((4, 3)))
