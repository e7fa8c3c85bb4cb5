"""pycaffe's image helpers in ``caffe.io``: ``load_image``, ``resize_image``, ``oversample``, ``Transformer``.

Re-exported by :mod:`minicaffe.io`, so ``minicaffe.io.Transformer`` works as
``caffe.io.Transformer``. pycaffe reads images with scikit-image; here Pillow
does (the ``minicaffe[data]`` extra), with the same results: H x W x K float32
in [0, 1], RGB order. Differences, for the compatibility notes:

- ``resize_image`` is bilinear on pixel centres with the edge pixels repeated;
  scikit-image fades the border towards 0 (``mode='constant'``) and smooths
  before shrinking in recent versions. Any channel count uses the same method.
- ``load_image(color=False)`` of a colour file weighs R, G, B as scikit-image's
  rgb2gray (0.2125, 0.7154, 0.0721), on the same [0, 1] values.
- ``Transformer.preprocess`` never modifies the caller's array (pycaffe's scales
  a float32 input in place when no resize or channel swap copies it first).
"""

from __future__ import annotations

import numpy as np

from .data.common import optional_import
from .data.images import resize_float
from .errors import MinicaffeError

_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])


class TransformerError(MinicaffeError, ValueError):
    """A Transformer setting that does not fit the input it names."""


def load_image(filename, color=True) -> np.ndarray:
    """An image file as H x W x 3 (``color``) or H x W x 1 float32 in [0, 1], RGB order."""
    Image = optional_import("PIL.Image", "load_image")
    try:
        image = Image.open(filename)
        image.load()
    except (OSError, ValueError) as exc:
        raise MinicaffeError(f"cannot read image '{filename}': {exc}") from None
    with image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            pixels = np.asarray(image, dtype=np.float64) / 65535.0
        elif image.mode == "1":
            pixels = np.asarray(image, dtype=np.float64)
        elif image.mode in ("L", "LA"):
            pixels = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        elif image.mode == "F":
            pixels = np.asarray(image, dtype=np.float64)
        else:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    if pixels.ndim == 3 and not color:
        pixels = pixels @ _GRAY_WEIGHTS
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
        if color:
            pixels = np.tile(pixels, (1, 1, 3))
    return pixels.astype(np.float32)


def resize_image(im, new_dims, interp_order=1) -> np.ndarray:
    """Resize an H x W x K image to ``new_dims`` (height, width): bilinear (``interp_order`` 1)
    or nearest neighbour (0). Returns float32."""
    im = np.asarray(im)
    height, width = int(new_dims[0]), int(new_dims[1])
    if im.ndim == 2:
        im = im[:, :, np.newaxis]
    if im.size and im.min() == im.max():           # a constant image stays constant
        return np.full((height, width, im.shape[-1]), im.flat[0], dtype=np.float32)
    values = im.astype(np.float64)
    if interp_order == 0:
        rows = np.minimum((np.arange(height) + 0.5) * im.shape[0] / height, im.shape[0] - 1).astype(int)
        cols = np.minimum((np.arange(width) + 0.5) * im.shape[1] / width, im.shape[1] - 1).astype(int)
        return values[rows][:, cols].astype(np.float32)
    if interp_order != 1:
        raise MinicaffeError(f"resize_image supports interp_order 0 or 1, not {interp_order}")
    return resize_float(values, height, width).astype(np.float32)


def oversample(images, crop_dims) -> np.ndarray:
    """The four corner crops, the centre crop and their mirrors of each image: 10 per image."""
    im_shape = np.array(images[0].shape[:2])
    crop_dims = np.array(crop_dims)
    im_center = im_shape / 2.0
    h_indices = (0, im_shape[0] - crop_dims[0])
    w_indices = (0, im_shape[1] - crop_dims[1])
    crops_ix = [(i, j, i + crop_dims[0], j + crop_dims[1]) for i in h_indices for j in w_indices]
    centre = np.tile(im_center, (1, 2))[0] + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix.append(tuple(centre))
    crops_ix = np.tile(np.array(crops_ix, dtype=int), (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], images[0].shape[-1]), dtype=np.float32)
    index = 0
    for im in images:
        for top, left, bottom, right in crops_ix:
            crops[index] = im[top:bottom, left:right, :]
            index += 1
        crops[index - 5:index] = crops[index - 5:index, :, ::-1, :]    # the last five mirrored
    return crops


class Transformer:
    """pycaffe's input preprocessing: ``preprocess`` turns an H x W x K image into the net's
    K x H x W input, ``deprocess`` undoes it. ``inputs`` maps input names to their 4-D shapes.

    preprocess: resize to the input's spatial size, transpose, channel swap,
    ``* raw_scale``, ``- mean``, ``* input_scale`` (each only when set).
    """

    def __init__(self, inputs):
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise TransformerError(f"{in_} is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_, data):
        """An H x W x K image (any dtype) as the input ``in_`` expects: float32 K x H x W."""
        self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            caffe_in = caffe_in * self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in = caffe_in - self.mean[in_]
        if in_ in self.input_scale:
            caffe_in = caffe_in * self.input_scale[in_]
        return caffe_in.astype(np.float32, copy=False)

    def deprocess(self, in_, data):
        """Undo :meth:`preprocess` (except the resize): a net input back to an H x W x K image."""
        self._check_input(in_)
        decaf_in = np.array(data, dtype=np.float32).squeeze()
        if in_ in self.input_scale:
            decaf_in = decaf_in / self.input_scale[in_]
        if in_ in self.mean:
            decaf_in = decaf_in + self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in = decaf_in / self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in

    def set_transpose(self, in_, order):
        """The axis order from the image's H x W x K to the input's, e.g. (2, 0, 1)."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise TransformerError("Transpose order needs to have the same number of dimensions as the input.")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """A channel order applied after the transpose, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise TransformerError("Channel swap needs to have the same number of dimensions as the input channels.")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """A factor for the raw image (255 turns load_image's [0, 1] into [0, 255])."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """A mean to subtract: one value per channel (1-D) or an image of the input's K x H x W."""
        self._check_input(in_)
        mean = np.asarray(mean)
        shape = mean.shape
        if mean.ndim == 1:
            if shape[0] != self.inputs[in_][1]:
                raise TransformerError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(shape) == 2:
                shape = (1,) + shape
            if len(shape) != 3:
                raise TransformerError("Mean shape invalid")
            if shape != self.inputs[in_][1:]:
                raise TransformerError("Mean shape incompatible with input shape.")
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """A factor applied last, after the mean is subtracted."""
        self._check_input(in_)
        self.input_scale[in_] = scale
