"""Dropout: in TRAIN, zero each element with probability ``dropout_ratio`` and scale
the survivors by ``1 / (1 - ratio)``; in TEST, copy the input unchanged.

TRAIN draws a fresh keep-mask (keep probability ``1 - ratio``) on every Forward
from minicaffe's generator (reseed with :func:`minicaffe.set_random_seed`);
Backward applies the same mask and scale to the gradient. TEST's Backward is
a copy. Works in place, as Dropout usually is in Caffe nets.

GPU: TRAIN draws the mask on the device, as Caffe's ``DropoutForward`` does:
each element's thread hashes its index with two 32-bit seeds (a counter-based
generator: no per-thread state to keep or copy) into a uniform unsigned int, and
keeps the element when it is above ``UINT_MAX * ratio`` (Caffe's threshold), so
the keep probability is ``1 - ratio``. The seeds come from minicaffe's generator
on every Forward, so :func:`minicaffe.set_random_seed` makes the GPU masks
reproducible (they differ from the CPU's, which draws from numpy). The mask,
with the scale ``1 / (1 - ratio)`` folded in, stays on the device for Backward.
TEST copies (nothing at all in place).
"""

import numpy as np

from .. import gpu, gpu_blas
from ..errors import GraphError
from ..fillers import rng
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..graph import TRAIN
from ..layer import Layer
from ..registry import register

_UINT_MAX = 2 ** 32 - 1


@gpu.device
def _hash32(value):
    """A 32-bit integer hash with good avalanche (two multiply-xorshift rounds); ``value`` in [0, 2^32).
    Kept in int64 with a 27-bit multiplier, so nothing overflows."""
    value = ((value >> 16) ^ value) * 0x45D9F3B & 0xFFFFFFFF
    value = ((value >> 16) ^ value) * 0x45D9F3B & 0xFFFFFFFF
    return (value >> 16) ^ value


@gpu.jit
def _dropout_forward_gpu(x, y, mask, seed_low, seed_high, threshold, scale):
    i = cuda.grid(1)
    if i < y.size:
        bits = _hash32(_hash32((i & 0xFFFFFFFF) ^ seed_low) ^ ((i >> 32) ^ seed_high))
        keep = scale if bits > threshold else 0.0
        mask[i] = keep
        y[i] = x[i] * mask[i]


@gpu.jit
def _dropout_backward_gpu(dy, mask, dx):
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = dy[i] * mask[i]


@register("Dropout")
class DropoutLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        self.ratio = self.layer_param.dropout_param.dropout_ratio
        # Caffe only DCHECKs 0 < ratio < 1; ratio 0 is harmless (mask all ones),
        # ratio 1 would make the scale infinite.
        if not 0.0 <= self.ratio < 1.0:
            raise GraphError(f"dropout_param.dropout_ratio must be in [0, 1), got {self.ratio}",
                             layer=self.name)
        self.scale = 1.0 / (1.0 - self.ratio)
        self.mask = None

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)
        self.mask = None
        self.gpu_mask_shape = None

    def forward(self, bottom, top):
        if self.phase != TRAIN:
            if top[0].data is not bottom[0].data:
                top[0].data[...] = bottom[0].data
            return
        keep = rng().random(bottom[0].shape) < (1.0 - self.ratio)
        # The mask with the scale folded in: 0 or 1/(1-ratio), in the blob's dtype.
        self.mask = keep.astype(self.dtype) * self.dtype.type(self.scale)
        np.multiply(bottom[0].data, self.mask, out=top[0].data)

    def forward_gpu(self, bottom, top):
        x = bottom[0].gpu_data
        y = top[0].mutable_gpu_data
        if self.phase != TRAIN:
            if x is not y:
                gpu_blas.copy(x, y)
            return
        mask = getattr(self, "gpu_mask", None)
        if mask is None or mask.size != y.size or mask.dtype != y.dtype:
            mask = self.gpu_mask = gpu.device_empty(y.size, y.dtype)
        seed_low, seed_high = (int(seed) for seed in rng().integers(0, 2 ** 32, size=2))
        _dropout_forward_gpu[gpu.blocks_for(y.size), gpu.THREADS](
            x, y, mask, seed_low, seed_high, int(_UINT_MAX * self.ratio), self.dtype.type(self.scale))
        self.gpu_mask_shape = top[0].shape

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].gpu_diff
        dx = bottom[0].mutable_gpu_diff
        if self.phase != TRAIN:
            if dx is not dy:
                gpu_blas.copy(dy, dx)
            return
        if getattr(self, "gpu_mask_shape", None) != top[0].shape:
            raise GraphError("Dropout Backward before a TRAIN Forward at this shape", layer=self.name)
        _dropout_backward_gpu[gpu.blocks_for(dx.size), gpu.THREADS](dy, self.gpu_mask, dx)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.phase != TRAIN:
            if bottom[0].diff is not top[0].diff:
                bottom[0].diff[...] = top[0].diff
            return
        if self.mask is None or self.mask.shape != top[0].shape:
            raise GraphError("Dropout Backward before a TRAIN Forward at this shape", layer=self.name)
        np.multiply(top[0].diff, self.mask, out=bottom[0].diff)
