"""ContrastiveLoss against its numpy reference: both formulas, the margin, gradients to both features."""

import numpy as np
import pytest

from minicaffe.errors import GraphError, MinicaffeWarning, ShapeError
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import run_loss
from .reference import contrastive

rng = np.random.default_rng(37)


def case(shape, margin=1.0, legacy=False):
    """Pairs at distances spread around the margin, none on the kink (where the hinge bends)."""
    a = rng.standard_normal(shape)
    b = a + rng.standard_normal(shape) * 0.5
    n = shape[0]
    similar = (np.arange(n) % 2).astype(np.float64)
    diff = (a - b).reshape(n, -1)
    d = np.sqrt((diff ** 2).sum(axis=1))
    kink = np.sqrt(margin) if legacy else margin
    near = np.abs(d - kink) < 0.05
    b.reshape(n, -1)[near] = a.reshape(n, -1)[near] - diff[near] * (kink + 0.2) / d[near, None]
    return a, b, similar


def text(margin=None, legacy=None):
    fields = (f"margin: {margin} " if margin is not None else "") + \
        (f"legacy_version: {str(legacy).lower()}" if legacy is not None else "")
    param = f"contrastive_loss_param {{ {fields} }}" if fields else ""
    return f'name: "con" type: "ContrastiveLoss" {param}'


@pytest.mark.parametrize("legacy", [None, False, True])
@pytest.mark.parametrize("margin", [None, 2.0])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 1, 1)])
def test_matches_reference_with_both_gradients(legacy, margin, shape):
    a, b, similar = case(shape, margin or 1.0, bool(legacy))
    loss, bottom, _ = run_loss(text(margin, legacy), [a, b, similar], weight=0.7, propagate=[True, True, False])
    expected, grad = contrastive(a, b, similar, margin=margin or 1.0, legacy=bool(legacy), weight=0.7)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bottom[1].diff, -grad, rtol=1e-5, atol=1e-7)


def test_hand_computed():
    # pair 0 similar at distance 0.5: 0.25; pair 1 dissimilar at distance 0.5, margin 1: (1 - 0.5)^2 = 0.25;
    # pair 2 dissimilar at distance 3, beyond the margin: 0. Sum / 2N = 0.5 / 6.
    a = np.array([[0.5, 0.0], [0.0, 0.5], [3.0, 0.0]])
    b = np.zeros((3, 2))
    loss, bottom, _ = run_loss(text(), [a, b, np.array([1.0, 0.0, 0.0])])
    assert loss == pytest.approx(0.5 / 6, rel=1e-6)
    # dissimilar pair 1: -(1 - 0.5) / (0.5 + 1e-4) * (a - b) / N
    np.testing.assert_allclose(bottom[0].diff, [[0.5 / 3, 0.0], [0.0, -0.5 / 0.5001 * 0.5 / 3], [0.0, 0.0]],
                               rtol=1e-6)


def test_labels_are_truncated_to_integers():
    # 0.7 truncates to 0: dissimilar (Caffe's static_cast<int>); 2 is nonzero: similar
    a, b = np.array([[0.3], [0.3]]), np.zeros((2, 1))
    loss, _, _ = run_loss(text(), [a, b, np.array([0.7, 2.0])])
    assert loss == pytest.approx(((1 - 0.3) ** 2 + 0.09) / 4, rel=1e-6)


@pytest.mark.parametrize("propagate", [[True, False, False], [False, True, False]])
def test_propagate_down_per_bottom(propagate):
    a, b, similar = case((4, 2))
    _, bottom, _ = run_loss(text(), [a, b, similar], propagate=propagate)
    assert bool(bottom[0].diff.any()) == propagate[0] and bool(bottom[1].diff.any()) == propagate[1]


@pytest.mark.parametrize("legacy, margin", [(True, 2.0), (False, 1.5)])
def test_gradient_check(legacy, margin):
    a, b, similar = case((6, 3), margin, legacy)
    layer = layer_from_text(text(margin, legacy))
    # The non-legacy gradient divides by d + 1e-4 (Caffe's), so it is the derivative only up to 1e-4/d.
    checker = GradientChecker(stepsize=1e-5, threshold=1e-6 if legacy else 1e-3)
    checked = checker.check_layer(layer, make_blobs(a, b, similar), empty_blobs(1))
    assert checked == a.size + b.size


def test_normalization_is_ignored_with_one_warning():
    a, b, similar = case((2, 3))
    with pytest.warns(MinicaffeWarning, match="layer 'con': ContrastiveLoss has a fixed divisor"):
        loss, _, _ = run_loss(text() + " loss_param { normalization: NONE }", [a, b, similar])
    assert loss == pytest.approx(contrastive(a, b, similar)[0], rel=1e-5)


def test_feature_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"layer 'con': the two feature blobs.*expected \(2, 3\), got \(2, 4\)"):
        layer_from_text(text()).set_up(make_blobs(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2)),
                                       empty_blobs(1))


def test_label_count_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"layer 'con': needs one similarity label per pair.*expected \(2\), "
                                         r"got \(3\)"):
        layer_from_text(text()).set_up(make_blobs(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3)),
                                       empty_blobs(1))


def test_no_gradient_to_labels():
    layer = layer_from_text(text())
    assert layer.allow_force_backward(0) and layer.allow_force_backward(1) and not layer.allow_force_backward(2)
    a, b, similar = case((2, 2))
    with pytest.raises(GraphError, match="cannot backpropagate to its similarity labels"):
        run_loss(text(), [a, b, similar], propagate=[True, False, True])
