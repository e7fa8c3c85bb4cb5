"""minicaffe.gpu_blas: GEMM (cuBLAS, numpy under the simulator), vector updates and reductions vs numpy."""

import numpy as np
import pytest

from minicaffe import gpu, gpu_blas

rng = np.random.default_rng(25)


@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (0.5, 2.0)])
def test_gemm_against_numpy(trans_a, trans_b, alpha, beta):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4, 5)).astype(np.float32)
    c = rng.standard_normal((3, 5)).astype(np.float32)
    left = np.ascontiguousarray(a.T) if trans_a else a
    right = np.ascontiguousarray(b.T) if trans_b else b
    out = gpu.to_device(c)
    gpu_blas.gemm(gpu.to_device(left), gpu.to_device(right), out, trans_a, trans_b, alpha, beta)
    np.testing.assert_allclose(out.copy_to_host(), alpha * a @ b + beta * c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_operations_and_reductions(dtype):
    x = rng.standard_normal(300).astype(dtype)      # more than one block of threads
    y = rng.standard_normal(300).astype(dtype)
    dx, dy = gpu.to_device(x), gpu.to_device(y)
    assert gpu_blas.total(dx) == pytest.approx(float(x.sum(dtype=np.float64)), rel=1e-6)
    assert gpu_blas.absolute_sum(dx) == pytest.approx(float(np.abs(x).sum(dtype=np.float64)), rel=1e-6)
    assert gpu_blas.dot(dx, dy) == pytest.approx(float(np.dot(x.astype(np.float64), y)), rel=1e-6, abs=1e-9)
    gpu_blas.axpby(2.0, dx, 0.5, dy)
    np.testing.assert_allclose(dy.copy_to_host(), 2 * x + 0.5 * y, rtol=1e-6)
    gpu_blas.axpy(-1.0, dx, dy)
    np.testing.assert_allclose(dy.copy_to_host(), x + 0.5 * y, rtol=1e-6)
    gpu_blas.scale(dy, 3.0)
    np.testing.assert_allclose(dy.copy_to_host(), 3 * (x + 0.5 * y), rtol=1e-6)
    gpu_blas.copy(dx, dy)
    np.testing.assert_array_equal(dy.copy_to_host(), x)
    gpu_blas.fill(dy, 1.5)
    np.testing.assert_array_equal(dy.copy_to_host(), np.full(300, 1.5, dtype))
    gpu_blas.gemv(gpu.to_device(x[:12].reshape(3, 4).copy()), gpu.to_device(y[:4].copy()), dx[:3])
    np.testing.assert_allclose(dx.copy_to_host()[:3], x[:12].reshape(3, 4) @ y[:4], rtol=1e-5)
