"""GaussianKLLoss, BinaryCrossEntropyLoss, SoftlabelSoftmaxLoss against numpy references."""

import numpy as np
import pytest

from minicaffe.errors import ShapeError
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import run_loss
from .mocha_reference import binary_cross_entropy, gaussian_kl, softlabel_softmax
from .reference import softmax_with_loss

rng = np.random.default_rng(31)


def soft_labels(shape, axis=1):
    raw = rng.random(shape) + 0.05
    return raw / raw.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("weight", [1.0, 0.2])
def test_gaussian_kl(weight):
    mu, sigma = rng.standard_normal((4, 5)), rng.random((4, 5)) + 0.3
    loss, bottom, _ = run_loss('name: "kl" type: "GaussianKLLoss"', [mu, sigma], weight=weight, propagate=[True, True])
    expected, d_mu, d_sigma = gaussian_kl(mu, sigma, weight)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, d_mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bottom[1].diff, d_sigma, rtol=1e-4, atol=1e-6)
    # the standard normal itself has no divergence
    zero, _, _ = run_loss('name: "kl" type: "GaussianKLLoss"', [np.zeros((2, 3)), np.ones((2, 3))])
    assert zero == pytest.approx(0.0, abs=1e-7)
    layer = layer_from_text('name: "kl" type: "GaussianKLLoss"')
    assert GradientChecker(stepsize=1e-5).check_layer(layer, make_blobs(mu, sigma), empty_blobs(1)) == 40


@pytest.mark.parametrize("weight", [1.0, 3.0])
def test_binary_cross_entropy_with_gradients_to_both(weight):
    p, y = rng.random((6, 3)) * 0.9 + 0.05, rng.random((6, 3))
    loss, bottom, _ = run_loss('name: "bce" type: "BinaryCrossEntropyLoss"', [p, y], weight=weight,
                               propagate=[True, True])
    expected, d_p, d_y = binary_cross_entropy(p, y, weight)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, d_p, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bottom[1].diff, d_y, rtol=1e-4, atol=1e-6)
    layer = layer_from_text('name: "bce" type: "BinaryCrossEntropyLoss"')
    assert GradientChecker(stepsize=1e-6).check_layer(layer, make_blobs(p, y), empty_blobs(1)) == 36


def test_binary_cross_entropy_stays_finite_at_the_edges():
    loss, bottom, _ = run_loss('name: "bce" type: "BinaryCrossEntropyLoss"',
                               [np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])], dtype=np.float64,
                               propagate=[True, True])
    assert np.isfinite(loss) and loss == pytest.approx(-2 * np.log(1e-7), rel=1e-3)
    assert np.isfinite(bottom[0].diff).all() and np.isfinite(bottom[1].diff).all()


@pytest.mark.parametrize("shape, axis", [((4, 5), 1), ((2, 3, 2, 3), 1), ((2, 3, 4), 2), ((2, 3, 4), -1)])
@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_softlabel_softmax(shape, axis, weight):
    x = rng.standard_normal(shape) * 2
    q = soft_labels(shape, axis)
    text = f'name: "soft" type: "SoftlabelSoftmaxLoss" softmax_param {{ axis: {axis} }}'
    loss, bottom, _ = run_loss(text, [x, q], weight=weight)
    expected, grad = softlabel_softmax(x, q, axis % len(shape), weight)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)


def test_one_hot_soft_labels_equal_softmax_loss():
    x = rng.standard_normal((3, 4, 2)) * 2
    labels = rng.integers(0, 4, (3, 2))
    one_hot = np.moveaxis(np.eye(4)[labels], -1, 1)
    soft, bottom, _ = run_loss('name: "soft" type: "SoftlabelSoftmaxLoss"', [x, one_hot], dtype=np.float64)
    hard, grad, _ = softmax_with_loss(x, labels)
    assert soft == pytest.approx(hard, rel=1e-12)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-10, atol=1e-14)


def test_softlabel_gradient_check_and_shape_error():
    x, q = rng.standard_normal((2, 3, 2)), soft_labels((2, 3, 2))
    layer = layer_from_text('name: "soft" type: "SoftlabelSoftmaxLoss"')
    assert GradientChecker(stepsize=1e-4).check_layer(layer, make_blobs(x, q), empty_blobs(1)) == 12
    with pytest.raises(ShapeError, match=r"layer 'soft'.*expected \(2, 3\), got \(2\)"):
        layer_from_text('name: "soft" type: "SoftlabelSoftmaxLoss"').set_up(
            make_blobs(np.zeros((2, 3)), np.zeros(2)), empty_blobs(1))
