"""Plain numpy versions of each loss's documented formula: the one truth both kernels are held to.

Each returns (loss, gradient w.r.t. the prediction for loss weight w).
"""

import numpy as np

NORMALIZATIONS = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def normalizer(mode, outer, inner, valid):
    value = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(value))


def softmax_with_loss(x, labels, axis=1, ignore_label=None, normalization="VALID", weight=1.0):
    x = np.asarray(x, dtype=np.float64)
    axis = axis % x.ndim
    outer = int(np.prod(x.shape[:axis]))
    channels = x.shape[axis]
    inner = int(np.prod(x.shape[axis + 1:]))
    scores = x.reshape(outer, channels, inner)
    labels = np.asarray(labels).reshape(outer, inner).astype(int)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    prob = np.exp(log_prob)
    keep = np.ones((outer, inner), bool) if ignore_label is None else labels != ignore_label
    safe = np.where(keep, labels, 0)
    picked = np.take_along_axis(log_prob, safe[:, None, :], axis=1)[:, 0, :]
    norm = normalizer(normalization, outer, inner, keep.sum() if ignore_label is not None else outer * inner)
    loss = -(picked * keep).sum() / norm
    onehot = np.zeros_like(prob)
    np.put_along_axis(onehot, safe[:, None, :], 1.0, axis=1)
    grad = weight * (prob - onehot) * keep[:, None, :] / norm
    return loss, grad.reshape(x.shape), prob.reshape(x.shape)


def sigmoid_cross_entropy(x, target, ignore_label=None, normalization="BATCH_SIZE", weight=1.0):
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64).reshape(x.shape)
    keep = np.ones(x.shape, bool) if ignore_label is None else t.astype(int) != ignore_label
    per_element = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    outer = x.shape[0]
    norm = normalizer(normalization, outer, x.size // outer, keep.sum() if ignore_label is not None else x.size)
    loss = (per_element * keep).sum() / norm
    grad = weight * (1 / (1 + np.exp(-x)) - t) * keep / norm
    return loss, grad


def euclidean(a, b, weight=1.0):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(a.shape)
    n = a.shape[0]
    return np.sum((a - b) ** 2) / n / 2, weight * (a - b) / n
