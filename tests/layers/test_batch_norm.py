"""BatchNorm: batch and global statistics, Caffe's running-stat storage, gradients, frozen params."""

import numpy as np
import pytest

from minicaffe.errors import GraphError, ShapeError
from minicaffe.graph import TEST, TRAIN
from minicaffe.net import Net
from minicaffe.proto.text import parse_net
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(5)


def bn_text(param="", extra=""):
    return f'name: "bn" type: "BatchNorm" batch_norm_param {{ {param} }} {extra}'


def reference_batch(x, eps):
    """Per-channel (axis 1) normalization with the biased batch variance, in float64."""
    x = np.asarray(x, dtype=np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps), mean.ravel(), var.ravel()


def test_train_forward_float32_uses_batch_statistics():
    x = rng.standard_normal((4, 3, 2, 5)) * 2 + 1
    layer = layer_from_text(bn_text("eps: 0.001"), phase=TRAIN, dtype=np.float32)
    _, top = run_layer(layer, [x])
    expected, _, _ = reference_batch(x, np.float32(0.001))
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-4, atol=1e-5)
    assert layer.use_global_stats is False


def test_train_updates_running_statistics_as_caffe_stores_them():
    x1 = rng.standard_normal((3, 2, 4)) + 2
    x2 = rng.standard_normal((3, 2, 4)) * 3
    layer = layer_from_text(bn_text("moving_average_fraction: 0.9"), phase=TRAIN)
    bottom, top = run_layer(layer, [x1])
    m = 3 * 4
    _, mean1, var1 = reference_batch(x1, 0)
    np.testing.assert_allclose(layer.blobs[2].data, [1.0], rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[0].data, mean1, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, var1 * m / (m - 1), rtol=1e-12)
    bottom[0].data[...] = x2
    layer.run_forward(bottom, top)
    f = np.float64(np.float32(0.9))          # the proto field is a float
    _, mean2, var2 = reference_batch(x2, 0)
    np.testing.assert_allclose(layer.blobs[2].data, [f * 1.0 + 1], rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[0].data, f * mean1 + mean2, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, f * var1 * m / (m - 1) + var2 * m / (m - 1), rtol=1e-12)


def test_single_value_per_channel_keeps_the_variance_uncorrected():
    x = rng.standard_normal((1, 3))
    layer = layer_from_text(bn_text(), phase=TRAIN)
    run_layer(layer, [x])
    np.testing.assert_array_equal(layer.blobs[1].data, [0.0, 0.0, 0.0])      # m = 1: factor 1, var 0
    np.testing.assert_allclose(layer.blobs[0].data, x[0], rtol=1e-12)


def test_test_phase_uses_stored_statistics_divided_by_the_scale_factor():
    x = rng.standard_normal((2, 3, 4))
    layer = layer_from_text(bn_text("eps: 0.01"), phase=TEST, dtype=np.float32)
    bottom, top = make_blobs(x, dtype=np.float32), empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    assert layer.use_global_stats is True
    sums = np.array([0.5, -1.0, 2.0]), np.array([2.0, 4.0, 0.5])
    layer.blobs[0].data[...] = sums[0]
    layer.blobs[1].data[...] = sums[1]
    layer.blobs[2].data[...] = 2.0
    layer.run_forward(bottom, top)
    mean, var = sums[0] / 2, sums[1] / 2
    expected = (x - mean[None, :, None]) / np.sqrt(var[None, :, None] + np.float32(0.01))
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layer.blobs[2].data, [2.0])                   # no update in TEST
    np.testing.assert_array_equal(layer.blobs[0].data, sums[0].astype(np.float32))


def test_zero_scale_factor_means_zero_statistics():
    x = rng.standard_normal((2, 2, 3))
    layer = layer_from_text(bn_text("eps: 0.25"), phase=TEST)
    bottom, top = make_blobs(x), empty_blobs(1)
    layer.set_up(bottom, top)
    layer.blobs[0].data[...] = 5.0               # ignored: the factor is 0
    layer.run_forward(bottom, top)
    np.testing.assert_allclose(top[0].data, x / np.sqrt(np.float32(0.25)), rtol=1e-12)


@pytest.mark.parametrize("phase, flag, uses_global", [(TRAIN, "true", True), (TEST, "false", False)])
def test_use_global_stats_overrides_the_phase(phase, flag, uses_global):
    x = rng.standard_normal((3, 2, 2))
    layer = layer_from_text(bn_text(f"use_global_stats: {flag}"), phase=phase)
    bottom, top = make_blobs(x), empty_blobs(1)
    layer.set_up(bottom, top)
    layer.blobs[0].data[...] = [1.0, 2.0]
    layer.blobs[1].data[...] = [4.0, 9.0]
    layer.blobs[2].data[...] = 1.0
    layer.run_forward(bottom, top)
    assert layer.use_global_stats is uses_global
    if uses_global:
        expected = (x - np.array([1.0, 2.0])[None, :, None]) / np.sqrt(np.array([4.0, 9.0]) + np.float32(1e-5))[None, :, None]
        np.testing.assert_array_equal(layer.blobs[2].data, [1.0])
    else:
        expected, _, _ = reference_batch(x, np.float32(1e-5))
        assert layer.blobs[2].data[0] == pytest.approx(np.float32(0.999) + 1)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-10)


@pytest.mark.parametrize("phase, shape", [(TRAIN, (3, 2, 2, 2)), (TRAIN, (4, 3)), (TEST, (2, 3, 2))])
def test_gradient(phase, shape):
    x = rng.standard_normal(shape) * 1.5
    layer = layer_from_text(bn_text("eps: 0.01"), phase=phase)
    bottom, top = make_blobs(x), empty_blobs(1)
    layer.set_up(bottom, top)
    if phase == TEST:
        layer.blobs[0].data[...] = rng.standard_normal(shape[1])
        layer.blobs[1].data[...] = rng.uniform(0.5, 2.0, shape[1])
        layer.blobs[2].data[...] = 1.5
    checked = GradientChecker(stepsize=1e-4).check_layer(layer, bottom, top, set_up=False)
    assert checked == x.size                   # no parameter gradients are checked


def test_backward_formula_and_in_place():
    x = rng.standard_normal((3, 2, 4))
    dy = rng.standard_normal(x.shape)
    layer = layer_from_text(bn_text("eps: 0.1"), phase=TRAIN)
    blob = make_blobs(x)[0]
    layer.set_up([blob], [blob])
    layer.run_forward([blob], [blob])
    y, _, var = reference_batch(x, np.float32(0.1))
    np.testing.assert_allclose(blob.data, y, rtol=1e-10)
    blob.data[...] = 123.0                   # a later in-place layer overwrites the top: BatchNorm cached y
    blob.diff[...] = dy
    layer.run_backward([blob], [True], [blob])
    axes = (0, 2)
    expected = (dy - dy.mean(axis=axes, keepdims=True) - y * (dy * y).mean(axis=axes, keepdims=True)) \
        / np.sqrt(var + np.float32(0.1))[None, :, None]
    np.testing.assert_allclose(blob.diff, expected, rtol=1e-10, atol=1e-12)


def test_statistics_are_not_learned():
    layer = layer_from_text(bn_text(), phase=TRAIN)
    bottom, top = run_layer(layer, [rng.standard_normal((2, 3))])
    assert layer.param_propagate_down == [False, False, False]
    assert [spec.lr_mult for spec in layer.layer_param.param] == [0, 0, 0]
    top[0].diff[...] = 1.0
    layer.run_backward(top, [True], bottom)
    for blob in layer.blobs:
        assert not blob.diff.any()
    partial = layer_from_text(bn_text(extra='param { lr_mult: 0 decay_mult: 0 }'), phase=TRAIN)
    run_layer(partial, [rng.standard_normal((2, 3))])
    assert [spec.lr_mult for spec in partial.layer_param.param] == [0, 0, 0]
    assert partial.layer_param.param[0].decay_mult == 0


def test_learned_statistics_are_refused():
    layer = layer_from_text(bn_text(extra='param { lr_mult: 0 } param { lr_mult: 1 }'))
    with pytest.raises(GraphError, match="layer 'bn'.*param 1 has lr_mult 1"):
        run_layer(layer, [np.zeros((2, 3))])


NET = """
name: "bn_net"
force_backward: true
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 dim: 3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { eps: 0.01 } }
layer { name: "sc" type: "Scale" bottom: "y" top: "y" scale_param { bias_term: true filler { type: "gaussian" } bias_filler { type: "gaussian" } } }
layer { name: "loss" type: "Reduction" bottom: "y" top: "loss" reduction_param { operation: SUMSQ } loss_weight: 0.5 }
"""


def test_in_net_the_statistics_get_no_gradient_and_in_place_scale_checks():
    net = Net(parse_net(NET), TRAIN, dtype=np.float64)
    bn = net.layer_dict["bn"]
    assert [spec.lr_mult for spec in bn.layer_param.param] == [0, 0, 0]
    solver_view = {(entry.layer, entry.index): entry.lr_mult for entry in net.learnable_param_specs}
    assert [solver_view[("bn", i)] for i in range(3)] == [0, 0, 0]       # a solver leaves them alone
    assert solver_view[("sc", 0)] == 1
    assert bn.param_propagate_down == [True] * 3     # force_backward sets them, as in Caffe; Backward still writes no diff
    net.blobs["x"].data[...] = rng.standard_normal((4, 2, 3))
    net.forward()
    net.backward()
    for blob in bn.blobs:
        assert not blob.diff.any()
    assert net.layer_dict["sc"].blobs[0].diff.any()
    checker = GradientChecker(stepsize=1e-4)
    assert checker.check_net(net, blobs=["x"], check_params=False) == 24


def test_caffe_statistics_load_and_training_continues():
    net = Net(parse_net(NET), TEST, dtype=np.float64)
    model = net.to_proto()
    bn_entry = next(layer for layer in model.layer if layer.name == "bn")
    stored = [np.array([2.0, -4.0]), np.array([8.0, 2.0]), np.array([4.0])]
    for proto, values in zip(bn_entry.blobs, stored):
        del proto.double_data[:]
        del proto.data[:]
        proto.data.extend(values)                # as Caffe writes them: float data
    test_net = Net(parse_net(NET), TEST, dtype=np.float64)
    test_net.copy_from(model)
    x = rng.standard_normal((4, 2, 3))
    test_net.blobs["x"].data[...] = x
    test_net.forward()
    mean, var = stored[0] / 4, stored[1] / 4
    expected = (x - mean[None, :, None]) / np.sqrt(var[None, :, None] + np.float32(0.01))
    scale = test_net.layer_dict["sc"]
    expected = expected * scale.blobs[0].data[None, :, None] + scale.blobs[1].data[None, :, None]
    np.testing.assert_allclose(test_net.blobs["y"].data, expected, rtol=1e-10)
    train_net = Net(parse_net(NET), TRAIN, dtype=np.float64)
    train_net.copy_from(model)
    train_net.blobs["x"].data[...] = x
    train_net.forward()
    _, batch_mean, batch_var = reference_batch(x, 0)
    f = np.float64(np.float32(0.999))
    bn = train_net.layer_dict["bn"]
    np.testing.assert_allclose(bn.blobs[2].data, f * 4.0 + 1, rtol=1e-12)
    np.testing.assert_allclose(bn.blobs[0].data, f * stored[0] + batch_mean, rtol=1e-12)
    np.testing.assert_allclose(bn.blobs[1].data, f * stored[1] + batch_var * 12 / 11, rtol=1e-12)


def test_shape_errors():
    with pytest.raises(ShapeError, match=r"layer 'bn'.*at least 2 axes.*got \(5\)"):
        run_layer(layer_from_text(bn_text()), [np.zeros(5)])
    layer = layer_from_text(bn_text())
    bottom, top = run_layer(layer, [np.zeros((2, 3, 2))])
    bottom[0].reshape(2, 4, 2)
    with pytest.raises(ShapeError, match=r"layer 'bn'.*3 channels.*expected \(None, 3\), got \(2, 4, 2\)"):
        layer.reshape(bottom, top)
