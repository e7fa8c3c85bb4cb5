"""Scale and Bias: broadcasting rules, learned or bottom operands, Caffe's blob order, gradients."""

import numpy as np
import pytest

from minicaffe.errors import GraphError, ShapeError
from minicaffe.testing import GradientChecker, check_layer_gradient, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(23)


def operand_view(x_shape, operand_shape, axis):
    """The operand reshaped so numpy broadcasting lines it up with x from ``axis``."""
    ndim = len(x_shape)
    axis = axis % ndim if operand_shape else 0
    return (1,) * axis + tuple(operand_shape) + (1,) * (ndim - axis - len(operand_shape))


# ---------------------------------------------------------------- Bias
@pytest.mark.parametrize("param, x_shape, b_shape, axis", [
    ("", (2, 3, 4), (3,), 1),
    ("axis: 1 num_axes: 2", (2, 3, 4, 5), (3, 4), 1),
    ("axis: -1", (2, 3, 4), (4,), 2),
    ("axis: 0 num_axes: -1", (2, 3), (2, 3), 0),
    ("num_axes: 0", (2, 3), (), 0),
])
def test_bias_learned_forward_float32(param, x_shape, b_shape, axis):
    x = rng.standard_normal(x_shape)
    text = f'name: "b" type: "Bias" bias_param {{ {param} filler {{ type: "gaussian" }} }}'
    layer = layer_from_text(text, dtype=np.float32)
    _, top = run_layer(layer, [x])
    assert layer.blobs[0].shape == b_shape
    b = layer.blobs[0].data.astype(np.float64)
    expected = x + b.reshape(operand_view(x_shape, b_shape, axis))
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-6, atol=1e-6)


def test_bias_default_filler_is_zero():
    layer = layer_from_text('name: "b" type: "Bias"')
    run_layer(layer, [np.ones((2, 3))])
    np.testing.assert_array_equal(layer.blobs[0].data, np.zeros(3))


def test_bias_from_second_bottom_forward_float32():
    x, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 4))
    layer = layer_from_text('name: "b" type: "Bias" bias_param { num_axes: 0 }', dtype=np.float32)
    _, top = run_layer(layer, [x, b])        # num_axes is ignored with a bottom operand
    assert layer.blobs == []
    np.testing.assert_allclose(top[0].data, x + b[None], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("param, shapes", [
    ("axis: 1 num_axes: 2 filler { type: 'gaussian' }", [(2, 3, 2, 2)]),
    ("num_axes: 0 filler { type: 'gaussian' }", [(2, 3)]),
    ("axis: 0", [(2, 3, 2), (2, 3)]),
    ("", [(2, 3, 2), ()]),
])
def test_bias_gradient(param, shapes):
    arrays = [rng.standard_normal(shape) for shape in shapes]
    layer = layer_from_text(f'name: "b" type: "Bias" bias_param {{ {param} }}')
    checked = check_layer_gradient(layer, make_blobs(*arrays), empty_blobs(1))
    assert checked == sum(a.size for a in arrays) + sum(blob.count for blob in layer.blobs)


def test_bias_param_diff_accumulates_and_in_place():
    x = rng.standard_normal((2, 3, 2))
    layer = layer_from_text('name: "b" type: "Bias" bias_param { filler { type: "gaussian" } }')
    blob = make_blobs(x)[0]
    layer.set_up([blob], [blob])
    layer.run_forward([blob], [blob])
    b = layer.blobs[0].data.copy()
    np.testing.assert_allclose(blob.data, x + b[None, :, None], rtol=1e-12)
    dy = rng.standard_normal(x.shape)
    blob.diff[...] = dy
    layer.blobs[0].diff[...] = 1.0
    layer.run_backward([blob], [True], [blob])
    np.testing.assert_allclose(layer.blobs[0].diff, 1.0 + dy.sum(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_array_equal(blob.diff, dy)


def test_bias_errors():
    with pytest.raises(ShapeError, match=r"layer 'b'.*shape of bottom 0 \(2, 3, 4\) from axis 1.*expected \(3, 4\), got \(3, 5\)"):
        run_layer(layer_from_text('name: "b" type: "Bias"'), [np.zeros((2, 3, 4)), np.zeros((3, 5))])
    with pytest.raises(ShapeError, match=r"layer 'b'.*3 axes extend past bottom 0's shape"):
        run_layer(layer_from_text('name: "b" type: "Bias" bias_param { num_axes: 3 }'), [np.zeros((2, 3, 4))])
    with pytest.raises(GraphError, match="layer 'b'.*num_axes must be non-negative, or -1"):
        run_layer(layer_from_text('name: "b" type: "Bias" bias_param { num_axes: -2 }'), [np.zeros((2, 3))])
    with pytest.raises(ShapeError, match="layer 'b'.*axis 3 is out of range"):
        run_layer(layer_from_text('name: "b" type: "Bias" bias_param { axis: 3 }'), [np.zeros((2, 3))])


# ---------------------------------------------------------------- Scale
@pytest.mark.parametrize("param, x_shape, s_shape, axis", [
    ("", (2, 3, 4), (3,), 1),
    ("axis: 1 num_axes: 2", (2, 3, 4), (3, 4), 1),
    ("axis: -2 num_axes: -1", (2, 3, 4), (3, 4), 1),
    ("num_axes: 0", (2, 3), (), 0),
])
def test_scale_learned_forward_float32(param, x_shape, s_shape, axis):
    x = rng.standard_normal(x_shape)
    text = f'name: "s" type: "Scale" scale_param {{ {param} filler {{ type: "gaussian" }} }}'
    layer = layer_from_text(text, dtype=np.float32)
    _, top = run_layer(layer, [x])
    assert layer.blobs[0].shape == s_shape
    s = layer.blobs[0].data.astype(np.float64)
    expected = x * s.reshape(operand_view(x_shape, s_shape, axis))
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-6, atol=1e-6)


def test_scale_default_filler_is_one_and_bias_zero():
    layer = layer_from_text('name: "s" type: "Scale" scale_param { bias_term: true }')
    x = rng.standard_normal((2, 3))
    _, top = run_layer(layer, [x])
    np.testing.assert_array_equal(layer.blobs[0].data, np.ones(3))
    np.testing.assert_array_equal(layer.blobs[1].data, np.zeros(3))
    np.testing.assert_array_equal(top[0].data, x)


def test_scale_bias_term_blob_order_and_forward_float32():
    x = rng.standard_normal((2, 3, 2, 2))
    text = ('name: "s" type: "Scale" scale_param { bias_term: true filler { type: "uniform" min: 1 max: 2 } '
            'bias_filler { type: "uniform" min: -2 max: -1 } }')
    layer = layer_from_text(text, dtype=np.float32)
    _, top = run_layer(layer, [x])
    scale, bias = (blob.data.astype(np.float64) for blob in layer.blobs)
    assert np.all(scale >= 1) and np.all(bias <= -1)                  # [scale, bias], as Caffe
    expected = x * scale[None, :, None, None] + bias[None, :, None, None]
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-6, atol=1e-6)


def test_scale_from_second_bottom_with_bias_term():
    x, s = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3))
    text = 'name: "s" type: "Scale" scale_param { axis: 0 bias_term: true bias_filler { type: "gaussian" } }'
    layer = layer_from_text(text, dtype=np.float32)
    _, top = run_layer(layer, [x, s])
    assert [blob.shape for blob in layer.blobs] == [(2, 3)]           # only the bias: as many axes as s
    bias = layer.blobs[0].data.astype(np.float64)
    np.testing.assert_allclose(top[0].data, x * s[:, :, None] + bias[:, :, None], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("param, shapes", [
    ("filler { type: 'gaussian' }", [(2, 3, 2)]),
    ("axis: 1 num_axes: 2 filler { type: 'gaussian' } bias_term: true bias_filler { type: 'gaussian' }", [(2, 3, 2)]),
    ("num_axes: 0 filler { type: 'gaussian' } bias_term: true", [(2, 3)]),
    ("axis: 0 num_axes: -1 filler { type: 'gaussian' }", [(2, 3)]),               # one scale per element
    ("axis: 0", [(2, 3, 2), (2, 3)]),
    ("bias_term: true bias_filler { type: 'gaussian' }", [(2, 3, 2), (3,)]),
    ("", [(2, 3), ()]),
])
def test_scale_gradient(param, shapes):
    arrays = [rng.standard_normal(shape) for shape in shapes]
    layer = layer_from_text(f'name: "s" type: "Scale" scale_param {{ {param} }}')
    checked = check_layer_gradient(layer, make_blobs(*arrays), empty_blobs(1))
    assert checked == sum(a.size for a in arrays) + sum(blob.count for blob in layer.blobs)


def test_scale_in_place_keeps_the_input_for_the_scale_gradient():
    x = rng.standard_normal((2, 3, 2))
    text = 'name: "s" type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } }'
    layer = layer_from_text(text)
    blob = make_blobs(x)[0]
    layer.set_up([blob], [blob])
    layer.run_forward([blob], [blob])
    s = layer.blobs[0].data.copy()
    dy = rng.standard_normal(x.shape)
    blob.diff[...] = dy
    for param in layer.blobs:
        param.diff[...] = 0.5                         # parameter diffs accumulate
    layer.run_backward([blob], [True], [blob])
    np.testing.assert_allclose(layer.blobs[0].diff, 0.5 + (dy * x).sum(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].diff, 0.5 + dy.sum(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(blob.diff, dy * s[None, :, None], rtol=1e-12)


def test_scale_elementwise_learned_diff_accumulates():
    x = rng.standard_normal((2, 3))
    layer = layer_from_text('name: "s" type: "Scale" scale_param { axis: 0 num_axes: -1 }')
    bottom, top = run_layer(layer, [x])
    dy = rng.standard_normal(x.shape)
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 1.0
    layer.run_backward(top, [False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 1.0 + dy * x, rtol=1e-12)


def test_scale_honours_param_propagate_down_and_propagate_down():
    x, s = rng.standard_normal((2, 3)), rng.standard_normal(3)
    layer = layer_from_text('name: "s" type: "Scale" scale_param { bias_term: true }')
    bottom, top = run_layer(layer, [x, s])
    top[0].diff[...] = 1.0
    bottom[0].diff[...] = 7.0
    bottom[1].diff[...] = 7.0
    layer.param_propagate_down = [False]
    layer.run_backward(top, [False, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.full((2, 3), 7.0))
    np.testing.assert_allclose(bottom[1].diff, x.sum(axis=0), rtol=1e-12)
    assert not layer.blobs[0].diff.any()


def test_scale_errors():
    with pytest.raises(ShapeError, match=r"layer 's'.*the scale must have the shape.*expected \(3\), got \(2\)"):
        run_layer(layer_from_text('name: "s" type: "Scale"'), [np.zeros((2, 3)), np.zeros(2)])
    with pytest.raises(ShapeError, match=r"layer 's'.*the scale blob's 2 axes extend past"):
        run_layer(layer_from_text('name: "s" type: "Scale" scale_param { axis: -1 num_axes: 2 }'),
                  [np.zeros((2, 3))])
    with pytest.raises(GraphError, match="layer 's'.*at most 2 bottom"):
        run_layer(layer_from_text('name: "s" type: "Scale"'), [np.zeros(2)] * 3)
    layer = layer_from_text('name: "s" type: "Scale"')
    bottom, top = run_layer(layer, [np.zeros((2, 3))])
    bottom[0].reshape(2, 4)
    with pytest.raises(ShapeError, match=r"layer 's'.*expected \(4\), got \(3\)"):
        layer.reshape(bottom, top)


def test_scale_float32_gradient_matches_float64():
    x = rng.standard_normal((2, 3, 2))
    text = 'name: "s" type: "Scale" scale_param { bias_term: true filler { type: "constant" value: 1.5 } }'
    layer = layer_from_text(text, dtype=np.float32)
    checked = GradientChecker(stepsize=1e-2, threshold=1e-3).check_layer(layer, make_blobs(x, dtype=np.float32),
                                                                         empty_blobs(1, dtype=np.float32))
    assert checked == x.size + 6
