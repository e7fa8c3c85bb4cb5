"""Dropout, Flatten, Reshape: references, gradients, memory sharing and BVLC's shape rules."""

import numpy as np
import pytest

from minicaffe.errors import GraphError, ShapeError
from minicaffe.fillers import set_random_seed
from minicaffe.graph import TEST, TRAIN
from minicaffe.testing import GradientChecker, check_layer_gradient, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(5)


# ------------------------------------------------------------------ Dropout
def dropout_text(ratio=None):
    param = "" if ratio is None else f" dropout_param {{ dropout_ratio: {ratio} }}"
    return 'name: "d" type: "Dropout"' + param


@pytest.mark.parametrize("ratio", [None, 0.3])
def test_dropout_train_forward_float32(ratio):
    keep = 1 - (0.5 if ratio is None else ratio)
    x = rng.uniform(0.5, 1.5, size=(4, 5, 6, 5))          # never 0: a zero output means "dropped"
    set_random_seed(3)
    _, top = run_layer(layer_from_text(dropout_text(ratio), phase=TRAIN, dtype=np.float32), [x])
    y = top[0].data
    assert y.dtype == np.float32
    dropped = y == 0
    np.testing.assert_allclose(y[~dropped], x[~dropped] / keep, rtol=1e-6)
    assert abs(dropped.mean() - (1 - keep)) < 0.05        # 600 draws: the drop rate is near the ratio
    assert 0 < dropped.sum() < x.size


def test_dropout_train_mask_follows_the_seed_and_is_redrawn():
    x = np.ones((8, 10))
    layer = layer_from_text(dropout_text(0.5), phase=TRAIN)
    set_random_seed(9)
    bottom, top = run_layer(layer, [x])
    first = top[0].data.copy()
    layer.run_forward(bottom, top)                        # a new draw, a new mask
    assert not np.array_equal(top[0].data, first)
    set_random_seed(9)
    layer.run_forward(bottom, top)                        # same seed, same mask
    np.testing.assert_array_equal(top[0].data, first)


def test_dropout_train_backward_uses_the_forward_mask():
    x = rng.uniform(0.5, 1.5, size=(3, 4, 5))
    layer = layer_from_text(dropout_text(0.25), phase=TRAIN)
    bottom, top = run_layer(layer, [x])
    kept = top[0].data != 0
    dy = rng.standard_normal(x.shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, np.where(kept, dy / 0.75, 0.0), rtol=1e-12)


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_dropout_gradient(phase):
    x = rng.standard_normal((2, 3, 4))
    layer = layer_from_text(dropout_text(0.4), phase=phase)
    assert check_layer_gradient(layer, make_blobs(x), empty_blobs(1), seed=17) == x.size


def test_dropout_test_phase_is_identity_float32():
    x = rng.standard_normal((2, 3, 4))
    layer = layer_from_text(dropout_text(0.7), phase=TEST, dtype=np.float32)
    bottom, top = run_layer(layer, [x])
    np.testing.assert_array_equal(top[0].data, x.astype(np.float32))
    dy = rng.standard_normal(x.shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, dy.astype(np.float32))


def test_dropout_in_place():
    x = rng.uniform(0.5, 1.5, size=(4, 6))
    layer = layer_from_text(dropout_text(0.5), phase=TRAIN)
    blob = make_blobs(x)[0]
    layer.set_up([blob], [blob])
    layer.run_forward([blob], [blob])
    kept = blob.data != 0
    np.testing.assert_allclose(blob.data[kept], 2 * x[kept])
    blob.diff[...] = 1.0
    layer.run_backward([blob], [True], [blob])
    np.testing.assert_allclose(blob.diff, np.where(kept, 2.0, 0.0))


def test_dropout_rejects_ratio_one():
    with pytest.raises(GraphError, match="layer 'd'.*dropout_ratio"):
        run_layer(layer_from_text(dropout_text(1.0)), [np.ones(3)])


# ------------------------------------------------------------------ Flatten / Reshape: a view
def assert_is_view(bottom, top, expected_shape):
    assert top.shape == expected_shape
    np.testing.assert_array_equal(top.data, bottom.data.reshape(expected_shape))
    assert np.shares_memory(top.data, bottom.data)
    assert np.shares_memory(top.diff, bottom.diff)
    dy = rng.standard_normal(expected_shape).astype(top.dtype)
    top.diff[...] = dy                                    # Backward is the shared diff itself
    np.testing.assert_array_equal(bottom.diff, dy.reshape(bottom.shape))


def check_gradient_through_net(layer_text, x, top_shape):
    """Finite differences of a layer whose top shares the bottom's data and diff."""
    layer = layer_from_text(f"{layer_text}")
    bottom, top = make_blobs(x), empty_blobs(1)
    count = GradientChecker(stepsize=1e-4).check_layer(layer, bottom, top)
    assert top[0].shape == top_shape
    return count


FLATTEN_CASES = [("", (2, 60)), ("axis: 2", (2, 3, 20)), ("axis: 1 end_axis: 2", (2, 12, 5)),
                 ("end_axis: -2", (2, 12, 5)), ("axis: -3 end_axis: -1", (2, 60)), ("axis: 0", (120,)),
                 ("axis: 3", (2, 3, 4, 5))]


@pytest.mark.parametrize("param, shape", FLATTEN_CASES)
def test_flatten_shapes_and_views_float32(param, shape):
    x = rng.standard_normal((2, 3, 4, 5))
    layer = layer_from_text(f'name: "f" type: "Flatten" flatten_param {{ {param} }}', dtype=np.float32)
    bottom, top = run_layer(layer, [x])
    assert top[0].data.dtype == np.float32
    assert_is_view(bottom[0], top[0], shape)


@pytest.mark.parametrize("param, shape", FLATTEN_CASES[:4])
def test_flatten_gradient(param, shape):
    x = rng.standard_normal((2, 3, 4, 5))
    assert check_gradient_through_net(f'name: "f" type: "Flatten" flatten_param {{ {param} }}', x, shape) == x.size


def test_flatten_errors():
    layer = layer_from_text('name: "f" type: "Flatten" flatten_param { axis: 2 end_axis: 1 }')
    with pytest.raises(ShapeError, match="layer 'f'.*end_axis"):
        run_layer(layer, [np.zeros((2, 3, 4))])
    layer = layer_from_text('name: "f" type: "Flatten" flatten_param { axis: 3 }')
    with pytest.raises(ShapeError, match="layer 'f'.*axis 3"):
        run_layer(layer, [np.zeros((2, 3, 4))])
    blob = make_blobs(np.zeros((2, 3)))[0]
    with pytest.raises(GraphError, match="layer 'f'.*in-place"):
        layer_from_text('name: "f" type: "Flatten"').set_up([blob], [blob])


def reshape_text(dims, extra=""):
    return 'name: "r" type: "Reshape" reshape_param { shape { ' + " ".join(f"dim: {d}" for d in dims) + f" }} {extra} }}"


# Shapes from BVLC's test_reshape_layer.cpp, all on a (2, 3, 6, 5) bottom.
RESHAPE_CASES = [
    ((0, -1, 1, 1), "", (2, 90, 1, 1)),
    ((0, 0, 0, 0), "", (2, 3, 6, 5)),
    ((0, 3, 10, -1), "", (2, 3, 10, 3)),
    ((3, 10, -1), "axis: 1", (2, 3, 10, 3)),
    ((1, 1, 1), "axis: 0 num_axes: 0", (1, 1, 1, 2, 3, 6, 5)),
    ((1, 1, 1), "axis: 2 num_axes: 0", (2, 3, 1, 1, 1, 6, 5)),
    ((1, 1, 1), "axis: -1 num_axes: 0", (2, 3, 6, 5, 1, 1, 1)),
    ((-1,), "axis: 1 num_axes: 2", (2, 18, 5)),
    ((6, 2, 3, 5), "", (6, 2, 3, 5)),
    ((-1,), "axis: -3", (2, 3, 30)),              # negative axis: -1 is "after the last", so -3 is 2
    ((0, -1), "axis: -4", (2, 3, 30)),
]


@pytest.mark.parametrize("dims, extra, shape", RESHAPE_CASES)
def test_reshape_shapes_and_views_float32(dims, extra, shape):
    x = rng.standard_normal((2, 3, 6, 5))
    bottom, top = run_layer(layer_from_text(reshape_text(dims, extra), dtype=np.float32), [x])
    assert_is_view(bottom[0], top[0], shape)


@pytest.mark.parametrize("dims, extra, shape", [RESHAPE_CASES[i] for i in (0, 3, 5, 7, 8)])
def test_reshape_gradient(dims, extra, shape):
    x = rng.standard_normal((2, 3, 6, 5))
    assert check_gradient_through_net(reshape_text(dims, extra), x, shape) == x.size


def test_reshape_follows_a_reshaped_bottom():
    # BVLC's TestForwardAfterReshape: the bottom becomes 1-D, Reshape runs again.
    layer = layer_from_text(reshape_text((6, 2, 3, 5)))
    bottom, top = run_layer(layer, [rng.standard_normal((2, 3, 6, 5))])
    bottom[0].reshape(180)
    layer.reshape(bottom, top)
    bottom[0].data[...] = rng.standard_normal(180)
    assert_is_view(bottom[0], top[0], (6, 2, 3, 5))


def test_reshape_two_inferred_dims():
    with pytest.raises(GraphError, match=r"layer 'r'.*\(0, -1, -1\).*-1"):
        run_layer(layer_from_text(reshape_text((0, -1, -1))), [np.zeros((2, 3, 6, 5))])


def test_reshape_count_mismatch_names_layer_and_shapes():
    with pytest.raises(ShapeError, match=r"layer 'r'.*output count \(144\).*input count \(180\)"
                                         r".*expected \(2, 3, 6, 5\), got \(6, 2, 3, 4\)"):
        run_layer(layer_from_text(reshape_text((6, 2, 3, 4))), [np.zeros((2, 3, 6, 5))])


@pytest.mark.parametrize("dims, extra, message", [
    ((0, 7, -1), "", r"180.*divisible.*\(14\)"),
    ((0, 0, 0, 0, 0), "", "0 at position 4.*no bottom axis"),
    ((1,), "axis: 5", "axis 5 is out of range"),
    ((1,), "axis: -6", "axis -6 is out of range"),
    ((1,), "axis: 2 num_axes: 3", "axis \\+ num_axes = 5"),
])
def test_reshape_shape_errors(dims, extra, message):
    with pytest.raises(ShapeError, match="layer 'r'.*" + message):
        run_layer(layer_from_text(reshape_text(dims, extra)), [np.zeros((2, 3, 6, 5))])


def test_reshape_parameter_errors():
    with pytest.raises(GraphError, match="layer 'r'.*num_axes"):
        run_layer(layer_from_text(reshape_text((1,), "num_axes: -2")), [np.zeros(1)])
    blob = make_blobs(np.zeros((2, 3)))[0]
    with pytest.raises(GraphError, match="layer 'r'.*in-place"):
        layer_from_text(reshape_text((-1,))).set_up([blob], [blob])
