"""TanH: ``y = tanh(x)``; gradient ``dx = dy * (1 - y^2)`` (from the output, so it works in place).

CPU: numpy on chunks of the blob, run on minicaffe's threads
(:mod:`minicaffe.threads`; numpy's vectorized tanh releases the GIL); a small
blob stays on one thread.

GPU: one thread per element for Forward (``math.tanh``) and for Backward (from
the output, so in place needs no copy).
"""

import math

import numpy as np

from .. import gpu, threads
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register


@gpu.jit
def _tanh_forward_gpu(x, y):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = math.tanh(x[i])


@gpu.jit
def _tanh_backward_gpu(y, dy, dx):
    i = cuda.grid(1)
    if i < dx.size:
        value = y[i]
        dx[i] = dy[i] * (1.0 - value * value)


@register("TanH")
class TanHLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(-1)
        y = top[0].data.reshape(-1)
        threads.parallel_for(x.size, lambda start, stop: np.tanh(x[start:stop], out=y[start:stop]))

    def forward_gpu(self, bottom, top):
        x = bottom[0].gpu_data
        y = top[0].mutable_gpu_data
        _tanh_forward_gpu[gpu.blocks_for(y.size), gpu.THREADS](x, y)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, dy = top[0].gpu_data, top[0].gpu_diff
        dx = bottom[0].mutable_gpu_diff
        _tanh_backward_gpu[gpu.blocks_for(dx.size), gpu.THREADS](y, dy, dx)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data.reshape(-1)
        dy = top[0].diff.reshape(-1)
        dx = bottom[0].diff.reshape(-1)

        def chunk(start, stop):
            values = y[start:stop]
            dx[start:stop] = dy[start:stop] * (1 - values * values)

        threads.parallel_for(y.size, chunk)
