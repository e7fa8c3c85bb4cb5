"""Axpy: ``top = a * x + y``, one ``a`` per sample and channel, broadcast over the rest of ``x``.

From SENet's Caffe code (hujie-frank/SENet), where it fuses the channel scaling
of a squeeze-and-excitation block with the residual sum. Three bottoms: ``a``
of shape (N, C) or (N, C, 1, 1), ``x`` of shape (N, C, ...) and ``y`` of
``x``'s shape; the top has ``x``'s shape. No parameters.

Viewing ``x`` as (N * C) rows of S: ``top[r, s] = a[r] * x[r, s] + y[r, s]``.
Gradients: ``da[r] = sum_s dy[r, s] * x[r, s]``; ``dx = a * dy``; ``dy_y = dy``.

Checks (the fork's, as errors naming the layer and both shapes): ``a``'s first
two axes are ``x``'s and the rest are 1, and ``y`` has ``x``'s shape.

Deviation from the fork: the fork computes ``da`` in ``x``'s diff as scratch and
so, with ``propagate_down`` for ``a`` but not for ``x``, zeroes ``x``'s diff;
here a bottom that takes no gradient keeps its diff as it was. In place, the
top may be ``y`` or ``x`` (``x``'s data is then kept for ``da``), not ``a``.

CPU: numba kernels over chunks of rows on minicaffe's threads; each ``da[r]``
is summed by one thread in a fixed order, so results are the same at any thread
count.

GPU: Forward and the element gradients (``dx``, ``y``'s copy) are one thread
per element; ``da`` is one thread per row, summing its S products in float64
in a fixed order (deterministic, where the fork's CUDA code reduces each row in
shared memory). In place with ``x`` the input is kept in a device buffer.
"""

import numpy as np

from ... import gpu, gpu_blas, threads
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError
from ...kernels import cpu_kernel
from ...layer import Layer
from ...registry import register


@cpu_kernel(nogil=True)
def axpy_forward(a, x, y, out, start, stop):
    """out[r] = a[r] * x[r] + y[r] over rows [start, stop) of (rows, S) views (out may be x or y)."""
    for r in range(start, stop):
        scale = a[r]
        xs, ys, outs = x[r], y[r], out[r]
        for s in range(outs.size):
            outs[s] = scale * xs[s] + ys[s]


@cpu_kernel(nogil=True)
def axpy_backward(a, x, dy, da, dx, dyy, want_a, want_x, copy_y, start, stop):
    """Rows [start, stop): ``da[r] = dy[r] . x[r]``, ``dyy[r] = dy[r]``, then ``dx[r] = a[r] * dy[r]``
    (last, since in place with x, ``dx`` is ``dy``)."""
    for r in range(start, stop):
        gradient = dy[r]
        if want_a:
            xs = x[r]
            total = da.dtype.type(0.0)
            for s in range(gradient.size):
                total += gradient[s] * xs[s]
            da[r] = total
        if copy_y:
            dyy[r, :] = gradient
        if want_x:
            scale = a[r]
            out = dx[r]
            for s in range(out.size):
                out[s] = scale * gradient[s]


# ---------------------------------------------------------------- GPU kernels
# Flat arrays; element i belongs to row i // spatial, whose scale is a[i // spatial].

@gpu.jit
def _axpy_forward_gpu(a, x, y, out, spatial):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i // spatial] * x[i] + y[i]


@gpu.jit
def _axpy_scale_gradient_gpu(x, dy, da, spatial):
    """da[r] = sum_s dy[r, s] * x[r, s], one thread per row."""
    r = cuda.grid(1)
    if r < da.size:
        total = 0.0
        base = r * spatial
        for s in range(spatial):
            total += dy[base + s] * x[base + s]
        da[r] = total


@gpu.jit
def _axpy_element_gradients_gpu(a, dy, dx, dyy, want_x, copy_y, spatial):
    """dyy = dy (when copy_y), then dx = a * dy (when want_x; in place with x, dx is dy)."""
    i = cuda.grid(1)
    if i < dy.size:
        gradient = dy[i]
        if copy_y:
            dyy[i] = gradient
        if want_x:
            dx[i] = a[i // spatial] * gradient


@register("Axpy")
class AxpyLayer(Layer):
    exact_bottoms = 3
    exact_tops = 1
    fork = "SENet (hujie-frank/SENet)"

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise GraphError("Axpy's top cannot be its bottom 0 (the scale a) in place; it may be x or y",
                             layer=self.name)
        self._saved_x = None

    def reshape(self, bottom, top):
        a, x, y = (blob.shape for blob in bottom)
        if len(x) < 2:
            raise self.shape_error(f"Axpy's x (bottom 1, '{bottom[1].name}') needs a channel axis (N x C x ...)",
                                   actual=x)
        expected = tuple(x[:2]) + (1,) * max(len(a) - 2, 0)
        if tuple(a) != expected:
            raise self.shape_error(f"Axpy's a (bottom 0, '{bottom[0].name}') must be (N, C) or (N, C, 1, 1) for "
                                   f"x (bottom 1, '{bottom[1].name}') of shape {tuple(x)}",
                                   expected=expected, actual=a)
        if tuple(y) != tuple(x):
            raise self.shape_error(f"Axpy's y (bottom 2, '{bottom[2].name}') must have the shape of "
                                   f"x (bottom 1, '{bottom[1].name}')", expected=x, actual=y)
        top[0].reshape(x)

    @staticmethod
    def _rows(array, rows):
        return array.reshape(rows, array.size // rows if rows else 0)

    def forward(self, bottom, top):
        rows = bottom[0].data.size
        a = bottom[0].data.reshape(-1)
        x = self._rows(bottom[1].data, rows)
        if top[0] is bottom[1]:                 # da needs x, which the top overwrites
            if self._saved_x is None or self._saved_x.shape != x.shape or self._saved_x.dtype != x.dtype:
                self._saved_x = np.empty_like(x)
            saved = self._saved_x
            threads.parallel_for(rows, lambda start, stop: np.copyto(saved[start:stop], x[start:stop]), x.shape[1])
        y = self._rows(bottom[2].data, rows)
        out = self._rows(top[0].data, rows)
        threads.parallel_for(rows, lambda start, stop: axpy_forward(a, x, y, out, start, stop), x.shape[1])

    def backward(self, top, propagate_down, bottom):
        want_a, want_x, want_y = (bool(flag) for flag in propagate_down[:3])
        copy_y = want_y and bottom[2] is not top[0]      # in place with y, its diff is dy already
        if not (want_a or want_x or copy_y):
            return
        rows = bottom[0].data.size
        a = bottom[0].data.reshape(-1)
        da = bottom[0].diff.reshape(-1)
        x = self._saved_x if bottom[1] is top[0] else self._rows(bottom[1].data, rows)
        dy = self._rows(top[0].diff, rows)
        dx = self._rows(bottom[1].diff, rows)
        dyy = self._rows(bottom[2].diff, rows)
        threads.parallel_for(rows, lambda start, stop: axpy_backward(a, x, dy, da, dx, dyy, want_a, want_x, copy_y,
                                                                     start, stop), x.shape[1])

    # ------------------------------------------------------------ GPU
    def forward_gpu(self, bottom, top):
        count = bottom[1].count
        rows = bottom[0].count
        spatial = count // rows if rows else 0
        x = bottom[1].gpu_data
        if top[0] is bottom[1]:                 # da needs x, which the top overwrites
            saved = getattr(self, "_saved_x_gpu", None)
            if saved is None or saved.size != count or saved.dtype != x.dtype:
                saved = self._saved_x_gpu = gpu.device_empty(count, x.dtype)
            gpu_blas.copy(x, saved)
        if count:
            _axpy_forward_gpu[gpu.blocks_for(count), gpu.THREADS](
                bottom[0].gpu_data, x, bottom[2].gpu_data, top[0].mutable_gpu_data, int(spatial))

    def backward_gpu(self, top, propagate_down, bottom):
        want_a, want_x, want_y = (bool(flag) for flag in propagate_down[:3])
        copy_y = want_y and bottom[2] is not top[0]      # in place with y, its diff is dy already
        count, rows = bottom[1].count, bottom[0].count
        if not (want_a or want_x or copy_y) or not count:
            return
        spatial = count // rows
        dy = top[0].gpu_diff
        if want_a:                                       # before dx: in place with x, dx overwrites dy
            x = self._saved_x_gpu if bottom[1] is top[0] else bottom[1].gpu_data
            _axpy_scale_gradient_gpu[gpu.blocks_for(rows), gpu.THREADS](
                x, dy, bottom[0].mutable_gpu_diff, int(spatial))
        if want_x or copy_y:
            dx = bottom[1].mutable_gpu_diff if want_x else dy
            dyy = bottom[2].mutable_gpu_diff if copy_y else dy
            _axpy_element_gradients_gpu[gpu.blocks_for(count), gpu.THREADS](
                bottom[0].gpu_data, top[0].gpu_diff, dx, dyy, want_x, copy_y, int(spatial))
