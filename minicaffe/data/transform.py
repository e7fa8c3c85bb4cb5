"""``transform_param``: Caffe's DataTransformer, one kernel pass per batch.

For each item, in Caffe's order: an optional crop of ``crop_size`` x
``crop_size`` (at a random offset in TRAIN, centred with floor division in
TEST), an optional horizontal flip (``mirror: true`` flips each item with
probability 1/2 in *every* phase, as Caffe), then ``(x - mean) * scale`` where
the mean is a full-size ``mean_file`` image (cropped at the same offset as the
pixels, and read at the pixel's source position, so a flipped item has its
mean flipped too) or one ``mean_value`` per channel (or one for all).
Arithmetic is in the net's dtype, as Caffe's ``Dtype``: the same Datum gives
the same blob as Caffe.

Random offsets and flips are drawn from :func:`minicaffe.fillers.rng` when the
batch is consumed (in Forward, on the calling thread), all flips of a batch
first, then the row offsets, then the column offsets; so
:func:`minicaffe.set_random_seed` makes them reproducible whatever the
prefetch thread is doing. Caffe's own random streams cannot be reproduced.

GPU: :meth:`DataTransformer.apply_gpu` runs the same arithmetic as a numba.cuda
kernel, one thread per output element, from the raw batch the prefetch thread
put on the device into the top's device memory; the draws are the CPU's (made
on the calling thread in the same order) and the mean image is copied to the
device once per item shape.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .. import gpu
from ..errors import MinicaffeError
from ..fillers import rng
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..graph import TRAIN
from . import images
from .common import DataError, require_path


@njit(cache=True, nogil=True, error_model="numpy")
def _crop_mirror_normalize(raw, mean, top, left, mirror, scale, out):
    """out[n, c, h, w] = (raw[n, c, top + h, left + w'] - mean[c, top + h, left + w']) * scale,
    w' = w, or width - 1 - w for a mirrored item. Not parallel: safe from any thread."""
    items, channels, height, width = out.shape
    for n in range(items):
        row0 = top[n]
        col0 = left[n]
        for c in range(channels):
            for h in range(height):
                source = raw[n, c, row0 + h]
                shift = mean[c, row0 + h]
                target = out[n, c, h]
                if mirror[n]:
                    last = col0 + width - 1
                    for w in range(width):
                        target[w] = (source[last - w] - shift[last - w]) * scale
                else:
                    for w in range(width):
                        target[w] = (source[col0 + w] - shift[col0 + w]) * scale


@gpu.jit
def _crop_mirror_normalize_gpu(raw, mean, draws, scale, channels, height, width, out_height, out_width, out):
    """out as _crop_mirror_normalize writes it, flat; raw is N x C x H x W and mean C x H x W, flat; draws
    holds the N flips, then the N row offsets, then the N column offsets."""
    i = cuda.grid(1)
    if i < out.size:
        w = i % out_width
        rest = i // out_width
        h = rest % out_height
        rest = rest // out_height
        c = rest % channels
        n = rest // channels
        items = out.size // (channels * out_height * out_width)
        row = draws[items + n] + h
        column = draws[2 * items + n] + w
        if draws[n] != 0:
            column = draws[2 * items + n] + out_width - 1 - w
        pixel = (c * height + row) * width + column
        out[i] = (raw[n * channels * height * width + pixel] - mean[pixel]) * scale


class DataTransformer:
    """The transformation a data layer applies to each batch (Caffe's DataTransformer)."""

    def __init__(self, param, phase=TRAIN, layer=None, dtype=np.float32):
        self.layer = layer
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.scale = float(param.scale)
        self.mirror = bool(param.mirror)
        self.crop = int(param.crop_size)
        self.mean_values = [float(v) for v in param.mean_value]
        self.mean_file = param.mean_file if param.HasField("mean_file") else None
        if self.mean_file is not None and self.mean_values:
            raise self._error("transform_param: give mean_file or mean_value, not both")
        if param.force_color and param.force_gray:
            raise self._error("transform_param: force_color and force_gray cannot both be set")
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        # The SSD fork's augmentation fields parse (caffe.proto), but minicaffe does not implement
        # them: refuse rather than train on data the user did not ask for.
        ssd_only = [field.name for field, _ in param.ListFields() if field.number >= 8]
        if ssd_only:
            raise self._error(f"transform_param: {', '.join(ssd_only)} belong to the SSD fork's data "
                              "augmentation, which minicaffe does not implement")
        self.mean_image = None
        self._means = {}
        self._device_means = {}
        self._device_zeros = {}

    def _error(self, message, path=None):
        return DataError(message, layer=self.layer, path=path)

    @property
    def decode_mode(self):
        """How encoded images are decoded: force_color / force_gray, else as stored."""
        if self.force_color:
            return images.COLOR
        if self.force_gray:
            return images.GRAY
        return images.NATIVE

    def load_mean(self):
        """Read ``mean_file`` (a .binaryproto, 1 x C x H x W as compute_image_mean writes it)."""
        if self.mean_file is None:
            return
        from ..io import read_binaryproto
        path = require_path(self.mean_file, "mean file", self.layer, "transform_param.mean_file")
        try:
            mean = read_binaryproto(path)
        except MinicaffeError as exc:
            raise self._error(str(exc), path) from None
        if mean.ndim == 4 and mean.shape[0] == 1:
            mean = mean[0]
        if mean.ndim != 3:
            raise self._error(f"mean file '{path}' holds a blob of shape {mean.shape}; "
                              "expected 1 x channels x height x width", path)
        self.mean_image = np.ascontiguousarray(mean, dtype=self.dtype)

    def output_shape(self, shape, what="the data") -> tuple:
        """The (channels, height, width) an item of ``shape`` becomes; checks crop, mean and mean_value."""
        channels, height, width = shape
        if self.crop and (self.crop > height or self.crop > width):
            raise self._error(f"crop_size {self.crop} is larger than {what} ({height} x {width})")
        if self.mean_image is not None and self.mean_image.shape != tuple(shape):
            raise self._error(f"mean file '{self.mean_file}' is {_dims(self.mean_image.shape)} but "
                              f"{what} is {_dims(shape)}: the mean image must have the data's full size",
                              self.mean_file)
        if self.mean_values and len(self.mean_values) not in (1, channels):
            raise self._error(f"give 1 mean_value or one per channel: {len(self.mean_values)} given for "
                              f"{channels} channels of {what}")
        if self.crop:
            return channels, self.crop, self.crop
        return tuple(shape)

    def _mean_for(self, shape):
        if self.mean_image is not None:
            return self.mean_image
        mean = self._means.get(shape)
        if mean is None:
            values = self.mean_values or [0.0]
            per_channel = np.asarray(values * (shape[0] if len(values) == 1 else 1), dtype=self.dtype)
            mean = np.ascontiguousarray(np.broadcast_to(per_channel[:, None, None], shape))
            self._means[shape] = mean
        return mean

    def draw(self, shapes):
        """Flips, row offsets and column offsets for items of ``shapes`` (from minicaffe's generator)."""
        count = len(shapes)
        generator = rng()
        mirror = (generator.integers(0, 2, size=count) == 1) if self.mirror else np.zeros(count, dtype=bool)
        heights = np.array([shape[1] for shape in shapes], dtype=np.int64)
        widths = np.array([shape[2] for shape in shapes], dtype=np.int64)
        if not self.crop:
            zeros = np.zeros(count, dtype=np.int64)
            return mirror, zeros, zeros.copy()
        if self.phase == TRAIN:
            top = generator.integers(0, heights - self.crop + 1).astype(np.int64)
            left = generator.integers(0, widths - self.crop + 1).astype(np.int64)
        else:
            top = (heights - self.crop) // 2
            left = (widths - self.crop) // 2
        return mirror, top, left

    def apply(self, items, out, keys=None, stacked=None):
        """Transform a batch (``items``: C x H x W arrays; ``stacked``: the same as one array when they
        share a shape) into ``out`` (N x C x h x w, the net's dtype)."""
        keys = keys or [f"item {i}" for i in range(len(items))]
        shapes = [tuple(item.shape) for item in items]
        expected = out.shape[1:]
        for shape in dict.fromkeys(shapes):
            what = keys[shapes.index(shape)]
            if self.output_shape(shape, what) != expected:
                raise self._error(f"{what} is {_dims(shape)} but the batch's first item is "
                                  f"{_dims(shapes[0])}: without crop_size every item of a batch "
                                  "must have the same size")
        mirror, top, left = self.draw(shapes)
        scale = self.dtype.type(self.scale)
        if stacked is not None:
            _crop_mirror_normalize(_writable(stacked), self._mean_for(shapes[0]), top, left, mirror, scale, out)
            return
        for index, item in enumerate(items):
            _crop_mirror_normalize(_writable(item[None]), self._mean_for(shapes[index]), top[index:index + 1],
                                   left[index:index + 1], mirror[index:index + 1], scale, out[index:index + 1])

    def apply_gpu(self, raw, shape, count, out, out_shape):
        """Transform ``count`` items of ``shape`` (C, H, W), stacked flat in the device array ``raw``, into the
        flat device array ``out`` (``count`` x ``out_shape``, the net's dtype), as :meth:`apply` does."""
        mirror, top, left = self.draw([shape] * count)
        if self.crop or self.mirror:
            draws = gpu.to_device(np.concatenate([mirror.astype(np.int64), top, left]))
        else:
            draws = self._device_zeros.get(count)
            if draws is None:
                draws = self._device_zeros[count] = gpu.device_zeros(3 * count, np.int64)
        mean = self._device_means.get(shape)
        if mean is None:
            mean = self._device_means[shape] = gpu.to_device(self._mean_for(shape).reshape(-1))
        channels, height, width = (int(d) for d in shape)
        _crop_mirror_normalize_gpu[gpu.blocks_for(out.size), gpu.THREADS](
            raw, mean, draws, self.dtype.type(self.scale), channels, height, width, int(out_shape[1]),
            int(out_shape[2]), out)


def _writable(array):
    """A C-contiguous, writable array (read-only buffers would compile a second kernel)."""
    if array.flags.c_contiguous and array.flags.writeable:
        return array
    return np.array(array, order="C")


def _dims(shape):
    return " x ".join(str(d) for d in shape)
