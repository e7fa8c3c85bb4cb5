"""SoftmaxWithLoss against its numpy reference, over every option that changes the math."""

import numpy as np
import pytest

from minicaffe.errors import GraphError, MinicaffeError, ShapeError
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import loss_param_text, run_loss
from .reference import NORMALIZATIONS, softmax_with_loss

rng = np.random.default_rng(42)


def case(shape, axis, ignore_fraction=0.0, ignore_label=None):
    x = rng.standard_normal(shape) * 3
    axis_index = axis % len(shape)
    label_shape = shape[:axis_index] + shape[axis_index + 1:]
    labels = rng.integers(0, shape[axis_index], size=label_shape).astype(np.float64)
    if ignore_label is not None:
        labels[rng.random(label_shape) < ignore_fraction] = ignore_label
    return x, labels


def text(axis=1, **loss_options):
    return f'name: "swl" type: "SoftmaxWithLoss" softmax_param {{ axis: {axis} }} {loss_param_text(**loss_options)}'


@pytest.mark.parametrize("shape, axis", [
    ((5, 7), 1),                 # classification: one row per location
    ((5, 7), -1),
    ((2, 4, 3), -1),             # N x T x C, labels N x T
    ((2, 3, 4, 5), 1),           # segmentation N x C x H x W
    ((2, 3, 4, 5), 2),
    ((1, 3, 300), 1),            # more than one block of locations, with a remainder
])
@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_matches_reference(shape, axis, weight):
    x, labels = case(shape, axis)
    loss, bottom, _ = run_loss(text(axis), [x, labels], weight=weight)
    expected, grad, _ = softmax_with_loss(x, labels, axis=axis, weight=weight)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [False, True])
def test_normalization_modes_and_ignore_label(normalization, ignore):
    x, labels = case((3, 4, 2, 5), 1, ignore_fraction=0.4 if ignore else 0.0, ignore_label=255 if ignore else None)
    options = {"normalization": normalization}
    if ignore:
        options["ignore_label"] = 255
    loss, bottom, _ = run_loss(text(1, **options), [x, labels], weight=0.7)
    expected, grad, _ = softmax_with_loss(x, labels, ignore_label=255 if ignore else None,
                                          normalization=normalization, weight=0.7)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)
    if ignore:
        ignored = (labels == 255)
        assert not bottom[0].diff.transpose(0, 2, 3, 1)[ignored].any()


@pytest.mark.parametrize("normalize, mode", [(False, "BATCH_SIZE"), (True, "VALID")])
def test_legacy_normalize_flag(normalize, mode):
    x, labels = case((2, 3, 2, 2), 1, ignore_fraction=0.3, ignore_label=-1)
    loss, _, _ = run_loss(text(1, normalize=normalize, ignore_label=-1), [x, labels])
    expected, _, _ = softmax_with_loss(x, labels, ignore_label=-1, normalization=mode)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_normalization_wins_over_legacy_normalize():
    x, labels = case((2, 3, 2, 2), 1)
    loss, _, _ = run_loss(text(1, normalize=False, normalization="NONE"), [x, labels])
    assert loss == pytest.approx(softmax_with_loss(x, labels, normalization="NONE")[0], rel=1e-5)


def test_all_labels_ignored_gives_zero_loss_and_gradient():
    x, labels = case((2, 3, 4), 1)
    labels[:] = 9
    loss, bottom, _ = run_loss(text(1, ignore_label=9), [x, labels])
    assert loss == 0.0
    assert not bottom[0].diff.any() and np.isfinite(bottom[0].diff).all()


def test_second_top_holds_probabilities():
    x, labels = case((4, 6), 1)
    loss, _, top = run_loss(text(1), [x, labels], num_tops=2)
    _, _, prob = softmax_with_loss(x, labels)
    np.testing.assert_allclose(top[1].data, prob, rtol=1e-5, atol=1e-7)
    assert top[1].shape == x.shape


def test_extreme_scores_stay_finite():
    # log-sum-exp: a label scored 200 below the best still has a finite loss (Caffe caps it at 87.3)
    x = np.array([[200.0, 0.0, -200.0]])
    loss, bottom, _ = run_loss(text(1), [x, np.array([2.0])])
    assert loss == pytest.approx(400.0, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, [[1.0, 0.0, -1.0]], atol=1e-6)


@pytest.mark.parametrize("shape, axis, options", [
    ((3, 5), 1, {}),
    ((2, 3, 2, 3), 1, {"ignore_label": 1, "normalization": "VALID"}),
    ((2, 3, 2, 3), -2, {"normalization": "FULL"}),
    ((2, 4, 3), -1, {"normalization": "BATCH_SIZE", "ignore_label": 0}),
    ((2, 3, 4), 1, {"normalization": "NONE"}),
])
def test_gradient_check(shape, axis, options):
    x, labels = case(shape, axis)
    layer = layer_from_text(text(axis, **options))
    checked = GradientChecker(stepsize=1e-4, threshold=1e-6).check_layer(layer, make_blobs(x, labels), empty_blobs(1))
    assert checked == x.size                               # the label bottom is never checked


def test_label_count_mismatch_names_both_shapes():
    layer = layer_from_text(text(1))
    with pytest.raises(ShapeError, match=r"layer 'swl'.*label count must equal.*expected \(12\), got \(2, 5\)"):
        layer.set_up(make_blobs(np.zeros((2, 3, 6)), np.zeros((2, 5))), empty_blobs(1))


def test_label_out_of_range_is_an_error():
    with pytest.raises(MinicaffeError, match=r"layer 'swl': label 7 at position 1 is outside \[0, 3\)"):
        run_loss(text(1), [np.zeros((2, 3)), np.array([0.0, 7.0])])


def test_no_gradient_to_labels():
    layer = layer_from_text(text(1))
    assert not layer.allow_force_backward(1)
    with pytest.raises(GraphError, match="cannot backpropagate to its label"):
        run_loss(text(1), [np.zeros((2, 3)), np.array([0.0, 1.0])], propagate=[True, True])


def test_mocha_name_is_accepted():
    x, labels = case((3, 4), 1)
    loss, _, _ = run_loss(text(1).replace("SoftmaxWithLoss", "SoftmaxLoss"), [x, labels])
    assert loss == pytest.approx(softmax_with_loss(x, labels)[0], rel=1e-5)


def test_float64_is_exact():
    x, labels = case((2, 5, 3), 1)
    loss, bottom, _ = run_loss(text(1), [x, labels], dtype=np.float64, weight=2.0)
    expected, grad, _ = softmax_with_loss(x, labels, weight=2.0)
    assert loss == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-12, atol=1e-15)
