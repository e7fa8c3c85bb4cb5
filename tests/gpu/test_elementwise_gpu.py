"""The element-wise layers' numba.cuda kernels (issue 25): ReLU, Sigmoid, TanH, ReLU6, the neuron layers of
elementwise.py, Dropout, Eltwise and LSTMUnit, against their CPU kernels, with gradient checks in GPU mode.

Tiny blobs: the simulator runs a Python thread per GPU thread.
"""

import numpy as np
import pytest

from minicaffe import fillers, mode
from minicaffe.blob import SyncedArray
from minicaffe.errors import GraphError
from minicaffe.testing import GradientChecker
from minicaffe.testing.layers import empty_blobs, layer_from_text, make_blobs

from .helpers import compare_devices

rng = np.random.default_rng(25)


class _DeviceGradientChecker(GradientChecker):
    """A GradientChecker whose perturbations reach the device.

    The checker writes its perturbations into the host array it read once; after a GPU Forward that array's
    SyncedArray is "synced", so the write would not reach the device (every numeric gradient 0, as with
    tests/gpu/helpers.py's gradient_check_gpu). Asking for ``blob.data`` before each Forward marks the host
    copy as the newer one.
    """

    def _forward(self, layer, bottom, top):
        for blob in list(bottom) + list(layer.blobs):
            blob.data
        super()._forward(layer, bottom, top)


def gradient_check_gpu(text, bottom_arrays, num_tops=1, seed=7, phase="TRAIN", **checker):
    """Caffe's GradientChecker on the layer in ``text`` in GPU mode (float64, central differences)."""
    fillers.set_random_seed(seed)
    layer = layer_from_text(text, dtype=np.float64, num_tops=num_tops, phase=phase)
    assert getattr(layer, "backward_gpu", None) is not None, f"{layer.type} has no backward_gpu"
    bottom = make_blobs(*bottom_arrays, dtype=np.float64)
    top = empty_blobs(num_tops, dtype=np.float64)
    checker.setdefault("threshold", 1e-6)
    mode.set_mode_gpu()
    try:
        return _DeviceGradientChecker(**checker).check_layer(layer, bottom, top)
    finally:
        mode.set_mode_cpu()
SHAPE = (2, 3, 2)


def normal(scale=1.0):
    return lambda: rng.standard_normal(SHAPE) * scale


def uniform(low, high):
    return lambda: rng.uniform(low, high, SHAPE)


def away_from(points, sample, margin=0.02):
    """Inputs from ``sample`` moved off the points where the derivative jumps."""
    def draw():
        x = sample()
        for point in points:
            x = np.where(np.abs(x - point) < margin, x + 3 * margin, x)
        return x
    return draw


# name: (layer text, input sampler, kink (GradientChecker skips elements near it) or None)
NEURONS = {
    "relu": ('type: "ReLU"', normal(), 0.0),
    "relu_leaky": ('type: "ReLU" relu_param { negative_slope: 0.1 }', normal(), 0.0),
    "relu6": ('type: "ReLU6"', away_from([6.0], normal(4)), 0.0),
    "relu6_leaky": ('type: "ReLU6" relu6_param { negative_slope: 0.2 }', away_from([6.0], normal(4)), 0.0),
    "sigmoid": ('type: "Sigmoid"', normal(3), None),
    "tanh": ('type: "TanH"', normal(2), None),
    "absval": ('type: "AbsVal"', normal(), 0.0),
    "bnll": ('type: "BNLL"', normal(3), None),
    "elu": ('type: "ELU"', normal(), 0.0),
    "elu_alpha": ('type: "ELU" elu_param { alpha: 0.5 }', normal(), 0.0),
    "exp": ('type: "Exp"', normal(), None),
    "exp_base": ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', normal(), None),
    "log": ('type: "Log"', uniform(0.5, 3), None),
    "log_base": ('type: "Log" log_param { base: 10 scale: 2 shift: 1 }', uniform(0.1, 2), None),
    "power2": ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', normal(), None),
    "power3": ('type: "Power" power_param { power: 3 scale: -1.5 }', normal(), None),
    "power_frac": ('type: "Power" power_param { power: 0.5 scale: 2 shift: 0.5 }', uniform(0.2, 2), None),
    "power_one": ('type: "Power" power_param { scale: 3 shift: -1 }', normal(), None),
    "power_constant": ('type: "Power" power_param { power: 2 scale: 0 shift: 3 }', normal(), None),
    "power_zero": ('type: "Power" power_param { power: 0 shift: 3 }', normal(), None),
    "clip": ('type: "Clip" clip_param { min: -0.5 max: 0.75 }', away_from([-0.5, 0.75], normal()), None),
    "swish": ('type: "Swish"', normal(2), None),
    "swish_beta": ('type: "Swish" swish_param { beta: 1.5 }', normal(2), None),
}


@pytest.mark.parametrize("case", sorted(NEURONS))
def test_neuron_matches_cpu(case):
    text, sample, _ = NEURONS[case]
    x = sample()
    compare_devices(f'name: "n" {text}', [x], propagate_down=[True])


@pytest.mark.parametrize("case", sorted(NEURONS))
def test_neuron_gradient(case):
    text, sample, kink = NEURONS[case]
    options = {} if kink is None else {"kink": kink, "kink_range": 1e-3}
    gradient_check_gpu(f'name: "n" {text}', [sample()], stepsize=1e-5, **options)


@pytest.mark.parametrize("with_nan", [True, False])
def test_special_values_match_cpu(with_nan):
    # The points where the CPU's comparisons decide: 0, 6 and the clip points, NaN, signed zeros, saturation.
    x = np.array([[0.0, -0.0, 6.0, -6.0, np.nan, 7.5], [-0.5, 0.75, 1e-30, -40.0, 40.0, 3.0]])
    texts = ['type: "ReLU" relu_param { negative_slope: 0.1 }', 'type: "ReLU6"', 'type: "AbsVal"', 'type: "TanH"',
             'type: "ReLU6" relu6_param { negative_slope: 0.2 }', 'type: "ELU"',
             'type: "Clip" clip_param { min: -0.5 max: 0.75 }']
    if not with_nan:
        # The CPU's sigmoid gives 0 for NaN (its exp(-|x|) >= underflow test is false); the GPU's keeps NaN.
        x[0, 4] = 100.0
        texts = ['type: "Sigmoid"', 'type: "BNLL"', 'type: "Swish"']
    for text in texts:
        compare_devices(f'name: "n" {text}', [x], propagate_down=[True])


def test_threshold_forward_matches_cpu():
    x = rng.standard_normal(SHAPE)
    x.flat[0] = 0.2                     # at the threshold: not above it, so 0
    _, _, top = compare_devices('name: "t" type: "Threshold" threshold_param { threshold: 0.2 }', [x])
    assert set(np.unique(top[0].data)) <= {0.0, 1.0} and top[0].data.flat[0] == 0


def run_in_place(text, x, use_gpu, dy, phase="TRAIN"):
    """Forward and Backward with the top named as the bottom; returns (data, diff)."""
    fillers.set_random_seed(3)
    layer = layer_from_text(f'name: "n" {text}', dtype=np.float32, phase=phase)
    blob = make_blobs(x, dtype=np.float32)[0]
    layer.set_up([blob], [blob])
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        blob.gpu_data if use_gpu else None
        before = dict(SyncedArray.copies)
        layer.run_forward([blob], [blob])
        blob.diff[...] = dy
        blob.gpu_diff if use_gpu else None
        layer.run_backward([blob], [True], [blob])
        if use_gpu:
            assert SyncedArray.copies["to_host"] == before["to_host"], "in place copied to the host"
    finally:
        mode.set_mode_cpu()
    return blob.data.copy(), blob.diff.copy()


@pytest.mark.parametrize("case", ["relu", "relu_leaky", "relu6_leaky", "sigmoid", "tanh", "bnll", "elu",
                                  "exp_base", "log_base", "power3", "clip", "swish_beta"])
def test_in_place_matches_cpu(case):
    text, sample, _ = NEURONS[case]
    x = sample()
    dy = rng.standard_normal(x.shape)
    cpu = run_in_place(text, x, False, dy)
    gpu = run_in_place(text, x, True, dy)
    for got, expected in zip(gpu, cpu):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- Dropout

def dropout_gpu(ratio, x, dy, phase="TRAIN", in_place=False, seed=5):
    fillers.set_random_seed(seed)
    layer = layer_from_text(f'name: "d" type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}',
                            dtype=np.float32, phase=phase)
    bottom = make_blobs(x, dtype=np.float32)
    top = bottom if in_place else empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    mode.set_mode_gpu()
    try:
        bottom[0].gpu_data
        before = dict(SyncedArray.copies)
        layer.run_forward(bottom, top)
        y = top[0].data.copy()
        top[0].diff[...] = dy
        top[0].gpu_diff
        middle = dict(SyncedArray.copies)
        layer.run_backward(top, [True], bottom)
        assert SyncedArray.copies["to_host"] == middle["to_host"]
        assert middle["to_host"] == before["to_host"] + 1          # only the test's read of the top
    finally:
        mode.set_mode_cpu()
    mask = layer.gpu_mask.copy_to_host() if phase == "TRAIN" else None
    return layer, y, bottom[0].diff.copy(), mask


@pytest.mark.parametrize("ratio", [0.5, 0.2])
def test_dropout_train_mask(ratio):
    x = rng.standard_normal(1024) + 3.0         # never 0: a dropped element is recognizable
    dy = rng.standard_normal(1024)
    _, y, dx, mask = dropout_gpu(ratio, x, dy)
    scale = np.float32(1 / (1 - np.float32(ratio)))
    assert set(np.unique(mask)) <= {np.float32(0), scale}
    kept = np.mean(mask != 0)
    assert abs(kept - (1 - ratio)) < 4 * np.sqrt(ratio * (1 - ratio) / x.size)
    np.testing.assert_allclose(y, x.astype(np.float32) * mask, rtol=1e-6)
    np.testing.assert_allclose(dx, dy.astype(np.float32) * mask, rtol=1e-6)    # the forward's mask
    # In place: the same statistics, and the diff goes through the same mask as the data.
    _, y, dx, mask = dropout_gpu(ratio, x, dy, in_place=True)
    np.testing.assert_allclose(y, x.astype(np.float32) * mask, rtol=1e-6)
    np.testing.assert_allclose(dx, dy.astype(np.float32) * mask, rtol=1e-6)


def test_dropout_masks_follow_the_seed():
    x = np.ones(256)
    first = dropout_gpu(0.5, x, x, seed=5)[3]
    assert np.array_equal(first, dropout_gpu(0.5, x, x, seed=5)[3])
    assert not np.array_equal(first, dropout_gpu(0.5, x, x, seed=6)[3])


def test_dropout_ratio_zero_keeps_everything():
    x = rng.standard_normal(SHAPE)
    _, y, dx, mask = dropout_gpu(0.0, x, x)
    assert np.all(mask == 1)
    np.testing.assert_array_equal(y, x.astype(np.float32))


@pytest.mark.parametrize("in_place", [False, True])
def test_dropout_test_phase_is_identity(in_place):
    x, dy = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    _, y, dx, _ = dropout_gpu(0.5, x, dy, phase="TEST", in_place=in_place)
    np.testing.assert_array_equal(y, x.astype(np.float32))
    np.testing.assert_array_equal(dx, dy.astype(np.float32))
    compare_devices('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.3 }', [x], propagate_down=[True],
                    phase="TEST")


def test_dropout_gradient_and_backward_before_forward():
    gradient_check_gpu('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.4 }', [rng.standard_normal(SHAPE)],
                       stepsize=1e-5)
    layer = layer_from_text('name: "d" type: "Dropout"', dtype=np.float32)
    bottom, top = make_blobs(np.ones(SHAPE), dtype=np.float32), empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    mode.set_mode_gpu()
    try:
        with pytest.raises(GraphError, match="before a TRAIN Forward"):
            layer.run_backward(top, [True], bottom)
    finally:
        mode.set_mode_cpu()


# ---------------------------------------------------------------- Eltwise

ELTWISE = {
    "prod": ('operation: PROD', 2),
    "prod3": ('operation: PROD', 3),
    "prod3_unstable": ('operation: PROD stable_prod_grad: false', 3),
    "sum": ('operation: SUM', 2),
    "sum_coeff3": ('operation: SUM coeff: 0.5 coeff: -2 coeff: 1.5', 3),
    "max": ('operation: MAX', 2),
    "max3": ('operation: MAX', 3),
}


def eltwise_text(case):
    return f'name: "e" type: "Eltwise" eltwise_param {{ {ELTWISE[case][0]} }}'


@pytest.mark.parametrize("case", sorted(ELTWISE))
def test_eltwise_matches_cpu(case):
    count = ELTWISE[case][1]
    bottoms = [rng.standard_normal(SHAPE) for _ in range(count)]
    compare_devices(eltwise_text(case), bottoms, propagate_down=[True] * count)
    compare_devices(eltwise_text(case), bottoms, propagate_down=[False] + [True] * (count - 1))


def test_eltwise_max_ties_and_winners():
    # Bottoms 0 and 1 tie: bottom 1 wins; a later bottom must be strictly greater (the CPU's rules).
    a = np.array([[1.0, 2.0, 0.0, -1.0]])
    b = np.array([[1.0, 3.0, 0.0, -2.0]])
    c = np.array([[1.0, 3.0, 5.0, -1.0]])
    layer, bottom, top = compare_devices(eltwise_text("max3"), [a, b, c], propagate_down=[True, True, True])
    np.testing.assert_array_equal(layer.gpu_max_index.copy_to_host(), [1, 1, 2, 0])


@pytest.mark.parametrize("case", ["prod3", "sum_coeff3", "max3"])
def test_eltwise_in_place_top_matches_cpu(case):
    # The top named as bottom 0: the devices must agree, quirks included (SUM zeroes the top first, as Caffe).
    arrays = [rng.standard_normal(SHAPE) for _ in range(3)]
    results = []
    for use_gpu in (False, True):
        layer = layer_from_text(eltwise_text(case), dtype=np.float32)
        bottom = make_blobs(*arrays, dtype=np.float32)
        layer.set_up(bottom, bottom[:1])
        (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
        try:
            layer.run_forward(bottom, bottom[:1])
        finally:
            mode.set_mode_cpu()
        results.append(bottom[0].data.copy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["prod3", "prod3_unstable", "sum_coeff3", "max3"])
def test_eltwise_gradient(case):
    count = ELTWISE[case][1]
    bottoms = [rng.standard_normal(3) + (1.5 if "unstable" in case else 0) for _ in range(count)]
    gradient_check_gpu(eltwise_text(case), bottoms, stepsize=1e-5)


# ---------------------------------------------------------------- LSTMUnit

N, D = 3, 2
UNIT = 'name: "unit" type: "LSTMUnit"'


def lstm_inputs(cont):
    return [rng.standard_normal((1, N, D)), rng.standard_normal((1, N, 4 * D)) * 2,
            np.asarray(cont, float).reshape(1, N)]


@pytest.mark.parametrize("cont", [[1, 0, 1], [0.5, 1, 0.25]])
@pytest.mark.parametrize("propagate_down", [[True, True, False], [False, True, False], [True, False, True]])
def test_lstm_unit_matches_cpu(cont, propagate_down):
    compare_devices(UNIT, lstm_inputs(cont), num_tops=2, propagate_down=propagate_down)


@pytest.mark.parametrize("cont", [[1, 0, 1], [0.5, 1, 0.25]])
def test_lstm_unit_gradient(cont):
    assert gradient_check_gpu(UNIT, lstm_inputs(cont), num_tops=2, stepsize=1e-5) == N * D * 5
