"""L1Loss against its numpy reference: sum |a - b| / N, sign gradients to both bottoms."""

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import MinicaffeWarning, ShapeError
from minicaffe.proto.text import parse_net
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import run_loss
from .reference import l1

rng = np.random.default_rng(41)


def case(shape):
    a = rng.standard_normal(shape)
    b = rng.standard_normal(shape)
    close = np.abs(a - b) < 0.05                 # keep finite differences off the kink at a == b
    b[close] = a[close] + 0.1
    return a, b


TEXT = 'name: "l1" type: "L1Loss"'


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5)])
@pytest.mark.parametrize("propagate", [[True, True], [True, False], [False, True]])
@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_matches_reference(shape, propagate, weight):
    a, b = case(shape)
    loss, bottom, top = run_loss(TEXT, [a, b], weight=weight, propagate=propagate)
    expected, grad = l1(a, b, weight=weight)
    assert loss == pytest.approx(expected, rel=1e-5)
    for index, sign in ((0, 1.0), (1, -1.0)):
        if propagate[index]:
            np.testing.assert_allclose(bottom[index].diff, sign * grad, rtol=1e-6)
        else:
            assert not bottom[index].diff.any()


@pytest.mark.parametrize("propagate", [[True, True], [True, False], [False, True]])
def test_subgradient_is_zero_where_equal(propagate):
    a = np.array([[1.0, 2.0, -1.0], [0.0, 5.0, 3.0]])
    b = np.array([[1.0, 1.0, 1.0], [0.0, 6.0, 3.0]])
    loss, bottom, _ = run_loss(TEXT, [a, b], propagate=propagate)
    assert loss == pytest.approx((0 + 1 + 2 + 0 + 1 + 0) / 2)
    expected = np.array([[0.0, 0.5, -0.5], [0.0, -0.5, 0.0]])
    np.testing.assert_array_equal(bottom[0].diff, expected if propagate[0] else 0.0)
    np.testing.assert_array_equal(bottom[1].diff, -expected if propagate[1] else 0.0)


def test_gradient_check_both_bottoms():
    a, b = case((3, 4))
    layer = layer_from_text(TEXT)
    assert GradientChecker(stepsize=1e-4).check_layer(layer, make_blobs(a, b), empty_blobs(1)) == 24


def test_normalization_is_ignored_with_one_warning():
    with pytest.warns(MinicaffeWarning, match="layer 'l1': L1Loss has a fixed divisor"):
        loss, _, _ = run_loss(TEXT + " loss_param { normalization: FULL }", [np.ones((2, 2)), np.zeros((2, 2))])
    assert loss == pytest.approx(2.0)


def test_count_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"layer 'l1': .*same number of elements.*expected \(2, 3\), got \(2, 4\)"):
        layer_from_text(TEXT).set_up(make_blobs(np.zeros((2, 3)), np.zeros((2, 4))), empty_blobs(1))


SEED_001_L1 = '''
layer {
name: "loss"
type: "L1Loss"
bottom: "fc8"
bottom: "label"
top: "loss"
}
'''


def test_seed_001_block_runs_as_written():
    net = caffe.Net(parse_net(
        'layer { name: "in" type: "Input" top: "fc8" top: "label" '
        'input_param { shape { dim: 5 dim: 2 } shape { dim: 5 dim: 2 } } }' + SEED_001_L1), caffe.TRAIN)
    a, b = case((5, 2))
    net.blobs["fc8"].data[...] = a
    net.blobs["label"].data[...] = b
    assert float(net.forward()["loss"]) == pytest.approx(l1(a, b)[0], rel=1e-5)
    assert net.blob_loss_weights["loss"] == 1.0
