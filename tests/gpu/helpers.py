"""Running one layer on both devices: its GPU kernels against its CPU kernels, and gradient checks in GPU mode.

The CPU kernels are themselves checked against numpy references and Caffe's numbers elsewhere; here the
GPU path must give the same tops, bottom diffs and parameter diffs, and must really run on the device:
a layer whose ``forward_gpu``/``backward_gpu`` is missing fails, and the blobs' SyncedArray counters show
that nothing went back to the host in between.
"""

from __future__ import annotations

import numpy as np

from minicaffe import fillers, mode
from minicaffe.blob import SyncedArray
from minicaffe.testing import GradientChecker
from minicaffe.testing.layers import empty_blobs, layer_from_text, make_blobs


def _run(text, bottom_arrays, use_gpu, num_tops, dtype, propagate_down, top_diffs, seed, phase, passes):
    fillers.set_random_seed(seed)
    layer = layer_from_text(text, dtype=dtype, num_tops=num_tops, phase=phase)
    bottom = make_blobs(*bottom_arrays, dtype=dtype)
    top = empty_blobs(num_tops, dtype=dtype)
    layer.set_up(bottom, top)
    for blob in layer.blobs:       # parameter diffs accumulate, as in a net: start from zero
        blob.diff[...] = 0
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        if use_gpu:
            for blob in bottom + list(layer.blobs):      # inputs on the device before counting copies
                blob.gpu_data
            before = dict(SyncedArray.copies)
        for _ in range(passes):
            layer.run_forward(bottom, top)
        if use_gpu:
            assert SyncedArray.copies["to_host"] == before["to_host"], \
                f"{layer.type} Forward copied to the host in GPU mode"
        if propagate_down is not None:
            for blob, diff in zip(top, top_diffs):
                blob.diff[...] = diff
            for blob in bottom:
                blob.diff[...] = 0
            if use_gpu:
                for blob in top + bottom:
                    blob.gpu_diff
                before = dict(SyncedArray.copies)
            layer.run_backward(top, list(propagate_down), bottom)
            if use_gpu:
                assert SyncedArray.copies["to_host"] == before["to_host"], \
                    f"{layer.type} Backward copied to the host in GPU mode"
    finally:
        mode.set_mode_cpu()
    return layer, bottom, top


def compare_devices(text, bottom_arrays, num_tops=1, dtype=np.float32, propagate_down=None, seed=7,
                    rtol=1e-5, atol=1e-6, phase="TRAIN", passes=1, top_diff_seed=3, compare_tops=None):
    """Forward (and Backward with ``propagate_down``) of the layer in ``text`` in CPU mode and GPU mode,
    with the same parameters (filler seed) and top diffs; asserts they agree and that the layer has GPU
    kernels. Returns (gpu layer, gpu bottoms, gpu tops)."""
    bottom_arrays = [np.asarray(array) for array in bottom_arrays]
    cpu_layer, cpu_bottom, cpu_top = _run(text, bottom_arrays, False, num_tops, dtype, None, None, seed,
                                          phase, passes)
    rng = np.random.default_rng(top_diff_seed)
    top_diffs = [rng.standard_normal(blob.shape).astype(dtype) for blob in cpu_top]
    if propagate_down is not None:
        cpu_layer, cpu_bottom, cpu_top = _run(text, bottom_arrays, False, num_tops, dtype, propagate_down,
                                              top_diffs, seed, phase, passes)
    gpu_layer, gpu_bottom, gpu_top = _run(text, bottom_arrays, True, num_tops, dtype, propagate_down,
                                          top_diffs, seed, phase, passes)
    assert getattr(gpu_layer, "forward_gpu", None) is not None, f"{gpu_layer.type} has no forward_gpu"
    if propagate_down is not None and any(propagate_down) or gpu_layer.blobs and propagate_down is not None:
        assert getattr(gpu_layer, "backward_gpu", None) is not None, f"{gpu_layer.type} has no backward_gpu"
    tops = range(num_tops) if compare_tops is None else compare_tops
    for index in tops:
        assert gpu_top[index].shape == cpu_top[index].shape
        np.testing.assert_allclose(gpu_top[index].data, cpu_top[index].data, rtol=rtol, atol=atol,
                                   err_msg=f"top {index}")
    if propagate_down is not None:
        for index, flag in enumerate(propagate_down):
            if flag:
                np.testing.assert_allclose(gpu_bottom[index].diff, cpu_bottom[index].diff, rtol=rtol, atol=atol,
                                           err_msg=f"bottom {index} diff")
        for index, (gpu_blob, cpu_blob) in enumerate(zip(gpu_layer.blobs, cpu_layer.blobs)):
            if gpu_layer.param_propagate_down[index]:
                np.testing.assert_allclose(gpu_blob.diff, cpu_blob.diff, rtol=rtol, atol=atol,
                                           err_msg=f"param {index} diff")
    return gpu_layer, gpu_bottom, gpu_top


def gradient_check_gpu(text, bottom_arrays, num_tops=1, seed=7, check_bottom=None, phase="TRAIN", **checker):
    """Caffe's GradientChecker on the layer in ``text`` in GPU mode (float64, central differences)."""
    fillers.set_random_seed(seed)
    layer = layer_from_text(text, dtype=np.float64, num_tops=num_tops, phase=phase)
    assert getattr(layer, "backward_gpu", None) is not None, f"{layer.type} has no backward_gpu"
    bottom = make_blobs(*bottom_arrays, dtype=np.float64)
    top = empty_blobs(num_tops, dtype=np.float64)
    checker.setdefault("stepsize", 1e-3)
    checker.setdefault("threshold", 1e-6)
    mode.set_mode_gpu()
    try:
        return GradientChecker(**checker).check_layer(layer, bottom, top, check_bottom=check_bottom)
    finally:
        mode.set_mode_cpu()
