"""GPU kernels of Bias, Scale, BatchNorm, MVN, PReLU and Softmax against their CPU kernels, and gradient checks
in GPU mode (tiny shapes: the simulator runs every thread in Python)."""

import numpy as np
import pytest

from minicaffe import fillers, mode
from minicaffe.blob import SyncedArray
from minicaffe.testing.layers import empty_blobs, layer_from_text, make_blobs

from .helpers import compare_devices, gradient_check_gpu

rng = np.random.default_rng(25)


def normal(*shape):
    return rng.standard_normal(shape)


def _in_place(text, x, use_gpu, phase, dtype, top_diff):
    fillers.set_random_seed(7)
    layer = layer_from_text(text, dtype=dtype, phase=phase)
    blob = make_blobs(x, dtype=dtype)[0]
    layer.set_up([blob], [blob])
    for param in layer.blobs:
        param.diff[...] = 0
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        if use_gpu:
            for each in [blob] + list(layer.blobs):
                each.gpu_data
        layer.run_forward([blob], [blob])
        output = blob.data.copy()
        blob.diff[...] = top_diff
        before = dict(SyncedArray.copies)
        layer.run_backward([blob], [True], [blob])
        if use_gpu:
            assert SyncedArray.copies["to_host"] == before["to_host"]
    finally:
        mode.set_mode_cpu()
    return output, blob.diff.copy(), [param.diff.copy() for param in layer.blobs]


def compare_in_place(text, x, phase="TRAIN", dtype=np.float32, rtol=1e-5, atol=1e-6):
    """The layer computed in place (top = bottom) on both devices: outputs, input diffs and parameter diffs."""
    top_diff = rng.standard_normal(x.shape)
    cpu = _in_place(text, x, False, phase, dtype, top_diff)
    gpu = _in_place(text, x, True, phase, dtype, top_diff)
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=rtol, atol=atol, err_msg="top")
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=rtol, atol=atol, err_msg="diff")
    for gpu_param, cpu_param in zip(gpu[2], cpu[2]):
        np.testing.assert_allclose(gpu_param, cpu_param, rtol=rtol, atol=atol, err_msg="param diff")


# ---------------------------------------------------------------- Bias

@pytest.mark.parametrize("param, shapes", [
    ("filler { type: 'gaussian' }", [(2, 3, 4)]),
    ("axis: 1 num_axes: 2 filler { type: 'gaussian' }", [(2, 3, 2, 2)]),
    ("num_axes: 0 filler { type: 'gaussian' }", [(2, 3)]),
    ("axis: 0 num_axes: -1 filler { type: 'gaussian' }", [(2, 3)]),     # one value per element
    ("axis: 0", [(2, 3, 2), (2, 3)]),
    ("", [(2, 3, 2), ()]),
])
def test_bias(param, shapes):
    arrays = [normal(*shape) for shape in shapes]
    text = f'name: "b" type: "Bias" bias_param {{ {param} }}'
    compare_devices(text, arrays, propagate_down=[True] * len(arrays))


def test_bias_in_place_and_gradient():
    compare_in_place('name: "b" type: "Bias" bias_param { filler { type: "gaussian" } }', normal(2, 3, 2))
    gradient_check_gpu('name: "b" type: "Bias" bias_param { filler { type: "gaussian" } }', [normal(1, 2, 3)])
    gradient_check_gpu('name: "b" type: "Bias"', [normal(1, 2, 3), normal(2)])


# ---------------------------------------------------------------- Scale

@pytest.mark.parametrize("param, shapes", [
    ("filler { type: 'gaussian' }", [(2, 3, 4)]),
    ("filler { type: 'gaussian' } bias_term: true bias_filler { type: 'gaussian' }", [(2, 3, 2, 2)]),
    ("axis: 1 num_axes: 2 filler { type: 'gaussian' }", [(2, 3, 2, 2)]),
    ("num_axes: 0 filler { type: 'gaussian' } bias_term: true bias_filler { type: 'gaussian' }", [(2, 3)]),
    ("axis: -1 filler { type: 'gaussian' }", [(2, 3, 4)]),
    ("axis: 0 num_axes: -1 filler { type: 'gaussian' } bias_term: true", [(2, 3)]),
    ("axis: 0", [(2, 3, 2), (2, 3)]),
    ("axis: 0 bias_term: true bias_filler { type: 'gaussian' }", [(2, 3, 2), (2, 3)]),
    ("bias_term: true bias_filler { type: 'gaussian' }", [(2, 3, 2), ()]),
])
def test_scale(param, shapes):
    arrays = [normal(*shape) for shape in shapes]
    text = f'name: "s" type: "Scale" scale_param {{ {param} }}'
    compare_devices(text, arrays, propagate_down=[True] * len(arrays))


def test_scale_in_place_and_gradient():
    text = 'name: "s" type: "Scale" scale_param { filler { type: "gaussian" } bias_term: true }'
    compare_in_place(text, normal(2, 3, 2))
    gradient_check_gpu(text, [normal(1, 2, 3)])
    gradient_check_gpu('name: "s" type: "Scale" scale_param { bias_term: true }', [normal(1, 2, 3), normal(2)])


# ---------------------------------------------------------------- BatchNorm

def _batch_norm_run(text, x, use_gpu, phase, top_diff, switch_to_global):
    """TRAIN Forwards (updating the running statistics), then optionally Forward + Backward with the global
    statistics; returns the running statistics, the last top and the bottom diff."""
    fillers.set_random_seed(7)
    layer = layer_from_text(text, dtype=np.float32, phase=phase)
    bottom = make_blobs(x, dtype=np.float32)
    top = empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        layer.run_forward(bottom, top)
        bottom[0].data[...] = 2 * x + 1
        layer.run_forward(bottom, top)
        if switch_to_global:
            layer.use_global_stats = True
            layer.run_forward(bottom, top)
        top[0].diff[...] = top_diff
        layer.run_backward(top, [True], bottom)
    finally:
        mode.set_mode_cpu()
    return [blob.data.copy() for blob in layer.blobs] + [top[0].data.copy(), bottom[0].diff.copy()]


@pytest.mark.parametrize("param", ["", "moving_average_fraction: 0.5 eps: 0.01"])
@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (3, 2)])
def test_batch_norm(param, shape):
    x = normal(*shape)
    text = f'name: "bn" type: "BatchNorm" batch_norm_param {{ {param} }}'
    compare_devices(text, [x], propagate_down=[True], rtol=1e-4, atol=1e-5)
    compare_devices(text, [x], propagate_down=[True], phase="TEST")
    top_diff = normal(*shape)
    for switch in (False, True):
        cpu = _batch_norm_run(text, x, False, "TRAIN", top_diff, switch)
        gpu = _batch_norm_run(text, x, True, "TRAIN", top_diff, switch)
        for name, gpu_array, cpu_array in zip(["mean", "variance", "factor", "top", "diff"], gpu, cpu):
            np.testing.assert_allclose(gpu_array, cpu_array, rtol=1e-4, atol=1e-5, err_msg=name)


def test_batch_norm_in_place_and_gradient():
    compare_in_place('name: "bn" type: "BatchNorm"', normal(2, 3, 2), rtol=1e-4, atol=1e-5)
    compare_in_place('name: "bn" type: "BatchNorm" batch_norm_param { use_global_stats: true }', normal(2, 3, 2))
    gradient_check_gpu('name: "bn" type: "BatchNorm"', [normal(1, 2, 3, 3)], stepsize=1e-3, threshold=1e-3)
    gradient_check_gpu('name: "bn" type: "BatchNorm" batch_norm_param { use_global_stats: true eps: 0.5 }',
                       [normal(1, 2, 3, 3)])


# ---------------------------------------------------------------- MVN

@pytest.mark.parametrize("param", ["", "normalize_variance: false", "across_channels: true",
                                   "across_channels: true normalize_variance: false eps: 0.001"])
def test_mvn(param):
    text = f'name: "mvn" type: "MVN" mvn_param {{ {param} }}'
    compare_devices(text, [normal(2, 3, 2, 2)], propagate_down=[True], rtol=1e-4, atol=1e-5)
    compare_in_place(text, normal(2, 3, 2), rtol=1e-4, atol=1e-5)
    gradient_check_gpu(text, [normal(1, 2, 3, 3)], threshold=1e-3)


def test_mvn_constant_group():
    x = normal(2, 3, 4)
    x[0, 1] = 0.5
    compare_devices('name: "mvn" type: "MVN"', [x], propagate_down=[True], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- PReLU

@pytest.mark.parametrize("param", ["filler { type: 'uniform' min: -1 max: 1 }",
                                   "channel_shared: true filler { type: 'uniform' min: -1 max: 1 }", ""])
@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (3, 2)])
def test_prelu(param, shape):
    x = normal(*shape)
    x.reshape(-1)[::5] = 0
    text = f'name: "p" type: "PReLU" prelu_param {{ {param} }}'
    compare_devices(text, [x], propagate_down=[True])
    compare_in_place(text, x)


def test_prelu_gradient():
    gradient_check_gpu('name: "p" type: "PReLU" prelu_param { filler { type: "uniform" min: -1 max: 1 } }',
                       [normal(1, 2, 3, 3)], kink=0.0, kink_range=0.01)
    gradient_check_gpu('name: "p" type: "PReLU" prelu_param { channel_shared: true }', [normal(1, 2, 3)],
                       kink=0.0, kink_range=0.01)


# ---------------------------------------------------------------- Softmax

@pytest.mark.parametrize("axis, shape", [(1, (2, 3, 2, 2)), (-1, (2, 3, 4)), (0, (3, 2)), (2, (2, 2, 3, 2))])
def test_softmax(axis, shape):
    text = f'name: "sm" type: "Softmax" softmax_param {{ axis: {axis} }}'
    compare_devices(text, [3 * normal(*shape)], propagate_down=[True])
    compare_in_place(text, normal(*shape))


def test_softmax_gradient():
    gradient_check_gpu('name: "sm" type: "Softmax"', [normal(1, 3, 2, 2)])
    gradient_check_gpu('name: "sm" type: "Softmax" softmax_param { axis: -1 }', [normal(2, 2, 3)])
