"""Caffe's dataset tools: ``convert_imageset`` and ``compute_image_mean``.

Both take an optional ``progress`` factory with :func:`click.progressbar`'s
signature (``progress(iterable, length=..., label=...)`` returning a context
manager that yields the iterable); the CLI passes click's bar.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import numpy as np

from ..fillers import rng
from ..proto import caffe_pb2
from . import images
from .common import DataError, MissingDependency, require_path
from .db import LMDB, Writer
from .sources import DatumSource, read_image_list


@contextlib.contextmanager
def _quiet(iterable, length=None, label=None):
    yield iterable


def convert_imageset(root_folder, list_file, db_path, *, resize_height=0, resize_width=0, shuffle=False,
                     gray=False, encoded=False, encode_type="", backend=LMDB, check_size=False,
                     progress=None) -> dict:
    """Write the images of ``list_file`` (``path label`` lines) as Datum records in a new database.

    As Caffe's tool: keys are ``%08d_<path>`` in list order (after an optional
    shuffle), images are read from ``root_folder + path`` in colour (BGR) or grey
    and resized to ``resize_height`` x ``resize_width`` when both are given.
    Raw records hold uint8 C x H x W bytes; ``encoded`` records hold the image
    file itself when its extension is ``encode_type`` (by default, always) and
    no resize is asked for, whatever ``gray`` says, as in Caffe; otherwise the
    decoded image re-encoded as ``encode_type``. An image that cannot be
    read is skipped, as in Caffe. Returns ``{"written": n, "skipped": [paths],
    "first_error": why the first skipped image could not be read (or None)}``.
    When no image at all can be read (a wrong ``root_folder``), nothing is
    kept: the empty database is removed and a DataError gives the count and
    the first path.
    """
    list_file = require_path(list_file, "image list")
    entries = read_image_list(list_file)
    if shuffle:
        entries = [entries[i] for i in rng().permutation(len(entries))]
    if (resize_height > 0) != (resize_width > 0):
        raise DataError("give both --resize-height and --resize-width, or neither")
    mode = images.GRAY if gray else images.COLOR
    resize = resize_height > 0
    wrap = progress or _quiet
    writer = Writer(db_path, backend)       # refuses an existing path: what is removed below is ours
    try:
        with writer, wrap(list(enumerate(entries)), length=len(entries), label="converting images") as items:
            written, skipped, first_error = _convert(root_folder, items, writer, mode, resize, resize_height,
                                                     resize_width, encoded, encode_type, check_size)
    except BaseException:
        # A failed or interrupted conversion leaves no half-written database that would read as whole.
        shutil.rmtree(db_path, ignore_errors=True)
        raise
    if not written:
        # Caffe would leave an empty database and exit 0; a wrong root is the usual cause. The Writer
        # refuses an existing path, so the database is the one just created: remove it.
        shutil.rmtree(db_path, ignore_errors=True)
        raise DataError(f"could not read any of the {len(entries)} images listed in '{list_file}', so no "
                        f"database was written; the first: {first_error}. ROOT '{root_folder}' is put before "
                        "each listed path as it is: is it the images' folder, with its trailing slash?",
                        path=skipped[0] if skipped else None)
    return {"written": written, "skipped": skipped, "first_error": first_error}


def _convert(root_folder, items, writer, mode, resize, resize_height, resize_width, encoded, encode_type,
             check_size):
    """convert_imageset's loop: (records written, paths skipped, why the first was)."""
    written, skipped, first_size, first_error = 0, [], None, None
    for index, (name, label) in items:
        path = str(root_folder) + name
        try:
            pixels = images.decode(path, mode, f"image '{path}'")
        except MissingDependency:
            raise
        except DataError as exc:     # missing or unreadable: skipped, as Caffe does
            skipped.append(path)
            first_error = first_error or str(exc)
            continue
        if resize:
            pixels = images.resize(pixels, resize_height, resize_width)
        datum = caffe_pb2.Datum(label=int(label))
        if encoded:
            extension = (encode_type or os.path.splitext(name)[1].lstrip(".")).lower()
            if not extension:
                raise DataError(f"cannot guess the encoding of '{name}': give --encode-type")
            datum.encoded = True
            if not resize and _same_format(path, extension):
                with open(path, "rb") as handle:
                    datum.data = handle.read()
            else:
                datum.data = images.encode(pixels, extension, f"image '{path}'")
        else:
            datum.channels, datum.height, datum.width = pixels.shape
            datum.data = pixels.tobytes()
        if check_size:
            if first_size is None:
                first_size = pixels.shape
            elif pixels.shape != first_size:
                raise DataError(f"image '{path}' is {pixels.shape}, but the first image is {first_size} "
                                "(--check-size)", path=path)
        key = f"{index:08d}_{name}".encode("utf-8")
        writer.put(key, datum.SerializeToString())
        written += 1
    return written, skipped, first_error


def _same_format(path, extension):
    """Caffe keeps the file's own bytes when its extension matches the requested encoding."""
    own = os.path.splitext(path)[1].lower().lstrip(".")
    return own == extension or {own, extension} == {"jpg", "jpeg"}


def compute_image_mean(db_path, mean_path=None, *, backend=LMDB, progress=None):
    """The mean image of a Datum database (as Caffe's compute_image_mean), written to ``mean_path``.

    Every record must have the first record's size. The mean is written as a
    BlobProto with the legacy 1 x C x H x W fields, as Caffe writes it. Returns
    ``(mean, per_channel)``: the C x H x W mean (float32) and each channel's average.
    Sums are exact (float64); Caffe sums in float32, which is exact below 65,794
    8-bit images of a given size.
    """
    db_path = require_path(db_path, "database")
    source = DatumSource(db_path, backend)
    reader = source.reader
    total, count, shape = None, 0, None
    wrap = progress or _quiet
    try:
        with wrap(reader.iterate(), length=reader.count(), label="computing mean") as records:
            for key, value in records:
                array, _, what = source.item(key, value)
                if total is None:
                    shape, total = array.shape, np.zeros(array.shape, dtype=np.float64)
                elif array.shape != shape:
                    raise DataError(f"{what} is {array.shape}, but the first record is {shape}: every image "
                                    "must have the same size", path=db_path)
                total += array
                count += 1
    finally:
        source.close()
    if count == 0:
        raise DataError(f"database '{db_path}' holds no records: there is no mean to compute, and no mean "
                        "file was written", path=db_path)
    mean = total.astype(np.float32) / np.float32(count)
    if mean_path is not None:
        from ..io import atomic_write_bytes
        blob = caffe_pb2.BlobProto(num=1, channels=shape[0], height=shape[1], width=shape[2])
        blob.data.extend(mean.ravel().tolist())
        atomic_write_bytes(mean_path, blob.SerializeToString(deterministic=True))
    per_channel = mean.reshape(shape[0], -1).mean(axis=1, dtype=np.float64)
    return mean, per_channel
