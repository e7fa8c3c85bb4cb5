"""InnerProduct and Embed on the GPU (device GEMMs; Embed's gather and atomic scatter kernels) against their
CPU kernels, and gradient checks in GPU mode. Tiny shapes: the simulator runs a few thousand threads a second."""

import numpy as np
import pytest

from .helpers import compare_devices
from .test_conv_gpu import gradient_check_gpu, parameter_diffs_after_backwards

rng = np.random.default_rng(26)

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def ip_text(options):
    return f'name: "ip" type: "InnerProduct" inner_product_param {{ {options} {FILLERS} }}'


@pytest.mark.parametrize("options, shape", [
    ("num_output: 3", (2, 2, 2)),
    ("num_output: 3 transpose: true", (2, 4)),
    ("num_output: 2 axis: 2 bias_term: false", (2, 2, 3)),
    ("num_output: 2 axis: -1 transpose: true", (1, 3, 2)),
])
def test_inner_product(options, shape):
    compare_devices(ip_text(options), [rng.standard_normal(shape)], propagate_down=[True])


def test_inner_product_without_bottom_gradient():
    compare_devices(ip_text("num_output: 2"), [rng.standard_normal((3, 2))], propagate_down=[False])


@pytest.mark.parametrize("transpose", ["false", "true"])
def test_inner_product_gradient(transpose):
    gradient_check_gpu(ip_text(f"num_output: 2 transpose: {transpose}"), [rng.standard_normal((2, 3))])


def embed_text(options=""):
    return f'name: "embed" type: "Embed" embed_param {{ num_output: 3 input_dim: 4 {options} {FILLERS} }}'


@pytest.mark.parametrize("options", ["", "bias_term: false"])
def test_embed(options):
    indices = np.array([[3, 0, 3], [1, 3, 0]], dtype=np.float64)     # repeated indices: atomics add both
    compare_devices(embed_text(options), [indices], propagate_down=[False])


def test_embed_gradient_of_the_weights():
    gradient_check_gpu(embed_text(), [np.array([2, 0, 2], dtype=np.float64)], check_bottom=[])


@pytest.mark.parametrize("bad", [4, 1.5, -1])
def test_embed_refuses_a_bad_index_on_the_gpu(bad):
    from minicaffe import mode
    from minicaffe.errors import GraphError
    from minicaffe.testing import empty_blobs, layer_from_text, make_blobs
    layer = layer_from_text(embed_text(), dtype=np.float32)
    bottom, top = make_blobs(np.array([0, 2, bad, bad]), dtype=np.float32), empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    mode.set_mode_gpu()
    try:
        with pytest.raises(GraphError, match=f"index {bad:g} is not a whole number in \\[0, 4\\)"):
            layer.run_forward(bottom, top)
    finally:
        mode.set_mode_cpu()


@pytest.mark.parametrize("text, array", [
    (ip_text("num_output: 2"), rng.standard_normal((2, 3))),
    (ip_text("num_output: 2 transpose: true"), rng.standard_normal((2, 3))),
    (embed_text(), np.array([1, 3, 1], dtype=np.float64)),
])
def test_parameter_diffs_accumulate_on_the_gpu(text, array):
    once = parameter_diffs_after_backwards(text, [array], False, 1)
    for gpu_diff, cpu_diff in zip(parameter_diffs_after_backwards(text, [array], True, 2), once):
        np.testing.assert_allclose(gpu_diff, 2 * cpu_diff, rtol=1e-5, atol=1e-6)
