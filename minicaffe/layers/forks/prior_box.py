"""PriorBox: SSD's default boxes, ``(xmin, ymin, xmax, ymax) = (center -+ size / 2) / image size`` per cell and prior.

From the SSD fork (weiliu89/caffe, branch ``ssd``). Bottoms: the feature map
(its height and width give the cells) and the image (its height and width give
the image size, unless ``img_size`` or ``img_h``/``img_w`` say it). One top of
shape (1, 2, H * W * P * 4): channel 0 holds the boxes, channel 1 their
variances; P is the number of priors per cell. Nothing depends on the bottoms'
values, and there is no Backward (the fork's is empty).

``prior_box_param``:

- ``min_size`` (one or more, required, > 0); ``max_size`` (none, or one per
  ``min_size``, each greater than its ``min_size``).
- ``aspect_ratio``: ratios besides 1. The list of ratios starts at 1; each
  given ratio is added unless within 1e-6 of one already listed, followed by
  its reciprocal when ``flip`` (default true). So ``aspect_ratio: 2
  aspect_ratio: 0.5`` with flip is [1, 2, 1/2], and a ratio of 1 adds nothing.
- ``step`` or ``step_h``/``step_w`` (both, > 0): the distance between cell
  centres in image pixels; unset, image size / feature map size, per axis.
- ``offset`` (default 0.5): cell (h, w) is centred at ((w + offset) * step_w,
  (h + offset) * step_h).
- ``img_size`` or ``img_h``/``img_w`` (both, > 0; not with ``img_size``).
- ``clip`` (default false): clamp the box coordinates (not the variances) to [0, 1].
- ``variance``: none (0.1 for every coordinate), one for all four coordinates,
  or exactly four (xmin, ymin, xmax, ymax); each > 0.

Order of the priors in a cell, for each ``min_size`` in turn (the fork's loop):
the square box of side ``min_size``; when there are ``max_size``s, the square
of side ``sqrt(min_size * max_size)``; then one box per listed ratio ``r`` other
than 1, ``min_size * sqrt(r)`` wide and ``min_size / sqrt(r)`` tall. So
P = (number of ratios) * (number of min_sizes) + (number of max_sizes). Cells
run row by row (h, then w), the priors of a cell consecutive.

Quirks of the fork kept: ``min_size`` and ``max_size`` are truncated to
integers when the boxes are computed (``int min_size_ = min_sizes_[s]``), so
``min_size: 21.5`` gives 21-pixel boxes (the check ``max_size > min_size`` is
made before truncation); cell centres and steps are float32; a 3-D (or 2-D)
bottom has width (and height) 1, as Caffe's legacy accessors give, and one
with more than 4 axes is refused, as they refuse it; the fork
never checks the bottom count (its header declares ``ExactBottomBlobs``, not
``ExactNumBottomBlobs``), so a single bottom is accepted here when
``img_size`` or ``img_h``/``img_w`` makes the image unnecessary.

Deviation: a non-positive ``aspect_ratio`` is refused (the fork computes NaN
or infinite boxes from it).

OpenCV's dnn PriorBox (4.14) orders the priors as the fork does, several
``min_size``s included, but differs from it elsewhere: it clips when ``clip``
is unset (the fork's default is false), refuses a layer without ``variance``
(the fork's default is 0.1), ignores ``img_size``/``img_h``/``img_w`` (it
always takes the image bottom's size) and keeps a fractional ``min_size`` or
``max_size`` as it is.

CPU: the boxes are computed with numpy once per shape and cached; Forward
copies them into the top.

GPU: no kernel. The boxes depend only on shapes and parameters, so they are
computed on the host as on the CPU, once per shape, and copied into the top's
device memory once (host to device); while the shapes and the top's device
buffer stay the same, Forward does nothing, and the boxes stay on the device.
"""

import math

import numpy as np

from ...errors import GraphError, ShapeError
from ...layer import Layer
from ...registry import register


def _f32(value):
    return np.float32(value)


def aspect_ratios(ratios, flip):
    """The fork's list of ratios: 1, then each new ratio (and its reciprocal with ``flip``), as float32."""
    listed = [_f32(1.0)]
    for ratio in ratios:
        ratio = _f32(ratio)
        if any(abs(float(ratio) - float(seen)) < 1e-6 for seen in listed):
            continue
        listed.append(ratio)
        if flip:
            listed.append(_f32(1.0 / float(ratio)))
    return listed


def prior_sizes(min_sizes, max_sizes, ratios):
    """(width, height) of each prior of a cell, in the fork's order (sizes truncated as the fork does)."""
    sizes = []
    for index, min_value in enumerate(min_sizes):
        small = int(min_value)
        sizes.append((float(small), float(small)))
        if max_sizes:
            side = float(_f32(math.sqrt(small * int(max_sizes[index]))))
            sizes.append((side, side))
        for ratio in ratios:
            if abs(float(ratio) - 1.0) < 1e-6:
                continue
            root = float(ratio) ** 0.5
            sizes.append((float(_f32(small * root)), float(_f32(small / root))))
    return sizes


def legacy_height_width(blob, layer, index):
    """Caffe's legacy height() and width(): axes 2 and 3, 1 where the blob has fewer axes."""
    shape = blob.shape
    if len(shape) > 4:
        raise ShapeError(f"PriorBox reads bottom {index}'s height and width as Caffe's legacy accessors do, "
                         "which take at most 4 axes", layer=layer, actual=shape)
    return (shape[2] if len(shape) > 2 else 1), (shape[3] if len(shape) > 3 else 1)


@register("PriorBox")
class PriorBoxLayer(Layer):
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1
    has_backward = False
    fork = "SSD (weiliu89/caffe, branch ssd)"

    def setup(self, bottom, top):
        param = self.layer_param.prior_box_param
        name = self.name
        if not param.min_size:
            raise GraphError("PriorBox needs at least one prior_box_param.min_size", layer=name)
        self.min_sizes = [float(value) for value in param.min_size]
        if any(value <= 0 for value in self.min_sizes):
            raise GraphError(f"prior_box_param.min_size must be positive, got {self.min_sizes}", layer=name)
        self.max_sizes = [float(value) for value in param.max_size]
        if self.max_sizes:
            if len(self.max_sizes) != len(self.min_sizes):
                raise GraphError(f"prior_box_param has {len(self.min_sizes)} min_size and {len(self.max_sizes)} "
                                 "max_size; give one max_size per min_size, or none", layer=name)
            for small, large in zip(self.min_sizes, self.max_sizes):
                if not large > small:
                    raise GraphError(f"prior_box_param.max_size {large:g} must be greater than its min_size "
                                     f"{small:g}", layer=name)
        bad = [value for value in param.aspect_ratio if not value > 0]
        if bad:
            raise GraphError(f"prior_box_param.aspect_ratio must be positive, got {bad}", layer=name)
        self.ratios = aspect_ratios(param.aspect_ratio, param.flip)
        self.sizes = prior_sizes(self.min_sizes, self.max_sizes, self.ratios)
        self.num_priors = len(self.sizes)
        self.clip = param.clip
        variances = [float(value) for value in param.variance]
        if len(variances) not in (0, 1, 4):
            raise GraphError(f"prior_box_param.variance takes one value or four, got {len(variances)}", layer=name)
        if any(not value > 0 for value in variances):
            raise GraphError(f"prior_box_param.variance must be positive, got {variances}", layer=name)
        self.variances = variances or [float(_f32(0.1))]
        self.img_h, self.img_w = self._pair(param, "img_size", "img_h", "img_w")
        self.step_h, self.step_w = self._pair(param, "step", "step_h", "step_w")
        self.offset = float(_f32(param.offset))
        if len(bottom) < 2 and not self.img_h:
            raise GraphError("PriorBox takes the image as its second bottom, unless prior_box_param gives "
                             "img_size or img_h and img_w", layer=name)
        self._cache_key = None
        self._cache = None

    def _pair(self, param, both, height, width):
        """(h, w) from ``both`` or from ``height`` and ``width`` (the fork's rules); (0, 0) when unset."""
        if param.HasField(height) or param.HasField(width):
            if param.HasField(both):
                raise GraphError(f"prior_box_param: give either {both} or {height}/{width}, not both",
                                 layer=self.name)
            h, w = getattr(param, height), getattr(param, width)
            if not (h > 0 and w > 0):
                raise GraphError(f"prior_box_param.{height} and {width} must both be given and positive, "
                                 f"got {height} {h:g}, {width} {w:g}", layer=self.name)
            return h, w
        if param.HasField(both):
            value = getattr(param, both)
            if not value > 0:
                raise GraphError(f"prior_box_param.{both} must be positive, got {value:g}", layer=self.name)
            return value, value
        return 0, 0

    def reshape(self, bottom, top):
        height, width = legacy_height_width(bottom[0], self.name, 0)
        if height * width == 0:
            raise self.shape_error("PriorBox needs a feature map with at least one cell", actual=bottom[0].shape)
        if len(bottom) > 1:
            legacy_height_width(bottom[1], self.name, 1)
        top[0].reshape((1, 2, height * width * self.num_priors * 4))

    def _boxes(self, bottom):
        """The (2, H * W * P * 4) top for these bottom shapes: computed once per shape."""
        height, width = legacy_height_width(bottom[0], self.name, 0)
        if self.img_h and self.img_w:
            img_h, img_w = self.img_h, self.img_w
        else:
            img_h, img_w = legacy_height_width(bottom[1], self.name, 1)
        key = (height, width, img_h, img_w)
        if key == self._cache_key:
            return self._cache
        if self.step_h and self.step_w:
            step_h, step_w = _f32(self.step_h), _f32(self.step_w)
        else:
            step_h, step_w = _f32(img_h) / _f32(height), _f32(img_w) / _f32(width)
        # Centres in float32 as the fork's; the corners in float64 (its `/ 2.`), then the layer's dtype.
        center_x = ((np.arange(width, dtype=np.float32) + _f32(self.offset)) * step_w).astype(np.float64)
        center_y = ((np.arange(height, dtype=np.float32) + _f32(self.offset)) * step_h).astype(np.float64)
        sizes = np.array(self.sizes, dtype=np.float64)          # (P, 2): width, height
        boxes = np.empty((height, width, self.num_priors, 4), dtype=np.float64)
        half_w, half_h = sizes[:, 0] / 2.0, sizes[:, 1] / 2.0
        boxes[..., 0] = (center_x[None, :, None] - half_w) / img_w
        boxes[..., 1] = (center_y[:, None, None] - half_h) / img_h
        boxes[..., 2] = (center_x[None, :, None] + half_w) / img_w
        boxes[..., 3] = (center_y[:, None, None] + half_h) / img_h
        result = np.empty((2, boxes.size), dtype=self.dtype)
        result[0] = boxes.reshape(-1)
        if self.clip:
            np.clip(result[0], 0.0, 1.0, out=result[0])
        variances = np.array(self.variances, dtype=np.float32)
        result[1].reshape(-1, len(variances))[...] = variances
        self._cache_key, self._cache = key, result
        return result

    def forward(self, bottom, top):
        boxes = self._boxes(bottom)
        top[0].data.reshape(boxes.shape)[...] = boxes

    def forward_gpu(self, bottom, top):
        boxes = self._boxes(bottom)
        target = top[0].mutable_gpu_data
        written = getattr(self, "_gpu_written", None)
        if written is not None and written[0] is boxes and written[1] is target:
            return
        target.copy_to_device(boxes.reshape(-1))
        self._gpu_written = (boxes, target)
