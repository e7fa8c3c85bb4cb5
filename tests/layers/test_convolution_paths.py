"""Convolution by shape: each path (1x1, direct, im2row) gives the im2row path's numbers, forward and backward.

Every geometry runs twice, once on the path chosen for it and once with the
im2row path forced, with the same weights and top diff: the top, the bottom
diff, and the weight and bias diffs must agree (float32, so each kernel
compiles once for it). Gradients of the new paths are checked by finite
differences in float64 on tiny shapes. :mod:`tests.layers.test_convolution`
checks the chosen paths against direct-loop numpy references.
"""

import numpy as np
import pytest

from minicaffe.errors import ShapeError
from minicaffe.layers import conv_1x1, conv_direct
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

rng = np.random.default_rng(11)


def conv_text(params, kind="Convolution"):
    return (f'name: "conv" type: "{kind}" convolution_param {{ {params} '
            'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 } }')


def set_up(kind, params, arrays, path=None, dtype=np.float32, weights=None):
    layer = layer_from_text(conv_text(params, kind), dtype=dtype)
    layer.force_path = path
    bottom, top = make_blobs(*arrays, dtype=dtype), empty_blobs(len(arrays), dtype=dtype)
    layer.set_up(bottom, top)
    for blob, values in zip(layer.blobs, weights or ()):
        blob.data[...] = values
    return layer, bottom, top


def run(kind, params, arrays, path=None, weights=None, top_diffs=None, propagate_down=True,
        param_propagate_down=(True, True)):
    """Forward and Backward on the path given (None: the automatic choice); the layer, bottoms, tops."""
    layer, bottom, top = set_up(kind, params, arrays, path, weights=weights)
    layer.run_forward(bottom, top)
    for blob, diff in zip(top, top_diffs or [rng.standard_normal(blob.shape) for blob in top]):
        blob.diff[...] = diff
    for blob in bottom:
        blob.diff[...] = 7.0                       # must be overwritten, or left alone when not asked for
    layer.param_propagate_down = list(param_propagate_down)[:len(layer.blobs)]
    layer.run_backward(top, [propagate_down] * len(bottom), bottom)
    return layer, bottom, top


def assert_same_as_im2row(kind, params, arrays, path=None, **options):
    layer, bottom, top = run(kind, params, arrays, path=path, **options)
    reference, ref_bottom, ref_top = run(kind, params, arrays, path="im2row",
                                         weights=[blob.data for blob in layer.blobs],
                                         top_diffs=[blob.diff for blob in top], **options)
    assert reference.conv_path == "im2row"
    for ours, theirs in zip(top, ref_top):
        np.testing.assert_allclose(ours.data, theirs.data, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(bottom, ref_bottom):
        np.testing.assert_allclose(ours.diff, theirs.diff, rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(layer.blobs, reference.blobs):
        np.testing.assert_allclose(ours.diff, theirs.diff, rtol=1e-4, atol=2e-4)
    return layer, bottom


# ---------------------------------------------------------------- each geometry against im2row

GEOMETRIES = [
    # kind, params, bottom shape, the path chosen
    ("Convolution", "num_output: 4 kernel_size: 3 pad: 1 group: 4", (2, 4, 5, 6), "direct"),       # depthwise
    ("Convolution", "num_output: 3 kernel_size: 3 stride: 2 pad: 1 group: 3", (2, 3, 7, 6), "direct"),
    ("Convolution", "num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 2 pad_w: 1 dilation: 2 "
                    "group: 2", (1, 2, 6, 7), "direct"),                                          # rectangular
    ("Convolution", "num_output: 6 kernel_size: 3 pad: 1 group: 3", (2, 3, 5, 5), "direct"),       # multiplier 2
    ("Convolution", "num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2", (2, 4, 6, 5), "direct"),  # 2 per group
    ("Convolution", "num_output: 2 kernel_size: 2 pad: 3 group: 2", (1, 2, 3, 3), "direct"),       # rows of padding
    ("Convolution", "num_output: 2 kernel_size: 3 stride: 3 pad: 2 group: 2", (2, 2, 8, 7), "direct"),    # stride 3
    ("Convolution", "num_output: 2 kernel_size: 2 pad: 1 bias_term: false", (2, 3, 4, 5), "direct"),  # one group
    ("Convolution", "num_output: 3 kernel_size: 3 pad: 2 dilation: 2 group: 3", (2, 3, 9), "direct"),  # 1-D
    ("Convolution", "num_output: 3 kernel_size: 1 group: 3", (2, 3, 4, 4), "direct"),              # 1x1 depthwise
    ("Convolution", "num_output: 3 kernel_size: 1 stride: 2", (2, 2, 5, 4), "1x1"),                # strided 1x1
    ("Convolution", "num_output: 4 kernel_h: 1 kernel_w: 1 stride_h: 2 stride_w: 3 group: 2", (2, 4, 5, 7), "1x1"),
    ("Convolution", "num_output: 5 kernel_size: 1 stride: 2", (2, 3, 2, 3, 5), "1x1"),             # strided 3-D
    ("Deconvolution", "num_output: 4 kernel_size: 1 stride: 2", (2, 3, 3, 2), "1x1"),              # strided 1x1
    ("Convolution", "num_output: 5 kernel_size: 1", (3, 4, 3, 5), "1x1"),
    ("Convolution", "num_output: 6 kernel_size: 1 group: 2", (2, 4, 3, 3), "1x1"),
    ("Convolution", "num_output: 3 kernel_size: 1 dilation: 2 bias_term: false", (2, 2, 4, 3), "1x1"),
    ("Convolution", "num_output: 9 kernel_size: 1", (2, 2, 2, 3, 2), "1x1"),                       # 3-D
    ("Convolution", "num_output: 4 group: 2 kernel_size: 1", (3, 4), "1x1"),                       # no spatial axes
    ("Convolution", "num_output: 9 kernel_size: 3 pad: 1 group: 1", (2, 3, 4, 4), "im2row"),
    ("Deconvolution", "num_output: 3 kernel_size: 4 stride: 2 pad: 1 group: 3", (2, 3, 3, 4), "direct"),
    ("Deconvolution", "num_output: 4 kernel_size: 3 stride: 2 dilation: 2 group: 2", (1, 4, 3, 3), "direct"),
    ("Deconvolution", "num_output: 2 kernel_size: 4 stride: 3 pad: 2 group: 2", (1, 2, 3, 2), "direct"),
    ("Deconvolution", "num_output: 4 kernel_size: 1", (2, 3, 3, 3), "1x1"),
    ("Deconvolution", "num_output: 6 kernel_size: 1 group: 2 bias_term: false", (2, 4, 2, 3), "1x1"),
]


@pytest.mark.parametrize("kind, params, shape, expected", GEOMETRIES)
def test_each_path_matches_im2row(kind, params, shape, expected):
    layer, _ = assert_same_as_im2row(kind, params, [rng.standard_normal(shape)])
    assert layer.conv_path == expected


@pytest.mark.parametrize("kind, params, shape", [
    ("Convolution", "num_output: 9 kernel_size: 3 pad: 1 stride: 2", (2, 3, 5, 6)),      # im2row by shape
    ("Deconvolution", "num_output: 5 kernel_size: 3 stride: 2 group: 1", (1, 6, 3, 3)),
])
def test_the_direct_kernels_compute_any_grouping(kind, params, shape):
    """Forced where the automatic choice takes im2row (many channels per group)."""
    assert set_up(kind, params, [np.zeros(shape)])[0].conv_path == "im2row"
    layer, _ = assert_same_as_im2row(kind, params, [rng.standard_normal(shape)], path="direct")
    assert layer.conv_path == "direct"


@pytest.mark.parametrize("kind, params, shape", [
    ("Convolution", "num_output: 3 kernel_size: 3 pad: 1 group: 3", (2, 3, 4, 5)),
    ("Convolution", "num_output: 4 kernel_size: 1", (2, 3, 3, 3)),
    ("Deconvolution", "num_output: 3 kernel_size: 2 stride: 2 group: 3", (2, 3, 3, 3)),
    ("Deconvolution", "num_output: 4 kernel_size: 1", (2, 3, 3, 3)),
])
def test_no_weight_gradient_and_no_bottom_gradient(kind, params, shape):
    """propagate_down false leaves the bottom diff alone; lr_mult 0 on the weight (param_propagate_down false)
    leaves its diff at zero while the bias still learns."""
    x = rng.standard_normal(shape)
    layer, bottom = assert_same_as_im2row(kind, params, [x], propagate_down=False,
                                          param_propagate_down=(False, True))
    assert layer.conv_path != "im2row"
    assert np.all(bottom[0].diff == 7.0)
    assert np.all(layer.blobs[0].diff == 0) and np.any(layer.blobs[1].diff != 0)
    layer, bottom = assert_same_as_im2row(kind, params, [x], param_propagate_down=(False, False))
    assert np.all(layer.blobs[0].diff == 0) and np.all(layer.blobs[1].diff == 0)


@pytest.mark.parametrize("params", ["num_output: 3 kernel_size: 3 pad: 1 group: 3", "num_output: 4 kernel_size: 1"])
def test_two_bottoms_accumulate_parameter_gradients(params):
    a, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((1, 3, 4, 4)).repeat(2, axis=0)
    assert_same_as_im2row("Convolution", params, [a, b])


def test_1x1_weight_gradient_in_chunks_of_images(monkeypatch):
    """The stacked per-image products are summed chunk by chunk when they exceed PRODUCT_BUDGET."""
    monkeypatch.setattr(conv_1x1, "PRODUCT_BUDGET", 1)
    layer, _ = assert_same_as_im2row("Convolution", "num_output: 4 kernel_size: 1", [rng.standard_normal((3, 2, 3, 3))])
    assert layer.conv_path == "1x1"


def test_a_new_shape_gets_a_new_path():
    """reshape (batch and image size changed) rebuilds the path for the new shape."""
    layer, bottom, top = set_up("Convolution", "num_output: 3 kernel_size: 3 pad: 1 group: 3",
                                [rng.standard_normal((1, 3, 4, 4))])
    first = layer.path
    x = rng.standard_normal((3, 3, 6, 5))
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    layer.run_forward(bottom, top)
    assert layer.path is not first and layer.conv_path == "direct"
    reference, ref_bottom, ref_top = set_up("Convolution", "num_output: 3 kernel_size: 3 pad: 1 group: 3", [x],
                                            path="im2row", weights=[blob.data for blob in layer.blobs])
    reference.run_forward(ref_bottom, ref_top)
    np.testing.assert_allclose(top[0].data, ref_top[0].data, rtol=1e-5, atol=1e-5)
    path = layer.path
    layer.run_forward(bottom, top)                       # same shapes: no reshape, same path object
    assert layer.path is path


# ---------------------------------------------------------------- forcing a path

def test_forcing_a_path(monkeypatch):
    depthwise = "num_output: 2 kernel_size: 3 group: 2"
    x = np.zeros((1, 2, 4, 4))
    assert set_up("Convolution", depthwise, [x])[0].conv_path == "direct"
    monkeypatch.setenv("MINICAFFE_CONV_PATH", "im2row")
    assert set_up("Convolution", depthwise, [x])[0].conv_path == "im2row"
    assert set_up("Convolution", depthwise, [x], path="auto")[0].conv_path == "direct"   # the attribute wins
    monkeypatch.setenv("MINICAFFE_CONV_PATH", "1x1")                     # where it cannot compute: im2row
    assert set_up("Convolution", depthwise, [x])[0].conv_path == "im2row"
    assert set_up("Convolution", "num_output: 2 kernel_size: 1", [x])[0].conv_path == "1x1"
    monkeypatch.setenv("MINICAFFE_CONV_PATH", "direct")
    assert set_up("Convolution", "num_output: 2 kernel_size: 1", [np.zeros((1, 2, 2, 2, 2))])[0].conv_path == "im2row"
    monkeypatch.setenv("MINICAFFE_CONV_PATH", "winograd")
    with pytest.raises(ShapeError, match=r"layer 'conv': unknown convolution path 'winograd'.*known: auto, 1x1, "
                                         r"direct, im2row"):
        set_up("Convolution", depthwise, [x])


# ---------------------------------------------------------------- gradient checks (float64)

@pytest.mark.parametrize("kind, params, shape", [
    ("Convolution", "num_output: 2 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 dilation: 2 group: 2", (2, 2, 5, 6)),
    ("Convolution", "num_output: 4 kernel_size: 2 pad: 1 group: 2", (1, 4, 3, 4)),
    ("Convolution", "num_output: 3 kernel_size: 1", (2, 2, 3, 2)),
    ("Convolution", "num_output: 4 kernel_size: 1 group: 2", (1, 4, 2, 3)),
    ("Deconvolution", "num_output: 2 kernel_size: 3 stride: 2 pad: 1 group: 2", (2, 2, 3, 2)),
    ("Deconvolution", "num_output: 3 kernel_size: 1", (1, 2, 2, 3)),
    ("Convolution", "num_output: 3 kernel_size: 1 stride: 2", (2, 2, 5, 4)),             # strided 1x1
    ("Deconvolution", "num_output: 2 kernel_h: 1 kernel_w: 1 stride_h: 2 stride_w: 3", (1, 2, 2, 3)),
])
def test_gradients_of_the_new_paths(kind, params, shape):
    x = rng.standard_normal(shape)
    layer = layer_from_text(conv_text(params, kind))
    bottom, top = make_blobs(x), empty_blobs(1)
    layer.set_up(bottom, top)
    assert layer.conv_path in ("direct", "1x1")
    checked = GradientChecker(stepsize=1e-3, threshold=1e-6).check_layer(layer, bottom, top, set_up=False)
    assert checked == x.size + sum(blob.count for blob in layer.blobs)


def test_direct_results_do_not_depend_on_how_the_tasks_are_split(monkeypatch):
    """Each task writes its own outputs, summed in a fixed order: the tasks cut in uneven chunks run last to
    first (as threads might run them) give the same bits as one call."""
    def in_chunks(kernel, count, work, *args):
        bounds = sorted({0, count, count // 3, count // 3 + 1, count - 1} & set(range(count + 1)))
        for first, stop in reversed(list(zip(bounds, bounds[1:]))):
            kernel(first, stop, *args)

    params = "num_output: 8 kernel_size: 3 pad: 1 stride: 2 group: 4"
    x, top_diff = rng.standard_normal((3, 4, 6, 5)), rng.standard_normal((3, 8, 3, 3))
    whole, whole_bottom, whole_top = run("Convolution", params, [x], top_diffs=[top_diff])
    monkeypatch.setattr(conv_direct, "_tasks", in_chunks)
    split, split_bottom, split_top = run("Convolution", params, [x], top_diffs=[top_diff],
                                         weights=[blob.data for blob in whole.blobs])
    assert split.conv_path == whole.conv_path == "direct"
    assert np.array_equal(split_top[0].data, whole_top[0].data)
    assert np.array_equal(split_bottom[0].diff, whole_bottom[0].diff)
    assert all(np.array_equal(a.diff, b.diff) for a, b in zip(split.blobs, whole.blobs))
