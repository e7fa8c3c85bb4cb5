"""ROIPooling (py-faster-rcnn): forward against OpenCV's dnn, backward by finite differences.

OpenCV computes the bins as the fork does, so float32 forwards must agree
exactly. The backward follows the fork's CUDA kernel, the only one it has:
checked by finite differences where that kernel's gradient is the true one, and
by hand where its filters drop a gradient.
"""

import cv2
import numpy as np
import pytest

from minicaffe import threads
from minicaffe.errors import GraphError, ShapeError
from minicaffe.registry import layer_class
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(8266711)


def roi_text(pooled_h, pooled_w, scale=None, name="roi"):
    scale_text = f" spatial_scale: {scale}" if scale is not None else ""
    return (f'name: "{name}" type: "ROIPooling" '
            f'roi_pooling_param {{ pooled_h: {pooled_h} pooled_w: {pooled_w}{scale_text} }}')


def minicaffe_roi(x, rois, pooled_h, pooled_w, scale=None, dtype=np.float32):
    layer = layer_from_text(roi_text(pooled_h, pooled_w, scale), dtype=dtype)
    return run_layer(layer, [x, rois])[1][0].data.copy()


def opencv_roi(tmp_path, x, rois, pooled_h, pooled_w, scale=None):
    dims = lambda shape: " ".join(f"dim: {d}" for d in shape)  # noqa: E731
    path = tmp_path / "roi.prototxt"
    path.write_text(
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims(x.shape)} }} }} }}\n'
        f'layer {{ name: "rois" type: "Input" top: "rois" input_param {{ shape {{ {dims(rois.shape)} }} }} }}\n'
        f'layer {{ {roi_text(pooled_h, pooled_w, scale)} bottom: "data" bottom: "rois" top: "out" }}\n')
    net = cv2.dnn.readNetFromCaffe(str(path))
    net.setInput(np.ascontiguousarray(x, dtype=np.float32), "data")
    net.setInput(np.ascontiguousarray(rois, dtype=np.float32), "rois")
    return net.forward("roi")


def distinct(shape, step=0.1):
    """Values without ties, so every bin's argmax (and its gradient) is unambiguous."""
    count = int(np.prod(shape))
    return ((rng.permutation(count) - count / 2) * step).reshape(shape)


# ---------------------------------------------------------------- forward

FORWARD_CASES = {
    # VGG16's conv5 stride: image coordinates onto a 1/16 map, several images.
    "scale_1_16": ((3, 2, 6, 7), 0.0625, (2, 2), [[0, 0, 0, 95, 79], [2, 16, 8, 60, 90], [1, 33, 40, 111, 95],
                                                  [2, 7, 9, 8, 10], [0, 100, 70, 130, 90]]),
    # Corners at x.5 on the map: C's round takes them away from zero (numpy's would go to even).
    "half_way": ((2, 1, 8, 9), 0.5, (3, 2), [[0, 1, 3, 5, 9], [1, -3, -1, 7, 13], [1, 5, 5, 15, 15],
                                             [0, -5, -7, 3, 3]]),
    # Partly and wholly off the map, an inverted box, bins smaller than a cell (empty bins off the map).
    "outside": ((2, 2, 5, 6), 1.0, (4, 3), [[0, -3, -2, 2, 1], [1, 4, 3, 9, 8], [1, 7, 6, 12, 9],
                                            [0, 4, 3, 1, 1], [1, 2, 2, 2, 2], [0, -9, -9, -5, -6],
                                            [1, 5, 1, 5, 4]]),
    # A fractional scale, bins of fractional size (overlapping), a batch index of 1.9 (truncated to 1).
    "fractional": ((2, 3, 7, 7), 0.3, (3, 3), [[0, 0, 0, 20, 20], [1.9, 3, 1, 11, 17], [1, 9, 9, 22, 14]]),
}


@pytest.mark.parametrize("case", sorted(FORWARD_CASES))
def test_forward_matches_opencv(tmp_path, case):
    shape, scale, (pooled_h, pooled_w), rois = FORWARD_CASES[case]
    x = rng.standard_normal(shape).astype(np.float32)
    rois = np.array(rois, dtype=np.float32)
    ours = minicaffe_roi(x, rois, pooled_h, pooled_w, scale)
    assert ours.shape == (len(rois), shape[1], pooled_h, pooled_w) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, opencv_roi(tmp_path, x, rois, pooled_h, pooled_w, scale))


def test_rounding_is_half_away_from_zero():
    # Cell (h, w) holds w: a bin's max is its last column, so the output shows the box's right edge.
    x = np.tile(np.arange(9, dtype=np.float32), (1, 1, 4, 1))
    rois = np.array([[0, 0, 0, 5, 1],        # x2 = 2.5 -> 3 (numpy's round: 2)
                     [0, 0, 0, 3, 1],        # 1.5 -> 2
                     [0, -3, 0, -1, 1]], np.float32)   # x1 = -1.5 -> -2, x2 = -0.5 -> -1: off the map
    out = minicaffe_roi(x, rois, 1, 1, 0.5)
    np.testing.assert_array_equal(out.reshape(-1), [3, 2, 0])


def test_empty_and_degenerate_bins():
    x = np.arange(1, 31, dtype=np.float32).reshape(1, 1, 5, 6)
    # A 1x1 box pooled 2x2: bin edges floor(p/2), ceil((p+1)/2) give every bin the one cell.
    out = minicaffe_roi(x, np.array([[0, 2, 1, 2, 1]], np.float32), 2, 2)
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), x[0, 0, 1, 2]))
    # An inverted box is one cell at its first corner.
    out = minicaffe_roi(x, np.array([[0, 4, 3, 1, 0]], np.float32), 1, 1)
    np.testing.assert_array_equal(out.reshape(-1), [x[0, 0, 3, 4]])
    # A box hanging off the bottom right: bins past the map are empty and give 0.
    out = minicaffe_roi(x, np.array([[0, 4, 3, 9, 8]], np.float32), 2, 2)
    np.testing.assert_array_equal(out[0, 0], [[x[0, 0, 4, 5], 0], [0, 0]])


def test_all_nan_bin_gives_the_running_minimum():
    x = np.full((1, 1, 2, 2), np.nan, np.float32)
    out = minicaffe_roi(x, np.array([[0, 0, 0, 1, 1]], np.float32), 1, 1)
    assert out.reshape(-1)[0] == -np.finfo(np.float32).max


def test_rois_as_4d_and_none():
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    rois = np.array([[0, 0, 0, 3, 3], [0, 1, 1, 2, 2]], np.float32)
    np.testing.assert_array_equal(minicaffe_roi(x, rois.reshape(2, 5, 1, 1), 2, 2), minicaffe_roi(x, rois, 2, 2))
    assert minicaffe_roi(x, np.zeros((0, 5), np.float32), 2, 2).shape == (0, 2, 2, 2)


# ---------------------------------------------------------------- backward

def test_gradient():
    x = distinct((2, 2, 5, 6))
    rois = np.array([[0, 0, 0, 5, 4], [1, 1, 0, 4, 3], [1, 2, 1, 5, 4], [0, 3, 2, 4, 3]], np.float64)
    layer = layer_from_text(roi_text(2, 3), dtype=np.float64)
    checker = GradientChecker(stepsize=1e-3, threshold=1e-8)
    assert checker.check_layer(layer, make_blobs(x, rois), empty_blobs(1)) == x.size


def test_gradient_with_scale_and_overlapping_bins():
    x = distinct((1, 1, 6, 6))
    rois = np.array([[0, 2, 0, 9, 11], [0, -4, -2, 7, 5]], np.float64)
    layer = layer_from_text(roi_text(3, 2, 0.5), dtype=np.float64)
    checker = GradientChecker(stepsize=1e-3, threshold=1e-8)
    assert checker.check_layer(layer, make_blobs(x, rois), empty_blobs(1)) == x.size


def test_backward_sums_over_rois_and_bins():
    x = distinct((1, 1, 4, 4))
    x[0, 0, 1, 1] = 100                   # the max of every bin below that holds it
    layer = layer_from_text(roi_text(2, 2), dtype=np.float64)
    rois = np.array([[0, 0, 0, 2, 2], [0, 1, 1, 1, 1], [0, 0, 0, 3, 3]], np.float64)
    bottom, top = run_layer(layer, [x, rois])
    top[0].diff[...] = 1
    layer.run_backward(top, [True, False], bottom)
    # ROI 0 (3x3, bins [0,2) and [1,3)): all four bins hold (1, 1); ROI 1: all four bins are that cell;
    # ROI 2 (4x4): only its first bin does.
    assert bottom[0].diff[0, 0, 1, 1] == 4 + 4 + 1


def test_backward_keeps_the_gpu_kernels_filters():
    x = distinct((1, 1, 5, 2))
    x[0, 0, 3, 0] = 100
    # A 3-row box [0, 2] in 21 bins: float32 rounding stretches the last bin, ceil(21 * (3/21)) = 4,
    # over row 3, outside the box. Forward pools row 3 there; the CUDA Backward gives it nothing.
    rois = np.array([[0, 0, 0, 0, 2]], np.float64)
    layer = layer_from_text(roi_text(21, 1), dtype=np.float32)
    bottom, top = run_layer(layer, [x, rois])
    assert top[0].data[0, 0, 20, 0] == 100 and (top[0].data[0, 0, :20, 0] != 100).all()
    top[0].diff[...] = 1
    layer.run_backward(top, [True, False], bottom)
    assert bottom[0].diff[0, 0, 3, 0] == 0
    assert bottom[0].diff.sum() == 20            # every other bin's gradient arrives
    # An inverted box pools its first cell but takes no gradient (the cell is not inside [x1, x2]).
    layer = layer_from_text(roi_text(1, 1), dtype=np.float64)
    bottom, top = run_layer(layer, [x, np.array([[0, 1, 3, 0, 3]], np.float64)])
    assert top[0].data.reshape(-1)[0] == x[0, 0, 3, 1]
    top[0].diff[...] = 1
    layer.run_backward(top, [True, False], bottom)
    assert not bottom[0].diff.any()


def test_threads_agree(monkeypatch):
    x = distinct((2, 5, 9, 8)).astype(np.float32)
    rois = np.column_stack([rng.integers(0, 2, 40), rng.integers(-3, 6, (40, 2)), rng.integers(3, 12, (40, 2))])
    rois = rois.astype(np.float32)
    dy = rng.standard_normal((40, 5, 3, 3)).astype(np.float32)
    results = []
    before = threads.get_num_threads()
    try:
        for count in (1, 3):
            threads.set_num_threads(count)
            monkeypatch.setattr(threads, "CHUNK_ELEMENTS", 1 if count > 1 else 1 << 17)
            layer = layer_from_text(roi_text(3, 3), dtype=np.float32)
            bottom, top = run_layer(layer, [x, rois])
            top[0].diff[...] = dy
            layer.run_backward(top, [True, False], bottom)
            results.append((top[0].data.copy(), bottom[0].diff.copy()))
    finally:
        threads.set_num_threads(before)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_rois_take_no_gradient():
    layer = layer_from_text(roi_text(2, 2))
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)
    assert layer_class("ROIPooling").fork == "py-faster-rcnn (rbgirshick/caffe-fast-rcnn)"


# ---------------------------------------------------------------- errors

def test_parameter_and_shape_errors():
    x = np.zeros((2, 1, 4, 4))
    with pytest.raises(GraphError, match="layer 'roi'.*pooled_h and pooled_w"):
        run_layer(layer_from_text('name: "roi" type: "ROIPooling" roi_pooling_param { pooled_h: 2 }'),
                  [x, np.zeros((1, 5))])
    with pytest.raises(ShapeError, match=r"layer 'roi'.*expected \(R, 5\), got \(3, 4\)"):
        run_layer(layer_from_text(roi_text(2, 2)), [x, np.zeros((3, 4))])
    with pytest.raises(ShapeError, match=r"layer 'roi'.*got \(1, 4, 4\)"):
        run_layer(layer_from_text(roi_text(2, 2)), [x[0], np.zeros((3, 5))])
    with pytest.raises(GraphError, match=r"layer 'roi': ROI 1 names image 2 .*outside \[0, 2\)"):
        run_layer(layer_from_text(roi_text(2, 2)), [x, [[1, 0, 0, 1, 1], [2, 0, 0, 1, 1]]])
    with pytest.raises(GraphError, match="layer 'roi': ROI 0 has a non-finite value"):
        run_layer(layer_from_text(roi_text(2, 2)), [x, [[0, 0, np.nan, 1, 1]]])
    with pytest.raises(GraphError, match="layer 'roi'.*takes 2 bottom"):
        run_layer(layer_from_text(roi_text(2, 2)), [x])
