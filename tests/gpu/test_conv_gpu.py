"""Convolution, Deconvolution and Im2col on the GPU (numba.cuda kernels + device GEMMs) against their CPU
kernels, and gradient checks in GPU mode. Tiny shapes: the simulator runs a few thousand threads a second."""

import numpy as np
import pytest

from minicaffe import fillers, mode
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import compare_devices

rng = np.random.default_rng(25)


class _DeviceGradientChecker(GradientChecker):
    """GradientChecker whose perturbations reach the device.

    The checker writes its perturbations into the host array it fetched once; after a GPU Forward read the
    blob its SyncedArray is "synced", so those writes would not reach the device (every numeric gradient 0).
    Asking for ``blob.data`` before each Forward marks the host copy as the one to trust.
    """

    def _forward(self, layer, bottom, top):
        for blob in list(bottom) + list(layer.blobs):
            blob.data
        super()._forward(layer, bottom, top)


def gradient_check_gpu(text, bottom_arrays, num_tops=1, seed=7, check_bottom=None, **checker):
    """tests/gpu/helpers.py's gradient_check_gpu with the checker above (float64, GPU mode)."""
    fillers.set_random_seed(seed)
    layer = layer_from_text(text, dtype=np.float64, num_tops=num_tops)
    assert getattr(layer, "backward_gpu", None) is not None, f"{layer.type} has no backward_gpu"
    bottom = make_blobs(*bottom_arrays, dtype=np.float64)
    top = empty_blobs(num_tops, dtype=np.float64)
    checker.setdefault("stepsize", 1e-3)
    checker.setdefault("threshold", 1e-6)
    mode.set_mode_gpu()
    try:
        return _DeviceGradientChecker(**checker).check_layer(layer, bottom, top, check_bottom=check_bottom)
    finally:
        mode.set_mode_cpu()


def data(*shape):
    return rng.standard_normal(shape)


def im2col_text(options):
    return f'name: "im2col" type: "Im2col" convolution_param {{ {options} }}'


@pytest.mark.parametrize("options, shape", [
    ("kernel_size: 3 pad: 1 stride: 2", (1, 2, 4, 5)),
    ("kernel_h: 2 kernel_w: 3 dilation: 2 pad_w: 1", (2, 1, 5, 5)),
    ("kernel_size: 2 pad: 1 force_nd_im2col: true", (1, 2, 3, 3)),
    ("kernel_size: 2 stride: 2", (1, 1, 3, 2, 4)),
])
def test_im2col_layer(options, shape):
    compare_devices(im2col_text(options), [data(*shape)], propagate_down=[True])


def test_im2col_gradient():
    gradient_check_gpu(im2col_text("kernel_size: 2 pad: 1 stride: 2"), [data(1, 2, 3, 3)])


FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def conv_text(options, kind="Convolution", bottoms=1):
    names = "".join(f' bottom: "x{i}" top: "y{i}"' for i in range(bottoms))
    return f'name: "conv" type: "{kind}"{names} convolution_param {{ {options} {FILLERS} }}'


@pytest.mark.parametrize("options, shape", [
    ("num_output: 3 kernel_size: 3 pad: 1", (1, 2, 4, 4)),                      # padded
    ("num_output: 2 kernel_size: 2 group: 2", (1, 4, 3, 3)),                    # grouped
    ("num_output: 3 kernel_size: 2 dilation: 2 bias_term: false", (1, 2, 5, 4)),  # dilated, no bias
    ("num_output: 2 kernel_h: 3 kernel_w: 2 stride: 2 pad_h: 1", (2, 2, 5, 4)),   # strided, two images
    ("num_output: 2 kernel_size: 3 stride: 2 pad: 1", (2, 3, 5)),               # 1-D
    ("num_output: 2 kernel_size: 2", (1, 1, 3, 3, 3)),                           # 3-D (N-D kernels)
    ("num_output: 2 kernel_size: 2 axis: 2", (2, 1, 2, 3, 3)),                   # channel axis 2
])
def test_convolution(options, shape):
    compare_devices(conv_text(options), [data(*shape)], propagate_down=[True])


def test_convolution_two_bottoms_accumulate_parameter_diffs():
    compare_devices(conv_text("num_output: 2 kernel_size: 2 pad: 1", bottoms=2),
                    [data(1, 2, 3, 3), data(1, 2, 3, 3)], num_tops=2, propagate_down=[True, False])


def test_convolution_in_chunks_of_images(monkeypatch):
    from minicaffe.layers import conv_im2row
    monkeypatch.setattr(conv_im2row, "GPU_COLUMN_BUDGET", 1)
    layer, _, _ = compare_devices(conv_text("num_output: 2 kernel_size: 2 pad: 1 group: 2"), [data(3, 4, 2, 2)],
                                  propagate_down=[True], passes=2)
    assert layer.gpu_conv_path().chunk == 1


@pytest.mark.parametrize("options, shape", [
    ("num_output: 3 kernel_size: 3 stride: 2 pad: 1", (1, 2, 3, 3)),
    ("num_output: 4 kernel_size: 2 group: 2 dilation: 2", (2, 2, 2, 3)),
])
def test_deconvolution(options, shape):
    compare_devices(conv_text(options, "Deconvolution"), [data(*shape)], propagate_down=[True])


def test_convolution_gradient_grouped_and_padded():
    gradient_check_gpu(conv_text("num_output: 2 kernel_size: 2 pad: 1 group: 2"), [data(1, 4, 2, 2)])


def test_deconvolution_gradient():
    gradient_check_gpu(conv_text("num_output: 2 kernel_size: 2 stride: 2 pad: 1", "Deconvolution"),
                       [data(1, 2, 2, 2)])


@pytest.mark.parametrize("kind, options, shape", [
    ("Convolution", "num_output: 3 kernel_size: 1", (2, 2, 2, 3)),
    ("Convolution", "num_output: 4 kernel_size: 1 group: 2 dilation: 2", (1, 4, 3, 2)),
    ("Convolution", "num_output: 2 kernel_size: 1 stride: 2", (1, 2, 3, 3)),     # strided: im2col
    ("Deconvolution", "num_output: 3 kernel_size: 1", (2, 2, 2, 2)),
    ("Convolution", "num_output: 2", (2, 4)),                                     # no spatial axes
    ("Convolution", "num_output: 2 kernel_size: 1", (3, 2, 2, 1)),                # 3 images: im2col's chunks
])
def test_1x1(kind, options, shape):
    layer, _, _ = compare_devices(conv_text(options, kind), [data(*shape)], propagate_down=[True])
    expected = "im2row" if "stride: 2" in options or shape[0] > 2 else "1x1"
    assert layer.gpu_conv_path().name == expected


@pytest.mark.parametrize("kind, options, shape", [
    ("Convolution", "num_output: 2 kernel_size: 3 pad: 1 group: 2", (2, 2, 3, 4)),
    ("Convolution", "num_output: 4 kernel_size: 2 stride: 2 dilation: 2 pad: 1 group: 2", (1, 2, 4, 5)),  # x2
    ("Convolution", "num_output: 3 kernel_size: 1 group: 3 bias_term: false", (1, 3, 2, 2)),
    ("Convolution", "num_output: 2 kernel_size: 3 stride: 2 group: 2", (1, 2, 7)),               # 1-D
    ("Deconvolution", "num_output: 2 kernel_size: 3 stride: 2 pad: 1 group: 2", (1, 2, 2, 3)),
])
def test_depthwise(kind, options, shape):
    layer, _, _ = compare_devices(conv_text(options, kind), [data(*shape)], propagate_down=[True])
    assert layer.gpu_conv_path().name == "direct"


@pytest.mark.parametrize("path", ["im2row", "direct"])
def test_forced_gpu_path(monkeypatch, path):
    monkeypatch.setenv("MINICAFFE_CONV_PATH", path)
    layer, _, _ = compare_devices(conv_text("num_output: 2 kernel_size: 2 group: 2"), [data(1, 2, 3, 3)],
                                  propagate_down=[True])
    assert layer.gpu_conv_path().name == path


def test_depthwise_gradient():
    gradient_check_gpu(conv_text("num_output: 2 kernel_size: 2 stride: 2 pad: 1 group: 2"), [data(1, 2, 3, 3)])


def forward_backward(text, x, dy, use_gpu, in_place):
    """(top data, bottom diff) after a Forward and a Backward of top diff ``dy``, top = bottom with ``in_place``."""
    fillers.set_random_seed(7)
    layer = layer_from_text(text, dtype=np.float32)
    bottom = make_blobs(x, dtype=np.float32)
    top = bottom if in_place else empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        layer.run_forward(bottom, top)
        out = top[0].data.copy()
        top[0].diff[...] = dy
        layer.run_backward(top, [True], bottom)
        return out, bottom[0].diff.copy()
    finally:
        mode.set_mode_cpu()


@pytest.mark.parametrize("kind, options", [
    ("Convolution", "num_output: 2 kernel_size: 3 pad: 1 group: 2"),             # direct
    ("Deconvolution", "num_output: 2 kernel_size: 3 pad: 1 group: 2"),           # direct
    ("Convolution", "num_output: 2 kernel_size: 3 pad: 1"),                      # im2col
    ("Convolution", "num_output: 2 kernel_size: 1"),                             # 1x1
])
def test_in_place(kind, options):
    # Issue 25: a top computed in place is the memory the kernels read; the direct kernels' threads read
    # neighbours other threads had already overwritten (Forward: the input; Backward: the top diff).
    x, dy = data(2, 2, 4, 4), data(2, 2, 4, 4)
    text = conv_text(options, kind)
    expected_out, expected_dx = forward_backward(text, x, dy, False, False)
    out, dx = forward_backward(text, x, dy, True, True)
    np.testing.assert_allclose(out, expected_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-5, atol=1e-6)


def parameter_diffs_after_backwards(text, arrays, use_gpu, backwards):
    """The layer's parameter diffs after ``backwards`` Backwards of one Forward (diffs zeroed once)."""
    fillers.set_random_seed(7)
    layer = layer_from_text(text, dtype=np.float32)
    bottom, top = make_blobs(*arrays, dtype=np.float32), empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    for blob in layer.blobs:
        blob.diff[...] = 0
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        layer.run_forward(bottom, top)
        top[0].diff[...] = np.random.default_rng(5).standard_normal(top[0].shape)
        for _ in range(backwards):
            layer.run_backward(top, [False], bottom)
    finally:
        mode.set_mode_cpu()
    return [blob.diff.copy() for blob in layer.blobs]


@pytest.mark.parametrize("text, shape", [
    (conv_text("num_output: 2 kernel_size: 2 pad: 1"), (1, 2, 2, 2)),              # im2col
    (conv_text("num_output: 2 kernel_size: 1"), (1, 2, 2, 2)),                     # 1x1
    (conv_text("num_output: 2 kernel_size: 2 group: 2"), (1, 2, 2, 2)),            # direct
    (conv_text("num_output: 2 kernel_size: 2", "Deconvolution"), (1, 2, 2, 2)),
])
def test_parameter_diffs_accumulate_on_the_gpu(text, shape):
    arrays = [data(*shape)]
    once = parameter_diffs_after_backwards(text, arrays, False, 1)
    for gpu_diff, cpu_diff in zip(parameter_diffs_after_backwards(text, arrays, True, 2), once):
        np.testing.assert_allclose(gpu_diff, 2 * cpu_diff, rtol=1e-5, atol=1e-6)


NET = '''force_backward: true
layer { name: "x" type: "Input" top: "x" top: "label" input_param { shape { dim: 2 dim: 1 dim: 4 dim: 4 }
  shape { dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv" convolution_param { num_output: 2 kernel_size: 3
  weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "score" inner_product_param { num_output: 3
  weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
'''


def test_a_net_of_convolution_and_inner_product_runs_on_the_device():
    import minicaffe as caffe
    from minicaffe.blob import SyncedArray
    from minicaffe.proto.text import parse_net
    x, labels = data(2, 1, 4, 4), np.array([0, 2])
    results = []
    for use_gpu in (False, True):
        caffe.set_random_seed(3)
        net = caffe.Net(parse_net(NET), caffe.TRAIN)
        (caffe.set_mode_gpu if use_gpu else caffe.set_mode_cpu)()
        try:
            net.blobs["x"].data[...] = x
            net.blobs["label"].data[...] = labels
            before = dict(SyncedArray.copies)
            loss = net.forward_backward()
            if use_gpu:         # the iteration ran on the device: only the loss scalar came back to the host
                assert SyncedArray.copies["to_host"] == before["to_host"] + 1
            results.append([loss, net.blobs["x"].diff.copy()]
                           + [blob.diff.copy() for name in ("conv", "ip") for blob in net.params[name]])
        finally:
            caffe.set_mode_cpu()
    for gpu_value, cpu_value in zip(results[1], results[0]):
        np.testing.assert_allclose(gpu_value, cpu_value, rtol=1e-5, atol=1e-6)
