"""MemoryData with set_input_arrays, and WindowData with R-CNN window files."""

import warnings

import numpy as np
import pytest

import minicaffe
from minicaffe.data.common import DataError
from minicaffe.errors import GraphError, MinicaffeError, MinicaffeWarning
from minicaffe.io import write_binaryproto

from .helpers import bytes_pixels, rgb_to_bgr_chw, write_image, write_text


# ---------------------------------------------------------------- MemoryData

def memory_net(tmp_path, transform=""):
    return write_text(tmp_path / "net.prototxt", f'''
layer {{ name: "mem" type: "MemoryData" top: "data" top: "label"
  memory_data_param {{ batch_size: 2 channels: 1 height: 2 width: 2 }} {transform} }}
''')


def test_memory_data_batches_cycle_without_transform(tmp_path):
    net = minicaffe.Net(memory_net(tmp_path, "transform_param { scale: 2 mean_value: 1 }"), minicaffe.TRAIN)
    assert net.blobs["data"].shape == (2, 1, 2, 2) and net.blobs["label"].shape == (2,)
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    labels = np.array([[[[7]]], [[[8]]], [[[9]]], [[[10]]]], dtype=np.float32)   # pycaffe's N x 1 x 1 x 1
    with pytest.warns(MinicaffeWarning, match="does not apply transform_param"):
        net.set_input_arrays(data, labels)
    for rows in ([0, 1], [2, 3], [0, 1]):
        out = net.forward()
        np.testing.assert_array_equal(out["data"], data[rows])       # untransformed, as Caffe
        np.testing.assert_array_equal(out["label"], labels[rows])      # Caffe: N x 1 x 1 x 1 after Forward
    assert net.blobs["label"].shape == (2, 1, 1, 1)
    assert net.layers[0].state() == {"position": 2}
    net.layers[0].restore({"position": 0})
    np.testing.assert_array_equal(net.forward()["data"], data[[0, 1]])


def test_memory_data_errors(tmp_path):
    net = minicaffe.Net(memory_net(tmp_path), minicaffe.TEST)
    with pytest.raises(DataError, match=r"layer 'mem': MemoryData has no arrays: call net.set_input_arrays"):
        net.forward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"number of rows \(3\) must be a positive multiple of batch_size 2"):
            net.set_input_arrays(np.zeros((3, 1, 2, 2)), np.zeros(3))
        with pytest.raises(DataError, match=r"data must be N x 1 x 2 x 2 \(memory_data_param\), got shape \(2, 2, 2, 2\)"):
            net.set_input_arrays(np.zeros((2, 2, 2, 2)), np.zeros(2))
        with pytest.raises(DataError, match="data has 2 rows but labels has 4"):
            net.set_input_arrays(np.zeros((2, 1, 2, 2)), np.zeros(4))
    plain = write_text(tmp_path / "plain.prototxt",
                       'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n')
    with pytest.raises(MinicaffeError, match="set_input_arrays needs a MemoryData layer"):
        minicaffe.Net(plain, minicaffe.TEST).set_input_arrays(np.zeros((2, 1, 2, 2)), np.zeros(2))
    bad = write_text(tmp_path / "bad.prototxt", 'layer { name: "mem" type: "MemoryData" top: "d" top: "l" '
                     "memory_data_param { batch_size: 2 channels: 1 height: 2 } }\n")
    with pytest.raises(GraphError, match="must all be positive"):
        minicaffe.Net(bad, minicaffe.TEST)


# ---------------------------------------------------------------- WindowData

IMAGE = bytes_pixels((10, 12, 3), 30)         # 10 rows, 12 columns, RGB


def window_files(tmp_path, windows):
    write_image(tmp_path / "scene.png", IMAGE)
    lines = ["# 0", "scene.png", "3", "10", "12", str(len(windows))] + [" ".join(map(str, w)) for w in windows]
    return write_text(tmp_path / "windows.txt", "\n".join(lines) + "\n")


def window_net(tmp_path, extra="", transform="crop_size: 4", batch=4, fg_fraction=0.5):
    return write_text(tmp_path / "net.prototxt", f'''
layer {{ name: "windows" type: "WindowData" top: "data" top: "label"
  window_data_param {{ source: "{tmp_path / 'windows.txt'}" root_folder: "{tmp_path}/" batch_size: {batch}
                       fg_fraction: {fg_fraction} {extra} }}
  transform_param {{ {transform} }} }}
''')


FOREGROUND = (3, 0.9, 2, 3, 5, 6)      # class, overlap, x1 y1 x2 y2: a 4 x 4 window
BACKGROUND = (1, 0.1, 6, 1, 9, 4)      # overlap below bg_threshold: background, label 0
DROPPED = (2, 0.4, 0, 0, 1, 1)         # between bg_threshold 0.3 and fg_threshold 0.5: not used


def test_window_data_samples_background_then_foreground(tmp_path):
    window_files(tmp_path, [FOREGROUND, BACKGROUND, DROPPED])
    minicaffe.set_random_seed(2)
    net = minicaffe.Net(window_net(tmp_path, extra="scale: 0.5 bg_threshold: 0.3",
                                   transform="crop_size: 4 mean_value: 3"),
                        minicaffe.TRAIN)
    assert net.blobs["data"].shape == (4, 3, 4, 4) and net.blobs["label"].shape == (4,)
    out = net.forward()
    np.testing.assert_array_equal(out["label"], [0, 0, 3, 3])
    bgr = rgb_to_bgr_chw(IMAGE).astype(np.float32)
    foreground = (bgr[:, 3:7, 2:6] - 3) * 0.5           # a window of crop_size is cut out unscaled
    background = (bgr[:, 1:5, 6:10] - 3) * 0.5
    for n in range(2):
        np.testing.assert_array_equal(out["data"][n], background)
        np.testing.assert_array_equal(out["data"][n + 2], foreground)


def test_window_data_mirror_mean_file_and_reproducible(tmp_path):
    window_files(tmp_path, [FOREGROUND, BACKGROUND])
    mean = np.random.default_rng(0).uniform(0, 50, (1, 3, 6, 6)).astype(np.float32)
    write_binaryproto(mean, tmp_path / "mean.binaryproto")
    transform = f'crop_size: 4 mirror: true mean_file: "{tmp_path / "mean.binaryproto"}"'
    minicaffe.set_random_seed(8)
    net = minicaffe.Net(window_net(tmp_path, transform=transform, batch=8), minicaffe.TRAIN)
    batches = [net.forward()["data"].copy() for _ in range(2)]
    bgr = rgb_to_bgr_chw(IMAGE).astype(np.float32)
    centred = mean[0][:, 1:5, 1:5]                      # (6 - 4) // 2: the mean is centred on the crop
    flips = set()
    for batch in batches:
        for n in range(8):
            window = bgr[:, 1:5, 6:10] if n < 4 else bgr[:, 3:7, 2:6]
            plain = np.array_equal(batch[n], window - centred)
            flipped = np.array_equal(batch[n], window[:, :, ::-1] - centred)
            assert plain != flipped
            flips.add(flipped)
    assert flips == {False, True}
    minicaffe.set_random_seed(8)
    again = minicaffe.Net(window_net(tmp_path, transform=transform, batch=8), minicaffe.TRAIN)
    for batch in batches:
        np.testing.assert_array_equal(again.forward()["data"], batch)


def test_window_context_pad_leaves_zeros_outside_the_image(tmp_path):
    window_files(tmp_path, [(3, 0.9, 0, 0, 3, 3), BACKGROUND])
    net = minicaffe.Net(window_net(tmp_path, extra="context_pad: 1", fg_fraction=1, transform="crop_size: 6",
                                   batch=1), minicaffe.TEST)
    out = net.forward()["data"][0]
    # Grown by 1.5x about its centre, the window starts 1 pixel above and left of the image:
    # that pixel, at scale 6/7, is the first row and column of the output, left at 0.
    assert np.all(out[:, 0, :] == 0) and np.all(out[:, :, 0] == 0)
    assert np.all(out[:, 1:, 1:] > 0)


def test_window_data_errors(tmp_path):
    window_files(tmp_path, [FOREGROUND])
    net = minicaffe.Net(window_net(tmp_path), minicaffe.TEST)
    with pytest.raises(DataError, match="has no background windows to sample"):
        net.forward()
    with pytest.raises(GraphError, match="needs transform_param.crop_size"):
        minicaffe.Net(window_net(tmp_path, transform="mirror: true"), minicaffe.TEST)
    write_text(tmp_path / "windows.txt", "# 0\nscene.png\n3\n10\n12\n")
    with pytest.raises(DataError, match="ends early: expected the number of windows of image entry 0"):
        minicaffe.Net(window_net(tmp_path), minicaffe.TEST)
    window_files(tmp_path, [(0, 0.9, 0, 0, 3, 3)])
    with pytest.raises(DataError, match="foreground window of image scene.png has class 0"):
        minicaffe.Net(window_net(tmp_path), minicaffe.TEST)
    window_files(tmp_path, [(1, 0.9, 9, 0, 12, 3), BACKGROUND])
    net = minicaffe.Net(window_net(tmp_path, fg_fraction=1), minicaffe.TEST)
    with pytest.raises(DataError, match=r"window \(9, 0, 12, 3\) does not fit in image '.*scene.png' \(12 x 10\)"):
        net.forward()
