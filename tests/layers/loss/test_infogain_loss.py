"""InfogainLoss against its numpy reference: softmax inside, H from a file or a third bottom."""

import numpy as np
import pytest

from minicaffe.errors import GraphError, MinicaffeError, ShapeError
from minicaffe.io import write_binaryproto
from minicaffe.memory import shapes_only
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import loss_param_text, run_loss
from .reference import NORMALIZATIONS, infogain, softmax_with_loss

rng = np.random.default_rng(31)


def case(shape, axis=1):
    x = rng.standard_normal(shape) * 2
    axis_index = axis % len(shape)
    channels = shape[axis_index]
    labels = rng.integers(0, channels, size=shape[:axis_index] + shape[axis_index + 1:]).astype(np.float64)
    H = rng.uniform(0.0, 1.0, size=(channels, channels)) + np.eye(channels)
    return x, labels, H


def text(axis=None, source=None, **loss_options):
    fields = (f"axis: {axis} " if axis is not None else "") + (f'source: "{source}"' if source else "")
    param = f"infogain_loss_param {{ {fields} }}" if fields else ""
    return f'name: "info" type: "InfogainLoss" {param} {loss_param_text(**loss_options)}'


@pytest.mark.parametrize("shape, axis", [
    ((5, 4), None),             # a classifier: one row of scores per sample
    ((2, 3, 4), -1),            # N x T x C
    ((2, 3, 2, 3), 1),          # N x C x H x W
    ((2, 3, 2, 3), 2),
    ((1, 3, 300), 1),           # more than one block of locations, with a remainder
])
def test_matches_reference_with_h_bottom(shape, axis):
    x, labels, H = case(shape, axis if axis is not None else 1)
    loss, bottom, _ = run_loss(text(axis), [x, labels, H], weight=0.8)
    expected, grad, _ = infogain(x, labels, H, axis=axis if axis is not None else 1, weight=0.8)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("h_shape", [(1, 1, 3, 3), (3, 3), (9,)])
def test_h_from_a_binaryproto(tmp_path, h_shape):
    x, labels, H = case((4, 3, 2), 1)
    path = tmp_path / "H.binaryproto"
    write_binaryproto(H.reshape(h_shape).astype(np.float32), path)
    loss, bottom, _ = run_loss(text(source=path), [x, labels])
    expected, grad, _ = infogain(x, labels, H.astype(np.float32))
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("normalization", NORMALIZATIONS + (None,))
@pytest.mark.parametrize("ignore", [False, True])
def test_normalization_and_ignore_label(normalization, ignore):
    x, labels, H = case((3, 4, 2, 2))
    if ignore:
        labels.reshape(-1)[::3] = 255
    options = {**({"normalization": normalization} if normalization else {}),
               **({"ignore_label": 255} if ignore else {})}
    loss, bottom, _ = run_loss(text(**options), [x, labels, H], weight=0.6)
    expected, grad, _ = infogain(x, labels, H, ignore_label=255 if ignore else None,
                                 normalization=normalization or "VALID", weight=0.6)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)
    if ignore:
        assert not bottom[0].diff.transpose(0, 2, 3, 1)[labels == 255].any()


def test_identity_h_is_softmax_with_loss():
    x, labels, _ = case((3, 5, 4))
    loss, bottom, _ = run_loss(text(), [x, labels, np.eye(5)])
    expected, grad, _ = softmax_with_loss(x, labels)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)


def test_log_is_floored_at_1e_20_as_caffe():
    # classes 1 and 2 have probabilities e^-100 and e^-200: Caffe's clamp makes both logs -46.05
    x = np.array([[100.0, 0.0, -100.0]])
    H = np.ones((3, 3))
    loss, _, _ = run_loss(text(), [x, np.array([0.0]), H], dtype=np.float64)
    expected, _, _ = infogain(x, [0.0], H)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert loss == pytest.approx(-2 * np.log(1e-20), rel=1e-12)


def test_all_ignored_gives_zero_loss_and_gradient():
    x, labels, H = case((2, 3, 4))
    labels[:] = 1
    loss, bottom, _ = run_loss(text(ignore_label=1), [x, labels, H])
    assert loss == 0.0 and not bottom[0].diff.any()


def test_second_top_holds_probabilities():
    x, labels, H = case((4, 3), 1)
    _, _, top = run_loss(text(), [x, labels, H], num_tops=2)
    np.testing.assert_allclose(top[1].data, infogain(x, labels, H)[2], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape, axis, options", [
    ((3, 4), None, {}),
    ((2, 3, 2, 2), 1, {"ignore_label": 0, "normalization": "FULL"}),
    ((2, 2, 3), -1, {"normalization": "BATCH_SIZE"}),
])
def test_gradient_check(shape, axis, options):
    x, labels, H = case(shape, axis if axis is not None else 1)
    layer = layer_from_text(text(axis, **options))
    checked = GradientChecker(stepsize=1e-4, threshold=1e-6).check_layer(layer, make_blobs(x, labels, H),
                                                                          empty_blobs(1))
    assert checked == x.size                      # neither the labels nor H take a gradient


def test_neither_labels_nor_h_take_a_gradient():
    layer = layer_from_text(text())
    assert not layer.allow_force_backward(1) and not layer.allow_force_backward(2)
    x, labels, H = case((2, 3))
    with pytest.raises(GraphError, match="cannot backpropagate to its H input"):
        run_loss(text(), [x, labels, H], propagate=[True, False, True])


def test_missing_h_is_an_error():
    with pytest.raises(GraphError, match="layer 'info': InfogainLoss needs its H matrix"):
        layer_from_text(text()).set_up(make_blobs(np.zeros((2, 3)), np.zeros(2)), empty_blobs(1))


def test_unreadable_source_is_an_error_but_not_for_shape_inference(tmp_path):
    missing = tmp_path / "absent.binaryproto"
    with pytest.raises(MinicaffeError, match="absent.binaryproto: cannot read file"):
        layer_from_text(text(source=missing)).set_up(make_blobs(np.zeros((2, 3)), np.zeros(2)), empty_blobs(1))
    bottom, top = make_blobs(np.zeros((2, 3)), np.zeros(2)), empty_blobs(1)
    with shapes_only():
        layer_from_text(text(source=missing)).set_up(bottom, top)
    assert top[0].shape == ()


def test_h_size_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"layer 'info': H \(the third bottom\) must hold 3 x 3 values.*"
                                         r"expected \(3, 3\), got \(4, 4\)"):
        layer_from_text(text()).set_up(make_blobs(np.zeros((2, 3)), np.zeros(2), np.eye(4)), empty_blobs(1))


def test_label_count_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"layer 'info': the label count must equal.*expected \(8\), got \(2, 3\)"):
        layer_from_text(text()).set_up(make_blobs(np.zeros((2, 3, 4)), np.zeros((2, 3)), np.eye(3)),
                                       empty_blobs(1))


def test_label_out_of_range_is_an_error():
    with pytest.raises(MinicaffeError, match=r"layer 'info': label 3 at position 1 is outside \[0, 3\)"):
        run_loss(text(), [np.zeros((2, 3)), np.array([0.0, 3.0]), np.eye(3)])


def test_float64_is_exact():
    x, labels, H = case((2, 4, 3))
    loss, bottom, _ = run_loss(text(), [x, labels, H], dtype=np.float64, weight=1.5)
    expected, grad, _ = infogain(x, labels, H, weight=1.5)
    assert loss == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-11, atol=1e-14)
