"""LSTMUnit: one time step of Caffe's LSTM cell, the nonlinearity the LSTM layer unrolls.

Bottoms: ``c_prev`` (1 x N x D), the gate pre-activations ``x`` (1 x N x 4D, the
four gates stacked along the last axis in Caffe's order i, f, o, g), and the
sequence-continuation indicators ``cont`` (1 x N). Tops: the cell ``c`` and the
hidden state ``h``, both 1 x N x D::

    i = sigmoid(x_i)    f = cont * sigmoid(x_f)    o = sigmoid(x_o)    g = tanh(x_g)
    c = f * c_prev + i * g
    h = o * tanh(c)

``cont`` 0 starts a new sequence: the forget gate is zeroed, so the previous
cell does not leak in (Caffe tests ``cont == 0`` exactly, as here).

Backward, with ``dc_total = dc + dh * o * (1 - tanh(c)^2)``::

    dc_prev = dc_total * f
    dx_i = dc_total * g * i (1 - i)          dx_o = dh * tanh(c) * o (1 - o)
    dx_f = dc_total * c_prev * cont * s (1 - s)   (s = sigmoid(x_f))
    dx_g = dc_total * i * (1 - g^2)

``cont`` takes no gradient (``never_backward_bottoms``); if a net asks for one
anyway, its diff is set to 0 (Caffe aborts).

Deviation from Caffe: Caffe computes ``dx_f`` as ``f (1 - f)`` with ``f`` the
already-gated ``cont * s``, which is the derivative only for ``cont`` 0 or 1;
here it is ``cont * s (1 - s)``, the true derivative for any ``cont``. For the
binary indicators recurrent nets use the two agree exactly.

GPU: one thread per (n, d) computes the four gate activations, ``c`` and ``h``
(Caffe's ``LSTMActsForward`` and ``LSTMUnitForward`` fused), and keeps the
activations and ``tanh(c)`` in device buffers on the layer; Backward's thread
per (n, d) writes ``dc_prev`` and the four gate gradients (Caffe's
``LSTMUnitBackward`` and ``LSTMActsBackward`` fused), with the true forget-gate
derivative as on the CPU.
"""

import math

import numpy as np

from .. import gpu, gpu_blas
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register
from .sigmoid import sigmoid_gpu


@gpu.jit
def _lstm_unit_forward_gpu(c_prev, x, cont, dim, acts, tanh_c, c, h):
    """x and acts are (N, 4, D) flat, the rest (N, D) flat; cont (N)."""
    index = cuda.grid(1)
    if index < c.size:
        n = index // dim
        d = index - n * dim
        base = 4 * dim * n + d
        i = sigmoid_gpu(x[base])
        s = sigmoid_gpu(x[base + dim])
        o = sigmoid_gpu(x[base + 2 * dim])
        g = math.tanh(x[base + 3 * dim])
        acts[base] = i
        acts[base + dim] = s
        acts[base + 2 * dim] = o
        acts[base + 3 * dim] = g
        # From here on the stored (blob-dtype) values, so that float32 results round as the CPU's do.
        gate = cont[n]
        f = 0.0 if gate == 0 else gate * acts[base + dim]
        cell = f * c_prev[index] + acts[base] * acts[base + 3 * dim]
        c[index] = cell
        t = math.tanh(c[index])
        tanh_c[index] = t
        h[index] = acts[base + 2 * dim] * tanh_c[index]


@gpu.jit
def _lstm_unit_backward_gpu(c_prev, cont, dim, acts, tanh_c, dc, dh, dc_prev, dx, want_c_prev, want_x):
    index = cuda.grid(1)
    if index < dc.size:
        n = index // dim
        d = index - n * dim
        base = 4 * dim * n + d
        i = acts[base]
        s = acts[base + dim]
        o = acts[base + 2 * dim]
        g = acts[base + 3 * dim]
        gate = 0.0 if cont[n] == 0 else cont[n]
        t = tanh_c[index]
        total = dc[index] + dh[index] * o * (1.0 - t * t)
        if want_c_prev:
            dc_prev[index] = total * (gate * s)
        if want_x:
            dx[base] = total * g * (i * (1.0 - i))
            dx[base + dim] = total * c_prev[index] * (gate * s * (1.0 - s))
            dx[base + 2 * dim] = dh[index] * t * (o * (1.0 - o))
            dx[base + 3 * dim] = total * i * (1.0 - g * g)


def _sigmoid(x):
    """``1 / (1 + exp(-x))`` without overflow for large ``|x|``."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, z) / (1 + z)


@register("LSTMUnit")
class LSTMUnitLayer(Layer):
    exact_bottoms = 3
    exact_tops = 2
    never_backward_bottoms = (2,)

    def reshape(self, bottom, top):
        c_prev, gates, cont = bottom
        if c_prev.ndim != 3 or c_prev.shape[0] != 1:
            raise self.shape_error("bottom 0 (c_prev) must be 1 x N x D", actual=c_prev.shape)
        num, dim = c_prev.shape[1], c_prev.shape[2]
        if gates.shape != (1, num, 4 * dim):
            raise self.shape_error("bottom 1 (the gate inputs) must be 1 x N x 4D, D from c_prev",
                                   expected=(1, num, 4 * dim), actual=gates.shape)
        if cont.shape != (1, num):
            raise self.shape_error("bottom 2 (cont) must be 1 x N", expected=(1, num), actual=cont.shape)
        self.num, self.dim = num, dim
        top[0].reshape(c_prev.shape)
        top[1].reshape(c_prev.shape)

    def forward(self, bottom, top):
        num, dim = self.num, self.dim
        x = bottom[1].data.reshape(num, 4, dim)
        cont = bottom[2].data.reshape(num, 1)
        c_prev = bottom[0].data.reshape(num, dim)
        acts = np.empty((num, 4, dim), dtype=self.dtype)
        acts[:, :3] = _sigmoid(x[:, :3])
        np.tanh(x[:, 3], out=acts[:, 3])
        # Saved for Backward: the gate activations before cont gates f.
        self._acts = acts
        i, s, o, g = acts[:, 0], acts[:, 1], acts[:, 2], acts[:, 3]
        f = np.where(cont == 0, 0, cont * s)
        c = top[0].data.reshape(num, dim)
        np.multiply(f, c_prev, out=c)
        c += i * g
        self._tanh_c = np.tanh(c)
        np.multiply(o, self._tanh_c, out=top[1].data.reshape(num, dim))

    def forward_gpu(self, bottom, top):
        count = self.num * self.dim
        acts = getattr(self, "_gpu_acts", None)
        if acts is None or acts.size != 4 * count or acts.dtype != self.dtype:
            self._gpu_acts = gpu.device_empty(4 * count, self.dtype)
            self._gpu_tanh_c = gpu.device_empty(count, self.dtype)
        _lstm_unit_forward_gpu[gpu.blocks_for(count), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, bottom[2].gpu_data, self.dim, self._gpu_acts,
            self._gpu_tanh_c, top[0].mutable_gpu_data, top[1].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[2]:
            gpu_blas.fill(bottom[2].mutable_gpu_diff, 0)
        if not (propagate_down[0] or propagate_down[1]):
            return
        count = self.num * self.dim
        # A diff not asked for is still passed (the kernel leaves it alone): kernels take arrays only.
        dc_prev = bottom[0].mutable_gpu_diff if propagate_down[0] else self._gpu_tanh_c
        dx = bottom[1].mutable_gpu_diff if propagate_down[1] else self._gpu_acts
        _lstm_unit_backward_gpu[gpu.blocks_for(count), gpu.THREADS](
            bottom[0].gpu_data, bottom[2].gpu_data, self.dim, self._gpu_acts, self._gpu_tanh_c,
            top[0].gpu_diff, top[1].gpu_diff, dc_prev, dx, bool(propagate_down[0]), bool(propagate_down[1]))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            bottom[2].diff[...] = 0
        if not (propagate_down[0] or propagate_down[1]):
            return
        num, dim = self.num, self.dim
        cont = bottom[2].data.reshape(num, 1)
        c_prev = bottom[0].data.reshape(num, dim)
        dc = top[0].diff.reshape(num, dim)
        dh = top[1].diff.reshape(num, dim)
        acts, tanh_c = self._acts, self._tanh_c
        i, s, o, g = acts[:, 0], acts[:, 1], acts[:, 2], acts[:, 3]
        gate = np.where(cont == 0, 0, cont)
        dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
        if propagate_down[0]:
            np.multiply(dc_total, gate * s, out=bottom[0].diff.reshape(num, dim))
        if propagate_down[1]:
            dx = bottom[1].diff.reshape(num, 4, dim)
            np.multiply(dc_total * g, i * (1 - i), out=dx[:, 0])
            np.multiply(dc_total * c_prev, gate * s * (1 - s), out=dx[:, 1])
            np.multiply(dh * tanh_c, o * (1 - o), out=dx[:, 2])
            np.multiply(dc_total * i, 1 - g * g, out=dx[:, 3])
