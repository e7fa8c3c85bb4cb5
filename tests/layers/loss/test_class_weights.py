"""Class weights of SoftmaxWithLoss and MultinomialLogisticLoss, and the latter's per-location form."""

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import GraphError, MinicaffeError, ShapeError
from minicaffe.proto.text import parse_net
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .class_weight_reference import full_weights, weighted_multinomial, weighted_softmax
from .helpers import run_loss
from .reference import NORMALIZATIONS

rng = np.random.default_rng(5)
MODES = ("LOCAL", "GLOBAL", "AS_GIVEN")


def softmax_case(shape, axis=1, ignore_label=None):
    x = rng.standard_normal(shape) * 2
    label_shape = shape[:axis] + shape[axis + 1:]
    labels = rng.integers(0, shape[axis], size=label_shape).astype(np.float64)
    if ignore_label is not None:
        labels[rng.random(label_shape) < 0.3] = ignore_label
    return x, labels


def probabilities(shape):
    raw = rng.random(shape) + 0.05
    return raw / raw.sum(axis=1, keepdims=True)


def loss_text(kind, mode=None, class_weight=(), ignore_label=None, normalization=None, axis=None):
    fields = [f"class_weight: {w}" for w in class_weight]
    if mode is not None:
        fields.append(f"weight_normalization: {mode}")
    if ignore_label is not None:
        fields.append(f"ignore_label: {ignore_label}")
    if normalization is not None:
        fields.append(f"normalization: {normalization}")
    softmax = f"softmax_param {{ axis: {axis} }}" if axis is not None else ""
    return f'name: "cw" type: "{kind}" {softmax} loss_param {{ {" ".join(fields)} }}'


def check(loss, bottom, expected, grad, rtol=1e-4):
    assert loss == pytest.approx(expected, rel=rtol)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=rtol, atol=1e-6)


# ---------------------------------------------------------------- the reference's own rules

def test_reference_normalizations_hold_their_sums():
    w = rng.random((3, 4, 5)) + 0.1                      # C=3 x H=4 x W=5, one data point
    local = full_weights(w, (2, 3, 4, 5), 1, "LOCAL")
    np.testing.assert_allclose(local.sum(axis=1), 3.0)
    global_ = full_weights(w, (2, 3, 4, 5), 1, "GLOBAL")
    np.testing.assert_allclose(global_.reshape(2, -1).sum(axis=1), 3 * 20)
    np.testing.assert_array_equal(full_weights(w, (2, 3, 4, 5), 1, "AS_GIVEN")[1], w)


# ---------------------------------------------------------------- SoftmaxWithLoss

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape, axis", [((5, 4), 1), ((2, 3, 2, 3), 1), ((2, 3, 4, 2), 2)])
def test_softmax_class_weight_vector(mode, shape, axis):
    x, labels = softmax_case(shape, axis)
    class_weight = rng.uniform(0.2, 3.0, shape[axis]).round(3)
    loss, bottom, _ = run_loss(loss_text("SoftmaxWithLoss", mode, class_weight, axis=axis), [x, labels], weight=0.6)
    expected, grad = weighted_softmax(x, labels, class_weight, axis=axis, mode=mode, loss_weight=0.6)
    check(loss, bottom, expected, grad)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", ["one data point", "batch of one", "full shape"])
def test_softmax_weights_bottom(mode, source):
    shape = (3, 4, 2, 3)
    x, labels = softmax_case(shape)
    weights = rng.uniform(0.1, 2.0, {"one data point": shape[1:], "batch of one": (1,) + shape[1:],
                                     "full shape": shape}[source])
    loss, bottom, _ = run_loss(loss_text("SoftmaxWithLoss", mode), [x, labels, weights], weight=1.5)
    expected, grad = weighted_softmax(x, labels, weights, mode=mode, loss_weight=1.5)
    check(loss, bottom, expected, grad)
    assert not bottom[2].diff.any()                      # the weights take no gradient


@pytest.mark.parametrize("mode", ["LOCAL", "GLOBAL"])
def test_softmax_weights_bottom_at_axis_2(mode):
    shape = (2, 2, 3, 4)                                 # N x A x C x W, classes on axis 2
    x, labels = softmax_case(shape, axis=2)
    for weights in (rng.uniform(0.1, 2.0, shape[1:]), rng.uniform(0.1, 2.0, shape)):
        loss, bottom, _ = run_loss(loss_text("SoftmaxWithLoss", mode, axis=2), [x, labels, weights])
        expected, grad = weighted_softmax(x, labels, weights, axis=2, mode=mode)
        check(loss, bottom, expected, grad)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_softmax_weights_with_ignore_label_and_normalization(normalization):
    x, labels = softmax_case((2, 3, 3, 4), ignore_label=255)
    weights = rng.uniform(0.1, 2.0, x.shape)
    loss, bottom, _ = run_loss(loss_text("SoftmaxWithLoss", "GLOBAL", ignore_label=255, normalization=normalization),
                               [x, labels, weights], weight=0.8)
    expected, grad = weighted_softmax(x, labels, weights, mode="GLOBAL", ignore_label=255,
                                      normalization=normalization, loss_weight=0.8)
    check(loss, bottom, expected, grad)
    assert not bottom[0].diff.transpose(0, 2, 3, 1)[labels == 255].any()


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5)])
def test_equal_weights_give_the_unweighted_loss(shape):
    x, labels = softmax_case(shape)
    plain, plain_bottom, _ = run_loss(loss_text("SoftmaxWithLoss"), [x, labels], dtype=np.float64)
    for mode in ("LOCAL", "GLOBAL"):
        loss, bottom, _ = run_loss(loss_text("SoftmaxWithLoss", mode, [0.7] * shape[1]), [x, labels], dtype=np.float64)
        assert loss == pytest.approx(plain, rel=1e-14)
        np.testing.assert_allclose(bottom[0].diff, plain_bottom[0].diff, rtol=1e-13, atol=1e-16)
    ones, bottom, _ = run_loss(loss_text("SoftmaxWithLoss", "AS_GIVEN"), [x, labels, np.ones(shape[1:])])
    plain32, plain32_bottom, _ = run_loss(loss_text("SoftmaxWithLoss"), [x, labels])
    assert ones == plain32
    np.testing.assert_array_equal(bottom[0].diff, plain32_bottom[0].diff)


def test_weights_change_the_loss():
    x, labels = softmax_case((4, 3))
    labels[:] = [0, 0, 1, 2]
    heavy_first, _, _ = run_loss(loss_text("SoftmaxWithLoss", "AS_GIVEN", [10, 1, 1]), [x, labels])
    plain, _, _ = run_loss(loss_text("SoftmaxWithLoss"), [x, labels])
    assert heavy_first > 2 * plain


def test_one_hot_soft_labels_equal_uniformly_weighted_softmax_at_axis_2():
    x, labels = softmax_case((2, 2, 3, 2), axis=2)
    one_hot = np.moveaxis(np.eye(3)[labels.astype(int)], -1, 2)
    soft, soft_bottom, _ = run_loss('name: "s" type: "SoftlabelSoftmaxLoss" softmax_param { axis: 2 }',
                                    [x, one_hot], dtype=np.float64)
    hard, hard_bottom, _ = run_loss(loss_text("SoftmaxWithLoss", "LOCAL", [2, 2, 2], axis=2), [x, labels],
                                    dtype=np.float64)
    assert soft == pytest.approx(hard, rel=1e-12)
    np.testing.assert_allclose(soft_bottom[0].diff, hard_bottom[0].diff, rtol=1e-10, atol=1e-14)


def test_weights_summing_to_zero_count_nothing():
    x, labels = softmax_case((3, 4))
    loss, bottom, _ = run_loss(loss_text("SoftmaxWithLoss", "LOCAL", [0, 0, 0, 0]), [x, labels])
    assert loss == 0.0 and not bottom[0].diff.any()


@pytest.mark.parametrize("shape, axis, weights_shape, mode", [
    ((2, 3, 2, 2), 1, (3, 2, 2), "LOCAL"),
    ((2, 3, 2, 2), 1, (2, 3, 2, 2), "GLOBAL"),
    ((2, 2, 3), 2, (2, 3), "AS_GIVEN"),
])
def test_softmax_weighted_gradient_check(shape, axis, weights_shape, mode):
    x, labels = softmax_case(shape, axis, ignore_label=-1)
    weights = rng.uniform(0.2, 2.0, weights_shape)
    layer = layer_from_text(loss_text("SoftmaxWithLoss", mode, ignore_label=-1, axis=axis))
    checked = GradientChecker(stepsize=1e-4, threshold=1e-6).check_layer(
        layer, make_blobs(x, labels, weights), empty_blobs(1))
    assert checked == x.size                             # neither labels nor weights are checked


def test_class_weight_errors():
    x, labels = softmax_case((2, 3))
    with pytest.raises(ShapeError, match=r"layer 'cw'.*one weight per class \(3 classes\), got 2"):
        run_loss(loss_text("SoftmaxWithLoss", class_weight=[1, 2]), [x, labels])
    with pytest.raises(GraphError, match="either from loss_param.class_weight or from a weights bottom"):
        run_loss(loss_text("SoftmaxWithLoss", class_weight=[1, 2, 3]), [x, labels, np.ones(3)])
    with pytest.raises(ShapeError, match=r"weights bottom must have the prediction's shape \(2, 3\)"):
        run_loss(loss_text("SoftmaxWithLoss"), [x, labels, np.ones((2, 2))])
    for kind in ("SoftmaxWithLoss", "MultinomialLogisticLoss"):
        layer = layer_from_text(loss_text(kind))
        assert not layer.allow_force_backward(2)
        with pytest.raises(GraphError, match="cannot backpropagate to its class weights"):
            run_loss(loss_text(kind), [probabilities((2, 3)), labels, np.ones(3)], propagate=[True, False, True])
    with pytest.raises(GraphError, match="at most 3 bottom"):
        run_loss(loss_text("SoftmaxWithLoss"), [x, labels, np.ones(3), np.ones(3)])


def test_weights_bottom_in_a_net_under_force_backward():
    text = """force_backward: true
layer { name: "in" type: "Input" top: "score" top: "label" top: "weights"
        input_param { shape { dim: 2 dim: 3 dim: 4 } shape { dim: 2 dim: 4 } shape { dim: 3 dim: 4 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" bottom: "weights" top: "loss"
        loss_weight: 2 loss_param { weight_normalization: GLOBAL } }
"""
    x, labels = softmax_case((2, 3, 4))
    weights = rng.uniform(0.2, 2.0, (3, 4))
    net = caffe.Net(parse_net(text), caffe.TRAIN)
    for name, value in (("score", x), ("label", labels), ("weights", weights)):
        net.blobs[name].data[...] = value
    net.forward()
    net.backward()
    expected, grad = weighted_softmax(x, labels, weights, mode="GLOBAL", loss_weight=2.0)
    assert net.last_loss == pytest.approx(2 * expected, rel=1e-5)
    np.testing.assert_allclose(net.blobs["score"].diff, grad, rtol=1e-4, atol=1e-6)
    assert not net.blobs["weights"].diff.any()


# ---------------------------------------------------------------- MultinomialLogisticLoss

@pytest.mark.parametrize("normalization", [None, "FULL", "BATCH_SIZE", "NONE"])
def test_multinomial_per_location_divides_as_mocha(normalization):
    p = probabilities((2, 3, 2, 3))
    labels = rng.integers(0, 3, (2, 1, 2, 3)).astype(np.float64)
    loss, bottom, _ = run_loss(loss_text("MultinomialLogisticLoss", normalization=normalization), [p, labels],
                               weight=0.5)
    expected, grad = weighted_multinomial(p, labels, normalization=normalization, loss_weight=0.5)
    check(loss, bottom, expected, grad)
    if normalization is None:                            # Mocha: the mean over N * S locations
        picked = np.take_along_axis(p, labels.astype(int), axis=1)
        assert loss == pytest.approx(-np.log(picked).mean(), rel=1e-5)


def test_multinomial_per_location_clamps_and_ignores():
    p = probabilities((2, 3, 4))
    p[0, 1, 0] = 0.0
    labels = np.array([[1, 2, 255, 0], [255, 0, 1, 2]], dtype=np.float64)
    loss, bottom, _ = run_loss(loss_text("MultinomialLogisticLoss", ignore_label=255), [p, labels], dtype=np.float64)
    expected, grad = weighted_multinomial(p, labels, ignore_label=255)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert loss > -np.log(1e-20) / 6 and np.isfinite(bottom[0].diff).all()
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", ["class_weight", "one data point", "full shape"])
def test_multinomial_weighted_per_location(mode, source):
    p = probabilities((2, 3, 2, 2))
    labels = rng.integers(0, 3, (2, 2, 2)).astype(np.float64)
    if source == "class_weight":
        weights = rng.uniform(0.2, 3.0, 3).round(3)
        text, arrays = loss_text("MultinomialLogisticLoss", mode, weights), [p, labels]
    else:
        weights = rng.uniform(0.2, 2.0, p.shape[1:] if source == "one data point" else p.shape)
        text, arrays = loss_text("MultinomialLogisticLoss", mode), [p, labels, weights]
    loss, bottom, _ = run_loss(text, arrays, weight=1.2)
    expected, grad = weighted_multinomial(p, labels, weights, mode=mode, loss_weight=1.2)
    check(loss, bottom, expected, grad)


@pytest.mark.parametrize("mode", MODES)
def test_multinomial_weighted_per_item_keeps_caffe_divisor(mode):
    p = probabilities((4, 5))
    labels = rng.integers(0, 5, 4).astype(np.float64)
    weights = rng.uniform(0.2, 3.0, 5).round(3)
    loss, bottom, _ = run_loss(loss_text("MultinomialLogisticLoss", mode, weights), [p, labels])
    expected, grad = weighted_multinomial(p, labels, weights, mode=mode)
    check(loss, bottom, expected, grad)
    # 4-D with one label per item: Caffe's flattened view, D = C*H*W classes, one weight each
    p4 = probabilities((2, 2, 1, 3)).reshape(2, -1)
    p4 = (p4 / p4.sum(axis=1, keepdims=True)).reshape(2, 2, 1, 3)
    labels4 = np.array([5.0, 2.0])
    weights4 = rng.uniform(0.2, 2.0, (2, 1, 3))
    loss, bottom, _ = run_loss(loss_text("MultinomialLogisticLoss", mode), [p4, labels4, weights4])
    expected, grad = weighted_multinomial(p4, labels4, weights4, mode=mode)
    check(loss, bottom, expected, grad)


def test_multinomial_weighted_gradient_check():
    p = probabilities((2, 3, 2))
    labels = rng.integers(0, 3, (2, 2)).astype(np.float64)
    layer = layer_from_text(loss_text("MultinomialLogisticLoss", "GLOBAL"))
    checked = GradientChecker(stepsize=1e-6, threshold=1e-5).check_layer(
        layer, make_blobs(p, labels, rng.uniform(0.2, 2.0, (3, 2))), empty_blobs(1))
    assert checked == p.size


def test_multinomial_label_count_and_range_errors():
    with pytest.raises(ShapeError, match=r"layer 'cw'.*\(2 or 8 labels for \(2, 3, 4\)\)"):
        run_loss(loss_text("MultinomialLogisticLoss"), [probabilities((2, 3, 4)), np.zeros((2, 3))])
    with pytest.raises(MinicaffeError, match=r"label 3 at position 5 is outside \[0, 3\) \(the 3 classes on axis 1"):
        labels = np.array([[0, 1, 2, 0], [1, 3, 0, 0.0]])
        run_loss(loss_text("MultinomialLogisticLoss"), [probabilities((2, 3, 4)), labels])
