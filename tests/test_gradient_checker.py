"""The gradient checker itself: it passes right gradients and catches wrong ones."""

import numpy as np
import pytest

from minicaffe.layer import Layer
from minicaffe.registry import register
from minicaffe.testing import GradientChecker, GradientMismatch, empty_blobs, layer_from_text, make_blobs


@register("MinicaffeTestSquare")
class _Square(Layer):
    """y = x^2, with a Backward that can be made wrong on purpose (param_str)."""
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data ** 2

    def backward(self, top, propagate_down, bottom):
        factor = 2.0 if self.layer_param.name != "wrong" else 2.1
        bottom[0].diff[...] = factor * bottom[0].data * top[0].diff


def test_right_gradient_passes_and_counts_elements():
    x = np.random.default_rng(0).standard_normal((3, 4))
    layer = layer_from_text('name: "ok" type: "MinicaffeTestSquare"')
    assert GradientChecker().check_layer(layer, make_blobs(x), empty_blobs(1)) == 12


def test_wrong_gradient_is_reported_with_the_element():
    x = np.random.default_rng(0).standard_normal((3, 4)) + 3      # well away from 0, so the error shows
    layer = layer_from_text('name: "wrong" type: "MinicaffeTestSquare"')
    with pytest.raises(GradientMismatch, match=r"layer 'wrong' bottom 0, element \(0, 0\): analytic"):
        GradientChecker().check_layer(layer, make_blobs(x), empty_blobs(1))


def test_kink_range_skips_elements_near_the_kink():
    x = np.array([[0.0, 1.0], [-1.0, 1e-5]])
    layer = layer_from_text('name: "r" type: "ReLU"')
    checked = GradientChecker(kink=0.0, kink_range=1e-3).check_layer(layer, make_blobs(x), empty_blobs(1))
    assert checked == 2                                           # 0.0 and 1e-5 are skipped


def test_label_bottoms_are_not_checked():
    layer = layer_from_text('name: "acc" type: "EuclideanLoss"')
    a, b = np.ones((2, 2)), np.zeros((2, 2))
    assert GradientChecker().check_layer(layer, make_blobs(a, b), empty_blobs(1), check_bottom=[0]) == 4
