"""numba.cuda kernels of GaussianKLLoss, BinaryCrossEntropyLoss, SoftlabelSoftmaxLoss (simulator)."""

import numpy as np
import pytest

from ..layers.loss.helpers import run_loss
from ..layers.loss.mocha_reference import binary_cross_entropy, gaussian_kl, softlabel_softmax

rng = np.random.default_rng(8)


@pytest.mark.parametrize("propagate", [[True, True], [False, True]])
def test_gaussian_kl(gpu_mode, propagate):
    mu, sigma = rng.standard_normal((3, 4)), rng.random((3, 4)) + 0.3
    loss, bottom, _ = run_loss('name: "kl" type: "GaussianKLLoss"', [mu, sigma], weight=0.5, propagate=propagate)
    expected, d_mu, d_sigma = gaussian_kl(mu, sigma, 0.5)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[1].diff, d_sigma, rtol=1e-4, atol=1e-6)
    if propagate[0]:
        np.testing.assert_allclose(bottom[0].diff, d_mu, rtol=1e-5, atol=1e-7)
    else:
        assert not bottom[0].diff.any()


def test_binary_cross_entropy(gpu_mode):
    p, y = rng.random((4, 3)) * 0.9 + 0.05, rng.random((4, 3))
    loss, bottom, _ = run_loss('name: "bce" type: "BinaryCrossEntropyLoss"', [p, y], weight=2.0, propagate=[True, True])
    expected, d_p, d_y = binary_cross_entropy(p, y, 2.0)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, d_p, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bottom[1].diff, d_y, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape, axis", [((3, 4), 1), ((2, 3, 2, 2), 1), ((2, 3, 4), 2)])
def test_softlabel_softmax(gpu_mode, shape, axis):
    x = rng.standard_normal(shape)
    raw = rng.random(shape) + 0.1
    q = raw / raw.sum(axis=axis, keepdims=True)
    text = f'name: "soft" type: "SoftlabelSoftmaxLoss" softmax_param {{ axis: {axis} }}'
    loss, bottom, _ = run_loss(text, [x, q], weight=0.7)
    expected, grad = softlabel_softmax(x, q, axis, 0.7)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)
