"""Im2col: a direct-gather numpy reference, col2im as its adjoint, gradient checks, shape rule, errors."""

import numpy as np
import pytest

from minicaffe.blob import Blob
from minicaffe.errors import ShapeError
from minicaffe.layers.im2col import ConvGeometry
from minicaffe.memory import shapes_only
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(17)


def im2col_reference(x, kernel, stride, pad, dilation):
    """(N, C * prod(kernel), *out): row (c, k) at output o holds x[n, c, o * stride - pad + k * dilation] or 0."""
    axes = x.ndim - 2
    out = [(s + 2 * p - (d * (k - 1) + 1)) // st + 1 for s, k, st, p, d in zip(x.shape[2:], kernel, stride, pad,
                                                                                  dilation)]
    num, channels = x.shape[:2]
    taps = list(np.ndindex(*kernel))
    result = np.zeros((num, channels * len(taps), *out))
    for c in range(channels):
        for t, k in enumerate(taps):
            for o in np.ndindex(*out):
                position = [oi * st - p + ki * d for oi, st, p, ki, d in zip(o, stride, pad, k, dilation)]
                if all(0 <= q < s for q, s in zip(position, x.shape[2:])):
                    result[(slice(None), c * len(taps) + t) + o] = x[(slice(None), c) + tuple(position)]
    assert len(out) == axes
    return result


def im2col_text(params, name="im2col"):
    return f'name: "{name}" type: "Im2col" convolution_param {{ {params} }}'


@pytest.mark.parametrize("params, shape, geometry", [
    ("kernel_size: 3", (2, 2, 5, 4), ((3, 3), (1, 1), (0, 0), (1, 1))),
    ("kernel_size: 3 pad: 1 stride: 2", (2, 3, 6, 7), ((3, 3), (2, 2), (1, 1), (1, 1))),
    ("kernel_h: 2 kernel_w: 3 pad_h: 2 pad_w: 1 stride_h: 3 stride_w: 1", (1, 2, 7, 5), ((2, 3), (3, 1), (2, 1), (1, 1))),
    ("kernel_size: 3 dilation: 2 dilation: 3 pad: 2", (2, 1, 7, 8), ((3, 3), (1, 1), (2, 2), (2, 3))),
])
def test_im2col_forward_matches_reference(params, shape, geometry):
    x = rng.standard_normal(shape)
    _, top = run_layer(layer_from_text(im2col_text(params), dtype=np.float32), [x])
    expected = im2col_reference(x, *geometry)
    assert top[0].shape == expected.shape
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-6)


@pytest.mark.parametrize("params, shape, geometry", [
    ("kernel_size: 2 pad: 1 stride: 2 force_nd_im2col: true", (2, 2, 5, 4), ((2, 2), (2, 2), (1, 1), (1, 1))),
    ("kernel_size: 2 kernel_size: 3 kernel_size: 2 stride: 1 stride: 2 stride: 1 pad: 1 dilation: 2",
     (1, 2, 4, 5, 3), ((2, 3, 2), (1, 2, 1), (1, 1, 1), (2, 2, 2))),
    ("kernel_size: 3 pad: 1 stride: 2 axis: 2", (2, 2, 3, 6), ((3,), (2,), (1,), (1,))),
])
def test_im2col_nd_forward_matches_reference(params, shape, geometry):
    """The N-D kernel (3-D input, or 2-D under force_nd_im2col) and 1-D input; float64."""
    x = rng.standard_normal(shape)
    layer = layer_from_text(im2col_text(params))
    _, top = run_layer(layer, [x])
    axis = layer.channel_axis
    images = x.reshape((-1,) + x.shape[axis:])
    expected = im2col_reference(images, *geometry)
    expected = expected.reshape(x.shape[:axis] + expected.shape[1:])
    np.testing.assert_array_equal(top[0].data, expected)


@pytest.mark.parametrize("params, shape", [
    ("kernel_size: 3 pad: 1 stride: 2", (2, 2, 5, 5)),
    ("kernel_h: 2 kernel_w: 3 dilation: 2 pad_h: 1 pad_w: 2 stride_h: 1 stride_w: 2", (1, 2, 5, 6)),
    ("kernel_size: 2 stride: 1 force_nd_im2col: true", (1, 2, 3, 4)),
    ("kernel_size: 2 pad: 1 stride: 2", (1, 1, 3, 2, 3)),
])
def test_im2col_gradient(params, shape):
    x = rng.standard_normal(shape)
    checked = GradientChecker().check_layer(layer_from_text(im2col_text(params)), make_blobs(x), empty_blobs(1))
    assert checked == x.size


@pytest.mark.parametrize("use_nd", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_row2im_is_the_adjoint_of_im2row(use_nd, groups):
    """<im2row(x), r> == <x, row2im(r)>, and row2im overwrites its output."""
    images, channels, dims = 3, 4, (6, 5)
    geometry = ConvGeometry(channels, dims, (3, 5), (3, 2), (2, 1), (1, 1), (1, 2), groups=groups, force_nd=use_nd)
    x = rng.standard_normal(images * geometry.image_size)
    rows = np.empty(geometry.rows_size(images))
    geometry.im2row(x, images, rows)
    rows = rows[:images * geometry.locations * geometry.width]
    r = rng.standard_normal(rows.size)
    back = np.full(x.size, np.nan)
    geometry.row2im(r, images, back)
    np.testing.assert_allclose(np.dot(rows, r), np.dot(x, back), rtol=1e-12)


def test_im2row_orders_a_row_by_group_tap_and_channel():
    """Row (n, o) holds group g's patch as (tap, channel within g): the layout the weights are permuted to."""
    x = rng.standard_normal((2, 4, 5, 5))
    geometry = ConvGeometry(4, (5, 5), (2, 5), (2, 3), (2, 1), (0, 1), (1, 1), groups=2)
    rows = np.empty(geometry.rows_size(2))
    geometry.im2row(x.reshape(-1), 2, rows)
    rows = rows[:2 * geometry.locations * geometry.width]
    columns = im2col_reference(x, (2, 3), (2, 1), (0, 1), (1, 1))        # (N, (c, tap), 2, 5)
    expected = columns.reshape(2, 2, 2, 6, 10).transpose(0, 4, 1, 3, 2)    # (n, o, g, tap, c')
    np.testing.assert_array_equal(rows.reshape(2, 10, 2, 6, 2), expected)
    weight = rng.standard_normal((6, 2, 2, 3))
    in_rows = geometry.weights_to_rows(weight)
    assert in_rows.shape == (2, 3, 12)
    np.testing.assert_array_equal(in_rows[1, 2].reshape(6, 2), weight[5].reshape(2, 6).T)
    accumulated = np.ones_like(weight)
    geometry.add_rows_to_weights(in_rows, accumulated)
    np.testing.assert_array_equal(accumulated, weight + 1)


def test_im2col_shape_rule_without_allocating():
    layer = layer_from_text(im2col_text("kernel_size: 3 stride: 2 pad: 1"), dtype=np.float32)
    bottom, top = [Blob((2, 3, 8, 7))], empty_blobs(1, dtype=np.float32)
    with shapes_only():
        layer.set_up(bottom, top)
    assert top[0].shape == (2, 27, 4, 4)
    assert not bottom[0].allocated and not top[0].allocated


@pytest.mark.parametrize("params, shape, message", [
    ("kernel_size: 4", (1, 1, 3, 5), r"layer 'im2col': kernel extent .* exceeds the padded input.*got \(1, 1, 3, 5\)"),
    ("kernel_size: 3 axis: 1", (2, 3), r"layer 'im2col': Im2col needs at least one spatial axis.*got \(2, 3\)"),
    ("stride: 2", (1, 1, 3, 5), "kernel_size must be specified once"),
    ("kernel_size: 3 stride: 1 stride: 1 stride: 1", (1, 1, 3, 5), r"stride specified 3 times; 2 spatial dims"),
])
def test_im2col_errors(params, shape, message):
    layer = layer_from_text(im2col_text(params), dtype=np.float32)
    with pytest.raises(ShapeError, match=message):
        layer.set_up(make_blobs(np.zeros(shape), dtype=np.float32), empty_blobs(1, dtype=np.float32))
