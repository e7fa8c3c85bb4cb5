"""LRN: ACROSS_CHANNELS and WITHIN_CHANNEL against plain-numpy references; gradients in float64."""

import numpy as np
import pytest

from minicaffe.blob import Blob
from minicaffe.errors import GraphError, ShapeError
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(7)


def lrn_across_reference(x, size, alpha, beta, k):
    """y[c] = x[c] (k + alpha/size sum_{|c'-c| <= (size-1)/2} x[c']^2)^-beta, channel by channel."""
    channels = x.shape[1]
    half = (size - 1) // 2
    y = np.empty_like(x)
    for c in range(channels):
        window = x[:, max(0, c - half):min(channels, c + half + 1)]
        scale = k + alpha / size * (window ** 2).sum(axis=1)
        y[:, c] = x[:, c] * scale ** -beta
    return y


def lrn_within_reference(x, size, alpha, beta):
    """y = x (1 + alpha * mean of x^2 over the size x size neighbourhood, zero-padded, / size^2)^-beta."""
    half = (size - 1) // 2
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + 2 * half, w + 2 * half))
    padded[:, :, half:half + h, half:half + w] = x ** 2
    sums = np.zeros_like(x)
    for dh in range(size):
        for dw in range(size):
            sums += padded[:, :, dh:dh + h, dw:dw + w]
    return x * (1 + alpha * sums / size ** 2) ** -beta


def lrn_text(params, name="norm"):
    return f'name: "{name}" type: "LRN" lrn_param {{ {params} }}'


def test_single_channel_by_hand():
    # local_size 1: s = k + alpha x^2. x = 2, alpha = 1, k = 1, beta = 0.5: y = 2 / sqrt(5)
    layer = layer_from_text(lrn_text("local_size: 1 alpha: 1 beta: 0.5 k: 1"), dtype=np.float32)
    _, top = run_layer(layer, [np.full((1, 1, 1, 1), 2.0)])
    assert top[0].data.item() == pytest.approx(2 / np.sqrt(5), rel=1e-6)


@pytest.mark.parametrize("size, alpha, beta, k, shape", [
    (5, 1e-4, 0.75, 1.0, (2, 7, 3, 4)),        # AlexNet's settings
    (5, 0.5, 0.75, 2.0, (2, 6, 3, 3)),         # the oracle case's settings
    (3, 0.3, 0.6, 1.5, (1, 4, 5, 2)),          # general pow
    (7, 2.0, 0.75, 1.0, (1, 3, 2, 2)),         # window wider than the channels
    (3, 0.3, 0.75, 1.0, (1, 4, 30, 40)),       # several spatial blocks
])
def test_across_channels_matches_reference(size, alpha, beta, k, shape):
    x = rng.standard_normal(shape)
    layer = layer_from_text(lrn_text(f"local_size: {size} alpha: {alpha} beta: {beta} k: {k}"), dtype=np.float32)
    _, top = run_layer(layer, [x])
    expected = lrn_across_reference(x.astype(np.float32).astype(np.float64), size, alpha, beta, k)
    np.testing.assert_allclose(top[0].data, expected, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("size, alpha, beta", [(3, 0.5, 0.75), (5, 2.0, 0.6), (1, 1.0, 0.75)])
def test_within_channel_matches_reference(size, alpha, beta):
    x = rng.standard_normal((2, 3, 5, 6))
    text = lrn_text(f"local_size: {size} alpha: {alpha} beta: {beta} k: 7 norm_region: WITHIN_CHANNEL")
    _, top = run_layer(layer_from_text(text, dtype=np.float32), [x])
    expected = lrn_within_reference(x.astype(np.float32).astype(np.float64), size, alpha, beta)  # k unused
    np.testing.assert_allclose(top[0].data, expected, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("params", [
    "local_size: 5 alpha: 0.5 beta: 0.75 k: 2",
    "local_size: 3 alpha: 0.8 beta: 0.6 k: 1",
    "local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL",
    "local_size: 3 alpha: 1.5 beta: 0.6 norm_region: WITHIN_CHANNEL",
])
def test_gradient(params):
    x = rng.standard_normal((2, 4, 3, 3))
    layer = layer_from_text(lrn_text(params))
    checked = GradientChecker(stepsize=1e-4, threshold=1e-5).check_layer(layer, make_blobs(x), empty_blobs(1))
    assert checked == x.size


def test_buffers_reused_across_iterations():
    layer = layer_from_text(lrn_text("local_size: 3 norm_region: WITHIN_CHANNEL"), dtype=np.float32)
    bottom, top = run_layer(layer, [rng.standard_normal((1, 2, 4, 4))])
    scale = layer._buffers["scale"]
    layer.run_forward(bottom, top)
    assert layer._buffers["scale"] is scale


def test_errors():
    with pytest.raises(GraphError, match="layer 'norm'.*odd values for local_size, got 4"):
        layer_from_text(lrn_text("local_size: 4")).set_up(make_blobs(np.zeros((1, 2, 2, 2))), empty_blobs(1))
    with pytest.raises(ShapeError, match=r"layer 'norm'.*4-D.*expected \(N, C, H, W\), got \(2, 3\)"):
        layer_from_text(lrn_text("local_size: 3")).set_up([Blob((2, 3))], empty_blobs(1))
    blob = Blob((1, 2, 2, 2))
    with pytest.raises(GraphError, match="layer 'norm'.*in-place"):
        layer_from_text(lrn_text("local_size: 3")).set_up([blob], [blob])
    layer = layer_from_text(lrn_text("local_size: 3"))
    bottom, top = make_blobs(np.ones((1, 2, 2, 2))), empty_blobs(1)
    layer.set_up(bottom, top)
    with pytest.raises(GraphError, match="layer 'norm'.*Backward before a Forward"):
        layer.run_backward(top, [True], bottom)
