"""GPU kernels of Pooling, SPP and LRN against their CPU kernels, and gradient checks in GPU mode (tiny shapes:
the simulator runs every thread in Python)."""

import numpy as np
import pytest

from minicaffe import fillers, mode

from .helpers import compare_devices, gradient_check_gpu

rng = np.random.default_rng(26)


def normal(*shape):
    return rng.standard_normal(shape)


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
    """Bit for bit: the same cells in the same order, the same comparisons, additions and divisions."""
    x = normal(*shape)
    compare_devices(pooling(f"pool: {method} {geometry}"), [x], propagate_down=[True], rtol=0, atol=0)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_max_pooling_mask_top_ties_and_test_phase(phase):
    x = np.round(normal(2, 2, 4, 4))             # ties: the first maximum wins
    x[0, 0, :2, :2] = np.nan                     # NaN never wins
    _, _, top = compare_devices(pooling("pool: MAX kernel_size: 3 stride: 1 pad: 1"), [x], num_tops=2,
                                propagate_down=[True], phase=phase)
    compare_devices(pooling("pool: MAX kernel_size: 2 stride: 2"), [normal(1, 2, 4, 4)], propagate_down=[True],
                    phase=phase)
    compare_devices(pooling("pool: MAX kernel_size: 2 stride: 2"), [normal(1, 1, 4, 4)], num_tops=2,
                    dtype=np.float64, phase=phase)


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


# ---------------------------------------------------------------- a net of these layers

CHAIN = """
name: "chain"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
layer { name: "scale" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true filler { type: "gaussian" } } }
layer { name: "prelu" type: "PReLU" bottom: "bn" top: "bn" }
layer { name: "pool" type: "Pooling" bottom: "bn" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "lrn" type: "LRN" bottom: "pool" top: "lrn" lrn_param { local_size: 3 } }
layer { name: "mvn" type: "MVN" bottom: "lrn" top: "mvn" }
layer { name: "spp" type: "SPP" bottom: "mvn" top: "spp" spp_param { pyramid_height: 2 } }
layer { name: "softmax" type: "Softmax" bottom: "spp" top: "softmax" }
layer { name: "bias" type: "Bias" bottom: "softmax" top: "out" bias_param { filler { type: "gaussian" } } }
"""


def _run_chain(path, x, top_diff, use_gpu):
    import minicaffe
    from minicaffe.blob import SyncedArray
    fillers.set_random_seed(3)
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        net = minicaffe.Net(str(path), minicaffe.TRAIN)
        net.blobs["data"].data[...] = x
        if use_gpu:
            for blob in [net.blobs["data"]] + [p for layer in net.params for p in net.params[layer]]:
                blob.gpu_data
        before = dict(SyncedArray.copies)
        net.forward_from_to(0, len(net.layers) - 1)
        net.blobs["out"].diff[...] = top_diff
        net.blobs["out"].gpu_diff if use_gpu else None
        net.backward_from_to(len(net.layers) - 1, 0)
        copies = SyncedArray.copies["to_host"] - before["to_host"]
        return copies, net.blobs["out"].data.copy(), net.blobs["data"].diff.copy(), \
            {name: [p.data.copy() for p in params] + [p.diff.copy() for p in params]
             for name, params in net.params.items()}
    finally:
        mode.set_mode_cpu()


def test_a_net_of_these_layers_stays_on_the_device(tmp_path):
    """Forward and Backward of a chain (in-place BatchNorm/Scale/PReLU, Pooling, LRN, MVN, SPP, Softmax, Bias)
    in GPU mode: nothing returns to the host, and the outputs, gradients, parameter diffs and BatchNorm's
    running statistics are the CPU's."""
    path = tmp_path / "chain.prototxt"
    path.write_text(CHAIN)
    x = normal(2, 3, 6, 6)
    top_diff = normal(2, 3 * 5)
    _, *cpu = _run_chain(path, x, top_diff, False)
    copies, *gpu = _run_chain(path, x, top_diff, True)
    assert copies == 0
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-5, atol=1e-6, err_msg="top")
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=1e-4, atol=1e-5, err_msg="input diff")
    for name in cpu[2]:
        for index, (gpu_array, cpu_array) in enumerate(zip(gpu[2][name], cpu[2][name])):
            np.testing.assert_allclose(gpu_array, cpu_array, rtol=1e-4, atol=1e-5, err_msg=f"{name} {index}")
