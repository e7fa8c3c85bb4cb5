"""numba.cuda kernels of the class-weighted SoftmaxWithLoss and MultinomialLogisticLoss (simulator)."""

import numpy as np
import pytest

from ..layers.loss.class_weight_reference import weighted_multinomial, weighted_softmax
from ..layers.loss.helpers import run_loss

rng = np.random.default_rng(12)


def text(kind, mode, class_weight=(), extra="", ignore_label=None):
    fields = [f"class_weight: {w}" for w in class_weight] + [f"weight_normalization: {mode}"]
    if ignore_label is not None:
        fields.append(f"ignore_label: {ignore_label}")
    return f'name: "cw" type: "{kind}" {extra} loss_param {{ {" ".join(fields)} }}'


def check(loss, bottom, expected, grad):
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode, source", [
    ("LOCAL", "class_weight"), ("GLOBAL", "one data point"), ("AS_GIVEN", "full shape"), ("LOCAL", "full shape"),
    ("GLOBAL", "full shape"),
])
def test_softmax(gpu_mode, mode, source):
    x = rng.standard_normal((2, 3, 2, 3))
    labels = rng.integers(0, 3, (2, 2, 3)).astype(np.float64)
    labels[0, 1, 1] = 255
    if source == "class_weight":
        weights = np.array([0.5, 2.0, 1.25])
        loss, bottom, _ = run_loss(text("SoftmaxWithLoss", mode, weights, ignore_label=255), [x, labels], weight=0.7)
    else:
        weights = rng.uniform(0.2, 2.0, x.shape[1:] if source == "one data point" else x.shape)
        loss, bottom, _ = run_loss(text("SoftmaxWithLoss", mode, ignore_label=255), [x, labels, weights], weight=0.7)
    expected, grad = weighted_softmax(x, labels, weights, mode=mode, ignore_label=255, loss_weight=0.7)
    check(loss, bottom, expected, grad)


def test_softmax_axis_2_rows_per_item(gpu_mode):
    x = rng.standard_normal((2, 2, 3, 2))
    labels = rng.integers(0, 3, (2, 2, 2)).astype(np.float64)
    weights = rng.uniform(0.2, 2.0, x.shape)
    loss, bottom, _ = run_loss(text("SoftmaxWithLoss", "GLOBAL", extra="softmax_param { axis: 2 }"),
                               [x, labels, weights])
    expected, grad = weighted_softmax(x, labels, weights, axis=2, mode="GLOBAL")
    check(loss, bottom, expected, grad)


@pytest.mark.parametrize("mode, source", [("LOCAL", "one data point"), ("GLOBAL", "class_weight"),
                                          ("AS_GIVEN", "full shape"), (None, None)])
def test_multinomial_per_location(gpu_mode, mode, source):
    raw = rng.random((2, 3, 2, 2)) + 0.05
    p = raw / raw.sum(axis=1, keepdims=True)
    labels = rng.integers(0, 3, (2, 2, 2)).astype(np.float64)
    if source is None:
        weights = None
        loss, bottom, _ = run_loss('name: "cw" type: "MultinomialLogisticLoss"', [p, labels], weight=0.5)
    elif source == "class_weight":
        weights = np.array([1.0, 3.0, 0.5])
        loss, bottom, _ = run_loss(text("MultinomialLogisticLoss", mode, weights), [p, labels], weight=0.5)
    else:
        weights = rng.uniform(0.2, 2.0, p.shape[1:] if source == "one data point" else p.shape)
        loss, bottom, _ = run_loss(text("MultinomialLogisticLoss", mode), [p, labels, weights], weight=0.5)
    expected, grad = weighted_multinomial(p, labels, weights, mode=mode, loss_weight=0.5)
    check(loss, bottom, expected, grad)


def test_multinomial_per_item_weighted(gpu_mode):
    raw = rng.random((4, 5)) + 0.05
    p = raw / raw.sum(axis=1, keepdims=True)
    labels = np.array([0.0, 4.0, 2.0, 9.0])
    weights = np.array([0.3, 1.0, 2.0, 0.5, 4.0])
    loss, bottom, _ = run_loss(text("MultinomialLogisticLoss", "GLOBAL", weights, ignore_label=9), [p, labels])
    expected, grad = weighted_multinomial(p, labels, weights, mode="GLOBAL", ignore_label=9)
    check(loss, bottom, expected, grad)
