"""HingeLoss against its numpy references: Caffe's class-index form and Mocha's binary form."""

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import GraphError, MinicaffeError, MinicaffeWarning, ShapeError
from minicaffe.proto.text import parse_net
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import loss_param_text, run_loss
from .reference import NORMALIZATIONS, binary_hinge, hinge

rng = np.random.default_rng(17)


def away_from_kinks(x, margin):
    """Move values within 0.05 of +-margin (where the hinge bends) off the kink."""
    for kink in (margin, -margin):
        near = np.abs(x - kink) < 0.05
        x[near] = kink + 0.1
    return x


def class_case(shape, margin=1.0):
    x = away_from_kinks(rng.standard_normal(shape) * 1.5, margin)
    classes = int(np.prod(shape[1:]))
    return x, rng.integers(0, classes, size=shape[0]).astype(np.float64)


def binary_case(shape, margin=1.0):
    x = away_from_kinks(rng.standard_normal(shape) * 1.5, margin)
    return x, rng.choice([-1.0, 1.0], size=shape)


def text(norm=None, margin=None, **loss_options):
    fields = (f"norm: {norm} " if norm else "") + (f"margin: {margin}" if margin is not None else "")
    param = f"hinge_loss_param {{ {fields} }}" if fields else ""
    return f'name: "hinge" type: "HingeLoss" {param} {loss_param_text(**loss_options)}'


@pytest.mark.parametrize("norm", [None, "L1", "L2"])
@pytest.mark.parametrize("margin", [None, 0.5])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 2)])
def test_class_index_matches_reference(norm, margin, shape):
    x, labels = class_case(shape, margin or 1.0)
    loss, bottom, _ = run_loss(text(norm, margin), [x, labels], weight=0.6)
    expected, grad = hinge(x, labels, norm=norm or "L1", margin=margin or 1.0, weight=0.6)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_class_index_normalization_and_ignore_label(normalization, norm):
    x, labels = class_case((6, 4))
    labels[[1, 4]] = 9
    options = {"normalization": normalization, "ignore_label": 9}
    loss, bottom, _ = run_loss(text(norm, **options), [x, labels], weight=0.7)
    expected, grad = hinge(x, labels, norm=norm, ignore_label=9, normalization=normalization, weight=0.7)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)
    assert not bottom[0].diff[[1, 4]].any()


def test_unset_normalization_divides_by_the_batch_as_caffe():
    x, labels = class_case((5, 3))
    labels[0] = 9
    loss, _, _ = run_loss(text(ignore_label=9), [x, labels])
    assert loss == pytest.approx(hinge(x, labels, ignore_label=9, normalization="BATCH_SIZE")[0], rel=1e-5)
    assert loss != pytest.approx(hinge(x, labels, ignore_label=9, normalization="VALID")[0], rel=1e-3)


def test_class_index_hand_computed():
    # row 0: label 1; terms max(0, 1 + 0.5), max(0, 1 - 2), max(0, 1 - 3) = 1.5, 0, 0
    # row 1: label 0; terms max(0, 1 - 0.2), max(0, 1 + 0.1), max(0, 1 + 0) = 0.8, 1.1, 1
    x = np.array([[0.5, 2.0, -3.0], [0.2, 0.1, 0.0]])
    loss, bottom, _ = run_loss(text(), [x, np.array([1.0, 0.0])])
    assert loss == pytest.approx((1.5 + 0.8 + 1.1 + 1.0) / 2, rel=1e-6)
    np.testing.assert_allclose(bottom[0].diff, [[0.5, 0.0, 0.0], [-0.5, 0.5, 0.5]])


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("margin", [None, 2.0])
@pytest.mark.parametrize("shape", [(3, 4), (5,), (2, 3, 2)])
def test_binary_matches_reference(norm, margin, shape):
    x, y = binary_case(shape, margin or 1.0)
    loss, bottom, _ = run_loss(text(norm, margin), [x, y], weight=1.3)
    expected, grad = binary_hinge(x, y, norm=norm, margin=margin or 1.0, weight=1.3)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)


def test_binary_hand_computed():
    # Mocha's formula: sum max(0, 1 - y x) / N; N = 2
    x = np.array([[0.5, -2.0], [3.0, 0.0]])
    y = np.array([[1.0, -1.0], [-1.0, 1.0]])
    loss, bottom, _ = run_loss(text(), [x, y])
    assert loss == pytest.approx((0.5 + 0.0 + 4.0 + 1.0) / 2)
    np.testing.assert_allclose(bottom[0].diff, [[-0.5, 0.0], [0.5, -0.5]])


def test_binary_fixed_divisor_warns_once_about_normalization():
    x, y = binary_case((2, 3))
    with pytest.warns(MinicaffeWarning, match="layer 'binary_hinge': HingeLoss has a fixed divisor"):
        loss, _, _ = run_loss(text(normalization="NONE").replace('"hinge"', '"binary_hinge"', 1), [x, y])
    assert loss == pytest.approx(binary_hinge(x, y)[0], rel=1e-5)


def test_binary_labels_must_be_plus_or_minus_one():
    x, y = binary_case((2, 3))
    y[1, 2] = 0.0
    with pytest.raises(MinicaffeError, match=r"layer 'hinge': binary hinge labels must be -1 or \+1, got 0 at "
                                             r"position 5"):
        run_loss(text(), [x, y])


@pytest.mark.parametrize("options", [
    {"norm": "L1"},
    {"norm": "L2", "margin": 0.5},
    {"norm": "L2", "ignore_label": 2, "normalization": "VALID"},
])
def test_class_index_gradient_check(options):
    margin = options.get("margin", 1.0)
    x, labels = class_case((4, 3), margin)
    labels[0] = 2
    layer = layer_from_text(text(**options))
    checked = GradientChecker(stepsize=1e-4, threshold=1e-6).check_layer(layer, make_blobs(x, labels), empty_blobs(1))
    assert checked == x.size


@pytest.mark.parametrize("norm, margin", [("L1", None), ("L2", 1.5)])
def test_binary_gradient_check(norm, margin):
    x, y = binary_case((3, 4), margin or 1.0)
    layer = layer_from_text(text(norm, margin))
    checked = GradientChecker(stepsize=1e-4, threshold=1e-6).check_layer(layer, make_blobs(x, y), empty_blobs(1))
    assert checked == x.size


def test_label_count_mismatch_names_both_shapes():
    layer = layer_from_text(text())
    with pytest.raises(ShapeError, match=r"layer 'hinge': needs one class label per row.*expected \(2\), "
                                         r"got \(2, 3\)"):
        layer.set_up(make_blobs(np.zeros((2, 4)), np.zeros((2, 3))), empty_blobs(1))


def test_label_form_cannot_change_on_reshape():
    layer = layer_from_text(text())
    bottom = make_blobs(np.zeros((2, 4)), np.zeros(2))
    top = empty_blobs(1)
    layer.set_up(bottom, top)
    bottom[1].reshape(2, 4)
    with pytest.raises(ShapeError, match="set up for class-index labels"):
        layer.reshape(bottom, top)


def test_label_out_of_range_is_an_error():
    with pytest.raises(MinicaffeError, match=r"layer 'hinge': label 4 at position 1 is outside \[0, 4\)"):
        run_loss(text(), [np.zeros((2, 4)), np.array([0.0, 4.0])])


def test_no_gradient_to_labels():
    assert not layer_from_text(text()).allow_force_backward(1)
    with pytest.raises(GraphError, match="cannot backpropagate to its label"):
        run_loss(text(), [np.zeros((2, 3)), np.array([0.0, 1.0])], propagate=[True, True])


def test_float64_is_exact():
    x, labels = class_case((3, 5))
    loss, bottom, _ = run_loss(text("L2"), [x, labels], dtype=np.float64, weight=2.0)
    expected, grad = hinge(x, labels, norm="L2", weight=2.0)
    assert loss == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-13)


SEED_001_HINGE = '''
layer {
name: "loss"
type: "HingeLoss"
bottom: "fc8"
bottom: "label"
top: "loss"
# You can specify the 'norm' type (L1 or L2) and 'margin'
hinge_loss_param {
norm: L1 # Default is L1
margin: 1.0 # Default is 1
}
}
'''


def test_seed_001_block_runs_as_written():
    net = caffe.Net(parse_net(
        'layer { name: "in" type: "Input" top: "fc8" top: "label" '
        'input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }' + SEED_001_HINGE), caffe.TRAIN)
    x, labels = class_case((4, 6))
    net.blobs["fc8"].data[...] = x
    net.blobs["label"].data[...] = labels
    assert float(net.forward()["loss"]) == pytest.approx(hinge(x, labels)[0], rel=1e-5)
