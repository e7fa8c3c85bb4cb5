"""SigmoidCrossEntropyLoss against its numpy reference."""

import warnings

import numpy as np
import pytest

from minicaffe.errors import GraphError, ShapeError
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import loss_param_text, run_loss
from .reference import NORMALIZATIONS, sigmoid_cross_entropy

rng = np.random.default_rng(5)


def text(**options):
    return f'name: "sce" type: "SigmoidCrossEntropyLoss" {loss_param_text(**options)}'


def case(shape, soft=False):
    x = rng.standard_normal(shape) * 4
    t = rng.random(shape) if soft else rng.integers(0, 2, size=shape).astype(np.float64)
    return x, t


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 4), (3, 130)])
@pytest.mark.parametrize("weight", [1.0, 0.25])
def test_default_is_batch_size_normalization(shape, weight):
    x, t = case(shape, soft=True)
    loss, bottom, _ = run_loss(text(), [x, t], weight=weight)
    expected, grad = sigmoid_cross_entropy(x, t, weight=weight)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [False, True])
def test_normalization_and_ignore(normalization, ignore):
    x, t = case((3, 4, 5))
    if ignore:
        t[rng.random(t.shape) < 0.3] = -1
    options = {"normalization": normalization, **({"ignore_label": -1} if ignore else {})}
    loss, bottom, _ = run_loss(text(**options), [x, t], weight=1.5)
    expected, grad = sigmoid_cross_entropy(x, t, ignore_label=-1 if ignore else None,
                                           normalization=normalization, weight=1.5)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-7)


def test_legacy_normalize_true_means_valid():
    x, t = case((3, 4))
    t[0, :2] = 7
    loss, _, _ = run_loss(text(normalize=True, ignore_label=7), [x, t])
    assert loss == pytest.approx(sigmoid_cross_entropy(x, t, ignore_label=7, normalization="VALID")[0], rel=1e-5)


def test_stable_for_large_scores():
    x = np.array([[80.0, -80.0, 30.0, -30.0]])
    t = np.array([[0.0, 1.0, 1.0, 0.0]])
    loss, bottom, _ = run_loss(text(), [x, t])
    assert loss == pytest.approx(160.0, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, [[1.0, -1.0, 0.0, 0.0]], atol=1e-6)


def test_all_ignored():
    x, t = case((2, 3))
    t[:] = 4
    loss, bottom, _ = run_loss(text(ignore_label=4, normalization="VALID"), [x, t])
    assert loss == 0 and not bottom[0].diff.any()


@pytest.mark.parametrize("options", [{}, {"ignore_label": 0, "normalization": "VALID"}, {"normalization": "FULL"}])
def test_gradient_check(options):
    x, t = case((3, 4), soft=not options)
    layer = layer_from_text(text(**options))
    assert GradientChecker(stepsize=1e-4).check_layer(layer, make_blobs(x, t), empty_blobs(1)) == x.size


def test_count_mismatch_and_label_gradient():
    with pytest.raises(ShapeError, match=r"layer 'sce'.*same number of elements"):
        layer_from_text(text()).set_up(make_blobs(np.zeros((2, 3)), np.zeros((2, 4))), empty_blobs(1))
    with pytest.raises(GraphError, match="cannot backpropagate to its target"):
        run_loss(text(), list(case((2, 2))), propagate=[True, True])


def test_float64_is_exact():
    x, t = case((3, 7), soft=True)
    loss, bottom, _ = run_loss(text(), [x, t], dtype=np.float64)
    expected, grad = sigmoid_cross_entropy(x, t)
    assert loss == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-12)


def test_no_warning_for_classification_losses():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_loss(text(normalization="FULL"), list(case((2, 2))))
