"""Upsample (SegNet): forward against a numpy reference of the fork's loop, Pooling -> Upsample end to end,
backward by finite differences and by the fork's gather.

OpenCV's Caffe importer does not know SegNet's Upsample, so the reference is numpy.
"""

import warnings

import numpy as np
import pytest

from minicaffe import threads
from minicaffe.errors import GraphError, MinicaffeWarning, ShapeError
from minicaffe.graph import TEST
from minicaffe.net import Net
from minicaffe.registry import layer_class
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(137)


def upsample(params, dtype=np.float32, name="up"):
    return layer_from_text(f'name: "{name}" type: "Upsample" upsample_param {{ {params} }}', dtype=dtype)


def unpool_reference(x, mask, out_h, out_w):
    """The fork's CPU loop: a zero top, then each value to the place its (truncated) mask names, in order."""
    num, channels = x.shape[:2]
    top = np.zeros((num, channels, out_h * out_w), dtype=np.float64)
    for n in range(num):
        for c in range(channels):
            for value, place in zip(x[n, c].reshape(-1), mask[n, c].reshape(-1)):
                top[n, c, int(place)] = value
    return top.reshape(num, channels, out_h, out_w)


def window_mask(num, channels, height, width, kernel, out_w, out_h=None):
    """A mask as a kernel x kernel, stride-kernel MAX pooling makes it: one random cell of each window."""
    out_h = out_h if out_h is not None else height * kernel[0]
    rows = np.arange(height)[:, None] * kernel[0] + rng.integers(0, kernel[0], (num, channels, height, width))
    cols = np.arange(width)[None, :] * kernel[1] + rng.integers(0, kernel[1], (num, channels, height, width))
    rows = np.minimum(rows, out_h - 1)
    cols = np.minimum(cols, out_w - 1)
    return (rows * out_w + cols).astype(np.float64)


# ---------------------------------------------------------------- forward

# (params, bottom shape, output H x W, window of each mask entry)
SIZE_CASES = {
    "scale": ("scale: 2", (2, 3, 3, 4), (6, 8), (2, 2)),
    "default_scale": ("", (1, 2, 2, 3), (4, 6), (2, 2)),
    "scale_hw": ("scale_h: 3 scale_w: 2", (1, 2, 2, 3), (6, 6), (3, 2)),
    "pad_out": ("scale: 2 pad_out_h: true pad_out_w: true", (2, 1, 3, 4), (5, 7), (2, 2)),
    "pad_out_h": ("scale: 2 pad_out_h: true", (1, 2, 3, 3), (5, 6), (2, 2)),
    "upsample_hw": ("upsample_h: 7 upsample_w: 5", (1, 2, 4, 3), (7, 5), (2, 2)),
    # upsample_h/w win over scale, which is then not read.
    "upsample_over_scale": ("upsample_h: 5 upsample_w: 9 scale: 4", (2, 1, 3, 3), (5, 9), (2, 3)),
}


@pytest.mark.parametrize("case", sorted(SIZE_CASES))
def test_forward_matches_reference(case):
    params, shape, (out_h, out_w), kernel = SIZE_CASES[case]
    x = rng.standard_normal(shape).astype(np.float32)
    mask = window_mask(*shape, kernel, out_w, out_h)
    _, top = run_layer(upsample(params), [x, mask])
    assert top[0].shape == shape[:2] + (out_h, out_w) and top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, unpool_reference(x, mask, out_h, out_w))


def test_quirks_of_the_mask():
    x = np.array([[[[1, 2], [3, 4]]]], np.float32)
    # 3.7 truncates to 3; two entries naming place 5: the later one wins; -1 places nothing.
    mask = np.array([[[[3.7, 5], [5, -1]]]], np.float32)
    _, top = run_layer(upsample("scale: 2"), [x, mask])
    expected = np.zeros(16, np.float32)
    expected[3], expected[5] = 1, 3
    np.testing.assert_array_equal(top[0].data.reshape(-1), expected)


def test_pooling_then_upsample_puts_the_maxima_back(tmp_path):
    path = tmp_path / "segnet.prototxt"
    path.write_text("""
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 7 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pooled" top: "mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pooled" bottom: "mask" top: "up"
  upsample_param { scale: 2 pad_out_h: true pad_out_w: true } }
layer { name: "up_hw" type: "Upsample" bottom: "pooled" bottom: "mask" top: "up_hw"
  upsample_param { upsample_h: 5 upsample_w: 7 } }
""")
    net = Net(str(path), TEST)
    x = rng.permutation(2 * 3 * 5 * 7).reshape(2, 3, 5, 7).astype(np.float32)
    outputs = net.forward(data=x)
    # Each 2x2 window (the last row and column are windows of one cell: ceil mode) keeps its maximum
    # where it was; everything else is 0.
    expected = np.zeros_like(x)
    for h in range(0, 5, 2):
        for w in range(0, 7, 2):
            window = x[:, :, h:h + 2, w:w + 2]
            keep = window == window.max(axis=(2, 3), keepdims=True)
            expected[:, :, h:h + 2, w:w + 2] = np.where(keep, window, 0)
    assert net.blobs["mask"].data.dtype == np.float32
    np.testing.assert_array_equal(outputs["up"], expected)
    np.testing.assert_array_equal(outputs["up_hw"], expected)


def test_reshape_recomputes_the_size():
    layer = upsample("scale: 2")
    bottom, top = run_layer(layer, [np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2))])
    assert top[0].shape == (1, 1, 4, 4)
    for blob in bottom:
        blob.reshape((1, 1, 3, 2))
    layer.run_forward(bottom, top)
    assert top[0].shape == (1, 1, 6, 4)


# ---------------------------------------------------------------- backward

def test_gradient():
    x = rng.standard_normal((2, 2, 3, 3))
    mask = window_mask(2, 2, 3, 3, (2, 2), 6)
    layer = upsample("scale: 2", dtype=np.float64)
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    checker = GradientChecker(stepsize=1e-3, threshold=1e-8)
    assert checker.check_layer(layer, make_blobs(x, mask), empty_blobs(1)) == x.size


def test_backward_is_the_forks_gather():
    x = np.array([[[[1, 2], [3, 4]]]], np.float64)
    mask = np.array([[[[0, 5], [5, -1]]]], np.float64)
    layer = upsample("scale: 2", dtype=np.float64)
    bottom, top = run_layer(layer, [x, mask])
    top[0].diff[...] = np.arange(16).reshape(1, 1, 4, 4)
    bottom[0].diff[...] = 7
    layer.run_backward(top, [True, False], bottom)
    # Both entries naming place 5 get its gradient; the -1 entry gets 0.
    np.testing.assert_array_equal(bottom[0].diff.reshape(-1), [0, 5, 5, 0])


def test_threads_agree(monkeypatch):
    shape = (2, 5, 4, 6)
    x = rng.standard_normal(shape).astype(np.float32)
    mask = window_mask(*shape, (2, 2), 12)
    dy = rng.standard_normal((2, 5, 8, 12)).astype(np.float32)
    results = []
    before = threads.get_num_threads()
    try:
        for count in (1, 3):
            threads.set_num_threads(count)
            monkeypatch.setattr(threads, "CHUNK_ELEMENTS", 1)
            layer = upsample("scale: 2")
            bottom, top = run_layer(layer, [x, mask])
            top[0].diff[...] = dy
            layer.run_backward(top, [True, False], bottom)
            results.append((top[0].data.copy(), bottom[0].diff.copy()))
    finally:
        threads.set_num_threads(before)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("params, message", [
    ("scale: 2 scale_h: 2 scale_w: 2", "give upsample_h and upsample_w"),
    ("scale_h: 2", "give upsample_h and upsample_w"),
    ("scale: 1", "the scale must exceed 1"),
    ("scale_h: 2 scale_w: 1", "the scale must exceed 1"),
    ("scale: 3 pad_out_h: true", "pad_out_h needs scale_h 2, got 3"),
    ("scale_h: 2 scale_w: 3 pad_out_w: true", "pad_out_w needs scale_w 2, got 3"),
    ("upsample_h: 1 upsample_w: 4", "upsample_h and upsample_w must exceed 1"),
])
def test_parameter_errors(params, message):
    with pytest.raises(GraphError, match=f"layer 'up': .*({message})"):
        run_layer(upsample(params), [np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2))])


def test_shape_and_mask_errors():
    with pytest.raises(ShapeError, match=r"layer 'up'.*expected \(1, 2, 2, 2\), got \(1, 2, 2, 3\)"):
        run_layer(upsample("scale: 2"), [np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 3))])
    with pytest.raises(ShapeError, match="layer 'up'.*4-D"):
        run_layer(upsample("scale: 2"), [np.zeros((2, 2, 2)), np.zeros((2, 2, 2))])
    # Place 16 is past a 4x4 plane (a mask from a pooling of another size).
    with pytest.raises(GraphError, match=r"layer 'up': mask value 16 at \(0, 1, 1, 0\) is past the 4x4 output"):
        run_layer(upsample("scale: 2"), [np.zeros((1, 2, 2, 2)), [[[[0, 1], [2, 3]], [[0, 1], [16, 3]]]]])


def test_one_of_upsample_h_w_is_ignored_with_a_warning():
    with pytest.warns(MinicaffeWarning, match="layer 'up'.*only one of upsample_h and upsample_w"):
        _, top = run_layer(upsample("upsample_h: 5"), [np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 3))])
    assert top[0].shape == (1, 1, 4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_layer(upsample("upsample_h: 5 upsample_w: 6"), [np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 3))])
    assert layer_class("Upsample").fork == "SegNet (alexgkendall/caffe-segnet)"
