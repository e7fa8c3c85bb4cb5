"""LSTMUnit: Caffe's cell equations in numpy, gradient checks, shape rules."""

import numpy as np
import pytest

from minicaffe.errors import ShapeError
from minicaffe.memory import shapes_only
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(11)
UNIT = 'name: "unit" type: "LSTMUnit"'
N, D = 3, 2


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference(c_prev, x, cont):
    """Caffe's LSTMUnit: gates i, f, o, g in that order along the last axis."""
    x = x.reshape(N, 4, D)
    i, f, o, g = sigmoid(x[:, 0]), sigmoid(x[:, 1]), sigmoid(x[:, 2]), np.tanh(x[:, 3])
    f = cont.reshape(N, 1) * f
    c = f * c_prev.reshape(N, D) + i * g
    return c.reshape(1, N, D), (o * np.tanh(c)).reshape(1, N, D)


def inputs(cont):
    return [rng.standard_normal((1, N, D)), rng.standard_normal((1, N, 4 * D)), np.asarray(cont, float).reshape(1, N)]


def test_forward_matches_caffe_equations():
    bottoms = inputs([1, 0, 1])
    _, top = run_layer(layer_from_text(UNIT, dtype=np.float32), bottoms, num_tops=2)
    c, h = reference(*bottoms)
    np.testing.assert_allclose(top[0].data, c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(top[1].data, h, rtol=1e-5, atol=1e-6)
    # cont 0 starts afresh: stream 1's cell is i * g alone, whatever c_prev was.
    x = bottoms[1].reshape(N, 4, D)
    np.testing.assert_allclose(top[0].data[0, 1], sigmoid(x[1, 0]) * np.tanh(x[1, 3]), rtol=1e-5)


def test_backward_matches_hand_derivatives():
    c_prev, x, cont = inputs([1, 0, 1])
    layer = layer_from_text(UNIT)
    bottom, top = run_layer(layer, [c_prev, x, cont], num_tops=2)
    dc, dh = rng.standard_normal((1, N, D)), rng.standard_normal((1, N, D))
    top[0].diff[...] = dc
    top[1].diff[...] = dh
    layer.run_backward(top, [True, True, False], bottom)
    xs = x.reshape(N, 4, D)
    i, s, o, g = sigmoid(xs[:, 0]), sigmoid(xs[:, 1]), sigmoid(xs[:, 2]), np.tanh(xs[:, 3])
    k = cont.reshape(N, 1)
    c = k * s * c_prev[0] + i * g
    total = dc[0] + dh[0] * o * (1 - np.tanh(c) ** 2)
    np.testing.assert_allclose(bottom[0].diff[0], total * k * s)
    expected = np.stack([total * g * i * (1 - i), total * c_prev[0] * k * s * (1 - s),
                         dh[0] * np.tanh(c) * o * (1 - o), total * i * (1 - g * g)], axis=1)
    np.testing.assert_allclose(bottom[1].diff.reshape(N, 4, D), expected)


@pytest.mark.parametrize("cont", [[1, 0, 1], [0.5, 1, 0.25]])
def test_gradient(cont):
    # Fractional cont too: the forget-gate derivative is cont * s (1 - s) (Caffe's f (1 - f) is wrong there).
    layer = layer_from_text(UNIT)
    bottom = make_blobs(*inputs(cont))
    assert GradientChecker(stepsize=1e-5, threshold=1e-7).check_layer(layer, bottom, empty_blobs(2)) == N * D * 5


def test_cont_takes_no_gradient():
    layer = layer_from_text(UNIT)
    assert layer.allow_force_backward(0) and layer.allow_force_backward(1)
    assert not layer.allow_force_backward(2)
    bottom, top = run_layer(layer, inputs([1, 1, 0]), num_tops=2)
    bottom[2].diff[...] = 7.0
    top[0].diff[...] = 1.0
    top[1].diff[...] = 1.0
    layer.run_backward(top, [False, False, True], bottom)   # asked anyway: a zero gradient
    assert not bottom[2].diff.any()


@pytest.mark.parametrize("shapes, message", [
    (((1, N, D), (1, N, 4 * D + 1), (1, N)), "1 x N x 4D"),
    (((2, N, D), (2, N, 4 * D), (2, N)), "must be 1 x N x D"),
    (((1, N, D), (1, N, 4 * D), (N,)), "cont"),
    (((1, N, D), (1, N + 1, 4 * D), (1, N)), "1 x N x 4D"),
])
def test_shape_errors(shapes, message):
    with pytest.raises(ShapeError, match=message):
        layer_from_text(UNIT).set_up(make_blobs(*[np.zeros(s) for s in shapes]), empty_blobs(2))


def test_shapes_without_data():
    layer = layer_from_text(UNIT)
    from minicaffe.blob import Blob
    bottom = [Blob((1, 4, 5)), Blob((1, 4, 20)), Blob((1, 4))]
    top = empty_blobs(2)
    with shapes_only():
        layer.set_up(bottom, top)
    assert [blob.shape for blob in top] == [(1, 4, 5), (1, 4, 5)]
    assert not any(blob.allocated for blob in bottom + top)
