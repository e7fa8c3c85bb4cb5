"""ShuffleChannel (ShuffleNet), ReLU6 (MobileNet-v2 ports), Axpy (SENet).

Forward against OpenCV's dnn module where it knows the type (ShuffleChannel, ReLU6
without a slope), against numpy references for all three; backward by finite
differences in float64 and by the forks' own formulas.
"""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from minicaffe import threads
from minicaffe.errors import GraphError, MinicaffeError, ShapeError
from minicaffe.graph import TEST
from minicaffe.net import Net
from minicaffe.registry import layer_class
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(164)


def layer(text, dtype=np.float64):
    return layer_from_text(f'name: "fork" {text}', dtype=dtype)


def input_layers(**shapes):
    return "".join(f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ '
                   + " ".join(f"dim: {d}" for d in shape) + " } } }\n"
                   for name, shape in shapes.items())


_OPENCV_SCRIPT = """
import sys
import cv2
import numpy as np
prototxt, inputs, output, result = sys.argv[1:]
net = cv2.dnn.readNetFromCaffe(prototxt)
net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
with np.load(inputs) as arrays:
    for name in arrays.files:
        net.setInput(arrays[name], name)
np.save(result, net.forward(output))
"""


def opencv_forward(tmp_path, text, inputs, output):
    """Run a net prototxt through OpenCV's Caffe importer; ``inputs``: name -> float32 array; ``output``: a
    layer's name (OpenCV finds outputs by layer, so the tests name each layer after its top).

    In a child process: OpenCV's wheel brings its own OpenBLAS, which would then show up in this
    process's threadpoolctl report, where the thread tests expect only numpy's.
    """
    if importlib.util.find_spec("cv2") is None:
        pytest.skip("OpenCV (cv2) is not installed")
    prototxt, arrays, result = tmp_path / "opencv.prototxt", tmp_path / "inputs.npz", tmp_path / "opencv.npy"
    prototxt.write_text(text)
    np.savez(arrays, **{name: np.ascontiguousarray(array, dtype=np.float32) for name, array in inputs.items()})
    run = subprocess.run([sys.executable, "-c", _OPENCV_SCRIPT, str(prototxt), str(arrays), output, str(result)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return np.load(result)


def minicaffe_forward(tmp_path, text, inputs, output):
    path = tmp_path / "minicaffe.prototxt"
    path.write_text(text)
    net = Net(str(path), TEST)
    return net.forward(**inputs)[output].copy()


@pytest.fixture
def budget():
    before = threads.get_num_threads()
    yield
    threads.set_num_threads(before)


def test_forks_are_named():
    assert layer_class("ShuffleChannel").fork == "ShuffleNet (farmingyard/ShuffleNet)"
    assert layer_class("Axpy").fork == "SENet (hujie-frank/SENet)"
    assert "ReLU6" in layer_class("ReLU6").fork
    for name in ("ShuffleChannel", "ReLU6", "Axpy"):
        doc = __import__(layer_class(name).__module__, fromlist=["_"]).__doc__
        assert doc.startswith(f"{name}: ")


# ====================================================================== ShuffleChannel

def shuffle_reference(x, group):
    """out[:, j * g + i] = x[:, i * (C / g) + j], element by element."""
    channels = x.shape[1]
    per_group = channels // group
    out = np.empty_like(x)
    for i in range(group):
        for j in range(per_group):
            out[:, j * group + i] = x[:, i * per_group + j]
    return out


def shuffle(group):
    return f'type: "ShuffleChannel" shuffle_channel_param {{ group: {group} }}'


@pytest.mark.parametrize("group", [1, 2, 3, 6])
def test_shuffle_channel_matches_opencv(tmp_path, group):
    x = rng.standard_normal((2, 6, 3, 4)).astype(np.float32)
    text = (input_layers(data=x.shape) + 'layer { name: "out" bottom: "data" top: "out" '
            + shuffle(group) + " }\n")
    ours = minicaffe_forward(tmp_path, text, {"data": x}, "out")
    np.testing.assert_array_equal(ours, opencv_forward(tmp_path, text, {"data": x}, "out"))
    np.testing.assert_array_equal(ours, shuffle_reference(x, group))


@pytest.mark.parametrize("shape, group", [((3, 12), 4), ((2, 8, 5), 2), ((1, 6, 2, 2, 3), 3), ((2, 4, 1, 1), 4)])
def test_shuffle_channel_numpy_reference(shape, group):
    x = rng.standard_normal(shape).astype(np.float32)
    _, top = run_layer(layer(shuffle(group), np.float32), [x])
    assert top[0].shape == x.shape
    np.testing.assert_array_equal(top[0].data, shuffle_reference(x, group))


def test_shuffle_channel_default_group_is_one():
    x = rng.standard_normal((2, 4, 3))
    _, top = run_layer(layer('type: "ShuffleChannel"'), [x])
    np.testing.assert_array_equal(top[0].data, x)


@pytest.mark.parametrize("group", [2, 3])
def test_shuffle_channel_gradient(group):
    x = rng.standard_normal((2, 6, 2, 3))
    checker = GradientChecker(stepsize=1e-4, threshold=1e-8)
    assert checker.check_layer(layer(shuffle(group)), make_blobs(x), empty_blobs(1)) == x.size


@pytest.mark.parametrize("group", [2, 3, 4])
def test_shuffle_channel_backward_is_the_inverse_permutation(group):
    x = rng.standard_normal((2, 12, 2, 2))
    shuffle_layer = layer(shuffle(group))
    bottom, top = run_layer(shuffle_layer, [x])
    dy = rng.standard_normal(x.shape)
    top[0].diff[...] = dy
    shuffle_layer.run_backward(top, [True], bottom)
    # Shuffling the diff back gives dy: the forward of the inverse (group C/g) undoes it.
    np.testing.assert_array_equal(shuffle_reference(bottom[0].diff, group), dy)
    np.testing.assert_array_equal(bottom[0].diff, shuffle_reference(dy, x.shape[1] // group))


def test_shuffle_channel_in_place():
    x = rng.standard_normal((2, 6, 3))
    shuffle_layer = layer(shuffle(3))
    blob = make_blobs(x)[0]
    shuffle_layer.set_up([blob], [blob])
    shuffle_layer.run_forward([blob], [blob])
    np.testing.assert_array_equal(blob.data, shuffle_reference(x, 3))
    dy = rng.standard_normal(x.shape)
    blob.diff[...] = dy
    shuffle_layer.run_backward([blob], [True], [blob])
    np.testing.assert_array_equal(blob.diff, shuffle_reference(dy, 2))


def test_shuffle_channel_propagate_down_false_leaves_the_diff():
    shuffle_layer = layer(shuffle(2))
    bottom, top = run_layer(shuffle_layer, [rng.standard_normal((1, 4, 2))])
    bottom[0].diff[...] = 7.0
    top[0].diff[...] = 1.0
    shuffle_layer.run_backward(top, [False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 7.0)


def test_shuffle_channel_on_threads(budget, monkeypatch):
    """Chunks that split samples and channel groups give the same permutation."""
    monkeypatch.setattr(threads, "CHUNK_ELEMENTS", 4)
    threads.set_num_threads(3)
    x = rng.standard_normal((3, 10, 2, 3)).astype(np.float32)
    shuffle_layer = layer(shuffle(5), np.float32)
    bottom, top = run_layer(shuffle_layer, [x])
    np.testing.assert_array_equal(top[0].data, shuffle_reference(x, 5))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    top[0].diff[...] = dy
    shuffle_layer.run_backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, shuffle_reference(dy, 2))


def test_shuffle_channel_group_zero_is_refused():
    with pytest.raises(GraphError, match="layer 'fork'.*group must be positive"):
        run_layer(layer(shuffle(0)), [np.zeros((1, 4, 2))])


def test_shuffle_channel_group_must_divide_the_channels():
    with pytest.raises(ShapeError, match=r"layer 'fork'.*group 4 does not divide the 6 channels.*\(2, 6, 3\)"):
        run_layer(layer(shuffle(4)), [np.zeros((2, 6, 3))])
    shuffle_layer = layer(shuffle(2))
    bottom, top = run_layer(shuffle_layer, [np.zeros((2, 6, 3))])
    bottom[0].reshape((2, 5, 3))                # a later Forward reshapes and checks again
    with pytest.raises(ShapeError, match="layer 'fork'"):
        shuffle_layer.run_forward(bottom, top)


def test_shuffle_channel_needs_a_channel_axis():
    with pytest.raises(ShapeError, match="layer 'fork'.*channel axis"):
        run_layer(layer(shuffle(1)), [np.zeros(4)])


# ====================================================================== ReLU6

def relu6_reference(x, slope=0.0):
    slope = float(np.float32(slope))
    return np.minimum(np.where(x > 0, x, slope * x), 6.0)


def relu6_factor(x, slope=0.0):
    """The fork's dx / dy: 1 on (0, 6), the slope at and below 0, 0 from 6 on."""
    slope = float(np.float32(slope))
    return np.where((x > 0) & (x < 6), 1.0, np.where(x <= 0, slope, 0.0))


def relu6(slope=None):
    return 'type: "ReLU6"' + ("" if slope is None else f" relu6_param {{ negative_slope: {slope} }}")


SPREAD = np.array([-50, -6.5, -3, -1, -0.25, 0, 0.25, 1, 3, 5.99, 6, 6.01, 7.5, 100], dtype=np.float32)


def test_relu6_matches_opencv(tmp_path):
    x = np.concatenate([SPREAD, rng.uniform(-4, 10, 2 * 3 * 5 * 4 - SPREAD.size)]).astype(np.float32)
    x = x.reshape(2, 3, 5, 4)
    text = input_layers(data=x.shape) + 'layer { name: "out" bottom: "data" top: "out" ' + relu6() + " }\n"
    ours = minicaffe_forward(tmp_path, text, {"data": x}, "out")
    np.testing.assert_array_equal(ours, opencv_forward(tmp_path, text, {"data": x}, "out"))
    np.testing.assert_array_equal(ours, relu6_reference(x))


def test_relu6_negative_slope_against_opencv(tmp_path):
    """OpenCV reads relu6_param but ignores negative_slope (its ReLU6 is a clip to [0, 6]): the two
    agree from 0 up, and below 0 minicaffe follows the fork (slope * x)."""
    x = np.concatenate([SPREAD, rng.uniform(-4, 10, 10)]).astype(np.float32).reshape(1, 2, 3, 4)
    text = (input_layers(data=x.shape) + 'layer { name: "out" bottom: "data" top: "out" ' + relu6(0.1) + " }\n")
    ours = minicaffe_forward(tmp_path, text, {"data": x}, "out")
    theirs = opencv_forward(tmp_path, text, {"data": x}, "out")
    np.testing.assert_array_equal(ours[x >= 0], theirs[x >= 0])
    np.testing.assert_allclose(ours, relu6_reference(x.astype(np.float64), 0.1), rtol=1e-6)


@pytest.mark.parametrize("slope", [None, 0.1, -0.2, 1.5])
def test_relu6_forward_float32(slope):
    x = np.concatenate([SPREAD, rng.uniform(-60, 10, 26)]).astype(np.float32).reshape(2, 4, 5)
    _, top = run_layer(layer(relu6(slope), np.float32), [x])
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, relu6_reference(x.astype(np.float64), slope or 0.0), rtol=1e-6)
    if slope == -0.2:                     # -0.2 * -50 = 10: the fork clamps the leaky side at 6 too
        assert top[0].data.reshape(-1)[0] == 6.0


def test_relu6_nan_stays_nan_and_negative_zero_keeps_its_sign():
    x = np.array([[np.nan, -0.0, 0.0, -2.0]], dtype=np.float32)
    _, top = run_layer(layer(relu6(), np.float32), [x])
    out = top[0].data[0]
    assert np.isnan(out[0])               # the fork's std::max/std::min pass NaN on (OpenCV gives 0)
    assert out[1] == 0 and np.signbit(out[1])
    assert out[2] == 0 and not np.signbit(out[2])
    assert out[3] == 0 and not np.signbit(out[3])


@pytest.mark.parametrize("slope", [None, 0.1, -0.3])
def test_relu6_backward_formula_at_the_kinks(slope):
    """The fork's convention: x == 0 takes the slope, x == 6 takes 0."""
    x = np.array([-2, -1e-3, 0, 1e-3, 3, 6 - 1e-3, 6, 6 + 1e-3, 9], dtype=np.float64).reshape(1, 9)
    relu = layer(relu6(slope))
    bottom, top = run_layer(relu, [x])
    dy = rng.uniform(0.5, 1.5, x.shape)
    top[0].diff[...] = dy
    relu.run_backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, dy * relu6_factor(x, slope or 0.0))


@pytest.mark.parametrize("slope", [None, 0.1, -0.2])
def test_relu6_gradient(slope):
    x = rng.uniform(-4, 9, (2, 3, 2, 2))
    x = np.where(np.abs(x) < 0.05, x + 0.1, x)            # away from the kinks at 0 and 6
    x = np.where(np.abs(x - 6) < 0.05, x + 0.1, x)
    checker = GradientChecker(stepsize=1e-5, threshold=1e-6)
    assert checker.check_layer(layer(relu6(slope)), make_blobs(x), empty_blobs(1)) == x.size


@pytest.mark.parametrize("slope", [None, 0.1])
def test_relu6_in_place(slope):
    x = rng.uniform(-4, 9, (2, 5))
    relu = layer(relu6(slope))
    blob = make_blobs(x)[0]
    relu.set_up([blob], [blob])
    relu.run_forward([blob], [blob])
    np.testing.assert_array_equal(blob.data, relu6_reference(x, slope or 0.0))
    dy = rng.standard_normal(x.shape)
    blob.diff[...] = dy
    relu.run_backward([blob], [True], [blob])
    # In place the fork tests the output; with a non-negative slope its sign and the 6 are the input's.
    np.testing.assert_array_equal(blob.diff, dy * relu6_factor(x, slope or 0.0))


def test_relu6_on_threads(budget, monkeypatch):
    monkeypatch.setattr(threads, "CHUNK_ELEMENTS", 4)
    threads.set_num_threads(3)
    x = rng.uniform(-4, 9, (3, 4, 5)).astype(np.float32)
    relu = layer(relu6(0.1), np.float32)
    bottom, top = run_layer(relu, [x])
    np.testing.assert_allclose(top[0].data, relu6_reference(x.astype(np.float64), 0.1), rtol=1e-6)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    top[0].diff[...] = dy
    relu.run_backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dy * relu6_factor(x, 0.1), rtol=1e-6)


def test_relu6_propagate_down_false_leaves_the_diff():
    relu = layer(relu6())
    bottom, top = run_layer(relu, [np.ones((2, 2))])
    bottom[0].diff[...] = 3.0
    top[0].diff[...] = 1.0
    relu.run_backward(top, [False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 3.0)


# ====================================================================== Axpy

def axpy_reference(a, x, y):
    return a.reshape(a.shape[0], a.shape[1], *([1] * (x.ndim - 2))) * x + y


AXPY = 'type: "Axpy"'


@pytest.mark.parametrize("a_shape", [(2, 3, 1, 1), (2, 3)])
def test_axpy_forward_float32(a_shape):
    a = rng.standard_normal(a_shape).astype(np.float32)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    _, top = run_layer(layer(AXPY, np.float32), [a, x, y])
    assert top[0].shape == x.shape and top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, axpy_reference(a.astype(np.float64), x, y), rtol=1e-6, atol=1e-6)


def test_axpy_in_a_net(tmp_path):
    """An SE block's tail as SENet's prototxts write it: Axpy(scale, branch, shortcut)."""
    a = rng.uniform(0, 1, (2, 4, 1, 1)).astype(np.float32)
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    y = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    text = (input_layers(scale=a.shape, branch=x.shape, shortcut=y.shape)
            + 'layer { name: "axpy" type: "Axpy" bottom: "scale" bottom: "branch" bottom: "shortcut" top: "out" }\n')
    out = minicaffe_forward(tmp_path, text, {"scale": a, "branch": x, "shortcut": y}, "out")
    np.testing.assert_allclose(out, axpy_reference(a.astype(np.float64), x, y), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("a_shape, x_shape", [((2, 3, 1, 1), (2, 3, 2, 3)), ((2, 3), (2, 3, 4)), ((3, 2), (3, 2))])
def test_axpy_gradient_to_all_bottoms(a_shape, x_shape):
    bottoms = make_blobs(rng.standard_normal(a_shape), rng.standard_normal(x_shape), rng.standard_normal(x_shape))
    checker = GradientChecker(stepsize=1e-4, threshold=1e-8)
    checked = checker.check_layer(layer(AXPY), bottoms, empty_blobs(1))
    assert checked == sum(blob.count for blob in bottoms)
    assert [result.part for result in checker.results] == ["bottom 0", "bottom 1", "bottom 2"]


def axpy_backward(a, x, y, dy, propagate_down, in_place=None, before=0.0):
    """Run Axpy Backward (``in_place``: index of the bottom that is also the top); returns the bottoms."""
    axpy = layer(AXPY)
    bottom = make_blobs(a, x, y)
    top = [bottom[in_place]] if in_place is not None else empty_blobs(1)
    axpy.set_up(bottom, top)
    axpy.run_forward(bottom, top)
    for blob in bottom:
        blob.diff[...] = before
    top[0].diff[...] = dy
    axpy.run_backward(top, propagate_down, bottom)
    return bottom, top


def test_axpy_backward_formulas():
    a, x, y = rng.standard_normal((2, 3, 1, 1)), rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3, 2, 2))
    dy = rng.standard_normal(x.shape)
    bottom, _ = axpy_backward(a, x, y, dy, [True, True, True])
    np.testing.assert_allclose(bottom[0].diff, (dy * x).sum(axis=(2, 3), keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(bottom[1].diff, a * dy, rtol=1e-12)
    np.testing.assert_array_equal(bottom[2].diff, dy)


@pytest.mark.parametrize("flags", [[True, False, False], [False, True, False], [False, False, True],
                                   [False, False, False]])
def test_axpy_propagate_down_false_leaves_the_diff(flags):
    """Unlike the fork, which zeroes x's diff when only a takes a gradient."""
    a, x, y = rng.standard_normal((2, 3)), rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    dy = rng.standard_normal(x.shape)
    bottom, _ = axpy_backward(a, x, y, dy, flags, before=5.0)
    expected = [(dy * x).sum(axis=2), a[:, :, None] * dy, dy]
    for flag, blob, want in zip(flags, bottom, expected):
        if flag:
            np.testing.assert_allclose(blob.diff, want, rtol=1e-12)
        else:
            np.testing.assert_array_equal(blob.diff, 5.0)


@pytest.mark.parametrize("in_place", [1, 2])
def test_axpy_in_place(in_place):
    """The top may be x (x is kept for a's gradient) or y."""
    a, x, y = rng.standard_normal((2, 3, 1, 1)), rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3, 2, 2))
    dy = rng.standard_normal(x.shape)
    bottom, top = axpy_backward(a, x, y, dy, [True, True, True], in_place=in_place)
    np.testing.assert_allclose(top[0].data, axpy_reference(a, x, y), rtol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, (dy * x).sum(axis=(2, 3), keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(bottom[1].diff, a * dy, rtol=1e-12)
    np.testing.assert_array_equal(bottom[2].diff, dy)     # in place with y: the top's diff, left as is


def test_axpy_on_threads(budget, monkeypatch):
    monkeypatch.setattr(threads, "CHUNK_ELEMENTS", 4)
    threads.set_num_threads(3)
    a, x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    dy = rng.standard_normal(x.shape)
    bottom, top = axpy_backward(a, x, y, dy, [True, True, True])
    np.testing.assert_allclose(top[0].data, axpy_reference(a, x, y), rtol=1e-12)
    np.testing.assert_allclose(bottom[0].diff, (dy * x).sum(axis=2), rtol=1e-12)
    np.testing.assert_allclose(bottom[1].diff, a[:, :, None] * dy, rtol=1e-12)


@pytest.mark.parametrize("a_shape, x_shape, y_shape, what", [
    ((2, 4, 1, 1), (2, 3, 2, 2), (2, 3, 2, 2), r"a \(bottom 0.*expected \(2, 3, 1, 1\), got \(2, 4, 1, 1\)"),
    ((1, 3), (2, 3, 2, 2), (2, 3, 2, 2), r"a \(bottom 0.*expected \(2, 3\), got \(1, 3\)"),
    ((2, 3, 2, 1), (2, 3, 2, 2), (2, 3, 2, 2), r"a \(bottom 0.*expected \(2, 3, 1, 1\), got \(2, 3, 2, 1\)"),
    ((2, 3, 1, 1), (2, 3, 2, 2), (2, 3, 2, 3), r"y \(bottom 2.*expected \(2, 3, 2, 2\), got \(2, 3, 2, 3\)"),
    ((2,), (2,), (2,), r"x \(bottom 1.*channel axis"),
])
def test_axpy_bad_shapes(a_shape, x_shape, y_shape, what):
    with pytest.raises(ShapeError, match="layer 'fork': .*" + what):
        run_layer(layer(AXPY), [np.zeros(a_shape), np.zeros(x_shape), np.zeros(y_shape)])


def test_axpy_refuses_a_as_its_top_and_counts_its_bottoms():
    axpy = layer(AXPY)
    bottom = make_blobs(np.zeros((2, 3, 1, 1)), np.zeros((2, 3, 1, 1)), np.zeros((2, 3, 1, 1)))
    with pytest.raises(GraphError, match="layer 'fork'.*bottom 0"):
        axpy.set_up(bottom, [bottom[0]])
    with pytest.raises(MinicaffeError, match="layer 'fork'.*3 bottom"):
        layer(AXPY).set_up(bottom[:2], empty_blobs(1))
