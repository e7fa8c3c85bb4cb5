"""Images as Caffe sees them: decoded with Pillow into OpenCV's layout, resized as OpenCV does.

Caffe reads images with OpenCV, so a colour image is **BGR**, and a Datum or a
blob holds it as uint8 C x H x W. Three decode modes, as Caffe's flags:

- ``"color"`` (``is_color``, ``force_color``; OpenCV's IMREAD_COLOR): 3 channels,
  a grey image replicated;
- ``"gray"`` (``is_color: false``, ``--gray``, ``force_gray``; IMREAD_GRAYSCALE):
  1 channel. A colour JPEG decodes straight to its luma (libjpeg does this for
  OpenCV too); a colour PNG goes through libpng's rgb_to_gray arithmetic, which
  OpenCV's PNG reader asks for; other formats through OpenCV's BGR2GRAY weights;
- ``"native"`` (an encoded Datum without force flags; IMREAD_ANYCOLOR): grey
  images stay 1 channel, everything else is 3.

Alpha is dropped, 16-bit samples keep their high byte (OpenCV's 8-bit reads),
and EXIF orientation is not applied (as OpenCV 2.x, which Caffe was built with).

:func:`resize` is OpenCV's ``cv::resize`` with INTER_LINEAR on uint8 images:
half-pixel centres, 11-bit fixed-point weights, and the vertical pass's
rounding as OpenCV's SIMD code does it. OpenCV builds differ in the last few
columns of a row (scalar tail code), so a pixel may differ from a given build by one grey level.
"""

from __future__ import annotations

import io as _io
import os

import numpy as np

from .common import DataError, optional_import

COLOR, GRAY, NATIVE = "color", "gray", "native"
_GRAYISH = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_COEF_SCALE = 2048            # OpenCV's INTER_RESIZE_COEF_SCALE (11 bits)


def pillow(layer=None):
    return optional_import("PIL.Image", "reading images", layer=layer)


def open_image(source, what, layer=None):
    """A Pillow image from a path or encoded bytes (header read only); DataError naming ``what`` if not an image."""
    Image = pillow(layer)
    try:
        handle = _io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
        return Image.open(handle)
    except FileNotFoundError:
        raise DataError(f"{what} does not exist", layer=layer, path=None if isinstance(source, bytes) else source) from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{what} is not a readable image ({exc})", layer=layer) from None


def decoded_channels(image, mode) -> int:
    if mode == COLOR:
        return 3
    if mode == GRAY:
        return 1
    return 1 if image.mode in _GRAYISH else 3


def image_shape(source, mode, what, layer=None) -> tuple:
    """(channels, height, width) the image decodes to, from its header only."""
    image = open_image(source, what, layer)
    with image:
        width, height = image.size
        return decoded_channels(image, mode), height, width


def decode(source, mode, what, layer=None) -> np.ndarray:
    """Decode a path or encoded bytes into a uint8 C x H x W array in OpenCV's channel order (BGR)."""
    image = open_image(source, what, layer)
    try:
        with image:
            return _to_chw(image, mode)
    except (OSError, ValueError, SyntaxError) as exc:   # truncated or corrupt data past the header
        raise DataError(f"{what} cannot be decoded ({exc})", layer=layer) from None


def _to_chw(image, mode):
    gray_source = image.mode in _GRAYISH
    want_gray = mode == GRAY or (mode == NATIVE and gray_source)
    if want_gray and not gray_source and image.format == "JPEG" and image.mode in ("RGB", "YCbCr"):
        image.draft("L", None)        # libjpeg's own grey output: the luma, as OpenCV gets it
        gray_source = image.mode == "L"
    if gray_source:
        plane = _gray_plane(image)
        if want_gray:
            return plane[None].copy()
        return np.ascontiguousarray(np.broadcast_to(plane, (3,) + plane.shape))
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if not want_gray:
        return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))
    r, g, b = (rgb[:, :, i].astype(np.int32) for i in range(3))
    if image.format == "PNG":        # libpng rgb_to_gray(0.299, 0.587), truncated, as OpenCV's PNG reader
        gray = (9797 * r + 19234 * g + 3737 * b) >> 15
    else:                            # OpenCV's BGR2GRAY: 14-bit weights, rounded
        gray = (1868 * b + 9617 * g + 4899 * r + (1 << 13)) >> 14
    return gray.astype(np.uint8)[None]


def _gray_plane(image):
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
    if image.mode in ("I", "F"):
        return np.clip(np.asarray(image), 0, 255).astype(np.uint8)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


def encode(chw, extension, what="image", layer=None) -> bytes:
    """Encode a uint8 C x H x W BGR array as ``extension`` (jpg, png, ...), as cv::imencode (JPEG quality 95)."""
    Image = pillow(layer)
    extension = extension.lower().lstrip(".")
    formats = Image.registered_extensions()
    fmt = formats.get("." + extension)
    if fmt is None:
        raise DataError(f"cannot encode {what} as '{extension}': unknown image format", layer=layer)
    if chw.shape[0] == 1:
        image = Image.fromarray(np.ascontiguousarray(chw[0]), mode="L")
    else:
        image = Image.fromarray(np.ascontiguousarray(chw[::-1].transpose(1, 2, 0)), mode="RGB")
    buffer = _io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {}
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# ---------------------------------------------------------------- resize

def _taps(source, target):
    """OpenCV's linear taps along one axis: first index, second index, weight of the second (float32)."""
    scale = 1.0 / (target / source)
    position = ((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    weight = (position - first.astype(np.float32)).astype(np.float32)
    return first, weight


def _horizontal_taps(source, target):
    first, weight = _taps(source, target)
    # Past either border OpenCV takes the edge pixel alone.
    outside = (first < 0) | (first >= source - 1)
    weight[outside] = 0
    first = np.clip(first, 0, source - 1)
    return first, np.minimum(first + 1, source - 1), weight


def _vertical_taps(source, target):
    first, weight = _taps(source, target)
    # Rows are clipped into the image; the weights stay as computed.
    return np.clip(first, 0, source - 1), np.clip(first + 1, 0, source - 1), weight


def _fixed(weight):
    second = np.rint(weight * np.float32(_COEF_SCALE)).astype(np.int32)
    first = np.rint((np.float32(1) - weight) * np.float32(_COEF_SCALE)).astype(np.int32)
    return first, second


def resize(chw, height, width) -> np.ndarray:
    """``cv::resize(img, Size(width, height), INTER_LINEAR)`` of a uint8 C x H x W array."""
    channels, source_h, source_w = chw.shape
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"cannot resize to {height}x{width}")
    if (source_h, source_w) == (height, width):
        return chw.copy()
    x0, x1, wx = _horizontal_taps(source_w, width)
    a0, a1 = _fixed(wx)
    pixels = chw.astype(np.int32)
    rows = pixels[:, :, x0] * a0 + pixels[:, :, x1] * a1            # C x H x width, scaled by 2048
    y0, y1, wy = _vertical_taps(source_h, height)
    b0, b1 = _fixed(wy)
    # OpenCV's SIMD vertical pass: drop 4 bits, keep the high half of 16-bit products, round by 2 bits.
    upper = ((rows[:, y0, :] >> 4) * b0[None, :, None]) >> 16
    lower = ((rows[:, y1, :] >> 4) * b1[None, :, None]) >> 16
    return np.clip((upper + lower + 2) >> 2, 0, 255).astype(np.uint8)


def resize_float(hwc, height, width) -> np.ndarray:
    """Bilinear resize of a float H x W x K array with the same sampling grid, in floating point."""
    source_h, source_w = hwc.shape[:2]
    x0, x1, wx = _horizontal_taps(source_w, int(width))
    y0, y1, wy = _vertical_taps(source_h, int(height))
    wx = wx.astype(hwc.dtype)[None, :, None]
    wy = wy.astype(hwc.dtype)[:, None, None]
    rows = hwc[:, x0] * (1 - wx) + hwc[:, x1] * wx
    return rows[y0] * (1 - wy) + rows[y1] * wy
