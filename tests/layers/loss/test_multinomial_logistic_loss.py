"""MultinomialLogisticLoss against its numpy reference (probabilities in, clamped at 1e-20)."""

import numpy as np
import pytest

from minicaffe.errors import GraphError, MinicaffeError, ShapeError
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import loss_param_text, run_loss
from .reference import NORMALIZATIONS, multinomial_logistic

rng = np.random.default_rng(23)


def case(shape):
    scores = rng.standard_normal(shape)
    flat = scores.reshape(shape[0], -1)
    prob = (np.exp(flat) / np.exp(flat).sum(axis=1, keepdims=True)).reshape(shape)
    return prob, rng.integers(0, flat.shape[1], size=shape[0]).astype(np.float64)


def text(**loss_options):
    return f'name: "mll" type: "MultinomialLogisticLoss" {loss_param_text(**loss_options)}'


@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 2, 2)])
@pytest.mark.parametrize("weight", [1.0, 0.4])
def test_matches_reference(shape, weight):
    prob, labels = case(shape)
    loss, bottom, _ = run_loss(text(), [prob, labels], weight=weight)
    expected, grad = multinomial_logistic(prob, labels, weight=weight)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)
    picked = np.zeros(prob.shape[0:1] + (prob[0].size,), bool)
    picked[np.arange(shape[0]), labels.astype(int)] = True
    assert not bottom[0].diff.reshape(shape[0], -1)[~picked].any()


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_normalization_and_ignore_label(normalization):
    prob, labels = case((6, 3))
    labels[[0, 3, 4]] = -1
    loss, bottom, _ = run_loss(text(normalization=normalization, ignore_label=-1), [prob, labels], weight=0.5)
    expected, grad = multinomial_logistic(prob, labels, ignore_label=-1, normalization=normalization, weight=0.5)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)


def test_unset_normalization_is_caffes_batch_divisor():
    prob, labels = case((4, 3))
    labels[1] = 7
    loss, _, _ = run_loss(text(ignore_label=7), [prob, labels])
    assert loss == pytest.approx(multinomial_logistic(prob, labels, ignore_label=7)[0], rel=1e-5)
    kept = [0, 2, 3]
    assert loss == pytest.approx(-np.log(prob[kept, labels[kept].astype(int)]).sum() / 4, rel=1e-5)


def test_zero_probability_is_clamped_at_1e_20():
    prob = np.array([[0.0, 1.0], [0.5, 0.5]])
    loss, bottom, _ = run_loss(text(), [prob, np.array([0.0, 1.0])])
    assert loss == pytest.approx((-np.log(1e-20) - np.log(0.5)) / 2, rel=1e-6)
    assert np.isfinite(bottom[0].diff).all()
    np.testing.assert_allclose(bottom[0].diff, [[-0.5 / 1e-20, 0.0], [0.0, -1.0]], rtol=1e-6)


def test_gradient_check():
    prob, labels = case((4, 3))
    layer = layer_from_text(text(normalization="VALID", ignore_label=2))
    checked = GradientChecker(stepsize=1e-5, threshold=1e-6).check_layer(layer, make_blobs(prob, labels),
                                                                          empty_blobs(1))
    assert checked == prob.size


def test_label_count_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"layer 'mll': needs one label per row.*expected \(2\), got \(2, 3\)"):
        layer_from_text(text()).set_up(make_blobs(np.zeros((2, 3)), np.zeros((2, 3))), empty_blobs(1))


def test_label_out_of_range_is_an_error():
    with pytest.raises(MinicaffeError, match=r"layer 'mll': label -1 at position 0 is outside \[0, 3\)"):
        run_loss(text(), [np.full((2, 3), 1 / 3), np.array([-1.0, 0.0])])


def test_no_gradient_to_labels():
    assert not layer_from_text(text()).allow_force_backward(1)
    with pytest.raises(GraphError, match="cannot backpropagate to its label"):
        run_loss(text(), [np.full((2, 3), 1 / 3), np.array([0.0, 1.0])], propagate=[True, True])
