"""Convolution and Deconvolution: direct-loop numpy references, gradient checks, shape rules, errors.

Forward runs in float32 (2-D) against references written as loops over output
positions and kernel taps, independent of im2col; N-D forward runs in float64
(the dtype of the gradient checks, so the N-D kernels compile once). Gradients
are checked in float64 by finite differences over each option that changes
the math. Each runs on the path its geometry gets by itself (1x1, direct or
im2row); test_convolution_paths.py compares every path with im2row.
"""

import numpy as np
import pytest

from minicaffe.errors import GraphError, ShapeError, WeightsError
from minicaffe.layers import conv_im2row
from minicaffe.memory import shapes_only
from minicaffe.net import Net
from minicaffe.proto.text import parse_net
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(5)


# ---------------------------------------------------------------- numpy references

def _as_tuple(value, axes):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * axes


def conv_reference(x, weight, bias, stride=1, pad=0, dilation=1, group=1):
    """Direct convolution of x (N, C, *S) with weight (M, C/group, *K): loops over outputs and taps."""
    axes = x.ndim - 2
    kernel = weight.shape[2:]
    stride, pad, dilation = (_as_tuple(v, axes) for v in (stride, pad, dilation))
    out = [(s + 2 * p - (d * (k - 1) + 1)) // st + 1
           for s, k, st, p, d in zip(x.shape[2:], kernel, stride, pad, dilation)]
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    num, channels = x.shape[:2]
    outputs = weight.shape[0]
    cg, mg = channels // group, outputs // group
    y = np.zeros((num, outputs, *out))
    for o in np.ndindex(*out):
        for k in np.ndindex(*kernel):
            position = tuple(oi * st + ki * d for oi, ki, st, d in zip(o, k, stride, dilation))
            patch = padded[(slice(None), slice(None)) + position]                   # (N, C)
            for g in range(group):
                w = weight[(slice(g * mg, (g + 1) * mg), slice(None)) + k]          # (M/g, C/g)
                y[(slice(None), slice(g * mg, (g + 1) * mg)) + o] += patch[:, g * cg:(g + 1) * cg] @ w.T
    if bias is not None:
        y += bias.reshape((1, outputs) + (1,) * axes)
    return y


def deconv_reference(x, weight, bias, stride=1, pad=0, dilation=1, group=1):
    """Transposed convolution by scattering: each input pixel adds weight * value to the taps it reaches."""
    axes = x.ndim - 2
    kernel = weight.shape[2:]
    stride, pad, dilation = (_as_tuple(v, axes) for v in (stride, pad, dilation))
    num, channels = x.shape[:2]
    og = weight.shape[1]
    outputs = og * group
    cg = channels // group
    full = [st * (s - 1) + d * (k - 1) + 1 for s, k, st, d in zip(x.shape[2:], kernel, stride, dilation)]
    y = np.zeros((num, outputs, *full))
    for i in np.ndindex(*x.shape[2:]):
        for k in np.ndindex(*kernel):
            position = tuple(ii * st + ki * d for ii, ki, st, d in zip(i, k, stride, dilation))
            for g in range(group):
                w = weight[(slice(g * cg, (g + 1) * cg), slice(None)) + k]          # (C/g, O/g)
                y[(slice(None), slice(g * og, (g + 1) * og)) + position] += x[(slice(None), slice(g * cg, (g + 1) * cg)) + i] @ w
    crop = tuple(slice(p, f - p) for p, f in zip(pad, full))
    y = y[(slice(None), slice(None)) + crop]
    if bias is not None:
        y = y + bias.reshape((1, outputs) + (1,) * axes)
    return y


def conv_text(params, kind="Convolution", name="conv"):
    return (f'name: "{name}" type: "{kind}" convolution_param {{ {params} '
            'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 } }')


def forward(text, x, dtype=np.float32, bottoms=1):
    layer = layer_from_text(text, dtype=dtype)
    bottom, top = run_layer(layer, [x] * bottoms if not isinstance(x, list) else x, num_tops=bottoms)
    return layer, bottom, top


# ---------------------------------------------------------------- Convolution forward

CONV_CASES = [
    # params, input shape, reference keyword arguments
    ("num_output: 4 kernel_size: 3", (2, 3, 6, 5), {}),
    ("num_output: 3 kernel_size: 3 pad: 1", (2, 7, 5, 4), dict(pad=1)),       # rows of 3 * 7 >= 16 values
    ("num_output: 4 kernel_size: 3 pad: 1 stride: 2", (2, 3, 7, 7), dict(pad=1, stride=2)),
    ("num_output: 3 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2", (2, 2, 5, 7),
     dict(pad=(1, 0), stride=(1, 2))),
    ("num_output: 6 kernel_size: 3 group: 2 dilation: 2 pad: 2", (2, 4, 9, 8), dict(group=2, dilation=2, pad=2)),
    ("num_output: 4 kernel_size: 2 kernel_size: 3 dilation: 3 dilation: 1 stride: 2 stride: 1 pad: 0 pad: 2",
     (1, 2, 8, 6), dict(dilation=(3, 1), stride=(2, 1), pad=(0, 2))),
    ("num_output: 5 kernel_size: 1 bias_term: false", (2, 3, 4, 4), dict(no_bias=True)),
    ("num_output: 4 kernel_size: 1 group: 2", (2, 6, 3, 5), dict(group=2)),
    ("num_output: 4 kernel_size: 2 stride: 3 pad: 1 group: 4", (2, 4, 7, 6), dict(stride=3, pad=1, group=4)),
]


@pytest.mark.parametrize("params, shape, options", CONV_CASES)
def test_convolution_forward_matches_direct_loops(params, shape, options):
    options = dict(options)
    no_bias = options.pop("no_bias", False)
    x = rng.standard_normal(shape)
    layer, _, top = forward(conv_text(params), x)
    weight = layer.blobs[0].data.astype(np.float64)
    bias = None if no_bias else layer.blobs[1].data.astype(np.float64)
    assert len(layer.blobs) == (1 if no_bias else 2)
    expected = conv_reference(x, weight, bias, **options)
    assert top[0].shape == expected.shape
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-4, atol=1e-4)


def test_convolution_weight_and_bias_shapes_follow_caffe():
    layer = layer_from_text(conv_text("num_output: 6 kernel_h: 3 kernel_w: 2 group: 3"), dtype=np.float32)
    bottom, top = make_blobs(np.zeros((1, 9, 5, 5)), dtype=np.float32), empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    assert layer.blobs[0].shape == (6, 3, 3, 2)        # (num_output, channels / group, kh, kw)
    assert layer.blobs[1].shape == (6,)
    assert top[0].shape == (1, 6, 3, 4)


def test_convolution_chunks_give_the_same_result(monkeypatch):
    """A column budget of one image per chunk (several chunks) must not change anything."""
    x = rng.standard_normal((5, 3, 6, 6))
    params = "num_output: 4 kernel_size: 3 pad: 1"
    layer, _, whole = forward(conv_text(params), x)
    weight, bias = layer.blobs[0].data.astype(np.float64), layer.blobs[1].data.astype(np.float64)
    monkeypatch.setattr(conv_im2row, "COLUMN_BUDGET", 1)
    chunked_layer = layer_from_text(conv_text(params), dtype=np.float32)
    chunked_layer.force_path = "im2row"
    bottom, top = make_blobs(x, dtype=np.float32), empty_blobs(1, dtype=np.float32)
    chunked_layer.set_up(bottom, top)
    assert chunked_layer.conv_path == "im2row" and chunked_layer.path.chunk == 1
    chunked_layer.blobs[0].data[...] = layer.blobs[0].data
    chunked_layer.blobs[1].data[...] = layer.blobs[1].data
    chunked_layer.run_forward(bottom, top)
    np.testing.assert_allclose(top[0].data, conv_reference(x, weight, bias, pad=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(top[0].data, whole[0].data, rtol=1e-5, atol=1e-5)
    # Backward over chunks: the weight gradient sums over every chunk.
    top[0].diff[...] = 1.0
    chunked_layer.run_backward(top, [True], bottom)
    expected_bias_diff = np.full(4, 5 * 36.0)
    np.testing.assert_allclose(chunked_layer.blobs[1].diff, expected_bias_diff, rtol=1e-5)
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    window_sums = np.array([[padded[:, c, i:i + 6, j:j + 6].sum() for j in range(3)] for c in range(3)
                            for i in range(3)]).reshape(3, 3, 3)
    np.testing.assert_allclose(chunked_layer.blobs[0].diff, np.broadcast_to(window_sums, (4, 3, 3, 3)),
                               rtol=1e-4, atol=1e-3)


def test_convolution_several_bottoms_share_the_weights():
    a, b = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 2, 5, 5))
    layer, _, top = forward(conv_text("num_output: 3 kernel_size: 3"), [a, b], bottoms=2)
    weight, bias = layer.blobs[0].data.astype(np.float64), layer.blobs[1].data.astype(np.float64)
    np.testing.assert_allclose(top[0].data, conv_reference(a, weight, bias), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(top[1].data, conv_reference(b, weight, bias), rtol=1e-4, atol=1e-4)


def test_convolution_channel_axis_other_than_one():
    """axis: 2 -- axes 0 and 1 are both batch axes; the spatial axes follow the channel axis."""
    x = rng.standard_normal((2, 3, 2, 5, 4))
    layer, _, top = forward(conv_text("num_output: 3 kernel_size: 2 axis: 2"), x)
    assert top[0].shape == (2, 3, 3, 4, 3)
    weight, bias = layer.blobs[0].data.astype(np.float64), layer.blobs[1].data.astype(np.float64)
    expected = conv_reference(x.reshape(6, 2, 5, 4), weight, bias).reshape(2, 3, 3, 4, 3)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("params, shape, options", [
    ("num_output: 3 kernel_size: 2 kernel_size: 3 kernel_size: 2 pad: 1 stride: 2 stride: 1 stride: 1",
     (2, 2, 4, 5, 3), dict(pad=1, stride=(2, 1, 1))),
    ("num_output: 4 kernel_size: 3 dilation: 2 pad: 1 group: 2", (2, 2, 9), dict(dilation=2, pad=1, group=2)),
    ("num_output: 4 kernel_size: 3 pad: 1 stride: 2 force_nd_im2col: true", (2, 3, 6, 5), dict(pad=1, stride=2)),
])
def test_convolution_nd_forward(params, shape, options):
    """3-D and 1-D spatial axes, and 2-D through the N-D kernel (float64)."""
    x = rng.standard_normal(shape)
    layer, _, top = forward(conv_text(params), x, dtype=np.float64)
    expected = conv_reference(x, layer.blobs[0].data, layer.blobs[1].data, **options)
    assert top[0].shape == expected.shape
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-10, atol=1e-10)


def test_convolution_without_spatial_axes_is_a_grouped_inner_product():
    """Caffe allows zero spatial axes: a (N, C) bottom, weight (M, C/group)."""
    x = rng.standard_normal((3, 4))
    layer, _, top = forward(conv_text("num_output: 2 group: 2 kernel_size: 1"), x, dtype=np.float64)
    assert layer.blobs[0].shape == (2, 2)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    expected = np.stack([x[:, :2] @ w[0], x[:, 2:] @ w[1]], axis=1) + b
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-12)


# ---------------------------------------------------------------- Deconvolution forward

DECONV_CASES = [
    ("num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2", (2, 4, 4, 4), dict(stride=2, pad=1, group=2)),
    ("num_output: 3 kernel_size: 3", (2, 2, 3, 4), {}),
    ("num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0 bias_term: false",
     (1, 3, 3, 3), dict(stride=(2, 3), pad=(1, 0), no_bias=True)),
    ("num_output: 4 kernel_size: 3 dilation: 2 pad: 1 stride: 2", (2, 2, 3, 3), dict(dilation=2, pad=1, stride=2)),
]


@pytest.mark.parametrize("params, shape, options", DECONV_CASES)
def test_deconvolution_forward_matches_scatter_reference(params, shape, options):
    options = dict(options)
    no_bias = options.pop("no_bias", False)
    x = rng.standard_normal(shape)
    layer, _, top = forward(conv_text(params, kind="Deconvolution"), x)
    weight = layer.blobs[0].data.astype(np.float64)
    assert weight.shape[0] == shape[1]                  # (channels, num_output / group, *kernel)
    bias = None if no_bias else layer.blobs[1].data.astype(np.float64)
    expected = deconv_reference(x, weight, bias, **options)
    assert top[0].shape == expected.shape
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-4, atol=1e-4)


def test_deconvolution_nd_forward():
    x = rng.standard_normal((1, 2, 2, 3, 2))
    params = "num_output: 2 kernel_size: 2 stride: 2 stride: 1 stride: 2 pad: 0 pad: 1 pad: 0"
    layer, _, top = forward(conv_text(params, kind="Deconvolution"), x, dtype=np.float64)
    expected = deconv_reference(x, layer.blobs[0].data, layer.blobs[1].data, stride=(2, 1, 2), pad=(0, 1, 0))
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-10, atol=1e-10)


def test_deconvolution_is_the_transpose_of_convolution():
    """<conv(x), y> == <x, deconv(y)> with the same weights and no bias."""
    x = rng.standard_normal((2, 3, 7, 7))
    params = "num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 1 bias_term: false"
    conv, _, conv_top = forward(conv_text(params), x, dtype=np.float64)
    y = rng.standard_normal(conv_top[0].shape)
    deconv = layer_from_text(conv_text(params.replace("num_output: 4", "num_output: 3"), kind="Deconvolution"))
    bottom, top = make_blobs(y), empty_blobs(1)
    deconv.set_up(bottom, top)
    assert deconv.blobs[0].shape == conv.blobs[0].shape
    deconv.blobs[0].data[...] = conv.blobs[0].data
    deconv.run_forward(bottom, top)
    # Deconvolution's output size rounds the other way: (7 + 2 - 3) // 2 + 1 = 4, and back 2 * 3 + 3 - 2 = 7.
    assert top[0].shape == x.shape
    np.testing.assert_allclose(np.sum(conv_top[0].data * y), np.sum(x * top[0].data), rtol=1e-10)


# ---------------------------------------------------------------- gradients (float64)

GRADIENT_CASES = [
    ("Convolution", "num_output: 3 kernel_size: 3 pad: 1 stride: 2", (2, 2, 5, 5)),
    ("Convolution", "num_output: 4 kernel_size: 3 group: 2 dilation: 2 pad: 1", (2, 4, 6, 5)),
    ("Convolution", "num_output: 2 kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2 bias_term: false", (1, 3, 4, 5)),
    ("Convolution", "num_output: 2 kernel_size: 1", (2, 3, 3, 2)),
    ("Convolution", "num_output: 2 kernel_size: 2 pad: 1 stride: 2 axis: 2", (2, 1, 2, 3, 2, 3)),
    ("Convolution", "num_output: 2 kernel_size: 2 dilation: 2 pad: 1", (2, 2, 5)),
    ("Deconvolution", "num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 2", (2, 2, 3, 3)),
    ("Deconvolution", "num_output: 2 kernel_size: 3 dilation: 2 stride: 1 pad: 2 bias_term: false", (1, 3, 4, 3)),
    ("Deconvolution", "num_output: 2 kernel_size: 2 stride: 2", (1, 2, 2, 2, 2)),
]


@pytest.mark.parametrize("kind, params, shape", GRADIENT_CASES)
def test_gradients(kind, params, shape):
    x = rng.standard_normal(shape)
    layer = layer_from_text(conv_text(params, kind=kind))
    checked = GradientChecker(stepsize=1e-3, threshold=1e-6).check_layer(layer, make_blobs(x), empty_blobs(1))
    assert checked == x.size + sum(blob.count for blob in layer.blobs)


def test_gradients_with_two_bottoms_accumulate_parameter_diffs():
    a, b = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((1, 2, 4, 4))
    layer = layer_from_text(conv_text("num_output: 2 kernel_size: 3 pad: 1"))
    checked = GradientChecker().check_layer(layer, make_blobs(a, b), empty_blobs(2))
    assert checked == a.size + b.size + sum(blob.count for blob in layer.blobs)


def test_parameter_diffs_accumulate_and_propagate_down_is_honoured():
    x = rng.standard_normal((2, 2, 4, 4))
    layer = layer_from_text(conv_text("num_output: 3 kernel_size: 3"))
    bottom, top = run_layer(layer, [x])
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    bottom[0].diff[...] = 7.0
    layer.run_backward(top, [False], bottom)
    assert np.all(bottom[0].diff == 7.0)                 # no gradient asked: bottom diff untouched
    once = [blob.diff.copy() for blob in layer.blobs]
    np.testing.assert_allclose(once[1], top[0].diff.sum(axis=(0, 2, 3)))
    layer.run_backward(top, [False], bottom)
    for blob, first in zip(layer.blobs, once):
        np.testing.assert_allclose(blob.diff, 2 * first)
    # Only the bias learns: its gradient still comes, the weight's does not move.
    layer.param_propagate_down = [False, True]
    layer.run_backward(top, [False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once[0])
    np.testing.assert_allclose(layer.blobs[1].diff, 3 * once[1])


def test_column_buffers_are_reused_across_passes():
    x = rng.standard_normal((2, 3, 6, 6))
    layer = layer_from_text(conv_text("num_output: 8 kernel_size: 3 pad: 1"), dtype=np.float32)
    bottom, top = run_layer(layer, [x])
    assert layer.conv_path == "im2row"
    top[0].diff[...] = 1.0
    layer.run_backward(top, [True], bottom)
    buffers = dict(layer._buffers)
    for _ in range(2):
        layer.run_forward(bottom, top)
        layer.run_backward(top, [True], bottom)
    assert set(buffers) == {"patches", "product", "scratch", "weight_diff"}
    assert all(layer._buffers[name] is buffers[name] for name in buffers)


# ---------------------------------------------------------------- shape rule and errors

@pytest.mark.parametrize("kind, params, shape, expected", [
    ("Convolution", "num_output: 4 kernel_size: 3 pad: 1 stride: 2", (2, 3, 7, 7), (2, 4, 4, 4)),
    ("Convolution", "num_output: 4 kernel_size: 3 stride: 2", (2, 3, 8, 6), (2, 4, 3, 2)),         # floor
    ("Convolution", "num_output: 2 kernel_size: 3 dilation: 2", (1, 1, 5, 9), (1, 2, 1, 5)),
    ("Convolution", "num_output: 2 kernel_size: 2 stride: 2", (1, 1, 4, 6, 5), (1, 2, 2, 3, 2)),
    ("Deconvolution", "num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2", (2, 4, 4, 4), (2, 6, 8, 8)),
    ("Deconvolution", "num_output: 1 kernel_size: 3 dilation: 2 stride: 3", (1, 1, 2, 3), (1, 1, 8, 11)),
])
def test_shape_rule_without_allocating(kind, params, shape, expected):
    layer = layer_from_text(conv_text(params, kind=kind), dtype=np.float32)
    from minicaffe.blob import Blob
    bottom, top = [Blob(shape)], empty_blobs(1, dtype=np.float32)
    with shapes_only():
        layer.set_up(bottom, top)
    assert top[0].shape == expected
    assert not bottom[0].allocated and not top[0].allocated and not layer.blobs[0].allocated


def test_check_infers_the_example_nets_shapes():
    from minicaffe.check import check_net
    from tests.conftest import EXAMPLES
    net = check_net(f"{EXAMPLES}/cifar10/cifar10_quick_train_test.prototxt")
    assert net.blobs["conv1"].shape == (100, 32, 32, 32)
    assert net.blobs["conv3"].shape == (100, 64, 8, 8)
    assert not any(blob.allocated for blob in net.blobs.values())


@pytest.mark.parametrize("params, shape, message", [
    ("num_output: 2 kernel_size: 5", (1, 1, 4, 6), r"layer 'conv': kernel extent .* exceeds the padded input"
                                                    r".*got \(1, 1, 4, 6\)"),
    ("num_output: 2 kernel_size: 3 group: 2", (1, 3, 5, 5), r"layer 'conv': the input's 3 channels are not a "
                                                            r"multiple of group 2.*got \(1, 3, 5, 5\)"),
    ("num_output: 3 kernel_size: 3 group: 2", (1, 4, 5, 5), "num_output 3 is not a multiple of group 2"),
    ("num_output: 0 kernel_size: 3", (1, 1, 5, 5), "num_output must be positive"),
    ("num_output: 2", (1, 1, 5, 5), "kernel_size must be specified once, or once per spatial dimension"),
    ("num_output: 2 kernel_size: 3 kernel_size: 3", (1, 1, 5, 5, 5),
     r"kernel_size specified 2 times; 3 spatial dims"),
    ("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", (1, 1, 5, 5), "either kernel_size or kernel_h/w"),
    ("num_output: 2 kernel_h: 3 kernel_w: 3", (1, 1, 5, 5, 5), "kernel_h & kernel_w can only be used for 2D"),
    ("num_output: 2 kernel_h: 3", (1, 1, 5, 5), "filter dimensions must be nonzero"),
    ("num_output: 2 kernel_size: 3 stride: 0", (1, 1, 5, 5), "stride dimensions must be nonzero"),
    ("num_output: 2 kernel_size: 3 stride_w: 2", (1, 1, 5, 5), r"stride dimensions must be nonzero \(stride \[0, 2\]"),
    ("num_output: 2 kernel_size: 3 dilation: 0", (1, 1, 5, 5), "dilation must be positive"),
    ("num_output: 2 kernel_size: 3 pad: 1 pad: 1 pad: 1", (1, 1, 5, 5), r"pad specified 3 times; 2 spatial dims"),
    ("num_output: 2 kernel_size: 3 axis: 4", (1, 1, 5, 5), "axis 4 is out of range"),
])
def test_convolution_errors_name_the_layer(params, shape, message):
    layer = layer_from_text(conv_text(params), dtype=np.float32)
    with pytest.raises(ShapeError, match=message):
        layer.set_up(make_blobs(np.zeros(shape), dtype=np.float32), empty_blobs(1, dtype=np.float32))


def test_deconvolution_empty_output_is_an_error():
    layer = layer_from_text(conv_text("num_output: 2 kernel_size: 2 pad: 2", kind="Deconvolution"),
                            dtype=np.float32)
    with pytest.raises(ShapeError, match=r"layer 'conv': the output would be empty.*got \(1, 1, 2, 2\)"):
        layer.set_up(make_blobs(np.zeros((1, 1, 2, 2)), dtype=np.float32), empty_blobs(1, dtype=np.float32))


def test_reshape_rejects_changed_channels_axes_and_mismatched_bottoms():
    layer = layer_from_text(conv_text("num_output: 2 kernel_size: 3"), dtype=np.float32)
    bottom, top = run_layer(layer, [np.zeros((1, 2, 5, 5))])
    bottom[0].reshape(1, 3, 5, 5)
    with pytest.raises(ShapeError, match=r"layer 'conv': input size incompatible.*must stay 2.*got \(1, 3, 5, 5\)"):
        layer.reshape(bottom, top)
    bottom[0].reshape(1, 2, 5, 5, 1)
    with pytest.raises(ShapeError, match=r"number of axes may not change \(set up with 4\).*expected \(1, 2, 5, 5\), "
                                         r"got \(1, 2, 5, 5, 1\)"):
        layer.reshape(bottom, top)
    bottom[0].reshape(3, 2, 7, 6)                        # a new batch and image size is fine
    layer.reshape(bottom, top)
    assert top[0].shape == (3, 2, 5, 4)
    two = layer_from_text(conv_text("num_output: 2 kernel_size: 3"), dtype=np.float32)
    with pytest.raises(ShapeError, match=r"all bottoms must have the same shape \(bottom 1\).*expected "
                                         r"\(1, 2, 5, 5\), got \(1, 2, 6, 5\)"):
        two.set_up(make_blobs(np.zeros((1, 2, 5, 5)), np.zeros((1, 2, 6, 5)), dtype=np.float32),
                   empty_blobs(2, dtype=np.float32))
    with pytest.raises(GraphError, match="as many tops as bottoms"):
        layer_from_text(conv_text("num_output: 2 kernel_size: 3"), dtype=np.float32).set_up(
            make_blobs(np.zeros((1, 2, 5, 5)), dtype=np.float32), empty_blobs(2, dtype=np.float32))


def test_weights_of_another_shape_are_rejected_when_loaded(tmp_path):
    """A caffemodel whose weight shape differs from the layer's is an error (Caffe's 'Incorrect weight shape')."""
    text = ('name: "n" layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }'
            ' layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 3 '
            'kernel_size: 3 } }')
    net = Net(parse_net(text), "TEST")
    path = str(tmp_path / "w.caffemodel")
    net.save(path)
    other = Net(parse_net(text.replace("kernel_size: 3", "kernel_size: 2")), "TEST")
    with pytest.raises(WeightsError, match=r"layer 'conv' param 0: shape mismatch, file has \(3, 2, 3, 3\) "
                                           r"and the net has \(3, 2, 2, 2\)"):
        other.copy_from(path)
