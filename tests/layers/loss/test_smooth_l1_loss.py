"""SmoothL1Loss (Fast/Faster R-CNN's) against its numpy reference: sigma, inside and outside weights."""

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import GraphError, MinicaffeWarning, ShapeError
from minicaffe.proto.text import parse_net
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import run_loss
from .reference import smooth_l1

rng = np.random.default_rng(43)


def case(shape, weighted):
    """Differences on both sides of every threshold used below (|d| < 1/sigma^2 and beyond)."""
    a = rng.standard_normal(shape) * 1.5
    b = rng.standard_normal(shape) * 1.5
    if not weighted:
        return [a, b]
    inside = rng.choice([0.0, 0.5, 1.0, 2.0], size=shape)
    outside = rng.uniform(0.2, 1.5, size=shape)
    return [a, b, inside, outside]


def text(sigma=None):
    param = f"smooth_l1_loss_param {{ sigma: {sigma} }}" if sigma is not None else ""
    return f'name: "sl1" type: "SmoothL1Loss" {param}'


@pytest.mark.parametrize("sigma", [None, 3.0, 0.5])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(4, 8), (1, 4, 3, 3)])
def test_matches_reference(sigma, weighted, shape):
    arrays = case(shape, weighted)
    propagate = [True, True] + [False] * (len(arrays) - 2)
    loss, bottom, _ = run_loss(text(sigma), arrays, weight=0.9, propagate=propagate)
    expected, grad = smooth_l1(*arrays[:2], sigma=sigma or 1.0, inside=arrays[2] if weighted else None,
                               outside=arrays[3] if weighted else None, weight=0.9)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bottom[1].diff, -grad, rtol=1e-5, atol=1e-7)


def test_hand_computed():
    # sigma 1: |d| < 1 is 0.5 d^2, else |d| - 0.5. d = 0.5, -2, 0 -> 0.125 + 1.5 + 0; N = 1
    loss, bottom, _ = run_loss(text(), [np.array([[0.5, -2.0, 1.0]]), np.array([[0.0, 0.0, 1.0]])])
    assert loss == pytest.approx(1.625)
    np.testing.assert_allclose(bottom[0].diff, [[0.5, -1.0, 0.0]])


def test_inside_weight_zero_switches_a_coordinate_off():
    a, b = np.array([[4.0, 4.0]]), np.zeros((1, 2))
    loss, bottom, _ = run_loss(text(), [a, b, np.array([[1.0, 0.0]]), np.array([[2.0, 2.0]])])
    assert loss == pytest.approx(2 * 3.5)
    np.testing.assert_allclose(bottom[0].diff, [[2.0, 0.0]])


@pytest.mark.parametrize("propagate", [[True, False], [False, True]])
def test_propagate_down_per_bottom(propagate):
    a, b = case((3, 4), False)
    _, bottom, _ = run_loss(text(), [a, b], propagate=propagate)
    assert bool(bottom[0].diff.any()) == propagate[0] and bool(bottom[1].diff.any()) == propagate[1]


@pytest.mark.parametrize("sigma, weighted", [(None, False), (3.0, True)])
def test_gradient_check(sigma, weighted):
    arrays = case((2, 6), weighted)
    layer = layer_from_text(text(sigma))
    checked = GradientChecker(stepsize=1e-5, threshold=1e-5).check_layer(layer, make_blobs(*arrays),
                                                                          empty_blobs(1))
    assert checked == 24                          # prediction and target; the weights take no gradient


def test_three_bottoms_is_an_error():
    with pytest.raises(GraphError, match="layer 'sl1': .*give both the inside and the outside weights"):
        layer_from_text(text()).set_up(make_blobs(*case((2, 3), True)[:3]), empty_blobs(1))


def test_weight_shape_mismatch_names_both_shapes():
    a, b, inside, _ = case((2, 3), True)
    with pytest.raises(ShapeError, match=r"layer 'sl1': the outside weights must have the prediction's shape.*"
                                         r"expected \(2, 3\), got \(2, 2\)"):
        layer_from_text(text()).set_up(make_blobs(a, b, inside, np.ones((2, 2))), empty_blobs(1))


def test_weights_take_no_gradient():
    layer = layer_from_text(text())
    assert layer.allow_force_backward(1) and not layer.allow_force_backward(2) and not layer.allow_force_backward(3)
    with pytest.raises(GraphError, match="cannot backpropagate to its weights"):
        run_loss(text(), case((2, 3), True), propagate=[True, False, True, False])


def test_normalization_is_ignored_with_one_warning():
    arrays = case((2, 3), False)
    with pytest.warns(MinicaffeWarning, match="layer 'sl1': SmoothL1Loss has a fixed divisor"):
        loss, _, _ = run_loss(text() + " loss_param { normalization: NONE }", arrays)
    assert loss == pytest.approx(smooth_l1(*arrays)[0], rel=1e-5)


# py-faster-rcnn's RPN box loss, as its train.prototxt writes it (4 bottoms, sigma 3, loss_weight 1)
FASTER_RCNN_BLOCK = '''
layer {
  name: "rpn_loss_bbox"
  type: "SmoothL1Loss"
  bottom: "rpn_bbox_pred"
  bottom: "rpn_bbox_targets"
  bottom: "rpn_bbox_inside_weights"
  bottom: "rpn_bbox_outside_weights"
  top: "rpn_loss_bbox"
  loss_weight: 1
  smooth_l1_loss_param { sigma: 3.0 }
}
'''


def test_faster_rcnn_block_parses_and_runs():
    dims = "dim: 1 dim: 8 dim: 2 dim: 3"
    net = caffe.Net(parse_net(
        'layer { name: "in" type: "Input" top: "rpn_bbox_pred" top: "rpn_bbox_targets" '
        'top: "rpn_bbox_inside_weights" top: "rpn_bbox_outside_weights" '
        f'input_param {{ shape {{ {dims} }} shape {{ {dims} }} shape {{ {dims} }} shape {{ {dims} }} }} }}'
        + FASTER_RCNN_BLOCK), caffe.TRAIN)
    arrays = case((1, 8, 2, 3), True)
    names = ["rpn_bbox_pred", "rpn_bbox_targets", "rpn_bbox_inside_weights", "rpn_bbox_outside_weights"]
    for name, array in zip(names, arrays):
        net.blobs[name].data[...] = array
    loss = float(net.forward()["rpn_loss_bbox"])
    assert loss == pytest.approx(smooth_l1(*arrays[:2], sigma=3.0, inside=arrays[2], outside=arrays[3])[0],
                                 rel=1e-5)
