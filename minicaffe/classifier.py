"""pycaffe's ``caffe.Classifier``: a TEST-phase Net that classifies H x W x K images.

``predict`` resizes every image to ``image_dims``, takes either the ten
oversampled crops (four corners, centre, and their mirrors) or the centre crop
of the net's input size, preprocesses them with ``self.transformer`` (a
:class:`minicaffe.io.Transformer`), runs them through the net in batches and, when
oversampling, averages each image's ten predictions.

Beyond pycaffe: bad inputs (no images, images that are not H x W x K, mixed
channel counts, ``image_dims`` smaller than the crop) raise minicaffe errors
naming the problem instead of failing deep inside numpy.
"""

from __future__ import annotations

import numpy as np

from .errors import MinicaffeError, ShapeError
from .graph import TEST
from .io_images import Transformer, oversample as oversample_crops, resize_image
from .net import Net


def input_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None) -> Transformer:
    """A Transformer for the net's first input, as pycaffe's Classifier and Detector set it up.

    Images arrive as H x W x K (what :func:`minicaffe.io.load_image` returns) and
    are transposed to the input's K x H x W; each other option is set only when given.
    """
    if not net.inputs:
        raise MinicaffeError(f"{net._source}: the net has no input blob; Classifier and Detector need a deploy "
                             "net whose images enter through an Input layer (or 'input:' fields)")
    in_ = net.inputs[0]
    shape = net.blobs[in_].data.shape
    if len(shape) != 4:
        raise ShapeError(f"input '{in_}' has shape {shape}; it must be 4-D (N x K x H x W) to take images")
    transformer = Transformer({in_: shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


class Classifier(Net):
    """A Net for image classification by scaling and centre cropping or oversampling (pycaffe's Classifier).

    ``image_dims`` is the (height, width) every image is resized to before
    cropping; it defaults to the net input's own size (the crop is then the
    whole image). ``mean``, ``input_scale``, ``raw_scale`` and ``channel_swap``
    configure ``self.transformer`` (see :class:`minicaffe.io.Transformer`).
    ``crop_dims`` is the net input's (height, width).
    """

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = self.crop_dims if image_dims is None else image_dims
        self._image_size()

    def predict(self, inputs, oversample=True):
        """Class predictions for a sequence of H x W x K images: an N x C array (the net's first output).

        ``oversample=True`` averages the predictions of the ten crops of each
        image (corners, centre, and their mirrors); ``False`` uses the centre crop only.
        """
        images = _check_images(inputs)
        height, width = self._image_size()
        resized = np.empty((len(images), height, width, images[0].shape[2]), dtype=np.float32)
        for index, image in enumerate(images):
            # resize_image of an image already at image_dims returns it unchanged; skip the work.
            resized[index] = image if image.shape[:2] == (height, width) else resize_image(image, (height, width))
        if oversample:
            crops = oversample_crops(resized, self.crop_dims)
        else:
            # pycaffe's centre: truncated towards zero, so an odd margin puts the extra pixel below/right.
            centre = np.array((height, width)) / 2.0
            top, left, bottom, right = np.concatenate([centre - self.crop_dims / 2.0,
                                                       centre + self.crop_dims / 2.0]).astype(int)
            crops = resized[:, top:bottom, left:right, :]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(axis=1)
        return predictions

    def _image_size(self) -> tuple:
        """``image_dims`` as (height, width), checked to hold the crop (users may set it after construction)."""
        if len(self.image_dims) != 2:
            raise ShapeError(f"image_dims must be (height, width), not {tuple(self.image_dims)}")
        height, width = (int(d) for d in self.image_dims)
        if height < self.crop_dims[0] or width < self.crop_dims[1]:
            raise ShapeError(f"image_dims {(height, width)} is smaller than the crop "
                             f"{tuple(int(d) for d in self.crop_dims)} of the net input '{self.inputs[0]}'")
        return height, width


def _check_images(inputs) -> list:
    """The images as arrays, after checking they are H x W x K with one K."""
    images = [np.asarray(image) for image in inputs]
    if not images:
        raise MinicaffeError("predict needs at least one image")
    for index, image in enumerate(images):
        if image.ndim != 3:
            raise ShapeError(f"image {index} has shape {image.shape}, not H x W x K (as load_image returns; "
                             "give a grey image a last axis of 1)")
        if image.shape[2] != images[0].shape[2]:
            raise ShapeError(f"image {index} has {image.shape[2]} channels but image 0 has {images[0].shape[2]}")
        if 0 in image.shape:
            raise ShapeError(f"image {index} is empty (shape {image.shape})")
    return images


__all__ = ["Classifier", "input_transformer"]
