"""InfogainLoss: a multinomial logistic loss weighted by an information-gain matrix H.

Raw scores in: as in BVLC master, the layer applies a softmax over
``infogain_loss_param.axis`` (default 1, negative counts from the end) itself.
With ``x`` viewed as (outer, C, inner), ``p`` its softmax over C, one label
``g`` per location and H a C x C matrix::

    loss = -sum over non-ignored locations of sum_l H[g, l] log(max(p_l, 1e-20)) / normalizer
    dx_l = w (p_l * sum_k H[g, k] - H[g, l]) / normalizer,   0 at ignored locations

``w`` is the loss weight in ``top[0].diff``. With H the identity this is
SoftmaxWithLoss. H comes from ``infogain_loss_param.source`` (a
``.binaryproto`` holding C*C values, any shape) or from a third bottom, which
is read every pass and never takes a gradient. ``loss_param.ignore_label``
skips locations; ``normalization`` defaults to VALID (the count of non-ignored
locations), as in Caffe; FULL, BATCH_SIZE and NONE as in SoftmaxWithLoss. The
legacy ``normalize`` flag, which Caffe refuses on this layer, is accepted with
its usual meaning. A second top receives the probabilities.

CPU: log p_l is taken as ``x_l - max - log(sum exp)``, floored at log(1e-20):
the same clamp as Caffe's, with one log per location instead of one per class.
Locations are processed in blocks of 256 (one row at a time when inner == 1),
so the inner loops run over contiguous memory and vectorize.

GPU: one thread per location computes its softmax and loss, the sum and the
valid count are reduced and normalized on the device; Backward uses one thread
per element, with H's row sums computed on the device.
"""

import math
import os

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError, MinicaffeError
from ...layer import LossLayer
from ...memory import shape_inference_active
from ...registry import register

_BLOCK = 256
#: log of Caffe's kLOG_THRESHOLD (1e-20): the floor of log p.
LOG_FLOOR = math.log(1e-20)


@kernels.cpu_kernel
def _infogain_rows(x, prob, labels, infogain, has_ignore, ignore_label, log_floor):
    """inner == 1: each location's C scores are contiguous. Returns (loss sum, valid count, bad index)."""
    outer, channels = x.shape
    loss = 0.0
    valid = 0
    bad = -1
    for o in range(outer):
        row = x[o]
        top, total = kernels.softmax_row(row, prob[o])
        label = int(labels[o])
        if has_ignore and label == ignore_label:
            continue
        if label < 0 or label >= channels:
            if bad < 0:
                bad = o
            continue
        shift = top + kernels.log(total)
        weights = infogain[label]
        term = row.dtype.type(0.0)
        for c in range(channels):
            term += weights[c] * max(row[c] - shift, log_floor)
        loss -= term
        valid += 1
    return loss, valid, bad


@kernels.cpu_kernel
def _infogain_blocked(x, prob, labels, infogain_t, has_ignore, ignore_label, log_floor):
    """inner > 1: blocks of locations, channel by channel; ``infogain_t`` is H transposed."""
    outer, channels, inner = x.shape
    maxima_buffer = np.empty(_BLOCK, x.dtype)
    totals_buffer = np.empty(_BLOCK, x.dtype)
    terms_buffer = np.empty(_BLOCK, x.dtype)
    keep_buffer = np.empty(_BLOCK, x.dtype)
    safe_buffer = np.empty(_BLOCK, np.int64)
    zero = x.dtype.type(0.0)
    loss = 0.0
    valid = 0
    bad = -1
    for o in range(outer):
        for start in range(0, inner, _BLOCK):
            n = min(_BLOCK, inner - start)
            stop = start + n
            maxima = maxima_buffer[:n]
            totals = totals_buffer[:n]
            terms = terms_buffer[:n]
            keep = keep_buffer[:n]
            safe = safe_buffer[:n]
            kernels.softmax_block(x, prob, o, start, maxima, totals, terms)
            for j in range(n):
                maxima[j] += kernels.log(totals[j])          # now the shift: max + log(sum exp)
            block_labels = labels[o, start:stop]
            for j in range(n):
                label = int(block_labels[j])
                keep[j] = zero
                safe[j] = 0
                if has_ignore and label == ignore_label:
                    continue
                if label < 0 or label >= channels:
                    if bad < 0:
                        bad = o * inner + start + j
                    continue
                keep[j] = 1.0
                safe[j] = label
                valid += 1
            terms[:] = zero
            for c in range(channels):
                scores = x[o, c, start:stop]
                weights = infogain_t[c]
                for j in range(n):
                    terms[j] += weights[safe[j]] * max(scores[j] - maxima[j], log_floor)
            block = 0.0
            for j in range(n):
                block += keep[j] * terms[j]
            loss -= block
    return loss, valid, bad


@kernels.cpu_kernel(inline="always")
def _row_sum(infogain, row_sums, known, label):
    """sum_k H[label, k], computed the first time a label is met (H may be a bottom, so per pass)."""
    if not known[label]:
        weights = infogain[label]
        total = weights.dtype.type(0.0)
        for c in range(weights.size):
            total += weights[c]
        row_sums[label] = total
        known[label] = True
    return row_sums[label]


@kernels.cpu_kernel
def _infogain_rows_gradient(prob, labels, infogain, has_ignore, ignore_label, scale, diff):
    """inner == 1: diff = scale * (p * rowsum(H)[g] - H[g]) row by row, zero rows where ignored."""
    outer, channels = prob.shape
    row_sums = np.empty(channels, prob.dtype)
    known = np.zeros(channels, np.bool_)
    for o in range(outer):
        target = diff[o]
        label = int(labels[o])
        if has_ignore and label == ignore_label:
            target[:] = 0.0
            continue
        source = prob[o]
        weights = infogain[label]
        factor = scale * _row_sum(infogain, row_sums, known, label)
        for c in range(channels):
            target[c] = factor * source[c] - scale * weights[c]


@kernels.cpu_kernel
def _infogain_blocked_gradient(prob, labels, infogain, infogain_t, has_ignore, ignore_label, scale, diff):
    """inner > 1: the same per location, in blocks of locations; arrays as (outer, C, inner)."""
    outer, channels, inner = prob.shape
    row_sums = np.empty(channels, prob.dtype)
    known = np.zeros(channels, np.bool_)
    factor_buffer = np.empty(_BLOCK, prob.dtype)
    weight_buffer = np.empty(_BLOCK, prob.dtype)
    safe_buffer = np.empty(_BLOCK, np.int64)
    zero = prob.dtype.type(0.0)
    for o in range(outer):
        for start in range(0, inner, _BLOCK):
            n = min(_BLOCK, inner - start)
            stop = start + n
            factors = factor_buffer[:n]
            weights = weight_buffer[:n]
            safe = safe_buffer[:n]
            block_labels = labels[o, start:stop]
            for j in range(n):
                label = int(block_labels[j])
                if has_ignore and label == ignore_label:
                    safe[j] = 0
                    factors[j] = zero
                    weights[j] = zero
                else:
                    safe[j] = label
                    factors[j] = scale * _row_sum(infogain, row_sums, known, label)
                    weights[j] = scale
            for c in range(channels):
                source = prob[o, c, start:stop]
                target = diff[o, c, start:stop]
                column = infogain_t[c]
                for j in range(n):
                    target[j] = factors[j] * source[j] - weights[j] * column[safe[j]]


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _infogain_forward_gpu(x, labels, infogain, prob, losses, valid, channels, inner, has_ignore, ignore_label,
                          log_floor, bad):
    location = cuda.grid(1)
    if location >= losses.size:
        return
    base = (location // inner) * channels * inner + location % inner
    top, total = gpu.softmax_at(x, prob, base, channels, inner)
    losses[location] = 0.0
    valid[location] = 0.0
    label = gpu.class_label(labels, location, channels, has_ignore, ignore_label, bad)
    if label < 0:
        return
    shift = top + math.log(total)
    term = 0.0
    for c in range(channels):
        term += infogain[label * channels + c] * max(x[base + c * inner] - shift, log_floor)
    losses[location] = -term
    valid[location] = 1.0


@gpu.jit
def _row_sums_gpu(infogain, channels, sums):
    row = cuda.grid(1)
    if row >= channels:
        return
    total = 0.0
    for c in range(channels):
        total += infogain[row * channels + c]
    sums[row] = total


@gpu.jit
def _infogain_backward_gpu(prob, labels, infogain, row_sums, totals, top_diff, channels, inner, has_ignore,
                           ignore_label, diff):
    index = cuda.grid(1)
    if index >= prob.size:
        return
    per_outer = channels * inner
    c = (index % per_outer) // inner
    location = (index // per_outer) * inner + index % inner
    label = int(labels[location])
    if has_ignore and label == ignore_label:
        diff[index] = 0.0
        return
    scale = top_diff[0] / totals[2]
    diff[index] = scale * (prob[index] * row_sums[label] - infogain[label * channels + c])


@register("InfogainLoss")
class InfogainLossLayer(LossLayer):
    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 3
    exact_tops = None
    min_tops = 1
    max_tops = 2
    never_backward_bottoms = (1, 2)
    classification = True
    default_normalization = "VALID"

    def loss_setup(self, bottom, top):
        self.infogain = None
        if len(bottom) == 3:
            return
        param = self.layer_param.infogain_loss_param
        if not param.HasField("source"):
            raise GraphError("InfogainLoss needs its H matrix: set infogain_loss_param.source (a .binaryproto) "
                             "or give it as a third bottom", layer=self.name)
        from ...io import read_binaryproto
        try:
            matrix = read_binaryproto(param.source)
        except MinicaffeError:
            if shape_inference_active() and not os.path.exists(param.source):
                return                     # the top is a scalar anyway; H is checked when the net runs
            raise
        self.infogain = np.ascontiguousarray(matrix, dtype=self.dtype).reshape(-1)
        self._gpu_infogain = None

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        scores = bottom[0]
        self.axis = scores.canonical_axis(self.layer_param.infogain_loss_param.axis, layer=self.name)
        self.outer = scores.count_axes(0, self.axis)
        self.channels = scores.shape[self.axis]
        self.inner = scores.count_axes(self.axis + 1)
        if self.outer * self.inner != bottom[1].count:
            raise self.shape_error(
                f"the label count must equal the number of predictions ({self.outer} x {self.inner} "
                f"locations for the classes of axis {self.axis} of {scores.shape})",
                expected=(self.outer * self.inner,), actual=bottom[1].shape)
        if len(bottom) == 3:
            h_count, h_shape, origin = bottom[2].count, bottom[2].shape, "the third bottom"
        elif self.infogain is not None:
            source = self.layer_param.infogain_loss_param.source
            h_count, h_shape, origin = self.infogain.size, (self.infogain.size,), f"'{source}'"
        else:
            h_count = None
        if h_count is not None and h_count != self.channels * self.channels:
            raise self.shape_error(f"H ({origin}) must hold {self.channels} x {self.channels} values, one row and "
                                   f"column per class of axis {self.axis}",
                                   expected=(self.channels, self.channels), actual=h_shape)
        if len(top) > 1:
            top[1].reshape(scores.shape)

    def _matrix(self, bottom):
        """H as a contiguous (C, C) array of the layer's dtype."""
        if len(bottom) == 3:
            return np.ascontiguousarray(bottom[2].data.reshape(self.channels, self.channels), dtype=self.dtype)
        return self.infogain.reshape(self.channels, self.channels)

    def _prob(self, bottom, top):
        if len(top) > 1:
            return top[1].data
        buffer = getattr(self, "_prob_buffer", None)
        if buffer is None or buffer.shape != bottom[0].shape or buffer.dtype != bottom[0].dtype:
            buffer = self._prob_buffer = np.empty(bottom[0].shape, dtype=bottom[0].dtype)
        return buffer

    # ------------------------------------------------------------ CPU
    def forward(self, bottom, top):
        scores = bottom[0].data
        dtype = scores.dtype
        labels = bottom[1].data.reshape(self.outer, self.inner).astype(dtype, copy=False)
        prob = self._prob(bottom, top)
        matrix = self._matrix(bottom)
        floor = dtype.type(LOG_FLOOR)
        ignore = int(self.ignore_label)
        if self.inner == 1:
            shape = (self.outer, self.channels)
            loss, valid, bad = _infogain_rows(scores.reshape(shape), prob.reshape(shape), labels.reshape(-1), matrix,
                                              self.has_ignore_label, ignore, floor)
        else:
            shape = (self.outer, self.channels, self.inner)
            loss, valid, bad = _infogain_blocked(scores.reshape(shape), prob.reshape(shape), labels,
                                                 np.ascontiguousarray(matrix.T), self.has_ignore_label, ignore, floor)
        if bad >= 0:
            self._bad_label(bottom, bad)
        self.probabilities = prob
        self.loss_normalizer = self.normalizer(self.outer, self.inner, valid)
        top[0].data[...] = loss / self.loss_normalizer

    def backward(self, top, propagate_down, bottom):
        self._check_propagation(propagate_down)
        if not propagate_down[0]:
            return
        dtype = bottom[0].dtype
        scale = dtype.type(self.loss_weight_scale(top, self.loss_normalizer))
        labels = bottom[1].data.reshape(self.outer, self.inner).astype(dtype, copy=False)
        matrix = self._matrix(bottom)
        ignore = int(self.ignore_label)
        if self.inner == 1:
            shape = (self.outer, self.channels)
            _infogain_rows_gradient(self.probabilities.reshape(shape), labels.reshape(-1), matrix,
                                    self.has_ignore_label, ignore, scale, bottom[0].diff.reshape(shape))
        else:
            shape = (self.outer, self.channels, self.inner)
            _infogain_blocked_gradient(self.probabilities.reshape(shape), labels, matrix,
                                       np.ascontiguousarray(matrix.T), self.has_ignore_label, ignore, scale,
                                       bottom[0].diff.reshape(shape))

    # ------------------------------------------------------------ GPU
    def _gpu_matrix(self, bottom):
        if len(bottom) == 3:
            return bottom[2].gpu_data
        if self._gpu_infogain is None:
            self._gpu_infogain = gpu.to_device(self.infogain)
        return self._gpu_infogain

    def forward_gpu(self, bottom, top):
        locations = self.outer * self.inner
        prob = (top[1].mutable_gpu_data if len(top) > 1
                else gpu.scratch(self, "probabilities", bottom[0].count, bottom[0].dtype))
        losses = gpu.scratch(self, "losses", locations, np.float64)
        valid = gpu.scratch(self, "valid", locations, np.float64)
        bad = gpu.bad_location_flag(self)
        _infogain_forward_gpu[gpu.blocks_for(locations), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, self._gpu_matrix(bottom), prob, losses, valid, self.channels,
            self.inner, self.has_ignore_label, int(self.ignore_label), LOG_FLOOR, bad)
        bad_index = gpu.bad_location(bad)
        if bad_index >= 0:
            self._bad_label(bottom, bad_index)
        self.gpu_probabilities = prob
        self.gpu_totals = gpu.reduce_loss(self, losses, valid, self.normalization, self.outer, self.inner,
                                          top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        self._check_propagation(propagate_down)
        if not propagate_down[0]:
            return
        matrix = self._gpu_matrix(bottom)
        row_sums = gpu.scratch(self, "row_sums", self.channels, np.float64)
        _row_sums_gpu[gpu.blocks_for(self.channels), gpu.THREADS](matrix, self.channels, row_sums)
        _infogain_backward_gpu[gpu.blocks_for(bottom[0].count), gpu.THREADS](
            self.gpu_probabilities, bottom[1].gpu_data, matrix, row_sums, self.gpu_totals, top[0].gpu_diff,
            self.channels, self.inner, self.has_ignore_label, int(self.ignore_label), bottom[0].mutable_gpu_diff)

    # ------------------------------------------------------------ errors
    def _check_propagation(self, propagate_down):
        if propagate_down[1]:
            raise GraphError("InfogainLoss cannot backpropagate to its label input", layer=self.name)
        if len(propagate_down) > 2 and propagate_down[2]:
            raise GraphError("InfogainLoss cannot backpropagate to its H input", layer=self.name)

    def _bad_label(self, bottom, position):
        value = bottom[1].data.reshape(-1)[position]
        raise MinicaffeError(f"layer '{self.name}': label {value:g} at position {position} is outside "
                             f"[0, {self.channels}) (the {self.channels} classes of axis {self.axis})")
