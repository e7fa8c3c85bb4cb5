"""GPU kernels of Pooling, SPP and LRN against their CPU kernels, and gradient checks in GPU mode (tiny shapes:
the simulator runs every thread in Python)."""

import numpy as np
import pytest

from minicaffe import fillers, mode
from minicaffe.testing import GradientChecker
from minicaffe.testing.layers import empty_blobs, layer_from_text, make_blobs

from .helpers import compare_devices

rng = np.random.default_rng(26)


def normal(*shape):
    return rng.standard_normal(shape)


class DeviceGradientChecker(GradientChecker):
    """GradientChecker whose perturbations reach the device: it writes into ``blob.data`` once fetched, and
    after a GPU Forward read the blob (head "synced") such a write is not seen by the next Forward. Asking
    for ``blob.data`` before each Forward marks the host copy as the newer one."""

    def _forward(self, layer, bottom, top):
        for blob in list(bottom) + list(layer.blobs):
            blob.data
        super()._forward(layer, bottom, top)


def gradient_check_gpu(text, bottom_arrays, num_tops=1, seed=7, check_bottom=None, phase="TRAIN", **checker):
    """tests/gpu/helpers.py's gradient_check_gpu with the checker above (float64, GPU mode)."""
    fillers.set_random_seed(seed)
    layer = layer_from_text(text, dtype=np.float64, num_tops=num_tops, phase=phase)
    assert getattr(layer, "backward_gpu", None) is not None, f"{layer.type} has no backward_gpu"
    bottom = make_blobs(*bottom_arrays, dtype=np.float64)
    top = empty_blobs(num_tops, dtype=np.float64)
    checker.setdefault("stepsize", 1e-3)
    checker.setdefault("threshold", 1e-6)
    mode.set_mode_gpu()
    try:
        return DeviceGradientChecker(**checker).check_layer(layer, bottom, top, check_bottom=check_bottom)
    finally:
        mode.set_mode_cpu()


def pooling(param):
    return f'name: "pool" type: "Pooling" pooling_param {{ {param} }}'


# ---------------------------------------------------------------- Pooling

GEOMETRIES = [
    ("kernel_size: 2 stride: 2", (2, 3, 4, 4)),
    ("kernel_size: 3 stride: 2", (1, 2, 5, 5)),                     # ceil rounding
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (1, 2, 6, 6)),
    ("kernel_size: 2 stride: 2 pad: 1", (1, 2, 5, 5)),              # the last window dropped
    ("kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0", (1, 2, 4, 5)),
    ("kernel_size: 1 stride: 3", (1, 1, 5, 5)),                     # stride > kernel
    ("global_pooling: true", (2, 3, 3, 4)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("geometry, shape", GEOMETRIES)
def test_pooling(method, geometry, shape):
    x = normal(*shape)
    compare_devices(pooling(f"pool: {method} {geometry}"), [x], propagate_down=[True])


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_max_pooling_mask_top_ties_and_test_phase(phase):
    x = np.round(normal(2, 2, 4, 4))             # ties: the first maximum wins
    x[0, 0, :2, :2] = np.nan                     # NaN never wins
    _, _, top = compare_devices(pooling("pool: MAX kernel_size: 3 stride: 1 pad: 1"), [x], num_tops=2,
                                propagate_down=[True], phase=phase)
    compare_devices(pooling("pool: MAX kernel_size: 2 stride: 2"), [normal(1, 2, 4, 4)], propagate_down=[True],
                    phase=phase)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("geometry", ["kernel_size: 3 stride: 2", "kernel_size: 2 stride: 1 pad: 1"])
def test_stochastic_pooling(phase, geometry):
    x = np.abs(normal(2, 2, 5, 5))
    x[0, 0] = 0                                  # a window whose sum is 0
    compare_devices(pooling(f"pool: STOCHASTIC {geometry}"), [x], propagate_down=[True], phase=phase)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_gradient(method):
    gradient_check_gpu(pooling(f"pool: {method} kernel_size: 2 stride: 1 pad: 1"), [normal(1, 2, 3, 3)],
                       stepsize=1e-4, threshold=1e-5)


def test_stochastic_pooling_gradient():
    x = np.abs(normal(1, 2, 3, 3)) + 0.1
    gradient_check_gpu(pooling("pool: STOCHASTIC kernel_size: 2 stride: 1"), [x], phase="TEST")
    gradient_check_gpu(pooling("pool: STOCHASTIC kernel_size: 2 stride: 1"), [x], phase="TRAIN")


# ---------------------------------------------------------------- SPP

@pytest.mark.parametrize("pool", ["MAX", "AVE", "STOCHASTIC"])
@pytest.mark.parametrize("height, shape", [(1, (2, 2, 3, 3)), (2, (1, 2, 4, 5)), (3, (1, 1, 8, 8))])
def test_spp(pool, height, shape):
    x = np.abs(normal(*shape)) if pool == "STOCHASTIC" else normal(*shape)
    text = f'name: "spp" type: "SPP" spp_param {{ pyramid_height: {height} pool: {pool} }}'
    for phase in (["TRAIN", "TEST"] if pool == "STOCHASTIC" else ["TRAIN"]):
        compare_devices(text, [x], propagate_down=[True], phase=phase)


def test_spp_gradient():
    gradient_check_gpu('name: "spp" type: "SPP" spp_param { pyramid_height: 2 pool: MAX }', [normal(1, 2, 3, 3)],
                       stepsize=1e-4, threshold=1e-5)
    gradient_check_gpu('name: "spp" type: "SPP" spp_param { pyramid_height: 2 pool: AVE }', [normal(1, 2, 3, 3)])


# ---------------------------------------------------------------- LRN

@pytest.mark.parametrize("param", ["local_size: 3 alpha: 0.5 beta: 0.75",
                                   "local_size: 5 alpha: 0.3 beta: 0.6 k: 2",
                                   "norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.5 beta: 0.75",
                                   "norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.4 beta: 0.5"])
def test_lrn(param):
    text = f'name: "lrn" type: "LRN" lrn_param {{ {param} }}'
    compare_devices(text, [normal(2, 3, 3, 3)], propagate_down=[True])


@pytest.mark.parametrize("param", ["local_size: 3 alpha: 0.5 beta: 0.75", "local_size: 5 alpha: 1 beta: 0.6 k: 2",
                                   "norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.5 beta: 0.75"])
def test_lrn_gradient(param):
    gradient_check_gpu(f'name: "lrn" type: "LRN" lrn_param {{ {param} }}', [normal(1, 3, 2, 3)])
