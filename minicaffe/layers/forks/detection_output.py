"""DetectionOutput: SSD's detections: decode prior boxes, per-class NMS, keep the best per image.

Bottoms (the fork's CPU Forward, ``detection_output_layer.cpp``):

- ``loc``: N x (P * L * 4), the box offsets per prior (L = 1 with
  ``share_location``, else ``num_classes``: prior-major, then class, then
  xmin, ymin, xmax, ymax). Axis 1 must hold them all (trailing axes of 1 are
  allowed): the fork checks the legacy ``channels()``, so an N x P x 4 blob is
  refused there and here; SSD nets Flatten first.
- ``conf``: N x (P * num_classes), prior-major, usually softmax probabilities.
- ``prior``: PriorBox's 1 x 2 x (P * 4) (only the first item is read): P boxes,
  then P variances. P is the legacy height (axis 2) / 4. With
  ``variance_encoded_in_target`` the variances are never read, so a
  1 x 1 x (P * 4) prior is accepted too.
- an optional 4th bottom (the image), which the fork reads only to draw
  (``visualize``); it is accepted and ignored.

Per image, for every loc class (the background's skipped when not sharing),
each prior's box is decoded with ``code_type`` (p: prior corners, pw/ph: its
size, v: its variance, or 1 with ``variance_encoded_in_target``; no clipping):

- CORNER: ``p + v * loc``, coordinate by coordinate;
- CENTER_SIZE: centre ``c + v[0:2] * loc[0:2] * (pw, ph)``, size
  ``exp(v[2:4] * loc[2:4]) * (pw, ph)``, back to corners;
- CORNER_SIZE: ``p + v * loc * (pw, ph, pw, ph)``.

Then for every class c != ``background_label_id``: the priors whose score is
strictly above ``confidence_threshold`` (unset: -FLT_MAX, so all), sorted by
descending score with a *stable* sort (equal scores keep prior order), cut to
``nms_param.top_k`` (unset: no limit), then greedy NMS: a box is kept when its
Jaccard overlap with every box already kept for that class is <=
``nms_threshold``; with ``eta`` < 1 the threshold is multiplied by eta after
each kept box while it is above 0.5. The overlap is the fork's for normalized
boxes: intersection / (area1 + area2 - intersection), 0 when they do not
intersect, and an inverted box (max < min) has area 0. If an image keeps more
than ``keep_top_k`` (>= 0) boxes over all classes, only the ``keep_top_k``
highest scores stay (the fork's std::sort leaves ties unordered; here a stable
sort keeps, among equal scores, the lower label and then the NMS order).

Top: 1 x 1 x K x 7, one row ``[image, label, score, xmin, ymin, xmax, ymax]``
per kept box, ordered by image, then label ascending, then descending score
(NMS order). K depends on the data: the top is 1 x 1 x 1 x 7 after set-up (the
fork's Reshape, what ``minicaffe check`` shows) and is reshaped by each
Forward. When no image keeps anything the fork writes one fake row per image,
``[i, -1, -1, -1, -1, -1, -1]`` (1 x 1 x N x 7). Scores and boxes go through
float32 whatever the net's dtype, as in the fork (its boxes and score vectors
are ``float``).

Quirks kept or refused:

- ``share_location`` with ``background_label_id: -1``: the fork's CPU Forward
  (and OpenCV's copy of it) skip decoding the shared boxes, because their label
  -1 equals the background's, and then abort ("Could not find location
  predictions for label -1"); its GPU Forward decodes them and runs every class.
  minicaffe does what the GPU Forward does.
- CENTER_SIZE and CORNER_SIZE refuse a prior of width or height <= 0 (the
  fork's CHECK_GT in DecodeBBox).
- ``save_output_param.output_directory`` (writing VOC/COCO/ILSVRC result files)
  and ``visualize`` (drawing) are refused with an error. A ``save_output_param``
  without an output directory (SSD deploy files carry a ``label_map_file``)
  writes nothing in the fork and is ignored.

No Backward (the fork's is NOT_IMPLEMENTED): asking a gradient of it is an error.

GPU: as the fork's GPU Forward, the boxes are decoded on the device
(``bbox_util.decode_boxes_gpu``, one thread per prediction, the CPU's float32
arithmetic), and the scores and prior boxes are converted to float32 there, all
into one device buffer; that buffer is copied to the host once per Forward
(by design: NMS and top-k are sequential and data-dependent), NMS runs on the
host with the CPU code, and the detections are written into the top on the
device (one host-to-device copy). On a real GPU the device's ``exp`` (libdevice,
within 1 ulp in double) can differ from the host's in the last bit of a double,
which the rounding to float32 almost always hides.
"""

import numpy as np

from ... import gpu
from ...errors import GraphError, ShapeError
from ...layer import Layer
from ...registry import register
from . import bbox_util

_CODE_TYPES = {bbox_util.CORNER: "CORNER", bbox_util.CENTER_SIZE: "CENTER_SIZE",
               bbox_util.CORNER_SIZE: "CORNER_SIZE"}
_FLT_MAX = np.finfo(np.float32).max


def _legacy(shape, axis):
    """Caffe's LegacyShape: the axis's size, 1 past the last axis."""
    return shape[axis] if axis < len(shape) else 1


@register("DetectionOutput")
class DetectionOutputLayer(Layer):
    min_bottoms = 3
    max_bottoms = 4
    exact_tops = 1
    has_backward = False
    fork = "SSD (weiliu89/caffe, branch ssd)"

    def setup(self, bottom, top):
        param = self.layer_param.detection_output_param
        if not param.HasField("num_classes") or param.num_classes < 1:
            raise GraphError("detection_output_param.num_classes must be given (at least 1)", layer=self.name)
        self.num_classes = int(param.num_classes)
        self.share_location = bool(param.share_location)
        self.num_loc_classes = 1 if self.share_location else self.num_classes
        self.background_label_id = int(param.background_label_id)
        self.code_type = int(param.code_type)
        if self.code_type not in _CODE_TYPES:
            raise GraphError(f"unknown code_type {self.code_type}", layer=self.name)
        self.variance_encoded_in_target = bool(param.variance_encoded_in_target)
        self.keep_top_k = int(param.keep_top_k)
        self.confidence_threshold = (np.float32(param.confidence_threshold)
                                     if param.HasField("confidence_threshold") else -_FLT_MAX)
        nms = param.nms_param
        self.nms_threshold = np.float32(nms.nms_threshold)
        if not self.nms_threshold >= 0:
            raise GraphError(f"nms_param.nms_threshold must be non-negative, got {nms.nms_threshold}",
                             layer=self.name)
        self.eta = np.float32(nms.eta)
        if not 0 < self.eta <= 1:
            raise GraphError(f"nms_param.eta must be in (0, 1], got {nms.eta}", layer=self.name)
        self.top_k = int(nms.top_k) if nms.HasField("top_k") else -1
        if param.save_output_param.output_directory:
            raise GraphError("save_output_param.output_directory is set: writing detection result files is not "
                             "supported by minicaffe (the detections are in the top blob); remove the "
                             "output_directory", layer=self.name)
        if param.visualize:
            raise GraphError("visualize: true (drawing detections) is not supported by minicaffe; remove it",
                             layer=self.name)

    def reshape(self, bottom, top):
        loc, conf, prior = bottom[0].shape, bottom[1].shape, bottom[2].shape
        for role, shape in (("loc", loc), ("conf", conf), ("prior", prior)):
            if len(shape) > 4:
                raise self.shape_error(f"the {role} bottom has more than 4 axes (the fork reads it through the "
                                       "legacy num/channels/height)", actual=shape)
        if _legacy(loc, 0) != _legacy(conf, 0):
            raise self.shape_error("loc and conf must have the same number of images (axis 0)",
                                   expected=(_legacy(loc, 0),) + conf[1:], actual=conf)
        self.num_priors = _legacy(prior, 2) // 4
        p = self.num_priors
        where = f"loc {_shape(loc)}, conf {_shape(conf)}, prior {_shape(prior)}: {p} priors (prior axis 2 / 4)"
        for role, shape, per_prior in (("loc", loc, self.num_loc_classes * 4), ("conf", conf, self.num_classes)):
            expected = p * per_prior
            if _legacy(shape, 1) != expected or int(np.prod(shape[1:], dtype=np.int64)) != expected:
                what = (f"{p} priors x {self.num_loc_classes} loc class(es) x 4" if role == "loc"
                        else f"{p} priors x {self.num_classes} classes")
                raise ShapeError(f"{role} must hold {what} = {expected} values per image on axis 1 ({where})",
                                 layer=self.name, expected=(_legacy(shape, 0), expected), actual=shape)
        rows = 1 if self.variance_encoded_in_target else 2
        if int(np.prod(prior, dtype=np.int64)) < rows * p * 4:
            raise ShapeError(f"prior must hold {p} boxes" + ("" if rows == 1 else " and their variances")
                             + f" ({where})", layer=self.name, expected=(1, rows, p * 4), actual=prior)
        top[0].reshape((1, 1, 1, 7))        # the fork's placeholder until Forward knows the count

    def forward(self, bottom, top):
        num, p = _legacy(bottom[0].shape, 0), self.num_priors
        loc = bottom[0].read_data().reshape(num, p, self.num_loc_classes, 4).astype(np.float32)
        conf = bottom[1].read_data().reshape(num, p, self.num_classes).astype(np.float32)
        prior = bottom[2].read_data().reshape(-1).astype(np.float32)
        prior_boxes = prior[:p * 4].reshape(p, 4)
        prior_variances = None if self.variance_encoded_in_target else prior[p * 4:p * 8].reshape(p, 4)

        decoded_classes = [c for c in range(self.num_loc_classes)
                           if self.share_location or c != self.background_label_id]
        if self.code_type != bbox_util.CORNER and decoded_classes and p:
            self._check_prior_sizes(prior_boxes)
        boxes = bbox_util.decode_boxes(loc, prior_boxes[:, None], None if prior_variances is None else
                                       prior_variances[:, None], self.code_type,
                                       self.variance_encoded_in_target)
        detections = self._detections(num, boxes, conf)
        top[0].reshape((1, 1) + detections.shape)
        top[0].data.reshape(detections.shape)[...] = detections

    def _detections(self, num, boxes, conf):
        """The top's (K, 7) rows from the decoded float32 boxes (N, P, L, 4) and scores (N, P, C): NMS per
        class, keep_top_k per image; the fork's fake row per image when nothing is kept."""
        p = self.num_priors
        sizes = bbox_util.box_sizes(boxes)
        kept = np.empty((num, self.num_classes, p), dtype=np.int32)
        counts = np.empty((num, self.num_classes), dtype=np.int32)
        bbox_util.nms_per_class(boxes, sizes, conf, self.share_location, self.background_label_id,
                                self.confidence_threshold, self.nms_threshold, self.eta, self.top_k, kept, counts)

        rows = [self._image_rows(i, kept[i], counts[i], conf[i], boxes[i]) for i in range(num)]
        total = sum(len(r) for r in rows)
        if total == 0:
            fake = np.full((num, 7), -1, dtype=np.float32)
            fake[:, 0] = np.arange(num)      # the fork's fake result: one row per image
            return fake
        return np.concatenate(rows)

    def forward_gpu(self, bottom, top):
        num, p = _legacy(bottom[0].shape, 0), self.num_priors
        loc_classes, classes = self.num_loc_classes, self.num_classes
        box_count, score_count, prior_count = num * p * loc_classes * 4, num * p * classes, p * 4
        total = box_count + score_count + prior_count
        cached = getattr(self, "_gpu_buffers", None)
        if cached is None or cached[1].size != total:
            cached = self._gpu_buffers = (gpu.device_empty(max(total, 1), np.float32), np.empty(total, np.float32))
        device, host = cached[0], cached[1]
        decoded, scores, priors = (device[:box_count], device[box_count:box_count + score_count],
                                   device[box_count + score_count:total])
        if box_count:
            bbox_util.decode_boxes_gpu[gpu.blocks_for(box_count // 4), gpu.THREADS](
                bottom[0].gpu_data, bottom[2].gpu_data, int(self.code_type), self.variance_encoded_in_target,
                int(p), int(loc_classes), decoded)
        if score_count:
            bbox_util.to_float32_gpu[gpu.blocks_for(score_count), gpu.THREADS](bottom[1].gpu_data, scores)
        if prior_count:
            bbox_util.to_float32_gpu[gpu.blocks_for(prior_count), gpu.THREADS](bottom[2].gpu_data[:prior_count],
                                                                                priors)
        if total:
            device[:total].copy_to_host(host)      # the one copy to the host: NMS runs there
        boxes = host[:box_count].reshape(num, p, loc_classes, 4)
        conf = host[box_count:box_count + score_count].reshape(num, p, classes)
        decoded_classes = [c for c in range(loc_classes) if self.share_location or c != self.background_label_id]
        if self.code_type != bbox_util.CORNER and decoded_classes and p:
            self._check_prior_sizes(host[box_count + score_count:].reshape(p, 4))
        detections = self._detections(num, boxes, conf)
        top[0].reshape((1, 1) + detections.shape)
        top[0].mutable_gpu_data.copy_to_device(detections.astype(top[0].dtype, copy=False).reshape(-1))

    def _image_rows(self, image, kept, counts, conf, boxes):
        """The image's rows [image, label, score, box]: label ascending, NMS order, keep_top_k applied."""
        taken = np.arange(kept.shape[1]) < counts[:, None]
        labels = np.nonzero(taken)[0]           # row-major: label-major, each label's kept order
        priors = kept[taken]
        scores = conf[priors, labels]
        if 0 <= self.keep_top_k < labels.size:
            best = np.sort(np.argsort(-scores, kind="stable")[:self.keep_top_k])
            labels, priors, scores = labels[best], priors[best], scores[best]
        loc_class = 0 if self.share_location else labels
        rows = np.empty((labels.size, 7), dtype=np.float32)
        rows[:, 0] = image
        rows[:, 1] = labels
        rows[:, 2] = scores
        rows[:, 3:] = boxes[priors, loc_class]
        return rows

    def _check_prior_sizes(self, prior_boxes):
        width = prior_boxes[:, 2] - prior_boxes[:, 0]
        height = prior_boxes[:, 3] - prior_boxes[:, 1]
        bad = np.flatnonzero(~((width > 0) & (height > 0)))
        if bad.size:
            i = int(bad[0])
            raise GraphError(f"prior box {i} {prior_boxes[i].tolist()} has width or height <= 0 "
                             f"({bad.size} such prior(s)); {_CODE_TYPES[self.code_type]} decoding needs a "
                             "positive prior size", layer=self.name)

    def backward(self, top, propagate_down, bottom):
        pass  # run_backward refuses any gradient request first; with none asked there is nothing to do


def _shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ")"
