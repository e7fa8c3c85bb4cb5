"""EuclideanLoss (and its Mocha name SquareLoss) against the numpy reference."""

import numpy as np
import pytest

from minicaffe.errors import MinicaffeWarning, ShapeError
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import run_loss
from .reference import euclidean

rng = np.random.default_rng(9)


@pytest.mark.parametrize("type_name", ["EuclideanLoss", "SquareLoss"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5)])
@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_matches_reference_with_both_gradients(type_name, shape, weight):
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    loss, bottom, top = run_loss(f'name: "l" type: "{type_name}"', [a, b], weight=weight, propagate=[True, True])
    expected, grad = euclidean(a, b, weight=weight)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert float(top[0].diff) == pytest.approx(weight)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bottom[1].diff, -grad, rtol=1e-5, atol=1e-7)


def test_propagate_down_per_bottom():
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    _, bottom, _ = run_loss('name: "l" type: "EuclideanLoss"', [a, b], propagate=[False, True])
    assert not bottom[0].diff.any() and bottom[1].diff.any()


def test_gradient_check_both_bottoms():
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    layer = layer_from_text('name: "l" type: "EuclideanLoss"')
    assert GradientChecker(stepsize=1e-4).check_layer(layer, make_blobs(a, b), empty_blobs(1)) == 24


def test_normalization_is_ignored_with_one_warning():
    text = 'name: "fixed" type: "EuclideanLoss" loss_param { normalization: NONE }'
    a, b = np.ones((2, 2)), np.zeros((2, 2))
    with pytest.warns(MinicaffeWarning, match="layer 'fixed': EuclideanLoss has a fixed divisor"):
        loss, _, _ = run_loss(text, [a, b])
    assert loss == pytest.approx(1.0)                         # 4 / 2 / 2, as without the option


def test_count_mismatch_names_shapes():
    with pytest.raises(ShapeError, match=r"expected \(2, 3\), got \(2, 4\)"):
        layer_from_text('name: "l" type: "EuclideanLoss"').set_up(
            make_blobs(np.zeros((2, 3)), np.zeros((2, 4))), empty_blobs(1))
