"""Input, Split, ReLU, InnerProduct, EuclideanLoss: numpy references and gradient checks."""

import numpy as np
import pytest

from minicaffe.errors import ShapeError
from minicaffe.testing import GradientChecker, check_layer_gradient, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(3)


def test_input_shapes():
    layer = layer_from_text('name: "in" type: "Input" top: "a" top: "b" '
                            'input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } }', dtype=np.float32)
    top = empty_blobs(2, dtype=np.float32)
    layer.set_up([], top)
    assert [blob.shape for blob in top] == [(2, 3), (2,)]
    one = layer_from_text('name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 4 } }')
    top = empty_blobs(2)
    one.set_up([], top)
    assert [blob.shape for blob in top] == [(4,), (4,)]
    bad = layer_from_text('name: "in" type: "Input" top: "a" top: "b" top: "c" '
                          'input_param { shape { dim: 1 } shape { dim: 2 } }')
    with pytest.raises(ShapeError, match="layer 'in'.*2 shapes for 3 tops"):
        bad.set_up([], empty_blobs(3))


def test_split_shares_data_and_sums_diffs():
    layer = layer_from_text('name: "s" type: "Split"')
    bottom, top = run_layer(layer, [rng.standard_normal((2, 3))], num_tops=3)
    for blob in top:
        np.testing.assert_array_equal(blob.data, bottom[0].data)
        assert np.shares_memory(blob.data, bottom[0].data)
    diffs = [rng.standard_normal((2, 3)) for _ in range(3)]
    for blob, diff in zip(top, diffs):
        blob.diff[...] = diff
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, sum(diffs))


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_forward_and_gradient(slope):
    x = rng.standard_normal((2, 3, 4))
    x[np.abs(x) < 0.05] = 0.5                              # stay off the kink
    text = f'name: "r" type: "ReLU" relu_param {{ negative_slope: {slope} }}'
    _, top = run_layer(layer_from_text(text, dtype=np.float32), [x])
    np.testing.assert_allclose(top[0].data, np.where(x > 0, x, slope * x), rtol=1e-6)
    assert check_layer_gradient(layer_from_text(text), make_blobs(x), empty_blobs(1)) == x.size


def test_relu_in_place():
    x = rng.standard_normal((3, 4))
    layer = layer_from_text('name: "r" type: "ReLU" relu_param { negative_slope: 0.2 }')
    blob = make_blobs(x)[0]
    layer.set_up([blob], [blob])
    layer.run_forward([blob], [blob])
    np.testing.assert_allclose(blob.data, np.where(x > 0, x, 0.2 * x))
    blob.diff[...] = 1.0
    layer.run_backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, np.where(x > 0, 1.0, 0.2))


def inner_product_reference(x, weight, bias, axis, transpose):
    m = int(np.prod(x.shape[:axis]))
    w_nk = weight.T if transpose else weight
    y = x.reshape(m, -1) @ w_nk.T
    if bias is not None:
        y = y + bias
    return y.reshape(x.shape[:axis] + (w_nk.shape[0],))


@pytest.mark.parametrize("axis, transpose, bias", [(1, False, True), (1, True, True), (2, False, False), (-1, False, True)])
def test_inner_product(axis, transpose, bias):
    x = rng.standard_normal((2, 3, 4))
    text = (f'name: "ip" type: "InnerProduct" inner_product_param {{ num_output: 5 axis: {axis} '
            f'transpose: {str(transpose).lower()} bias_term: {str(bias).lower()} '
            'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 } }')
    layer = layer_from_text(text, dtype=np.float32)
    _, top = run_layer(layer, [x])
    k = int(np.prod(x.shape[axis:]))
    expected_weight_shape = (k, 5) if transpose else (5, k)
    assert layer.blobs[0].shape == expected_weight_shape
    assert len(layer.blobs) == (2 if bias else 1)
    expected = inner_product_reference(x, layer.blobs[0].data, layer.blobs[1].data if bias else None,
                                       axis % 3, transpose)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5, atol=1e-5)
    assert check_layer_gradient(layer_from_text(text), make_blobs(x), empty_blobs(1)) > 0


def test_inner_product_rejects_changed_input_size():
    layer = layer_from_text('name: "ip" type: "InnerProduct" inner_product_param { num_output: 2 }')
    bottom, top = run_layer(layer, [np.ones((2, 3))])
    bottom[0].reshape(2, 4)
    with pytest.raises(ShapeError, match=r"layer 'ip'.*expected \(3\), got \(4\)"):
        layer.reshape(bottom, top)


def test_inner_product_param_diffs_accumulate():
    layer = layer_from_text('name: "ip" type: "InnerProduct" inner_product_param { num_output: 2 '
                            'weight_filler { type: "gaussian" } }')
    bottom, top = run_layer(layer, [rng.standard_normal((3, 4))])
    top[0].diff[...] = 1.0
    layer.run_backward(top, [False], bottom)
    once = layer.blobs[0].diff.copy()
    layer.run_backward(top, [False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once)


@pytest.mark.parametrize("loss_weight", [1.0, 0.3])
def test_euclidean_loss(loss_weight):
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    text = f'name: "l" type: "EuclideanLoss" loss_weight: {loss_weight}'
    layer = layer_from_text(text, dtype=np.float32)
    bottom, top = run_layer(layer, [a, b])
    assert top[0].shape == ()
    np.testing.assert_allclose(top[0].data, np.sum((a - b) ** 2) / 4 / 2, rtol=1e-5)
    assert top[0].diff == pytest.approx(loss_weight)       # the loss weight lives in the top's diff
    layer.run_backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[0].diff, loss_weight * (a - b) / 4, rtol=1e-5)
    np.testing.assert_allclose(bottom[1].diff, -loss_weight * (a - b) / 4, rtol=1e-5)
    checker = GradientChecker()
    assert checker.check_layer(layer_from_text(text), make_blobs(a, b), empty_blobs(1)) == 24


def test_split_gradient():
    x = rng.standard_normal((2, 3))
    assert check_layer_gradient(layer_from_text('name: "s" type: "Split"'), make_blobs(x), empty_blobs(3)) == 6
