"""Box helpers of the SSD fork (its ``src/caffe/util/bbox_util.cpp``), vectorised.

Boxes are ``[xmin, ymin, xmax, ymax]`` rows in normalized coordinates, kept in
float32 as the fork keeps them (its ``NormalizedBBox`` fields and score vectors
are ``float`` whatever the net's Dtype), and every operation is done in the
order and precision the fork's CPU code uses, so that a kept-or-suppressed
decision on a borderline overlap comes out the same:

- ``decode_boxes``: the fork's DecodeBBox for a whole array of predictions.
  Arithmetic is float32 except ``exp``, which the fork calls on a float
  promoted to double (the global ``::exp``); the product with the prior's size
  is then rounded to float.
- ``box_sizes``: BBoxSize for normalized boxes: width * height, 0 for a box
  whose max is below its min on either axis.
- ``nms_per_class``: per image and class, GetMaxScoreIndex (scores strictly
  above the threshold, a stable sort by descending score, so ties keep prior
  order, truncated to top_k) then ApplyNMSFast (greedy: a candidate is kept
  when its Jaccard overlap with every box kept so far is <= the adaptive
  threshold; after each kept box the threshold is multiplied by eta while it
  is above 0.5). A NaN overlap suppresses, as ``overlap <= threshold`` fails.

GPU: ``decode_boxes_gpu`` is DecodeBBox on the device (the fork's
DecodeBBoxesKernel), one thread per prediction, with the float32 arithmetic of
``decode_boxes``: each product that is then added is libdevice's ``fmul_rn``
(numpy's float32 product under the simulator), which NVVM never fuses with the
addition into an FMA, so that it is rounded twice, as on the CPU.
``to_float32_gpu`` copies scores and priors into float32 buffers.
NMS stays on the host (as in the fork's GPU Forward).
"""

from __future__ import annotations

import math

import numpy as np
from numba import float32, float64

from ... import gpu
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...kernels import cpu_kernel

# PriorBoxParameter.CodeType values (caffe.proto).
CORNER, CENTER_SIZE, CORNER_SIZE = 1, 2, 3


def decode_boxes(loc, prior_boxes, prior_variances, code_type, variance_encoded_in_target):
    """Decoded boxes, float32, shaped like ``loc`` (``(..., 4)`` offset predictions).

    ``prior_boxes`` and ``prior_variances`` are float32 ``(..., 4)`` arrays that
    broadcast against ``loc`` (for DetectionOutput's N x P x L x 4 predictions:
    P x 1 x 4); ``prior_variances`` is unused when the variance is encoded in
    the target. No clipping (the fork's DetectionOutput passes ``clip_bbox =
    false``).
    """
    loc = np.asarray(loc, dtype=np.float32)
    prior = prior_boxes
    var = None if variance_encoded_in_target else prior_variances
    out = np.empty(loc.shape, dtype=np.float32)
    if code_type == CORNER:
        # prior corner + offset (scaled by the variance unless already in the target)
        np.add(prior, loc if var is None else var * loc, out=out)
        return out
    width = prior[..., 2] - prior[..., 0]
    height = prior[..., 3] - prior[..., 1]
    if code_type == CORNER_SIZE:
        scale = np.stack([width, height, width, height], axis=-1)
        offset = loc * scale if var is None else (var * loc) * scale
        np.add(prior, offset, out=out)
        return out
    if code_type != CENTER_SIZE:
        raise ValueError(f"unknown code_type {code_type}")
    center_x = (prior[..., 0] + prior[..., 2]) * np.float32(0.5)
    center_y = (prior[..., 1] + prior[..., 3]) * np.float32(0.5)
    if var is None:
        dx, dy, dw, dh = loc[..., 0], loc[..., 1], loc[..., 2], loc[..., 3]
    else:
        dx, dy = var[..., 0] * loc[..., 0], var[..., 1] * loc[..., 1]
        dw, dh = var[..., 2] * loc[..., 2], var[..., 3] * loc[..., 3]
    box_cx = dx * width + center_x
    box_cy = dy * height + center_y
    # exp in double, times the prior's size in double, rounded to float: the fork's ::exp(double).
    half_w = (np.exp(dw.astype(np.float64)) * width.astype(np.float64)).astype(np.float32) * np.float32(0.5)
    half_h = (np.exp(dh.astype(np.float64)) * height.astype(np.float64)).astype(np.float32) * np.float32(0.5)
    np.subtract(box_cx, half_w, out=out[..., 0])
    np.subtract(box_cy, half_h, out=out[..., 1])
    np.add(box_cx, half_w, out=out[..., 2])
    np.add(box_cy, half_h, out=out[..., 3])
    return out


def box_sizes(boxes):
    """BBoxSize of normalized float32 boxes ``(..., 4)``: 0 where xmax < xmin or ymax < ymin."""
    width = boxes[..., 2] - boxes[..., 0]
    height = boxes[..., 3] - boxes[..., 1]
    invalid = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    return np.where(invalid, np.float32(0), width * height).astype(np.float32)


@cpu_kernel(inline="always", fastmath=False)
def _jaccard(ax0, ay0, ax1, ay1, size_a, bx0, by0, bx1, by1, size_b):
    """JaccardOverlap(a, b) of two normalized boxes in float32, as the fork writes it.

    IntersectBBox first (no intersection: 0), std::max / std::min spelled as
    the fork's ternaries (so NaN coordinates fall the same way), then
    intersection / (size_a + size_b - intersection) when both sides are > 0.
    """
    if bx0 > ax1 or bx1 < ax0 or by0 > ay1 or by1 < ay0:
        return np.float32(0.0)
    inter_w = (bx1 if bx1 < ax1 else ax1) - (bx0 if ax0 < bx0 else ax0)
    inter_h = (by1 if by1 < ay1 else ay1) - (by0 if ay0 < by0 else ay0)
    if inter_w > 0 and inter_h > 0:
        inter = inter_w * inter_h
        return inter / (size_a + size_b - inter)
    return np.float32(0.0)


@cpu_kernel(inline="always", fastmath=False)
def _keep_best(candidates, keys, m, top_k):
    """Compact ``candidates[:m]`` / ``keys[:m]`` (keys: -score) to the top_k that a stable sort
    would put first, in their original (prior) order; returns top_k.

    Those are every key below the top_k-th smallest, then the keys equal to it in
    prior order until top_k are taken. Sorting the top_k (400 in SSD) instead of
    every candidate above the threshold (thousands) is most of the layer's time.
    """
    kth = np.partition(keys[:m], top_k - 1)[top_k - 1]
    below = 0
    for j in range(m):
        if keys[j] < kth:
            below += 1
    ties = top_k - below
    taken = 0
    for j in range(m):
        key = keys[j]
        if key < kth or (key == kth and ties > 0):
            if key == kth:
                ties -= 1
            candidates[taken] = candidates[j]
            keys[taken] = key
            taken += 1
    return taken


@cpu_kernel(fastmath=False)
def nms_per_class(boxes, sizes, scores, shared, skip_class, score_threshold, nms_threshold, eta, top_k,
                  kept, counts):
    """The fork's ApplyNMSFast for every image and class but ``skip_class``.

    boxes: (N, P, L, 4) float32 decoded boxes, L = 1 when ``shared`` (one box
    per prior for every class), else one per class; sizes: (N, P, L) their
    BBoxSize; scores: (N, P, C) float32. Writes, per image n and class c, the
    kept prior indices in kept order (descending score) to ``kept[n, c, :k]``
    and k to ``counts[n, c]``. ``top_k`` < 0: no limit. Exact float32, no
    fast-math: a reassociated overlap could flip a borderline decision.
    """
    num, num_priors, num_classes = scores.shape
    candidates = np.empty(num_priors, np.int64)
    keys = np.empty(num_priors, np.float32)
    # the boxes kept so far for the current class, one contiguous array per field
    kx0, ky0 = np.empty(num_priors, np.float32), np.empty(num_priors, np.float32)
    kx1, ky1 = np.empty(num_priors, np.float32), np.empty(num_priors, np.float32)
    ksize = np.empty(num_priors, np.float32)
    for n in range(num):
        for c in range(num_classes):
            counts[n, c] = 0
            if c == skip_class:
                continue
            loc_class = 0 if shared else c
            m = 0
            for p in range(num_priors):
                score = scores[n, p, c]
                if score > score_threshold:
                    candidates[m] = p
                    keys[m] = -score
                    m += 1
            if 0 <= top_k < m:
                m = _keep_best(candidates, keys, m, top_k) if top_k > 0 else 0
            order = np.argsort(keys[:m], kind="mergesort")     # stable: equal scores keep prior order
            threshold = nms_threshold
            k = 0
            for j in range(m):
                index = candidates[order[j]]
                x0, y0 = boxes[n, index, loc_class, 0], boxes[n, index, loc_class, 1]
                x1, y1 = boxes[n, index, loc_class, 2], boxes[n, index, loc_class, 3]
                size = sizes[n, index, loc_class]
                keep = True
                for t in range(k):
                    overlap = _jaccard(x0, y0, x1, y1, size, kx0[t], ky0[t], kx1[t], ky1[t], ksize[t])
                    if not overlap <= threshold:
                        keep = False
                        break
                if keep:
                    kept[n, c, k] = index
                    kx0[k], ky0[k], kx1[k], ky1[k], ksize[k] = x0, y0, x1, y1, size
                    k += 1
                    if eta < 1 and threshold > 0.5:
                        threshold *= eta
            counts[n, c] = k


# ---------------------------------------------------------------- GPU kernels

if gpu.simulated():      # numpy's float32 product (libdevice's functions are stubs in Python)
    @gpu.device
    def _product(a, b):
        """float32(a) * float32(b), rounded to float32."""
        return float32(a) * float32(b)
else:
    from numba.cuda import libdevice

    @gpu.device
    def _product(a, b):
        """float32(a) * float32(b), rounded to float32: libdevice's __nv_fmul_rn, which NVVM never contracts
        with the following addition into an FMA (one rounding where decode_boxes rounds twice)."""
        return libdevice.fmul_rn(float32(a), float32(b))


@gpu.jit
def decode_boxes_gpu(loc, prior, code_type, in_target, num_priors, loc_classes, out):
    """out[t] (4 float32) = DecodeBBox of prediction t = (n * P + p) * L + l: loc[t] against prior p.

    ``prior`` is PriorBox's flat top: P boxes, then (unless ``in_target``) their P variances.
    """
    t = cuda.grid(1)
    if t < out.size // 4:
        box = ((t // loc_classes) % num_priors) * 4
        variance = num_priors * 4 + box
        p0, p1 = float32(prior[box]), float32(prior[box + 1])
        p2, p3 = float32(prior[box + 2]), float32(prior[box + 3])
        l0, l1 = float32(loc[t * 4]), float32(loc[t * 4 + 1])
        l2, l3 = float32(loc[t * 4 + 2]), float32(loc[t * 4 + 3])
        if not in_target:       # the variance times the offset, rounded, as decode_boxes's var * loc
            l0, l1 = _product(prior[variance], l0), _product(prior[variance + 1], l1)
            l2, l3 = _product(prior[variance + 2], l2), _product(prior[variance + 3], l3)
        if code_type == 1:              # CORNER
            out[t * 4], out[t * 4 + 1] = p0 + l0, p1 + l1
            out[t * 4 + 2], out[t * 4 + 3] = p2 + l2, p3 + l3
            return
        width = p2 - p0
        height = p3 - p1
        if code_type == 3:              # CORNER_SIZE
            out[t * 4], out[t * 4 + 1] = p0 + _product(l0, width), p1 + _product(l1, height)
            out[t * 4 + 2], out[t * 4 + 3] = p2 + _product(l2, width), p3 + _product(l3, height)
            return
        half = float32(0.5)             # CENTER_SIZE
        center_x = (p0 + p2) * half
        center_y = (p1 + p3) * half
        box_cx = _product(l0, width) + center_x
        box_cy = _product(l1, height) + center_y
        half_w = float32(math.exp(float64(l2)) * float64(width)) * half
        half_h = float32(math.exp(float64(l3)) * float64(height)) * half
        out[t * 4], out[t * 4 + 1] = box_cx - half_w, box_cy - half_h
        out[t * 4 + 2], out[t * 4 + 3] = box_cx + half_w, box_cy + half_h


@gpu.jit
def to_float32_gpu(source, target):
    """target = source as float32 (same count)."""
    i = cuda.grid(1)
    if i < target.size:
        target[i] = source[i]
