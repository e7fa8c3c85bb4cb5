"""Dataset readers behind the data layers: Datum databases, image lists, HDF5 file lists.

Each reader hands out batches with :meth:`read_batch` (called from the prefetch
thread), wraps around at the end of its data *mid-batch* as Caffe's readers do,
and reports where it stands with :meth:`state` and :meth:`restore`: plain dicts
of ints and strings (JSON-serialisable) holding the position in the current
pass, the pass number (``epoch``) and, for shuffling readers, the seed their
orders derive from. A shuffled order is a function of (seed, epoch), so a
restored reader continues with exactly the records the original would have read.

Sharding (data-parallel training, :mod:`minicaffe.distributed`): a reader given
``shard=(rank, K)`` reads the same stream as one process would and keeps
record i of it when ``i % K == rank``, as Caffe's ``DataLayer::Skip`` does.
Each batch of ``n`` items passes over ``n * K`` records of the stream (those of
the other ranks are skipped without decoding), so after every batch all ranks
stand at the same place and their states are equal; together, the K batches
of an iteration hold the ``n * K`` records one process with batch ``n * K``
would read, rank r's being items r, r + K, r + 2K, ... of that batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import excerpt
from ..proto import caffe_pb2
from . import images
from .common import DataError
from .db import Reader


@dataclass
class Batch:
    """One batch as a reader produced it, before any transformation."""

    items: list = field(default_factory=list)     # per item: a C x H x W array (uint8 or float32)
    labels: np.ndarray = None
    keys: list = field(default_factory=list)      # per item: what to name in an error (key or path)
    tops: list = None                             # HDF5: one array per top
    state: dict = None                            # the reader's state after this batch
    stacked: np.ndarray = None                    # the items as one N x C x H x W array, when they share a shape
    device: list = None                           # GPU mode: flat device copies (the tops, or stacked + labels)


def _order(count, seed, *stream):
    """The order of ``count`` items: identity without a seed, else a permutation fixed by (seed, stream)."""
    if seed is None:
        return np.arange(count)
    return np.random.default_rng([seed, *stream]).permutation(count)


def _check_shard(shard):
    rank, size = (int(value) for value in shard)
    if not 0 <= rank < size:
        raise ValueError(f"shard {shard!r}: rank must be in 0 .. size - 1")
    return rank, size


def _is_hex(text) -> bool:
    return len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text)


def _key_text(key) -> str:
    return key.decode("utf-8", "backslashreplace") if isinstance(key, (bytes, bytearray)) else str(key)


# ---------------------------------------------------------------- Datum databases

class DatumSource:
    """Datum records of an LMDB or LevelDB database in key order, starting over at the end."""

    def __init__(self, path, backend, decode_mode=images.NATIVE, layer=None, skip=0, shard=(0, 1)):
        self.path = os.fspath(path)
        self.shard = _check_shard(shard)
        self.layer = layer
        self.decode_mode = decode_mode
        self.reader = Reader(self.path, backend, layer)
        self.epoch = 0
        self.position = 0
        self._last_key = None
        self._records = None
        self._skip = int(skip)

    def first_shape(self) -> tuple:
        """(channels, height, width) of the first record, reading nothing else."""
        record = self.reader.first()
        if record is None:
            raise DataError(f"database '{self.path}' holds no records", layer=self.layer, path=self.path)
        datum = self._parse(*record)
        what = self._what(record[0])
        if datum.encoded:
            return images.image_shape(datum.data, self.decode_mode, what, self.layer)
        return self._raw_array(datum, what).shape

    def read_batch(self, count) -> Batch:
        batch = Batch(labels=np.empty(count, dtype=np.int64))
        rank, size = self.shard
        for index in range(count):
            for _ in range(rank):                   # the records of the ranks before this one
                self._next_record()
            array, label, what = self.item(*self._next_record())
            for _ in range(size - rank - 1):        # and of those after it
                self._next_record()
            batch.items.append(array)
            batch.labels[index] = label
            batch.keys.append(what)
        batch.state = self.state()
        return batch

    def item(self, key, value):
        """One record as (C x H x W array, label, its description for errors)."""
        what = self._what(key)
        datum = self._parse(key, value)
        if datum.encoded:
            return images.decode(datum.data, self.decode_mode, what, self.layer), datum.label, what
        return self._raw_array(datum, what), datum.label, what

    def _next_record(self):
        if self._records is None:
            self._records = self._resume()
        record = next(self._records, None)
        if record is None:                      # the end: start over mid-batch, as Caffe's cursor
            self._records = self.reader.iterate()
            self.epoch += 1
            self.position = 0
            record = next(self._records, None)
            if record is None:
                raise DataError(f"database '{self.path}' holds no records", layer=self.layer, path=self.path)
        self.position += 1
        self._last_key = record[0]
        return record

    def _resume(self):
        """The record iterator positioned after the last key read (or after ``position`` records)."""
        if self._last_key is not None:
            records = self.reader.iterate(self._last_key)
            first = next(records, None)
            if first is not None and first[0] == self._last_key:
                return records
            records.close()                     # the key is gone: count records instead
        records = self.reader.iterate()
        for _ in range(self.position + self._skip):
            if next(records, None) is None:
                records = self.reader.iterate()
        self.position += self._skip
        self._skip = 0
        return records

    def _parse(self, key, value):
        datum = caffe_pb2.Datum()
        try:
            datum.ParseFromString(value)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise DataError(f"{self._what(key)} is not a valid Datum (corrupt record: {exc})",
                            layer=self.layer, path=self.path, key=_key_text(key)) from None
        return datum

    def _raw_array(self, datum, what):
        shape = (datum.channels, datum.height, datum.width)
        expected = int(np.prod(shape))
        if min(shape) <= 0:
            raise DataError(f"{what} has shape {shape}: a raw Datum needs positive channels, height and width",
                            layer=self.layer, path=self.path)
        if len(datum.data):
            if len(datum.data) != expected:
                raise DataError(f"{what} holds {len(datum.data)} bytes of data, but its shape "
                                f"{shape} needs {expected} (corrupt record?)", layer=self.layer, path=self.path)
            return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
        if len(datum.float_data) != expected:
            raise DataError(f"{what} holds {len(datum.float_data)} float_data values, but its shape "
                            f"{shape} needs {expected} (corrupt record?)", layer=self.layer, path=self.path)
        return np.asarray(datum.float_data, dtype=np.float32).reshape(shape)

    def _what(self, key):
        return f"record '{_key_text(key)}' in '{self.path}'"

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position + self._skip,
                "key": None if self._last_key is None else bytes(self._last_key).hex()}

    def restore(self, state):
        from .common import cursor_int
        epoch = cursor_int(state, "epoch", self.layer)
        position = cursor_int(state, "position", self.layer)
        key = state.get("key")
        if key is not None and not (isinstance(key, str) and _is_hex(key)):
            raise DataError(f"the saved data cursor's 'key' is {key!r:.80}, not a record key in hex",
                            layer=self.layer, path=self.path)
        self.epoch, self.position = epoch, position
        self._last_key = bytes.fromhex(key) if key else None
        self._skip = 0
        if self._records is not None:
            self._records.close()
        self._records = None

    def close(self):
        if self._records is not None:
            self._records.close()
            self._records = None
        self.reader.close()


# ---------------------------------------------------------------- image lists

def read_image_list(path, layer=None):
    """``path label`` lines (the label after the last space, so paths may hold spaces), blank lines skipped."""
    entries = []
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise DataError(f"cannot read image list '{path}': {exc.strerror or exc}", layer=layer, path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        number = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{number}: image list is not UTF-8 text (a binary file?): expected "
                        "'path label' lines", layer=layer, path=path) from None
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        name, sep, label = line.rpartition(" ")
        try:
            if not sep or not name:
                raise ValueError
            entries.append((name, int(label)))
        except ValueError:
            raise DataError(f"{path}:{number}: expected 'path label' with an integer label, got "
                            f"{excerpt(line)!r}", layer=layer, path=path) from None
    if not entries:
        raise DataError(f"image list '{path}' is empty", layer=layer, path=path)
    return entries


class ImageListSource:
    """Images named by a list file, decoded (and resized) as Caffe's ImageData reads them."""

    def __init__(self, list_path, root_folder="", new_height=0, new_width=0, mode=images.COLOR,
                 seed=None, skip=0, layer=None, shard=(0, 1)):
        self.list_path = os.fspath(list_path)
        self.shard = _check_shard(shard)
        self.entries = read_image_list(self.list_path, layer)
        self.root_folder = root_folder
        self.new_size = (int(new_height), int(new_width))
        self.mode = mode
        self.seed = seed
        self.layer = layer
        self.epoch = 0
        self.position = int(skip)
        self._order_epoch, self._order = None, None

    def _current_order(self):
        if self._order_epoch != self.epoch:
            self._order = _order(len(self.entries), self.seed, self.epoch)
            self._order_epoch = self.epoch
        return self._order

    def _path(self, index):
        return self.root_folder + self.entries[index][0]

    def first_path(self):
        return self._path(self._current_order()[self.position])

    def first_shape(self) -> tuple:
        path = self.first_path()
        channels, height, width = images.image_shape(path, self.mode, f"image '{path}'", self.layer)
        if self.new_size[0] > 0:
            height, width = self.new_size
        return channels, height, width

    def read_batch(self, count) -> Batch:
        batch = Batch(labels=np.empty(count, dtype=np.int64))
        rank, size = self.shard
        for index in range(count):
            for _ in range(rank):                   # the images of the ranks before this one
                self._advance()
            entry = self._current_order()[self.position]
            path = self._path(entry)
            array = images.decode(path, self.mode, f"image '{path}' (from {self.list_path})", self.layer)
            if self.new_size[0] > 0:
                array = images.resize(array, *self.new_size)
            batch.items.append(array)
            batch.labels[index] = self.entries[entry][1]
            batch.keys.append(f"image '{path}'")
            for _ in range(size - rank):            # this image, and those of the ranks after
                self._advance()
        batch.state = self.state()
        return batch

    def _advance(self):
        self.position += 1
        if self.position >= len(self.entries):       # start over, reshuffled when shuffling
            self.position = 0
            self.epoch += 1

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def restore(self, state):
        from .common import cursor_int
        epoch = cursor_int(state, "epoch", self.layer)
        position = cursor_int(state, "position", self.layer, high=len(self.entries))
        self.seed = cursor_int(state, "seed", self.layer, default=self.seed, allow_none=True)
        self.epoch, self.position = epoch, position
        self._order_epoch = None

    def close(self):
        pass


# ---------------------------------------------------------------- HDF5 file lists

def read_file_list(path, layer=None):
    """Whitespace-separated file names; relative ones as Caffe reads them (from the working
    directory), or from the list's own folder when only that exists."""
    with open(path, encoding="utf-8") as handle:
        names = handle.read().split()
    if not names:
        raise DataError(f"HDF5 file list '{path}' names no files", layer=layer, path=path)
    folder = os.path.dirname(os.path.abspath(path))
    resolved = []
    for name in names:
        beside = os.path.join(folder, name)
        resolved.append(beside if not os.path.isabs(name) and not os.path.exists(name)
                        and os.path.exists(beside) else name)
    return resolved


class HDF5Source:
    """Rows of the datasets named by the tops, file after file, whole files in memory (as Caffe)."""

    def __init__(self, list_path, datasets, dtype=np.float32, seed=None, layer=None, shard=(0, 1)):
        self.list_path = os.fspath(list_path)
        self.shard = _check_shard(shard)
        self.files = read_file_list(self.list_path, layer)
        self.datasets = list(datasets)
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.layer = layer
        self.epoch = 0
        self.slot = 0
        self.row = 0
        self._loaded_key = self._loaded_path = None
        self._arrays, self._rows = None, None
        self._trailing = None
        from .common import optional_import
        self._h5py = optional_import("h5py", "reading HDF5 files", layer)

    def _file(self, epoch, slot):
        return self.files[_order(len(self.files), self.seed, epoch)[slot]]

    def first_file(self):
        return self._file(0, 0)

    def first_shapes(self) -> list:
        """Each dataset's shape in the first file (from its metadata; no data is read)."""
        path = self.first_file()
        with self._open(path) as handle:
            return [tuple(self._dataset(handle, path, name).shape) for name in self.datasets]

    def _open(self, path):
        if not os.path.exists(path):
            raise DataError(f"HDF5 file '{path}' (listed in {self.list_path}) does not exist",
                            layer=self.layer, path=path)
        try:
            return self._h5py.File(path, "r")
        except OSError as exc:
            raise DataError(f"cannot open HDF5 file '{path}': {exc}", layer=self.layer, path=path) from None

    def _dataset(self, handle, path, name):
        if name not in handle:
            raise DataError(f"HDF5 file '{path}' has no dataset '{name}' (each top reads the dataset of its "
                            f"name; the file has: {', '.join(sorted(handle.keys())) or 'nothing'})",
                            layer=self.layer, path=path)
        dataset = handle[name]
        if not hasattr(dataset, "shape") or len(dataset.shape) < 1:
            raise DataError(f"'{name}' in HDF5 file '{path}' is not an array with at least one axis",
                            layer=self.layer, path=path)
        return dataset

    def _load(self):
        key = (self.epoch, self.slot)
        if self._loaded_key == key:
            return
        path = self._file(*key)
        if path != self._loaded_path:           # a single file is read once, as in Caffe
            self._arrays = self._read(path)
            self._loaded_path = path
        self._rows = _order(len(self._arrays[0]), self.seed, self.epoch, self.slot)
        self._loaded_key = key

    def _read(self, path):
        with self._open(path) as handle:
            arrays = [np.asarray(self._dataset(handle, path, name)[...], dtype=self.dtype)
                      for name in self.datasets]
        rows = arrays[0].shape[0]
        for name, array in zip(self.datasets, arrays):
            if array.shape[0] != rows:
                raise DataError(f"HDF5 file '{path}': dataset '{name}' has {array.shape[0]} rows but "
                                f"'{self.datasets[0]}' has {rows}", layer=self.layer, path=path)
        if rows == 0:
            raise DataError(f"HDF5 file '{path}' holds no rows", layer=self.layer, path=path)
        trailing = [array.shape[1:] for array in arrays]
        if self._trailing is None:
            self._trailing = trailing
        elif trailing != self._trailing:
            raise DataError(f"HDF5 file '{path}': row shapes {trailing} differ from the first file's "
                            f"{self._trailing}", layer=self.layer, path=path)
        return arrays

    def read_batch(self, count) -> Batch:
        self._load()
        if self.row >= len(self._rows):     # only a restored cursor can point past the rows
            raise DataError(f"the saved data cursor's 'row' is {self.row}, but '{self._loaded_path}' has "
                            f"{len(self._rows)} rows", layer=self.layer, path=self._loaded_path)
        outputs = [np.empty((count,) + array.shape[1:], dtype=self.dtype) for array in self._arrays]
        rank, size = self.shard
        filled = passed = 0                         # items of this rank; rows of the stream passed over
        while passed < count * size:
            self._load()
            take = min(count * size - passed, len(self._rows) - self.row)
            # Of the stream's rows passed .. passed + take - 1, this rank's are those equal to rank mod size.
            rows = self._rows[self.row + (rank - passed) % size:self.row + take:size]
            for output, array in zip(outputs, self._arrays):
                output[filled:filled + len(rows)] = array[rows]
            filled += len(rows)
            passed += take
            self.row += take
            if self.row == len(self._rows):        # next file; after the last, the first again
                self.row = 0
                self.slot += 1
                if self.slot == len(self.files):
                    self.slot = 0
                    self.epoch += 1
        return Batch(tops=outputs, state=self.state())

    def state(self) -> dict:
        return {"epoch": self.epoch, "file": self.slot, "row": self.row, "seed": self.seed}

    def restore(self, state):
        from .common import cursor_int
        epoch = cursor_int(state, "epoch", self.layer)
        slot = cursor_int(state, "file", self.layer, high=len(self.files))
        row = cursor_int(state, "row", self.layer)      # checked against the file's rows when it is loaded
        self.seed = cursor_int(state, "seed", self.layer, default=self.seed, allow_none=True)
        self.epoch, self.slot, self.row = epoch, slot, row
        self._loaded_key = None

    def close(self):
        self._arrays = None
        self._loaded_key = self._loaded_path = None
