"""Tile, Crop, ArgMax, Embed, Reduction, MVN, Parameter, Filter, BatchReindex; shapes without data."""

import numpy as np
import pytest

from minicaffe.errors import GraphError, ShapeError
from minicaffe.graph import TRAIN
from minicaffe.net import Net
from minicaffe.proto.text import parse_net
from minicaffe.testing import GradientChecker, check_layer_gradient, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(29)


# ---------------------------------------------------------------- Tile
@pytest.mark.parametrize("param, shape, axis", [
    ("tiles: 3", (2, 2, 3), 1),
    ("axis: 0 tiles: 2", (2, 3), 0),
    ("axis: -1 tiles: 2", (2, 1, 3), 2),
])
def test_tile_forward_float32(param, shape, axis):
    x = rng.standard_normal(shape)
    _, top = run_layer(layer_from_text(f'name: "t" type: "Tile" tile_param {{ {param} }}', dtype=np.float32), [x])
    tiles = int(param.split("tiles: ")[1])
    reps = [1] * len(shape)
    reps[axis] = tiles
    np.testing.assert_array_equal(top[0].data, np.tile(x, reps).astype(np.float32))


@pytest.mark.parametrize("param, shape", [("tiles: 3", (2, 2, 3)), ("axis: -1 tiles: 2", (2, 3))])
def test_tile_gradient(param, shape):
    x = rng.standard_normal(shape)
    layer = layer_from_text(f'name: "t" type: "Tile" tile_param {{ {param} }}')
    assert check_layer_gradient(layer, make_blobs(x), empty_blobs(1)) == x.size


def test_tile_backward_sums_the_copies():
    layer = layer_from_text('name: "t" type: "Tile" tile_param { tiles: 3 }')
    bottom, top = run_layer(layer, [np.zeros((2, 2, 3))])
    dy = rng.standard_normal((2, 6, 3))
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dy[:, 0:2] + dy[:, 2:4] + dy[:, 4:6], rtol=1e-12)


def test_tile_errors():
    with pytest.raises(GraphError, match="layer 't'.*tiles must be positive, got 0"):
        run_layer(layer_from_text('name: "t" type: "Tile"'), [np.zeros((2, 3))])
    with pytest.raises(ShapeError, match="layer 't'.*axis 2 is out of range"):
        run_layer(layer_from_text('name: "t" type: "Tile" tile_param { axis: 2 tiles: 2 }'), [np.zeros((2, 3))])


# ---------------------------------------------------------------- Crop
@pytest.mark.parametrize("param, data_shape, ref_shape, window", [
    ("", (2, 3, 6, 6), (1, 1, 3, 4), (slice(None), slice(None), slice(0, 3), slice(0, 4))),
    ("axis: 2 offset: 1 offset: 2", (2, 3, 8, 8), (1, 1, 5, 4), (slice(None), slice(None), slice(1, 6), slice(2, 6))),
    ("axis: 1 offset: 1", (2, 4, 6, 6), (2, 2, 3, 3), (slice(None), slice(1, 3), slice(1, 4), slice(1, 4))),
    ("axis: -1 offset: 2", (2, 3, 5), (9, 9, 2), (slice(None), slice(None), slice(2, 4))),
])
def test_crop_forward_float32(param, data_shape, ref_shape, window):
    x = rng.standard_normal(data_shape)
    layer = layer_from_text(f'name: "c" type: "Crop" crop_param {{ {param} }}', dtype=np.float32)
    _, top = run_layer(layer, [x, np.zeros(ref_shape)])
    np.testing.assert_array_equal(top[0].data, x[window].astype(np.float32))


def test_crop_gradient_and_reference_gets_none():
    x = rng.standard_normal((2, 3, 4))
    layer = layer_from_text('name: "c" type: "Crop" crop_param { axis: 1 offset: 1 offset: 2 }')
    assert not layer.allow_force_backward(1)
    assert check_layer_gradient(layer, make_blobs(x, np.zeros((2, 2, 2))), empty_blobs(1)) == x.size


def test_crop_backward_places_the_window():
    layer = layer_from_text('name: "c" type: "Crop" crop_param { axis: 1 offset: 1 offset: 2 }')
    bottom, top = run_layer(layer, [np.zeros((2, 3, 4)), np.zeros((2, 2, 2))])
    dy = rng.standard_normal((2, 2, 2))
    top[0].diff[...] = dy
    bottom[0].diff[...] = 5.0
    bottom[1].diff[...] = 5.0
    layer.run_backward(top, [True, True], bottom)
    expected = np.zeros((2, 3, 4))
    expected[:, 1:3, 2:4] = dy
    np.testing.assert_array_equal(bottom[0].diff, expected)
    np.testing.assert_array_equal(bottom[1].diff, np.zeros((2, 2, 2)))


def test_crop_errors():
    with pytest.raises(GraphError, match="layer 'c'.*gives 3 offsets for the 2 cropped axes"):
        run_layer(layer_from_text('name: "c" type: "Crop" crop_param { offset: 1 offset: 1 offset: 1 }'),
                  [np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 2, 2))])
    with pytest.raises(ShapeError, match=r"layer 'c'.*crop of axis 3 \(offset 3, size 2\).*expected \(2, 3, 4, 4\), got \(2, 3, 2, 2\)"):
        run_layer(layer_from_text('name: "c" type: "Crop" crop_param { offset: 1 offset: 3 }'),
                  [np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 2, 2))])
    with pytest.raises(ShapeError, match=r"layer 'c'.*at least the 4 axes.*got \(2, 2\)"):
        run_layer(layer_from_text('name: "c" type: "Crop"'), [np.zeros((2, 3, 4, 4)), np.zeros((2, 2))])
    with pytest.raises(GraphError, match="layer 'c'.*takes 2 bottom"):
        run_layer(layer_from_text('name: "c" type: "Crop"'), [np.zeros((2, 3, 4, 4))])


# ---------------------------------------------------------------- ArgMax
def ranked(values):
    """Indices of a 1-D array from the largest value; ties: larger index first (Caffe's pair sort)."""
    return sorted(range(len(values)), key=lambda j: (values[j], j), reverse=True)


def test_argmax_default_is_per_item_over_flattened_entries():
    x = rng.standard_normal((3, 2, 2, 2))
    _, top = run_layer(layer_from_text('name: "a" type: "ArgMax"', dtype=np.float32), [x])
    assert top[0].shape == (3, 1, 1, 1)
    expected = [ranked(item.ravel())[0] for item in x.astype(np.float32)]
    np.testing.assert_array_equal(top[0].data.ravel(), expected)


def test_argmax_out_max_val_without_axis():
    x = rng.standard_normal((2, 5))
    layer = layer_from_text('name: "a" type: "ArgMax" argmax_param { top_k: 3 out_max_val: true }', dtype=np.float32)
    _, top = run_layer(layer, [x])
    assert top[0].shape == (2, 2, 3)
    x32 = x.astype(np.float32)
    for n in range(2):
        order = ranked(x32[n])[:3]
        np.testing.assert_array_equal(top[0].data[n, 0], order)
        np.testing.assert_array_equal(top[0].data[n, 1], x32[n, order])


@pytest.mark.parametrize("param, axis, values", [
    ("axis: 1 top_k: 2", 1, False),
    ("axis: -1 top_k: 2 out_max_val: true", 2, True),
    ("axis: 0", 0, False),
])
def test_argmax_along_an_axis(param, axis, values):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    layer = layer_from_text(f'name: "a" type: "ArgMax" argmax_param {{ {param} }}', dtype=np.float32)
    _, top = run_layer(layer, [x])
    top_k = int(param.split("top_k: ")[1].split()[0]) if "top_k" in param else 1
    moved = np.moveaxis(x, axis, -1)
    expected = np.empty(moved.shape[:-1] + (top_k,))
    for index in np.ndindex(moved.shape[:-1]):
        order = ranked(moved[index])[:top_k]
        expected[index] = moved[index][order] if values else order
    np.testing.assert_array_equal(top[0].data, np.moveaxis(expected, -1, axis))


def test_argmax_ties_go_to_the_larger_index():
    x = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    _, top = run_layer(layer_from_text('name: "a" type: "ArgMax" argmax_param { top_k: 4 }'), [x])
    np.testing.assert_array_equal(top[0].data.ravel(), [4, 2, 1, 3])


def test_argmax_errors_and_no_backward():
    with pytest.raises(GraphError, match="layer 'a'.*top_k 6 is more than the entries of each item"):
        run_layer(layer_from_text('name: "a" type: "ArgMax" argmax_param { top_k: 6 }'), [np.zeros((2, 5))])
    with pytest.raises(GraphError, match=r"layer 'a'.*top_k 3 is more than the entries of axis 0 \(2 entries\)"):
        run_layer(layer_from_text('name: "a" type: "ArgMax" argmax_param { axis: 0 top_k: 3 }'), [np.zeros((2, 5))])
    with pytest.raises(GraphError, match="layer 'a'.*top_k must be at least 1"):
        run_layer(layer_from_text('name: "a" type: "ArgMax" argmax_param { top_k: 0 }'), [np.zeros((2, 5))])
    layer = layer_from_text('name: "a" type: "ArgMax"')
    bottom, top = run_layer(layer, [np.zeros((2, 5))])
    with pytest.raises(GraphError, match="layer 'a'.*ArgMax has no Backward"):
        layer.run_backward(top, [True], bottom)


# ---------------------------------------------------------------- Embed
EMBED = ('name: "e" type: "Embed" embed_param { num_output: 3 input_dim: 5 weight_filler { type: "gaussian" } '
         'bias_filler { type: "gaussian" } %s }')


def test_embed_forward_float32():
    indices = np.array([[0, 4, 2], [2, 1, 2]])
    layer = layer_from_text(EMBED % "", dtype=np.float32)
    _, top = run_layer(layer, [indices])
    weight, bias = (blob.data for blob in layer.blobs)
    assert weight.shape == (5, 3) and bias.shape == (3,)
    assert top[0].shape == (2, 3, 3)
    np.testing.assert_allclose(top[0].data, weight[indices] + bias, rtol=1e-7)
    no_bias = layer_from_text(EMBED % "bias_term: false", dtype=np.float32)
    _, top = run_layer(no_bias, [indices])
    assert len(no_bias.blobs) == 1
    np.testing.assert_array_equal(top[0].data, no_bias.blobs[0].data[indices])


def test_embed_gradient_of_parameters_accumulates_repeated_indices():
    indices = np.array([[0, 4, 2], [2, 1, 2]])
    layer = layer_from_text(EMBED % "")
    assert check_layer_gradient(layer, make_blobs(indices), empty_blobs(1)) == 15 + 3   # no gradient to indices
    layer = layer_from_text(EMBED % "")
    bottom, top = run_layer(layer, [indices])
    dy = rng.standard_normal((2, 3, 3))
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 1.0
    layer.run_backward(top, [False], bottom)
    expected = np.ones((5, 3))
    expected[0] += dy[0, 0]
    expected[4] += dy[0, 1]
    expected[2] += dy[0, 2] + dy[1, 0] + dy[1, 2]
    expected[1] += dy[1, 1]
    np.testing.assert_allclose(layer.blobs[0].diff, expected, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].diff, dy.sum(axis=(0, 1)), rtol=1e-12)


def test_embed_errors():
    assert not layer_from_text(EMBED % "").allow_force_backward(0)
    layer = layer_from_text(EMBED % "")
    bottom, top = run_layer(layer, [np.array([1, 2])])
    with pytest.raises(GraphError, match="layer 'e'.*cannot propagate a gradient to its indices"):
        layer.run_backward(top, [True], bottom)
    with pytest.raises(GraphError, match=r"layer 'e'.*index 5 is not a whole number in \[0, 5\)"):
        run_layer(layer_from_text(EMBED % ""), [np.array([1, 5])])
    with pytest.raises(GraphError, match=r"layer 'e'.*index 1.5 is not a whole number"):
        run_layer(layer_from_text(EMBED % ""), [np.array([1.5])])
    with pytest.raises(GraphError, match="layer 'e'.*num_output must be positive"):
        run_layer(layer_from_text('name: "e" type: "Embed" embed_param { input_dim: 5 }'), [np.array([1])])
    with pytest.raises(GraphError, match="layer 'e'.*input_dim must be positive"):
        run_layer(layer_from_text('name: "e" type: "Embed" embed_param { num_output: 5 }'), [np.array([1])])


# ---------------------------------------------------------------- Reduction
def reduction_reference(x, op, axis, coeff):
    axes = tuple(range(axis, x.ndim))
    if op == "SUM":
        y = x.sum(axis=axes)
    elif op == "ASUM":
        y = np.abs(x).sum(axis=axes)
    elif op == "SUMSQ":
        y = (x ** 2).sum(axis=axes)
    else:
        y = x.mean(axis=axes)
    return coeff * y


@pytest.mark.parametrize("op, axis, coeff", [
    ("SUM", 0, 1.0), ("SUM", 1, 1.0), ("ASUM", 1, 2.0), ("SUMSQ", 2, 1.0), ("MEAN", -1, -0.5), ("MEAN", 0, 1.0),
])
def test_reduction_forward_float32(op, axis, coeff):
    x = rng.standard_normal((2, 3, 4))
    text = f'name: "r" type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}'
    _, top = run_layer(layer_from_text(text, dtype=np.float32), [x])
    expected = reduction_reference(x, op, axis % 3, coeff)
    assert top[0].shape == np.shape(expected)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op, axis, coeff", [
    ("SUM", 1, 1.5), ("ASUM", 0, 2.0), ("SUMSQ", 2, -1.0), ("MEAN", -2, 0.5),
])
def test_reduction_gradient(op, axis, coeff):
    x = rng.standard_normal((2, 3, 2))
    text = f'name: "r" type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}'
    checker = GradientChecker(stepsize=1e-4, kink=0.0, kink_range=1e-3 if op == "ASUM" else -1.0)
    assert checker.check_layer(layer_from_text(text), make_blobs(x), empty_blobs(1)) == x.size


def test_reduction_backward_formula():
    x = rng.standard_normal((2, 3))
    for op, derivative in [("ASUM", np.sign(x)), ("SUMSQ", 2 * x), ("MEAN", np.full_like(x, 1 / 3))]:
        layer = layer_from_text(f'name: "r" type: "Reduction" reduction_param {{ operation: {op} axis: 1 coeff: 3 }}')
        bottom, top = run_layer(layer, [x])
        top[0].diff[...] = [2.0, -1.0]
        layer.run_backward(top, [True], bottom)
        np.testing.assert_allclose(bottom[0].diff, 3 * np.array([[2.0], [-1.0]]) * derivative, rtol=1e-12)


def test_reduction_errors():
    with pytest.raises(ShapeError, match="layer 'r'.*axis 3 is out of range"):
        run_layer(layer_from_text('name: "r" type: "Reduction" reduction_param { axis: 3 }'), [np.zeros((2, 3))])


# ---------------------------------------------------------------- MVN
def mvn_reference(x, normalize_variance=True, across_channels=False, eps=1e-9):
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(range(1 if across_channels else 2, x.ndim))
    d = x - x.mean(axis=axes, keepdims=True)
    if not normalize_variance:
        return d
    return d / (np.sqrt((d ** 2).mean(axis=axes, keepdims=True)) + eps)


@pytest.mark.parametrize("param, options", [
    ("", {}),
    ("across_channels: true", {"across_channels": True}),
    ("normalize_variance: false", {"normalize_variance": False}),
    ("eps: 0.5", {"eps": 0.5}),
])
def test_mvn_forward_float32(param, options):
    x = rng.standard_normal((2, 3, 4, 5)) * 3 + 1
    _, top = run_layer(layer_from_text(f'name: "m" type: "MVN" mvn_param {{ {param} }}', dtype=np.float32), [x])
    assert top[0].shape == x.shape
    np.testing.assert_allclose(top[0].data, mvn_reference(x.astype(np.float32), **options), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("param", ["", "across_channels: true", "normalize_variance: false", "eps: 0.3"])
def test_mvn_gradient(param):
    x = rng.standard_normal((2, 2, 3))
    layer = layer_from_text(f'name: "m" type: "MVN" mvn_param {{ {param} }}')
    assert GradientChecker(stepsize=1e-5).check_layer(layer, make_blobs(x), empty_blobs(1)) == x.size


def test_mvn_in_place_and_constant_groups():
    x = rng.standard_normal((2, 2, 3))
    x[1, 0] = 4.0                                  # a constant group: s = 0
    eps = float(np.float32(0.1))
    layer = layer_from_text('name: "m" type: "MVN" mvn_param { eps: 0.1 }')
    blob = make_blobs(x)[0]
    layer.set_up([blob], [blob])
    layer.run_forward([blob], [blob])
    y = mvn_reference(x, eps=eps)
    np.testing.assert_allclose(blob.data, y, rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(x.shape)
    blob.data[...] = 99.0                          # a later in-place layer: MVN cached y
    blob.diff[...] = dy
    layer.run_backward([blob], [True], [blob])
    axes = (2,)
    d = x - x.mean(axis=axes, keepdims=True)
    s = np.sqrt((d ** 2).mean(axis=axes, keepdims=True))
    second = np.divide((dy * y).mean(axis=axes, keepdims=True), s, out=np.zeros_like(s), where=s > 0)
    expected = (dy - dy.mean(axis=axes, keepdims=True)) / (s + eps) - y * second
    assert np.all(np.isfinite(blob.diff))
    np.testing.assert_allclose(blob.diff, expected, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- Parameter
def test_parameter_top_shares_the_blob():
    layer = layer_from_text('name: "p" type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }')
    bottom, top = [], empty_blobs(1)
    layer.set_up(bottom, top)
    assert layer.blobs[0].shape == (2, 3) and top[0].shape == (2, 3)
    layer.blobs[0].data[...] = np.arange(6).reshape(2, 3)
    layer.run_forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, np.arange(6).reshape(2, 3))
    top[0].diff[...] = 2.5
    layer.run_backward(top, [], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff, np.full((2, 3), 2.5))
    with pytest.raises(GraphError, match="layer 'p'.*takes 0 bottom"):
        layer_from_text('name: "p" type: "Parameter"').set_up(make_blobs(np.ones(2)), empty_blobs(1))


PARAM_NET = """
name: "param_net"
layer { name: "w" type: "Parameter" top: "w" parameter_param { shape { dim: 2 dim: 3 } } }
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "prod" type: "Eltwise" bottom: "w" bottom: "x" top: "p" eltwise_param { operation: PROD } }
layer { name: "loss" type: "Reduction" bottom: "p" top: "loss" loss_weight: 1 }
"""


def test_parameter_in_net_learns_from_the_gradient_at_its_top():
    net = Net(parse_net(PARAM_NET), TRAIN, dtype=np.float64)
    model = net.to_proto()
    entry = next(layer for layer in model.layer if layer.name == "w")
    del entry.blobs[0].double_data[:]
    entry.blobs[0].double_data.extend(range(6))
    net.copy_from(model)
    x = rng.standard_normal((2, 3))
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs["loss"].data, (np.arange(6).reshape(2, 3) * x).sum(), rtol=1e-12)
    net.backward()
    np.testing.assert_allclose(net.params["w"][0].diff, x, rtol=1e-12)


# ---------------------------------------------------------------- Filter
def test_filter_forward_backward():
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 2, 2))
    selector = np.array([1.0, 0.0, 0.5, 0.0])
    layer = layer_from_text('name: "f" type: "Filter"', num_tops=2, dtype=np.float32)
    bottom = make_blobs(a, b, selector, dtype=np.float32)
    top = empty_blobs(2, dtype=np.float32)
    layer.set_up(bottom, top)
    assert [blob.shape for blob in top] == [(4, 3), (4, 2, 2)]     # before any Forward: all items
    layer.run_forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, a[[0, 2]].astype(np.float32))
    np.testing.assert_array_equal(top[1].data, b[[0, 2]].astype(np.float32))
    dy = rng.standard_normal((2, 3)).astype(np.float32)
    top[0].diff[...] = dy
    bottom[0].diff[...] = 9.0
    bottom[1].diff[...] = 9.0
    layer.run_backward(top, [True, False, False], bottom)
    expected = np.zeros((4, 3), dtype=np.float32)
    expected[[0, 2]] = dy
    np.testing.assert_array_equal(bottom[0].diff, expected)
    np.testing.assert_array_equal(bottom[1].diff, np.full((4, 2, 2), 9.0))
    assert not layer.allow_force_backward(2) and layer.allow_force_backward(0)


def test_filter_gradient():
    a = rng.standard_normal((4, 2))
    layer = layer_from_text('name: "f" type: "Filter"')
    checked = check_layer_gradient(layer, make_blobs(a, np.array([[0.0], [1.0], [1.0], [0.0]])), empty_blobs(1))
    assert checked == a.size


FILTER_NET = """
name: "filter_net"
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "sel" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "f" type: "Filter" bottom: "x" bottom: "sel" top: "fx" }
layer { name: "ip" type: "InnerProduct" bottom: "fx" top: "y" inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "Reduction" bottom: "y" top: "loss" reduction_param { operation: SUMSQ } loss_weight: 1 }
"""


def test_filter_in_net_reshapes_the_layers_after_it():
    net = Net(parse_net(FILTER_NET), TRAIN, dtype=np.float64)
    x = rng.standard_normal((4, 3))
    weight = net.params["ip"][0].data
    for selector, kept in [([0, 1, 1, 1], [1, 2, 3]), ([1, 0, 0, 0], [0])]:
        net.blobs["x"].data[...] = x
        net.blobs["sel"].data[...] = selector
        net.forward()
        assert net.blobs["y"].shape == (len(kept), 2)
        np.testing.assert_allclose(net.blobs["loss"].data, ((x[kept] @ weight.T) ** 2).sum(), rtol=1e-12)
        net.backward()
        expected = np.zeros((4, 3))
        expected[kept] = 2 * (x[kept] @ weight.T) @ weight
        np.testing.assert_allclose(net.blobs["x"].diff, expected, rtol=1e-12)


def test_filter_errors():
    layer = layer_from_text('name: "f" type: "Filter"', num_tops=2)
    with pytest.raises(GraphError, match="layer 'f'.*one top per filtered bottom: 1 bottom.*2 top"):
        layer.set_up(make_blobs(np.zeros((2, 3)), np.zeros(2)), empty_blobs(2))
    with pytest.raises(ShapeError, match=r"layer 'f'.*selector.*one value per item.*expected \(2, 1\), got \(2, 2\)"):
        run_layer(layer_from_text('name: "f" type: "Filter"'), [np.zeros((2, 3)), np.zeros((2, 2))])
    with pytest.raises(ShapeError, match=r"layer 'f'.*bottom 0 must have as many items.*expected \(3\), got \(2, 3\)"):
        run_layer(layer_from_text('name: "f" type: "Filter"'), [np.zeros((2, 3)), np.zeros(3)])
    layer = layer_from_text('name: "f" type: "Filter"')
    bottom, top = run_layer(layer, [np.zeros((2, 3)), np.ones(2)])
    with pytest.raises(GraphError, match="layer 'f'.*cannot propagate a gradient to its selector"):
        layer.run_backward(top, [True, True], bottom)


# ---------------------------------------------------------------- BatchReindex
def test_batch_reindex_forward_float32_and_backward():
    x = rng.standard_normal((3, 2, 2))
    permutation = np.array([2.0, 0.0, 2.0, 2.7])        # repeats; 2.7 truncates to 2 as in Caffe
    layer = layer_from_text('name: "r" type: "BatchReindex"', dtype=np.float32)
    bottom, top = run_layer(layer, [x, permutation])
    assert top[0].shape == (4, 2, 2)
    np.testing.assert_array_equal(top[0].data, x[[2, 0, 2, 2]].astype(np.float32))
    dy = rng.standard_normal((4, 2, 2)).astype(np.float32)
    top[0].diff[...] = dy
    bottom[0].diff[...] = 9.0
    layer.run_backward(top, [True, False], bottom)
    expected = np.zeros((3, 2, 2), dtype=np.float32)
    expected[0] = dy[1]
    expected[2] = dy[0] + dy[2] + dy[3]
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-6)


def test_batch_reindex_gradient_and_errors():
    x = rng.standard_normal((3, 2))
    layer = layer_from_text('name: "r" type: "BatchReindex"')
    assert check_layer_gradient(layer, make_blobs(x, np.array([1.0, 1.0, 0.0])), empty_blobs(1)) == x.size
    with pytest.raises(GraphError, match=r"layer 'r'.*index 3 is outside \[0, 3\)"):
        run_layer(layer_from_text('name: "r" type: "BatchReindex"'), [x, np.array([0.0, 3.0])])
    with pytest.raises(ShapeError, match=r"layer 'r'.*indices \(bottom 1\) must be 1-D.*got \(2, 1\)"):
        run_layer(layer_from_text('name: "r" type: "BatchReindex"'), [x, np.zeros((2, 1))])
    layer = layer_from_text('name: "r" type: "BatchReindex"')
    bottom, top = run_layer(layer, [x, np.array([0.0])])
    with pytest.raises(GraphError, match="layer 'r'.*cannot propagate a gradient to its indices"):
        layer.run_backward(top, [True, True], bottom)


# ---------------------------------------------------------------- shapes without data (`check`)
CHECK_NET = """
name: "vision_ii"
layer { name: "in" type: "Input" top: "x" top: "idx" top: "sel" top: "perm"
  input_param { shape { dim: 4 dim: 3 dim: 2 dim: 2 } shape { dim: 4 dim: 2 } shape { dim: 4 } shape { dim: 3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }
layer { name: "sc" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }
layer { name: "bias" type: "Bias" bottom: "x" top: "b" }
layer { name: "pr" type: "PReLU" bottom: "b" top: "p" }
layer { name: "ab" type: "AbsVal" bottom: "p" top: "a" }
layer { name: "pw" type: "Power" bottom: "a" top: "a" power_param { power: 2 } }
layer { name: "tile" type: "Tile" bottom: "a" top: "t" tile_param { tiles: 2 } }
layer { name: "crop" type: "Crop" bottom: "t" bottom: "x" top: "c" crop_param { axis: 1 offset: 1 offset: 0 offset: 0 } }
layer { name: "mvn" type: "MVN" bottom: "c" top: "m" }
layer { name: "am" type: "ArgMax" bottom: "m" top: "am" argmax_param { top_k: 2 out_max_val: true } }
layer { name: "emb" type: "Embed" bottom: "idx" top: "e" embed_param { num_output: 3 input_dim: 5 } }
layer { name: "red" type: "Reduction" bottom: "e" top: "r" reduction_param { axis: 1 } }
layer { name: "par" type: "Parameter" top: "w" parameter_param { shape { dim: 4 dim: 6 } } }
layer { name: "f" type: "Filter" bottom: "w" bottom: "m" bottom: "sel" top: "fw" top: "fm" }
layer { name: "ri" type: "BatchReindex" bottom: "m" bottom: "perm" top: "ri" }
layer { name: "th" type: "Threshold" bottom: "ri" top: "th" }
"""


def test_shape_inference_reads_no_data():
    net = Net(parse_net(CHECK_NET), TRAIN, shape_inference=True)
    assert not net.unknown_shapes
    shapes = {name: blob.shape for name, blob in net.blobs.items()}
    assert shapes["t"] == (4, 6, 2, 2) and shapes["c"] == (4, 3, 2, 2) and shapes["m"] == (4, 3, 2, 2)
    assert shapes["am"] == (4, 2, 2, 1) and shapes["e"] == (4, 2, 3) and shapes["r"] == (4,)
    assert shapes["w"] == (4, 6) and shapes["fw"] == (4, 6) and shapes["fm"] == (4, 3, 2, 2)
    assert shapes["ri"] == (3, 3, 2, 2) and shapes["th"] == (3, 3, 2, 2)
    assert not any(blob.allocated for blob in net.blobs.values())
    assert [blob.shape for blob in net.params["sc"]] == [(3,), (3,)]
    assert [blob.shape for blob in net.params["bn"]] == [(3,), (3,), (1,)]
