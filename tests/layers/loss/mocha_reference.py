"""numpy versions of Mocha.jl's loss formulas (issue 8), independent of the kernels."""

import numpy as np


def gaussian_kl(mu, sigma, weight=1.0):
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    n = mu.shape[0]
    loss = 0.5 * np.sum(mu ** 2 + sigma ** 2 - 2 * np.log(sigma) - 1) / n
    return loss, weight * mu / n, weight * (sigma - 1 / sigma) / n


def binary_cross_entropy(p, y, weight=1.0):
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64).reshape(np.shape(p))
    n = p.shape[0]
    loss = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) / n
    return loss, -weight * (y / p - (1 - y) / (1 - p)) / n, -weight * np.log(p / (1 - p)) / n


def softlabel_softmax(x, q, axis=1, weight=1.0):
    x, q = np.asarray(x, np.float64), np.asarray(q, np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    p = np.exp(log_p)
    locations = x.size // x.shape[axis]
    loss = -np.sum(q * np.maximum(log_p, np.log(1e-20))) / locations
    return loss, weight * (p - q) / locations
