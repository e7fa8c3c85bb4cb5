"""HingeLoss: Caffe's one-vs-all hinge loss over class-index labels, or Mocha's binary hinge loss.

Two forms, told apart by the label blob's shape.

Class-index labels (Caffe; the label blob is not the prediction's shape). The
prediction is viewed as (N, D), N = x.shape[0], with one label ``g_n`` in [0, D)
per row. With ``m`` the margin and ``s_nd = -1`` if ``d == g_n`` else ``+1``::

    t_nd = max(0, m + s_nd x_nd)                       (L1, the default)
    loss = sum over non-ignored rows, all d, of t_nd   / normalizer
    loss = sum ... of t_nd^2                           / normalizer     (norm: L2)
    dx_nd = w s_nd [t_nd > 0] / normalizer             (L1: subgradient 0 at the kink)
    dx_nd = 2 w s_nd t_nd / normalizer                 (L2)

``w`` is the loss weight in ``top[0].diff``. These honour ``loss_param``:
``ignore_label`` skips rows (zero gradient), and ``normalization`` chooses the
normalizer (FULL and VALID count rows, BATCH_SIZE is N, NONE is 1). Unset, it is
BATCH_SIZE, Caffe's fixed N. (Caffe ignores ``loss_param`` on this layer;
minicaffe applies it when set.)

Binary labels (Mocha; the label blob has the prediction's shape). Every
element ``i`` has a label ``y_i`` in {-1, +1}::

    t_i  = max(0, m - y_i x_i)
    loss = sum_i t_i / N       (L2: sum_i t_i^2 / N),   N = x.shape[0]
    dx_i = -w y_i [t_i > 0] / N                        (L2: -2 w y_i t_i / N)

The divisor is fixed: ``loss_param.normalization`` does not apply (a warning
says so) and ``ignore_label`` is not used. A label other than -1 or +1 is an
error, since 0/1 labels would silently train nothing.

``hinge_loss_param``: ``norm`` (L1 or L2) and ``margin`` (default 1; a
minicaffe field, Caffe's margin is always 1).

CPU: one pass per row (the label's term apart, so the loops over the other
classes have no branch and vectorize); Backward recomputes ``t`` from ``x``.

GPU: one thread per element computes its term (and, once per row, whether the
row counts); the sum, the count and the normalized loss stay on the device.
"""

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError, MinicaffeError
from ...layer import LossLayer
from ...registry import register


# ---------------------------------------------------------------- CPU kernels

@kernels.cpu_kernel
def _class_hinge(x, labels, margin, squared, has_ignore, ignore_label):
    """Returns (loss sum, counted rows, index of the first out-of-range label or -1); x is (N, D)."""
    outer, dim = x.shape
    zero = x.dtype.type(0.0)
    loss = 0.0
    valid = 0
    bad = -1
    for o in range(outer):
        label = int(labels[o])
        if has_ignore and label == ignore_label:
            continue
        if label < 0 or label >= dim:
            if bad < 0:
                bad = o
            continue
        row = x[o]
        total = zero
        for d in range(label):
            t = max(margin + row[d], zero)
            total += t * t if squared else t
        for d in range(label + 1, dim):
            t = max(margin + row[d], zero)
            total += t * t if squared else t
        t = max(margin - row[label], zero)
        total += t * t if squared else t
        loss += total
        valid += 1
    return loss, valid, bad


@kernels.cpu_kernel
def _class_hinge_gradient(x, labels, margin, squared, has_ignore, ignore_label, scale, diff):
    """diff = scale * s * [t > 0] (L1) or 2 scale * s * t (L2), zero rows where ignored."""
    outer, dim = x.shape
    zero = x.dtype.type(0.0)
    double = scale + scale
    for o in range(outer):
        row = x[o]
        target = diff[o]
        label = int(labels[o])
        if has_ignore and label == ignore_label:
            target[:] = zero
            continue
        if squared:
            for d in range(dim):
                target[d] = double * max(margin + row[d], zero)
            target[label] = -double * max(margin - row[label], zero)
        else:
            for d in range(dim):
                target[d] = scale if margin + row[d] > zero else zero
            target[label] = -scale if margin - row[label] > zero else zero


@kernels.cpu_kernel
def _binary_hinge(x, y, margin, squared):
    """Returns (loss sum, number of labels that are neither -1 nor +1)."""
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    loss = 0.0
    bad = 0
    for i in range(x.size):
        label = y[i]
        t = max(margin - x[i] * label, zero)
        loss += t * t if squared else t
        bad += 0 if (label == one or label == -one) else 1
    return loss, bad


@kernels.cpu_kernel
def _binary_hinge_gradient(x, y, margin, squared, scale, diff):
    zero = x.dtype.type(0.0)
    double = scale + scale
    for i in range(x.size):
        label = y[i]
        t = max(margin - x[i] * label, zero)
        if squared:
            diff[i] = -double * label * t
        else:
            diff[i] = -scale * label if t > zero else zero


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _class_hinge_gpu(x, labels, dim, margin, squared, has_ignore, ignore_label, losses, valid, bad):
    i = cuda.grid(1)
    if i >= x.size:
        return
    o = i // dim
    d = i % dim
    losses[i] = 0.0
    valid[i] = 0.0
    label = int(labels[o])
    if has_ignore and label == ignore_label:
        return
    if label < 0 or label >= dim:
        if d == 0:
            cuda.atomic.min(bad, 0, o)
        return
    value = margin - x[i] if d == label else margin + x[i]
    t = max(value, 0.0)
    losses[i] = t * t if squared else t
    if d == label:
        valid[i] = 1.0             # one per counted row


@gpu.jit
def _class_hinge_gradient_gpu(x, labels, dim, margin, squared, has_ignore, ignore_label, totals, top_diff,
                              diff):
    i = cuda.grid(1)
    if i >= x.size:
        return
    o = i // dim
    d = i % dim
    label = int(labels[o])
    if has_ignore and label == ignore_label:
        diff[i] = 0.0
        return
    sign = -1.0 if d == label else 1.0
    t = max(margin + sign * x[i], 0.0)
    scale = top_diff[0] / totals[2]
    if squared:
        diff[i] = 2.0 * scale * sign * t
    else:
        diff[i] = scale * sign if t > 0.0 else 0.0


@gpu.jit
def _binary_hinge_gpu(x, y, margin, squared, losses, bad):
    i = cuda.grid(1)
    if i >= x.size:
        return
    label = y[i]
    if label != 1.0 and label != -1.0:
        cuda.atomic.min(bad, 0, i)
    t = max(margin - x[i] * label, 0.0)
    losses[i] = t * t if squared else t


@gpu.jit
def _binary_hinge_gradient_gpu(x, y, margin, squared, factor, top_diff, diff):
    i = cuda.grid(1)
    if i >= x.size:
        return
    label = y[i]
    t = max(margin - x[i] * label, 0.0)
    scale = factor * top_diff[0]
    if squared:
        diff[i] = -2.0 * scale * label * t
    else:
        diff[i] = -scale * label if t > 0.0 else 0.0


def _is_binary(bottom):
    return bottom[1].shape == bottom[0].shape


@register("HingeLoss")
class HingeLossLayer(LossLayer):
    classification = True
    default_normalization = "BATCH_SIZE"

    def setup(self, bottom, top):
        # The label blob's shape picks the form; classification decides whether loss_param applies.
        self.binary = _is_binary(bottom)
        self.classification = not self.binary
        super().setup(bottom, top)

    def loss_setup(self, bottom, top):
        param = self.layer_param.hinge_loss_param
        self.squared = param.norm == param.L2
        self.margin = float(param.margin)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if _is_binary(bottom) != self.binary:
            form = "binary (+1/-1 labels of the prediction's shape)" if self.binary else "class-index"
            raise self.shape_error(f"the label blob changed form: the layer was set up for {form} labels",
                                   expected=bottom[0].shape if self.binary else (bottom[0].shape[0],),
                                   actual=bottom[1].shape)
        self.outer = bottom[0].shape[0]
        self.dim = bottom[0].count // max(self.outer, 1)
        if not self.binary and bottom[1].count != self.outer:
            raise self.shape_error(
                f"needs one class label per row of the prediction ({self.outer} rows of {self.dim}), "
                "or +1/-1 labels of the prediction's own shape",
                expected=(self.outer,), actual=bottom[1].shape)

    # ------------------------------------------------------------ CPU
    def forward(self, bottom, top):
        x = bottom[0].data
        labels = bottom[1].data.reshape(-1).astype(x.dtype, copy=False)
        margin = x.dtype.type(self.margin)
        if self.binary:
            loss, bad = _binary_hinge(x.reshape(-1), labels, margin, self.squared)
            if bad:
                self._bad_binary_label(bottom)
            self.loss_normalizer = float(self.outer)
        else:
            loss, valid, bad = _class_hinge(x.reshape(self.outer, self.dim), labels, margin, self.squared,
                                            self.has_ignore_label, int(self.ignore_label))
            if bad >= 0:
                self._bad_class_label(bottom, bad)
            self.loss_normalizer = self.normalizer(self.outer, 1, valid)
        top[0].data[...] = loss / self.loss_normalizer

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise GraphError("HingeLoss cannot backpropagate to its label input", layer=self.name)
        if not propagate_down[0]:
            return
        x = bottom[0].data
        labels = bottom[1].data.reshape(-1).astype(x.dtype, copy=False)
        margin = x.dtype.type(self.margin)
        scale = x.dtype.type(self.loss_weight_scale(top, self.loss_normalizer))
        if self.binary:
            _binary_hinge_gradient(x.reshape(-1), labels, margin, self.squared, scale, bottom[0].diff.reshape(-1))
        else:
            shape = (self.outer, self.dim)
            _class_hinge_gradient(x.reshape(shape), labels, margin, self.squared, self.has_ignore_label,
                                  int(self.ignore_label), scale, bottom[0].diff.reshape(shape))

    # ------------------------------------------------------------ GPU
    def forward_gpu(self, bottom, top):
        count = bottom[0].count
        losses = gpu.scratch(self, "losses", count, np.float64)
        bad = gpu.bad_location_flag(self)
        blocks = gpu.blocks_for(count)
        if self.binary:
            _binary_hinge_gpu[blocks, gpu.THREADS](bottom[0].gpu_data, bottom[1].gpu_data, self.margin,
                                                   self.squared, losses, bad)
            if gpu.bad_location(bad) >= 0:
                self._bad_binary_label(bottom)
            self.gpu_totals = gpu.reduce_loss(self, losses, losses, gpu.FIXED_DIVISOR, self.outer, 1,
                                              top[0].mutable_gpu_data)
            return
        valid = gpu.scratch(self, "valid", count, np.float64)
        _class_hinge_gpu[blocks, gpu.THREADS](bottom[0].gpu_data, bottom[1].gpu_data, self.dim, self.margin,
                                              self.squared, self.has_ignore_label, int(self.ignore_label),
                                              losses, valid, bad)
        bad_row = gpu.bad_location(bad)
        if bad_row >= 0:
            self._bad_class_label(bottom, bad_row)
        self.gpu_totals = gpu.reduce_loss(self, losses, valid, self.normalization, self.outer, 1,
                                          top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise GraphError("HingeLoss cannot backpropagate to its label input", layer=self.name)
        if not propagate_down[0]:
            return
        blocks = gpu.blocks_for(bottom[0].count)
        if self.binary:
            _binary_hinge_gradient_gpu[blocks, gpu.THREADS](
                bottom[0].gpu_data, bottom[1].gpu_data, self.margin, self.squared, 1.0 / self.outer,
                top[0].gpu_diff, bottom[0].mutable_gpu_diff)
        else:
            _class_hinge_gradient_gpu[blocks, gpu.THREADS](
                bottom[0].gpu_data, bottom[1].gpu_data, self.dim, self.margin, self.squared,
                self.has_ignore_label, int(self.ignore_label), self.gpu_totals, top[0].gpu_diff,
                bottom[0].mutable_gpu_diff)

    # ------------------------------------------------------------ errors
    def _bad_class_label(self, bottom, row):
        value = bottom[1].data.reshape(-1)[row]
        raise MinicaffeError(f"layer '{self.name}': label {value:g} at position {row} is outside [0, {self.dim}) "
                             f"(the {self.dim} classes of each row of {bottom[0].shape})")

    def _bad_binary_label(self, bottom):
        labels = bottom[1].data.reshape(-1)
        position = int(np.flatnonzero((labels != 1) & (labels != -1))[0])
        raise MinicaffeError(f"layer '{self.name}': binary hinge labels must be -1 or +1, got {labels[position]:g} "
                             f"at position {position} (labels of the prediction's shape {bottom[0].shape} are "
                             "binary; class indices take one label per row)")
