"""SSD fork layers (weiliu89/caffe, branch ssd): Normalize, Permute, PriorBox.

Forward is checked against OpenCV's dnn module (an independent implementation
that reads the same prototxt and caffemodel) and against numpy transcriptions
of the fork's formulas; Backward by finite differences in float64.
"""

import math

import cv2
import numpy as np
import pytest

from minicaffe import threads
from minicaffe.errors import GraphError, ShapeError
from minicaffe.graph import TEST
from minicaffe.net import Net
from minicaffe.proto import caffe_pb2
from minicaffe.registry import layer_class
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs, run_layer

rng = np.random.default_rng(89)
SSD = "SSD (weiliu89/caffe, branch ssd)"


@pytest.fixture
def budget():
    before = threads.get_num_threads()
    yield
    threads.set_num_threads(before)


def input_layer(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def both_forward(tmp_path, text, inputs, outputs, params=None):
    """Run ``text`` in minicaffe and in OpenCV dnn; ``params``: {layer: [arrays]} saved in a caffemodel.

    Returns {output: (minicaffe's, OpenCV's)}.
    """
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    net = Net(str(prototxt), TEST)
    for layer, arrays in (params or {}).items():
        for blob, array in zip(net.params[layer], arrays):
            blob.data[...] = array
    weights = tmp_path / "net.caffemodel"
    net.save(str(weights))
    # OpenCV cannot make a Mat of a 0-axis blob (a channel-shared scale): give it shape (1) there.
    model = caffe_pb2.NetParameter()
    model.ParseFromString(weights.read_bytes())
    for layer in model.layer:
        for blob in layer.blobs:
            if not blob.shape.dim:
                blob.shape.dim.append(1)
    weights.write_bytes(model.SerializeToString())
    mine = net.forward(**{name: np.asarray(value, np.float32) for name, value in inputs.items()})
    theirs = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    for name, value in inputs.items():
        theirs.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
    results = theirs.forward(list(outputs))
    return {name: (mine[name].copy(), result) for name, result in zip(outputs, results)}


def test_the_layers_name_their_fork():
    for name in ("Normalize", "Permute", "PriorBox"):
        assert layer_class(name).fork == SSD
    assert not layer_class("PriorBox").has_backward


# ============================================================================ Normalize

def normalize_text(param, name="norm"):
    return f'name: "{name}" type: "Normalize" norm_param {{ {param} }}'


def normalize_reference(x, scale, across, eps=1e-10):
    """The fork's Forward: x / sqrt(sum of squares + eps) per image or per position, times the scale."""
    x = np.asarray(x, np.float64)
    groups = x.reshape(x.shape[0], x.shape[1], -1)
    axes = (1, 2) if across else (1,)
    norm = np.sqrt((groups ** 2).sum(axis=axes, keepdims=True) + eps)
    scale = np.asarray(scale, np.float64).reshape(-1)
    return (groups / norm * scale.reshape(1, -1, 1)).reshape(x.shape)


def fork_bottom_gradient(x, dy, scale, across, eps=1e-10):
    """The fork's Backward to the bottom, transcribed: the whole gradient scaled by s_i (see the module)."""
    x = np.asarray(x, np.float64).reshape(x.shape[0], x.shape[1], -1)
    dy = np.asarray(dy, np.float64).reshape(x.shape)
    axes = (1, 2) if across else (1,)
    norm = np.sqrt((x ** 2).sum(axis=axes, keepdims=True) + eps)
    dot = (x * dy).sum(axis=axes, keepdims=True)
    return np.asarray(scale).reshape(1, -1, 1) * (dy - x * dot / norm ** 2) / norm


MODES = [(across, shared) for across in (True, False) for shared in (True, False)]


@pytest.mark.parametrize("across, shared", [mode for mode in MODES if mode != (True, False)])
def test_normalize_matches_opencv(tmp_path, across, shared):
    # OpenCV refuses across_spatial with a scale per channel (it asserts one scale per plane of
    # C x H x W); that mode is checked against the numpy reference below.
    shape = (2, 5, 3, 4)
    text = (input_layer("data", shape) + 'layer { name: "norm" type: "Normalize" bottom: "data" top: "norm" '
            f'norm_param {{ across_spatial: {str(across).lower()} channel_shared: {str(shared).lower()} }} }}\n')
    scale = rng.uniform(0.5, 3.0, () if shared else (shape[1],))
    x = rng.standard_normal(shape)
    mine, theirs = both_forward(tmp_path, text, {"data": x}, ["norm"], {"norm": [scale]})["norm"]
    assert mine.dtype == np.float32 and mine.shape == shape
    np.testing.assert_allclose(mine, theirs, rtol=2e-6, atol=3e-7)
    np.testing.assert_allclose(mine, normalize_reference(x.astype(np.float32), scale, across), rtol=2e-6, atol=3e-7)


@pytest.mark.parametrize("across, shared", MODES)
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 4), (2, 3, 5)])
def test_normalize_matches_the_forks_formula(across, shared, shape):
    eps = 0.25      # large enough to show where it enters: inside the square root
    layer = layer_from_text(normalize_text(f"across_spatial: {str(across).lower()} channel_shared: "
                                           f"{str(shared).lower()} eps: {eps}"), dtype=np.float32)
    x = rng.standard_normal(shape)
    bottom, top = make_blobs(x, dtype=np.float32), empty_blobs(1, np.float32)
    layer.set_up(bottom, top)
    assert layer.blobs[0].shape == (() if shared else (shape[1],))
    layer.blobs[0].data[...] = rng.uniform(0.5, 3.0, layer.blobs[0].shape)
    layer.run_forward(bottom, top)
    expected = normalize_reference(x.astype(np.float32), layer.blobs[0].data, across, eps)
    np.testing.assert_allclose(top[0].data, expected, rtol=2e-6, atol=3e-7)


def test_normalize_scale_defaults_to_one_and_takes_a_filler():
    _, top = run_layer(layer_from_text(normalize_text("across_spatial: false")), [np.full((1, 3, 1, 1), 2.0)])
    np.testing.assert_allclose(top[0].data, np.full((1, 3, 1, 1), 1 / math.sqrt(3)))
    layer = layer_from_text(normalize_text("channel_shared: false scale_filler { type: 'constant' value: 20 }"))
    run_layer(layer, [rng.standard_normal((1, 3, 2, 2))])
    np.testing.assert_array_equal(layer.blobs[0].data, np.full(3, 20.0))
    # eps keeps an all-zero group finite
    _, top = run_layer(layer_from_text(normalize_text("across_spatial: false")), [np.zeros((1, 2, 2))])
    np.testing.assert_array_equal(top[0].data, 0.0)


@pytest.mark.parametrize("across, shared", MODES)
def test_normalize_gradient(across, shared):
    layer = layer_from_text(normalize_text(f"across_spatial: {str(across).lower()} "
                                           f"channel_shared: {str(shared).lower()} eps: 0.01"))
    x = rng.standard_normal((2, 3, 2, 3))
    bottom, top = make_blobs(x), empty_blobs(1)
    layer.set_up(bottom, top)
    layer.blobs[0].data[...] = rng.uniform(0.5, 3.0, layer.blobs[0].shape)     # unequal per-channel scales
    checker = GradientChecker(stepsize=1e-4, threshold=1e-7)
    checked = checker.check_layer(layer, bottom, top, set_up=False)
    assert checked == x.size + layer.blobs[0].count
    assert [result.part for result in checker.results] == ["bottom 0", "param 0"]


@pytest.mark.parametrize("across", [True, False])
def test_normalize_bottom_gradient_is_the_forks_when_the_scales_are_equal(across):
    x, dy = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3, 2, 2))
    for scale, same in ((np.full(3, 2.5), True), (np.array([0.5, 1.0, 3.0]), False)):
        layer = layer_from_text(normalize_text(f"across_spatial: {str(across).lower()} channel_shared: false"))
        bottom, top = make_blobs(x), empty_blobs(1)
        layer.set_up(bottom, top)
        layer.blobs[0].data[...] = scale
        layer.run_forward(bottom, top)
        top[0].diff[...] = dy
        layer.run_backward(top, [True], bottom)
        fork = fork_bottom_gradient(x, dy, scale, across).reshape(x.shape)
        # The fork scales its whole gradient by s_i; with unequal scales that is not the derivative.
        assert np.allclose(bottom[0].diff, fork, rtol=1e-12, atol=1e-12) == same


@pytest.mark.parametrize("across", [True, False])
def test_normalize_in_place_keeps_the_input_for_backward(across):
    text = normalize_text(f"across_spatial: {str(across).lower()} channel_shared: false")
    x, dy = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3, 2, 2))
    scale = np.array([0.5, 2.0, 1.5])
    results = []
    for in_place in (False, True):
        layer = layer_from_text(text)
        bottom = make_blobs(x)
        top = bottom if in_place else empty_blobs(1)
        layer.set_up(bottom, top)
        layer.blobs[0].data[...] = scale
        for _ in range(2):      # a second Forward in place must not reuse the first one's copy
            bottom[0].data[...] = x
            layer.run_forward(bottom, top)
        output = top[0].data.copy()
        top[0].diff[...] = dy
        layer.run_backward(top, [True], bottom)
        results.append((output, bottom[0].diff.copy(), layer.blobs[0].diff.copy()))
    for separate, shared in zip(*results):
        np.testing.assert_allclose(shared, separate, rtol=1e-13, atol=1e-14)


def test_normalize_splits_the_work_on_threads(monkeypatch, budget):
    monkeypatch.setattr(threads, "CHUNK_ELEMENTS", 4)
    threads.set_num_threads(3)
    x, dy = rng.standard_normal((3, 4, 5, 3)), rng.standard_normal((3, 4, 5, 3))
    for across in (True, False):
        layer = layer_from_text(normalize_text(f"across_spatial: {str(across).lower()} channel_shared: false"))
        bottom, top = make_blobs(x), empty_blobs(1)
        layer.set_up(bottom, top)
        layer.blobs[0].data[...] = [0.5, 1.0, 2.0, 3.0]
        layer.run_forward(bottom, top)
        np.testing.assert_allclose(top[0].data, normalize_reference(x, layer.blobs[0].data, across), rtol=1e-13)
        top[0].diff[...] = dy
        layer.run_backward(top, [True], bottom)
        threaded = bottom[0].diff.copy(), layer.blobs[0].diff.copy()
        threads.set_num_threads(1)
        layer.blobs[0].diff[...] = 0
        layer.run_backward(top, [True], bottom)
        np.testing.assert_array_equal(threaded[1], layer.blobs[0].diff)    # the scale's sums: thread-independent
        np.testing.assert_allclose(threaded[0], bottom[0].diff, rtol=1e-13, atol=1e-15)
        threads.set_num_threads(3)


def test_normalize_shape_errors():
    with pytest.raises(ShapeError, match="layer 'norm'.*at least 2 axes"):
        run_layer(layer_from_text(normalize_text("")), [np.ones(4)])
    layer = layer_from_text(normalize_text("channel_shared: false"))
    bottom, top = run_layer(layer, [np.ones((1, 3, 2))])
    bottom[0].reshape((1, 4, 2))
    with pytest.raises(ShapeError, match=r"layer 'norm'.*3 channels.*\(None, 3\), got \(1, 4, 2\)"):
        layer.run_forward(bottom, top)
    shared = layer_from_text(normalize_text("channel_shared: true"))
    bottom, top = run_layer(shared, [np.ones((1, 3, 2))])
    bottom[0].reshape((2, 5, 2))
    shared.run_forward(bottom, top)
    assert top[0].shape == (2, 5, 2)


# ============================================================================ Permute

def permute_text(order, name="perm"):
    return f'name: "{name}" type: "Permute" permute_param {{ {" ".join(f"order: {a}" for a in order)} }}'


@pytest.mark.parametrize("order", [(0, 2, 3, 1), (0, 3, 1, 2), (3, 2, 1, 0), (1, 0, 2, 3), (0, 1, 2, 3)])
def test_permute_matches_opencv(tmp_path, order):
    # OpenCV wants every axis in `order`; the fork's completion of a partial order is checked below.
    shape = (2, 3, 4, 5)
    text = (input_layer("data", shape) + 'layer { name: "perm" type: "Permute" bottom: "data" top: "perm" '
            f'permute_param {{ {" ".join(f"order: {a}" for a in order)} }} }}\n')
    x = rng.standard_normal(shape)
    mine, theirs = both_forward(tmp_path, text, {"data": x}, ["perm"])["perm"]
    np.testing.assert_array_equal(mine, x.astype(np.float32).transpose(order))
    np.testing.assert_array_equal(mine, theirs.reshape(mine.shape))


@pytest.mark.parametrize("order, full", [((1,), (1, 0, 2, 3)), ((2, 0), (2, 0, 1, 3)), ((3, 1, 2), (3, 1, 2, 0)),
                                         ((), (0, 1, 2, 3))])
def test_permute_appends_the_axes_left_out(order, full):
    x = rng.standard_normal((2, 3, 4, 5))
    layer = layer_from_text(permute_text(order), dtype=np.float32)
    _, top = run_layer(layer, [x])
    assert layer.order == full
    np.testing.assert_array_equal(top[0].data, x.astype(np.float32).transpose(full))


@pytest.mark.parametrize("order, shape", [((0, 2, 3, 1), (2, 3, 2, 3)), ((2, 0), (2, 3, 4)), ((1, 0), (3, 5))])
def test_permute_gradient(order, shape):
    layer = layer_from_text(permute_text(order))
    x = rng.standard_normal(shape)
    assert GradientChecker().check_layer(layer, make_blobs(x), empty_blobs(1)) == x.size


def test_permute_identity_shares_the_bottom():
    x = rng.standard_normal((2, 3, 4))
    for text in (permute_text(()), permute_text((0, 1))):
        layer = layer_from_text(text)
        bottom, top = run_layer(layer, [x])
        assert not layer.need_permute and top[0].shape == x.shape
        bottom[0].data[0, 0, 0] = 7.0
        assert top[0].data[0, 0, 0] == 7.0          # a view, not a copy
        top[0].diff[...] = 2.0
        layer.run_backward(top, [True], bottom)
        np.testing.assert_array_equal(bottom[0].diff, 2.0)
    # identity in place is a no-op, and allowed
    layer = layer_from_text(permute_text((0, 1, 2)))
    blob = make_blobs(x)
    layer.set_up(blob, blob)
    layer.run_forward(blob, blob)
    np.testing.assert_array_equal(blob[0].data, x)


@pytest.mark.parametrize("shape, order", [
    ((2, 5, 8, 9), (0, 2, 3, 1)),     # a batch of (5, 72) matrices transposed: tiles, 6 strips
    ((1, 70, 1, 3), (0, 2, 3, 1)),    # size-1 axes dropped: one (70, 3) matrix
    ((2, 5, 8, 9), (1, 0, 2, 3)),     # inner runs stay contiguous: numpy's copy, cut along axis 0
    ((3, 4, 5), (2, 1, 0)),
])
def test_permute_on_threads(monkeypatch, budget, shape, order):
    monkeypatch.setattr(threads, "CHUNK_ELEMENTS", 4)
    threads.set_num_threads(3)
    x = rng.standard_normal(shape)
    layer = layer_from_text(permute_text(order))
    bottom, top = run_layer(layer, [x])
    np.testing.assert_array_equal(top[0].data, x.transpose(order))
    dy = rng.standard_normal(top[0].shape)
    top[0].diff[...] = dy
    layer.run_backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, dy.transpose(np.argsort(order)))


def test_permute_errors():
    x = np.ones((2, 3, 4, 5))
    with pytest.raises(GraphError, match=r"layer 'perm'.*names axis 4, but the bottom has 4 axes"):
        run_layer(layer_from_text(permute_text((0, 4))), [x])
    with pytest.raises(GraphError, match="layer 'perm'.*names axis 2 twice"):
        run_layer(layer_from_text(permute_text((2, 1, 2))), [x])
    layer = layer_from_text(permute_text((0, 2, 3, 1)))
    blob = make_blobs(x)
    with pytest.raises(GraphError, match="layer 'perm'.*in-place"):
        layer.set_up(blob, blob)
    layer = layer_from_text(permute_text((0, 2, 3, 1)))
    bottom, top = run_layer(layer, [x])
    bottom[0].reshape((2, 3, 4))
    with pytest.raises(ShapeError, match=r"layer 'perm'.*4 axes.*expected \(2, 3, 4, 5\), got \(2, 3, 4\)"):
        layer.run_forward(bottom, top)


# ============================================================================ PriorBox

def prior_box_text(param, name="pb"):
    return f'name: "{name}" type: "PriorBox" prior_box_param {{ {param} }}'


def prior_box_reference(param, feature_hw, image_hw):
    """The fork's Forward_cpu, transcribed loop for loop (float32 where it uses float)."""
    f32 = np.float32
    ratios = [f32(1.0)]
    for ratio in param.get("aspect_ratio", []):
        ratio = f32(ratio)
        if all(abs(ratio - seen) >= 1e-6 for seen in ratios):
            ratios.append(ratio)
            if param.get("flip", True):
                ratios.append(f32(1.0 / ratio))
    img_h, img_w = param.get("img_hw", image_hw)
    height, width = feature_hw
    step_h, step_w = param.get("step_hw", (f32(img_h) / f32(height), f32(img_w) / f32(width)))
    offset = f32(param.get("offset", 0.5))
    boxes = []
    for h in range(height):
        for w in range(width):
            center_x = (f32(w) + offset) * f32(step_w)
            center_y = (f32(h) + offset) * f32(step_h)
            for s, min_value in enumerate(param["min_size"]):
                small = int(min_value)
                sizes = [(small, small)]
                if param.get("max_size"):
                    side = f32(math.sqrt(small * int(param["max_size"][s])))
                    sizes.append((side, side))
                for ratio in ratios:
                    if abs(ratio - 1.0) >= 1e-6:
                        sizes.append((f32(small * math.sqrt(ratio)), f32(small / math.sqrt(ratio))))
                for box_w, box_h in sizes:
                    boxes += [(center_x - box_w / 2.0) / img_w, (center_y - box_h / 2.0) / img_h,
                              (center_x + box_w / 2.0) / img_w, (center_y + box_h / 2.0) / img_h]
    boxes = np.array(boxes, dtype=np.float64)
    if param.get("clip", False):
        boxes = np.clip(boxes, 0.0, 1.0)
    variance = param.get("variance", [0.1])
    variances = np.tile(np.asarray(variance, np.float32), boxes.size // len(variance))
    return np.stack([boxes, variances]).astype(np.float32)[None]


def prior_box_param_text(param):
    fields = []
    for key in ("min_size", "max_size", "aspect_ratio", "variance"):
        fields += [f"{key}: {value}" for value in param.get(key, [])]
    for key in ("flip", "clip"):
        if key in param:
            fields.append(f"{key}: {str(param[key]).lower()}")
    if "offset" in param:
        fields.append(f"offset: {param['offset']}")
    if "step_hw" in param:
        fields.append(f"step_h: {param['step_hw'][0]} step_w: {param['step_hw'][1]}")
    if "img_hw" in param:
        fields.append(f"img_h: {param['img_hw'][0]} img_w: {param['img_hw'][1]}")
    return " ".join(fields)


# OpenCV needs `variance` (it has no default) and clips unless told `clip: false` (the fork's
# default): every case gives both. It ignores img_h/img_w, so none is given here.
OPENCV_CASES = {
    "one_size": dict(min_size=[10], clip=False, variance=[0.1]),
    "ratios_flip": dict(min_size=[10], max_size=[20], aspect_ratio=[2, 3], clip=False, variance=[0.2]),
    "several_sizes": dict(min_size=[8, 15], max_size=[12, 25], aspect_ratio=[2], clip=True,
                          variance=[0.1, 0.1, 0.2, 0.2]),
    "several_no_max": dict(min_size=[8, 15], aspect_ratio=[2, 3], flip=False, clip=False, variance=[0.1]),
    "duplicate_ratios": dict(min_size=[12], aspect_ratio=[2, 0.5, 1, 2], clip=True, variance=[0.1]),
    "step_offset": dict(min_size=[10], max_size=[30], aspect_ratio=[3], step_hw=(8, 6), offset=0.25,
                        clip=False, variance=[0.1, 0.2, 0.3, 0.4]),
}


@pytest.mark.parametrize("case", sorted(OPENCV_CASES))
def test_prior_box_matches_opencv(tmp_path, case):
    param = OPENCV_CASES[case]
    feature, image = (1, 2, 3, 4), (1, 3, 30, 50)
    text = (input_layer("feat", feature) + input_layer("img", image) +
            'layer { name: "pb" type: "PriorBox" bottom: "feat" bottom: "img" top: "pb" '
            f'prior_box_param {{ {prior_box_param_text(param)} }} }}\n')
    inputs = {"feat": rng.standard_normal(feature), "img": rng.standard_normal(image)}
    mine, theirs = both_forward(tmp_path, text, inputs, ["pb"])["pb"]
    assert mine.dtype == np.float32
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=3e-7)
    np.testing.assert_allclose(mine, prior_box_reference(param, (3, 4), (30, 50)), rtol=0, atol=3e-7)


REFERENCE_CASES = {
    "defaults": dict(min_size=[10]),        # clip false, variance 0.1, flip true, offset 0.5
    "truncated_sizes": dict(min_size=[10.7, 21.5], max_size=[20.9, 30.2], aspect_ratio=[2]),
    "image_size": dict(min_size=[16], max_size=[32], aspect_ratio=[2, 3], img_hw=(64, 80), clip=True),
    "everything": dict(min_size=[6, 12], max_size=[9, 20], aspect_ratio=[1.5, 2.5], flip=True, clip=True,
                       variance=[0.1, 0.1, 0.2, 0.2], step_hw=(7.5, 9), offset=0.3, img_hw=(40, 45)),
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_prior_box_matches_the_forks_formula(case):
    param = REFERENCE_CASES[case]
    layer = layer_from_text(prior_box_text(prior_box_param_text(param)), dtype=np.float32)
    _, top = run_layer(layer, [np.zeros((2, 4, 3, 5)), np.zeros((2, 3, 33, 41))])
    expected = prior_box_reference(param, (3, 5), (33, 41))
    assert top[0].shape == expected.shape == (1, 2, 3 * 5 * layer.num_priors * 4)
    np.testing.assert_allclose(top[0].data, expected, rtol=0, atol=3e-7)


def test_prior_box_order_and_count():
    layer = layer_from_text(prior_box_text("min_size: 10 min_size: 20 max_size: 15 max_size: 40 "
                                           "aspect_ratio: 2 aspect_ratio: 0.5 aspect_ratio: 3"))
    _, top = run_layer(layer, [np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 100, 100))])
    assert layer.num_priors == 2 * (1 + 4) + 2      # ratios [1, 2, 1/2, 3, 1/3] per min_size, plus the max boxes
    boxes = top[0].data[0, 0].reshape(-1, 4) * 100
    sizes = np.round(np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1), 4)
    root2, root3 = math.sqrt(2), math.sqrt(3)
    expected = [(10, 10), (math.sqrt(150), math.sqrt(150)), (10 * root2, 10 / root2), (10 / root2, 10 * root2),
                (10 * root3, 10 / root3), (10 / root3, 10 * root3),
                (20, 20), (math.sqrt(800), math.sqrt(800)), (20 * root2, 20 / root2), (20 / root2, 20 * root2),
                (20 * root3, 20 / root3), (20 / root3, 20 * root3)]
    np.testing.assert_allclose(sizes, expected, atol=1e-4)


def test_prior_box_follows_the_feature_map_and_has_no_backward():
    layer = layer_from_text(prior_box_text("min_size: 4 aspect_ratio: 2"))
    bottom, top = run_layer(layer, [np.zeros((1, 2, 2, 2)), np.zeros((1, 3, 16, 16))])
    assert top[0].shape == (1, 2, 2 * 2 * 3 * 4)
    bottom[0].reshape((1, 2, 4, 3))
    layer.run_forward(bottom, top)
    np.testing.assert_allclose(top[0].data, prior_box_reference(dict(min_size=[4], aspect_ratio=[2]), (4, 3),
                                                                (16, 16)), atol=3e-7)
    with pytest.raises(GraphError, match="layer 'pb'.*PriorBox has no Backward"):
        layer.run_backward(top, [True, False], bottom)


def test_prior_box_takes_one_bottom_when_the_image_size_is_given():
    layer = layer_from_text(prior_box_text("min_size: 8 img_size: 32"))
    _, top = run_layer(layer, [np.zeros((1, 1, 2, 2))])
    np.testing.assert_allclose(top[0].data, prior_box_reference(dict(min_size=[8], img_hw=(32, 32)), (2, 2),
                                                                (0, 0)), atol=3e-7)
    with pytest.raises(GraphError, match="layer 'pb'.*second bottom"):
        run_layer(layer_from_text(prior_box_text("min_size: 8")), [np.zeros((1, 1, 2, 2))])


@pytest.mark.parametrize("param, message", [
    ("", "at least one prior_box_param.min_size"),
    ("min_size: 0", "min_size must be positive"),
    ("min_size: 10 min_size: 20 max_size: 30", "give one max_size per min_size"),
    ("min_size: 10 max_size: 10", "max_size 10 must be greater than its min_size 10"),
    ("min_size: 10 aspect_ratio: -2", "aspect_ratio must be positive"),
    ("min_size: 10 variance: 0.1 variance: 0.2", "one value or four"),
    ("min_size: 10 variance: 0", "variance must be positive"),
    ("min_size: 10 img_size: 30 img_h: 30", "either img_size or img_h/img_w"),
    ("min_size: 10 img_h: 30", "img_h and img_w must both be given"),
    ("min_size: 10 step: 8 step_w: 8", "either step or step_h/step_w"),
    ("min_size: 10 step_h: 8 step_w: 0", "step_h and step_w must both be given"),
    ("min_size: 10 step: -1", "step must be positive"),
])
def test_prior_box_parameter_errors(param, message):
    with pytest.raises(GraphError, match=f"layer 'pb': .*{message}"):
        run_layer(layer_from_text(prior_box_text(param)), [np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 8, 8))])


def test_prior_box_shape_errors():
    with pytest.raises(ShapeError, match=r"layer 'pb'.*at most 4 axes.*got \(1, 1, 2, 2, 2\)"):
        run_layer(layer_from_text(prior_box_text("min_size: 2")), [np.zeros((1, 1, 2, 2, 2)), np.zeros((1, 1, 8, 8))])
    with pytest.raises(ShapeError, match="layer 'pb'.*at least one cell"):
        run_layer(layer_from_text(prior_box_text("min_size: 2")), [np.zeros((1, 1, 0, 2)), np.zeros((1, 1, 8, 8))])
    # a 3-D feature map has width 1, as Caffe's legacy accessors say
    _, top = run_layer(layer_from_text(prior_box_text("min_size: 2")), [np.zeros((1, 1, 3)), np.zeros((1, 1, 6, 4))])
    np.testing.assert_allclose(top[0].data, prior_box_reference(dict(min_size=[2]), (3, 1), (6, 4)), atol=3e-7)


# ============================================================================ together

def test_an_ssd_head_matches_opencv(tmp_path):
    """conv4_3_norm -> mbox_loc permuted and flattened, and its priors, as SSD300 wires them."""
    shape, image = (1, 4, 3, 3), (1, 3, 24, 24)
    text = (input_layer("conv", shape) + input_layer("data", image) + """
layer { name: "conv_norm" type: "Normalize" bottom: "conv" top: "conv_norm"
        norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 20 } } }
layer { name: "loc" type: "Convolution" bottom: "conv_norm" top: "loc"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" flatten_param { axis: 1 } }
layer { name: "priors" type: "PriorBox" bottom: "conv_norm" bottom: "data" top: "priors"
        prior_box_param { min_size: 6 aspect_ratio: 2 flip: false clip: false variance: 0.1 variance: 0.1
                          variance: 0.2 variance: 0.2 step: 8 offset: 0.5 } }
""")
    scale = rng.uniform(10, 30, shape[1])
    results = both_forward(tmp_path, text, {"conv": rng.standard_normal(shape), "data": np.zeros(image)},
                           ["loc_flat", "priors"], {"conv_norm": [scale]})
    mine, theirs = results["loc_flat"]
    assert mine.shape == (1, 3 * 3 * 8)
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)
    mine, theirs = results["priors"]
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=3e-7)
