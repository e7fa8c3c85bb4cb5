"""pycaffe's ``caffe.Detector``: R-CNN style windowed detection with a TEST-phase Net.

Each window (ymin, xmin, ymax, xmax) of an image is cropped, optionally with a
border of surrounding context as in R-CNN feature extraction (Girshick et al.,
2014, https://arxiv.org/abs/1311.2524), warped to the net input's size by the
Transformer, and classified; ``detect_windows`` returns one
``{'window', 'prediction', 'filename'}`` dict per window, in order.
``detect_selective_search`` proposes the windows with the external
``selective_search_ijcv_with_python`` package (imported only when called).

Compatibility notes:

- Window arithmetic is pycaffe's, quirks kept so results match it: a plain
  crop is ``im[ymin:ymax, xmin:xmax]`` (the max row and column excluded), while
  the context box is sized as if inclusive (``ymax - ymin + 1``) and then
  sliced the same exclusive way; rounding is Python 3's (half to even).
- pycaffe takes the context scale from the input's width for both axes
  ("assumes square"); here each axis uses its own size, which is the same for
  square inputs.
- pycaffe indexes the image with float box corners (an error in today's numpy)
  and reads the ``zip`` of ``detect_selective_search`` twice (so returns no
  detections on Python 3); neither happens here.
- Images are read colour, as pycaffe does, except for a net whose input has one
  channel: those are read grey (pycaffe would fail on them).
"""

from __future__ import annotations

import os

import numpy as np

from .classifier import input_transformer
from .data.common import MissingDependency
from .errors import MinicaffeError, ShapeError
from .graph import TEST
from .io_images import load_image, resize_image
from .net import Net

SELECTIVE_SEARCH = "selective_search_ijcv_with_python"


class SelectiveSearchMissing(MissingDependency, ImportError):
    """``selective_search_ijcv_with_python`` is not importable (an ImportError too, as in pycaffe)."""


class Detector(Net):
    """A Net that classifies windows of images (pycaffe's Detector).

    ``mean``, ``input_scale``, ``raw_scale`` and ``channel_swap`` configure
    ``self.transformer`` (see :class:`minicaffe.io.Transformer`);
    ``context_pad`` is the width in pixels of the border of the net's input that
    shows context around the window (R-CNN uses 16 for 227 x 227 inputs); the
    border is filled with the mean where the context leaves the image.
    """

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None, channel_swap=None,
                 context_pad=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Classify windows of images: ``images_windows`` holds (image filename, windows) pairs,
        each window (ymin, xmin, ymax, xmax) in pixels.

        Returns a list of ``{'window': window, 'prediction': the net's first
        output for it, 'filename': image filename}``, one per window, in order.
        """
        images_windows = [(filename, windows) for filename, windows in images_windows]
        in_ = self.inputs[0]
        color = self.crop_dims[2] != 1
        crops = []
        for filename, windows in images_windows:
            image = load_image(filename, color=color)
            for window in windows:
                crops.append(self.crop(image, window))
        if not crops:
            return []
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections = []
        for filename, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[len(detections)],
                                   "filename": filename})
        return detections

    def detect_selective_search(self, image_fnames):
        """:meth:`detect_windows` over the windows Selective Search proposes for each image.

        Needs the ``selective_search_ijcv_with_python`` package (and the MATLAB
        it runs); filenames are made absolute for it.
        """
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise SelectiveSearchMissing(
                f"Detector.detect_selective_search needs the '{SELECTIVE_SEARCH}' package "
                "(https://github.com/sergeyk/selective_search_ijcv_with_python, which runs MATLAB), and it cannot "
                "be imported; put it on PYTHONPATH, or compute windows yourself and call detect_windows") from None
        image_fnames = [os.path.abspath(filename) for filename in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(list(zip(image_fnames, windows_list)))

    def crop(self, im, window):
        """The part of the H x W x K image ``im`` that ``window`` (ymin, xmin, ymax, xmax) selects.

        Without context padding it is the window itself (any size; the
        Transformer warps it). With ``context_pad`` it is an array of
        ``crop_dims``: the window, enlarged so that after warping its border of
        ``context_pad`` pixels shows the surroundings, with the mean (in image
        space) where the enlarged box leaves the image.
        """
        im = np.asarray(im)
        if im.ndim != 3:
            raise ShapeError(f"crop takes an H x W x K image, not one of shape {im.shape}")
        ymin, xmin, ymax, xmax = _window_corners(window, im.shape)
        if not self.context_pad:
            return im[ymin:ymax, xmin:xmax]
        if im.shape[2] != self.crop_dims[2]:
            raise ShapeError(f"the image has {im.shape[2]} channels but the net input '{self.inputs[0]}' "
                             f"has {self.crop_dims[2]}")
        out_h, out_w = int(self.crop_dims[0]), int(self.crop_dims[1])
        scale = np.array([out_h, out_w]) / (np.array([out_h, out_w]) - 2.0 * self.context_pad)
        half = np.array([ymax - ymin + 1, xmax - xmin + 1]) / 2.0
        centre = np.array([ymin, xmin]) + half
        box = np.round(np.concatenate([centre - scale * half, centre + scale * half]))
        full = box[2:] - box[:2] + 1
        out_scale = np.array([out_h, out_w]) / full
        # Where the box starts above or left of the image, the crop starts that far (scaled) into the output.
        pad_y, pad_x = (int(round(max(0.0, -corner) * factor)) for corner, factor in zip(box[:2], out_scale))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0, [im_h, im_w, im_h, im_w]).astype(int)
        crop_h, crop_w = (int(round(size * factor)) for size, factor in zip(box[2:] - box[:2] + 1, out_scale))
        crop_h = min(crop_h, out_h - pad_y)
        crop_w = min(crop_w, out_w - pad_x)
        context = im[box[0]:box[2], box[1]:box[3]]
        if crop_h <= 0 or crop_w <= 0 or 0 in context.shape:
            raise MinicaffeError(f"window {(ymin, xmin, ymax, xmax)} leaves nothing of the {im_h} x {im_w} image "
                                 f"to crop with context_pad {self.context_pad}")
        crop = np.ones((out_h, out_w, im.shape[2]), dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = resize_image(context, (crop_h, crop_w))
        return crop

    def configure_crop(self, context_pad):
        """Set ``crop_dims`` (the input's H x W x K) and ``context_pad``; with context, ``crop_mean``.

        ``crop_mean`` is the Transformer's mean taken back to image space
        (un-transposed, channels un-swapped, divided by ``raw_scale``), so that
        padding becomes exactly 0 once preprocessed; zeros without a mean.
        """
        in_ = self.inputs[0]
        to_image_axes = np.argsort(self.transformer.transpose[in_])
        input_shape = self.blobs[in_].data.shape[1:]
        self.crop_dims = np.array(input_shape)[to_image_axes]
        if context_pad and not (0 < 2 * context_pad < min(self.crop_dims[:2])):
            raise MinicaffeError(f"context_pad {context_pad} must be positive and less than half the net input's "
                                 f"height and width {tuple(int(d) for d in self.crop_dims[:2])}")
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 2:                  # a one-channel mean image, stored as H x W
            mean = mean[np.newaxis]
        crop_mean = mean.transpose(to_image_axes)
        channel_swap = self.transformer.channel_swap.get(in_)
        if channel_swap is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_swap)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean


def _window_corners(window, image_shape) -> tuple:
    """A window's (ymin, xmin, ymax, xmax) as ints, checked to select pixels of the image."""
    corners = np.asarray(window).ravel()
    if corners.shape != (4,) or not np.all(np.isfinite(corners)) or np.any(corners != np.round(corners)):
        raise MinicaffeError(f"a window is four whole pixel coordinates (ymin, xmin, ymax, xmax), not {window!r}")
    ymin, xmin, ymax, xmax = (int(c) for c in corners)
    im_h, im_w = image_shape[:2]
    if ymin < 0 or xmin < 0 or ymin >= min(ymax, im_h) or xmin >= min(xmax, im_w):
        raise MinicaffeError(f"window {(ymin, xmin, ymax, xmax)} (ymin, xmin, ymax, xmax) selects no pixels of "
                             f"the {im_h} x {im_w} image")
    return ymin, xmin, ymax, xmax


__all__ = ["Detector", "SelectiveSearchMissing"]
