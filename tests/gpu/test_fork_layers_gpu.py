"""The Caffe-fork layers' numba.cuda kernels (minicaffe/layers/forks) against their CPU kernels (simulator).

Each layer runs in CPU and GPU mode on the same tiny float32 inputs (compare_devices), and every layer with
a Backward passes Caffe's gradient check in GPU mode (float64). In-place runs, which the helper does not
build, are compared here with the same bottom blob as top on both devices.
"""

import numpy as np
import pytest

from minicaffe import fillers, mode
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

from .helpers import compare_devices

rng = np.random.default_rng(25)


class _DeviceGradientChecker(GradientChecker):
    """GradientChecker whose perturbations reach the device.

    The checker perturbs ``blob.data`` (the host array) in place between Forwards; once a GPU Forward has
    read the blob, its SyncedArray is "synced" and that in-place write does not mark the host copy newer,
    so the next GPU Forward would read the stale device copy (every numeric gradient 0). Asking for
    ``blob.data`` (for writing) before each Forward marks the host copy as the one to trust.
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


def normal(*shape):
    return rng.standard_normal(shape)


def run_in_place(text, arrays, index, use_gpu, top_diff):
    """Forward and Backward with top 0 = bottom ``index``; returns (top data, bottom diffs)."""
    layer = layer_from_text(f'name: "fork" {text}', dtype=np.float32, num_tops=1)
    bottom = make_blobs(*arrays, dtype=np.float32)
    top = [bottom[index]]
    layer.set_up(bottom, top)
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        layer.run_forward(bottom, top)
        out = top[0].data.copy()
        for blob in bottom:
            blob.diff[...] = 0
        top[0].diff[...] = top_diff
        layer.run_backward(top, [True] * len(bottom), bottom)
        return out, [blob.diff.copy() for blob in bottom]
    finally:
        mode.set_mode_cpu()


def assert_in_place_matches(text, arrays, index, rtol=1e-5, atol=1e-6):
    top_diff = rng.standard_normal(np.shape(arrays[index])).astype(np.float32)
    cpu_out, cpu_diffs = run_in_place(text, arrays, index, False, top_diff)
    gpu_out, gpu_diffs = run_in_place(text, arrays, index, True, top_diff)
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=rtol, atol=atol)
    for gpu_diff, cpu_diff in zip(gpu_diffs, cpu_diffs):
        np.testing.assert_allclose(gpu_diff, cpu_diff, rtol=rtol, atol=atol)


# ====================================================================== ShuffleChannel

def shuffle_text(group):
    return f'name: "shuffle" type: "ShuffleChannel" shuffle_channel_param {{ group: {group} }}'


@pytest.mark.parametrize("group, shape", [(2, (2, 6, 2)), (3, (1, 6, 2, 1)), (1, (2, 3)), (6, (1, 6, 1, 2))])
def test_shuffle_channel(group, shape):
    compare_devices(shuffle_text(group), [normal(*shape)], propagate_down=[True])


def test_shuffle_channel_in_place_and_gradient():
    assert_in_place_matches(shuffle_text(3)[len('name: "shuffle" '):], [normal(2, 6, 1)], 0)
    gradient_check_gpu(shuffle_text(2), [normal(1, 4, 2)])


# ====================================================================== Axpy

AXPY = 'name: "axpy" type: "Axpy"'


@pytest.mark.parametrize("a_shape, x_shape", [((2, 3, 1, 1), (2, 3, 2, 2)), ((2, 3), (2, 3, 3)), ((3, 2), (3, 2))])
def test_axpy(a_shape, x_shape):
    compare_devices(AXPY, [normal(*a_shape), normal(*x_shape), normal(*x_shape)], propagate_down=[True, True, True])


@pytest.mark.parametrize("propagate", [[True, False, False], [False, True, True], [False, False, True]])
def test_axpy_some_bottoms(propagate):
    compare_devices(AXPY, [normal(2, 2), normal(2, 2, 3), normal(2, 2, 3)], propagate_down=propagate)


@pytest.mark.parametrize("index", [1, 2])
def test_axpy_in_place(index):
    assert_in_place_matches('type: "Axpy"', [normal(2, 2, 1, 1), normal(2, 2, 1, 3), normal(2, 2, 1, 3)], index)


def test_axpy_gradient():
    gradient_check_gpu(AXPY, [normal(2, 2), normal(2, 2, 2), normal(2, 2, 2)], stepsize=1e-4, threshold=1e-8)


# ====================================================================== Permute

def permute_text(order):
    return f'name: "perm" type: "Permute" permute_param {{ {" ".join(f"order: {a}" for a in order)} }}'


@pytest.mark.parametrize("order, shape", [((0, 2, 3, 1), (2, 3, 2, 2)), ((1,), (2, 3, 1, 2)), ((3, 2, 1, 0), (2, 1, 3, 2)),
                                          ((0, 2, 1), (1, 2, 3)), ((0, 1), (2, 3)), ((1, 0), (1, 1))])
def test_permute(order, shape):
    compare_devices(permute_text(order), [normal(*shape)], propagate_down=[True])


def test_permute_gradient():
    gradient_check_gpu(permute_text((0, 2, 3, 1)), [normal(1, 3, 2, 2)])
