"""GPU kernels of the shape and data-movement layers, Accuracy, ArgMax, Reduction and DummyData.

Each layer runs on both devices (``compare_devices``: same tops, bottom diffs and parameter diffs, no copy
to the host in Forward or Backward) for every option that changes the math, and layers with a Backward
pass Caffe's gradient check in GPU mode. Tiny float32 blobs: the simulator runs Python per thread.
"""

import numpy as np
import pytest

from minicaffe import mode
from minicaffe.blob import SyncedArray
from minicaffe.errors import GraphError
from minicaffe.testing.layers import empty_blobs, layer_from_text, make_blobs

from .helpers import compare_devices, gradient_check_gpu

rng = np.random.default_rng(25)


def normal(*shape):
    return rng.standard_normal(shape)


# ------------------------------------------------------------------ Concat / Slice
@pytest.mark.parametrize("axis, shapes", [(1, [(2, 2, 3), (2, 3, 3)]), (0, [(1, 3), (2, 3), (1, 3)]),
                                          (-1, [(2, 2, 1), (2, 2, 3)])])
def test_concat(axis, shapes):
    text = f'name: "c" type: "Concat" concat_param {{ axis: {axis} }}'
    compare_devices(text, [normal(*shape) for shape in shapes], propagate_down=[True] * len(shapes))


def test_concat_some_bottoms_and_one_bottom():
    text = 'name: "c" type: "Concat"'
    compare_devices(text, [normal(2, 1, 2), normal(2, 2, 2)], propagate_down=[False, True])
    compare_devices(text, [normal(2, 3)], propagate_down=[True])


def test_a_top_read_on_the_host_is_not_copied_back_before_it_is_overwritten():
    layer = layer_from_text('name: "c" type: "Concat"', dtype=np.float32)
    bottom = make_blobs(normal(2, 1), normal(2, 2), dtype=np.float32)
    top = empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    mode.set_mode_gpu()
    try:
        layer.run_forward(bottom, top)
        first = top[0].data.copy()           # pycaffe reads the output: the host copy is the one to trust
        before = dict(SyncedArray.copies)
        layer.run_forward(bottom, top)
        assert SyncedArray.copies == before
    finally:
        mode.set_mode_cpu()
    np.testing.assert_array_equal(top[0].data, first)


def test_concat_gradient():
    gradient_check_gpu('name: "c" type: "Concat" concat_param { axis: 1 }', [normal(2, 1, 2), normal(2, 2, 2)])


@pytest.mark.parametrize("param, tops", [("axis: 1", 3), ("axis: 0 slice_point: 1", 2),
                                         ("axis: -1 slice_point: 1 slice_point: 3", 3)])
def test_slice(param, tops):
    text = f'name: "s" type: "Slice" slice_param {{ {param} }}'
    compare_devices(text, [normal(3, 3, 4)], num_tops=tops, propagate_down=[True])


def test_slice_one_top():
    compare_devices('name: "s" type: "Slice"', [normal(2, 3)], propagate_down=[True])


def test_slice_gradient():
    gradient_check_gpu('name: "s" type: "Slice" slice_param { axis: 1 slice_point: 1 }', [normal(2, 3, 2)],
                       num_tops=2)


# ------------------------------------------------------------------ Split, Flatten, Reshape, Silence
@pytest.mark.parametrize("tops", [1, 2, 3])
def test_split(tops):
    _, bottom, top = compare_devices('name: "s" type: "Split"', [normal(2, 3)], num_tops=tops,
                                     propagate_down=[True])
    assert all(blob.data_owner() is bottom[0] for blob in top)


def test_split_gradient():
    gradient_check_gpu('name: "s" type: "Split"', [normal(2, 3)], num_tops=3)


@pytest.mark.parametrize("text", ['name: "f" type: "Flatten"',
                                  'name: "f" type: "Flatten" flatten_param { axis: 0 end_axis: 1 }',
                                  'name: "r" type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }',
                                  'name: "r" type: "Reshape" reshape_param { shape { dim: 3 dim: 2 } axis: 1 }'])
def test_views(text):
    _, bottom, top = compare_devices(text, [normal(2, 6, 1)], propagate_down=[True])
    assert top[0].data_owner() is bottom[0]


@pytest.mark.parametrize("text", ['name: "f" type: "Flatten"',
                                  'name: "r" type: "Reshape" reshape_param { shape { dim: -1 } }'])
def test_views_gradient(text):
    gradient_check_gpu(text, [normal(2, 2, 2)])


def test_silence_zeroes_bottom_diffs_on_the_device():
    layer, bottom, _ = compare_devices('name: "s" type: "Silence"', [normal(2, 3), normal(4)], num_tops=0,
                                       propagate_down=[True, False])
    assert not bottom[0].diff.any()


# ------------------------------------------------------------------ Crop, Tile
@pytest.mark.parametrize("param", ["", "axis: 1 offset: 1", "axis: 1 offset: 0 offset: 1 offset: 2",
                                   "axis: -1 offset: 2"])
def test_crop(param):
    text = f'name: "c" type: "Crop" crop_param {{ {param} }}'
    compare_devices(text, [normal(2, 3, 4, 5), normal(2, 2, 2, 3)], propagate_down=[True, False])


def test_crop_reference_diff_is_zeroed():
    compare_devices('name: "c" type: "Crop" crop_param { axis: 1 offset: 1 }', [normal(2, 3, 3), normal(2, 2, 1)],
                    propagate_down=[True, True])


def test_crop_gradient():
    gradient_check_gpu('name: "c" type: "Crop" crop_param { axis: 1 offset: 1 }', [normal(2, 3, 3), normal(2, 2, 2)],
                       check_bottom=[0])


@pytest.mark.parametrize("axis, tiles", [(1, 3), (0, 2), (-1, 2)])
def test_tile(axis, tiles):
    text = f'name: "t" type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}'
    compare_devices(text, [normal(2, 2, 3)], propagate_down=[True])


def test_tile_gradient():
    gradient_check_gpu('name: "t" type: "Tile" tile_param { axis: 1 tiles: 3 }', [normal(2, 2, 2)])


# ------------------------------------------------------------------ BatchReindex, Filter
def test_batch_reindex():
    compare_devices('name: "b" type: "BatchReindex"', [normal(4, 2, 3), np.array([3.0, 0.7, 3.2, 1.0, 3.0])],
                    propagate_down=[True, False])


def test_batch_reindex_gradient():
    gradient_check_gpu('name: "b" type: "BatchReindex"', [normal(3, 2), np.array([2.0, 0.0, 2.0, 1.0])],
                       check_bottom=[0])


@pytest.mark.parametrize("index", [4.0, -1.0, np.nan])
def test_batch_reindex_refuses_an_index_out_of_range(index):
    layer = layer_from_text('name: "b" type: "BatchReindex"', dtype=np.float32)
    bottom = make_blobs(normal(4, 2), np.array([1.0, index, 2.0]), dtype=np.float32)
    top = empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    mode.set_mode_gpu()
    try:
        with pytest.raises(GraphError, match="outside \\[0, 4\\)"):
            layer.run_forward(bottom, top)
    finally:
        mode.set_mode_cpu()


def run_in_place(text, arrays, use_gpu, top_diff=None):
    """Forward (and Backward with ``top_diff``) with top 0 = bottom 0; returns (top data, bottom 0's diff)."""
    layer = layer_from_text(text, dtype=np.float32)
    bottom = make_blobs(*arrays, dtype=np.float32)
    top = [bottom[0]]
    layer.set_up(bottom, top)
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        layer.run_forward(bottom, top)
        out = top[0].data.copy()
        if top_diff is None:
            return out, None
        top[0].diff[...] = top_diff
        layer.run_backward(top, [True] + [False] * (len(bottom) - 1), bottom)
        return out, bottom[0].diff.copy()
    finally:
        mode.set_mode_cpu()


@pytest.mark.parametrize("indices", [[3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 3.0, 0.0]])
def test_batch_reindex_in_place(indices):
    # Issue 25: in place, a GPU thread gathering item k read an item another thread had already overwritten
    # (Forward), or a top diff another thread had replaced by its sum (Backward); the simulator shows it too.
    x = normal(4, 2, 3).astype(np.float32)
    dy = normal(4, 2, 3).astype(np.float32)
    picked = np.array(indices).astype(np.int64)
    out, dx = run_in_place('name: "b" type: "BatchReindex"', [x, np.array(indices)], True, dy)
    np.testing.assert_array_equal(out, x[picked])
    np.testing.assert_array_equal(out, run_in_place('name: "b" type: "BatchReindex"', [x, np.array(indices)],
                                                    False)[0])
    expected = np.zeros_like(x)
    np.add.at(expected, picked, dy)
    np.testing.assert_allclose(dx, expected, rtol=1e-6)


@pytest.mark.parametrize("selector", [[1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]])
def test_filter(selector):
    compare_devices('name: "f" type: "Filter"', [normal(4, 2, 2), normal(4, 3), np.array(selector, float)],
                    num_tops=2, propagate_down=[True, True, False])


def test_filter_gradient():
    gradient_check_gpu('name: "f" type: "Filter"', [normal(4, 2), np.array([1.0, 0.0, 1.0, 1.0])],
                       check_bottom=[0])


def test_filter_reads_a_device_selector_once():
    layer = layer_from_text('name: "f" type: "Filter"', dtype=np.float32)
    bottom = make_blobs(normal(3, 2), np.array([1.0, 0.0, 1.0]), dtype=np.float32)
    top = empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    mode.set_mode_gpu()
    try:
        bottom[0].gpu_data
        bottom[1].mutable_gpu_data          # the newest selector lives on the device
        before = SyncedArray.copies["to_host"]
        layer.run_forward(bottom, top)
        assert SyncedArray.copies["to_host"] == before + 1
        layer.run_forward(bottom, top)      # the host copy is current now: no second copy
        assert SyncedArray.copies["to_host"] == before + 1
    finally:
        mode.set_mode_cpu()
    np.testing.assert_array_equal(top[0].data, bottom[0].data[[0, 2]])


# ------------------------------------------------------------------ ArgMax, Accuracy
def scores_with_ties(*shape):
    return rng.integers(0, 3, size=shape).astype(float)     # many ties: the index order matters


@pytest.mark.parametrize("param", ["", "top_k: 2", "out_max_val: true top_k: 2", "axis: 1 top_k: 2",
                                   "axis: 1 out_max_val: true top_k: 3", "axis: -1"])
def test_argmax(param):
    text = f'name: "a" type: "ArgMax" argmax_param {{ {param} }}'
    compare_devices(text, [scores_with_ties(2, 4, 3)])


def test_argmax_nan_ranks_last():
    x = normal(2, 5)
    x[0, 1] = x[1, 3] = x[1, 4] = np.nan
    compare_devices('name: "a" type: "ArgMax" argmax_param { top_k: 5 out_max_val: true }', [x])


@pytest.mark.parametrize("param, shape", [("top_k: 3 out_max_val: true", (2, 3, 50)),
                                          ("axis: 1 top_k: 2 out_max_val: true", (1, 130, 2)),
                                          ("axis: 1 top_k: 2", (1, 130, 2))])
def test_argmax_long_rows(param, shape):
    # more entries than a block has threads: a block per row, top_k rounds of a block-wide maximum
    x = scores_with_ties(*shape)
    x.reshape(-1)[::7] = np.nan
    compare_devices(f'name: "a" type: "ArgMax" argmax_param {{ {param} }}', [x])


@pytest.mark.parametrize("param, shape, short_row", [("axis: 1 top_k: 3", (2, 3, 2), None),
                                                     ("top_k: 4", (2, 1, 4), None),
                                                     ("axis: 1 top_k: 5", (1, 5, 1), 2)])
def test_argmax_in_place(param, shape, short_row, monkeypatch):
    # Issue 25: with top_k = the axis's size the top has the bottom's shape and may be computed in place; a
    # GPU thread then ranked its entry against entries other threads had already overwritten. short_row
    # sends a short row to the rounds kernel (long rows cost a simulated round per entry).
    from minicaffe.layers import argmax
    if short_row is not None:
        monkeypatch.setattr(argmax, "SHORT_ROW", short_row)
    x = rng.permutation(int(np.prod(shape))).reshape(shape).astype(float)
    text = f'name: "a" type: "ArgMax" argmax_param {{ {param} }}'
    np.testing.assert_array_equal(run_in_place(text, [x], True)[0], run_in_place(text, [x], False)[0])


def accuracy_case(outer, classes, inner, ignore=None):
    scores = scores_with_ties(outer, classes, inner) if inner > 1 else scores_with_ties(outer, classes)
    labels = rng.integers(0, classes, size=(outer, inner) if inner > 1 else (outer,)).astype(float)
    if ignore is not None:
        labels.reshape(-1)[::3] = ignore
    return scores, labels


@pytest.mark.parametrize("param, inner, ignore", [("", 1, None), ("top_k: 2", 1, None), ("", 3, None),
                                                  ("ignore_label: 1", 2, 1), ("top_k: 3 ignore_label: 7", 1, 7)])
@pytest.mark.parametrize("tops", [1, 2])
def test_accuracy(param, inner, ignore, tops):
    scores, labels = accuracy_case(5, 4, inner, ignore)
    compare_devices(f'name: "a" type: "Accuracy" accuracy_param {{ {param} }}', [scores, labels], num_tops=tops)


def test_accuracy_other_axis_and_all_ignored():
    scores = scores_with_ties(2, 3, 4)
    labels = rng.integers(0, 4, size=(2, 3)).astype(float)
    compare_devices('name: "a" type: "Accuracy" accuracy_param { axis: 2 }', [scores, labels], num_tops=2)
    _, _, top = compare_devices('name: "a" type: "Accuracy" accuracy_param { ignore_label: 0 }',
                                [scores_with_ties(3, 2), np.zeros(3)], num_tops=2)
    assert top[0].data == 0 and not top[1].data.any()


def test_accuracy_refuses_a_label_out_of_range():
    layer = layer_from_text('name: "a" type: "Accuracy"', dtype=np.float32)
    bottom = make_blobs(normal(3, 4), np.array([1.0, 4.0, -2.0]), dtype=np.float32)
    top = empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    mode.set_mode_gpu()
    try:
        with pytest.raises(GraphError, match="label 4 is outside \\[0, 4\\)"):
            layer.run_forward(bottom, top)
    finally:
        mode.set_mode_cpu()


# ------------------------------------------------------------------ Reduction
@pytest.mark.parametrize("operation", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis, coeff", [(0, 1.0), (1, -0.5), (-1, 2.0)])
def test_reduction(operation, axis, coeff):
    x = normal(2, 3, 4)
    x[0, 0, :2] = 0                                         # ASUM's sign(0)
    text = f'name: "r" type: "Reduction" reduction_param {{ operation: {operation} axis: {axis} coeff: {coeff} }}'
    compare_devices(text, [x], propagate_down=[True])


@pytest.mark.parametrize("operation", ["SUM", "ASUM", "SUMSQ", "MEAN"])
def test_reduction_gradient(operation):
    text = f'name: "r" type: "Reduction" reduction_param {{ operation: {operation} axis: 1 coeff: 0.7 }}'
    gradient_check_gpu(text, [normal(2, 3)])


def test_reduction_long_rows():
    # rows longer than a block: each thread strides over several values
    compare_devices('name: "r" type: "Reduction" reduction_param { operation: SUMSQ axis: 1 }', [normal(2, 300)],
                    propagate_down=[True], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ Parameter, Input, DummyData
def test_parameter():
    layer, _, top = compare_devices('name: "p" type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [],
                                    propagate_down=[])
    assert top[0].data_owner() is layer.blobs[0]


def test_input():
    compare_devices('name: "i" type: "Input" input_param { shape { dim: 2 dim: 3 } }', [], num_tops=2,
                    propagate_down=[])


@pytest.mark.parametrize("fillers", ['data_filler { type: "constant" value: 1.5 }',
                                     'data_filler { type: "gaussian" std: 2 }',
                                     'data_filler { type: "uniform" min: -1 max: 3 } '
                                     'data_filler { type: "constant" value: -2 }'])
def test_dummy_data(fillers):
    text = f'name: "d" type: "DummyData" dummy_data_param {{ shape {{ dim: 2 dim: 3 }} {fillers} }}'
    compare_devices(text, [], num_tops=2, passes=2)


def test_dummy_data_refills_without_copying_back():
    layer = layer_from_text('name: "d" type: "DummyData" dummy_data_param { shape { dim: 4 } '
                            'data_filler { type: "gaussian" } }', dtype=np.float32)
    top = empty_blobs(1, dtype=np.float32)
    layer.set_up([], top)
    mode.set_mode_gpu()
    try:
        layer.run_forward([], top)
        first = top[0].data.copy()
        top[0].mutable_gpu_data                      # a layer after it wrote the top in place
        before = dict(SyncedArray.copies)
        layer.run_forward([], top)
        assert SyncedArray.copies == {"to_host": before["to_host"], "to_device": before["to_device"] + 1}
    finally:
        mode.set_mode_cpu()
    assert not np.array_equal(top[0].data, first)
