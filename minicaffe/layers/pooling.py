"""Pooling: MAX, AVE and STOCHASTIC pooling over the spatial axes of an N x C x H x W blob.

Geometry (Caffe's, with BVLC master's ``round_mode``): a window of ``kernel_h x
kernel_w`` cells moves by ``stride`` over the input padded by ``pad`` on each
side. The output extent per axis is::

    pooled = ceil((H + 2 pad - kernel) / stride) + 1        (round_mode CEIL, the default)
    pooled = floor((H + 2 pad - kernel) / stride) + 1       (round_mode FLOOR)

and, when either pad is non-zero, one last window that would start inside the
bottom/right padding (``(pooled - 1) stride >= H + pad``) is dropped: a 5x5
input with kernel 2, stride 2, pad 1 gives 3x3, not 4x4. Many real nets' shapes
depend on this rule. ``global_pooling`` makes the kernel the whole H x W
(pad 0, stride 1). Window ``(ph, pw)`` covers rows ``[ph stride_h - pad_h,
ph stride_h - pad_h + kernel_h)`` (likewise columns).

- MAX: ``y = max over the window`` (the window clipped to the input: padding
  never wins). The first maximum in row-major order wins; NaN never wins and the
  running maximum starts at -FLT_MAX, as in Caffe. Backward routes
  ``dy`` to the argmax cell. With a second top, that top holds the argmax as a
  float index into the input plane (``h * W + w``), as Caffe's mask top.
- AVE: ``y = sum over the window clipped to the input / divisor``, where the
  divisor is the window's size clipped to the *padded* bounds ``[-pad, H + pad)``:
  padded cells count, cells past the padding do not (Caffe's rule). Backward:
  each cell of a window gets ``dy / divisor``.
- STOCHASTIC (Zeiler & Fergus; Caffe has it on the GPU only, minicaffe on the
  CPU): in TRAIN, a cell of the window is drawn with probability ``x / sum(x)``
  (activations are expected to be non-negative, e.g. after a ReLU) using one
  uniform ``u`` per output from :func:`minicaffe.fillers.rng`: the first cell
  whose running sum reaches ``u * sum(x)``; ``y`` is that cell's value and
  Backward routes ``dy`` there. In TEST, ``y = sum(x^2) / sum(x)`` (0 when
  ``sum(x) <= 0``), whose gradient ``(2 x sum(x) - sum(x^2)) / sum(x)^2`` Backward
  applies.

Every Backward accumulates over overlapping windows (stride < kernel).

CPU: numba kernels, one plane of the N*C at a time, run on minicaffe's threads
over chunks of planes (:mod:`minicaffe.threads`; a small blob stays on one
thread). They used to run on one thread because numba's parallel kernels
fought BLAS's spinning threads for the cores; BLAS now runs on one thread
inside minicaffe's own pool, whose idle threads block (MAX 3x3 stride 2 over
4x64x112x112: 8.8 ms on one thread, 4.9 ms on two, on a 2-core machine). The
argmax mask and the stochastic draws live in buffers that are kept between
iterations and reallocated only when the shape changes. The kernels take
contiguous (planes, H, W) arrays and are shared with SPP and LRN
(:class:`Pooler`).

Deviations from Caffe, each where Caffe's behaviour is undefined or a defect:
a window that lies entirely outside the input (possible only when stride >
kernel) gives 0 for AVE (Caffe divides 0 by 0 or by a negative size) and is
skipped by MAX's Backward (Caffe indexes the plane at -1); STOCHASTIC accepts
padding (padded cells are zeros: they are never drawn and add nothing), where
Caffe refuses it; TEST-phase STOCHASTIC has a true gradient (Caffe's Backward
would reuse stale TRAIN draws); a window whose sum is negative in TRAIN draws
its last cell rather than leaving the output unset.
"""

from __future__ import annotations

import math

import numpy as np

from .. import kernels, threads
from ..errors import GraphError
from ..fillers import rng
from ..graph import TRAIN
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register

MAX = caffe_pb2.PoolingParameter.MAX
AVE = caffe_pb2.PoolingParameter.AVE
STOCHASTIC = caffe_pb2.PoolingParameter.STOCHASTIC
_METHOD_NAMES = {MAX: "MAX", AVE: "AVE", STOCHASTIC: "STOCHASTIC"}

_FLT_MAX = float(np.finfo(np.float32).max)


# ====================================================================== kernels
# Arrays are C-contiguous (planes, H, W) views; masks are int32 (planes, PH, PW)
# holding the chosen cell as h * W + w within its plane, -1 for none.

@kernels.cpu_kernel(nogil=True)
def max_pool_forward(x, top, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """MAX pooling: top = window max (first one wins), mask = its index in the plane."""
    planes, height, width = x.shape
    pooled_h, pooled_w = top.shape[1], top.shape[2]
    lowest = x.dtype.type(-_FLT_MAX)
    for p in range(planes):
        plane = x[p]
        out = top[p]
        where = mask[p]
        for ph in range(pooled_h):
            hstart = ph * stride_h - pad_h
            hend = min(hstart + kernel_h, height)
            hstart = max(hstart, 0)
            for pw in range(pooled_w):
                wstart = pw * stride_w - pad_w
                wend = min(wstart + kernel_w, width)
                wstart = max(wstart, 0)
                best = lowest
                index = -1
                for h in range(hstart, hend):
                    row = plane[h]
                    for w in range(wstart, wend):
                        if row[w] > best:
                            best = row[w]
                            index = h * width + w
                out[ph, pw] = best
                where[ph, pw] = index


@kernels.cpu_kernel(nogil=True)
def route_backward(top_diff, mask, bottom_diff):
    """MAX / STOCHASTIC (TRAIN) Backward: bottom_diff[mask] += top_diff. Arrays (planes, -1)."""
    planes, outputs = top_diff.shape
    for p in range(planes):
        diff = bottom_diff[p]
        gradient = top_diff[p]
        where = mask[p]
        for i in range(outputs):
            index = where[i]
            if index >= 0:
                diff[index] += gradient[i]


@kernels.cpu_kernel(nogil=True)
def ave_pool_forward(x, top, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """AVE pooling: window sum over the input / window size clipped to the padded bounds."""
    planes, height, width = x.shape
    pooled_h, pooled_w = top.shape[1], top.shape[2]
    for p in range(planes):
        plane = x[p]
        out = top[p]
        for ph in range(pooled_h):
            hstart = ph * stride_h - pad_h
            hend = min(hstart + kernel_h, height + pad_h)
            size_h = hend - hstart
            hstart = max(hstart, 0)
            hend = min(hend, height)
            for pw in range(pooled_w):
                wstart = pw * stride_w - pad_w
                wend = min(wstart + kernel_w, width + pad_w)
                size_w = wend - wstart
                wstart = max(wstart, 0)
                wend = min(wend, width)
                total = x.dtype.type(0.0)
                for h in range(hstart, hend):
                    row = plane[h]
                    for w in range(wstart, wend):
                        total += row[w]
                if hend > hstart and wend > wstart:
                    out[ph, pw] = total / x.dtype.type(size_h * size_w)
                else:
                    out[ph, pw] = 0.0


@kernels.cpu_kernel(nogil=True)
def ave_pool_backward(top_diff, bottom_diff, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """AVE Backward: each cell of a window gets top_diff / divisor (accumulated)."""
    planes, height, width = bottom_diff.shape
    pooled_h, pooled_w = top_diff.shape[1], top_diff.shape[2]
    for p in range(planes):
        diff = bottom_diff[p]
        gradient = top_diff[p]
        for ph in range(pooled_h):
            hstart = ph * stride_h - pad_h
            hend = min(hstart + kernel_h, height + pad_h)
            size_h = hend - hstart
            hstart = max(hstart, 0)
            hend = min(hend, height)
            for pw in range(pooled_w):
                wstart = pw * stride_w - pad_w
                wend = min(wstart + kernel_w, width + pad_w)
                size_w = wend - wstart
                wstart = max(wstart, 0)
                wend = min(wend, width)
                if hend <= hstart or wend <= wstart:
                    continue
                share = gradient[ph, pw] / bottom_diff.dtype.type(size_h * size_w)
                for h in range(hstart, hend):
                    row = diff[h]
                    for w in range(wstart, wend):
                        row[w] += share


@kernels.cpu_kernel(nogil=True)
def stochastic_pool_train(x, top, mask, uniform, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """STOCHASTIC, TRAIN: draw the first cell whose running sum reaches uniform * window sum."""
    planes, height, width = x.shape
    pooled_h, pooled_w = top.shape[1], top.shape[2]
    for p in range(planes):
        plane = x[p]
        for ph in range(pooled_h):
            hstart = ph * stride_h - pad_h
            hend = min(hstart + kernel_h, height)
            hstart = max(hstart, 0)
            for pw in range(pooled_w):
                wstart = pw * stride_w - pad_w
                wend = min(wstart + kernel_w, width)
                wstart = max(wstart, 0)
                total = x.dtype.type(0.0)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        total += plane[h, w]
                threshold = uniform[p, ph, pw] * total
                running = x.dtype.type(0.0)
                index = -1
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        running += plane[h, w]
                        index = h * width + w
                        if running >= threshold:
                            break
                    if running >= threshold:
                        break
                # The last cell when no running sum reached the threshold (a negative sum).
                mask[p, ph, pw] = index
                top[p, ph, pw] = plane[index // width, index % width] if index >= 0 else 0.0


@kernels.cpu_kernel(nogil=True)
def stochastic_pool_test(x, top, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """STOCHASTIC, TEST: the probability-weighted average sum(x^2) / sum(x), 0 when sum(x) <= 0."""
    planes, height, width = x.shape
    pooled_h, pooled_w = top.shape[1], top.shape[2]
    for p in range(planes):
        plane = x[p]
        for ph in range(pooled_h):
            hstart = max(ph * stride_h - pad_h, 0)
            hend = min(ph * stride_h - pad_h + kernel_h, height)
            for pw in range(pooled_w):
                wstart = max(pw * stride_w - pad_w, 0)
                wend = min(pw * stride_w - pad_w + kernel_w, width)
                total = x.dtype.type(0.0)
                squares = x.dtype.type(0.0)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        value = plane[h, w]
                        total += value
                        squares += value * value
                top[p, ph, pw] = squares / total if total > 0 else 0.0


@kernels.cpu_kernel(nogil=True)
def stochastic_pool_test_backward(x, top_diff, bottom_diff, kernel_h, kernel_w, stride_h, stride_w,
                                  pad_h, pad_w):
    """Gradient of sum(x^2)/sum(x): (2 x S - Q) / S^2 per cell (accumulated; none when S <= 0)."""
    planes, height, width = x.shape
    pooled_h, pooled_w = top_diff.shape[1], top_diff.shape[2]
    for p in range(planes):
        plane = x[p]
        for ph in range(pooled_h):
            hstart = max(ph * stride_h - pad_h, 0)
            hend = min(ph * stride_h - pad_h + kernel_h, height)
            for pw in range(pooled_w):
                wstart = max(pw * stride_w - pad_w, 0)
                wend = min(pw * stride_w - pad_w + kernel_w, width)
                total = x.dtype.type(0.0)
                squares = x.dtype.type(0.0)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        value = plane[h, w]
                        total += value
                        squares += value * value
                if not total > 0:
                    continue
                scale = top_diff[p, ph, pw] / (total * total)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        bottom_diff[p, h, w] += scale * (2 * plane[h, w] * total - squares)


# ====================================================================== geometry

def pooled_extent(size, kernel, stride, pad, floor=False, any_pad=None):
    """Caffe's output extent along one axis: rounded up (or down), then the drop rule.

    ``any_pad``: whether the layer pads at all (Caffe applies the drop rule to
    both axes as soon as either is padded); defaults to ``pad != 0``.
    Returns ``(extent, ok)``; ``ok`` is False when even after dropping one
    window the last one still starts inside the padding (Caffe aborts then).
    """
    # Caffe divides in single precision: static_cast<float>(size + 2 pad - kernel) / stride.
    ratio = float(np.float32(size + 2 * pad - kernel) / np.float32(stride))
    extent = (math.floor(ratio) if floor else math.ceil(ratio)) + 1
    if any_pad is None:
        any_pad = pad != 0
    ok = True
    if any_pad:
        if (extent - 1) * stride >= size + pad:
            extent -= 1
        ok = (extent - 1) * stride < size + pad
    return extent, ok


class Pooler:
    """One pooling geometry and method, with its reusable buffers; used by Pooling, SPP and LRN.

    ``forward(x, top)`` and ``backward(top_diff, x, bottom_diff)`` take
    contiguous (planes, H, W) and (planes, PH, PW) arrays; ``backward``
    accumulates into ``bottom_diff``.
    """

    def __init__(self, method, kernel_h, kernel_w, stride_h=1, stride_w=1, pad_h=0, pad_w=0, train=True,
                 layer=None):
        self.method = method
        self.layer = layer    # the owning layer's name, for messages
        self.kernel = (int(kernel_h), int(kernel_w))
        self.stride = (int(stride_h), int(stride_w))
        self.pad = (int(pad_h), int(pad_w))
        self.train = train
        self.mask = None      # argmax / drawn cell per output (MAX, STOCHASTIC TRAIN)
        self.uniform = None   # STOCHASTIC TRAIN draws

    def output_shape(self, height, width, floor=False):
        """(pooled_h, pooled_w, ok): ok is False when the geometry leaves a window in the padding."""
        any_pad = self.pad != (0, 0)
        pooled_h, ok_h = pooled_extent(height, self.kernel[0], self.stride[0], self.pad[0], floor, any_pad)
        pooled_w, ok_w = pooled_extent(width, self.kernel[1], self.stride[1], self.pad[1], floor, any_pad)
        return pooled_h, pooled_w, ok_h and ok_w

    def _args(self):
        return (self.kernel[0], self.kernel[1], self.stride[0], self.stride[1], self.pad[0], self.pad[1])

    def _mask_for(self, shape):
        if self.mask is None or self.mask.shape != shape:
            self.mask = np.empty(shape, dtype=np.int32)
        return self.mask

    def forward(self, x, top):
        args = self._args()
        if self.method == MAX:
            mask = self._mask_for(top.shape)
            self._over_planes(x, lambda a, b: max_pool_forward(x[a:b], top[a:b], mask[a:b], *args))
        elif self.method == AVE:
            self._over_planes(x, lambda a, b: ave_pool_forward(x[a:b], top[a:b], *args))
        elif self.train:
            if self.uniform is None or self.uniform.shape != top.shape or self.uniform.dtype != top.dtype:
                self.uniform = np.empty(top.shape, dtype=top.dtype)
            rng().random(out=self.uniform, dtype=top.dtype)
            mask, uniform = self._mask_for(top.shape), self.uniform
            self._over_planes(x, lambda a, b: stochastic_pool_train(x[a:b], top[a:b], mask[a:b], uniform[a:b], *args))
        else:
            self._over_planes(x, lambda a, b: stochastic_pool_test(x[a:b], top[a:b], *args))

    def backward(self, top_diff, x, bottom_diff):
        args = self._args()
        if self.method == AVE:
            self._over_planes(bottom_diff, lambda a, b: ave_pool_backward(top_diff[a:b], bottom_diff[a:b], *args))
        elif self.method == MAX or self.train:
            if self.mask is None or self.mask.shape != top_diff.shape:
                raise GraphError("pooling Backward before a Forward at this shape", layer=self.layer)
            planes = top_diff.shape[0]
            gradient = top_diff.reshape(planes, -1)
            mask = self.mask.reshape(planes, -1)
            diff = bottom_diff.reshape(planes, -1)
            self._over_planes(bottom_diff, lambda a, b: route_backward(gradient[a:b], mask[a:b], diff[a:b]))
        else:
            self._over_planes(x, lambda a, b: stochastic_pool_test_backward(x[a:b], top_diff[a:b],
                                                                           bottom_diff[a:b], *args))

    def _over_planes(self, planes, body):
        """``body(first, last)`` over chunks of the planes, on minicaffe's threads."""
        threads.parallel_for(planes.shape[0], body, planes.shape[1] * planes.shape[2])


# ====================================================================== layer

@register("Pooling")
class PoolingLayer(Layer):
    exact_bottoms = 1
    min_tops = 1
    max_tops = 2

    def setup(self, bottom, top):
        param = self.layer_param.pooling_param
        self.method = param.pool
        name = _METHOD_NAMES.get(self.method, str(self.method))
        if len(top) > 1 and self.method != MAX:
            raise GraphError(f"only MAX pooling has a second top (the argmax mask); {name} takes one top",
                             layer=self.name)
        self.global_pooling = param.global_pooling
        has_kernel = param.HasField("kernel_size")
        has_h, has_w = param.HasField("kernel_h"), param.HasField("kernel_w")
        if self.global_pooling:
            if has_kernel or has_h or has_w:
                raise GraphError("global_pooling takes the whole input as kernel: "
                                 "kernel_size / kernel_h / kernel_w cannot be given", layer=self.name)
        elif has_kernel == (has_h and has_w) or (has_h != has_w):
            raise GraphError("pooling_param: give kernel_size, or both kernel_h and kernel_w (not both forms)",
                             layer=self.name)
        if param.HasField("pad_h") or param.HasField("pad_w"):
            if param.HasField("pad") or not (param.HasField("pad_h") and param.HasField("pad_w")):
                raise GraphError("pooling_param: give pad, or both pad_h and pad_w (not both forms)",
                                 layer=self.name)
            pad = (param.pad_h, param.pad_w)
        else:
            pad = (param.pad, param.pad)
        if param.HasField("stride_h") or param.HasField("stride_w"):
            if param.HasField("stride") or not (param.HasField("stride_h") and param.HasField("stride_w")):
                raise GraphError("pooling_param: give stride, or both stride_h and stride_w (not both forms)",
                                 layer=self.name)
            stride = (param.stride_h, param.stride_w)
        else:
            stride = (param.stride, param.stride)
        if self.global_pooling:
            if pad != (0, 0) or stride != (1, 1):
                raise GraphError(f"global_pooling needs pad 0 and stride 1, got pad {pad} and stride {stride}",
                                 layer=self.name)
            kernel = (1, 1)  # set from the bottom in reshape
        elif has_kernel:
            kernel = (param.kernel_size, param.kernel_size)
        else:
            kernel = (param.kernel_h, param.kernel_w)
        if min(kernel) <= 0:
            raise GraphError(f"pooling kernel dimensions must be positive, got {kernel}", layer=self.name)
        if min(stride) <= 0:
            raise GraphError(f"pooling strides must be positive, got {stride}", layer=self.name)
        if pad != (0, 0) and (pad[0] >= kernel[0] or pad[1] >= kernel[1]):
            raise GraphError(f"pooling pad {pad} must be smaller than the kernel {kernel}", layer=self.name)
        self.floor = param.round_mode == caffe_pb2.PoolingParameter.FLOOR
        self.pooler = Pooler(self.method, kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1],
                             train=self.phase == TRAIN, layer=self.name)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.shape_error("Pooling takes a 4-D bottom (num, channels, height, width)",
                                   expected=("N", "C", "H", "W"), actual=shape)
        if top[0] is bottom[0]:
            raise GraphError("Pooling does not allow in-place computation", layer=self.name)
        num, channels, height, width = shape
        if self.global_pooling:
            self.pooler.kernel = (height, width)
        pooled_h, pooled_w, ok = self.pooler.output_shape(height, width, self.floor)
        if not ok or pooled_h <= 0 or pooled_w <= 0:
            raise self.shape_error(f"pooling kernel {self.pooler.kernel}, stride {self.pooler.stride}, "
                                   f"pad {self.pooler.pad} does not fit the bottom {shape} "
                                   f"(output {pooled_h}x{pooled_w})")
        top[0].reshape((num, channels, pooled_h, pooled_w))
        if len(top) > 1:
            top[1].reshape((num, channels, pooled_h, pooled_w))

    def _planes(self, array):
        n, c, h, w = array.shape
        return array.reshape(n * c, h, w)

    def forward(self, bottom, top):
        out = self._planes(top[0].data)
        self.pooler.forward(self._planes(bottom[0].data), out)
        if len(top) > 1:
            top[1].data.reshape(out.shape)[...] = self.pooler.mask

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        diff[...] = 0
        self.pooler.backward(self._planes(top[0].diff), self._planes(bottom[0].data), self._planes(diff))
