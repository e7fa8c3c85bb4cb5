"""The Caffe-fork layers' numba.cuda kernels (minicaffe/layers/forks) against their CPU kernels (simulator).

Each layer runs in CPU and GPU mode on the same tiny float32 inputs (compare_devices), and every layer with
a Backward passes Caffe's gradient check in GPU mode (float64). In-place runs, which the helper does not
build, are compared here with the same bottom blob as top on both devices.
"""

import numpy as np
import pytest

from minicaffe import fillers, mode
from minicaffe.testing import empty_blobs, layer_from_text, make_blobs

from .helpers import compare_devices, gradient_check_gpu

rng = np.random.default_rng(25)


def normal(*shape):
    return rng.standard_normal(shape)


def run_in_place(text, arrays, index, use_gpu, top_diff):
    """Forward and Backward with top 0 = bottom ``index``; returns (top data, bottom diffs)."""
    fillers.set_random_seed(7)
    layer = layer_from_text(f'name: "fork" {text}', dtype=np.float32, num_tops=1)
    bottom = make_blobs(*arrays, dtype=np.float32)
    top = [bottom[index]]
    layer.set_up(bottom, top)
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        layer.run_forward(bottom, top)
        out = top[0].data.copy()
        for blob in bottom:
            blob.diff[...] = 0
        top[0].diff[...] = top_diff
        layer.run_backward(top, [True] * len(bottom), bottom)
        return out, [blob.diff.copy() for blob in bottom]
    finally:
        mode.set_mode_cpu()


def assert_in_place_matches(text, arrays, index, rtol=1e-5, atol=1e-6):
    top_diff = rng.standard_normal(np.shape(arrays[index])).astype(np.float32)
    cpu_out, cpu_diffs = run_in_place(text, arrays, index, False, top_diff)
    gpu_out, gpu_diffs = run_in_place(text, arrays, index, True, top_diff)
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=rtol, atol=atol)
    for gpu_diff, cpu_diff in zip(gpu_diffs, cpu_diffs):
        np.testing.assert_allclose(gpu_diff, cpu_diff, rtol=rtol, atol=atol)


# ====================================================================== ShuffleChannel

def shuffle_text(group):
    return f'name: "shuffle" type: "ShuffleChannel" shuffle_channel_param {{ group: {group} }}'


@pytest.mark.parametrize("group, shape", [(2, (2, 6, 2)), (3, (1, 6, 2, 1)), (1, (2, 3)), (6, (1, 6, 1, 2))])
def test_shuffle_channel(group, shape):
    compare_devices(shuffle_text(group), [normal(*shape)], propagate_down=[True])


def test_shuffle_channel_in_place_and_gradient():
    assert_in_place_matches(shuffle_text(3)[len('name: "shuffle" '):], [normal(2, 6, 1)], 0)
    gradient_check_gpu(shuffle_text(2), [normal(1, 4, 2)])


# ====================================================================== Axpy

AXPY = 'name: "axpy" type: "Axpy"'


@pytest.mark.parametrize("a_shape, x_shape", [((2, 3, 1, 1), (2, 3, 2, 2)), ((2, 3), (2, 3, 3)), ((3, 2), (3, 2))])
def test_axpy(a_shape, x_shape):
    compare_devices(AXPY, [normal(*a_shape), normal(*x_shape), normal(*x_shape)], propagate_down=[True, True, True])


@pytest.mark.parametrize("propagate", [[True, False, False], [False, True, True], [False, False, True]])
def test_axpy_some_bottoms(propagate):
    compare_devices(AXPY, [normal(2, 2), normal(2, 2, 3), normal(2, 2, 3)], propagate_down=propagate)


@pytest.mark.parametrize("index", [1, 2])
def test_axpy_in_place(index):
    assert_in_place_matches('type: "Axpy"', [normal(2, 2, 1, 1), normal(2, 2, 1, 3), normal(2, 2, 1, 3)], index)


def test_axpy_gradient():
    gradient_check_gpu(AXPY, [normal(2, 2), normal(2, 2, 2), normal(2, 2, 2)], stepsize=1e-4, threshold=1e-8)


# ====================================================================== Permute

def permute_text(order):
    return f'name: "perm" type: "Permute" permute_param {{ {" ".join(f"order: {a}" for a in order)} }}'


@pytest.mark.parametrize("order, shape", [((0, 2, 3, 1), (2, 3, 2, 2)), ((1,), (2, 3, 1, 2)),
                                          ((3, 2, 1, 0), (2, 1, 3, 2)), ((0, 2, 1), (1, 2, 3)), ((0, 1), (2, 3)),
                                          ((1, 0), (1, 1))])
def test_permute(order, shape):
    compare_devices(permute_text(order), [normal(*shape)], propagate_down=[True])


def test_permute_gradient():
    gradient_check_gpu(permute_text((0, 2, 3, 1)), [normal(1, 3, 2, 2)])


# ====================================================================== Upsample

def upsample_text(params):
    return f'name: "up" type: "Upsample" upsample_param {{ {params} }}'


def window_mask(shape, kernel, out_h, out_w):
    """A mask as a kernel-sized, stride-kernel MAX pooling makes it: one random cell of each window."""
    num, channels, height, width = shape
    rows = np.arange(height)[:, None] * kernel[0] + rng.integers(0, kernel[0], shape)
    cols = np.arange(width)[None, :] * kernel[1] + rng.integers(0, kernel[1], shape)
    return (np.minimum(rows, out_h - 1) * out_w + np.minimum(cols, out_w - 1)).astype(np.float64)


@pytest.mark.parametrize("params, shape, out, kernel", [
    ("scale: 2", (2, 2, 2, 3), (4, 6), (2, 2)),
    ("scale_h: 3 scale_w: 2", (1, 2, 2, 2), (6, 4), (3, 2)),
    ("scale: 2 pad_out_h: true pad_out_w: true", (1, 2, 2, 3), (3, 5), (2, 2)),
    ("upsample_h: 5 upsample_w: 4", (1, 1, 3, 2), (5, 4), (2, 2)),
])
def test_upsample(params, shape, out, kernel):
    mask = window_mask(shape, kernel, *out)
    compare_devices(upsample_text(params), [normal(*shape), mask], propagate_down=[True, False])


def test_upsample_colliding_and_empty_mask_entries():
    """Two entries naming one place: the later one's value, both get its gradient; -1 and NaN place nothing."""
    mask = window_mask((1, 2, 2, 2), (2, 2), 4, 4)
    mask[0, 0, 1, 1] = mask[0, 0, 0, 0]
    mask[0, 1, 0, 1] = mask[0, 1, 1, 0]
    mask[0, 1, 0, 0] = -1
    mask[0, 0, 1, 0] = np.nan
    compare_devices(upsample_text("scale: 2"), [normal(1, 2, 2, 2), mask], propagate_down=[True, False])


def test_upsample_mask_past_the_plane_is_an_error(gpu_mode):
    from minicaffe.errors import GraphError
    layer = layer_from_text(upsample_text("scale: 2"), dtype=np.float32)
    mask = window_mask((1, 1, 2, 2), (2, 2), 4, 4)
    mask[0, 0, 1, 0] = 16
    mask[0, 0, 1, 1] = 20
    bottom = make_blobs(normal(1, 1, 2, 2), mask, dtype=np.float32)
    top = empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    with pytest.raises(GraphError, match=r"mask value 16 at \(0, 0, 1, 0\) is past the 4x4 output plane"):
        layer.run_forward(bottom, top)


def test_upsample_gradient():
    gradient_check_gpu(upsample_text("scale: 2"), [normal(1, 2, 2, 2), window_mask((1, 2, 2, 2), (2, 2), 4, 4)],
                       check_bottom=[0])


# ====================================================================== PriorBox

@pytest.mark.parametrize("params, shapes", [
    ("min_size: 4 max_size: 9 aspect_ratio: 2 flip: true clip: true variance: 0.1 variance: 0.1 variance: 0.2 "
     "variance: 0.2", [(1, 2, 2, 3), (1, 3, 12, 16)]),
    ("min_size: 3 min_size: 5 aspect_ratio: 3 flip: false img_size: 10 step: 4 offset: 0.25", [(1, 1, 2, 2)]),
])
def test_prior_box(params, shapes):
    layer, _, top = compare_devices(f'name: "pb" type: "PriorBox" prior_box_param {{ {params} }}',
                                    [np.zeros(shape) for shape in shapes], passes=2)
    assert layer._gpu_written[0] is layer._cache      # computed once, on the device since


# ====================================================================== Interp

def interp_text(params):
    return f'name: "interp" type: "Interp" interp_param {{ {params} }}'


@pytest.mark.parametrize("params, shape", [
    ("zoom_factor: 2", (1, 2, 2, 3)),
    ("shrink_factor: 2", (2, 1, 5, 3)),
    ("height: 3 width: 5 pad_beg: -1 pad_end: -1", (1, 2, 4, 4)),
    ("zoom_factor: 3 shrink_factor: 2", (1, 1, 3, 3)),
    ("height: 3 width: 2 pad_beg: 0 pad_end: -1", (1, 2, 4, 3)),   # same size: the crop is copied
])
def test_interp(params, shape):
    compare_devices(interp_text(params), [normal(*shape)], propagate_down=[True])


def test_interp_size_from_a_second_bottom():
    compare_devices(interp_text(""), [normal(1, 2, 2, 2), np.zeros((1, 1, 3, 4))], propagate_down=[True, False])


@pytest.mark.parametrize("params, shape", [("zoom_factor: 2", (1, 1, 2, 3)),
                                           ("height: 2 width: 2 pad_end: -1", (1, 1, 3, 3))])
def test_interp_gradient(params, shape):
    gradient_check_gpu(interp_text(params), [normal(*shape)])


# ====================================================================== ROIPooling

def roi_text(pooled_h, pooled_w, scale=None):
    scale_text = "" if scale is None else f" spatial_scale: {scale}"
    return (f'name: "roi" type: "ROIPooling" '
            f'roi_pooling_param {{ pooled_h: {pooled_h} pooled_w: {pooled_w}{scale_text} }}')


ROIS = np.array([[0, 0, 0, 3, 3],
                 [1, 1, 0, 4, 2],
                 [1, 2.6, 1.4, 1, 0.2],          # inverted: one cell, no gradient
                 [0, -10, -10, -5, -5],          # off the map: zeros
                 [1, 0.5, 1.5, 2.5, 3.49]])      # halves round away from zero


@pytest.mark.parametrize("pooled, scale, rois", [((2, 3), None, ROIS), ((3, 2), 0.5, ROIS * [1, 2, 2, 2, 2]),
                                                 ((1, 1), 1.0, ROIS[:2]), ((2, 2), None, ROIS[:0])])
def test_roi_pooling(pooled, scale, rois):
    compare_devices(roi_text(*pooled, scale), [normal(2, 2, 4, 5), rois], propagate_down=[True, False])


def test_roi_pooling_bad_rois_are_the_cpus_errors(gpu_mode):
    from minicaffe.errors import GraphError
    for rois, message in (([[0, 0, 0, 1, 1], [2, 0, 0, 1, 1]], r"ROI 1 names image 2 of the batch, outside \[0, 2\)"),
                          ([[0, 0, 0, 1, 1], [0, 0, np.nan, 1, 1]], "ROI 1 has a non-finite value")):
        layer = layer_from_text(roi_text(2, 2), dtype=np.float32)
        bottom = make_blobs(normal(2, 1, 3, 3), np.array(rois), dtype=np.float32)
        top = empty_blobs(1, dtype=np.float32)
        layer.set_up(bottom, top)
        with pytest.raises(GraphError, match=message):
            layer.run_forward(bottom, top)


def test_roi_pooling_gradient():
    gradient_check_gpu(roi_text(2, 2), [normal(2, 1, 3, 4), ROIS[[0, 1, 4]]], check_bottom=[0], stepsize=1e-4,
                       threshold=1e-8)


# ====================================================================== Normalize

def normalize_text(across, shared, extra=""):
    return (f'name: "norm" type: "Normalize" norm_param {{ across_spatial: {str(across).lower()} '
            f'channel_shared: {str(shared).lower()} scale_filler {{ type: "gaussian" mean: 2 std: 0.5 }} {extra} }}')


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (2, 3, 3)])
def test_normalize(across, shared, shape):
    compare_devices(normalize_text(across, shared), [normal(*shape)], propagate_down=[True])


def test_normalize_eps_scale_only_and_in_place():
    text = normalize_text(False, False, "eps: 0.5")
    compare_devices(text, [normal(2, 2, 3) * 0.1], propagate_down=[True])
    compare_devices(text, [normal(1, 2, 3)], propagate_down=[False])
    assert_in_place_matches(text[len('name: "norm" '):], [normal(2, 3, 2)], 0)
    assert_in_place_matches(normalize_text(True, False)[len('name: "norm" '):], [normal(2, 3, 2)], 0)


@pytest.mark.parametrize("across, shared", [(True, True), (True, False), (False, True), (False, False)])
def test_normalize_gradient(across, shared):
    gradient_check_gpu(normalize_text(across, shared), [normal(1, 2, 3)], stepsize=1e-4, threshold=1e-7)


# ====================================================================== DetectionOutput
# Its GPU Forward copies the decoded boxes and scores to the host by design (NMS runs there), so the helper's
# no-copy assertion does not apply: CPU and GPU Forwards are compared directly.

def detection_inputs(num, priors, classes, loc_classes, in_target=False):
    centers = rng.uniform(0.3, 0.7, (priors, 2))
    sizes = rng.uniform(0.15, 0.4, (priors, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    variances = np.tile([0.1, 0.1, 0.2, 0.2], (priors, 1))
    prior = (boxes.reshape(1, 1, -1) if in_target
             else np.stack([boxes.reshape(-1), variances.reshape(-1)]).reshape(1, 2, -1))
    loc = rng.standard_normal((num, priors * loc_classes * 4)) * 0.5
    logits = rng.standard_normal((num, priors, classes)) * 2
    conf = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return [loc, conf.reshape(num, -1), prior]


def detect(text, inputs, dtype, use_gpu):
    layer = layer_from_text(text, dtype=dtype)
    bottom = make_blobs(*inputs, dtype=dtype)
    top = empty_blobs(1, dtype=dtype)
    layer.set_up(bottom, top)
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        layer.run_forward(bottom, top)
    finally:
        mode.set_mode_cpu()
    return layer, top[0].data.copy()


@pytest.mark.parametrize("params, loc_classes, in_target, dtype", [
    ("nms_param { nms_threshold: 0.3 } code_type: CENTER_SIZE", 1, False, np.float32),
    ("share_location: false nms_param { nms_threshold: 0.45 top_k: 3 } keep_top_k: 4 code_type: CORNER", 3, False,
     np.float32),
    ("nms_param { nms_threshold: 0.5 eta: 0.8 } code_type: CORNER_SIZE confidence_threshold: 0.2", 1, False,
     np.float64),
    ("nms_param { nms_threshold: 0.4 } variance_encoded_in_target: true background_label_id: -1", 1, True, np.float32),
    ("share_location: false background_label_id: 1 nms_param { nms_threshold: 0.4 } code_type: CENTER_SIZE", 3, False,
     np.float32),
    ("nms_param { nms_threshold: 0.4 } confidence_threshold: 1.5", 1, False, np.float32),   # nothing kept
])
def test_detection_output(params, loc_classes, in_target, dtype):
    text = f'name: "det" type: "DetectionOutput" detection_output_param {{ num_classes: 3 {params} }}'
    inputs = detection_inputs(2, 6, 3, loc_classes, in_target)
    _, expected = detect(text, inputs, dtype, False)
    layer, detections = detect(text, inputs, dtype, True)
    assert layer.forward_gpu is not None
    np.testing.assert_array_equal(detections, expected)
    assert expected.shape[2] > (2 if "1.5" not in params else 1)


def test_detection_output_bad_prior_is_the_cpus_error():
    from minicaffe.errors import GraphError
    text = ('name: "det" type: "DetectionOutput" detection_output_param { num_classes: 2 code_type: CENTER_SIZE '
            'nms_param { nms_threshold: 0.4 } }')
    inputs = detection_inputs(1, 3, 2, 1)
    inputs[2][0, 0, 4:8] = [0.5, 0.5, 0.4, 0.6]
    for use_gpu in (False, True):
        with pytest.raises(GraphError, match=r"prior box 1 .* has width or height <= 0"):
            detect(text, inputs, np.float32, use_gpu)
