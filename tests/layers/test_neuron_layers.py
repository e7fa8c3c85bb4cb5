"""AbsVal, BNLL, ELU, Exp, Log, Power, Clip, Swish, Threshold, PReLU: numpy references and gradients."""

import math

import numpy as np
import pytest

from minicaffe.errors import GraphError, ShapeError
from minicaffe.graph import TRAIN
from minicaffe.net import Net
from minicaffe.proto.text import parse_net
from minicaffe.testing import GradientChecker, check_layer_gradient, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(17)


def f32(value):
    """A float proto field as the layer sees it."""
    return float(np.float32(value))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# (layer text, reference y = f(x), reference f'(x), input sampler)
CASES = {
    "absval": ('type: "AbsVal"', np.abs, np.sign, lambda shape: rng.standard_normal(shape)),
    "bnll": ('type: "BNLL"', lambda x: np.log(1 + np.exp(x)), sigmoid, lambda shape: rng.standard_normal(shape) * 3),
    "elu": ('type: "ELU"', lambda x: np.where(x > 0, x, np.exp(x) - 1), lambda x: np.where(x > 0, 1, np.exp(x)),
            lambda shape: rng.standard_normal(shape)),
    "elu_alpha": ('type: "ELU" elu_param { alpha: 0.5 }', lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1)),
                  lambda x: np.where(x > 0, 1, 0.5 * np.exp(x)), lambda shape: rng.standard_normal(shape)),
    "exp": ('type: "Exp"', np.exp, np.exp, lambda shape: rng.standard_normal(shape)),
    "exp_base": ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }',
                 lambda x: 2.0 ** (f32(0.1) + 0.5 * x), lambda x: math.log(2) * 0.5 * 2.0 ** (f32(0.1) + 0.5 * x),
                 lambda shape: rng.standard_normal(shape)),
    "log": ('type: "Log"', np.log, lambda x: 1 / x, lambda shape: rng.uniform(0.5, 3, shape)),
    "log_base": ('type: "Log" log_param { base: 10 scale: 2 shift: 1 }', lambda x: np.log10(1 + 2 * x),
                 lambda x: 2 / ((1 + 2 * x) * math.log(10)), lambda shape: rng.uniform(0.1, 2, shape)),
    "power2": ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', lambda x: (1 + 0.5 * x) ** 2,
               lambda x: 2 * 0.5 * (1 + 0.5 * x), lambda shape: rng.standard_normal(shape)),
    "power3": ('type: "Power" power_param { power: 3 scale: -1.5 }', lambda x: (-1.5 * x) ** 3,
               lambda x: 3 * -1.5 * (-1.5 * x) ** 2, lambda shape: rng.standard_normal(shape)),
    "power_frac": ('type: "Power" power_param { power: 0.5 scale: 2 shift: 0.5 }', lambda x: np.sqrt(f32(0.5) + 2 * x),
                   lambda x: 0.5 * 2 / np.sqrt(f32(0.5) + 2 * x), lambda shape: rng.uniform(0.2, 2, shape)),
    "power_one": ('type: "Power" power_param { scale: 3 shift: -1 }', lambda x: 3 * x - 1, lambda x: np.full_like(x, 3),
                  lambda shape: rng.standard_normal(shape)),
    "clip": ('type: "Clip" clip_param { min: -0.5 max: 0.75 }', lambda x: np.minimum(np.maximum(x, -0.5), 0.75),
             lambda x: ((x >= -0.5) & (x <= 0.75)).astype(float), lambda shape: rng.standard_normal(shape)),
    "swish": ('type: "Swish"', lambda x: x * sigmoid(x), lambda x: sigmoid(x) + x * sigmoid(x) * (1 - sigmoid(x)),
              lambda shape: rng.standard_normal(shape) * 2),
    "swish_beta": ('type: "Swish" swish_param { beta: 1.5 }', lambda x: x * sigmoid(1.5 * x),
                   lambda x: sigmoid(1.5 * x) + 1.5 * x * sigmoid(1.5 * x) * (1 - sigmoid(1.5 * x)),
                   lambda shape: rng.standard_normal(shape) * 2),
}
KINKS = {"absval": 0.0, "elu": 0.0, "elu_alpha": 0.0, "clip": None}


def neuron(text, dtype=np.float64):
    return layer_from_text(f'name: "n" {text}', dtype=dtype)


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_float32(case):
    text, reference, _, sample = CASES[case]
    x = sample((2, 3, 4))
    _, top = run_layer(neuron(text, np.float32), [x])
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, reference(x.astype(np.float32).astype(np.float64)), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_backward_formula(case):
    text, reference, derivative, sample = CASES[case]
    x = sample((3, 4))
    layer = neuron(text)
    bottom, top = run_layer(layer, [x])
    np.testing.assert_allclose(top[0].data, reference(x), rtol=1e-12, atol=1e-14)
    dy = rng.standard_normal(x.shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dy * derivative(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient(case):
    text, _, _, sample = CASES[case]
    x = sample((2, 3, 2))
    if case == "clip":                     # keep away from the clip points, where f' jumps
        x = np.where(np.abs(x + 0.5) < 0.01, x + 0.05, x)
        x = np.where(np.abs(x - 0.75) < 0.01, x + 0.05, x)
    checker = GradientChecker(stepsize=1e-5, threshold=1e-6, kink=KINKS.get(case) or 0.0,
                              kink_range=1e-3 if case in KINKS else -1.0)
    assert checker.check_layer(neuron(text), make_blobs(x), empty_blobs(1)) > 0.9 * x.size


@pytest.mark.parametrize("case", ["bnll", "elu", "exp_base", "log_base", "power2", "power3", "clip", "swish"])
def test_in_place(case):
    text, reference, derivative, sample = CASES[case]
    x = sample((2, 5))
    layer = neuron(text)
    blob = make_blobs(x)[0]
    layer.set_up([blob], [blob])
    layer.run_forward([blob], [blob])
    np.testing.assert_allclose(blob.data, reference(x), rtol=1e-12, atol=1e-14)
    dy = rng.standard_normal(x.shape)
    blob.diff[...] = dy
    layer.run_backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, dy * derivative(x), rtol=1e-12, atol=1e-14)


def test_propagate_down_false_leaves_the_diff():
    layer = neuron(CASES["bnll"][0])
    bottom, top = run_layer(layer, [np.ones((2, 2))])
    bottom[0].diff[...] = 3.0
    top[0].diff[...] = 1.0
    layer.run_backward(top, [False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.full((2, 2), 3.0))


def test_bnll_and_exp_saturate_without_overflow():
    x = np.array([-200.0, -60.0, 0.0, 60.0, 200.0])
    _, top = run_layer(neuron('type: "BNLL"', np.float32), [x])
    np.testing.assert_allclose(top[0].data, [0.0, np.exp(-60.0), math.log(2), 60.0, 200.0], rtol=1e-6)
    layer = neuron('type: "BNLL"', np.float32)
    bottom, top = run_layer(layer, [x])
    top[0].diff[...] = 1.0
    layer.run_backward(top, [True], bottom)
    assert np.all(np.isfinite(bottom[0].diff))
    np.testing.assert_allclose(bottom[0].diff, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


def test_power_special_cases():
    x = np.array([[-1.0, 0.0, 2.0]])
    # power * scale == 0: a constant output shift^power (1 for power 0) and a zero gradient
    for text, value in [('power_param { power: 0 shift: 3 }', 1.0), ('power_param { power: 2 scale: 0 shift: 3 }', 9.0)]:
        layer = neuron(f'type: "Power" {text}')
        bottom, top = run_layer(layer, [x])
        np.testing.assert_array_equal(top[0].data, np.full(x.shape, value))
        top[0].diff[...] = 1.0
        layer.run_backward(top, [True], bottom)
        np.testing.assert_array_equal(bottom[0].diff, np.zeros(x.shape))
    # shift 0, power 3 at x = 0: the derivative is 0 (Caffe's power * y / x gives NaN)
    layer = neuron('type: "Power" power_param { power: 3 scale: 2 }')
    bottom, top = run_layer(layer, [x])
    top[0].diff[...] = 1.0
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, 3 * 2 * (2 * x) ** 2, rtol=1e-12)


def test_threshold_forward_and_no_backward():
    x = np.array([[-1.0, 0.2, 0.2000001, 3.0]])
    layer = neuron('type: "Threshold" threshold_param { threshold: 0.2 }', np.float32)
    bottom, top = run_layer(layer, [x])
    np.testing.assert_array_equal(top[0].data, [[0, 0, 1, 1]])      # strictly greater
    with pytest.raises(GraphError, match="layer 'n'.*Threshold has no Backward"):
        layer.run_backward(top, [True], bottom)
    layer.run_backward(top, [False], bottom)                          # nothing asked: fine


def test_threshold_under_force_backward_is_a_clear_error():
    net = Net(parse_net("""
        force_backward: true
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "th" type: "Threshold" bottom: "x" top: "y" }
        layer { name: "loss" type: "Reduction" bottom: "y" top: "loss" loss_weight: 1 }"""), TRAIN)
    net.forward()
    with pytest.raises(GraphError, match="layer 'th'.*Threshold has no Backward.*force_backward"):
        net.backward()


def test_parameter_errors():
    with pytest.raises(GraphError, match="layer 'n'.*Exp base must be strictly positive.*got -2"):
        run_layer(neuron('type: "Exp" exp_param { base: -2 }'), [np.ones(2)])
    with pytest.raises(GraphError, match="layer 'n'.*Log base must be strictly positive.*got 0"):
        run_layer(neuron('type: "Log" log_param { base: 0 }'), [np.ones(2)])
    with pytest.raises(GraphError, match="layer 'n'.*Log base 1"):
        run_layer(neuron('type: "Log" log_param { base: 1 }'), [np.ones(2)])
    with pytest.raises(GraphError, match="layer 'n'.*clip_param needs both min and max; max not given"):
        run_layer(neuron('type: "Clip" clip_param { min: 0 }'), [np.ones(2)])
    with pytest.raises(GraphError, match="layer 'n'.*clip_param min 2 is above max 1"):
        run_layer(neuron('type: "Clip" clip_param { min: 2 max: 1 }'), [np.ones(2)])
    layer = neuron('type: "AbsVal"')
    blob = make_blobs(np.ones(2))[0]
    with pytest.raises(GraphError, match="layer 'n'.*AbsVal does not allow in-place"):
        layer.set_up([blob], [blob])
    with pytest.raises(GraphError, match="layer 'n'.*takes 1 bottom"):
        run_layer(neuron('type: "ELU"'), [np.ones(2), np.ones(2)])


# ---------------------------------------------------------------- PReLU
def prelu_reference(x, slopes):
    view = slopes.reshape((1, -1) + (1,) * (x.ndim - 2)) if np.ndim(slopes) else slopes
    return np.where(x > 0, x, x * view)


@pytest.mark.parametrize("param, slope_shape", [("", (3,)), ("channel_shared: true", ())])
def test_prelu_forward_float32_and_default_filler(param, slope_shape):
    x = rng.standard_normal((2, 3, 2, 2))
    layer = layer_from_text(f'name: "p" type: "PReLU" prelu_param {{ {param} }}', dtype=np.float32)
    _, top = run_layer(layer, [x])
    assert layer.blobs[0].shape == slope_shape
    np.testing.assert_array_equal(layer.blobs[0].data, np.full(slope_shape, 0.25, dtype=np.float32))
    np.testing.assert_allclose(top[0].data, prelu_reference(x, np.full(slope_shape, 0.25)), rtol=1e-6)


@pytest.mark.parametrize("param, shape", [
    ("filler { type: 'gaussian' }", (2, 3, 2, 2)),
    ("filler { type: 'gaussian' }", (3, 2)),
    ("channel_shared: true filler { type: 'constant' value: -0.3 }", (2, 3, 3)),
])
def test_prelu_gradient(param, shape):
    x = rng.standard_normal(shape)
    layer = layer_from_text(f'name: "p" type: "PReLU" prelu_param {{ {param} }}')
    checker = GradientChecker(stepsize=1e-5, kink=0.0, kink_range=1e-3)
    assert checker.check_layer(layer, make_blobs(x), empty_blobs(1)) == x.size + layer.blobs[0].count


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_backward_formula_in_place_and_accumulation(shared):
    x = rng.standard_normal((2, 3, 4))
    text = f'name: "p" type: "PReLU" prelu_param {{ channel_shared: {str(shared).lower()} filler {{ type: "gaussian" }} }}'
    layer = layer_from_text(text)
    blob = make_blobs(x)[0]
    layer.set_up([blob], [blob])
    slopes = layer.blobs[0].data.copy()
    layer.run_forward([blob], [blob])
    np.testing.assert_allclose(blob.data, prelu_reference(x, slopes), rtol=1e-12)
    dy = rng.standard_normal(x.shape)
    blob.diff[...] = dy
    layer.blobs[0].diff[...] = 1.0
    layer.run_backward([blob], [True], [blob])
    contribution = dy * x * (x <= 0)
    expected = contribution.sum() if shared else contribution.sum(axis=(0, 2))
    np.testing.assert_allclose(layer.blobs[0].diff, 1.0 + expected, rtol=1e-12)
    view = slopes if shared else slopes[None, :, None]
    np.testing.assert_allclose(blob.diff, dy * np.where(x > 0, 1, view), rtol=1e-12)


def test_prelu_errors():
    with pytest.raises(ShapeError, match=r"layer 'p'.*at least 2 axes.*got \(4\)"):
        run_layer(layer_from_text('name: "p" type: "PReLU"'), [np.ones(4)])
    layer = layer_from_text('name: "p" type: "PReLU"')
    bottom, top = run_layer(layer, [np.ones((2, 3))])
    bottom[0].reshape(2, 5)
    with pytest.raises(ShapeError, match=r"layer 'p'.*3 channels.*got \(2, 5\)"):
        layer.reshape(bottom, top)
    shared = layer_from_text('name: "p" type: "PReLU" prelu_param { channel_shared: true }')
    bottom, top = run_layer(shared, [np.ones((2, 3))])
    bottom[0].reshape(2, 5)
    shared.reshape(bottom, top)                     # one slope fits any channel count
    assert top[0].shape == (2, 5)
