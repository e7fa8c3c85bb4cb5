"""WindowData: R-CNN's window files: windows sampled from images, warped to crop_size, read ahead.

The window file (``window_data_param.source``) repeats, per image::

    # image_index
    image_path
    channels
    height
    width
    num_windows
    class_index overlap x1 y1 x2 y2      (num_windows lines; corners inclusive, 0-based)

A window with ``overlap >= fg_threshold`` is foreground (its class must be
positive); one with ``overlap < bg_threshold`` is background (label 0); the
rest are dropped. Each batch holds ``batch_size - int(batch_size * fg_fraction)``
background windows, then the foreground ones, each drawn uniformly. A window
(grown by ``context_pad`` pixels of context at the output scale, and made
square with ``crop_mode: "square"``; the part outside the image left 0) is
cut out of the colour image (BGR), warped to ``crop_size`` with OpenCV's
bilinear arithmetic, flipped at random with ``mirror``, then ``(x - mean) *
scale`` with the mean image centred on the crop (or ``mean_value``).
``root_folder`` prefixes image paths; ``cache_images`` keeps the image files in memory.

From ``transform_param``: ``crop_size`` (required), ``mirror``, ``mean_file``
or ``mean_value``. ``scale`` is ``window_data_param.scale`` as in Caffe, or
``transform_param.scale`` when only that is set (Caffe ignores it, and its
upgrade of V1 nets moves a window layer's scale there, where it was lost).
Window and flip choices come from a stream seeded from minicaffe's generator
at setup (Caffe's WindowData has its own prefetch stream too), so
``set_random_seed`` makes batches reproducible. Windows refer to the image
entry they are listed under (Caffe indexes by the ``image_index`` value,
which is the same for the files R-CNN writes).

GPU: the prefetch thread copies each batch of warped windows to the device
and Forward hands it to the tops without a copy (the warping stays on the
host, on the prefetch thread, as in Caffe).
"""

import numpy as np

from ..data import images
from ..data.common import DataError, warn_deprecated_fields
from ..data.layer_base import PrefetchingDataLayer, source_path
from ..data.sources import Batch
from ..data.transform import DataTransformer
from ..errors import GraphError
from ..fillers import rng
from ..memory import shape_inference_active
from ..registry import register


def read_window_file(path, fg_threshold, bg_threshold, layer=None):
    """(images [(path, (c, h, w))], foreground windows, background windows); a window is
    (image entry, label, x1, y1, x2, y2)."""
    with open(path, encoding="utf-8") as handle:
        tokens = handle.read().split()
    entries, foreground, background = [], [], []
    at = 0

    def take(kind, what):
        nonlocal at
        if at >= len(tokens):
            raise DataError(f"window file '{path}' ends early: expected {what} of image entry {len(entries)}",
                            layer=layer, path=path)
        token = tokens[at]
        at += 1
        try:
            return kind(token)
        except ValueError:
            raise DataError(f"window file '{path}': expected {what} of image entry {len(entries)}, "
                            f"got {token!r}", layer=layer, path=path) from None

    if not tokens:
        raise DataError(f"window file '{path}' is empty", layer=layer, path=path)
    while at < len(tokens):
        if take(str, "'#'") != "#":
            raise DataError(f"window file '{path}': image entry {len(entries)} does not start with '#'",
                            layer=layer, path=path)
        take(int, "the image index")
        image_path = take(str, "the image path")
        size = (take(int, "channels"), take(int, "height"), take(int, "width"))
        for _ in range(take(int, "the number of windows")):
            label, overlap = take(int, "a window's class"), take(float, "a window's overlap")
            corners = tuple(take(int, "a window corner") for _ in range(4))
            if overlap >= fg_threshold:
                if label <= 0:
                    raise DataError(f"window file '{path}': a foreground window of image {image_path} has class "
                                    f"{label}; foreground classes are positive", layer=layer, path=path)
                foreground.append((len(entries), label) + corners)
            elif overlap < bg_threshold:
                background.append((len(entries), 0) + corners)
        entries.append((image_path, size))
    return entries, foreground, background


def _c_round(value):
    """C's round(): halves away from zero."""
    value = float(value)
    return int(np.sign(value) * np.floor(abs(value) + 0.5))


class WindowSource:
    """Batches of warped windows; ``state()`` is the batch count and the seed."""

    def __init__(self, layer, entries, foreground, background, settings, seed):
        self.layer = layer
        self.entries = entries
        self.pools = (background, foreground)
        self.settings = settings
        self.seed = seed
        self.batches = 0
        self.cache = {}

    def read_batch(self, count) -> Batch:
        s = self.settings
        generator = np.random.default_rng([self.seed, self.batches])
        data = np.zeros((count, 3, s["crop"], s["crop"]), dtype=s["dtype"])
        labels = np.empty(count, dtype=np.int64)
        fg = int(np.float32(count) * np.float32(s["fg_fraction"]))
        item = 0
        for is_fg, wanted in ((0, count - fg), (1, fg)):
            pool = self.pools[is_fg]
            if wanted and not pool:
                raise DataError(f"window file '{s['source']}' has no {('background', 'foreground')[is_fg]} "
                                "windows to sample", layer=self.layer, path=s["source"])
            for _ in range(wanted):
                window = pool[int(generator.integers(len(pool)))]
                flip = bool(s["mirror"]) and int(generator.integers(2)) == 1
                self._warp(window, flip, data[item])
                labels[item] = window[1]
                item += 1
        self.batches += 1
        return Batch(tops=[data, labels], state=self.state())

    def _image(self, entry):
        path = self.settings["root"] + self.entries[entry][0]
        if self.settings["cache"]:
            if entry not in self.cache:
                with open(path, "rb") as handle:
                    self.cache[entry] = handle.read()
            return images.decode(self.cache[entry], images.COLOR, f"image '{path}'", self.layer), path
        return images.decode(path, images.COLOR, f"image '{path}'", self.layer), path

    def _warp(self, window, flip, out):
        s = self.settings
        f = s["dtype"].type
        crop, pad = s["crop"], s["context_pad"]
        image, path = self._image(window[0])
        rows, cols = image.shape[1:]
        x1, y1, x2, y2 = window[2:]
        pad_w = pad_h = 0
        out_h = out_w = crop
        if pad > 0 or s["square"]:
            context_scale = f(crop) / f(crop - 2 * pad)
            half_h, half_w = f(f(y2 - y1 + 1) / 2.0), f(f(x2 - x1 + 1) / 2.0)
            center_x, center_y = f(x1) + half_w, f(y1) + half_h
            if s["square"]:
                half_h = half_w = max(half_h, half_w)
            x1, x2 = _c_round(center_x - half_w * context_scale), _c_round(center_x + half_w * context_scale)
            y1, y2 = _c_round(center_y - half_h * context_scale), _c_round(center_y + half_h * context_scale)
            full_h, full_w = y2 - y1 + 1, x2 - x1 + 1
            pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
            pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
            scale_x, scale_y = f(crop) / f(full_w), f(crop) / f(full_h)
            out_w, out_h = _c_round(f(x2 - x1 + 1) * scale_x), _c_round(f(y2 - y1 + 1) * scale_y)
            pad_h = _c_round(f(pad_y1) * scale_y)
            pad_w = _c_round(f(pad_x2) * scale_x) if flip else _c_round(f(pad_x1) * scale_x)
            out_h, out_w = min(out_h, crop - pad_h), min(out_w, crop - pad_w)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows) or out_h <= 0 or out_w <= 0:
            raise DataError(f"window ({window[2]}, {window[3]}, {window[4]}, {window[5]}) does not fit in image "
                            f"'{path}' ({cols} x {rows})", layer=self.layer, path=path)
        warped = images.resize(image[:, y1:y2 + 1, x1:x2 + 1], out_h, out_w)
        if flip:
            warped = warped[:, :, ::-1]
        values = warped.astype(s["dtype"])
        if s["mean"] is not None:
            top, left = s["mean_off"] + pad_h, s["mean_off"] + pad_w
            values = values - s["mean"][:, top:top + out_h, left:left + out_w]
        elif s["mean_values"] is not None:
            values = values - s["mean_values"]
        out[:, pad_h:pad_h + out_h, pad_w:pad_w + out_w] = values * s["scale"]

    def state(self) -> dict:
        return {"batch": self.batches, "seed": self.seed}

    def restore(self, state):
        from ..data.common import cursor_int
        self.batches = cursor_int(state, "batch", self.layer)
        self.seed = cursor_int(state, "seed", self.layer, default=self.seed, allow_none=True)

    def close(self):
        self.cache = {}


@register("WindowData")
class WindowDataLayer(PrefetchingDataLayer):
    exact_tops = 2
    stacks_items = False

    def open_source(self):
        param = self.layer_param.window_data_param
        transform = self.layer_param.transform_param
        warn_deprecated_fields(self, param, "window_data_param", ("mean_file", "crop_size", "mirror"))
        self.batch_size = self.positive_batch_size(param.batch_size, "window_data_param.batch_size")
        if transform.crop_size <= 0:
            raise GraphError("WindowData needs transform_param.crop_size (the warped window size)", layer=self.name)
        if param.crop_mode not in ("warp", "square"):
            raise GraphError(f"crop_mode must be \"warp\" or \"square\", got {param.crop_mode!r}", layer=self.name)
        if 2 * param.context_pad >= transform.crop_size:
            raise GraphError(f"context_pad {param.context_pad} leaves nothing of crop_size {transform.crop_size}",
                             layer=self.name)
        path = source_path(self, param.source, "window file", "window_data_param.source")
        entries, foreground, background = read_window_file(path, param.fg_threshold, param.bg_threshold, self.name)
        channels = entries[-1][1][0]
        if channels != 3:
            raise DataError(f"window file '{path}' gives {channels} channels; WindowData reads images in colour "
                            "(3 channels)", layer=self.name, path=path)
        settings = {"source": path, "crop": int(transform.crop_size), "context_pad": int(param.context_pad),
                    "square": param.crop_mode == "square", "mirror": transform.mirror, "dtype": self.dtype,
                    "fg_fraction": param.fg_fraction, "root": param.root_folder, "cache": param.cache_images,
                    "scale": self.dtype.type(param.scale if param.HasField("scale") or not transform.HasField("scale")
                                             else transform.scale),
                    "mean": None, "mean_off": 0, "mean_values": None}
        running = not shape_inference_active()
        if running:
            self._load_mean(transform, settings)
        seed = int(rng().integers(2 ** 63)) if running else None
        source = WindowSource(self.name, entries, foreground, background, settings, seed)
        if running and param.cache_images:
            for entry in range(len(entries)):
                image = settings["root"] + entries[entry][0]
                source_path(self, image, "image", f"listed in {path}")
                source._image(entry)
        return source

    def _load_mean(self, transform, settings):
        transformer = DataTransformer(transform, self.phase, self.name, self.dtype)
        transformer.load_mean()
        crop = settings["crop"]
        if transformer.mean_image is not None:
            mean = transformer.mean_image
            if mean.shape[0] != 3 or min(mean.shape[1:]) < crop:
                raise DataError(f"mean file '{transformer.mean_file}' is {' x '.join(map(str, mean.shape))}; "
                                f"WindowData needs 3 channels of at least {crop} x {crop}", layer=self.name,
                                path=transformer.mean_file)
            settings["mean"], settings["mean_off"] = mean, (mean.shape[2] - crop) // 2
        elif transformer.mean_values:
            if len(transformer.mean_values) not in (1, 3):
                raise DataError(f"give 1 mean_value or 3 (one per channel), got {len(transformer.mean_values)}",
                                layer=self.name)
            values = transformer.mean_values * (3 if len(transformer.mean_values) == 1 else 1)
            settings["mean_values"] = np.asarray(values, dtype=self.dtype)[:, None, None]

    def initial_top_shapes(self, top):
        crop = int(self.layer_param.transform_param.crop_size)
        return [(self.batch_size, 3, crop, crop), (self.batch_size,)]

    def fill_tops(self, batch, top):
        for blob, values in zip(top, batch.tops):
            blob.reshape(values.shape)
            blob.data[...] = values
