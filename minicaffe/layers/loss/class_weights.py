"""Per-class weights for SoftmaxWithLoss and MultinomialLogisticLoss (Mocha.jl's ``weights``).

The weights come from ``loss_param { class_weight: ... }`` (one per class) or
from an optional last bottom, which holds either one data point (the
prediction's shape without the batch axis, or with a batch axis of 1: the same
weights for every item) or the prediction's full shape. Giving both is an error.

With the prediction viewed as (outer, C, inner) around its class axis, the
weights are viewed as (rows, C, width): a class vector is (1, C, 1), one data
point (outer / N, C, inner), the full shape (outer, C, inner); location (o, i)
reads row ``o % rows`` and column ``i % width``. ``weight_normalization``
rescales them before use:

- LOCAL (default, Mocha's ``:local``): at every row and column, the C weights
  are scaled to sum to C;
- GLOBAL (``:global``): each item's weights (the whole array for a class vector
  or one data point, each item's rows for the full shape) are scaled so their
  mean is 1, i.e. they sum to C * S per item, S the locations of an item;
- AS_GIVEN (``:no``): unchanged.

A location or item whose weights sum to 0 gets weight 0 (Mocha would divide by
zero). The layers need only the weight of each location's own label:
:meth:`ClassWeights.location_weights` gathers it into an (outer, inner) array,
0 at ignored locations and at labels outside [0, C) (the layers report those).
"""

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError
from ...proto import caffe_pb2

LOCAL = caffe_pb2.LossParameter.LOCAL
GLOBAL = caffe_pb2.LossParameter.GLOBAL
AS_GIVEN = caffe_pb2.LossParameter.AS_GIVEN


@kernels.cpu_kernel
def _location_weights(weights, labels, mode, group_rows, has_ignore, ignore_label, factors, out):
    """out[o, i] = normalized weights[o % rows, label, i % width]; factors (rows, width) is scratch."""
    rows, channels, width = weights.shape
    outer, inner = labels.shape
    if mode == LOCAL:
        for r in range(rows):
            sums = factors[r]
            sums[:] = 0.0
            for c in range(channels):
                values = weights[r, c]
                for i in range(width):
                    sums[i] += values[i]
            for i in range(width):
                sums[i] = channels / sums[i] if sums[i] != 0.0 else 0.0
    elif mode == GLOBAL:
        count = group_rows * channels * width
        for start in range(0, rows, group_rows):
            total = 0.0
            for r in range(start, start + group_rows):
                for c in range(channels):
                    values = weights[r, c]
                    for i in range(width):
                        total += values[i]
            factor = count / total if total != 0.0 else 0.0
            factors[start:start + group_rows] = factor
    else:
        factors[:] = 1.0
    for o in range(outer):
        r = o % rows
        location_labels = labels[o]
        targets = out[o]
        for i in range(inner):
            label = int(location_labels[i])
            if (has_ignore and label == ignore_label) or label < 0 or label >= channels:
                targets[i] = 0.0
            else:
                column = i if width > 1 else 0
                targets[i] = weights[r, label, column] * factors[r, column]


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _local_sums_gpu(weights, channels, width, sums):
    """sums[r * width + i] = sum over classes of weights[r, c, i]."""
    index = cuda.grid(1)
    if index >= sums.size:
        return
    r = index // width
    i = index % width
    total = 0.0
    for c in range(channels):
        total += weights[(r * channels + c) * width + i]
    sums[index] = total


@gpu.jit
def _group_sums_gpu(weights, per_group, sums):
    """sums[g] += each weight of group g (per_group consecutive elements per group)."""
    index = cuda.grid(1)
    if index >= weights.size:
        return
    cuda.atomic.add(sums, index // per_group, weights[index])


@gpu.jit
def _location_weights_gpu(weights, labels, sums, mode, rows, channels, width, inner, group_rows, has_ignore,
                          ignore_label, out):
    location = cuda.grid(1)
    if location >= out.size:
        return
    label = int(labels[location])
    if (has_ignore and label == ignore_label) or label < 0 or label >= channels:
        out[location] = 0.0
        return
    r = (location // inner) % rows
    column = location % inner if width > 1 else 0
    value = weights[(r * channels + label) * width + column]
    if mode == LOCAL:
        total = sums[r * width + column]
        value = value * channels / total if total != 0.0 else 0.0
    elif mode == GLOBAL:
        total = sums[r // group_rows]
        value = value * (group_rows * channels * width) / total if total != 0.0 else 0.0
    out[location] = value


class ClassWeights:
    """The class weights of one layer: where they come from, their view, their normalization.

    ``weighted`` is False when the layer has neither ``class_weight`` nor a weights
    bottom; the layer then runs its unweighted kernels unchanged.
    """

    def __init__(self, layer, bottom_count, max_bottoms):
        loss_param = layer.layer_param.loss_param
        self.layer = layer
        self.vector = np.array(loss_param.class_weight, dtype=np.float64)
        self.from_bottom = bottom_count == max_bottoms
        if self.from_bottom and self.vector.size:
            raise GraphError("class weights come either from loss_param.class_weight or from a weights bottom, "
                             "not both", layer=layer.name)
        self.weighted = self.from_bottom or self.vector.size > 0
        self.mode = loss_param.weight_normalization
        self._device_vector = None

    def reshape(self, prediction_shape, items, outer, channels, inner, bottom=None):
        """Check the weights against the prediction viewed as (outer, C, inner) with ``items`` batch items."""
        if not self.weighted:
            return
        self.outer, self.channels, self.inner = outer, channels, inner
        if not self.from_bottom:
            if self.vector.size != channels:
                raise self.layer.shape_error(f"loss_param.class_weight needs one weight per class ({channels} "
                                             f"classes), got {self.vector.size}",
                                             expected=(channels,), actual=self.vector.shape)
            self.view = (1, channels, 1)
            self.group_rows = 1
            return
        shape = tuple(bottom[-1].shape)
        prediction_shape = tuple(prediction_shape)
        per_item = prediction_shape[1:]
        rows_per_item = outer // max(items, 1)
        if shape == prediction_shape:
            self.view = (outer, channels, inner)
            self.group_rows = max(rows_per_item, 1)
        elif items == prediction_shape[0] and shape in (per_item, (1,) + per_item):
            self.view = (rows_per_item, channels, inner)
            self.group_rows = max(rows_per_item, 1)
        else:
            raise self.layer.shape_error(
                f"the weights bottom must have the prediction's shape {prediction_shape} or one data point's "
                f"{per_item}", expected=prediction_shape, actual=shape)

    def _weights(self, bottom, dtype):
        if self.from_bottom:
            return bottom[-1].data.reshape(self.view)
        vector = getattr(self, "_typed_vector", None)
        if vector is None or vector.dtype != dtype:
            vector = self._typed_vector = self.vector.astype(dtype).reshape(self.view)
        return vector

    def location_weights(self, bottom, labels, has_ignore, ignore_label):
        """The (outer, inner) weight of each location's label; ``labels`` is (outer, inner) in the data type."""
        weights = self._weights(bottom, labels.dtype)
        factors = getattr(self, "_factors", None)
        if factors is None or factors.shape != (self.view[0], self.view[2]):
            factors = self._factors = np.empty((self.view[0], self.view[2]), np.float64)
        out = getattr(self, "_out", None)
        if out is None or out.shape != labels.shape or out.dtype != labels.dtype:
            out = self._out = np.empty(labels.shape, labels.dtype)
        _location_weights(weights, labels, self.mode, self.group_rows, has_ignore, int(ignore_label), factors, out)
        return out

    def location_weights_gpu(self, bottom, labels, has_ignore, ignore_label):
        """The same on the device: a float64 device array of outer * inner weights."""
        rows, channels, width = self.view
        if self.from_bottom:
            weights = bottom[-1].gpu_data
        else:
            if self._device_vector is None or self._device_vector.dtype != bottom[0].dtype:
                self._device_vector = gpu.to_device(self.vector.astype(bottom[0].dtype))
            weights = self._device_vector
        if self.mode == LOCAL:
            sums = gpu.scratch(self, "sums", rows * width, np.float64)
            _local_sums_gpu[gpu.blocks_for(sums.size), gpu.THREADS](weights, channels, width, sums)
        elif self.mode == GLOBAL:
            sums = gpu.scratch_filled(self, "sums", max(rows // self.group_rows, 1), np.float64, 0.0)
            _group_sums_gpu[gpu.blocks_for(rows * channels * width), gpu.THREADS](
                weights, self.group_rows * channels * width, sums)
        else:
            sums = gpu.scratch(self, "sums", 1, np.float64)
        out = gpu.scratch(self, "out", self.outer * self.inner, np.float64)
        _location_weights_gpu[gpu.blocks_for(out.size), gpu.THREADS](
            weights, labels, sums, self.mode, rows, channels, width, self.inner, self.group_rows, has_ignore,
            int(ignore_label), out)
        return out
