"""Detector: context-padded crops against hand arithmetic, detect_windows against a direct forward."""

import os
import sys
import types

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import io
from minicaffe.detector import Detector, SelectiveSearchMissing
from minicaffe.errors import MinicaffeError

from tests.conftest import deploy_with_random_weights

# Batch 3, so four windows take two batches (the second padded).
DEPLOY = """
name: "tiny_detector"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 3 dim: 8 dim: 8 } } }
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 }
                              bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
"""
MEAN = np.array([100.0, 120.0, 140.0])
SETTINGS = {"mean": MEAN, "raw_scale": 255.0, "channel_swap": (2, 1, 0), "input_scale": 0.5}


@pytest.fixture
def tiny(tmp_path):
    return deploy_with_random_weights(tmp_path, DEPLOY, seed=4)


@pytest.fixture
def image():
    return np.random.default_rng(0).uniform(0, 1, (10, 12, 3)).astype(np.float32)


def test_crop_without_context_is_the_window(tiny, image):
    detector = Detector(*tiny[:2])
    assert detector.context_pad is None
    np.testing.assert_array_equal(detector.crop_dims, (8, 8, 3))
    np.testing.assert_array_equal(detector.crop(image, np.array([2, 3, 7, 9])), image[2:7, 3:9])


def test_context_crop_inside_the_image(tiny, image):
    # Input 8, pad 2: the window is scaled by 8 / (8 - 4) = 2 about its centre.
    # Window (2, 3, 5, 6): half sizes 2, centre (4, 5), box (0, 1, 8, 9), 9 pixels a side
    # by pycaffe's count; 9 * 8/9 = 8 output pixels from the 8 x 8 slice [0:8, 1:9].
    detector = Detector(*tiny[:2], context_pad=2, **SETTINGS)
    np.testing.assert_allclose(detector.crop(image, np.array([2, 3, 5, 6])), image[0:8, 1:9], rtol=1e-6)


def test_context_crop_past_the_top_left_is_filled_with_the_mean(tiny, image):
    # Window (0, 0, 3, 3): centre (2, 2), box (-2, -2, 6, 6), scale 8/9 per pixel:
    # the first round(2 * 8/9) = 2 rows and columns are outside the image; the clipped box
    # (0, 0, 6, 6) gives round(7 * 8/9) = 6 output pixels from the slice [0:6, 0:6].
    detector = Detector(*tiny[:2], context_pad=2, **SETTINGS)
    crop = detector.crop(image, np.array([0, 0, 3, 3]))
    image_mean = MEAN[[2, 1, 0]] / 255.0         # the mean undone: channels un-swapped, raw scale divided
    expected = np.tile(image_mean, (8, 8, 1))
    expected[2:8, 2:8] = image[0:6, 0:6]
    np.testing.assert_allclose(crop, expected, rtol=1e-6)
    # so the padding is exactly zero in the net's input
    padded = detector.transformer.preprocess("data", crop)
    np.testing.assert_allclose(padded[:, :2, :], 0, atol=1e-5)
    np.testing.assert_allclose(padded[:, :, :2], 0, atol=1e-5)


def test_context_crop_past_the_bottom_right(tiny, image):
    # Window (7, 9, 9, 11): half sizes 1.5, centre (8.5, 10.5), box round(5.5, 7.5, 11.5, 13.5)
    # = (6, 8, 12, 14) (half to even), 7 pixels a side, scale 8/7; clipped to (6, 8, 10, 12):
    # round(5 * 8/7) = 6 output pixels from the 4 x 4 slice [6:10, 8:12], at the top left.
    detector = Detector(*tiny[:2], context_pad=2)
    crop = detector.crop(image, np.array([7, 9, 9, 11]))
    expected = np.zeros((8, 8, 3), np.float32)      # no mean: zeros outside
    expected[0:6, 0:6] = io.resize_image(image[6:10, 8:12], (6, 6))
    np.testing.assert_allclose(crop, expected, rtol=1e-6)


def test_context_scale_of_a_non_square_input(tmp_path):
    # pycaffe scales both axes by the width ("assumes square"); each axis uses its own size here.
    # Input 6 x 10, pad 1: scales 6/4 and 10/8. Window (2, 2, 5, 5): centre (4, 4), half sizes 2,
    # box round(1, 1.5, 7, 6.5) = (1, 2, 7, 6), 7 x 5 pixels by pycaffe's count: round(7 * 6/7) = 6
    # rows and round(5 * 10/5) = 10 columns from the slice [1:7, 2:6].
    deploy = tmp_path / "wide.prototxt"
    deploy.write_text(DEPLOY.replace("dim: 8 dim: 8", "dim: 6 dim: 10"))
    detector = Detector(str(deploy), None, context_pad=1)
    image = np.random.default_rng(5).uniform(0, 1, (12, 14, 3)).astype(np.float32)
    np.testing.assert_allclose(detector.crop(image, np.array([2, 2, 5, 5])),
                               io.resize_image(image[1:7, 2:6], (6, 10)), rtol=1e-6)


def test_crop_mean_from_a_mean_image(tiny):
    mean = np.random.default_rng(1).uniform(0, 255, (3, 8, 8))
    detector = Detector(*tiny[:2], mean=mean, raw_scale=255.0, channel_swap=(1, 2, 0), context_pad=1)
    np.testing.assert_allclose(detector.crop_mean, mean.transpose(1, 2, 0)[:, :, [2, 0, 1]] / 255.0, rtol=1e-6)
    detector.configure_crop(None)
    assert detector.context_pad is None


def write_png(path, pixels):
    from PIL import Image
    Image.fromarray(pixels).save(path)
    return str(path)


def test_detect_windows_matches_a_direct_forward(tiny, tmp_path):
    deploy, weights, net = tiny
    rng = np.random.default_rng(2)
    first = write_png(tmp_path / "a.png", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    second = write_png(tmp_path / "b.png", rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))
    windows = [(first, np.array([[0, 0, 8, 8], [2, 4, 12, 16], [3, 1, 6, 9]])), (second, np.array([[1, 1, 9, 9]]))]
    detector = Detector(deploy, weights, **SETTINGS)
    detections = detector.detect_windows(windows)

    crops = []
    for filename, boxes in windows:
        pixels = io.load_image(filename)
        for ymin, xmin, ymax, xmax in boxes:
            crop = io.resize_image(pixels[ymin:ymax, xmin:xmax], (8, 8))[:, :, [2, 1, 0]]
            crops.append(((crop * 255.0 - MEAN) * 0.5).transpose(2, 0, 1))
    crops += [np.zeros_like(crops[0])] * 2
    direct = np.concatenate([net.forward(data=np.stack(crops[i:i + 3]))["prob"].copy() for i in (0, 3)])

    assert [d["filename"] for d in detections] == [first] * 3 + [second]
    assert all(set(d) == {"window", "prediction", "filename"} for d in detections)
    np.testing.assert_array_equal(detections[1]["window"], [2, 4, 12, 16])
    np.testing.assert_allclose(np.stack([d["prediction"] for d in detections]), direct[:4], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([d["prediction"].sum() for d in detections], 1, rtol=1e-5)
    assert detector.detect_windows([(first, [])]) == []


def test_detect_windows_with_context_pad(tiny, tmp_path):
    deploy, weights, net = tiny
    path = write_png(tmp_path / "c.png", np.random.default_rng(3).integers(0, 256, (10, 12, 3), dtype=np.uint8))
    detector = Detector(deploy, weights, context_pad=2, **SETTINGS)
    detections = detector.detect_windows(iter([(path, [np.array([0, 0, 3, 3])])]))   # any iterable, read once
    crop = detector.crop(io.load_image(path), np.array([0, 0, 3, 3]))
    data = np.stack([detector.transformer.preprocess("data", crop)] * 3)
    np.testing.assert_allclose(detections[0]["prediction"], net.forward(data=data)["prob"][0], rtol=1e-4, atol=1e-6)


def test_bad_windows_and_context(tiny, image):
    detector = Detector(*tiny[:2], context_pad=2)
    with pytest.raises(MinicaffeError, match="selects no pixels of the 10 x 12 image"):
        detector.crop(image, np.array([4, 4, 4, 8]))
    with pytest.raises(MinicaffeError, match="selects no pixels"):
        detector.crop(image, np.array([-1, 0, 4, 4]))
    with pytest.raises(MinicaffeError, match="four whole pixel coordinates"):
        detector.crop(image, np.array([0.5, 0, 4, 4]))
    with pytest.raises(MinicaffeError, match="image has 1 channels but the net input 'data' has 3"):
        detector.crop(image[:, :, :1], np.array([0, 0, 4, 4]))
    with pytest.raises(MinicaffeError, match="context_pad 4 must be positive and less than half"):
        detector.configure_crop(4)


def test_selective_search_missing_names_the_package(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "selective_search_ijcv_with_python", None)    # import fails
    detector = Detector(*tiny[:2])
    with pytest.raises(SelectiveSearchMissing, match="needs the 'selective_search_ijcv_with_python' package"):
        detector.detect_selective_search(["a.jpg"])
    with pytest.raises(ImportError):                  # what pycaffe code may catch
        detector.detect_selective_search(["a.jpg"])


def test_selective_search_windows_are_detected(tiny, tmp_path, monkeypatch):
    write_png(tmp_path / "d.png", np.random.default_rng(4).integers(0, 256, (10, 12, 3), dtype=np.uint8))
    calls = []

    def get_windows(image_fnames, cmd):
        calls.append((image_fnames, cmd))
        return [np.array([[0, 0, 5, 5], [2, 2, 9, 11]])]

    module = types.ModuleType("selective_search_ijcv_with_python")
    module.get_windows = get_windows
    monkeypatch.setitem(sys.modules, "selective_search_ijcv_with_python", module)
    monkeypatch.chdir(tmp_path)
    detections = Detector(*tiny[:2]).detect_selective_search(["d.png"])
    path = os.path.abspath("d.png")
    assert calls == [([path], "selective_search_rcnn")]
    assert [d["filename"] for d in detections] == [path, path]
    np.testing.assert_array_equal(detections[1]["window"], [2, 2, 9, 11])
