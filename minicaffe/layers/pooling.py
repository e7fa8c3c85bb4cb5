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
- STOCHASTIC (Zeiler & Fergus; Caffe has it on the GPU only, minicaffe on
  both devices): in TRAIN, a cell of the window is drawn with probability
  ``x / sum(x)`` (activations are expected to be non-negative, e.g. after a
  ReLU) using one
  uniform ``u`` per output from :func:`minicaffe.fillers.rng`: the first cell
  whose running sum reaches ``u * sum(x)``; ``y`` is that cell's value and
  Backward routes ``dy`` there. In TEST, ``y = sum(x^2) / sum(x)`` (0 when
  ``sum(x) <= 0``), whose gradient ``(2 x sum(x) - sum(x^2)) / sum(x)^2`` Backward
  applies.

Every Backward accumulates over overlapping windows (stride < kernel).

CPU: numba kernels over contiguous (planes, H, W) arrays, shared with SPP and
LRN (:class:`Pooler`), run on minicaffe's threads over chunks of planes
(:mod:`minicaffe.threads`; a small blob stays on one thread). float32 MAX and
AVE with column stride 1 or 2 run the *padded* kernel: groups of planes are
copied into a scratch padded with cells that never count and split into stride
phases, so that each window cell is one vectorized pass over all the outputs
of the group (see the kernels' comment); other cases (float64, which is for
gradient checks, wider column strides, and windows so large that most scratch
outputs would go unused, as global pooling) run the *direct* kernels, one
window at a time. Both give Caffe's results bit for bit: the same cells in the
same order with the same comparison or addition, and one true division
(compiled without fast-math). MAX 3x3 stride 2 over 4x64x112x112 float32, on
this project's 2-core machine: 9.1 ms before the padded kernel, 2.1 ms with the
argmax kept, 1.4 ms without (one thread; 4.5, 1.1 and 0.8 ms on two).

MAX keeps its argmax (an int32 buffer) in TRAIN and when it has the mask top.
In TEST without that top, Forward keeps none; a Backward in TEST (pycaffe's
``net.backward()`` on a deploy net, ``minicaffe time``) finds it again from the
bottom and from then on Forward keeps it. So the first such Backward routes by
the bottom as it is then: the same as Caffe's unless something wrote into the
bottom in place after this layer's Forward. The argmax mask and the
stochastic draws live in buffers that are kept between iterations and
reallocated only when the shape changes.

GPU: Caffe's pooling_layer.cu kernels (numba.cuda; :class:`Pooler`'s
``forward_gpu``/``backward_gpu``, shared with SPP and LRN): one thread per
output walks its window, in the CPU's order and with its comparisons, so
results match the CPU's; AVE divides by a per-position table of the divisors
in the blob's type (uploaded when the geometry changes). Backward is one
thread per input cell summing the dy of the windows that cover it, in the
order the CPU adds them, with no atomics (MaxPoolBackward: a window counts when
its argmax is the cell). MAX keeps its int32 argmax on the device at every
Forward. STOCHASTIC TRAIN draws its uniforms on the host from the same
generator as the CPU path (one number per output, copied to the device), so a
seed picks the same cells on either device.

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
from numba import njit

from .. import gpu, kernels, threads
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..fillers import rng
from ..graph import TRAIN
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register
from .bias import gpu_scratch, launch

MAX = caffe_pb2.PoolingParameter.MAX
AVE = caffe_pb2.PoolingParameter.AVE
STOCHASTIC = caffe_pb2.PoolingParameter.STOCHASTIC
_METHOD_NAMES = {MAX: "MAX", AVE: "AVE", STOCHASTIC: "STOCHASTIC"}

_FLT_MAX = float(np.finfo(np.float32).max)


# ====================================================================== kernels
# Arrays are C-contiguous (planes, H, W) views; masks are int32 (planes, PH, PW)
# holding the chosen cell as h * W + w within its plane, -1 for none.
#
# MAX and AVE forward have two kernels, with the same results bit for bit:
#
# - the *padded* one (``pool_forward``, both methods, float32, column stride 1
#   or 2): a group of planes is copied into a scratch buffer, padded with cells
#   that never count (NaN for MAX: ``NaN > best`` is false, so it never wins;
#   +0.0 for AVE: the running sum starts at +0.0 and so is never -0.0, and
#   s + 0.0 == s), and split into stride_h x stride_w phases (``q[a, b, u, v] =
#   padded[u * stride_h + a, v * stride_w + b]``), so that every window lies
#   inside the scratch and its cell (kh, kw) is phase (kh % stride_h, kw %
#   stride_w) at a fixed offset from the output's own flat index. Each window
#   cell is then a unit-stride loop over all the outputs of the group (three
#   cells of a window row per loop), which LLVM vectorizes, where the window
#   loop, a chain of dependent compares, could not be; a window's cells are
#   still visited in row-major order with the same comparison (or addition) at
#   each, so every output, and MAX's argmax, is what the window loop gives.
#   The loops cover rows x cols >= PH x PW scratch outputs per plane, some of
#   them unused. MAX tags the winner with its offset from the window's origin
#   (an int32) only when asked to keep the argmax: without it, 1.3-2x faster;
# - the *direct* ones (``max_pool_direct``, ``ave_pool_direct``): a loop over each
#   output's window clipped to the input, for the other cases: float64, column
#   strides above 2, windows so large relative to the stride (global pooling)
#   that the padded loops would compute mostly unused outputs (:func:`padded_pays`).
#
# All are compiled without fast-math: AVE's sums must keep Caffe's order (with
# reassociation, LLVM vectorized the sums along window rows of 8 cells or more,
# off by an ulp here and there) and its divisions must be divisions.

_NO_CELL = np.int32(-2 ** 31)      # padded MAX: no cell of the window won (yet)
_NO_MASK = np.empty((0, 0, 0), dtype=np.int32)     # MAX's mask argument when it keeps none
_GROUP_CELLS = 8192                # padded kernels: scratch outputs per group of planes
_EXACT = {"fastmath": False}


def padded_pays(pooled_h, pooled_w, padded_h, padded_w, kernel_w, stride_w):
    """Whether the padded kernels beat the direct ones: their passes cover ``padded_h x padded_w``
    scratch outputs, three window columns a pass, against the direct loop's one cell at a time
    over the ``pooled_h x pooled_w`` real outputs (vectorized passes do about 4 cells per direct
    one). Column strides above 2 copy the input into the phases one cell at a time: direct."""
    return stride_w <= 2 and padded_h * padded_w * -(-kernel_w // 3) <= 4 * pooled_h * pooled_w * kernel_w


@kernels.cpu_kernel(**_EXACT)
def padded_extent(size, pooled, kernel, stride, pad):
    """Rows (columns) of a phase of the padded scratch: what the windows and the input reach, / stride."""
    padded = max(size + pad, (pooled - 1) * stride + kernel)
    return -(-padded // stride)


@njit(inline="always")
def _scatter(x, q, rows, cols, stride_h, stride_w, pad_h, pad_w):
    """Copy the planes ``x`` into the phases ``q`` (stride_h, stride_w, planes * rows * cols):
    input cell (y, z) of plane g goes to phase ((y + pad_h) % stride_h, (z + pad_w) % stride_w),
    at ``(g * rows + (y + pad_h) // stride_h) * cols + (z + pad_w) // stride_w``; stride_w is 1
    or 2. Cells that no window reaches (past ``rows`` x ``cols``) are left out; the padding is
    never written. No division in the loops (a 64-bit division costs as much as copying a row)."""
    planes, height, width = x.shape
    used = min(height, rows * stride_h - pad_h)       # the input rows that windows reach
    # stride 1: a row goes whole to column pad_w, `count` cells of it.
    count = max(min(width, cols - pad_w), 0)
    # stride 2: columns 2m and 2m + 1 go to phases `even` and `odd`, at columns m + even_at, m + odd_at.
    even, odd = pad_w % 2, (pad_w + 1) % 2
    even_at, odd_at = pad_w // 2, (pad_w + 1) // 2
    evens = max(min((width + 1) // 2, cols - even_at), 0)
    odds = max(min(width // 2, cols - odd_at), 0)
    pairs = min(evens, odds)
    for g in range(planes):
        a, u = pad_h % stride_h, pad_h // stride_h      # input row y is row u of phase a
        for y in range(used):
            row = x[g, y]
            at = (g * rows + u) * cols
            if stride_w == 1:
                target = q[a, 0, at + pad_w:at + pad_w + count]
                for j in range(count):
                    target[j] = row[j]
            else:
                target = q[a, even, at + even_at:at + even_at + evens]
                other = q[a, odd, at + odd_at:at + odd_at + odds]
                for m in range(pairs):
                    target[m] = row[2 * m]
                    other[m] = row[2 * m + 1]
                for m in range(pairs, evens):              # (loops: two plain stores here made
                    target[m] = row[2 * m]                 # the loop above 4x slower)
                for m in range(pairs, odds):
                    other[m] = row[2 * m + 1]
            a += 1
            if a == stride_h:
                a = 0
                u += 1


@njit(inline="always")
def _max_pass(s0, s1, s2, best, arg, tag, track):
    """One MAX pass over three cells of the window row: s0, s1, s2 against the running max, in
    that order; ``arg`` gets the winner's ``tag`` (+1, +2)."""
    n = best.size
    if track:
        for i in range(n):
            b = best[i]
            t = arg[i]
            v = s0[i]
            if v > b:
                b = v
                t = tag
            v = s1[i]
            if v > b:
                b = v
                t = tag + 1
            v = s2[i]
            if v > b:
                b = v
                t = tag + 2
            best[i] = b
            arg[i] = t
    else:
        for i in range(n):
            b = best[i]
            v = s0[i]
            b = v if v > b else b
            v = s1[i]
            b = v if v > b else b
            v = s2[i]
            best[i] = v if v > b else b


@njit(inline="always")
def _sum_pass(s0, s1, s2, total):
    """One AVE pass over three cells of the window row: total += s0, += s1, += s2, in that order."""
    for i in range(total.size):
        t = total[i] + s0[i]
        t = t + s1[i]
        total[i] = t + s2[i]


@njit(inline="always")
def _divisor_extents(sizes, size, kernel, stride, pad):
    """AVE's divisor along one axis, per output: the window clipped to the padded bounds, or 0
    when the window holds no input cell along this axis."""
    for p in range(sizes.size):
        start = p * stride - pad
        end = min(start + kernel, size + pad)
        sizes[p] = end - start if min(end, size) > max(start, 0) else 0


@kernels.cpu_kernel(**_EXACT)
def _extract(best, arg, top, mask, sizes_h, sizes_w, rows, cols, width, stride_h, stride_w, maximum, track):
    """The real outputs of a group's scratch: MAX's maxima, and the indices of their cells from the
    tags when ``track``; AVE's sums / their divisors (0 where a divisor is 0: no input cell). A
    function of its own: inlined in pool_forward, this ran 3x slower."""
    planes, pooled_h, pooled_w = top.shape
    for g in range(planes):
        for ph in range(pooled_h):
            at = (g * rows + ph) * cols
            values = best[at:at + pooled_w]
            out = top[g, ph]
            if not maximum:
                size_h = sizes_h[ph]
                for pw in range(pooled_w):
                    size = size_h * sizes_w[pw]
                    out[pw] = values[pw] / top.dtype.type(size) if size > 0 else 0.0
                continue
            for pw in range(pooled_w):
                out[pw] = values[pw]
            if track:
                tags = arg[at:at + pooled_w]
                where = mask[g, ph]
                origin = ph * stride_h * width
                for pw in range(pooled_w):
                    t = tags[pw]
                    where[pw] = -1 if t == _NO_CELL else origin + pw * stride_w + t


@kernels.cpu_kernel(**_EXACT)
def pool_forward(x, top, mask, maximum, track, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """MAX (``maximum``) or AVE pooling, padded kernel (stride_w 1 or 2). MAX: top = window max
    (the first one wins), and mask = its index in the plane when ``track`` (else ``mask`` is not
    touched). AVE: top = window sum over the input (row-major order, from +0.0) / the window's
    size clipped to the padded bounds; 0 for a window that holds no input cell."""
    if stride_w > 2:
        raise ValueError("pool_forward takes column strides 1 and 2")
    planes, height, width = x.shape
    pooled_h, pooled_w = top.shape[1], top.shape[2]
    rows = padded_extent(height, pooled_h, kernel_h, stride_h, pad_h)
    cols = padded_extent(width, pooled_w, kernel_w, stride_w, pad_w)
    per_plane = rows * cols
    group = max(1, min(planes, _GROUP_CELLS // per_plane))
    q = np.empty((stride_h, stride_w, group * per_plane), x.dtype)
    q.reshape(-1)[:] = np.nan if maximum else 0.0      # the padding: never wins / adds +0.0
    best = np.empty(group * per_plane, x.dtype)        # the running max / sum of each scratch output
    arg = np.empty(group * per_plane if track else 0, np.int32)
    start = x.dtype.type(-_FLT_MAX) if maximum else x.dtype.type(0.0)
    # A pass takes three cells of a window row; the last pass of a row may have one or two, and
    # takes the rest from `none`, cells that never count (one loop instead of three compiles faster).
    none = np.empty(group * per_plane if kernel_w % 3 else 0, x.dtype)
    none[:] = np.nan if maximum else 0.0
    # AVE: per output row (column), the divisor's height (width), or 0 when the window holds no
    # input row (column).
    sizes_h = np.zeros(0 if maximum else pooled_h, np.int64)
    sizes_w = np.zeros(0 if maximum else pooled_w, np.int64)
    _divisor_extents(sizes_h, height, kernel_h, stride_h, pad_h)
    _divisor_extents(sizes_w, width, kernel_w, stride_w, pad_w)
    for first in range(0, planes, group):
        count = min(group, planes - first)
        _scatter(x[first:first + count], q, rows, cols, stride_h, stride_w, pad_h, pad_w)
        cells = count * per_plane
        best[:cells] = start
        if track:
            arg[:cells] = _NO_CELL
        # Every cell of the windows, in row-major window order: cell (kh, kw) of output i's window
        # is q[kh % stride_h, kw % stride_w, i + (kh // stride_h) * cols + kw // stride_w].
        for kh in range(kernel_h):
            a = kh % stride_h
            row_offset = (kh // stride_h) * cols
            for kw in range(0, kernel_w, 3):
                take = min(kernel_w - kw, 3)
                o0 = row_offset + kw // stride_w
                o1 = row_offset + (kw + 1) // stride_w
                o2 = row_offset + (kw + 2) // stride_w
                n = cells - (o2 if take == 3 else o1 if take == 2 else o0)
                s0 = q[a, kw % stride_w, o0:o0 + n]
                s1 = q[a, (kw + 1) % stride_w, o1:o1 + n] if take > 1 else none[:n]
                s2 = q[a, (kw + 2) % stride_w, o2:o2 + n] if take > 2 else none[:n]
                if maximum:
                    _max_pass(s0, s1, s2, best[:n], arg[:n], np.int32((kh - pad_h) * width + kw - pad_w), track)
                else:
                    _sum_pass(s0, s1, s2, best[:n])
        _extract(best, arg, top[first:first + count], mask[first:first + count] if track else mask, sizes_h, sizes_w,
                 rows, cols, width, stride_h, stride_w, maximum, track)


@kernels.cpu_kernel(**_EXACT)
def max_pool_direct(x, top, mask, track, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """MAX pooling, direct kernel (each window clipped to the input); as ``pool_forward``."""
    planes, height, width = x.shape
    pooled_h, pooled_w = top.shape[1], top.shape[2]
    lowest = x.dtype.type(-_FLT_MAX)
    for p in range(planes):
        plane = x[p]
        out = top[p]
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
                if track:
                    mask[p, ph, pw] = index


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


@kernels.cpu_kernel(**_EXACT)
def ave_pool_direct(x, top, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """AVE pooling, direct kernel (each window clipped to the input); as ``pool_forward``."""
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


# ====================================================================== GPU kernels
# Caffe's pooling_layer.cu: flat (planes * H * W) inputs and (planes * PH * PW) outputs, one thread per
# output for Forward, one thread per input cell for Backward, which walks the windows covering its cell
# (no atomics): windows in row-major order, as the CPU adds them to a cell. Masks are int32 as on the CPU.
# Every kernel takes the geometry as (height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h,
# stride_w, pad_h, pad_w); sums start from ``zero``, a number of the blob's type, so they stay in it.


@gpu.device
def _window(index, size, kernel, stride, pad):
    """The window's [start, end) clipped to the input along one axis."""
    start = index * stride - pad
    return max(start, 0), min(start + kernel, size)


@gpu.device
def _output_window(i, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w):
    """Output ``i``'s (N*C, pooled_h, pooled_w) position: the offset of its input map and its window
    (hstart, hend, wstart, wend) clipped to the input."""
    pw = i % pooled_w
    ph = (i // pooled_w) % pooled_h
    hstart, hend = _window(ph, height, kernel_h, stride_h, pad_h)
    wstart, wend = _window(pw, width, kernel_w, stride_w, pad_w)
    return (i // (pooled_w * pooled_h)) * height * width, hstart, hend, wstart, wend


@gpu.device
def _covering(cell, pooled, kernel, stride, pad):
    """The outputs [first, last) whose windows hold input ``cell`` along one axis."""
    padded = cell + pad
    first = 0 if padded < kernel else (padded - kernel) // stride + 1
    return first, min(padded // stride + 1, pooled)


@gpu.jit
def _max_pool_gpu(x, top, mask, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w, pad_h,
                  pad_w, lowest):
    """top = the window's maximum (the first wins; NaN never does; -FLT_MAX when none), mask = its cell."""
    i = cuda.grid(1)
    if i < top.size:
        base, hstart, hend, wstart, wend = _output_window(i, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                                                         stride_h, stride_w, pad_h, pad_w)
        best = lowest
        index = -1
        for h in range(hstart, hend):
            for w in range(wstart, wend):
                value = x[base + h * width + w]
                if value > best:
                    best = value
                    index = h * width + w
        top[i] = best
        mask[i] = index


@gpu.jit
def _ave_pool_gpu(x, top, divisors, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w, pad_h,
                  pad_w, zero):
    """top = the window's sum over the input / its size clipped to the padded bounds (``divisors``, per
    output position); 0 for a window that holds no input cell."""
    i = cuda.grid(1)
    if i < top.size:
        base, hstart, hend, wstart, wend = _output_window(i, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                                                         stride_h, stride_w, pad_h, pad_w)
        total = zero
        for h in range(hstart, hend):
            for w in range(wstart, wend):
                total += x[base + h * width + w]
        if hend > hstart and wend > wstart:
            top[i] = total / divisors[i % (pooled_h * pooled_w)]
        else:
            top[i] = zero


@gpu.jit
def _stochastic_train_gpu(x, top, mask, uniform, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h,
                          stride_w, pad_h, pad_w, zero):
    """Draw the first cell whose running sum reaches uniform * the window's sum (the last when none does)."""
    i = cuda.grid(1)
    if i < top.size:
        base, hstart, hend, wstart, wend = _output_window(i, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                                                         stride_h, stride_w, pad_h, pad_w)
        total = zero
        for h in range(hstart, hend):
            for w in range(wstart, wend):
                total += x[base + h * width + w]
        threshold = uniform[i] * total
        running = zero
        index = -1
        found = False
        for h in range(hstart, hend):
            for w in range(wstart, wend):
                running += x[base + h * width + w]
                index = h * width + w
                if running >= threshold:
                    found = True
                    break
            if found:
                break
        mask[i] = index
        top[i] = x[base + index] if index >= 0 else zero


@gpu.jit
def _stochastic_test_gpu(x, top, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w, pad_h,
                         pad_w, zero):
    """top = sum(x^2) / sum(x) over the window, 0 when sum(x) <= 0."""
    i = cuda.grid(1)
    if i < top.size:
        base, hstart, hend, wstart, wend = _output_window(i, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                                                         stride_h, stride_w, pad_h, pad_w)
        total = zero
        squares = zero
        for h in range(hstart, hend):
            for w in range(wstart, wend):
                value = x[base + h * width + w]
                total += value
                squares += value * value
        top[i] = squares / total if total > 0 else zero


@gpu.jit
def _route_backward_gpu(top_diff, mask, bottom_diff, accumulate, height, width, pooled_h, pooled_w, kernel_h,
                        kernel_w, stride_h, stride_w, pad_h, pad_w, zero):
    """MAX / STOCHASTIC (TRAIN): a cell gets the dy of every covering window whose mask names it (Caffe's
    MaxPoolBackward); ``accumulate`` adds to what bottom_diff holds."""
    i = cuda.grid(1)
    if i < bottom_diff.size:
        w = i % width
        h = (i // width) % height
        base = (i // (width * height)) * pooled_h * pooled_w
        phstart, phend = _covering(h, pooled_h, kernel_h, stride_h, pad_h)
        pwstart, pwend = _covering(w, pooled_w, kernel_w, stride_w, pad_w)
        cell = h * width + w
        gradient = bottom_diff[i] if accumulate else zero
        for ph in range(phstart, phend):
            for pw in range(pwstart, pwend):
                if mask[base + ph * pooled_w + pw] == cell:
                    gradient += top_diff[base + ph * pooled_w + pw]
        bottom_diff[i] = gradient


@gpu.jit
def _ave_backward_gpu(top_diff, divisors, bottom_diff, accumulate, height, width, pooled_h, pooled_w, kernel_h,
                      kernel_w, stride_h, stride_w, pad_h, pad_w, zero):
    """AVE: a cell gets dy / divisor of every covering window (Caffe's AvePoolBackward)."""
    i = cuda.grid(1)
    if i < bottom_diff.size:
        w = i % width
        h = (i // width) % height
        base = (i // (width * height)) * pooled_h * pooled_w
        phstart, phend = _covering(h, pooled_h, kernel_h, stride_h, pad_h)
        pwstart, pwend = _covering(w, pooled_w, kernel_w, stride_w, pad_w)
        gradient = bottom_diff[i] if accumulate else zero
        for ph in range(phstart, phend):
            for pw in range(pwstart, pwend):
                gradient += top_diff[base + ph * pooled_w + pw] / divisors[ph * pooled_w + pw]
        bottom_diff[i] = gradient


@gpu.jit
def _stochastic_test_backward_gpu(x, top_diff, bottom_diff, accumulate, height, width, pooled_h, pooled_w, kernel_h,
                                  kernel_w, stride_h, stride_w, pad_h, pad_w, zero):
    """STOCHASTIC (TEST): a cell gets (2 x S - Q) / S^2 * dy of every covering window with S = sum(x) > 0
    (Q = sum(x^2)), recomputing each window's sums."""
    i = cuda.grid(1)
    if i < bottom_diff.size:
        w = i % width
        h = (i // width) % height
        plane = i // (width * height)
        base = plane * height * width
        top_base = plane * pooled_h * pooled_w
        phstart, phend = _covering(h, pooled_h, kernel_h, stride_h, pad_h)
        pwstart, pwend = _covering(w, pooled_w, kernel_w, stride_w, pad_w)
        value = x[i]
        gradient = bottom_diff[i] if accumulate else zero
        for ph in range(phstart, phend):
            hstart, hend = _window(ph, height, kernel_h, stride_h, pad_h)
            for pw in range(pwstart, pwend):
                wstart, wend = _window(pw, width, kernel_w, stride_w, pad_w)
                total = zero
                squares = zero
                for hh in range(hstart, hend):
                    for ww in range(wstart, wend):
                        cell = x[base + hh * width + ww]
                        total += cell
                        squares += cell * cell
                if total > 0:
                    scale = top_diff[top_base + ph * pooled_w + pw] / (total * total)
                    gradient += scale * (2 * value * total - squares)
        bottom_diff[i] = gradient


@gpu.jit
def _mask_to_top_gpu(mask, top_mask):
    """Caffe's mask top: the argmax as a float index into the plane."""
    i = cuda.grid(1)
    if i < top_mask.size:
        top_mask[i] = mask[i]


def ave_divisors(height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dtype):
    """AVE's divisor per output position (ph, pw): the window clipped to the padded bounds (1 where the
    window holds no input cell: unused)."""
    def sizes(size, pooled, kernel, stride, pad):
        extents = []
        for p in range(pooled):
            start = p * stride - pad
            end = min(start + kernel, size + pad)
            extents.append(end - start if min(end, size) > max(start, 0) else 1)
        return np.array(extents, dtype=np.int64)
    table = np.outer(sizes(height, pooled_h, kernel_h, stride_h, pad_h), sizes(width, pooled_w, kernel_w, stride_w,
                                                                              pad_w))
    return table.reshape(-1).astype(dtype)


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
    accumulates into ``bottom_diff``. MAX keeps its argmax when ``keep_mask``
    (TRAIN, or set by the owner); else ``backward`` takes it from ``x`` first,
    and sets ``keep_mask``.
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
        # MAX keeps its argmax in TRAIN, for a mask top (the owner sets keep_mask) and, from its
        # first Backward on, in TEST too; mask_shape is the output shape of the last Forward that
        # kept it (None when that Forward kept none).
        self.keep_mask = train
        self.mask_shape = None
        self.forward_shape = None     # the output shape of the last Forward
        self._plan = None             # ((input shape, output shape, kernel), padded kernels?)
        self.gpu_forward_shape = None  # (planes, PH, PW) of the last GPU-mode Forward; its mask: gpu_mask
        self.gpu_mask = None

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

    def _padded(self, x, top):
        """Whether this shape runs the padded kernels (else the direct ones); kept per shape."""
        key = (x.shape, top.shape, x.dtype, self.kernel)
        if self._plan is None or self._plan[0] != key:
            (kernel_h, kernel_w), (stride_h, stride_w), (pad_h, pad_w) = self.kernel, self.stride, self.pad
            pooled_h, pooled_w = top.shape[1], top.shape[2]
            rows = padded_extent(x.shape[1], pooled_h, kernel_h, stride_h, pad_h)
            cols = padded_extent(x.shape[2], pooled_w, kernel_w, stride_w, pad_w)
            padded = x.dtype == np.float32 and padded_pays(pooled_h, pooled_w, rows, cols, kernel_w, stride_w)
            self._plan = key, padded
        return self._plan[1]

    def forward(self, x, top):
        args = self._args()
        self.forward_shape = top.shape
        self.gpu_forward_shape = None     # the device's argmax / draws (GPU mode's) are stale from now on
        if self.method == MAX:
            track = self.keep_mask
            mask = self._mask_for(top.shape) if track else _NO_MASK
            if self._padded(x, top):
                self._over_planes(x, lambda a, b: pool_forward(x[a:b], top[a:b], mask[a:b], True, track, *args))
            else:
                self._over_planes(x, lambda a, b: max_pool_direct(x[a:b], top[a:b], mask[a:b], track, *args))
            self.mask_shape = top.shape if track else None
        elif self.method == AVE:
            if self._padded(x, top):
                self._over_planes(x, lambda a, b: pool_forward(x[a:b], top[a:b], _NO_MASK, False, False, *args))
            else:
                self._over_planes(x, lambda a, b: ave_pool_direct(x[a:b], top[a:b], *args))
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
            if self.forward_shape != top_diff.shape:
                raise GraphError("pooling Backward before a Forward at this shape", layer=self.layer)
            if self.method == MAX and self.mask_shape != top_diff.shape:
                # A TEST-phase Forward kept no argmax: find it again from the bottom, and keep it
                # from now on (a net that runs Backward once runs it again).
                self.keep_mask = True
                self.forward(x, np.empty_like(top_diff))
            planes = top_diff.shape[0]
            gradient = top_diff.reshape(planes, -1)
            mask = self.mask.reshape(planes, -1)
            diff = bottom_diff.reshape(planes, -1)
            self._over_planes(bottom_diff, lambda a, b: route_backward(gradient[a:b], mask[a:b], diff[a:b]))
        else:
            self._over_planes(x, lambda a, b: stochastic_pool_test_backward(x[a:b], top_diff[a:b],
                                                                           bottom_diff[a:b], *args))

    # ---------------------------------------------------------------- GPU
    # Flat device arrays: x and bottom_diff (planes * height * width), top and top_diff (planes * PH * PW).
    # MAX keeps its argmax on the device at every Forward (TEST too: device memory, and one store per output).

    def _geometry(self, height, width, pooled_h, pooled_w):
        return (int(height), int(width), int(pooled_h), int(pooled_w)) + self._args()

    def _divisors_gpu(self, geometry, dtype):
        """AVE's divisors on the device, uploaded again only when the geometry changes."""
        key = (geometry, np.dtype(dtype))
        if getattr(self, "_gpu_divisors_key", None) != key:
            self._gpu_divisors = gpu.to_device(ave_divisors(*geometry, dtype))
            self._gpu_divisors_key = key
        return self._gpu_divisors

    def forward_gpu(self, x, top, planes, height, width, pooled_h, pooled_w):
        count = planes * pooled_h * pooled_w
        dtype = top.dtype
        geometry = self._geometry(height, width, pooled_h, pooled_w)
        self.gpu_forward_shape = (planes, pooled_h, pooled_w)
        self.mask_shape = None          # the host copy of the argmax (CPU mode's) is stale from now on
        if not count:
            return
        zero = dtype.type(0)
        if self.method == MAX:
            self.gpu_mask = gpu_scratch(self, "mask", count, np.int32)
            launch(_max_pool_gpu, count)(x, top, self.gpu_mask, *geometry, dtype.type(-_FLT_MAX))
        elif self.method == AVE:
            launch(_ave_pool_gpu, count)(x, top, self._divisors_gpu(geometry, dtype), *geometry, zero)
        elif self.train:
            # The uniforms are drawn on the host from minicaffe's generator, as in CPU mode (the same seed
            # draws the same cells on either device), and copied over: one number per output.
            shape = (planes, pooled_h, pooled_w)
            if self.uniform is None or self.uniform.shape != shape or self.uniform.dtype != dtype:
                self.uniform = np.empty(shape, dtype=dtype)
            rng().random(out=self.uniform, dtype=dtype)
            uniform = gpu_scratch(self, "uniform", count, dtype)
            uniform.copy_to_device(self.uniform.reshape(-1))
            self.gpu_mask = gpu_scratch(self, "mask", count, np.int32)
            self.forward_shape = None   # CPU mode's Backward has no draws to route by
            launch(_stochastic_train_gpu, count)(x, top, self.gpu_mask, uniform, *geometry, zero)
        else:
            launch(_stochastic_test_gpu, count)(x, top, *geometry, zero)

    def mask_to_top_gpu(self, top_mask):
        if top_mask.size:
            launch(_mask_to_top_gpu, top_mask.size)(self.gpu_mask, top_mask)

    def backward_gpu(self, top_diff, x, bottom_diff, planes, height, width, pooled_h, pooled_w, accumulate=False):
        """bottom_diff = (or += with ``accumulate``) the gradient reaching the input."""
        count = bottom_diff.size
        dtype = bottom_diff.dtype
        geometry = self._geometry(height, width, pooled_h, pooled_w)
        if not count:
            return
        zero = dtype.type(0)
        if self.method == AVE:
            launch(_ave_backward_gpu, count)(top_diff, self._divisors_gpu(geometry, dtype), bottom_diff,
                                             bool(accumulate), *geometry, zero)
            return
        if self.method == MAX or self.train:
            if getattr(self, "gpu_forward_shape", None) != (planes, pooled_h, pooled_w):
                if self.method != MAX:
                    raise GraphError("pooling Backward before a Forward at this shape", layer=self.layer)
                # A CPU-mode Forward left no argmax on the device: find it again from the bottom.
                scratch = gpu_scratch(self, "recomputed top", planes * pooled_h * pooled_w, dtype)
                self.forward_gpu(x, scratch, planes, height, width, pooled_h, pooled_w)
            launch(_route_backward_gpu, count)(top_diff, self.gpu_mask, bottom_diff, bool(accumulate), *geometry,
                                               zero)
        else:
            launch(_stochastic_test_backward_gpu, count)(x, top_diff, bottom_diff, bool(accumulate), *geometry,
                                                         zero)

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
        if len(top) > 1:
            self.pooler.keep_mask = True        # the mask top

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

    def _sizes(self, bottom, top):
        num, channels, height, width = bottom[0].shape
        return num * channels, height, width, top[0].shape[2], top[0].shape[3]

    def forward_gpu(self, bottom, top):
        sizes = self._sizes(bottom, top)
        self.pooler.forward_gpu(bottom[0].gpu_data, top[0].mutable_gpu_data, *sizes)
        if len(top) > 1:
            self.pooler.mask_to_top_gpu(top[1].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        self.pooler.backward_gpu(top[0].gpu_diff, bottom[0].gpu_data, bottom[0].mutable_gpu_diff,
                                 *self._sizes(bottom, top))
