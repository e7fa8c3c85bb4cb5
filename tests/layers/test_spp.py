"""SPP: Caffe's per-level geometry, the flattened concatenation, pyramid_height 1, gradients."""

import math

import numpy as np
import pytest

from minicaffe.blob import Blob
from minicaffe.errors import GraphError, ShapeError
from minicaffe.graph import TEST
from minicaffe.memory import shapes_only
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

from .test_pooling import distinct, pool_reference

rng = np.random.default_rng(5)


def spp_text(params, name="spp"):
    return f'name: "{name}" type: "SPP" spp_param {{ {params} }}'


def level_reference(level, height, width):
    """Caffe's GetPoolingParam, written out: kernel = ceil(H / bins), pad = ceil(remainder / 2)."""
    bins = 2 ** level
    kernel = (math.ceil(height / bins), math.ceil(width / bins))
    remainder = (kernel[0] * bins - height, kernel[1] * bins - width)
    pad = ((remainder[0] + 1) // 2, (remainder[1] + 1) // 2)
    return kernel, pad


def spp_reference(x, height_levels, method):
    num, channels, height, width = x.shape
    parts = []
    for level in range(height_levels):
        kernel, pad = level_reference(level, height, width)
        top, _ = pool_reference(x, method, kernel, kernel, pad)
        parts.append(top.reshape(num, -1))
    return np.concatenate(parts, axis=1)


def test_level_geometry_by_hand():
    # 13 x 9 input: level 1 has kernel (7, 5) and pad (1, 1); level 2 kernel (4, 3), pad (2, 2)
    assert level_reference(1, 13, 9) == ((7, 5), (1, 1))
    assert level_reference(2, 13, 9) == ((4, 3), (2, 2))
    layer = layer_from_text(spp_text("pyramid_height: 3"), dtype=np.float32)
    bottom, top = [Blob((2, 3, 13, 9), dtype=np.float32)], empty_blobs(1, dtype=np.float32)
    with shapes_only():                                   # shape inference: nothing allocated
        layer.set_up(bottom, top)
    assert top[0].shape == (2, 3 * (1 + 4 + 16))
    assert [(p.kernel, p.pad, p.stride) for p in layer.poolers[1:]] == [((7, 5), (1, 1), (7, 5)),
                                                                        ((4, 3), (2, 2), (4, 3))]
    assert not bottom[0].allocated


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape, levels", [((2, 3, 13, 9), 3), ((1, 2, 8, 7), 2), ((2, 2, 6, 6), 2)])
def test_forward_matches_reference(method, shape, levels):
    x = distinct(shape)
    layer = layer_from_text(spp_text(f"pyramid_height: {levels} pool: {method}"), dtype=np.float32)
    _, top = run_layer(layer, [x])
    expected = spp_reference(x.astype(np.float32).astype(np.float64), levels, method)
    assert top[0].shape == expected.shape
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-6, atol=1e-6)


def test_stochastic_test_phase():
    x = rng.uniform(0.1, 1.0, size=(1, 2, 7, 6))
    layer = layer_from_text(spp_text("pyramid_height: 3 pool: STOCHASTIC"), phase=TEST, dtype=np.float32)
    _, top = run_layer(layer, [x])
    expected = spp_reference(x.astype(np.float32).astype(np.float64), 3, "STOCHASTIC")
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5)


def test_pyramid_height_one_is_unflattened_global_pooling():
    x = rng.standard_normal((2, 3, 5, 4))
    layer = layer_from_text(spp_text("pyramid_height: 1 pool: AVE"), dtype=np.float32)
    _, top = run_layer(layer, [x])
    assert top[0].shape == (2, 3, 1, 1)
    np.testing.assert_allclose(top[0].data, x.mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)


def test_follows_input_shape_changes():
    layer = layer_from_text(spp_text("pyramid_height: 2"), dtype=np.float32)
    bottom, top = run_layer(layer, [distinct((1, 2, 6, 6))])
    bottom[0].reshape(1, 2, 9, 5)
    bottom[0].data[...] = distinct((1, 2, 9, 5))
    layer.reshape(bottom, top)
    layer.run_forward(bottom, top)
    np.testing.assert_allclose(top[0].data, spp_reference(bottom[0].data.astype(np.float64), 2, "MAX"), rtol=1e-6)


@pytest.mark.parametrize("params, shape", [
    ("pyramid_height: 3 pool: MAX", (1, 2, 8, 7)),
    ("pyramid_height: 2 pool: AVE", (2, 2, 5, 6)),
    ("pyramid_height: 1 pool: MAX", (1, 2, 3, 4)),
])
def test_gradient(params, shape):
    x = distinct(shape)
    layer = layer_from_text(spp_text(params))
    checked = GradientChecker(stepsize=1e-3, threshold=1e-6).check_layer(layer, make_blobs(x), empty_blobs(1))
    assert checked == x.size


def test_errors():
    with pytest.raises(GraphError, match="layer 'spp'.*pyramid_height must be at least 1"):
        layer_from_text(spp_text("pool: MAX")).set_up([Blob((1, 1, 4, 4))], empty_blobs(1))
    with pytest.raises(ShapeError, match=r"layer 'spp'.*4-D.*expected \(N, C, H, W\), got \(1, 4\)"):
        layer_from_text(spp_text("pyramid_height: 2")).set_up([Blob((1, 4))], empty_blobs(1))
    # 5 rows in 4 bins: kernel 2 would need pad 2 (Caffe aborts on pad >= kernel)
    with pytest.raises(ShapeError, match=r"layer 'spp'.*5x8 input is too small for pyramid_height 3.*got \(1, 1, 5, 8\)"):
        layer_from_text(spp_text("pyramid_height: 3")).set_up([Blob((1, 1, 5, 8))], empty_blobs(1))
