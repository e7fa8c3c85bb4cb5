"""Pooling: output-size rule, MAX (mask top), AVE (padded divisor), STOCHASTIC, global, round_mode.

Forward runs in float32 against a plain-numpy reference; gradients are checked
in float64 by finite differences.
"""

import numpy as np
import pytest

from minicaffe.blob import Blob
from minicaffe.errors import GraphError, ShapeError
from minicaffe.fillers import set_random_seed
from minicaffe.graph import TEST, TRAIN
from minicaffe.memory import shapes_only
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(11)


# ---------------------------------------------------------------- numpy reference

def reference_extent(size, kernel, stride, pad, floor=False, padded=False):
    """Caffe's rule, in integers: round the window count up (or down), then drop a last
    window that would start inside the padding."""
    span = size + 2 * pad - kernel
    extent = (span // stride if floor else -(-span // stride)) + 1
    if padded and (extent - 1) * stride >= size + pad:
        extent -= 1
    return extent


def pool_reference(x, method, kernel, stride=(1, 1), pad=(0, 0), floor=False):
    """(top, mask) of MAX / AVE / STOCHASTIC (TEST) pooling; mask holds h * W + w of the first maximum."""
    num, channels, height, width = x.shape
    padded = tuple(pad) != (0, 0)
    pooled_h = reference_extent(height, kernel[0], stride[0], pad[0], floor, padded)
    pooled_w = reference_extent(width, kernel[1], stride[1], pad[1], floor, padded)
    top = np.zeros((num, channels, pooled_h, pooled_w))
    mask = np.full(top.shape, -1)
    for ph in range(pooled_h):
        for pw in range(pooled_w):
            h0, w0 = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            h1, w1 = min(h0 + kernel[0], height + pad[0]), min(w0 + kernel[1], width + pad[1])
            divisor = (h1 - h0) * (w1 - w0)
            hs, he, ws, we = max(h0, 0), min(h1, height), max(w0, 0), min(w1, width)
            window = x[:, :, hs:he, ws:we].reshape(num, channels, -1)
            if method == "MAX":
                arg = window.argmax(axis=-1)
                top[:, :, ph, pw] = window.max(axis=-1)
                mask[:, :, ph, pw] = (hs + arg // (we - ws)) * width + ws + arg % (we - ws)
            elif method == "STOCHASTIC":             # TEST phase: sum(x^2) / sum(x), 0 unless sum(x) > 0
                total = window.sum(axis=-1)
                top[:, :, ph, pw] = np.where(total > 0, (window ** 2).sum(axis=-1) / np.where(total > 0, total, 1), 0)
            else:
                top[:, :, ph, pw] = window.sum(axis=-1) / divisor
    return top, mask


def pooling_text(params, name="pool"):
    return f'name: "{name}" type: "Pooling" pooling_param {{ {params} }}'


def distinct(shape, step=0.1):
    """Values without ties (so MAX's argmax, and its gradient, are unambiguous)."""
    count = int(np.prod(shape))
    return (rng.permutation(count) - count / 2).reshape(shape) * step


# ---------------------------------------------------------------- output sizes

@pytest.mark.parametrize("params, in_hw, out_hw", [
    ("pool: AVE kernel_size: 2 stride: 2 pad: 1", (5, 5), (3, 3)),      # ceil gives 4; the last would start in the padding
    ("kernel_size: 3 stride: 2 pad: 1", (6, 6), (4, 4)),                 # ceil (floor would give 3)
    ("kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (6, 6), (3, 3)),
    ("kernel_size: 3 stride: 2", (6, 6), (3, 3)),                        # last window partial
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (6, 6), (2, 2)),
    ("kernel_size: 3 stride: 2", (55, 55), (27, 27)),                    # AlexNet pool1
    ("kernel_size: 3 stride: 2", (13, 13), (6, 6)),                      # AlexNet pool5
    ("kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1", (4, 7), (3, 4)),
    ("pool: AVE global_pooling: true", (5, 4), (1, 1)),
])
def test_output_shape(params, in_hw, out_hw):
    layer = layer_from_text(pooling_text(params), dtype=np.float32)
    bottom = [Blob((2, 3) + in_hw, dtype=np.float32)]
    top = empty_blobs(1, dtype=np.float32)
    with shapes_only():                      # the shape rule `check` uses: no data read, nothing allocated
        layer.set_up(bottom, top)
    assert top[0].shape == (2, 3) + out_hw
    assert not bottom[0].allocated and not top[0].allocated


def test_mask_top_shape_and_reshape():
    layer = layer_from_text(pooling_text("kernel_size: 2 stride: 2"), dtype=np.float32)
    bottom, top = run_layer(layer, [distinct((1, 2, 4, 6))], num_tops=2)
    assert top[0].shape == top[1].shape == (1, 2, 2, 3)
    bottom[0].reshape(3, 2, 6, 6)
    layer.reshape(bottom, top)
    assert top[0].shape == top[1].shape == (3, 2, 3, 3)


# ---------------------------------------------------------------- hand-written values (Caffe's own tests)

def test_max_square_values_and_mask():
    plane = np.array([[1, 2, 5, 2, 3], [9, 4, 1, 4, 8], [1, 2, 5, 2, 3]], dtype=np.float32)
    layer = layer_from_text(pooling_text("pool: MAX kernel_size: 2"), dtype=np.float32)
    _, top = run_layer(layer, [np.broadcast_to(plane, (2, 2, 3, 5))], num_tops=2)
    np.testing.assert_array_equal(top[0].data, np.broadcast_to([[9, 5, 5, 8], [9, 5, 5, 8]], (2, 2, 2, 4)))
    np.testing.assert_array_equal(top[1].data, np.broadcast_to([[5, 2, 2, 9], [5, 12, 12, 9]], (2, 2, 2, 4)))


MAGIC6 = np.array([[35, 1, 6, 26, 19, 24], [3, 32, 7, 21, 23, 25], [31, 9, 2, 22, 27, 20],
                   [8, 28, 33, 17, 10, 15], [30, 5, 34, 12, 14, 16], [4, 36, 29, 13, 18, 11]], dtype=np.float32)


def test_max_rectangular_values_and_mask():
    layer = layer_from_text(pooling_text("pool: MAX kernel_h: 3 kernel_w: 2"), dtype=np.float32)
    _, top = run_layer(layer, [np.broadcast_to(MAGIC6, (2, 2, 6, 6))], num_tops=2)
    expected = [[35, 32, 26, 27, 27], [32, 33, 33, 27, 27], [31, 34, 34, 27, 27], [36, 36, 34, 18, 18]]
    mask = [[0, 7, 3, 16, 16], [7, 20, 20, 16, 16], [12, 26, 26, 16, 16], [31, 31, 26, 34, 34]]
    np.testing.assert_array_equal(top[0].data[1, 1], expected)
    np.testing.assert_array_equal(top[1].data[0, 1], mask)


def test_ave_padded_divisor_counts_padding():
    layer = layer_from_text(pooling_text("pool: AVE kernel_size: 3 stride: 1 pad: 1"), dtype=np.float32)
    _, top = run_layer(layer, [np.full((1, 1, 3, 3), 2.0)])
    np.testing.assert_allclose(top[0].data[0, 0], [[8 / 9, 4 / 3, 8 / 9], [4 / 3, 2, 4 / 3], [8 / 9, 4 / 3, 8 / 9]],
                               rtol=1e-6)


def test_ave_divisor_clipped_at_padded_bounds():
    # 6x6, kernel 3, stride 2, pad 1: the last window spans rows 5..7, of which row 7 is past the
    # padding, so its divisor is 2 (rows) x 3 = 6 for a window summing 4 real cells.
    layer = layer_from_text(pooling_text("pool: AVE kernel_size: 3 stride: 2 pad: 1"), dtype=np.float32)
    _, top = run_layer(layer, [np.ones((1, 1, 6, 6))])
    assert top[0].shape == (1, 1, 4, 4)
    assert top[0].data[0, 0, 3, 3] == pytest.approx(1 / 4)
    assert top[0].data[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert top[0].data[0, 0, 1, 1] == pytest.approx(1.0)


# ---------------------------------------------------------------- float32 forward vs the reference

GEOMETRIES = [
    ("kernel_size: 2 stride: 2", (2,) * 2, (2,) * 2, (0, 0), False),
    ("kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0), False),
    ("kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), False),
    ("kernel_size: 2 stride: 2 pad: 1", (2, 2), (2, 2), (1, 1), False),
    ("kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (3, 3), (2, 2), (1, 1), True),
    ("kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1", (2, 3), (1, 2), (0, 1), False),
    ("kernel_size: 3 stride: 1 pad: 2", (3, 3), (1, 1), (2, 2), False),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("params, kernel, stride, pad, floor", GEOMETRIES)
def test_forward_matches_reference(method, params, kernel, stride, pad, floor):
    x = distinct((2, 3, 7, 6))
    layer = layer_from_text(pooling_text(f"pool: {method} {params}"), dtype=np.float32)
    _, top = run_layer(layer, [x], num_tops=2 if method == "MAX" else 1)
    expected, mask = pool_reference(x.astype(np.float32).astype(np.float64), method, kernel, stride, pad, floor)
    assert top[0].shape == expected.shape
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-6, atol=1e-6)
    if method == "MAX":
        np.testing.assert_array_equal(top[1].data, mask)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    x = rng.standard_normal((2, 3, 5, 4))
    layer = layer_from_text(pooling_text(f"pool: {method} global_pooling: true"), dtype=np.float32)
    bottom, top = run_layer(layer, [x])
    reduce = np.max if method == "MAX" else np.mean
    np.testing.assert_allclose(top[0].data, reduce(x, axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    bottom[0].reshape(2, 3, 3, 7)                       # the kernel follows the input
    layer.reshape(bottom, top)
    assert top[0].shape == (2, 3, 1, 1)


def test_max_follows_caffe_on_nan_and_ties():
    x = np.array([[[[np.nan, 1.0], [1.0, -2.0]]]], dtype=np.float32)
    layer = layer_from_text(pooling_text("kernel_size: 2"), dtype=np.float32)
    _, top = run_layer(layer, [x], num_tops=2)
    assert top[0].data.ravel()[0] == 1.0                # NaN never wins (Caffe compares with >)
    assert top[1].data.ravel()[0] == 1.0                # of the tied 1.0s, the first in row-major order


def test_empty_windows_are_harmless():
    # stride > kernel without padding: the last window lies past the input (Caffe reads out of bounds)
    x = distinct((1, 2, 4, 4))
    for method in ("MAX", "AVE"):
        layer = layer_from_text(pooling_text(f"pool: {method} kernel_size: 1 stride: 2"))
        bottom, top = run_layer(layer, [x])
        assert top[0].shape == (1, 2, 3, 3)
        np.testing.assert_array_equal(top[0].data[:, :, :2, :2], x[:, :, ::2, ::2])
        if method == "AVE":
            assert np.all(top[0].data[:, :, 2, :] == 0)
        top[0].diff[...] = 1.0
        layer.run_backward(top, [True], bottom)
        assert bottom[0].diff.sum() == 8                # only the real windows route gradient


# ---------------------------------------------------------------- float64 gradient checks

@pytest.mark.parametrize("params", [
    "pool: MAX kernel_size: 3 stride: 2 pad: 1",
    "pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1",
    "pool: MAX global_pooling: true",
    "pool: AVE kernel_size: 2 stride: 2 pad: 1",
    "pool: AVE kernel_size: 3 stride: 2 pad: 1",
    "pool: AVE kernel_size: 3 stride: 1 round_mode: FLOOR",
    "pool: AVE global_pooling: true",
])
def test_gradient(params):
    x = distinct((2, 2, 5, 5))
    layer = layer_from_text(pooling_text(params))
    checked = GradientChecker(stepsize=1e-3, threshold=1e-6).check_layer(layer, make_blobs(x), empty_blobs(1))
    assert checked == x.size


def test_max_gradient_with_mask_top_and_overlap():
    # overlapping windows: a cell that is the max of several windows gets the sum of their gradients
    x = distinct((1, 2, 5, 5))
    layer = layer_from_text(pooling_text("pool: MAX kernel_size: 3 stride: 1"))
    top = empty_blobs(2)
    checker = GradientChecker()
    checker.check_layer(layer, make_blobs(x), top)
    bottom = make_blobs(x)
    layer.reshape(bottom, top)
    layer.run_forward(bottom, top)
    top[0].diff[...] = 1.0
    layer.run_backward(top, [True], bottom)
    expected = np.zeros(x.size)
    np.add.at(expected, (top[1].data.astype(int) + np.arange(2)[:, None, None] * 25).ravel(), 1.0)
    np.testing.assert_array_equal(bottom[0].diff.ravel(), expected)


# ---------------------------------------------------------------- STOCHASTIC

def test_stochastic_test_phase_is_probability_weighted():
    x = rng.uniform(0.1, 1.0, size=(2, 3, 6, 6))
    x[0, 0, :3, :3] = 0.0                                # sum 0: output 0
    layer = layer_from_text(pooling_text("pool: STOCHASTIC kernel_size: 3 stride: 3"), phase=TEST,
                            dtype=np.float32)
    _, top = run_layer(layer, [x])
    x32 = x.astype(np.float32).astype(np.float64)
    windows = x32.reshape(2, 3, 2, 3, 2, 3)
    expected = (windows ** 2).sum(axis=(3, 5)) / np.maximum(windows.sum(axis=(3, 5)), 1e-30)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5)
    assert top[0].data[0, 0, 0, 0] == 0


def test_stochastic_with_padding_treats_padding_as_zeros():
    # an extension: Caffe refuses padding for STOCHASTIC
    x = rng.uniform(0.1, 1.0, size=(1, 2, 5, 5))
    layer = layer_from_text(pooling_text("pool: STOCHASTIC kernel_size: 3 stride: 2 pad: 1"), phase=TEST,
                            dtype=np.float32)
    _, top = run_layer(layer, [x])
    expected, _ = pool_reference(x.astype(np.float32).astype(np.float64), "STOCHASTIC", (3, 3), (2, 2), (1, 1))
    assert top[0].shape == (1, 2, 3, 3)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5)


def test_stochastic_train_samples_in_proportion():
    values = np.array([[1.0, 2.0], [3.0, 4.0]])
    x = np.broadcast_to(values, (4000, 2, 2, 2)).copy()
    layer = layer_from_text(pooling_text("pool: STOCHASTIC kernel_size: 2"), phase=TRAIN, dtype=np.float32)
    set_random_seed(5)
    _, top = run_layer(layer, [x])
    drawn = top[0].data.ravel()
    frequencies = np.array([(drawn == v).mean() for v in values.ravel()])
    np.testing.assert_allclose(frequencies, values.ravel() / values.sum(), atol=0.02)
    assert frequencies.sum() == 1.0


def test_stochastic_train_is_reproducible_and_routes_gradient():
    x = rng.uniform(0.1, 1.0, size=(2, 2, 4, 4))
    layer = layer_from_text(pooling_text("pool: STOCHASTIC kernel_size: 2 stride: 2"), phase=TRAIN)
    set_random_seed(3)
    bottom, top = run_layer(layer, [x])
    first = top[0].data.copy()
    set_random_seed(3)
    layer.run_forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, first)
    top[0].diff[...] = 1.0
    layer.run_backward(top, [True], bottom)
    # each output's gradient lands on one cell of its window, holding the sampled value
    np.testing.assert_array_equal((bottom[0].diff != 0).reshape(2, 2, 2, 2, 2, 2).sum(axis=(3, 5)), 1)
    picked = np.where(bottom[0].diff != 0, x, 0).reshape(2, 2, 2, 2, 2, 2).sum(axis=(3, 5))
    np.testing.assert_array_equal(picked, first)


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_stochastic_gradient(phase):
    x = rng.uniform(0.2, 1.0, size=(1, 2, 5, 5))
    layer = layer_from_text(pooling_text("pool: STOCHASTIC kernel_size: 3 stride: 2"), phase=phase)
    checked = GradientChecker(stepsize=1e-4, threshold=1e-5).check_layer(layer, make_blobs(x), empty_blobs(1))
    assert checked == x.size


# ---------------------------------------------------------------- buffers and errors

def test_mask_buffer_reused_across_iterations():
    layer = layer_from_text(pooling_text("kernel_size: 2 stride: 2"), dtype=np.float32)
    bottom, top = run_layer(layer, [distinct((2, 2, 4, 4))])
    mask = layer.pooler.mask
    bottom[0].data[...] = distinct((2, 2, 4, 4))
    layer.run_forward(bottom, top)
    assert layer.pooler.mask is mask


@pytest.mark.parametrize("params, error, message", [
    ("pool: MAX", GraphError, "kernel_size, or both kernel_h and kernel_w"),
    ("kernel_size: 2 kernel_h: 2 kernel_w: 2", GraphError, "not both forms"),
    ("kernel_h: 2", GraphError, "kernel_h and kernel_w"),
    ("kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", GraphError, "pad, or both pad_h and pad_w"),
    ("kernel_size: 2 stride_h: 2", GraphError, "stride, or both stride_h and stride_w"),
    ("global_pooling: true kernel_size: 2", GraphError, "global_pooling"),
    ("global_pooling: true stride: 2", GraphError, "pad 0 and stride 1"),
    ("kernel_size: 2 pad: 2", GraphError, r"pad \(2, 2\) must be smaller than the kernel \(2, 2\)"),
    ("kernel_size: 2 stride: 0", GraphError, "strides must be positive"),
])
def test_parameter_errors(params, error, message):
    layer = layer_from_text(pooling_text(params))
    with pytest.raises(error, match="layer 'pool'.*" + message):
        layer.set_up(make_blobs(np.zeros((1, 1, 4, 4))), empty_blobs(1))


def test_shape_errors():
    layer = layer_from_text(pooling_text("kernel_size: 2"))
    with pytest.raises(ShapeError, match=r"layer 'pool'.*4-D.*expected \(N, C, H, W\), got \(2, 3, 4\)"):
        layer.set_up([Blob((2, 3, 4))], empty_blobs(1))
    layer = layer_from_text(pooling_text("kernel_size: 5"))
    with pytest.raises(ShapeError, match=r"layer 'pool'.*does not fit the bottom \(1, 1, 2, 2\)"):
        layer.set_up([Blob((1, 1, 2, 2))], empty_blobs(1))
    layer = layer_from_text(pooling_text("pool: AVE kernel_size: 2"))
    with pytest.raises(GraphError, match="layer 'pool'.*only MAX pooling has a second top"):
        layer.set_up([Blob((1, 1, 4, 4))], empty_blobs(2))
    blob = Blob((1, 1, 4, 4))
    with pytest.raises(GraphError, match="layer 'pool'.*in-place"):
        layer_from_text(pooling_text("kernel_size: 1")).set_up([blob], [blob])
    layer = layer_from_text(pooling_text("kernel_size: 2"))
    bottom, top = make_blobs(np.ones((1, 1, 4, 4))), empty_blobs(1)
    layer.set_up(bottom, top)
    with pytest.raises(GraphError, match="layer 'pool'.*Backward before a Forward"):
        layer.run_backward(top, [True], bottom)


# ---------------------------------------------------------------- bit-exact kernels (padded and direct)

FLT_MAX = float(np.finfo(np.float32).max)


def caffe_pooling(x, method, kernel, stride, pad, pooled):
    """Caffe's CPU loops, vectorized over the planes only (x: planes x H x W): per output, the
    window's cells in row-major order, clipped to the input. MAX: a running max from -FLT_MAX
    replaced on a strict ``>`` (so NaN never wins and the first maximum stays), with the index
    h * W + w of its cell (-1 for none). AVE: a running sum from +0.0, then one division by the
    window's size clipped to the padded bounds; 0 for a window holding no input cell."""
    planes, height, width = x.shape
    top = np.zeros((planes,) + pooled, dtype=x.dtype)
    mask = np.full(top.shape, -1, dtype=np.int64)
    with np.errstate(all="ignore"):                # inf - inf, overflow: as the kernels
        _caffe_windows(x, method, kernel, stride, pad, pooled, top, mask)
    return top, mask


def _caffe_windows(x, method, kernel, stride, pad, pooled, top, mask):
    planes, height, width = x.shape
    for ph in range(pooled[0]):
        for pw in range(pooled[1]):
            h0, w0 = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            h1, w1 = min(h0 + kernel[0], height + pad[0]), min(w0 + kernel[1], width + pad[1])
            size = (h1 - h0) * (w1 - w0)
            cells = [(h, w) for h in range(max(h0, 0), min(h1, height)) for w in range(max(w0, 0), min(w1, width))]
            if method == "MAX":
                best = np.full(planes, -FLT_MAX, dtype=x.dtype)
                index = np.full(planes, -1)
                for h, w in cells:
                    wins = x[:, h, w] > best
                    best = np.where(wins, x[:, h, w], best)
                    index = np.where(wins, h * width + w, index)
                top[:, ph, pw], mask[:, ph, pw] = best, index
            elif cells:
                total = np.zeros(planes, dtype=x.dtype)
                for h, w in cells:
                    total = total + x[:, h, w]
                top[:, ph, pw] = total / x.dtype.type(size)


def assert_same_bits(actual, expected):
    """Equal bit for bit (so 0.0 differs from -0.0), NaN where NaN (whatever its payload)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan)
    bits = actual.dtype.newbyteorder("=").str.replace("f", "u")
    np.testing.assert_array_equal(np.where(nan, 0, actual).view(bits), np.where(nan, 0, expected).view(bits))


def awkward_values(shape, dtype, seed=0):
    """Few distinct values (many ties, both zeros), and some NaN, +-inf and +-FLT_MAX."""
    generator = np.random.default_rng(seed)
    x = generator.integers(-3, 4, size=shape).astype(dtype) * dtype(0.5)
    x[generator.random(shape) < 0.1] = -0.0
    specials = np.array([np.nan, np.inf, -np.inf, FLT_MAX, -FLT_MAX, -1e30], dtype=dtype)
    spots = generator.random(shape) < 0.06
    x[spots] = generator.choice(specials, size=int(spots.sum()))
    return x


# (H, W), kernel, stride, pad, round down: the common 3x3/s2, 3x3/s1/p1 and 2x2/s2, ceil-mode windows
# past the input, kernel widths that end a window row with one or two cells, rectangular kernels and
# strides, a row stride the padded kernel splits into phases, windows wholly outside the input
# (stride > kernel) and global pooling
EXACT_GEOMETRIES = [
    ((9, 11), (3, 3), (2, 2), (0, 0), False),
    ((8, 8), (3, 3), (1, 1), (1, 1), False),
    ((6, 7), (2, 2), (2, 2), (0, 0), False),
    ((8, 9), (3, 3), (2, 2), (1, 1), False),
    ((7, 9), (3, 3), (2, 2), (1, 1), True),
    ((9, 10), (4, 5), (1, 2), (2, 1), False),
    ((10, 9), (2, 7), (3, 1), (1, 3), False),
    ((5, 6), (5, 3), (2, 1), (0, 2), False),
    ((9, 9), (3, 3), (3, 3), (1, 1), False),
    ((7, 8), (1, 1), (2, 2), (0, 0), False),
    ((6, 5), (6, 5), (1, 1), (0, 0), False),
]


def _pooled(shape, kernel, stride, pad, floor):
    padded = tuple(pad) != (0, 0)
    return tuple(reference_extent(shape[i], kernel[i], stride[i], pad[i], floor, padded) for i in range(2))


@pytest.mark.parametrize("shape, kernel, stride, pad, floor", EXACT_GEOMETRIES)
def test_kernels_match_caffe_bit_for_bit(shape, kernel, stride, pad, floor):
    from minicaffe.layers import pooling
    pooled = _pooled(shape, kernel, stride, pad, floor)
    args = kernel + stride + pad
    for dtype in (np.float32, np.float64):
        x = awkward_values((5,) + shape, dtype)
        maxima, indices = caffe_pooling(x, "MAX", kernel, stride, pad, pooled)
        averages, _ = caffe_pooling(x, "AVE", kernel, stride, pad, pooled)
        top, mask = np.empty_like(maxima), np.empty(maxima.shape, dtype=np.int32)
        pooling.max_pool_direct(x, top, mask, True, *args)
        assert_same_bits(top, maxima)
        np.testing.assert_array_equal(mask, indices)
        pooling.ave_pool_direct(x, top, *args)
        assert_same_bits(top, averages)
        if dtype is np.float64 or stride[1] > 2:      # the padded kernel: float32, column strides 1 and 2
            continue
        for track in (True, False):
            top[...], mask[...] = 7.0, 7
            pooling.pool_forward(x, top, mask, True, track, *args)
            assert_same_bits(top, maxima)
            np.testing.assert_array_equal(mask, indices if track else 7)     # untracked: mask untouched
        pooling.pool_forward(x, top, pooling._NO_MASK, False, False, *args)
        assert_same_bits(top, averages)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_matches_caffe_bit_for_bit(method, dtype):
    # 300 planes of 7x7: several groups of planes in the padded kernel, the last one partial
    x = awkward_values((3, 100, 7, 7), dtype, seed=1)
    expected, indices = caffe_pooling(x.reshape(300, 7, 7), method, (3, 3), (1, 1), (1, 1), (7, 7))
    for phase, num_tops in [(TRAIN, 1), (TEST, 1), (TEST, 2)] if method == "MAX" else [(TRAIN, 1), (TEST, 1)]:
        layer = layer_from_text(pooling_text(f"pool: {method} kernel_size: 3 stride: 1 pad: 1"), phase=phase,
                                dtype=dtype)
        _, top = run_layer(layer, [x], num_tops=num_tops)
        assert_same_bits(top[0].data.reshape(expected.shape), expected)
        if num_tops == 2:
            np.testing.assert_array_equal(top[1].data.reshape(indices.shape), indices)


def test_threads_do_not_change_a_bit():
    from minicaffe import threads
    x = awkward_values((4, 64, 32, 32), np.float32, seed=2)
    results = []
    before = threads.get_num_threads()
    try:
        for count in (1, 2):
            threads.set_num_threads(count)
            layer = layer_from_text(pooling_text("kernel_size: 3 stride: 2"), dtype=np.float32)
            _, top = run_layer(layer, [x], num_tops=2)
            results.append((top[0].data.copy(), top[1].data.copy()))
    finally:
        threads.set_num_threads(before)
    assert_same_bits(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_test_phase_max_keeps_no_mask_until_a_backward(dtype):
    # TEST without a mask top: Forward keeps no argmax; a Backward finds it from the bottom, routes the
    # gradient as TRAIN does, and from then on Forward keeps it.
    x = distinct((2, 3, 9, 9))
    gradient = rng.standard_normal((2, 3, 4, 4))
    diffs = []
    for phase in (TRAIN, TEST):
        layer = layer_from_text(pooling_text("kernel_size: 3 stride: 2"), phase=phase, dtype=dtype)
        bottom, top = run_layer(layer, [x])
        assert (layer.pooler.mask_shape is None) == (phase == TEST)
        top[0].diff[...] = gradient
        layer.run_backward(top, [True], bottom)
        diffs.append(bottom[0].diff.copy())
        assert layer.pooler.mask_shape == (6, 4, 4)
        layer.run_forward(bottom, top)
        assert layer.pooler.mask_shape == (6, 4, 4)
    np.testing.assert_array_equal(diffs[1], diffs[0])
    _, indices = caffe_pooling(x.astype(dtype).reshape(6, 9, 9), "MAX", (3, 3), (2, 2), (0, 0), (4, 4))
    expected = np.zeros((6, 81), dtype=dtype)
    for plane in range(6):
        np.add.at(expected[plane], indices[plane].ravel(), gradient.astype(dtype).reshape(6, 16)[plane])
    np.testing.assert_array_equal(diffs[0].reshape(6, 81), expected)


def test_test_phase_backward_before_forward_is_refused():
    layer = layer_from_text(pooling_text("kernel_size: 2"), phase=TEST)
    bottom, top = make_blobs(np.ones((1, 1, 4, 4))), empty_blobs(1)
    layer.set_up(bottom, top)
    with pytest.raises(GraphError, match="layer 'pool'.*Backward before a Forward"):
        layer.run_backward(top, [True], bottom)
