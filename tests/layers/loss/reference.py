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


# ---------------------------------------------------------------- Losses II

LOG_THRESHOLD = 1e-20


def hinge(x, labels, norm="L1", margin=1.0, ignore_label=None, normalization="BATCH_SIZE", weight=1.0):
    """Caffe's one-vs-all hinge over class-index labels, x viewed as (N, D)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    scores = x.reshape(n, -1)
    labels = np.asarray(labels).reshape(-1).astype(int)
    keep = np.ones(n, bool) if ignore_label is None else labels != ignore_label
    signs = np.ones_like(scores)
    rows = np.flatnonzero(keep)
    signs[rows, labels[rows]] = -1.0
    t = np.maximum(0.0, margin + signs * scores) * keep[:, None]
    norm_value = normalizer(normalization, n, 1, keep.sum())
    if norm == "L1":
        loss = t.sum() / norm_value
        grad = weight * signs * (t > 0) / norm_value
    else:
        loss = (t ** 2).sum() / norm_value
        grad = weight * 2 * signs * t / norm_value
    return loss, grad.reshape(x.shape)


def binary_hinge(x, y, norm="L1", margin=1.0, weight=1.0):
    """Mocha's hinge loss: labels +1/-1 of the prediction's shape, divided by N."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(x.shape)
    n = x.shape[0]
    t = np.maximum(0.0, margin - x * y)
    if norm == "L1":
        return t.sum() / n, -weight * y * (t > 0) / n
    return (t ** 2).sum() / n, -2 * weight * y * t / n


def multinomial_logistic(prob, labels, ignore_label=None, normalization="BATCH_SIZE", weight=1.0):
    prob = np.asarray(prob, dtype=np.float64)
    n = prob.shape[0]
    p = prob.reshape(n, -1)
    labels = np.asarray(labels).reshape(-1).astype(int)
    keep = np.ones(n, bool) if ignore_label is None else labels != ignore_label
    grad = np.zeros_like(p)
    norm_value = normalizer(normalization, n, 1, keep.sum())
    loss = 0.0
    for row in np.flatnonzero(keep):
        picked = max(p[row, labels[row]], LOG_THRESHOLD)
        loss -= np.log(picked)
        grad[row, labels[row]] = -weight / picked / norm_value
    return loss / norm_value, grad.reshape(prob.shape)


def infogain(x, labels, H, axis=1, ignore_label=None, normalization="VALID", weight=1.0):
    """BVLC master's InfogainLoss: softmax over `axis`, then -sum_l H[g, l] log(max(p_l, 1e-20))."""
    x = np.asarray(x, dtype=np.float64)
    axis = axis % x.ndim
    outer = int(np.prod(x.shape[:axis]))
    channels = x.shape[axis]
    inner = int(np.prod(x.shape[axis + 1:]))
    H = np.asarray(H, dtype=np.float64).reshape(channels, channels)
    scores = x.reshape(outer, channels, inner)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    labels = np.asarray(labels).reshape(outer, inner).astype(int)
    keep = np.ones((outer, inner), bool) if ignore_label is None else labels != ignore_label
    loss = 0.0
    grad = np.zeros_like(prob)
    for o in range(outer):
        for i in range(inner):
            if not keep[o, i]:
                continue
            g = labels[o, i]
            loss -= np.sum(H[g] * np.log(np.maximum(prob[o, :, i], LOG_THRESHOLD)))
            grad[o, :, i] = prob[o, :, i] * H[g].sum() - H[g]
    norm_value = normalizer(normalization, outer, inner, keep.sum())
    return loss / norm_value, (weight * grad / norm_value).reshape(x.shape), prob.reshape(x.shape)


def contrastive(a, b, similar, margin=1.0, legacy=False, weight=1.0):
    """Caffe's ContrastiveLoss; returns (loss, gradient w.r.t. a); b's gradient is its negative."""
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    diff = (a - np.asarray(b, dtype=np.float64).reshape(a.shape)).reshape(n, -1)
    similar = np.asarray(similar).reshape(-1).astype(int) != 0
    d2 = (diff ** 2).sum(axis=1)
    d = np.sqrt(d2)
    if legacy:
        dissimilar_loss = np.maximum(margin - d2, 0.0)
        dissimilar_coef = -1.0 * (margin - d2 > 0)
    else:
        dissimilar_loss = np.maximum(margin - d, 0.0) ** 2
        dissimilar_coef = np.where(margin - d > 0, -(margin - d) / (d + 1e-4), 0.0)
    loss = np.where(similar, d2, dissimilar_loss).sum() / n / 2
    coef = np.where(similar, 1.0, dissimilar_coef)
    return loss, (weight * coef[:, None] * diff / n).reshape(a.shape)


def l1(a, b, weight=1.0):
    a = np.asarray(a, dtype=np.float64)
    diff = a - np.asarray(b, dtype=np.float64).reshape(a.shape)
    n = a.shape[0]
    return np.abs(diff).sum() / n, weight * np.sign(diff) / n


def smooth_l1(a, b, sigma=1.0, inside=None, outside=None, weight=1.0):
    """Fast R-CNN's SmoothL1Loss; returns (loss, gradient w.r.t. a); b's gradient is its negative."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(a.shape)
    inside = np.ones_like(a) if inside is None else np.asarray(inside, dtype=np.float64).reshape(a.shape)
    outside = np.ones_like(a) if outside is None else np.asarray(outside, dtype=np.float64).reshape(a.shape)
    s2 = sigma * sigma
    d = inside * (a - b)
    small = np.abs(d) < 1.0 / s2
    f = np.where(small, 0.5 * s2 * d * d, np.abs(d) - 0.5 / s2)
    df = np.where(small, s2 * d, np.sign(d))
    n = a.shape[0]
    return (outside * f).sum() / n, weight * outside * inside * df / n
