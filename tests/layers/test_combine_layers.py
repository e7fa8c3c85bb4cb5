"""Concat, Slice, Silence, Eltwise: numpy references, gradient checks, Caffe's errors."""

import numpy as np
import pytest

from minicaffe.errors import GraphError, ShapeError
from minicaffe.testing import GradientChecker, check_layer_gradient, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(11)


# ---------------------------------------------------------------- Concat
def concat_text(param=""):
    return f'name: "cat" type: "Concat" concat_param {{ {param} }}'


@pytest.mark.parametrize("param, shapes, axis", [
    ("", [(2, 1, 3), (2, 3, 3), (2, 2, 3)], 1),           # default axis 1
    ("axis: -1", [(2, 3, 1), (2, 3, 2)], 2),
    ("axis: 0", [(1, 2, 2), (3, 2, 2)], 0),
    ("concat_dim: 2", [(2, 2, 2), (2, 2, 1)], 2),         # legacy field
])
def test_concat_forward(param, shapes, axis):
    arrays = [rng.standard_normal(shape) for shape in shapes]
    _, top = run_layer(layer_from_text(concat_text(param), dtype=np.float32), arrays)
    expected = np.concatenate(arrays, axis=axis).astype(np.float32)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, expected)


@pytest.mark.parametrize("param, shapes", [
    ("", [(2, 1, 3), (2, 2, 3)]),
    ("axis: -1", [(2, 3, 1), (2, 3, 2), (2, 3, 2)]),
    ("axis: -3", [(1, 2, 2), (2, 2, 2)]),
])
def test_concat_gradient(param, shapes):
    arrays = [rng.standard_normal(shape) for shape in shapes]
    checked = check_layer_gradient(layer_from_text(concat_text(param)), make_blobs(*arrays), empty_blobs(1))
    assert checked == sum(a.size for a in arrays)


def test_concat_backward_slices_top_diff_only_where_asked():
    a, b = rng.standard_normal((2, 1, 2)), rng.standard_normal((2, 3, 2))
    layer = layer_from_text(concat_text())
    bottom, top = run_layer(layer, [a, b])
    top_diff = rng.standard_normal((2, 4, 2))
    top[0].diff[...] = top_diff
    bottom[0].diff[...] = 7.0
    layer.run_backward(top, [False, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.full_like(a, 7.0))     # untouched
    np.testing.assert_array_equal(bottom[1].diff, top_diff[:, 1:])


def test_concat_single_bottom_shares_data_and_diff():
    layer = layer_from_text(concat_text())
    bottom, top = run_layer(layer, [rng.standard_normal((2, 3))])
    assert np.shares_memory(top[0].data, bottom[0].data)
    assert np.shares_memory(top[0].diff, bottom[0].diff)


def test_concat_errors():
    layer = layer_from_text(concat_text())
    with pytest.raises(ShapeError, match=r"layer 'cat'.*expected \(2, 3, 4\), got \(2, 3, 5\)"):
        layer.set_up(make_blobs(np.zeros((2, 3, 4)), np.zeros((2, 3, 5))), empty_blobs(1))
    with pytest.raises(ShapeError, match=r"layer 'cat'.*expected \(2, 3\), got \(2, 3, 1\)"):
        layer_from_text(concat_text()).set_up(make_blobs(np.zeros((2, 3)), np.zeros((2, 3, 1))), empty_blobs(1))
    with pytest.raises(GraphError, match="layer 'cat'.*either axis or concat_dim"):
        layer_from_text(concat_text("axis: 1 concat_dim: 1")).set_up(
            make_blobs(np.zeros((2, 3)), np.zeros((2, 3))), empty_blobs(1))
    with pytest.raises(GraphError, match="layer 'cat'.*concat_dim 2 is out of range"):
        layer_from_text(concat_text("concat_dim: 2")).set_up(
            make_blobs(np.zeros((2, 3)), np.zeros((2, 3))), empty_blobs(1))
    with pytest.raises(ShapeError, match="layer 'cat'.*axis 3 is out of range"):
        layer_from_text(concat_text("axis: 3")).set_up(make_blobs(np.zeros((2, 3)), np.zeros((2, 3))),
                                                       empty_blobs(1))


# ---------------------------------------------------------------- Slice
def slice_text(param=""):
    return f'name: "sl" type: "Slice" slice_param {{ {param} }}'


@pytest.mark.parametrize("param, shape, tops, axis, cuts", [
    ("slice_point: 2 slice_point: 5", (2, 7, 2), 3, 1, [2, 5]),
    ("axis: -1", (2, 3, 6), 3, 2, [2, 4]),                # equal parts
    ("axis: 0", (4, 3), 2, 0, [2]),
    ("slice_dim: 2 slice_point: 1", (2, 2, 3), 2, 2, [1]),  # legacy field
])
def test_slice_forward(param, shape, tops, axis, cuts):
    x = rng.standard_normal(shape)
    _, top = run_layer(layer_from_text(slice_text(param), dtype=np.float32), [x], num_tops=tops)
    expected = np.split(x.astype(np.float32), cuts, axis=axis)
    assert [blob.shape for blob in top] == [part.shape for part in expected]
    for blob, part in zip(top, expected):
        np.testing.assert_array_equal(blob.data, part)


@pytest.mark.parametrize("param, shape, tops", [
    ("slice_point: 1 slice_point: 4", (2, 5, 2), 3),
    ("axis: -1", (2, 2, 4), 2),
    ("axis: 0 slice_point: 2", (3, 2), 2),
])
def test_slice_gradient(param, shape, tops):
    x = rng.standard_normal(shape)
    checked = check_layer_gradient(layer_from_text(slice_text(param)), make_blobs(x), empty_blobs(tops))
    assert checked == x.size


def test_slice_backward_reassembles_top_diffs():
    layer = layer_from_text(slice_text("slice_point: 1"))
    bottom, top = run_layer(layer, [rng.standard_normal((2, 3))], num_tops=2)
    diffs = [rng.standard_normal((2, 1)), rng.standard_normal((2, 2))]
    for blob, diff in zip(top, diffs):
        blob.diff[...] = diff
    layer.run_backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.concatenate(diffs, axis=1))


def test_slice_single_top_shares_data_and_diff():
    layer = layer_from_text(slice_text())
    bottom, top = run_layer(layer, [rng.standard_normal((2, 3))])
    assert np.shares_memory(top[0].data, bottom[0].data)
    assert np.shares_memory(top[0].diff, bottom[0].diff)


@pytest.mark.parametrize("param, shape, tops, error, message", [
    ("slice_point: 1", (2, 6), 3, GraphError, "1 slice_point.*for 3 tops"),
    ("slice_point: 2 slice_point: 2", (2, 6), 3, GraphError, "strictly increasing"),
    ("slice_point: 0", (2, 6), 2, GraphError, "strictly increasing"),
    ("slice_point: 7", (2, 6), 2, ShapeError, r"past the end of axis 1.*\(2, 6\)"),
    ("slice_point: 1 slice_point: 2", (2, 2), 3, ShapeError, r"3 tops cannot slice axis 1 of length 2"),
    ("", (2, 5), 2, ShapeError, r"2 tops do not evenly divide axis 1 of length 5.*\(2, 5\)"),
    ("axis: 1 slice_dim: 1", (2, 6), 2, GraphError, "either axis or slice_dim"),
    ("slice_dim: 2", (2, 6), 2, GraphError, "slice_dim 2 is out of range"),
])
def test_slice_errors(param, shape, tops, error, message):
    layer = layer_from_text(slice_text(param))
    with pytest.raises(error, match="layer 'sl'.*" + message):
        layer.set_up(make_blobs(np.zeros(shape)), empty_blobs(tops))


# ---------------------------------------------------------------- Silence
def test_silence_zeroes_diffs_where_asked():
    layer = layer_from_text('name: "quiet" type: "Silence" bottom: "a" bottom: "b"', num_tops=0)
    bottom = make_blobs(rng.standard_normal((2, 3)), rng.standard_normal((4,)), dtype=np.float32)
    layer.set_up(bottom, [])
    layer.run_forward(bottom, [])
    for blob in bottom:
        blob.diff[...] = 5.0
    layer.run_backward([], [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(bottom[1].diff, np.full((4,), 5.0, np.float32))


def test_silence_takes_no_tops():
    layer = layer_from_text('name: "quiet" type: "Silence"')
    with pytest.raises(GraphError, match="layer 'quiet'.*takes 0 top"):
        layer.set_up(make_blobs(np.zeros(2)), empty_blobs(1))


# ---------------------------------------------------------------- Eltwise
def eltwise_text(param=""):
    return f'name: "elt" type: "Eltwise" eltwise_param {{ {param} }}'


def test_eltwise_sum_forward_with_coeff():
    a, b, c = (rng.standard_normal((2, 3, 2)) for _ in range(3))
    text = eltwise_text("operation: SUM coeff: 1 coeff: -0.5 coeff: 2")
    _, top = run_layer(layer_from_text(text, dtype=np.float32), [a, b, c])
    np.testing.assert_allclose(top[0].data, a - 0.5 * b + 2 * c, rtol=1e-6, atol=1e-6)
    _, top = run_layer(layer_from_text(eltwise_text(), dtype=np.float32), [a, b])   # SUM is the default
    np.testing.assert_allclose(top[0].data, a + b, rtol=1e-6, atol=1e-6)


def test_eltwise_prod_forward():
    a, b, c = (rng.standard_normal((3, 4)) for _ in range(3))
    _, top = run_layer(layer_from_text(eltwise_text("operation: PROD"), dtype=np.float32), [a, b, c])
    np.testing.assert_allclose(top[0].data, a * b * c, rtol=1e-5)


def test_eltwise_max_forward_and_routing():
    a, b, c = (rng.standard_normal((2, 5)) for _ in range(3))
    layer = layer_from_text(eltwise_text("operation: MAX"), dtype=np.float32)
    bottom, top = run_layer(layer, [a, b, c])
    np.testing.assert_array_equal(top[0].data, np.maximum(np.maximum(a, b), c).astype(np.float32))
    top_diff = rng.standard_normal((2, 5))
    top[0].diff[...] = top_diff
    layer.run_backward(top, [True, True, True], bottom)
    winner = np.argmax(np.stack([a, b, c]), axis=0)
    for index, blob in enumerate(bottom):
        np.testing.assert_allclose(blob.diff, np.where(winner == index, top_diff, 0), rtol=1e-6)


def test_eltwise_max_ties_as_caffe():
    # Bottoms 0 and 1: a tie goes to bottom 1. Later bottoms win only when strictly greater.
    a = np.array([1.0, 2.0, 0.0])
    b = np.array([1.0, 1.0, 0.0])
    c = np.array([1.0, 2.0, 0.5])
    layer = layer_from_text(eltwise_text("operation: MAX"))
    bottom, top = run_layer(layer, [a, b, c])
    top[0].diff[...] = 1.0
    layer.run_backward(top, [True, True, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0, 1, 0])
    np.testing.assert_array_equal(bottom[1].diff, [1, 0, 0])
    np.testing.assert_array_equal(bottom[2].diff, [0, 0, 1])


@pytest.mark.parametrize("param", [
    "operation: SUM coeff: 0.5 coeff: -2 coeff: 1",
    "operation: SUM",
    "operation: PROD",
    "operation: PROD stable_prod_grad: false",
])
def test_eltwise_gradient(param):
    arrays = [rng.uniform(0.5, 1.5, (2, 3)) * rng.choice([-1, 1], (2, 3)) for _ in range(3)]
    checked = check_layer_gradient(layer_from_text(eltwise_text(param)), make_blobs(*arrays), empty_blobs(1))
    assert checked == 18


def test_eltwise_max_gradient():
    values = rng.permutation(18).reshape(3, 2, 3) * 0.1      # distinct, at least 0.1 apart
    checked = check_layer_gradient(layer_from_text(eltwise_text("operation: MAX")),
                                   make_blobs(*values), empty_blobs(1))
    assert checked == 18


def test_eltwise_prod_stable_gradient_survives_a_zero():
    a = np.array([0.0, 2.0])
    b = np.array([3.0, 4.0])
    for stable, expected in ((True, [3.0, 4.0]), (False, [np.nan, 4.0])):
        text = eltwise_text(f"operation: PROD stable_prod_grad: {str(stable).lower()}")
        layer = layer_from_text(text)
        bottom, top = run_layer(layer, [a, b])
        top[0].diff[...] = 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            layer.run_backward(top, [True, False], bottom)
        np.testing.assert_array_equal(bottom[0].diff, expected)


def test_eltwise_errors():
    two = lambda: make_blobs(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(GraphError, match="layer 'elt'.*1 coeff.*for 2 bottoms"):
        layer_from_text(eltwise_text("coeff: 2")).set_up(two(), empty_blobs(1))
    with pytest.raises(GraphError, match="layer 'elt'.*coeff is only for operation SUM"):
        layer_from_text(eltwise_text("operation: PROD coeff: 1 coeff: 1")).set_up(two(), empty_blobs(1))
    with pytest.raises(ShapeError, match=r"layer 'elt'.*expected \(2, 3\), got \(3, 2\)"):
        layer_from_text(eltwise_text()).set_up(make_blobs(np.zeros((2, 3)), np.zeros((3, 2))), empty_blobs(1))
    with pytest.raises(GraphError, match="layer 'elt'.*at least 2 bottom"):
        layer_from_text(eltwise_text()).set_up(make_blobs(np.zeros(2)), empty_blobs(1))
