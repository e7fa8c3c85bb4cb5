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
"""

import numpy as np

from ..errors import GraphError
from ..layer import Layer
from ..registry import register


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
