"""Interp (DeepLab-v2, PSPNet): forward against OpenCV's dnn and a numpy reference, backward by finite differences.

OpenCV's Interp reads zoom_factor and height/width, but not shrink_factor or
pad_beg/pad_end, and takes one bottom: those forms are checked against a numpy
reference (bilinear weights with the corners aligned, as matrices), the
two-bottom form against OpenCV given the same size as height/width.
"""

import cv2
import numpy as np
import pytest

from minicaffe import threads
from minicaffe.errors import GraphError, ShapeError
from minicaffe.registry import layer_class
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(143)


def interp(params, dtype=np.float32, name="interp"):
    return layer_from_text(f'name: "{name}" type: "Interp" interp_param {{ {params} }}', dtype=dtype)


def opencv_interp(tmp_path, x, params):
    dims = " ".join(f"dim: {d}" for d in x.shape)
    path = tmp_path / "interp.prototxt"
    path.write_text(f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
                    f'layer {{ name: "interp" type: "Interp" bottom: "data" top: "out" '
                    f'interp_param {{ {params} }} }}\n')
    net = cv2.dnn.readNetFromCaffe(str(path))
    net.setInput(np.ascontiguousarray(x, dtype=np.float32), "data")
    return net.forward("interp")


def weights(size_in, size_out):
    """(size_out, size_in): output i reads input r i, r = (in - 1) / (out - 1), split between two neighbours."""
    matrix = np.zeros((size_out, size_in))
    ratio = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    for i in range(size_out):
        position = ratio * i
        low = min(int(np.floor(position)), size_in - 1)
        fraction = position - low
        matrix[i, low] += 1 - fraction
        matrix[i, min(low + 1, size_in - 1)] += fraction
    return matrix


def interp_reference(x, out_h, out_w, pad_beg=0, pad_end=0):
    height, width = x.shape[2], x.shape[3]
    crop = x[:, :, -pad_beg:height + pad_end, -pad_beg:width + pad_end].astype(np.float64)
    return np.einsum("ih,nchw,jw->ncij", weights(crop.shape[2], out_h), crop, weights(crop.shape[3], out_w))


# ---------------------------------------------------------------- forward

OPENCV_CASES = {
    "zoom_2": ("zoom_factor: 2", (2, 3, 4, 5), (7, 9)),
    "zoom_3": ("zoom_factor: 3", (1, 2, 3, 3), (7, 7)),
    "height_width": ("height: 9 width: 4", (2, 2, 5, 6), (9, 4)),      # up in height, down in width
    "one_row": ("height: 1 width: 6", (1, 2, 4, 3), (1, 6)),
    "same_size": ("height: 5 width: 6", (1, 2, 5, 6), (5, 6)),
}


@pytest.mark.parametrize("case", sorted(OPENCV_CASES))
def test_forward_matches_opencv(tmp_path, case):
    params, shape, out_hw = OPENCV_CASES[case]
    x = rng.standard_normal(shape).astype(np.float32)
    _, top = run_layer(interp(params), [x])
    assert top[0].shape == shape[:2] + out_hw and top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, opencv_interp(tmp_path, x, params), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(top[0].data, interp_reference(x, *out_hw), rtol=1e-5, atol=1e-6)


def test_second_bottom_gives_the_size(tmp_path):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    like = np.zeros((2, 7, 10, 3), np.float32)
    _, top = run_layer(interp(""), [x, like])
    assert top[0].shape == (2, 3, 10, 3)
    np.testing.assert_allclose(top[0].data, opencv_interp(tmp_path, x, "height: 10 width: 3"), rtol=1e-6, atol=1e-6)
    # With a crop, the crop is resized to bottom 1's size.
    _, top = run_layer(interp("pad_beg: -1 pad_end: -1"), [x, like])
    np.testing.assert_allclose(top[0].data, interp_reference(x, 10, 3, -1, -1), rtol=1e-5, atol=1e-6)


# (params, bottom shape, output H x W, pad_beg, pad_end): the forms OpenCV does not read.
REFERENCE_CASES = {
    "shrink": ("shrink_factor: 2", (2, 2, 7, 8), (4, 4), 0, 0),
    "shrink_3": ("shrink_factor: 3", (1, 1, 9, 5), (3, 2), 0, 0),
    "shrink_zoom": ("shrink_factor: 3 zoom_factor: 2", (1, 2, 7, 9), (5, 5), 0, 0),
    "zoom_pads": ("zoom_factor: 3 pad_beg: -1 pad_end: -1", (2, 1, 6, 7), (10, 13), -1, -1),
    "height_width_pad_beg": ("height: 5 width: 4 pad_beg: -2", (1, 2, 8, 8), (5, 4), -2, 0),
    "shrink_pad_end": ("shrink_factor: 2 pad_end: -1", (1, 1, 8, 9), (4, 4), 0, -1),
    # zoom_factor comes before height/width in the fork's order.
    "zoom_over_height": ("zoom_factor: 2 height: 3 width: 3", (1, 1, 3, 4), (5, 7), 0, 0),
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_forward_matches_reference(case):
    params, shape, out_hw, pad_beg, pad_end = REFERENCE_CASES[case]
    x = rng.standard_normal(shape).astype(np.float32)
    _, top = run_layer(interp(params), [x])
    assert top[0].shape == shape[:2] + out_hw
    np.testing.assert_allclose(top[0].data, interp_reference(x, *out_hw, pad_beg, pad_end), rtol=1e-5, atol=1e-6)


def test_same_size_copies_the_crop():
    x = rng.standard_normal((1, 2, 6, 7)).astype(np.float32)
    _, top = run_layer(interp("height: 4 width: 5 pad_beg: -1 pad_end: -1"), [x])
    np.testing.assert_array_equal(top[0].data, x[:, :, 1:5, 1:6])


def test_float64_net_keeps_float32_coordinates():
    # On a ramp x[h, w] = h, output row i is the float32 coordinate r i with r = float32(3 / 9):
    # the fork computes coordinates in float, whatever the blob's precision.
    x = np.broadcast_to(np.arange(4.0)[:, None], (1, 1, 4, 2))
    _, top = run_layer(interp("height: 10 width: 2", dtype=np.float64), [x])
    ratio = np.float32(3) / np.float32(9)
    expected = (ratio * np.arange(10, dtype=np.float32)).astype(np.float64)
    np.testing.assert_allclose(top[0].data[0, 0, :, 0], expected, rtol=0, atol=1e-14)
    assert np.abs(top[0].data[0, 0, :, 0] - np.arange(10) / 3).max() > 1e-8


# ---------------------------------------------------------------- backward

@pytest.mark.parametrize("params, shape", [
    ("zoom_factor: 2", (1, 2, 3, 4)),
    ("shrink_factor: 2 pad_beg: -1 pad_end: 0", (2, 1, 6, 5)),
    ("height: 4 width: 7 pad_end: -1", (1, 1, 5, 4)),
    ("height: 3 width: 3 pad_beg: -1 pad_end: -1", (1, 1, 5, 5)),      # the copy
])
def test_gradient(params, shape):
    x = rng.standard_normal(shape)
    checker = GradientChecker(stepsize=1e-3, threshold=1e-8)
    assert checker.check_layer(interp(params, np.float64), make_blobs(x), empty_blobs(1)) == x.size


def test_gradient_with_second_bottom():
    x = rng.standard_normal((1, 2, 3, 3))
    layer = interp("", np.float64)
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    checker = GradientChecker(stepsize=1e-3, threshold=1e-8)
    assert checker.check_layer(layer, make_blobs(x, np.zeros((1, 1, 5, 2))), empty_blobs(1)) == x.size


def test_threads_agree(monkeypatch):
    x = rng.standard_normal((2, 5, 4, 6)).astype(np.float32)
    dy = rng.standard_normal((2, 5, 7, 11)).astype(np.float32)
    results = []
    before = threads.get_num_threads()
    try:
        for count in (1, 3):
            threads.set_num_threads(count)
            monkeypatch.setattr(threads, "CHUNK_ELEMENTS", 1)
            layer = interp("zoom_factor: 2")
            bottom, top = run_layer(layer, [x])
            top[0].diff[...] = dy
            layer.run_backward(top, [True], bottom)
            results.append((top[0].data.copy(), bottom[0].diff.copy()))
    finally:
        threads.set_num_threads(before)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("params, message", [
    ("", "give zoom_factor, shrink_factor"),
    ("height: 5", "give zoom_factor, shrink_factor"),
    ("zoom_factor: 2 pad_beg: 1", "pad_beg and pad_end crop and must be 0 or negative"),
    ("zoom_factor: 2 pad_end: 2", "pad_beg and pad_end crop and must be 0 or negative"),
    ("shrink_factor: 0", "shrink_factor must be at least 1"),
    ("zoom_factor: -1 shrink_factor: 2", "zoom_factor must be at least 1"),
])
def test_parameter_errors(params, message):
    with pytest.raises(GraphError, match=f"layer 'interp': {message}|layer 'interp': interp_param: {message}"):
        run_layer(interp(params), [np.zeros((1, 1, 4, 4))])


def test_shape_errors():
    with pytest.raises(GraphError, match="layer 'interp': .*from bottom 1; zoom_factor cannot be given"):
        run_layer(interp("zoom_factor: 2"), [np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 8, 8))])
    with pytest.raises(ShapeError, match=r"layer 'interp'.*bottom 0's num "
                                         r"\(expected \(2, C, OH, OW\), got \(1, 1, 8, 8\)"):
        run_layer(interp(""), [np.zeros((2, 1, 4, 4)), np.zeros((1, 1, 8, 8))])
    with pytest.raises(ShapeError, match=r"layer 'interp': pad_beg -2 and pad_end -2 crop the whole bottom"):
        run_layer(interp("zoom_factor: 2 pad_beg: -2 pad_end: -2"), [np.zeros((1, 1, 4, 9))])
    with pytest.raises(ShapeError, match=r"layer 'interp': the output size 0x3 must be positive"):
        run_layer(interp("height: 0 width: 3"), [np.zeros((1, 1, 4, 4))])
    with pytest.raises(ShapeError, match=r"layer 'interp'.*4-D.*got \(4, 4\)"):
        run_layer(interp("zoom_factor: 2"), [np.zeros((4, 4))])
    assert layer_class("Interp").fork == "DeepLab-v2 (deeplab-public-ver2)"
