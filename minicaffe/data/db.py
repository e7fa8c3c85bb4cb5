"""Key-value databases as Caffe's ``db::DB``: LMDB (the ``lmdb`` package) and LevelDB (``plyvel``).

Records come back in key order, as Caffe's cursors give them. A reader opens
its database lazily, in whichever thread first reads, and keeps one read
transaction (LMDB) or iterator (LevelDB) per pass over the keys.
"""

from __future__ import annotations

import contextlib
import os
import threading

from .common import DataError, optional_import

LMDB, LEVELDB = "lmdb", "leveldb"
BACKENDS = (LMDB, LEVELDB)


def backend_name(value) -> str:
    """'lmdb' or 'leveldb' from a DataParameter.DB value or a name."""
    if isinstance(value, str):
        name = value.lower()
        if name not in BACKENDS:
            raise DataError(f"unknown database backend '{value}' (use lmdb or leveldb)")
        return name
    return LMDB if int(value) == 1 else LEVELDB


def looks_like_lmdb(path) -> bool:
    return os.path.isfile(os.path.join(path, "data.mdb")) or (os.path.isfile(path) and not os.path.isdir(path))


def looks_like_leveldb(path) -> bool:
    return os.path.isfile(os.path.join(path, "CURRENT"))


class Reader:
    """Records of one database, in key order: ``first()``, ``iterate(start_key)``, ``count()``."""

    def __init__(self, path, backend, layer=None):
        self.path = os.fspath(path)
        self.backend = backend_name(backend)
        self.layer = layer
        self._env = None
        if self.backend == LMDB:
            self._module = optional_import("lmdb", "reading LMDB databases", layer)
        else:
            self._module = optional_import("plyvel", "reading LevelDB databases", layer)

    def _open(self):
        if self._env is not None:
            return self._env
        try:
            if self.backend == LMDB:
                self._env = _shared_lmdb(self._module, self.path)
            else:
                self._env = self._module.DB(self.path, create_if_missing=False)
        except Exception as exc:   # lmdb.Error, plyvel.Error: the message is the library's
            hint = ""
            if self.backend == LEVELDB and looks_like_lmdb(self.path):
                hint = " (it looks like an LMDB database: set backend: LMDB)"
            elif self.backend == LMDB and looks_like_leveldb(self.path):
                hint = " (it looks like a LevelDB database: set backend: LEVELDB)"
            raise DataError(f"cannot open {self.backend.upper()} database '{self.path}': {exc}{hint}",
                            layer=self.layer, path=self.path) from None
        return self._env

    def iterate(self, start_key=None):
        """(key, value) pairs as bytes from ``start_key`` (inclusive; the first key if None) to the end."""
        env = self._open()
        if self.backend == LMDB:
            with env.begin(buffers=False) as txn:
                cursor = txn.cursor()
                found = cursor.set_range(start_key) if start_key is not None else cursor.first()
                if not found:
                    return
                yield from cursor.iternext(keys=True, values=True)
        else:
            yield from env.iterator(start=start_key, include_value=True)

    def first(self):
        """The first (key, value), or None for an empty database."""
        records = self.iterate()
        try:
            return next(records, None)
        finally:
            records.close()

    def count(self):
        """The number of records when the backend knows it cheaply (LMDB), else None."""
        if self.backend == LMDB:
            return self._open().stat()["entries"]
        return None

    def close(self):
        if self._env is not None:
            if self.backend == LMDB:
                _release_lmdb(self.path)
            else:
                self._env.close()
            self._env = None


# lmdb refuses to open one environment twice in a process; readers of the same database
# (a TRAIN and a TEST net, `check` beside a running net) share one, counted.
_lmdb_envs = {}
_lmdb_lock = threading.Lock()


def _shared_lmdb(module, path):
    key = os.path.realpath(path)
    with _lmdb_lock:
        entry = _lmdb_envs.get(key)
        if entry is None:
            env = module.open(path, readonly=True, lock=False, readahead=False, subdir=os.path.isdir(path),
                              max_readers=512)
            entry = _lmdb_envs[key] = [env, 0]
        entry[1] += 1
        return entry[0]


def _release_lmdb(path):
    key = os.path.realpath(path)
    with _lmdb_lock:
        entry = _lmdb_envs.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            entry[0].close()
            del _lmdb_envs[key]


class Writer:
    """A new database (Caffe refuses to write into an existing one), committed every ``batch`` puts.

    A failure of the database library or the file system (a missing folder, a full disk, a file-size
    limit) is a DataError naming the database; leaving the ``with`` block on an exception closes the
    database without committing what is pending.
    """

    def __init__(self, path, backend=LMDB, batch=1000):
        self.path = os.fspath(path)
        self.backend = backend_name(backend)
        self.batch = batch
        if os.path.lexists(self.path):
            raise DataError(f"'{self.path}' already exists: remove it or choose another database path",
                            path=self.path)
        self._env = None
        if self.backend == LMDB:
            lmdb = optional_import("lmdb", "writing LMDB databases")
            self._failures = (lmdb.Error, OSError)
            self._map_size = 1 << 26
            self._map_full = lmdb.MapFullError
            with self._reporting("create"):
                self._env = lmdb.open(self.path, map_size=self._map_size, subdir=True, meminit=False)
        else:
            plyvel = optional_import("plyvel", "writing LevelDB databases")
            self._failures = (plyvel.Error, OSError)
            with self._reporting("create"):
                self._env = plyvel.DB(self.path, create_if_missing=True, error_if_exists=True)
        self._pending = []

    @contextlib.contextmanager
    def _reporting(self, doing):
        try:
            yield
        except self._failures as exc:
            from ..atomic import os_error_reason
            reason = os_error_reason(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
            folder = os.path.dirname(os.path.abspath(self.path))
            if doing == "create" and not os.path.isdir(folder):
                reason += f" (the folder '{folder}' does not exist or is not a folder)"
            raise DataError(f"cannot {doing} {self.backend.upper()} database '{self.path}': {reason}",
                            path=self.path) from None

    def put(self, key: bytes, value: bytes):
        self._pending.append((key, value))
        if len(self._pending) >= self.batch:
            self.commit()

    def commit(self):
        if not self._pending:
            return
        with self._reporting("write"):
            if self.backend == LEVELDB:
                with self._env.write_batch() as batch:
                    for key, value in self._pending:
                        batch.put(key, value)
            else:
                while True:
                    try:
                        with self._env.begin(write=True) as txn:
                            for key, value in self._pending:
                                txn.put(key, value)
                        break
                    except self._map_full:       # grow the map and retry, as Caffe's LMDB writer does
                        self._map_size *= 2
                        self._env.set_mapsize(self._map_size)
        self._pending = []

    def close(self):
        try:
            self.commit()
        finally:
            self.abandon()

    def abandon(self):
        """Close the database without committing what is pending."""
        self._pending = []
        if self._env is not None:
            env, self._env = self._env, None
            try:
                env.close()
            except self._failures:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abandon()
