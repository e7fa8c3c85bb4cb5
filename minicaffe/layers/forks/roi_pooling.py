"""ROIPooling: y[r, c, ph, pw] = max of x[b_r, c] over bin (ph, pw) of ROI r's box, rounded to the map.

From py-faster-rcnn's Caffe (rbgirshick/caffe-fast-rcnn, branch faster-rcnn),
the Fast R-CNN region pooling. Bottom 0 is the feature map ``x`` (N, C, H, W);
bottom 1 holds R regions, one ``(b, x1, y1, x2, y2)`` row each, ``(R, 5)``
(``(R, 5, 1, 1)`` is taken too): the image ``b`` of the batch and the box's
corners in image coordinates. The top is ``(R, C, pooled_h, pooled_w)``.

Per ROI, as the fork computes it (in the blob's precision, float32 for float
nets):

- corners on the map: ``round(coordinate * spatial_scale)``, C's ``round``
  (halves away from zero, not numpy's halves-to-even);
  ``b`` is truncated to an integer and must lie in ``[0, N)``;
- ``roi_h = max(y2' - y1' + 1, 1)`` (an inverted box becomes one cell high),
  ``bin_h = roi_h / pooled_h`` (a float); bin ``ph`` covers rows
  ``[floor(ph bin_h), ceil((ph + 1) bin_h))`` shifted by ``y1'`` and clipped to
  ``[0, H)``; likewise columns. Bins overlap when ``bin_h`` is fractional;
- ``y`` is the bin's maximum (the first in row-major order wins; the running
  maximum starts at -FLT_MAX, so an all-NaN bin gives -FLT_MAX); a bin that
  lies wholly off the map gives 0.

Backward (the fork's only Backward is its CUDA kernel; the CPU one aborts):
``dy`` goes to the argmax cell of each bin, summed over bins and ROIs, with the
GPU kernel's two filters kept: the cell must lie inside the ROI's rounded box
``[x1', x2'] x [y1', y2']``, and the bin must be one the kernel's inverse
mapping ``[floor((h - y1') / bin_h), ceil((h - y1' + 1) / bin_h))`` lists for
that cell. For ordinary boxes both hold for every argmax; they drop the
gradient of an inverted box (``x2' < x1'``, pooled as its first cell) and of a
last bin that float rounding stretched one cell past the box. The ROIs take no
gradient.

Deviations, where the fork's behaviour is undefined: a batch index outside
``[0, N)`` or a non-finite ROI coordinate is an error (the CPU Forward aborts on
the first, the GPU kernel reads outside the blob).

CPU: numba kernels over chunks of ROIs (Forward) and of channels (Backward,
whose sums then run in the GPU kernel's order: ROI, then bin) on minicaffe's
threads; the argmax is kept between Forward and Backward.

GPU: one thread per ROI rounds its box onto the map (the same float
arithmetic, in the ROIs' dtype) into a device buffer and flags a bad row with
an atomic min; that one index is read back, and only when a row is bad are the
ROIs copied to the host to raise the CPU's error. Forward is the fork's
ROIPoolForward, one thread per top element keeping its argmax on the device;
Backward is its ROIPoolBackward, one thread per bottom element gathering, ROI
by ROI and bin by bin, the gradients of the bins whose argmax it is (the CPU's
order of the sums, so both give the same bits).
"""

from __future__ import annotations

import math

import numpy as np

from ... import gpu, kernels, threads
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError
from ...layer import Layer
from ...registry import register

_FLT_MAX = float(np.finfo(np.float32).max)


# ====================================================================== geometry

def roi_boxes(rois, spatial_scale, batch_size, layer=None):
    """(R, 5) int64 rows ``(b, x1', y1', x2', y2')``: the batch index and the box on the map.

    Arithmetic in the ROIs' dtype (the fork's Dtype), rounded half away from zero.
    """
    rois = rois.reshape(rois.shape[0], 5)
    if not np.isfinite(rois).all():
        row = int(np.nonzero(~np.isfinite(rois).all(axis=1))[0][0])
        raise GraphError(f"ROI {row} has a non-finite value: {rois[row].tolist()}", layer=layer)
    boxes = np.empty(rois.shape, dtype=np.int64)
    batch = np.trunc(rois[:, 0])
    bad = (batch < 0) | (batch >= batch_size)
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise GraphError(f"ROI {row} names image {rois[row, 0]:g} of the batch, outside [0, {batch_size})",
                         layer=layer)
    boxes[:, 0] = batch
    scaled = rois[:, 1:] * rois.dtype.type(spatial_scale)
    magnitude = np.abs(scaled)
    whole = np.floor(magnitude)
    whole += magnitude - whole >= 0.5
    # Far-off boxes are clipped to the map anyway; keep their corners inside int64.
    boxes[:, 1:] = np.clip(np.copysign(whole, scaled), -2.0 ** 40, 2.0 ** 40)
    return boxes


# ====================================================================== kernels
# x: (N, C, H, W); boxes: (R, 5) int64 from roi_boxes; top, argmax: (R, C, PH, PW).
# fastmath off: the bin edges are floor/ceil of float products, computed as the fork does.

@kernels.cpu_kernel(nogil=True, fastmath=False)
def roi_pool_forward(x, boxes, top, argmax, first, last):
    """Max over each bin of ROIs ``first..last-1``; argmax = h * W + w, -1 for none."""
    height, width = x.shape[2], x.shape[3]
    channels, pooled_h, pooled_w = top.shape[1], top.shape[2], top.shape[3]
    real = x.dtype.type
    lowest = real(-_FLT_MAX)
    for r in range(first, last):
        plane_set = x[boxes[r, 0]]
        start_w, start_h, end_w, end_h = boxes[r, 1], boxes[r, 2], boxes[r, 3], boxes[r, 4]
        bin_h = real(max(end_h - start_h + 1, 1)) / real(pooled_h)
        bin_w = real(max(end_w - start_w + 1, 1)) / real(pooled_w)
        for ph in range(pooled_h):
            hstart = min(max(math.floor(real(ph) * bin_h) + start_h, 0), height)
            hend = min(max(math.ceil(real(ph + 1) * bin_h) + start_h, 0), height)
            for pw in range(pooled_w):
                wstart = min(max(math.floor(real(pw) * bin_w) + start_w, 0), width)
                wend = min(max(math.ceil(real(pw + 1) * bin_w) + start_w, 0), width)
                if hend <= hstart or wend <= wstart:
                    for c in range(channels):
                        top[r, c, ph, pw] = 0
                        argmax[r, c, ph, pw] = -1
                    continue
                for c in range(channels):
                    plane = plane_set[c]
                    best = lowest
                    index = -1
                    for h in range(hstart, hend):
                        for w in range(wstart, wend):
                            if plane[h, w] > best:
                                best = plane[h, w]
                                index = h * width + w
                    top[r, c, ph, pw] = best
                    argmax[r, c, ph, pw] = index


@kernels.cpu_kernel(nogil=True, fastmath=False)
def roi_pool_backward(top_diff, argmax, boxes, bottom_diff, first, last):
    """bottom_diff[b, c, argmax] += top_diff for channels ``first..last-1``, under the GPU kernel's filters."""
    width = bottom_diff.shape[3]
    rois, pooled_h, pooled_w = top_diff.shape[0], top_diff.shape[2], top_diff.shape[3]
    real = bottom_diff.dtype.type
    for c in range(first, last):
        for r in range(rois):
            plane = bottom_diff[boxes[r, 0], c]
            start_w, start_h, end_w, end_h = boxes[r, 1], boxes[r, 2], boxes[r, 3], boxes[r, 4]
            bin_h = real(max(end_h - start_h + 1, 1)) / real(pooled_h)
            bin_w = real(max(end_w - start_w + 1, 1)) / real(pooled_w)
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    index = argmax[r, c, ph, pw]
                    if index < 0:
                        continue
                    h = index // width
                    w = index - h * width
                    if h < start_h or h > end_h or w < start_w or w > end_w:
                        continue
                    if ph < min(max(math.floor(real(h - start_h) / bin_h), 0), pooled_h):
                        continue
                    if ph >= min(max(math.ceil(real(h - start_h + 1) / bin_h), 0), pooled_h):
                        continue
                    if pw < min(max(math.floor(real(w - start_w) / bin_w), 0), pooled_w):
                        continue
                    if pw >= min(max(math.ceil(real(w - start_w + 1) / bin_w), 0), pooled_w):
                        continue
                    plane[h, w] += top_diff[r, c, ph, pw]


# ---------------------------------------------------------------- GPU kernels
# Flat arrays: x and bottom_diff (N, C, H, W), rois and boxes (R, 5), top, top_diff and argmax (R, C, PH, PW).

_NO_ROW = np.iinfo(np.int64).max
_CORNER_LIMIT = 2.0 ** 40


@gpu.jit
def _roi_boxes_gpu(rois, spatial_scale, batch_size, boxes, bad):
    """roi_boxes on the device: boxes[r] = (b, x1', y1', x2', y2'); bad[0] = the first bad row."""
    r = cuda.grid(1)
    if r < boxes.size // 5:
        for k in range(5):
            value = rois[r * 5 + k]
            if math.isnan(value) or math.isinf(value):
                cuda.atomic.min(bad, 0, r)
                return
        batch = rois[r * 5]
        if not (batch > -1 and batch < batch_size):     # trunc(batch) outside [0, batch_size)
            cuda.atomic.min(bad, 0, r)
            return
        boxes[r * 5] = int(batch)
        for k in range(1, 5):
            scaled = rois[r * 5 + k] * spatial_scale
            magnitude = min(abs(scaled), _CORNER_LIMIT)
            whole = math.floor(magnitude)
            if magnitude - whole >= 0.5:
                whole += 1
            boxes[r * 5 + k] = whole if scaled >= 0 else -whole


@gpu.jit
def _roi_pool_forward_gpu(x, boxes, top, argmax, channels, height, width, pooled_h, pooled_w, lowest):
    index = cuda.grid(1)
    if index < top.size:
        pw = index % pooled_w
        ph = (index // pooled_w) % pooled_h
        c = (index // (pooled_w * pooled_h)) % channels
        r = index // (pooled_w * pooled_h * channels)
        real = x.dtype.type
        start_w, start_h, end_w, end_h = boxes[r * 5 + 1], boxes[r * 5 + 2], boxes[r * 5 + 3], boxes[r * 5 + 4]
        bin_h = real(max(end_h - start_h + 1, 1)) / real(pooled_h)
        bin_w = real(max(end_w - start_w + 1, 1)) / real(pooled_w)
        hstart = min(max(math.floor(real(ph) * bin_h) + start_h, 0), height)
        hend = min(max(math.ceil(real(ph + 1) * bin_h) + start_h, 0), height)
        wstart = min(max(math.floor(real(pw) * bin_w) + start_w, 0), width)
        wend = min(max(math.ceil(real(pw + 1) * bin_w) + start_w, 0), width)
        if hend <= hstart or wend <= wstart:
            top[index] = 0
            argmax[index] = -1
            return
        base = (boxes[r * 5] * channels + c) * height * width
        best = lowest
        where = -1
        for h in range(hstart, hend):
            for w in range(wstart, wend):
                value = x[base + h * width + w]
                if value > best:
                    best = value
                    where = h * width + w
        top[index] = best
        argmax[index] = where


@gpu.jit
def _roi_pool_backward_gpu(top_diff, argmax, boxes, bottom_diff, channels, height, width, pooled_h, pooled_w):
    index = cuda.grid(1)
    if index < bottom_diff.size:
        w = index % width
        h = (index // width) % height
        c = (index // (width * height)) % channels
        n = index // (width * height * channels)
        real = bottom_diff.dtype.type
        bottom_diff[index] = 0
        for r in range(boxes.size // 5):
            if boxes[r * 5] != n:
                continue
            start_w, start_h, end_w, end_h = boxes[r * 5 + 1], boxes[r * 5 + 2], boxes[r * 5 + 3], boxes[r * 5 + 4]
            if h < start_h or h > end_h or w < start_w or w > end_w:
                continue
            bin_h = real(max(end_h - start_h + 1, 1)) / real(pooled_h)
            bin_w = real(max(end_w - start_w + 1, 1)) / real(pooled_w)
            phstart = min(max(math.floor(real(h - start_h) / bin_h), 0), pooled_h)
            phend = min(max(math.ceil(real(h - start_h + 1) / bin_h), 0), pooled_h)
            pwstart = min(max(math.floor(real(w - start_w) / bin_w), 0), pooled_w)
            pwend = min(max(math.ceil(real(w - start_w + 1) / bin_w), 0), pooled_w)
            offset = (r * channels + c) * pooled_h * pooled_w
            for ph in range(phstart, phend):
                for pw in range(pwstart, pwend):
                    if argmax[offset + ph * pooled_w + pw] == h * width + w:
                        bottom_diff[index] += top_diff[offset + ph * pooled_w + pw]


# ====================================================================== layer

@register("ROIPooling")
class ROIPoolingLayer(Layer):
    exact_bottoms = 2
    exact_tops = 1
    never_backward_bottoms = (1,)
    fork = "py-faster-rcnn (rbgirshick/caffe-fast-rcnn)"

    def setup(self, bottom, top):
        param = self.layer_param.roi_pooling_param
        if param.pooled_h <= 0 or param.pooled_w <= 0:
            raise GraphError(f"roi_pooling_param: pooled_h and pooled_w must be positive, got "
                             f"{param.pooled_h} x {param.pooled_w}", layer=self.name)
        self.pooled = (int(param.pooled_h), int(param.pooled_w))
        self.spatial_scale = param.spatial_scale
        self.argmax = None
        self.boxes = None

    def reshape(self, bottom, top):
        if bottom[0].ndim != 4:
            raise self.shape_error("ROIPooling takes a 4-D feature map (num, channels, height, width) as bottom 0",
                                   expected=("N", "C", "H", "W"), actual=bottom[0].shape)
        rois = bottom[1].shape
        if len(rois) < 2 or rois[1] != 5 or any(d != 1 for d in rois[2:]):
            raise self.shape_error("ROIPooling takes the ROIs as bottom 1, one (batch index, x1, y1, x2, y2) "
                                   "row each", expected=("R", 5), actual=rois)
        if top[0] is bottom[0]:
            raise GraphError("ROIPooling does not allow in-place computation", layer=self.name)
        top[0].reshape((rois[0], bottom[0].shape[1]) + self.pooled)

    def forward(self, bottom, top):
        x = bottom[0].data
        self.boxes = boxes = roi_boxes(bottom[1].data, self.spatial_scale, x.shape[0], layer=self.name)
        out = top[0].data
        if self.argmax is None or self.argmax.shape != out.shape:
            self.argmax = np.empty(out.shape, dtype=np.int32)
        argmax = self.argmax
        cells = out[0].size * 4 if out.size else 1
        threads.parallel_for(boxes.shape[0], lambda a, b: roi_pool_forward(x, boxes, out, argmax, a, b), cells)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        diff[...] = 0
        if self.boxes is None or self.boxes.shape[0] == 0:
            return
        top_diff, argmax, boxes = top[0].diff, self.argmax, self.boxes
        threads.parallel_for(diff.shape[1], lambda a, b: roi_pool_backward(top_diff, argmax, boxes, diff, a, b),
                             boxes.shape[0] * self.pooled[0] * self.pooled[1])

    # ------------------------------------------------------------ GPU
    def forward_gpu(self, bottom, top):
        num, channels, height, width = bottom[0].shape
        rois = bottom[1].shape[0]
        cells = top[0].count
        cached = getattr(self, "_gpu_buffers", None)
        if cached is None or cached[0].size != rois * 5 or cached[1].size != cells:
            cached = self._gpu_buffers = (gpu.device_empty(rois * 5, np.int64), gpu.device_empty(cells, np.int32))
        boxes, argmax = cached
        if not rois:
            return
        bad = gpu.to_device(np.array([_NO_ROW], dtype=np.int64))
        _roi_boxes_gpu[gpu.blocks_for(rois), gpu.THREADS](bottom[1].gpu_data, self.dtype.type(self.spatial_scale),
                                                          int(num), boxes, bad)
        if int(bad.copy_to_host()[0]) != _NO_ROW:
            roi_boxes(bottom[1].data, self.spatial_scale, num, layer=self.name)   # raises the CPU's error
        if cells:
            _roi_pool_forward_gpu[gpu.blocks_for(cells), gpu.THREADS](
                bottom[0].gpu_data, boxes, top[0].mutable_gpu_data, argmax, int(channels), int(height), int(width),
                int(self.pooled[0]), int(self.pooled[1]), self.dtype.type(-_FLT_MAX))

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0] or not bottom[0].count:
            return
        num, channels, height, width = bottom[0].shape
        boxes, argmax = self._gpu_buffers
        _roi_pool_backward_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
            top[0].gpu_diff, argmax, boxes, bottom[0].mutable_gpu_diff, int(channels), int(height), int(width),
            int(self.pooled[0]), int(self.pooled[1]))
