"""Losses II's numba.cuda kernels against the same numpy references as their CPU kernels.

Small float32 inputs (the simulator runs a few thousand threads a second).
"""

import numpy as np
import pytest

from minicaffe.errors import MinicaffeError

from ..layers.loss.helpers import loss_param_text, run_loss
from ..layers.loss.reference import (NORMALIZATIONS, binary_hinge, contrastive, hinge, infogain, l1,
                                     multinomial_logistic, smooth_l1)

rng = np.random.default_rng(53)


def labels_for(rows, classes, ignore_label=None):
    labels = rng.integers(0, classes, size=rows).astype(np.float64)
    if ignore_label is not None:
        labels[::3] = ignore_label
    return labels


# ---------------------------------------------------------------- HingeLoss

@pytest.mark.parametrize("norm, normalization", [("L1", None), ("L2", "FULL"), ("L1", "VALID"),
                                                  ("L2", "BATCH_SIZE"), ("L1", "NONE")])
def test_hinge_class_index(gpu_mode, norm, normalization):
    x = rng.standard_normal((6, 5)) * 1.5
    labels = labels_for(6, 5, ignore_label=9)
    options = {"ignore_label": 9, **({"normalization": normalization} if normalization else {})}
    text = f'name: "h" type: "HingeLoss" hinge_loss_param {{ norm: {norm} margin: 0.8 }} {loss_param_text(**options)}'
    loss, bottom, _ = run_loss(text, [x, labels], weight=0.6)
    expected, grad = hinge(x, labels, norm=norm, margin=0.8, ignore_label=9,
                           normalization=normalization or "BATCH_SIZE", weight=0.6)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_binary(gpu_mode, norm):
    x = rng.standard_normal((4, 6)) * 1.5
    y = rng.choice([-1.0, 1.0], size=(4, 6))
    text = f'name: "h" type: "HingeLoss" hinge_loss_param {{ norm: {norm} margin: 1.5 }}'
    loss, bottom, _ = run_loss(text, [x, y], weight=1.2)
    expected, grad = binary_hinge(x, y, norm=norm, margin=1.5, weight=1.2)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)


def test_hinge_bad_labels(gpu_mode):
    with pytest.raises(MinicaffeError, match=r"label 5 at position 1 is outside \[0, 3\)"):
        run_loss('name: "h" type: "HingeLoss"', [np.zeros((2, 3)), np.array([0.0, 5.0])])
    y = np.ones((2, 3))
    y[0, 1] = 0.0
    with pytest.raises(MinicaffeError, match=r"must be -1 or \+1, got 0 at position 1"):
        run_loss('name: "h" type: "HingeLoss"', [np.zeros((2, 3)), y])


# ---------------------------------------------------------------- MultinomialLogisticLoss

@pytest.mark.parametrize("normalization", NORMALIZATIONS + (None,))
def test_multinomial_logistic(gpu_mode, normalization):
    prob = rng.uniform(0.05, 1.0, size=(6, 4))
    prob /= prob.sum(axis=1, keepdims=True)
    prob[2, :] = 0.0                                  # clamped at 1e-20
    labels = labels_for(6, 4, ignore_label=-1)
    labels[2] = 1
    options = {"ignore_label": -1, **({"normalization": normalization} if normalization else {})}
    loss, bottom, _ = run_loss(f'name: "m" type: "MultinomialLogisticLoss" {loss_param_text(**options)}',
                               [prob, labels], weight=0.5)
    expected, grad = multinomial_logistic(prob, labels, ignore_label=-1,
                                          normalization=normalization or "BATCH_SIZE", weight=0.5)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- InfogainLoss

@pytest.mark.parametrize("shape, axis", [((5, 4), 1), ((2, 3, 4), -1), ((2, 3, 2, 3), 1)])
def test_infogain(gpu_mode, shape, axis):
    x = rng.standard_normal(shape) * 2
    axis_index = axis % len(shape)
    channels = shape[axis_index]
    labels = rng.integers(0, channels, size=shape[:axis_index] + shape[axis_index + 1:]).astype(np.float64)
    H = rng.uniform(0, 1, size=(channels, channels))
    text = f'name: "i" type: "InfogainLoss" infogain_loss_param {{ axis: {axis} }}'
    loss, bottom, top = run_loss(text, [x, labels, H], weight=0.7, num_tops=2)
    expected, grad, prob = infogain(x, labels, H, axis=axis, weight=0.7)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(top[1].data, prob, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_infogain_normalization_ignore_and_source(gpu_mode, tmp_path, normalization):
    from minicaffe.io import write_binaryproto
    x = rng.standard_normal((2, 3, 2, 2))
    labels = rng.integers(0, 3, size=(2, 2, 2)).astype(np.float64)
    labels.reshape(-1)[::3] = 255
    H = rng.uniform(0, 1, size=(3, 3)).astype(np.float32)
    write_binaryproto(H.reshape(1, 1, 3, 3), tmp_path / "H.binaryproto")
    text = (f'name: "i" type: "InfogainLoss" infogain_loss_param {{ source: "{tmp_path / "H.binaryproto"}" }} '
            f'{loss_param_text(ignore_label=255, normalization=normalization)}')
    loss, bottom, _ = run_loss(text, [x, labels], weight=0.4)
    expected, grad, _ = infogain(x, labels, H, ignore_label=255, normalization=normalization, weight=0.4)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- ContrastiveLoss

@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("propagate", [[True, True, False], [False, True, False]])
def test_contrastive(gpu_mode, legacy, propagate):
    a = rng.standard_normal((8, 3))
    b = a + rng.standard_normal((8, 3)) * 0.7
    similar = (np.arange(8) % 2).astype(np.float64)
    text = ('name: "c" type: "ContrastiveLoss" '
            f'contrastive_loss_param {{ margin: 1.5 legacy_version: {str(legacy).lower()} }}')
    loss, bottom, _ = run_loss(text, [a, b, similar], weight=0.9, propagate=propagate)
    expected, grad = contrastive(a, b, similar, margin=1.5, legacy=legacy, weight=0.9)
    assert loss == pytest.approx(expected, rel=1e-5)
    for index, sign in ((0, 1.0), (1, -1.0)):
        if propagate[index]:
            np.testing.assert_allclose(bottom[index].diff, sign * grad, rtol=1e-5, atol=1e-7)
        else:
            assert not bottom[index].diff.any()


# ---------------------------------------------------------------- L1Loss, SmoothL1Loss

@pytest.mark.parametrize("propagate", [[True, True], [True, False], [False, True]])
def test_l1(gpu_mode, propagate):
    a = rng.standard_normal((4, 6))
    b = rng.standard_normal((4, 6))
    b[0, :2] = a[0, :2]                              # subgradient 0 where equal
    loss, bottom, _ = run_loss('name: "l" type: "L1Loss"', [a, b], weight=2.0, propagate=propagate)
    expected, grad = l1(a, b, weight=2.0)
    assert loss == pytest.approx(expected, rel=1e-5)
    for index, sign in ((0, 1.0), (1, -1.0)):
        if propagate[index]:
            np.testing.assert_allclose(bottom[index].diff, sign * grad, rtol=1e-6)
        else:
            assert not bottom[index].diff.any()


@pytest.mark.parametrize("sigma, weighted", [(1.0, False), (3.0, True), (0.5, True)])
def test_smooth_l1(gpu_mode, sigma, weighted):
    a = rng.standard_normal((2, 4, 3, 3)) * 1.5
    b = rng.standard_normal((2, 4, 3, 3)) * 1.5
    arrays = [a, b]
    if weighted:
        arrays += [rng.choice([0.0, 1.0, 2.0], size=a.shape), rng.uniform(0.2, 1.5, size=a.shape)]
    propagate = [True, True] + [False] * (len(arrays) - 2)
    text = f'name: "s" type: "SmoothL1Loss" smooth_l1_loss_param {{ sigma: {sigma} }}'
    loss, bottom, _ = run_loss(text, arrays, weight=0.8, propagate=propagate)
    expected, grad = smooth_l1(a, b, sigma=sigma, inside=arrays[2] if weighted else None,
                               outside=arrays[3] if weighted else None, weight=0.8)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bottom[1].diff, -grad, rtol=1e-5, atol=1e-7)
