"""Plain numpy versions of the class-weighted SoftmaxWithLoss and MultinomialLogisticLoss.

The weights are first spread to the prediction's full shape, then normalized as
the issue states (LOCAL: the C weights at each item and location sum to C;
GLOBAL: each item's weights sum to C * S; AS_GIVEN: unchanged); the loss is
sum W[n, y, s] * (-log p[n, y, s]) over counted locations, over the normalizer.
"""

import numpy as np

from .reference import normalizer

LOG_THRESHOLD = 1e-20


def full_weights(weights, shape, axis, mode):
    """The weights at every element of a prediction of ``shape`` (classes on ``axis``), normalized."""
    weights = np.asarray(weights, dtype=np.float64)
    shape = tuple(shape)
    if weights.ndim == 1 and weights.size == shape[axis] and len(shape) > 1 and shape[1:] != weights.shape:
        spread = np.expand_dims(weights, tuple(a for a in range(len(shape)) if a != axis))
        full = np.broadcast_to(spread, shape).copy()
    elif weights.shape == shape:
        full = weights.copy()
    else:                                           # one data point, with or without a batch axis of 1
        full = np.broadcast_to(weights.reshape((1,) + shape[1:]), shape).copy()
    if mode == "LOCAL":
        sums = full.sum(axis=axis, keepdims=True)
        full = np.where(sums != 0, full * shape[axis] / np.where(sums != 0, sums, 1), 0.0)
    elif mode == "GLOBAL":
        for n in range(shape[0]):
            total = full[n].sum()
            full[n] = full[n] * full[n].size / total if total != 0 else 0.0
    return full


def _pick(array, labels, axis):
    return np.take_along_axis(array, np.expand_dims(labels, axis), axis=axis).squeeze(axis)


def weighted_softmax(x, labels, weights, axis=1, mode="LOCAL", ignore_label=None, normalization="VALID",
                     loss_weight=1.0):
    """(loss, gradient) of SoftmaxWithLoss with class weights (``weights=None``: none)."""
    x = np.asarray(x, dtype=np.float64)
    axis = axis % x.ndim
    label_shape = x.shape[:axis] + x.shape[axis + 1:]
    labels = np.asarray(labels).reshape(label_shape).astype(int)
    shifted = x - x.max(axis=axis, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    prob = np.exp(log_prob)
    keep = np.ones(label_shape, bool) if ignore_label is None else labels != ignore_label
    safe = np.where(keep, labels, 0)
    full = np.ones(x.shape) if weights is None else full_weights(weights, x.shape, axis, mode)
    picked_weight = _pick(full, safe, axis) * keep
    outer = int(np.prod(x.shape[:axis]))
    inner = int(np.prod(x.shape[axis + 1:]))
    norm = normalizer(normalization, outer, inner, keep.sum())
    loss = -(picked_weight * _pick(log_prob, safe, axis)).sum() / norm
    onehot = np.zeros_like(prob)
    np.put_along_axis(onehot, np.expand_dims(safe, axis), 1.0, axis=axis)
    grad = loss_weight * np.expand_dims(picked_weight, axis) * (prob - onehot) / norm
    return loss, grad


def weighted_multinomial(p, labels, weights=None, mode="LOCAL", ignore_label=None, normalization=None,
                         loss_weight=1.0):
    """(loss, gradient) of MultinomialLogisticLoss. One label per item: Caffe's (N, D) view and
    divisor N; one label per location: classes on axis 1 and Mocha's divisor N * S."""
    p = np.asarray(p, dtype=np.float64)
    labels = np.asarray(labels)
    n = p.shape[0]
    per_item = labels.size == n
    view = p.reshape(n, -1) if per_item else p
    if weights is not None and per_item:
        weights = np.asarray(weights, dtype=np.float64)
        weights = weights.reshape(n, -1) if weights.size == p.size else weights.reshape(-1)
    labels = labels.reshape(view.shape[:1] + view.shape[2:]).astype(int)
    keep = np.ones(labels.shape, bool) if ignore_label is None else labels != ignore_label
    safe = np.where(keep, labels, 0)
    full = np.ones(view.shape) if weights is None else full_weights(weights, view.shape, 1, mode)
    picked_weight = _pick(full, safe, 1) * keep
    picked = np.maximum(_pick(view, safe, 1), LOG_THRESHOLD)
    inner = labels.size // n
    mode_name = normalization or ("BATCH_SIZE" if per_item else "VALID")
    norm = normalizer(mode_name, n, inner, keep.sum())
    loss = -(picked_weight * np.log(picked)).sum() / norm
    grad = np.zeros(view.shape)
    np.put_along_axis(grad, np.expand_dims(safe, 1), np.expand_dims(-loss_weight * picked_weight / picked / norm, 1),
                      axis=1)
    return loss, grad.reshape(p.shape)
