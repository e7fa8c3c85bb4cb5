"""Accuracy: the fraction of predictions whose true class is among the top k scores.

Scores are ``bottom[0]`` with classes along ``accuracy_param.axis`` (default 1);
labels are ``bottom[1]``, one per position outside that axis (only the count
must match: N x C x H x W scores take N x H x W labels). Labels are truncated to
integers; positions labelled ``ignore_label`` are skipped. As in Caffe, a
prediction counts as right when fewer than ``top_k`` classes score at least as
high as the true class (the true class excluded), so ties with the true class
count against it. The first top is the scalar accuracy over counted positions
(0 when none are counted); an optional second top holds, per class, the accuracy
over positions of that label (0 for a class that never occurs).

Caffe gives Accuracy no Backward, and the labels never take a gradient.

GPU: Caffe's accuracy kernel, one thread per labelled position: it counts the
classes scoring at least the true class's score and writes a hit (0/1) and a
counted flag (0/1); with the per-class top it also adds 1 to its class's count
and hits (atomics on whole numbers in float64: exact, so the order does not
matter). The hits and counts are summed on the device (a shared-memory tree),
and a last kernel divides. A label outside [0, classes) sets the first bad
position in a one-number device array; that number alone comes back to the
host (as the loss layers' label checks), to raise the CPU's error.
"""

import numpy as np

from .. import gpu, gpu_blas
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register


@gpu.jit
def _accuracy_gpu(scores, labels, classes, inner, top_k, has_ignore, ignore_label, bad, hits, counted,
                  per_class, with_per_class):
    """per_class: counts of classes 0..C-1, then their hits (only with ``with_per_class``)."""
    location = cuda.grid(1)
    if location < labels.size:
        hits[location] = 0.0
        counted[location] = 0.0
        label = int(labels[location])
        if has_ignore and label == ignore_label:
            return
        if label < 0 or label >= classes:
            cuda.atomic.min(bad, 0, location)
            return
        base = location // inner * classes * inner + location % inner
        true_score = scores[base + label * inner]
        better = -1             # the true class counts itself
        for c in range(classes):
            if scores[base + c * inner] >= true_score:
                better += 1
        counted[location] = 1.0
        if better < top_k:
            hits[location] = 1.0
        if with_per_class:
            cuda.atomic.add(per_class, label, 1.0)
            if better < top_k:
                cuda.atomic.add(per_class, classes + label, 1.0)


@gpu.jit
def _accuracy_finish_gpu(totals, per_class, classes, accuracy, class_accuracy, with_per_class):
    i = cuda.grid(1)
    if i == 0:
        accuracy[0] = totals[0] / totals[1] if totals[1] > 0 else 0.0
    if with_per_class and i < classes:
        class_accuracy[i] = per_class[classes + i] / per_class[i] if per_class[i] > 0 else 0.0


@register("Accuracy")
class AccuracyLayer(Layer):
    exact_bottoms = 2
    min_tops = 1
    max_tops = 2
    has_backward = False
    never_backward_bottoms = (1,)

    def setup(self, bottom, top):
        param = self.layer_param.accuracy_param
        self.top_k = int(param.top_k)
        self.ignore_label = int(param.ignore_label) if param.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        scores, labels = bottom
        if labels.count and self.top_k > scores.count // labels.count:
            raise GraphError(f"top_k {self.top_k} is more than the number of classes "
                             f"({scores.count // labels.count})", layer=self.name)
        self.axis = scores.canonical_axis(self.layer_param.accuracy_param.axis, layer=self.name)
        self.outer = scores.count_axes(0, self.axis)
        self.inner = scores.count_axes(self.axis + 1)
        self.classes = scores.shape[self.axis]
        if self.outer * self.inner != labels.count:
            expected = scores.shape[:self.axis] + scores.shape[self.axis + 1:]
            raise self.shape_error(f"the labels must number one per prediction ({self.outer * self.inner}); "
                                   f"with scores of shape {scores.shape} and axis {self.axis} they would "
                                   f"have shape {expected}", expected=expected, actual=labels.shape)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.classes,))

    def forward(self, bottom, top):
        scores = bottom[0].data.reshape(self.outer, self.classes, self.inner)
        labels = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)  # truncates, as a C cast
        keep = np.ones(labels.shape, dtype=bool) if self.ignore_label is None else labels != self.ignore_label
        kept = labels[keep]
        if kept.size and (kept.min() < 0 or kept.max() >= self.classes):
            bad = kept[(kept < 0) | (kept >= self.classes)][0]
            raise GraphError(f"label {bad} is outside [0, {self.classes})", layer=self.name)
        safe = np.where(keep, labels, 0)
        true_score = np.take_along_axis(scores, safe[:, None, :], axis=1)          # outer x 1 x inner
        at_least = np.count_nonzero(scores >= true_score, axis=1)                 # the true class included
        correct = (at_least - 1 < self.top_k) & keep
        counted = int(np.count_nonzero(keep))
        hits = int(np.count_nonzero(correct))
        top[0].data[...] = self.dtype.type(hits) / counted if counted else 0
        if len(top) > 1:
            totals = np.bincount(kept, minlength=self.classes)
            right = np.bincount(labels[correct], minlength=self.classes)
            per_class = top[1].data
            per_class[...] = 0
            seen = totals > 0
            per_class[seen] = right[seen].astype(self.dtype) / totals[seen].astype(self.dtype)

    def backward(self, top, propagate_down, bottom):
        pass  # run_backward refuses any gradient request first; with none asked there is nothing to do

    def _gpu_buffers(self, locations):
        if getattr(self, "_gpu_buffer_sizes", None) != (locations, self.classes):
            self._gpu_hits = gpu.device_empty(max(locations, 1), np.float64)
            self._gpu_counted = gpu.device_empty(max(locations, 1), np.float64)
            self._gpu_totals = gpu.device_empty(3, np.float64)
            self._gpu_per_class = gpu.device_empty(2 * max(self.classes, 1), np.float64)
            self._gpu_bad = gpu.device_empty(1, np.int64)
            self._gpu_buffer_sizes = (locations, self.classes)
        return self._gpu_hits, self._gpu_counted, self._gpu_totals, self._gpu_per_class, self._gpu_bad

    def forward_gpu(self, bottom, top):
        locations = self.outer * self.inner
        hits, counted, totals, per_class, bad = self._gpu_buffers(locations)
        with_per_class = len(top) > 1
        for buffer in (totals, per_class):
            gpu_blas.fill(buffer, 0)
        gpu_blas.fill(bad, locations)
        if locations:
            _accuracy_gpu[gpu.blocks_for(locations), gpu.THREADS](
                bottom[0].gpu_data, bottom[1].gpu_data, self.classes, self.inner, self.top_k,
                self.ignore_label is not None, int(self.ignore_label or 0), bad, hits, counted, per_class,
                with_per_class)
            position = int(bad.copy_to_host()[0])
            if position < locations:
                label = int(bottom[1].read_data().reshape(-1)[position])
                raise GraphError(f"label {label} is outside [0, {self.classes})", layer=self.name)
            gpu.accumulate[gpu.blocks_for(locations), gpu.THREADS](hits, counted, totals)
        accuracy = top[0].gpu_data_to_overwrite()
        class_accuracy = top[1].gpu_data_to_overwrite() if with_per_class else accuracy
        _accuracy_finish_gpu[gpu.blocks_for(max(self.classes, 1)), gpu.THREADS](
            totals, per_class, self.classes, accuracy, class_accuracy, with_per_class)
