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
    ("Convolution", "num_output: 2", (3, 4)),                                     # no spatial axes
])
def test_1x1(kind, options, shape):
    layer, _, _ = compare_devices(conv_text(options, kind), [data(*shape)], propagate_down=[True])
    expected = "im2row" if "stride: 2" in options else "1x1"
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
