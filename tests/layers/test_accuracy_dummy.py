"""Accuracy and DummyData: plain references, Caffe's tie rule and fill schedule, errors."""

import numpy as np
import pytest

from minicaffe.errors import GraphError, ShapeError
from minicaffe.testing import empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(5)


# ---------------------------------------------------------------- Accuracy
def accuracy_text(param=""):
    return f'name: "acc" type: "Accuracy" accuracy_param {{ {param} }}'


def accuracy_reference(scores, labels, top_k, ignore=None):
    """Rows of class scores and their labels: (accuracy, per-class accuracy), one sample at a time."""
    hits, counted = 0, 0
    per_hits, per_total = np.zeros(scores.shape[1]), np.zeros(scores.shape[1])
    for row, label in zip(scores, labels):
        label = int(label)
        if ignore is not None and label == ignore:
            continue
        rivals = sum(1 for c in range(len(row)) if c != label and row[c] >= row[label])
        right = rivals < top_k
        hits += right
        counted += 1
        per_hits[label] += right
        per_total[label] += 1
    per_class = np.divide(per_hits, per_total, out=np.zeros_like(per_hits), where=per_total > 0)
    return hits / max(counted, 1), per_class


@pytest.mark.parametrize("top_k", [1, 2])
def test_accuracy_2d(top_k):
    scores = rng.standard_normal((12, 4))
    labels = rng.integers(0, 4, 12)
    _, top = run_layer(layer_from_text(accuracy_text(f"top_k: {top_k}"), dtype=np.float32), [scores, labels])
    assert top[0].shape == ()
    expected, _ = accuracy_reference(scores.astype(np.float32), labels, top_k)
    assert float(top[0].data) == pytest.approx(expected, rel=1e-6)


def test_accuracy_hand_counted_with_ties():
    scores = np.array([[0.1, 0.7, 0.2],     # label 1: best
                       [0.5, 0.5, 0.0],     # label 0: tied with class 1, the tie counts against it
                       [0.3, 0.3, 0.3],     # label 2: everything tied
                       [0.6, 0.1, 0.3]])    # label 2: second best
    labels = np.array([1, 0, 2, 2])
    _, top1 = run_layer(layer_from_text(accuracy_text()), [scores, labels])
    assert float(top1[0].data) == pytest.approx(1 / 4)
    _, top2 = run_layer(layer_from_text(accuracy_text("top_k: 2")), [scores, labels])
    assert float(top2[0].data) == pytest.approx(3 / 4)          # the tie with one rival is within top 2
    _, top3 = run_layer(layer_from_text(accuracy_text("top_k: 3")), [scores, labels])
    assert float(top3[0].data) == pytest.approx(1.0)


@pytest.mark.parametrize("top_k", [1, 2])
def test_accuracy_4d_axis1(top_k):
    scores = rng.standard_normal((2, 3, 2, 3))
    labels = rng.integers(0, 3, (2, 2, 3))
    layer = layer_from_text(accuracy_text(f"top_k: {top_k} axis: 1"), dtype=np.float32)
    _, top = run_layer(layer, [scores, labels])
    rows = scores.astype(np.float32).transpose(0, 2, 3, 1).reshape(-1, 3)
    expected, _ = accuracy_reference(rows, labels.reshape(-1), top_k)
    assert float(top[0].data) == pytest.approx(expected, rel=1e-6)


def test_accuracy_other_axis_and_negative_axis():
    scores = rng.standard_normal((3, 2, 5))             # classes on the last axis
    labels = rng.integers(0, 5, (3, 2))
    expected, _ = accuracy_reference(scores.reshape(-1, 5), labels.reshape(-1), 1)
    for axis in (2, -1):
        _, top = run_layer(layer_from_text(accuracy_text(f"axis: {axis}")), [scores, labels])
        assert float(top[0].data) == pytest.approx(expected)


def test_accuracy_ignore_label_and_per_class_top():
    scores = rng.standard_normal((10, 4))
    labels = np.array([0, 1, -1, 1, 2, -1, 0, 1, 2, 2])  # class 3 never occurs
    layer = layer_from_text('name: "acc" type: "Accuracy" top: "a" top: "per_class" '
                            'accuracy_param { top_k: 2 ignore_label: -1 }', dtype=np.float32)
    _, top = run_layer(layer, [scores, labels], num_tops=2)
    expected, per_class = accuracy_reference(scores.astype(np.float32), labels, 2, ignore=-1)
    assert float(top[0].data) == pytest.approx(expected, rel=1e-6)
    assert top[1].shape == (4,)
    np.testing.assert_allclose(top[1].data, per_class, rtol=1e-6)
    assert top[1].data[3] == 0


def test_accuracy_ignore_label_changes_the_denominator():
    scores = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 5, 0])                        # the 5 is ignored, not a wrong answer
    _, top = run_layer(layer_from_text(accuracy_text("ignore_label: 5")), [scores, labels])
    assert float(top[0].data) == pytest.approx(1 / 2)
    _, top = run_layer(layer_from_text(accuracy_text("ignore_label: 0")), [scores, np.array([0, 0, 0])])
    assert float(top[0].data) == 0.0                     # nothing counted: 0, not NaN


def test_accuracy_has_no_backward():
    layer = layer_from_text(accuracy_text())
    bottom, top = run_layer(layer, [rng.standard_normal((3, 2)), np.array([0, 1, 1])])
    with pytest.raises(GraphError, match="layer 'acc'.*no Backward"):
        layer.run_backward(top, [True, False], bottom)
    assert not layer.allow_force_backward(1)


def test_accuracy_errors():
    with pytest.raises(ShapeError, match=r"layer 'acc'.*expected \(2, 4\), got \(2, 3\)"):
        layer_from_text(accuracy_text()).set_up(make_blobs(np.zeros((2, 3, 4)), np.zeros((2, 3))), empty_blobs(1))
    with pytest.raises(GraphError, match="layer 'acc'.*top_k 4 is more than the number of classes"):
        layer_from_text(accuracy_text("top_k: 4")).set_up(make_blobs(np.zeros((2, 3)), np.zeros(2)), empty_blobs(1))
    layer = layer_from_text(accuracy_text())
    bottom = make_blobs(np.zeros((2, 3)), np.array([0, 3]))
    top = empty_blobs(1)
    layer.set_up(bottom, top)
    with pytest.raises(GraphError, match=r"layer 'acc'.*label 3 is outside \[0, 3\)"):
        layer.run_forward(bottom, top)


# ---------------------------------------------------------------- DummyData
def dummy(param, tops, dtype=np.float64):
    layer = layer_from_text(f'name: "dd" type: "DummyData" dummy_data_param {{ {param} }}',
                            dtype=dtype, num_tops=tops)
    top = empty_blobs(tops, dtype=dtype)
    layer.set_up([], top)
    return layer, top


def test_dummy_data_shapes():
    _, top = dummy("shape { dim: 2 dim: 3 }", 2)
    assert [blob.shape for blob in top] == [(2, 3), (2, 3)]
    _, top = dummy("shape { dim: 2 } shape { dim: 1 dim: 4 dim: 5 }", 2)
    assert [blob.shape for blob in top] == [(2,), (1, 4, 5)]
    _, top = dummy("num: 2 channels: 3 height: 4 width: 5", 1)
    assert top[0].shape == (2, 3, 4, 5)
    _, top = dummy("num: 2 num: 7 channels: 3 height: 1 width: 2 width: 6", 2)   # once, or once per top
    assert [blob.shape for blob in top] == [(2, 3, 1, 2), (7, 3, 1, 6)]


def test_dummy_data_default_is_constant_zero():
    layer, top = dummy("shape { dim: 3 }", 1, dtype=np.float32)
    layer.run_forward([], top)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, np.zeros(3))


def test_dummy_data_constant_fills_once():
    layer, top = dummy('shape { dim: 2 dim: 2 } data_filler { type: "constant" value: 3 }', 1, dtype=np.float32)
    np.testing.assert_array_equal(top[0].data, np.full((2, 2), 3.0))   # filled at setup
    top[0].data[...] = -1.0
    layer.run_forward([], top)
    np.testing.assert_array_equal(top[0].data, np.full((2, 2), -1.0))  # not refilled


def test_dummy_data_gaussian_refills_every_forward():
    layer, top = dummy('shape { dim: 50 } data_filler { type: "gaussian" mean: 10 std: 1 }', 1)
    layer.run_forward([], top)
    first = top[0].data.copy()
    layer.run_forward([], top)
    second = top[0].data.copy()
    assert not np.array_equal(first, second)
    for values in (first, second):
        assert 8 < values.mean() < 12 and values.std() > 0.3


def test_dummy_data_one_filler_for_all_tops_and_one_per_top():
    _, top = dummy('shape { dim: 2 } data_filler { type: "constant" value: 2 }', 3)
    for blob in top:
        np.testing.assert_array_equal(blob.data, [2.0, 2.0])
    layer, top = dummy('shape { dim: 20 } data_filler { type: "constant" value: 4 } '
                       'data_filler { type: "uniform" min: 5 max: 6 }', 2)
    np.testing.assert_array_equal(top[1].data, np.zeros(20))           # not filled until a Forward
    layer.run_forward([], top)
    np.testing.assert_array_equal(top[0].data, np.full(20, 4.0))
    assert np.all((top[1].data >= 5) & (top[1].data <= 6))


@pytest.mark.parametrize("param, tops, message", [
    ('shape { dim: 2 } data_filler { type: "constant" } data_filler { type: "constant" }', 3,
     "2 data_filler.*for 3 tops"),
    ("shape { dim: 2 } num: 1 channels: 1 height: 1 width: 1", 1, "either shape or num/channels"),
    ("num: 1 channels: 1 height: 1", 1, "0 'width' value"),
    ("shape { dim: 2 } shape { dim: 3 }", 3, "2 shape.*for 3 tops"),
    ('shape { dim: 2 } data_filler { type: "nonsense" }', 1, "unknown data_filler type 'nonsense'"),
])
def test_dummy_data_errors(param, tops, message):
    with pytest.raises(GraphError, match="layer 'dd'.*" + message):
        dummy(param, tops)
