"""Sigmoid, TanH, Softmax: numpy references of the formulas and finite-difference gradients."""

import warnings

import numpy as np
import pytest

from minicaffe.errors import ShapeError
from minicaffe.testing import check_layer_gradient, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(11)


def test_sigmoid_forward_float32():
    x = rng.standard_normal((2, 3, 4)) * 3
    _, top = run_layer(layer_from_text('name: "s" type: "Sigmoid"', dtype=np.float32), [x])
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, 1 / (1 + np.exp(-x)), rtol=1e-6, atol=1e-7)


def test_sigmoid_is_stable_for_large_inputs():
    x = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4])
    for dtype in (np.float32, np.float64):
        with warnings.catch_warnings():
            warnings.simplefilter("error")               # no overflow warnings either
            bottom, top = run_layer(layer_from_text('name: "s" type: "Sigmoid"', dtype=dtype), [x])
        y = top[0].data
        assert np.all(np.isfinite(y))
        np.testing.assert_array_equal(y[[0, 1, 5, 6]], [0.0, 0.0, 1.0, 1.0])
        assert y[3] == 0.5
        assert 0 < y[2] < 1e-20 or dtype == np.float32


def test_sigmoid_gradient_and_backward_formula():
    x = rng.standard_normal((2, 3, 4)) * 2
    text = 'name: "s" type: "Sigmoid"'
    assert check_layer_gradient(layer_from_text(text), make_blobs(x), empty_blobs(1)) == x.size
    layer = layer_from_text(text)
    bottom, top = run_layer(layer, [x])
    dy = rng.standard_normal(x.shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(bottom[0].diff, dy * s * (1 - s), rtol=1e-12)


def test_sigmoid_in_place():
    x = rng.standard_normal((3, 4))
    layer = layer_from_text('name: "s" type: "Sigmoid"')
    blob = make_blobs(x)[0]
    layer.set_up([blob], [blob])
    layer.run_forward([blob], [blob])
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(blob.data, s, rtol=1e-12)
    blob.diff[...] = 2.0
    layer.run_backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, 2 * s * (1 - s), rtol=1e-12)


def test_tanh_forward_float32_and_large_inputs():
    x = rng.standard_normal((2, 3, 4)) * 2
    x[0, 0, :2] = [-500.0, 500.0]
    _, top = run_layer(layer_from_text('name: "t" type: "TanH"', dtype=np.float32), [x])
    assert top[0].data.dtype == np.float32
    reference = (np.exp(2 * np.clip(x, -20, 20)) - 1) / (np.exp(2 * np.clip(x, -20, 20)) + 1)
    np.testing.assert_allclose(top[0].data, reference, rtol=1e-6, atol=1e-7)


def test_tanh_gradient_and_backward_formula():
    x = rng.standard_normal((2, 3, 4))
    text = 'name: "t" type: "TanH"'
    assert check_layer_gradient(layer_from_text(text), make_blobs(x), empty_blobs(1)) == x.size
    layer = layer_from_text(text)
    bottom, top = run_layer(layer, [x])
    dy = rng.standard_normal(x.shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dy / np.cosh(x) ** 2, rtol=1e-12)


def softmax_reference(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_text(axis):
    param = "" if axis is None else f" softmax_param {{ axis: {axis} }}"
    return 'name: "sm" type: "Softmax"' + param


SOFTMAX_CASES = [((2, 5, 3), None), ((2, 3, 4, 2), 1), ((2, 3, 4, 2), 2), ((2, 3, 4), -1), ((2, 3, 4, 2), -1),
                 ((3, 4), 0)]


@pytest.mark.parametrize("shape, axis", SOFTMAX_CASES)
def test_softmax_forward_float32(shape, axis):
    x = rng.standard_normal(shape) * 3
    _, top = run_layer(layer_from_text(softmax_text(axis), dtype=np.float32), [x])
    assert top[0].data.dtype == np.float32 and top[0].shape == shape
    expected = softmax_reference(x, 1 if axis is None else axis)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5, atol=1e-7)


def test_softmax_large_inputs_do_not_overflow():
    x = np.array([[1000.0, 999.0, -1000.0], [-5000.0, -5000.0, -5001.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, top = run_layer(layer_from_text(softmax_text(1), dtype=np.float32), [x])
    e = np.exp([0.0, -1.0, -2000.0])
    np.testing.assert_allclose(top[0].data[0], e / e.sum(), rtol=1e-6)
    e = np.exp([0.0, 0.0, -1.0])
    np.testing.assert_allclose(top[0].data[1], e / e.sum(), rtol=1e-6)


@pytest.mark.parametrize("shape, axis", SOFTMAX_CASES)
def test_softmax_gradient(shape, axis):
    x = rng.standard_normal(shape)
    layer = layer_from_text(softmax_text(axis))
    assert check_layer_gradient(layer, make_blobs(x), empty_blobs(1)) == x.size


def test_softmax_backward_formula_and_in_place():
    x = rng.standard_normal((2, 4, 3))
    dy = rng.standard_normal(x.shape)
    y = softmax_reference(x, 1)
    expected = y * (dy - np.sum(dy * y, axis=1, keepdims=True))
    layer = layer_from_text(softmax_text(1))
    bottom, top = run_layer(layer, [x])
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-12, atol=1e-14)

    blob = make_blobs(x)[0]
    in_place = layer_from_text(softmax_text(1))
    in_place.set_up([blob], [blob])
    in_place.run_forward([blob], [blob])
    np.testing.assert_allclose(blob.data, y, rtol=1e-12)
    blob.diff[...] = dy
    in_place.run_backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, expected, rtol=1e-12, atol=1e-14)


def test_softmax_axis_out_of_range():
    layer = layer_from_text(softmax_text(3))
    with pytest.raises(ShapeError, match="layer 'sm'.*axis 3"):
        layer.set_up(make_blobs(np.zeros((2, 3, 4))), empty_blobs(1))
