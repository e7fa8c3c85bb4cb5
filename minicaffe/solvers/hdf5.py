"""HDF5 snapshots (``snapshot_format: HDF5``), laid out as Caffe's: weights in
``data/LAYER/i`` (and ``diff/LAYER/i``); the solver state as ``iter``,
``learned_net``, ``current_step`` and ``history/i``, plus minicaffe's resume
extras as attributes. Written to a temporary file and renamed. Needs h5py
(``minicaffe[data]``).
"""

from __future__ import annotations

import json
import math
import os
import re
from contextlib import contextmanager

import numpy as np

from ..errors import MinicaffeError, WeightsError
from ..proto import caffe_pb2
from ..atomic import atomic_write
from ..io import array_to_blobproto


def _h5py():
    try:
        import h5py
    except ImportError:
        raise MinicaffeError("HDF5 snapshots need h5py: pip install 'minicaffe[data]'") from None
    return h5py


def _atomic_h5(path, write):
    """Write an HDF5 file through :func:`minicaffe.atomic.atomic_write` (fsyncs, rename, stale temporaries
    removed, device nodes refused; an OSError becomes a one-line WriteError)."""
    h5py = _h5py()

    def fill(handle, tmp_path):
        try:
            with h5py.File(tmp_path, "w") as h5:
                write(h5)
        except (OSError, RuntimeError) as exc:
            # HDF5 reports a full disk or a file-size limit as "... errno = 28, ..." (a RuntimeError at
            # times): the errno makes it the OSError it is.
            code = re.search(r"errno = (\d+)", str(exc))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1)))) from None
    atomic_write(path, fill, lock=False)      # HDF5 locks the file it writes itself


def layer_names_problem(net) -> str | None:
    """Why ``net``'s weights cannot be written in Caffe's HDF5 layout (a group per layer name), or None:
    a layer name that cannot name an HDF5 group (empty, ``.``, or holding ``/``, which would nest groups,
    or a NUL byte), or two layers of one name that both have parameters."""
    with_params = set()
    for layer in net.layers:
        name = layer.name
        if not name or name == "." or "/" in name or "\0" in name:
            return (f"layer name {name[:200]!r} cannot name a group in an HDF5 file (it is empty or '.', or holds "
                    "'/' or a NUL byte)")
        if layer.blobs:
            if name in with_params:
                return (f"two layers are named '{name[:200]}' and both have parameters, but an HDF5 file keeps one "
                        "group per layer name")
            with_params.add(name)
    return None


def write_net_hdf5(net, path, write_diff=False):
    problem = layer_names_problem(net)
    if problem:
        raise MinicaffeError(f"cannot write HDF5 weights to {path}: {problem}; rename the layer, or write a binary "
                             ".caffemodel (snapshot_format: BINARYPROTO)")

    def write(h5):
        groups = [("data", "data")] + ([("diff", "diff")] if write_diff else [])
        owned = {(entry.layer, entry.index) for entry in net.learnable_param_specs}
        for group_name, field in groups:
            group = h5.create_group(group_name)
            for layer in net.layers:
                layer_group = group.require_group(layer.name)     # layers without parameters may share a name
                for index, blob in enumerate(layer.blobs):
                    if (layer.name, index) in owned:
                        layer_group.create_dataset(str(index), data=getattr(blob, field))
    _atomic_h5(path, write)


def read_net_hdf5(path) -> "caffe_pb2.NetParameter":
    """A ``.caffemodel.h5`` as a NetParameter with blobs, so Net.copy_from treats both formats alike.

    The layout is checked as it is read (a ``data`` group of layer groups, each holding numeric datasets
    named 0, 1, ...); anything else is a WeightsError naming the file and the object. Nothing in the file
    is executed or unpickled: datasets are read as plain numeric arrays. The HDF5 library reads the file in
    a child process (:func:`read_isolated`): a damaged file that crashes or hangs it is a WeightsError.
    """
    return read_isolated(path, _read_net_hdf5, caffe_pb2.NetParameter)


def _read_net_hdf5(path) -> "caffe_pb2.NetParameter":
    path = os.fspath(path)
    net = caffe_pb2.NetParameter()
    with _open(path, "HDF5 weights") as h5:
        data = _member(h5, "data", "group", path, hint="not a Caffe HDF5 model")
        for layer_name in _names(data, path, "data"):
            group = _member(data, layer_name, "group", path, f"data/{layer_name}")
            layer = net.layer.add(name=layer_name)
            for index in _indices(group, path, f"data/{layer_name}"):
                where = f"data/{layer_name}/{index}"
                layer.blobs.append(array_to_blobproto(_numeric(group, str(index), path, where)))
    return net


# ---------------------------------------------------------------- reading in a child process

#: Seconds a child process may take to read an HDF5 file: this, plus one per :data:`READ_RATE` bytes.
READ_TIMEOUT = 30.0
READ_RATE = 10 << 20


def read_isolated(path, read, message_type):
    """``read(path)`` (a protobuf message) run in a forked child process, its message sent back serialized.

    The HDF5 C library follows the offsets and lengths a file holds; some damaged files (found by flipping
    single bits of a snapshot: a variable-length string's heap reference, a group's B-tree) make it
    segfault or loop forever, which no check in Python can catch. In a child, a crash is a WeightsError
    naming the file and the signal, and a read that does not finish in :data:`READ_TIMEOUT` seconds (plus
    one per :data:`READ_RATE` bytes of file) is killed and reported. A minicaffe error in the child is
    raised here as it was; any other exception (a bug) as a RuntimeError carrying its traceback.
    Where ``os.fork`` is missing (not Linux or macOS) the file is read in this process.
    """
    path = os.fspath(path)
    if not hasattr(os, "fork"):
        return read(path)
    try:
        size = os.path.getsize(path)
    except (OSError, ValueError):
        return read(path)      # missing, unreadable, a NUL in the path: the reader names it
    timeout = READ_TIMEOUT + size / READ_RATE
    h5py = _h5py()
    from h5py._objects import phil
    read_end, write_end = os.pipe()
    with phil:          # no other thread is inside the HDF5 library while the process forks
        pid = os.fork()
    if pid == 0:        # the child: read, send the result, and leave without running any cleanup
        status = 0
        try:
            import faulthandler
            faulthandler.disable()      # a crash here is reported by the parent, in one line
            os.close(read_end)
            try:
                payload = b"M" + read(path).SerializePartialToString()
            except WeightsError as exc:
                payload = b"W" + json.dumps([exc.path, str(exc)[len(exc.path) + 2:]]).encode()
            except MinicaffeError as exc:
                payload = b"E" + str(exc).encode()
            except BaseException:
                import traceback
                payload = b"X" + traceback.format_exc().encode()
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = _collect(read_end, pid, timeout, path)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        import signal
        name = signal.Signals(os.WTERMSIG(status)).name
        raise WeightsError(path, f"the HDF5 library crashed reading it ({name}): the file is damaged")
    payload = b"".join(chunks)
    kind, body = payload[:1], payload[1:]
    if kind == b"M":
        message = message_type()
        message.ParseFromString(body)
        return message
    if kind == b"W":
        where, text = json.loads(body)
        raise WeightsError(where, text)
    if kind == b"E":
        raise MinicaffeError(body.decode())
    if kind == b"X":
        raise RuntimeError(f"reading {path} in a child process failed:\n{body.decode()}")
    raise WeightsError(path, "the process reading the HDF5 file ended without a result (exit status "
                       f"{os.WEXITSTATUS(status)})")


def _collect(read_end, pid, timeout, path):
    """The child's output, read until it closes the pipe; the child is killed past ``timeout`` seconds."""
    import select
    import signal
    import time
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            remaining = deadline - time.monotonic()
            ready = select.select([pipe], [], [], max(remaining, 0))[0] if remaining > 0 else []
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise WeightsError(path, f"the HDF5 library did not finish reading it in {timeout:.0f} s, and was "
                                   "stopped: a damaged file can make it loop")
            chunk = pipe.read(1 << 20)
            if not chunk:
                return chunks
            chunks.append(chunk)


# ---------------------------------------------------------------- checked reading

def _open(path, what):
    h5py = _h5py()
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as exc:     # not HDF5, missing, a folder, a NUL in the path
        raise WeightsError(path, f"cannot read {what}: {exc}") from None


@contextmanager
def _corrupt(path, where):
    """HDF5's own errors while reading ``where`` of a damaged file (a bad B-tree, heap or object header,
    an address past the end of the file, a datatype message no numpy type fits): h5py raises them from any
    access as a RuntimeError, a KeyError, an OSError, a ValueError or (an unknown string encoding) a
    TypeError. Each becomes a WeightsError naming the file and the object. Only h5py's calls run inside."""
    try:
        yield
    except (RuntimeError, KeyError, OSError, ValueError, TypeError) as exc:
        raise WeightsError(path, f"'{where}' cannot be read ({exc}): the HDF5 file is damaged, or holds "
                           "what h5py cannot read") from None


def _member(group, name, kind, path, where=None, hint=None, required=True):
    """``group[name]`` (``where``: its path in the file, for errors), which must be a hard-linked HDF5
    ``kind`` ("group" or "dataset")."""
    h5py = _h5py()
    where = where or name
    with _corrupt(path, where):
        link = group.get(name, getlink=True)
    if link is None:
        if not required:
            return None
        raise WeightsError(path, f"no '{where}' {kind}" + (f": {hint}" if hint else ""))
    if not isinstance(link, h5py.HardLink):    # a soft link may dangle; an external one reads another file
        raise WeightsError(path, f"'{where}' is a {type(link).__name__}, not a {kind} stored in the file")
    with _corrupt(path, where):
        item = group[name]
    wanted = h5py.Group if kind == "group" else h5py.Dataset
    if not isinstance(item, wanted):
        found = "group" if isinstance(item, h5py.Group) else "dataset" if isinstance(item, h5py.Dataset) \
            else type(item).__name__
        raise WeightsError(path, f"'{where}' is a {found}, not a {kind}" + (f" ({hint})" if hint else ""))
    return item


def _names(group, path, where):
    """The member names of ``group``, which must be UTF-8 (h5py hands undecodable names back as bytes)."""
    names = []
    with _corrupt(path, where):
        keys = list(group.keys())
    for name in keys:
        if not isinstance(name, str):
            raise WeightsError(path, f"'{where}' holds a member whose name {name!r:.80} is not UTF-8 text")
        names.append(name)
    return names


def _indices(group, path, where):
    """Blob numbers 0..n-1 of a layer group (or history), which must be named exactly so."""
    names = _names(group, path, where)
    for name in names:
        if not (name.isascii() and name.isdigit()):
            raise WeightsError(path, f"'{where}/{name}': blobs are named 0, 1, 2, ..., not '{name:.80}'")
    numbers = sorted(int(name) for name in names)
    if numbers != list(range(len(numbers))) or any(str(n) not in names for n in numbers):
        raise WeightsError(path, f"'{where}' holds blobs {numbers[:10]}{'...' if len(numbers) > 10 else ''}; "
                           f"expected 0 to {len(numbers) - 1}")
    return numbers


def _numeric(group, name, path, where):
    """A dataset read as a numeric array (float or integer dtype; strings and compounds are refused)."""
    dataset = _member(group, name, "dataset", path, where)
    with _corrupt(path, where):
        dtype, shape = dataset.dtype, dataset.shape
    if dtype.kind not in "fiu":
        what = "strings" if _h5py().check_string_dtype(dtype) else f"{dtype} values"
        raise WeightsError(path, f"'{where}' holds {what}, not real numbers (floats or integers)")
    if shape is None:           # h5py.Empty: a dataset with a type and no dataspace
        raise WeightsError(path, f"'{where}' is an empty dataset (no shape, no values), not an array")
    _check_stored_size(dataset, path, where)
    with _corrupt(path, where):     # unreadable chunks, a filter h5py lacks
        return np.asarray(dataset[()])


def _check_stored_size(dataset, path, where):
    """Refuse a dataset that claims more bytes than its file could hold, before reading it.

    Caffe and minicaffe write weights and states uncompressed, so a real dataset
    is never larger than the file; a damaged header can claim terabytes, which
    HDF5 would allocate and fill (with the fill value) before failing. The slack
    (16x, at least 1 MiB) leaves room for files written with compression."""
    with _corrupt(path, where):
        claimed = math.prod(dataset.shape or ()) * dataset.dtype.itemsize
    limit = max(16 * os.path.getsize(path), 1 << 20)
    if claimed > limit:
        raise WeightsError(path, f"'{where}' claims {claimed:,} bytes ({dataset.dtype} x {dataset.shape}), "
                                 f"more than a {os.path.getsize(path):,}-byte file can hold: the file is damaged")


def _scalar(group, name, path, kind="int", required=True):
    dataset = _member(group, name, "dataset", path, required=required,
                      hint="not a minicaffe or Caffe HDF5 solver state")
    if dataset is None:
        return None
    with _corrupt(path, name):
        shape, dtype = dataset.shape, dataset.dtype
    if shape not in ((), (1,)) or dtype.kind not in ("iu" if kind == "int" else "fiu"):
        raise WeightsError(path, f"'{name}' is {_describe(dataset)}, not a single "
                           f"{'integer' if kind == 'int' else 'number'}")
    value = _numeric(group, name, path, name).reshape(-1)[0]
    return int(value) if kind == "int" else float(value)


def _describe(dataset):
    kind = "string" if _h5py().check_string_dtype(dataset.dtype) else str(dataset.dtype)
    return f"a {kind} dataset of shape {dataset.shape}"


def _text(value, path, where):
    """A string attribute or dataset value as UTF-8 text."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "SO":
        value = value[()]
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise WeightsError(path, f"'{where}' is not UTF-8 text: {value[:60]!r}") from None
    if not isinstance(value, str):
        raise WeightsError(path, f"'{where}' is {type(value).__name__} {value!r:.60}, not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:      # h5py's surrogate escapes of bytes that are not UTF-8
        raise WeightsError(path, f"'{where}' is not UTF-8 text: {value[:60]!r}") from None
    return value


def write_state_hdf5(state, path):
    def write(h5):
        h5.create_dataset("iter", data=np.int32(state.iter))
        h5.create_dataset("learned_net", data=state.learned_net)
        h5.create_dataset("current_step", data=np.int32(state.current_step))
        history = h5.create_group("history")
        from ..io import blobproto_to_array
        for index, blob in enumerate(state.history):
            history.create_dataset(str(index), data=blobproto_to_array(blob))
        h5.attrs["minicaffe_rng_state"] = state.rng_state
        h5.attrs["minicaffe_smoothed_loss"] = state.smoothed_loss
        h5.attrs["minicaffe_data_cursors"] = json.dumps(
            [[cursor.net, cursor.layer, cursor.state] for cursor in state.data_cursor])
    _atomic_h5(path, write)


_ATTRIBUTES = ("minicaffe_rng_state", "minicaffe_smoothed_loss", "minicaffe_data_cursors")


def read_state_hdf5(path) -> "caffe_pb2.SolverState":
    """A ``.solverstate.h5`` as a SolverState, its layout checked as it is read (``iter``, ``learned_net``,
    optional ``current_step`` and ``history/0..n-1``, and minicaffe's attributes); the values themselves
    are checked with those of binary solverstates (:func:`minicaffe.solvers.state.check_state`). Read in a
    child process, as :func:`read_net_hdf5`."""
    return read_isolated(path, _read_state_hdf5, caffe_pb2.SolverState)


def _read_state_hdf5(path) -> "caffe_pb2.SolverState":
    path = os.fspath(path)
    state = caffe_pb2.SolverState()
    with _open(path, "HDF5 solver state") as h5:
        iteration = _scalar(h5, "iter", path)
        current_step = _scalar(h5, "current_step", path, required=False)
        for name, value in (("iter", iteration), ("current_step", current_step)):
            if value is not None and not -2 ** 31 <= value < 2 ** 31:
                raise WeightsError(path, f"'{name}' is {value}, outside a SolverState's int32 range")
        state.iter = iteration
        state.current_step = current_step or 0
        learned = _member(h5, "learned_net", "dataset", path, hint="not a minicaffe or Caffe HDF5 solver state")
        with _corrupt(path, "learned_net"):
            if learned.shape != () or learned.dtype.kind not in "SO":
                raise WeightsError(path, f"'learned_net' is {_describe(learned)}, not a string")
        _check_stored_size(learned, path, "learned_net")
        with _corrupt(path, "learned_net"):
            value = learned[()]
        state.learned_net = _text(value, path, "learned_net")
        history = _member(h5, "history", "group", path, required=False)
        if history is not None:
            for index in _indices(history, path, "history"):
                state.history.append(array_to_blobproto(_numeric(history, str(index), path, f"history/{index}")))
        with _corrupt(path, "the root group's attributes"):
            attrs = {name: h5.attrs[name] for name in _ATTRIBUTES if name in h5.attrs}
        if "minicaffe_rng_state" in attrs:
            state.rng_state = _text(attrs["minicaffe_rng_state"], path, "minicaffe_rng_state")
        if "minicaffe_smoothed_loss" in attrs:
            loss = np.asarray(attrs["minicaffe_smoothed_loss"])
            if loss.size != 1 or loss.dtype.kind not in "fiu":
                raise WeightsError(path, f"attribute 'minicaffe_smoothed_loss' is {loss!r:.60}, not a number")
            state.smoothed_loss = float(loss.reshape(-1)[0])
        if "minicaffe_data_cursors" in attrs:
            text = _text(attrs["minicaffe_data_cursors"], path, "minicaffe_data_cursors")
            try:
                cursors = json.loads(text)
            except ValueError as exc:
                raise WeightsError(path, f"attribute 'minicaffe_data_cursors' is not JSON ({exc}): "
                                   f"{text[:80]!r}") from None
            if not isinstance(cursors, list) or not all(
                    isinstance(entry, list) and len(entry) == 3 and all(isinstance(x, str) for x in entry)
                    for entry in cursors):
                raise WeightsError(path, "attribute 'minicaffe_data_cursors' is not a list of [net, layer, state] "
                                   f"strings: {text[:80]!r}")
            for net_name, layer, cursor in cursors:
                state.data_cursor.add(net=net_name, layer=layer, state=cursor)
    return state
