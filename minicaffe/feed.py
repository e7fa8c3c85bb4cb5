"""Feeding real data to a net: images, arrays and folders in; the chosen blobs out.

The library under ``minicaffe forward --input``, ``minicaffe classify`` and
``minicaffe detect``, for notebooks and scripts as well::

    from minicaffe import Net, TEST, feed

    net = Net("deploy.prototxt", TEST, weights="model.caffemodel")
    prep = feed.Preprocessing(raw_scale=255, channel_swap=(2, 1, 0), mean=feed.read_mean("104,117,123"))
    sources = {"data": feed.open_source("photos/", net.blobs["data"].shape, prep, "data")}
    result = feed.run(net, sources, blobs=["prob", "fc7"])     # result.arrays, result.names
    feed.write_outputs("features.npz", result.arrays, result.names)

Sources (:func:`open_source`): an image file (one item), a ``.npy`` array
(loaded with ``allow_pickle=False``: one item of the input's C x H x W, or
N items of N x C x H x W) or a folder of images (every file with an image
extension, sorted by name, read a batch at a time).

Image preprocessing (:class:`Preprocessing`), two conventions:

- ``pycaffe`` (the default), ``caffe.io.Transformer``'s: the image is read as
  RGB floats in [0, 1] (``caffe.io.load_image``), resized to the input's
  H x W (bilinear), transposed to K x H x W, channels reordered by
  ``channel_swap``, times ``raw_scale``, minus ``mean``, times ``input_scale``.
- ``caffe-cpp``, ``examples/cpp_classification/classification.cpp``'s: the
  image as OpenCV reads it (BGR, 0-255; ``cv::imread(file, -1)``, then
  converted to the input's channel count with OpenCV's colour weights), resized
  to the input's H x W on its 8-bit pixels (``cv::resize``, bilinear), then
  float, minus the mean. As classification.cpp does, a mean image is reduced
  to its per-channel means. minicaffe adds ``channel_swap`` (before the mean)
  and ``input_scale`` (last), e.g. MobileNet-SSD's ``(BGR - 127.5) * 0.007843``.

``mean``: one value per channel (a single value serves every channel) or a
K x H x W image; in the pycaffe convention an image whose H x W differ from
the input's is reduced to its per-channel means (with a note).

:func:`run` streams the items through the net in batches of the input blob's
batch size (or ``batch_size``: the input blob is reshaped; a last, smaller
batch reshapes it again) and collects the chosen blobs: a blob with one row
per item is concatenated over the batches (rows in input order); any other
blob is kept as it is when there was one batch, stacked one entry per batch
when its shape does not change, and refused otherwise.
"""

from __future__ import annotations

import abc
import io as _io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from urllib.parse import quote

import numpy as np

from .errors import MinicaffeError, ShapeError

PYCAFFE, CAFFE_CPP = "pycaffe", "caffe-cpp"
PREPROCESS_MODES = (PYCAFFE, CAFFE_CPP)

#: The file extensions a folder source reads (case-insensitive); other files are skipped and counted.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")

#: The key of the input file names in an output (``names`` in the .npz, ``names.npy`` in a folder).
NAMES_KEY = "names"


class FeedError(MinicaffeError):
    """An input source, a preprocessing option or an output that cannot be used."""


# ---------------------------------------------------------------- options

def read_mean(text) -> np.ndarray:
    """A mean from ``text``: a ``.binaryproto`` or ``.npy`` file, or comma-separated values.

    Returns float32: 1-D (values per channel) or K x H x W (a mean image; a
    1 x K x H x W blob loses its first axis, an H x W array gains one).
    """
    text = str(text).strip()
    looks_like_file = text.lower().endswith((".binaryproto", ".npy")) or os.sep in text
    if not looks_like_file:
        try:
            values = [float(part) for part in text.split(",") if part.strip()]
        except ValueError:
            values = None
        if values:
            return np.array(values, dtype=np.float32)
        if not os.path.isfile(text):
            raise FeedError(f"mean '{text}': give a .binaryproto or .npy file, or comma-separated values "
                            "(104,117,123)")
    if not os.path.isfile(text):
        raise FeedError(f"mean file '{text}' does not exist")
    if text.lower().endswith(".npy"):
        mean = _load_npy(text, "mean file")
    else:
        from .io import read_binaryproto
        mean = read_binaryproto(text)
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim == 2:
        mean = mean[np.newaxis]
    if mean.ndim not in (1, 3):
        raise FeedError(f"mean file '{text}' holds an array of shape {mean.shape}: a mean is one value per "
                        "channel or a K x H x W image")
    return mean


def parse_channel_swap(text) -> tuple:
    """``"2,1,0"`` as (2, 1, 0)."""
    try:
        order = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        order = ()
    if not order or sorted(order) != list(range(len(order))):
        raise FeedError(f"channel swap '{text}': give an order of the channels, e.g. 2,1,0")
    return order


@dataclass
class Preprocessing:
    """How an image becomes an input item: ``mode`` ("pycaffe" or "caffe-cpp") and the Transformer's settings.

    ``mean`` is an array as :func:`read_mean` returns; ``channel_swap`` a
    permutation of the input's channels; ``raw_scale`` belongs to the pycaffe
    convention only (caffe-cpp's pixels are 0-255 already).
    """

    mode: str = PYCAFFE
    raw_scale: float | None = None
    channel_swap: tuple | None = None
    mean: np.ndarray | None = None
    input_scale: float | None = None
    notes: list = field(default_factory=list)       # what was adapted (a mean image reduced), said once

    def __post_init__(self):
        if self.mode not in PREPROCESS_MODES:
            raise FeedError(f"preprocessing '{self.mode}': use one of {', '.join(PREPROCESS_MODES)}")
        if self.mode == CAFFE_CPP and self.raw_scale is not None:
            raise FeedError("raw_scale belongs to the pycaffe preprocessing (images in [0, 1]); caffe-cpp's "
                            "pixels are 0-255 already: leave it out, or use input_scale")
        if self.channel_swap is not None:
            self.channel_swap = tuple(int(c) for c in self.channel_swap)
        if self.mean is not None:
            self.mean = np.asarray(self.mean, dtype=np.float32)
        self._transformers = {}

    def fitted_mean(self, shape):
        """The mean for an input of K x H x W ``shape``: K values (as K x 1 x 1) or a K x H x W image."""
        if self.mean is None:
            return None
        channels = shape[0]
        mean = self.mean
        if mean.ndim == 1:
            if len(mean) == 1:
                mean = np.repeat(mean, channels)
            if len(mean) != channels:
                raise ShapeError(f"the mean has {len(mean)} values but the input has {channels} channels",
                                 expected=(channels,), actual=mean.shape)
            return mean[:, np.newaxis, np.newaxis]
        if mean.shape[0] != channels:
            raise ShapeError("the mean image does not have the input's channels", expected=tuple(shape),
                             actual=mean.shape)
        if self.mode == CAFFE_CPP:       # classification.cpp's SetMean: the mean of each channel
            return mean.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)[:, np.newaxis, np.newaxis]
        if mean.shape[1:] != tuple(shape[1:]):
            note = (f"the mean image is {mean.shape[1]}x{mean.shape[2]} and the input {shape[1]}x{shape[2]}: "
                    "subtracting its per-channel means")
            if note not in self.notes:
                self.notes.append(note)
            return mean.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)[:, np.newaxis, np.newaxis]
        return mean

    def check(self, shape):
        """Fail early, naming the problem, if these settings cannot make items of K x H x W ``shape``."""
        channels = shape[0]
        if channels not in (1, 3):
            raise ShapeError(f"images give 1 or 3 channels, and the input has {channels}",
                             expected=tuple(shape), actual=None)
        if self.channel_swap is not None and len(self.channel_swap) != channels:
            raise FeedError(f"channel swap {','.join(map(str, self.channel_swap))} has {len(self.channel_swap)} "
                            f"entries but the input has {channels} channels")
        self.fitted_mean(shape)

    def load(self, path, shape):
        """The image file at ``path`` as one K x H x W float32 item, and its original (height, width)."""
        shape = tuple(int(d) for d in shape)
        self.check(shape)
        if self.mode == CAFFE_CPP:
            return self._load_cpp(path, shape)
        from .io_images import load_image
        image = load_image(path, color=shape[0] == 3)
        return self._transformer(shape).preprocess("data", image), image.shape[:2]

    def _transformer(self, shape):
        transformer = self._transformers.get(shape)
        if transformer is None:
            from .io_images import Transformer
            transformer = Transformer({"data": (1,) + shape})
            transformer.set_transpose("data", (2, 0, 1))
            if self.channel_swap is not None:
                transformer.set_channel_swap("data", self.channel_swap)
            if self.raw_scale is not None:
                transformer.set_raw_scale("data", self.raw_scale)
            mean = self.fitted_mean(shape)
            if mean is not None:
                transformer.mean["data"] = mean          # already checked and shaped to broadcast
            if self.input_scale is not None:
                transformer.set_input_scale("data", self.input_scale)
            self._transformers[shape] = transformer
        return transformer

    def _load_cpp(self, path, shape):
        from .data.images import NATIVE, decode, resize
        pixels = decode(path, NATIVE, f"image '{path}'")           # uint8 K x H x W, BGR, as cv::imread(-1)
        original = pixels.shape[1:]
        if pixels.shape[0] == 3 and shape[0] == 1:                  # cv::cvtColor(BGR2GRAY)
            b, g, r = (pixels[i].astype(np.int32) for i in range(3))
            pixels = ((1868 * b + 9617 * g + 4899 * r + (1 << 13)) >> 14).astype(np.uint8)[np.newaxis]
        elif pixels.shape[0] == 1 and shape[0] == 3:                # cv::cvtColor(GRAY2BGR)
            pixels = np.repeat(pixels, 3, axis=0)
        if pixels.shape[1:] != shape[1:]:
            pixels = resize(pixels, shape[1], shape[2])              # cv::resize on the 8-bit image
        item = pixels.astype(np.float32)
        if self.channel_swap is not None:
            item = item[list(self.channel_swap)]
        mean = self.fitted_mean(shape)
        if mean is not None:
            item = item - mean
        if self.input_scale is not None:
            item = item * np.float32(self.input_scale)
        return item.astype(np.float32, copy=False), original


# ---------------------------------------------------------------- sources

class Source(abc.ABC):
    """Items for one input blob: ``count`` of them, each of ``item_shape``; ``names`` for files, else None."""

    kind = "source"
    names = None
    skipped = 0

    @abc.abstractmethod
    def items(self, start, stop) -> np.ndarray:
        """Items ``[start, stop)`` as one float32 array."""


class ArraySource(Source):
    """Items from an array (a ``.npy``), memory-mapped so a large file is read a batch at a time."""

    kind = "array"

    def __init__(self, array, path=None):
        self.array = array
        self.path = path
        self.count = len(array)
        self.item_shape = tuple(array.shape[1:])

    def items(self, start, stop):
        return np.asarray(self.array[start:stop], dtype=np.float32)


class ImageSource(Source):
    """Items from image files (one file, or a folder's), read and preprocessed a batch at a time."""

    kind = "images"

    def __init__(self, paths, names, item_shape, preprocessing, skipped=0, folder=None):
        self.paths = list(paths)
        self.names = list(names)
        self.count = len(self.paths)
        self.item_shape = tuple(item_shape)
        self.preprocessing = preprocessing
        self.skipped = skipped
        self.folder = folder

    def items(self, start, stop):
        batch = np.empty((stop - start,) + self.item_shape, dtype=np.float32)
        for offset, index in enumerate(range(start, stop)):
            batch[offset], _ = self.preprocessing.load(self.paths[index], self.item_shape)
        return batch


def image_files(folder):
    """(paths, names, skipped): the folder's image files sorted by name, and how many other files it holds."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        raise FeedError(f"cannot list folder '{folder}': {exc.strerror or exc}") from None
    names, skipped = [], 0
    for entry in entries:
        path = os.path.join(folder, entry)
        if not os.path.isfile(path):
            continue
        if entry.lower().endswith(IMAGE_EXTENSIONS):
            names.append(entry)
        else:
            skipped += 1
    if not names:
        raise FeedError(f"folder '{folder}' holds no images (files ending in {', '.join(IMAGE_EXTENSIONS)})"
                        + (f"; {skipped} other file(s) skipped" if skipped else ""))
    return [os.path.join(folder, name) for name in names], names, skipped


def open_source(text, shape, preprocessing=None, input_name="data") -> Source:
    """The source ``text`` names, for an input blob of ``shape`` (N x ...): a folder, a ``.npy`` or an image file."""
    text = os.fspath(text)
    shape = tuple(int(d) for d in shape)
    preprocessing = preprocessing or Preprocessing()
    where = f"input '{input_name}'"
    if not os.path.exists(text):
        raise FeedError(f"{where}: '{text}' does not exist")
    if text.lower().endswith(".npy") and os.path.isfile(text):
        array = _load_npy(text, f"{where}: '{text}'", mmap=True)
        if array.shape == shape[1:]:
            array = array[np.newaxis]
        elif not (array.ndim == len(shape) and array.shape[1:] == shape[1:]):
            raise ShapeError(f"{where}: the array in '{text}' does not fit the input blob: give one item of "
                             f"{_dims(shape[1:])} or N items of N x {_dims(shape[1:])}", expected=shape,
                             actual=array.shape)
        if len(array) == 0:
            raise FeedError(f"{where}: the array in '{text}' holds no items (shape {array.shape})")
        return ArraySource(array, text)
    _check_image_input(shape, where)
    preprocessing.check(shape[1:])
    if os.path.isdir(text):
        paths, names, skipped = image_files(text)
        return ImageSource(paths, names, shape[1:], preprocessing, skipped=skipped, folder=text)
    if not os.path.isfile(text):
        raise FeedError(f"{where}: '{text}' is neither a file nor a folder")
    source = ImageSource([text], [os.path.basename(text)], shape[1:], preprocessing)
    try:
        source.items(0, 1)           # read it now, so a file that is no image fails before the net runs
    except MinicaffeError as exc:
        raise FeedError(f"{where}: '{text}' is not a readable image (give an image file, a .npy array or a "
                        f"folder of images): {exc}") from None
    return source


def split_input(text, input_names):
    """``NAME=SOURCE`` as (name, source); a bare SOURCE names the net's only input."""
    name, sep, source = str(text).partition("=")
    if sep and name in input_names:
        return name, source
    if sep and input_names and not os.path.exists(str(text)):
        raise FeedError(f"'{text}': '{name}' is not an input of the net (its inputs: {', '.join(input_names)}); "
                        "give NAME=SOURCE")
    if len(input_names) == 1:
        return input_names[0], str(text)
    if not input_names:
        raise FeedError("the net has no input blob to feed (its data comes from data layers)")
    raise FeedError(f"'{text}': give NAME=SOURCE with NAME one of the net's inputs: {', '.join(input_names)}")


def _check_image_input(shape, where):
    if len(shape) != 4:
        raise ShapeError(f"{where} has shape {_dims(shape)}; images need a 4-D input (N x K x H x W): "
                         "feed it a .npy array instead", expected=None, actual=shape)


def _load_npy(path, what, mmap=False):
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        raise FeedError(f"{what} cannot be loaded without pickle (an object array?): {exc}") from None
    except OSError as exc:
        raise FeedError(f"{what} is not a readable .npy file: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise FeedError(f"{what} is not a .npy array")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.issubdtype(array.dtype,
                                                                                           np.complexfloating):
        raise FeedError(f"{what} holds {array.dtype} values, not real numbers")
    return array


def _dims(shape):
    return "x".join(str(d) for d in shape) if shape else "scalar"


# ---------------------------------------------------------------- running

@dataclass
class FeedResult:
    """What :func:`run` collected: ``arrays`` by blob name, the input ``names`` (files), the item ``count``."""

    arrays: dict
    names: list | None
    count: int
    batches: int


def check_blobs(net, blobs):
    """The blob names to collect (default: the net's outputs), each checked to exist."""
    chosen = list(blobs) if blobs else list(net.outputs)
    unknown = [name for name in chosen if name not in net.blobs]
    if unknown:
        raise FeedError(f"no blob named {', '.join(repr(b) for b in unknown)} in the net; its blobs: "
                        f"{', '.join(net.blobs)}")
    if not chosen:
        raise FeedError("the net has no output blob: name the blobs to keep")
    return chosen


class Collector:
    """The chosen blobs' values over several Forward passes, assembled as the module docstring says."""

    def __init__(self, blobs):
        self.blobs = list(blobs)
        self.parts = {name: [] for name in self.blobs}
        self.batch_sizes = []

    def add(self, values, batch_size):
        self.batch_sizes.append(batch_size)
        for name in self.blobs:
            self.parts[name].append(np.array(values[name], copy=True))

    def arrays(self) -> dict:
        return {name: self._assemble(name, parts) for name, parts in self.parts.items()}

    def _assemble(self, name, parts):
        if len(parts) == 1:
            return parts[0]
        if all(part.ndim >= 1 and len(part) == size for part, size in zip(parts, self.batch_sizes)):
            if len({part.shape[1:] for part in parts}) == 1:
                return np.concatenate(parts)
        elif len({part.shape for part in parts}) == 1:
            return np.stack(parts)
        shapes = ", ".join(_dims(part.shape) for part in parts[:4]) + (", ..." if len(parts) > 4 else "")
        raise FeedError(f"blob '{name}' changes shape between batches ({shapes}) and does not have one row "
                        "per item, so it cannot be collected; choose other blobs (or one batch)")


def run(net, sources, blobs=None, batch_size=None, progress=False) -> FeedResult:
    """Forward every item of ``sources`` ({input name: Source}) through ``net``; collect ``blobs``.

    ``batch_size``: items per Forward (default: the first fed input's batch
    size); the fed inputs are reshaped to it, and to the remainder for the last
    batch. ``progress``: draw a tqdm bar on stderr (True), not (False), or on a
    terminal only (None).
    """
    if not sources:
        raise FeedError("nothing to feed: give at least one input source")
    chosen = check_blobs(net, blobs)
    counts = {name: source.count for name, source in sources.items()}
    for name in sources:
        if name not in net.inputs:
            raise FeedError(f"'{name}' is not an input of the net (inputs: {', '.join(net.inputs) or 'none'})")
    if len(set(counts.values())) != 1:
        raise FeedError("the inputs hold different numbers of items: "
                        + ", ".join(f"{name} {count}" for name, count in counts.items()))
    for name, source in sources.items():
        shape = net.blobs[name].shape
        if tuple(source.item_shape) != tuple(shape[1:]):
            raise ShapeError(f"input '{name}': items do not fit the input blob", expected=shape[1:],
                             actual=source.item_shape)
    total = next(iter(counts.values()))
    batch = int(batch_size or net.blobs[next(iter(sources))].shape[0] or 1)
    collector = Collector(chosen)
    bar = _bar(total, progress)
    try:
        for start in range(0, total, batch):
            size = min(batch, total - start)
            for name, source in sources.items():
                blob = net.blobs[name]
                if blob.shape[0] != size:
                    blob.reshape((size,) + tuple(blob.shape[1:]))
                blob.data[...] = source.items(start, start + size)
            collector.add(net.forward(blobs=chosen), size)
            if bar is not None:
                bar.update(size)
    finally:
        if bar is not None:
            bar.close()
    names = next((source.names for source in sources.values() if source.names is not None), None)
    return FeedResult(collector.arrays(), names, total, len(collector.batch_sizes))


def _bar(total, progress):
    if progress is False:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="item", file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=None if progress is None else False)


# ---------------------------------------------------------------- writing

def blob_file_name(name) -> str:
    """The file a blob is written to in an output folder: its name with '/' and other odd characters %-quoted."""
    return quote(name, safe="-_.,+=@") + ".npy"


DATABASE_SUFFIXES = (".lmdb", ".leveldb")
HDF5_SUFFIXES = (".h5", ".hdf5")


def write_outputs(path, arrays, names=None) -> list:
    """Write ``arrays`` ({blob: array}) to ``path``: a ``.npz`` (one array per blob), a folder (one ``.npy``
    per blob, :func:`blob_file_name`), an HDF5 file (``.h5``: one dataset per blob) or, as Caffe's
    ``extract_features`` does, a database per blob (``.lmdb``/``.leveldb``: :func:`write_feature_databases`).
    ``names`` (the input files) go in as ``names`` (not into a database). Returns the files written."""
    path = os.fspath(path)
    if path.lower().endswith(DATABASE_SUFFIXES):
        return write_feature_databases(path, arrays)
    arrays = dict(arrays)
    if names is not None:
        if NAMES_KEY in arrays:
            raise FeedError(f"a blob is named '{NAMES_KEY}', the key the output keeps for the input files' names")
        arrays[NAMES_KEY] = np.array(list(names), dtype=str)
    if path.lower().endswith(HDF5_SUFFIXES):
        return [_write_hdf5(path, arrays)]
    if path.lower().endswith(".npz"):
        from .io import atomic_write_bytes
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FeedError(f"cannot write '{path}': folder '{folder}' does not exist")
        buffer = _io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
        return [path]
    if os.path.exists(path) and not os.path.isdir(path):
        raise FeedError(f"cannot write into '{path}': it is a file; give a folder or a .npz path")
    os.makedirs(path, exist_ok=True)
    written = []
    for name, array in arrays.items():
        target = os.path.join(path, blob_file_name(name))
        np.save(target, array, allow_pickle=False)
        written.append(target)
    return written


def write_feature_databases(path, arrays) -> list:
    """One database per blob in ``extract_features``'s layout: a float Datum per item (channels, height,
    width from the blob's axes 1-3, ``float_data`` the item's values), keyed by the item's index as ten
    zero-padded digits. With one blob the database is ``path``; with several, ``STEM_BLOB.lmdb`` beside it."""
    from .data.db import Writer
    from .proto import caffe_pb2
    stem, suffix = os.path.splitext(path)
    backend = suffix.lower().lstrip(".")
    targets = {name: path if len(arrays) == 1 else f"{stem}_{quote(name, safe='-_.,+=@')}{suffix}"
               for name in arrays}
    for name, array in arrays.items():
        dims = tuple(array.shape[1:]) + (1,) * max(0, 3 - (array.ndim - 1))
        if array.ndim > 4:
            raise FeedError(f"blob '{name}' has {array.ndim} axes; a Datum holds at most channels x height x width")
        writer = Writer(targets[name], backend=backend)
        try:
            for index, item in enumerate(array.reshape(len(array), -1)):
                datum = caffe_pb2.Datum(channels=dims[0], height=dims[1], width=dims[2])
                datum.float_data.extend(item.astype(np.float32, copy=False).tolist())
                writer.put(f"{index:010d}".encode(), datum.SerializeToString())
        except BaseException:
            writer.abandon()
            raise
        writer.close()
    return list(targets.values())


def _write_hdf5(path, arrays):
    from .data.common import optional_import
    h5py = optional_import("h5py", "writing HDF5 outputs")
    from .atomic import atomic_write
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FeedError(f"cannot write '{path}': folder '{folder}' does not exist")

    def write(_fd, target):
        with h5py.File(target, "w") as h5:
            for name, array in arrays.items():
                data = np.asarray(array)
                h5.create_dataset(name, data=data.astype(h5py.string_dtype()) if data.dtype.kind == "U" else data)
    atomic_write(path, write, lock=False)
    return path


# ---------------------------------------------------------------- classification and detection

def read_labels(path) -> dict:
    """Class labels from ``path``: one per line (line i is class i, as classification.cpp reads
    synset_words.txt), or an SSD ``LabelMap`` prototxt (``item { name label display_name }``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise FeedError(f"cannot read labels file '{path}': {exc.strerror or exc}") from None
    if re.match(r"\s*item\s*\{", text):
        from google.protobuf import text_format
        from .proto import caffe_pb2
        labelmap = caffe_pb2.LabelMap()
        try:
            text_format.Parse(text, labelmap)
        except text_format.ParseError as exc:
            raise FeedError(f"labels file '{path}' looks like a LabelMap but does not parse: {exc}") from None
        return {item.label: item.display_name or item.name for item in labelmap.item}
    return dict(enumerate(text.splitlines()))


def top_k(scores, k, labels=None) -> list:
    """The ``k`` best (score, label) of a vector of class scores, best first (ties: lower class first);
    the label is ``labels[class]``, or the class number without labels."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-scores, kind="stable")[:max(0, int(k))]
    return [(float(scores[index]), (labels or {}).get(int(index), str(int(index)))) for index in order]


def detection_blob(net) -> str:
    """The top of the net's DetectionOutput layer (the SSD fork's detections)."""
    for planned in reversed(net.plan.layers):
        if planned.type == "DetectionOutput":
            return planned.tops[0]
    raise FeedError("the net has no DetectionOutput layer: detect is for SSD-style nets, whose last layer "
                    "is DetectionOutput; use forward or classify for other nets")


def detections(rows, height, width, threshold=0.0, labels=None) -> list:
    """DetectionOutput rows ``[image, label, score, xmin, ymin, xmax, ymax]`` (boxes in [0, 1]) of one image
    as dicts with the box in pixels of an image of ``height`` x ``width`` (not clipped); the fork's fake
    rows (label -1) and scores below ``threshold`` are left out."""
    found = []
    for row in np.asarray(rows, dtype=np.float64).reshape(-1, 7):
        label, score = int(row[1]), float(row[2])
        if label < 0 or score < threshold:
            continue
        xmin, ymin, xmax, ymax = row[3] * width, row[4] * height, row[5] * width, row[6] * height
        found.append({"label": label, "name": (labels or {}).get(label, str(label)), "score": round(score, 6),
                      "box": [round(float(v), 3) for v in (xmin, ymin, xmax, ymax)]})
    return found


def detect(net, paths, preprocessing=None, threshold=0.5, labels=None, progress=False) -> list:
    """Run an SSD-style ``net`` on each image file of ``paths``, one at a time.

    Returns one ``{"image", "width", "height", "detections"}`` dict per image,
    the detections as :func:`detections` gives them (pixels of the original image).
    """
    preprocessing = preprocessing or Preprocessing()
    output = detection_blob(net)
    if not net.inputs:
        raise FeedError("the net has no input blob: detect feeds its images to the net's first input")
    in_ = net.inputs[0]
    shape = tuple(net.blobs[in_].shape)
    _check_image_input(shape, f"input '{in_}'")
    preprocessing.check(shape[1:])
    if shape[0] != 1:
        net.blobs[in_].reshape((1,) + shape[1:])
    results = []
    bar = _bar(len(paths), progress)
    try:
        for path in paths:
            item, (height, width) = preprocessing.load(path, shape[1:])
            net.blobs[in_].data[0] = item
            rows = net.forward(blobs=[output])[output]
            results.append({"image": os.fspath(path), "width": int(width), "height": int(height),
                            "detections": detections(rows, height, width, threshold, labels)})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results


def detections_json(results) -> str:
    """:func:`detect`'s results as JSON text: one image per block, one detection per line."""
    blocks = []
    for result in results:
        head = {key: value for key, value in result.items() if key != "detections"}
        rows = ",\n".join("    " + json.dumps(found) for found in result["detections"])
        body = f"[\n{rows}\n  ]" if rows else "[]"
        blocks.append("  " + json.dumps(head)[:-1] + f', "detections": {body}}}')
    return "[\n" + ",\n".join(blocks) + "\n]"


_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0))


def draw_detections(image_path, found, out_path) -> None:
    """Write the image at ``image_path`` (its own size) with the boxes of ``found`` (from :func:`detections`)
    and their labels and scores drawn on it, to ``out_path`` (the format from its extension). Needs Pillow."""
    from .data.common import optional_import
    Image = optional_import("PIL.Image", "drawing detections (--draw)")
    ImageDraw = optional_import("PIL.ImageDraw", "drawing detections (--draw)")
    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for detection in found:
        colour = _COLOURS[detection["label"] % len(_COLOURS)]
        xmin, ymin, xmax, ymax = detection["box"]
        box = [max(0.0, min(xmin, width - 1)), max(0.0, min(ymin, height - 1)),
               max(0.0, min(xmax, width - 1)), max(0.0, min(ymax, height - 1))]
        if box[2] < box[0] or box[3] < box[1]:
            continue
        draw.rectangle(box, outline=colour, width=max(1, round(min(width, height) / 150)))
        text = f"{detection['name']} {detection['score']:.2f}"
        left, top, right, bottom = draw.textbbox((box[0], box[1]), text)
        shift = min(bottom - top + 2, box[1])             # above the box where there is room
        draw.rectangle([left, top - shift, right + 2, bottom - shift], fill=colour)
        draw.text((box[0] + 1, box[1] - shift), text, fill=(255, 255, 255))
    try:
        image.save(out_path)
    except (OSError, ValueError) as exc:
        raise FeedError(f"cannot write '{out_path}': {exc}") from None


__all__ = ["PYCAFFE", "CAFFE_CPP", "FeedError", "Preprocessing", "Source", "ArraySource", "ImageSource",
           "FeedResult", "Collector", "read_mean", "parse_channel_swap", "open_source", "split_input",
           "image_files", "check_blobs", "run", "write_outputs", "blob_file_name", "read_labels", "top_k",
           "detection_blob", "detections", "detect", "detections_json", "draw_detections"]
