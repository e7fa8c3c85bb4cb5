"""Binary Caffe files: ``.caffemodel`` weights, ``.binaryproto`` blobs, and blob arrays.

A ``.caffemodel`` is a binary ``NetParameter`` whose layers carry their learned
``blobs``; a ``.binaryproto`` is one ``BlobProto`` (a mean image, say). Reading
never executes code (no pickle): it is protobuf parsing plus checks that each
blob's element count matches its shape, which catches most truncated files.
Legacy V1 caffemodels (``layers { ... }``) are upgraded on load, as Caffe does.

The array helpers keep pycaffe's ``caffe.io`` names (``blobproto_to_array``,
``array_to_blobproto``, ...), so ``minicaffe.io`` can stand in for it.
"""

from __future__ import annotations

import math
import os

import numpy as np
from google.protobuf.message import DecodeError

from .errors import MinicaffeError, WeightsError
from .proto import caffe_pb2
from .proto.upgrade import upgrade_net


# ---------------------------------------------------------------- files

def atomic_write_bytes(path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file, fsyncs and a rename.

    A crash or a power loss mid-write leaves the previous file whole, and a
    failed write (a missing folder, a full disk) is a one-line
    :class:`~minicaffe.atomic.WriteError` (also an OSError): see
    :func:`minicaffe.atomic.atomic_write`, which HDF5 snapshots share.
    """
    from .atomic import atomic_write_bytes as write
    write(path, payload)


def give_default_mode(path) -> None:
    """The permissions ``open(path, "w")`` would have given (mkstemp makes files owner-only, 0600),
    so a snapshot or a saved caffemodel is as readable as the files Caffe writes."""
    from .atomic import give_default_mode as give
    give(path)


def _read_bytes(path, what="cannot read file") -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise WeightsError(path, f"{what}: {exc.strerror or exc}") from None
    except ValueError:          # open() refuses a path with a NUL byte
        raise WeightsError(repr(os.fspath(path))[:200], f"{what}: the path contains a NUL byte") from None


def _parse_binary(path, payload: bytes, message, what: str):
    try:
        message.ParseFromString(payload)
    except (DecodeError, RuntimeError, ValueError) as exc:
        hint = ""
        if _looks_like_text(payload):
            hint = " It looks like text: is it a .prototxt?"
        raise WeightsError(path, f"not a valid {what} (corrupt or truncated file: {exc}).{hint}") from None
    if not message.IsInitialized():     # Caffe's reader refuses these too; writing them back would fail
        missing = message.FindInitializationErrors()
        raise WeightsError(path, f"not a valid {what}: required field(s) missing: {', '.join(missing[:5])}"
                           + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    found = non_utf8_string(message)
    if found is not None:
        field, value = found
        raise WeightsError(path, f"not a valid {what}: '{field}' is not UTF-8 text: {value[:60]!r} "
                           "(corrupt file?)")
    return message


def non_utf8_string(message, where=""):
    """The first string field of ``message`` (sub-messages included) whose bytes are not UTF-8, as
    (its path, e.g. ``layer[2].bottom[0]``, its bytes); None when every string is text.

    protobuf's parser does not refuse such a field of a proto2 message: it hands the raw bytes back instead
    of a str, which no path, layer name or JSON field can use.
    """
    for field, value in message.ListFields():
        name = f"{where}.{field.name}" if where else field.name
        items = list(enumerate(value)) if _is_repeated(field) else [(None, value)]
        if field.type == field.TYPE_STRING:
            for index, item in items:
                if isinstance(item, bytes):
                    return (name if index is None else f"{name}[{index}]"), item
        elif field.type == field.TYPE_MESSAGE and field.message_type.name not in _NO_STRINGS:
            for index, item in items:
                found = non_utf8_string(item, name if index is None else f"{name}[{index}]")
                if found is not None:
                    return found
    return None


_NO_STRINGS = {"BlobProto", "BlobShape"}     # the bulk of a caffemodel, and no string field in them


def _is_repeated(field) -> bool:
    is_repeated = getattr(field, "is_repeated", None)       # protobuf 6+; ``label`` before
    return is_repeated if is_repeated is not None else field.label == field.LABEL_REPEATED


def _looks_like_text(payload: bytes) -> bool:
    head = payload[:512]
    if not head:
        return False
    try:
        head.decode("ascii")
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------- caffemodel

def read_caffemodel(path) -> "caffe_pb2.NetParameter":
    """Read a ``.caffemodel`` (binary NetParameter), upgraded to the current format.

    Raises :class:`WeightsError` naming the file for anything unreadable, corrupt
    or inconsistent (a blob whose values do not fill its shape).
    """
    return read_caffemodel_upgrades(path)[0]


def read_caffemodel_upgrades(path):
    """:func:`read_caffemodel`, also returning the list of legacy upgrades it applied."""
    path = os.fspath(path)
    payload = _read_bytes(path)
    net = _parse_binary(path, payload, caffe_pb2.NetParameter(), "binary NetParameter (.caffemodel)")
    try:
        applied = upgrade_net(net, source=path)
    except MinicaffeError as exc:
        raise WeightsError(path, str(exc)) from None
    if not net.layer:
        raise WeightsError(path, "holds no layers (empty or truncated .caffemodel?)")
    check_net_blobs(net, path)
    return net, applied


def check_net_blobs(net: "caffe_pb2.NetParameter", path) -> None:
    """Refuse a NetParameter whose layer blobs do not hold their shape's values (:func:`check_blob`)."""
    for layer in net.layer:
        for index, blob in enumerate(layer.blobs):
            check_blob(blob, path, f"layer '{layer.name}' blob {index}")


def write_caffemodel(net: "caffe_pb2.NetParameter", path) -> None:
    """Write ``net`` as a ``.caffemodel``, atomically and deterministically.

    Deterministic serialization makes a write-read-write round trip byte-identical.
    """
    atomic_write_bytes(path, net.SerializeToString(deterministic=True))


def caffemodel_arrays(net: "caffe_pb2.NetParameter") -> dict:
    """Map each layer name with blobs to its list of arrays (float32 or float64)."""
    return {layer.name: [blobproto_to_array(blob) for blob in layer.blobs]
            for layer in net.layer if layer.blobs}


# ---------------------------------------------------------------- binaryproto

def read_binaryproto(path) -> np.ndarray:
    """Read a ``.binaryproto`` (one BlobProto, e.g. a mean file) as an array."""
    path = os.fspath(path)
    blob = _parse_binary(path, _read_bytes(path), caffe_pb2.BlobProto(), "BlobProto (.binaryproto)")
    check_blob(blob, path, "blob")
    return blobproto_to_array(blob)


def write_binaryproto(array, path) -> None:
    """Write ``array`` as a ``.binaryproto`` (float32 ``data``, or ``double_data`` for float64)."""
    atomic_write_bytes(path, array_to_blobproto(array).SerializeToString(deterministic=True))


# ---------------------------------------------------------------- blobs

def blob_shape(blob: "caffe_pb2.BlobProto") -> tuple:
    """The shape a BlobProto declares: legacy num/channels/height/width if any is set, else ``shape.dim``."""
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") or blob.HasField("width"):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


_LEGACY_DIMS = ("num", "channels", "height", "width")


def check_blob(blob, path, where, values_required=True) -> tuple:
    """Refuse a BlobProto read from ``path`` whose shape or values are inconsistent; return its shape.

    The one check every BlobProto from a file goes through (caffemodel, binaryproto, solverstate
    history): dims must be non-negative, at most 32 of them, with an element count (a Python int,
    never wrapped) below 2^63; each of data, double_data, diff and double_diff holds that many values
    or none; and, with ``values_required``, data or double_data holds them (Caffe's Blob::FromProto).
    """
    from .blob import MAX_AXES, MAX_COUNT, empty_shape_problem
    if any(blob.HasField(name) for name in _LEGACY_DIMS):
        for name in _LEGACY_DIMS:
            if getattr(blob, name) < 0:
                raise WeightsError(path, f"{where}: '{name}' is {getattr(blob, name)}; a dimension cannot be "
                                   "negative (corrupt file?)")
        shape = tuple(getattr(blob, name) for name in _LEGACY_DIMS)
    else:
        shape = tuple(blob.shape.dim)
        if len(shape) > MAX_AXES:
            raise WeightsError(path, f"{where}: shape has {len(shape)} dims, more than the {MAX_AXES} a blob can "
                               "have (corrupt file?)")
        for index, dim in enumerate(shape):
            if dim < 0:
                raise WeightsError(path, f"{where}: shape.dim[{index}] is {dim} in shape {shape}; a dimension "
                                   "cannot be negative (corrupt file?)")
    expected = math.prod(shape)
    if expected > MAX_COUNT:
        raise WeightsError(path, f"{where}: shape {shape} has {expected} elements, more than the {MAX_COUNT} "
                           "(2^63 - 1) an array can hold (corrupt file?)")
    problem = empty_shape_problem(shape, expected)
    if problem:
        raise WeightsError(path, f"{where}: shape {shape} {problem} (corrupt file?)")
    for field in ("data", "double_data", "diff", "double_diff"):
        values = getattr(blob, field)
        if len(values) and len(values) != expected:
            raise WeightsError(
                path, f"{where}: shape {shape} needs {expected} values but '{field}' holds {len(values)}"
                " (corrupt or truncated file?)")
    if values_required and expected and not len(blob.data) and not len(blob.double_data):
        raise WeightsError(path, f"{where}: shape {shape} needs {expected} values but the blob holds none "
                           "(neither 'data' nor 'double_data'; corrupt or truncated file?)")
    return shape


def blobproto_to_array(blob: "caffe_pb2.BlobProto", return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as an array of its declared shape.

    float64 when the blob stores ``double_data``/``double_diff`` (as Caffe writes
    double nets), float32 otherwise.
    """
    if return_diff:
        values, double_values = blob.diff, blob.double_diff
    else:
        values, double_values = blob.data, blob.double_data
    if len(double_values):
        array = np.array(double_values, dtype=np.float64)
    else:
        array = np.array(values, dtype=np.float32)
    shape = blob_shape(blob)
    if array.size == 0 and math.prod(shape) != 0:
        return np.zeros(shape, dtype=np.float32)
    return array.reshape(shape)


def array_to_blobproto(arr, diff=None) -> "caffe_pb2.BlobProto":
    """An array (and optional diff of the same shape) as a BlobProto with ``shape.dim``.

    float64 arrays go to ``double_data``/``double_diff`` so no precision is lost;
    everything else is stored as float32 ``data``/``diff``, as Caffe's float nets.
    """
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    _fill_values(blob, arr, "data")
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ValueError(f"diff shape {diff.shape} differs from data shape {arr.shape}")
        _fill_values(blob, diff, "diff")
    return blob


def _fill_values(blob, arr, field):
    if arr.dtype == np.float64:
        getattr(blob, "double_" + field).extend(arr.ravel().tolist())
    else:
        getattr(blob, field).extend(arr.astype(np.float32, copy=False).ravel().tolist())


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    """Serialize a list of arrays as a BlobProtoVector (pycaffe's helper)."""
    vector = caffe_pb2.BlobProtoVector()
    vector.blobs.extend(array_to_blobproto(arr) for arr in arraylist)
    return vector.SerializeToString(deterministic=True)


def blobprotovector_str_to_arraylist(payload: bytes) -> list:
    """Parse a serialized BlobProtoVector into a list of arrays (pycaffe's helper)."""
    vector = _parse_binary("<BlobProtoVector>", payload, caffe_pb2.BlobProtoVector(), "BlobProtoVector")
    for index, blob in enumerate(vector.blobs):
        check_blob(blob, "<BlobProtoVector>", f"blob {index}")
    return [blobproto_to_array(blob) for blob in vector.blobs]


def array_to_datum(arr, label=None) -> "caffe_pb2.Datum":
    """A C x H x W array as a Datum: uint8 arrays as raw ``data`` bytes, others as ``float_data``."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"a Datum holds a 3-D (channels, height, width) array, got shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float32).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum: "caffe_pb2.Datum") -> np.ndarray:
    """A Datum's values as a C x H x W array (uint8 for byte data, float32 otherwise)."""
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    return np.array(datum.float_data, dtype=np.float32).reshape(shape)


# pycaffe's image helpers (load_image, resize_image, oversample, Transformer) live in io_images.
from .io_images import Transformer, load_image, oversample, resize_image  # noqa: E402,F401
