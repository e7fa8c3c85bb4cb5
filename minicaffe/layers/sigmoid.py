"""Sigmoid: ``y = 1 / (1 + exp(-x))``.

Evaluated through ``z = exp(-|x|)``, which never overflows: ``1 / (1 + z)`` for
``x >= 0`` and ``z / (1 + z)`` for ``x < 0``. This keeps full relative precision
for large negative ``x`` too (BVLC Caffe's ``0.5 * tanh(0.5 * x) + 0.5`` rounds
those to 0; both agree to rounding elsewhere). Gradient from the output alone:
``dx = dy * y * (1 - y)``, so it works in place.

CPU: one-pass numba kernels over chunks of the blob on minicaffe's threads
(:mod:`minicaffe.threads`; a small blob stays on one thread), with
:func:`minicaffe.kernels.exp` (vectorized in float32, libm in float64). In
float32, ``y`` is 0 below ``x = -87.3`` (where ``exp`` leaves the normal
range; the exact value there is a denormal under 1e-38).

GPU: one thread per element for Forward and for Backward, through the same
``exp(-|x|)`` form (:func:`sigmoid_gpu`, a device function LSTMUnit, BNLL and
Swish call too); Backward reads only the output, so in place needs no copy.
"""

import math

import numpy as np

from .. import gpu, threads
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..kernels import cpu_kernel, exp
from ..layer import Layer
from ..registry import register

_UNDERFLOW = {np.dtype(np.float32): np.float32(-87.33654), np.dtype(np.float64): -np.inf}


@cpu_kernel(nogil=True, inline="always")
def _sigmoid(value, underflow, one, zero):
    exponent = -abs(value)
    z = zero if exponent < underflow else exp(exponent)     # NaN goes through exp: sigmoid(NaN) is NaN
    return (one if value >= 0 else z) / (one + z)


# Slices indexed from 0, and one array in place, so that LLVM vectorizes (see relu.py).

@cpu_kernel(nogil=True)
def sigmoid_forward(x, y, underflow, in_place, start, stop):
    """y = sigmoid(x) for [start, stop); z = exp(-|x|) counts as 0 below ``underflow``."""
    y = y[start:stop]
    one, zero = y.dtype.type(1.0), y.dtype.type(0.0)
    if in_place:
        for i in range(y.size):
            y[i] = _sigmoid(y[i], underflow, one, zero)
    else:
        x = x[start:stop]
        for i in range(x.size):
            y[i] = _sigmoid(x[i], underflow, one, zero)


@cpu_kernel(nogil=True)
def sigmoid_backward(y, dy, dx, in_place, start, stop):
    y, dx = y[start:stop], dx[start:stop]
    one = y.dtype.type(1.0)
    if in_place:
        for i in range(y.size):
            dx[i] = dx[i] * y[i] * (one - y[i])
    else:
        dy = dy[start:stop]
        for i in range(y.size):
            dx[i] = dy[i] * y[i] * (one - y[i])


@gpu.device
def sigmoid_gpu(value):
    """1 / (1 + exp(-value)) through z = exp(-|value|), which never overflows."""
    z = math.exp(-abs(value))
    return (1.0 if value >= 0 else z) / (1.0 + z)


@gpu.jit
def _sigmoid_forward_gpu(x, y):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = sigmoid_gpu(x[i])


@gpu.jit
def _sigmoid_backward_gpu(y, dy, dx):
    i = cuda.grid(1)
    if i < dx.size:
        value = y[i]
        dx[i] = dy[i] * value * (1.0 - value)


@register("Sigmoid")
class SigmoidLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(-1)
        y = top[0].data.reshape(-1)
        underflow = _UNDERFLOW.get(x.dtype, -np.inf)
        in_place = bottom[0] is top[0]
        threads.parallel_for(x.size, lambda start, stop: sigmoid_forward(x, y, underflow, in_place, start, stop))

    def forward_gpu(self, bottom, top):
        x = bottom[0].gpu_data
        y = top[0].mutable_gpu_data
        _sigmoid_forward_gpu[gpu.blocks_for(y.size), gpu.THREADS](x, y)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, dy = top[0].gpu_data, top[0].gpu_diff
        dx = bottom[0].mutable_gpu_diff
        _sigmoid_backward_gpu[gpu.blocks_for(dx.size), gpu.THREADS](y, dy, dx)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data.reshape(-1)
        dy = top[0].diff.reshape(-1)
        dx = bottom[0].diff.reshape(-1)
        in_place = bottom[0] is top[0]
        threads.parallel_for(y.size, lambda start, stop: sigmoid_backward(y, dy, dx, in_place, start, stop))
