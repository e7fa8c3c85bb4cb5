"""RNN and LSTM in GPU mode: the unrolled net runs its layers' GPU paths, against the CPU, and gradient checks.

Tiny sequences (T = 2, N = 1 or 2, sizes 2-3): the simulator runs Python per thread. The comparisons do not
assert that nothing crosses to the host: the unrolled net's layers get their GPU kernels from other files
(InnerProduct, Eltwise, TanH, Scale, LSTMUnit), and one without them runs on the host in GPU mode; the
recurrent layer's own work (the state carry, the exposed states' diffs) is checked to stay on the device.
"""

import numpy as np
import pytest

from minicaffe import fillers, mode
from minicaffe.blob import SyncedArray
from minicaffe.testing.layers import empty_blobs, layer_from_text, make_blobs

from .helpers import gradient_check_gpu

rng = np.random.default_rng(2025)
FILLERS = 'weight_filler { type: "uniform" min: -1 max: 1 } bias_filler { type: "uniform" min: -1 max: 1 }'


def text(kind, expose=False, num_output=2):
    return (f'name: "rec" type: "{kind}" recurrent_param {{ num_output: {num_output} {FILLERS} '
            f'expose_hidden: {str(expose).lower()} }}')


def run(layer_text, arrays, use_gpu, num_tops, propagate_down, top_diffs, passes, dtype=np.float32):
    """Set up on one device's mode, ``passes`` Forwards, then a Backward with ``top_diffs``."""
    fillers.set_random_seed(7)
    layer = layer_from_text(layer_text, dtype=dtype, num_tops=num_tops)
    bottom = make_blobs(*arrays, dtype=dtype)
    top = empty_blobs(num_tops, dtype=dtype)
    layer.set_up(bottom, top)
    for blob in layer.blobs:
        blob.diff[...] = 0
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        for _ in range(passes):
            layer.run_forward(bottom, top)
        for blob, diff in zip(top, top_diffs):
            blob.diff[...] = diff
        for blob in bottom:
            blob.diff[...] = 0
        layer.run_backward(top, propagate_down, bottom)
    finally:
        mode.set_mode_cpu()
    return layer, bottom, top


def compare(layer_text, arrays, num_tops=1, propagate_down=None, passes=1):
    propagate_down = propagate_down or [True, False] + [True] * (len(arrays) - 2)
    cpu_layer, cpu_bottom, cpu_top = run(layer_text, arrays, False, num_tops, propagate_down, [], passes)
    top_diffs = [rng.standard_normal(blob.shape) for blob in cpu_top]
    cpu_layer, cpu_bottom, cpu_top = run(layer_text, arrays, False, num_tops, propagate_down, top_diffs, passes)
    gpu_layer, gpu_bottom, gpu_top = run(layer_text, arrays, True, num_tops, propagate_down, top_diffs, passes)
    for index, (gpu_blob, cpu_blob) in enumerate(zip(gpu_top, cpu_top)):
        np.testing.assert_allclose(gpu_blob.data, cpu_blob.data, rtol=1e-5, atol=1e-6, err_msg=f"top {index}")
    for index, flag in enumerate(propagate_down):
        if flag:
            np.testing.assert_allclose(gpu_bottom[index].diff, cpu_bottom[index].diff, rtol=1e-5, atol=1e-6,
                                       err_msg=f"bottom {index} diff")
    for index, (gpu_blob, cpu_blob) in enumerate(zip(gpu_layer.blobs, cpu_layer.blobs)):
        np.testing.assert_allclose(gpu_blob.diff, cpu_blob.diff, rtol=1e-5, atol=1e-6, err_msg=f"param {index}")
    return gpu_layer, gpu_bottom, gpu_top


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("static", [False, True], ids=["plain", "static"])
def test_recurrent_matches_the_cpu(kind, static):
    arrays = [rng.standard_normal((2, 2, 3)), np.array([[0.0, 0.0], [1.0, 0.0]])]
    arrays += [rng.standard_normal((2, 2))] if static else []
    compare(text(kind), arrays)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_carries_between_forwards_on_the_device(kind):
    """cont 1 at the first step: the second Forward starts from the first one's final state."""
    compare(text(kind), [rng.standard_normal((2, 1, 2)), np.ones((2, 1))], passes=2)


@pytest.mark.parametrize("kind, states", [("RNN", 1), ("LSTM", 2)])
def test_exposed_state(kind, states):
    arrays = [rng.standard_normal((2, 1, 2)), np.array([[1.0], [1.0]])]
    arrays += [rng.standard_normal((1, 1, 2)) for _ in range(states)]
    _, bottom, _ = compare(text(kind, expose=True), arrays, num_tops=1 + states)
    for blob in bottom[2:]:
        assert not blob.diff.any()          # Caffe's: the initial states take no gradient


@pytest.mark.parametrize("kind, states", [("RNN", 1), ("LSTM", 2)])
@pytest.mark.parametrize("expose", [False, True], ids=["carried", "exposed"])
def test_nothing_crosses_to_the_host(kind, states, expose):
    """Once every layer of the unrolled net has its GPU path, a GPU Forward and Backward copy nothing to the
    host: the state carry and the exposed states' diffs stay on the device, and the inner blobs share the
    outer ones' device memory. (Skipped, naming them, while some inner layer still runs on the host.)"""
    arrays = [rng.standard_normal((2, 1, 2)), np.ones((2, 1))]
    arrays += [rng.standard_normal((1, 1, 2)) for _ in range(states)] if expose else []
    num_tops = 1 + states if expose else 1
    layer = layer_from_text(text(kind, expose=expose), dtype=np.float32, num_tops=num_tops)
    bottom, top = make_blobs(*arrays, dtype=np.float32), empty_blobs(num_tops, dtype=np.float32)
    layer.set_up(bottom, top)
    on_host = sorted({inner.type for inner in layer.unrolled.layers[:layer._last_layer + 1]
                      if getattr(inner, "forward_gpu", None) is None or getattr(inner, "backward_gpu", None) is None})
    if on_host:
        pytest.skip(f"layers of the unrolled net still run on the host in GPU mode: {on_host}")
    mode.set_mode_gpu()
    try:
        for blob in bottom:
            blob.gpu_data
        layer.run_forward(bottom, top)
        before = dict(SyncedArray.copies)
        layer.run_forward(bottom, top)
        assert SyncedArray.copies["to_host"] == before["to_host"], "Forward copied to the host"
        top[0].diff[...] = 1
        top[0].gpu_diff
        before = dict(SyncedArray.copies)
        layer.run_backward(top, [True, False] + [True] * (len(bottom) - 2), bottom)
        assert SyncedArray.copies["to_host"] == before["to_host"], "Backward copied to the host"
    finally:
        mode.set_mode_cpu()


@pytest.mark.parametrize("kind, num_output, inputs", [("RNN", 1, 2), ("LSTM", 1, 2)])
def test_gradient(kind, num_output, inputs):
    # Each stream starts afresh (cont 0 at t = 0), so every Forward of the check computes the same function.
    # Few parameters (each costs two Forwards of the whole unrolled net in the simulator).
    gradient_check_gpu(text(kind, num_output=num_output), [rng.standard_normal((2, 1, inputs)),
                                                           np.array([[0.0], [1.0]])], check_bottom=[0])
