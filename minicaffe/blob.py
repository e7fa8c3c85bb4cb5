"""Blob: a named n-d array pair (data, diff), as Caffe's Blob and pycaffe's view of it.

Memory is allocated lazily, on the first read of ``data`` or ``diff``, so a net can
be set up to learn its shapes without allocating (``minicaffe check``). A blob can
share its data or diff with another blob (Split, Flatten, Reshape, shared
parameters): it then reads the other blob's buffer, reshaped to its own shape,
on every access, so the view follows the source even if that is reallocated.

Each buffer is a :class:`SyncedArray` with a host and a device copy, moved
lazily as Caffe's SyncedMemory moves them: ``data``/``diff`` (numpy, host) are
always current when read and mark the host copy as the one to trust;
``gpu_data``/``mutable_gpu_data`` (and the diff ones) do the same for the
device, so consecutive GPU layers never round-trip through the host.
Data layers hand a batch they prefetched onto the device to their tops with
``set_gpu_data`` (Caffe's), which takes the device buffer without a copy.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ShapeError
from .memory import DataNeeded, allocation_allowed

# Caffe refuses blobs past INT_MAX elements; we keep its 32-axis limit too.
MAX_AXES = 32
# The most elements numpy can address (its sizes are int64): a shape past it is refused, never wrapped.
MAX_COUNT = 2 ** 63 - 1
# numpy refuses a shape whose nonzero dimensions times the item size (8 bytes for a float64 net) pass
# 2^63 - 1, even when a zero dimension leaves it empty.
MAX_EXTENT = MAX_COUNT // 8


class Blob:
    """Data and diff arrays of one shape and dtype (float32 by default)."""

    def __init__(self, shape=(), dtype=np.float32, name=None):
        self.name = name
        self.dtype = np.dtype(dtype)
        self._shape = ()
        self._data = None
        self._diff = None
        self._data_source = None   # a Blob whose data this one views
        self._diff_source = None
        self.reshape(*_as_dims(shape))

    # ------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def count(self) -> int:
        return math.prod(self._shape)

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def num_axes(self) -> int:
        return len(self._shape)

    def count_axes(self, start: int, end: int | None = None) -> int:
        """Product of the dims in [start, end) (Caffe's ``count(start, end)``)."""
        return math.prod(self._shape[start:end])

    def canonical_axis(self, axis: int, layer=None) -> int:
        """A possibly negative ``axis`` as an index in [0, ndim) (Caffe's CanonicalAxisIndex)."""
        if not -self.ndim <= axis < max(self.ndim, 1) or (self.ndim == 0):
            raise ShapeError(f"axis {axis} is out of range for a {self.ndim}-D blob of shape {self._shape}",
                             layer=layer)
        return axis + self.ndim if axis < 0 else axis

    def reshape(self, *dims):
        """Give the blob a new shape. Contents are kept when the count is unchanged."""
        dims = _as_dims(dims[0] if len(dims) == 1 and not np.isscalar(dims[0]) else dims)
        if len(dims) > MAX_AXES:
            raise ShapeError(f"a blob has at most {MAX_AXES} axes, got {len(dims)}", layer=self.name)
        if any(d < 0 for d in dims):
            raise ShapeError(f"negative dimension in shape {dims}", layer=self.name)
        check_shape(dims, f"blob '{self.name}': shape" if self.name else "shape")
        if dims == self._shape:
            return
        self._shape = dims
        count = self.count
        # A view stays a view while the counts agree; otherwise it gets memory of its own.
        if self._data_source is not None and self._data_source.count != count:
            self._data_source = None
        if self._diff_source is not None and self._diff_source.count != count:
            self._diff_source = None
        if self._data is not None and self._data.count != count:
            self._data = None
        if self._diff is not None and self._diff.count != count:
            self._diff = None

    def reshape_like(self, other: "Blob"):
        self.reshape(other.shape)

    # legacy 4-D accessors (pycaffe's num/channels/height/width)
    def _legacy_dim(self, index):
        if self.ndim > 4:
            raise ShapeError(f"legacy num/channels/height/width need at most 4 axes; shape is {self._shape}",
                             layer=self.name)
        return self._shape[index] if index < self.ndim else 1

    num = property(lambda self: self._legacy_dim(0))
    channels = property(lambda self: self._legacy_dim(1))
    height = property(lambda self: self._legacy_dim(2))
    width = property(lambda self: self._legacy_dim(3))

    # ------------------------------------------------------------ memory
    def _synced(self, which) -> "SyncedArray":
        """The buffer behind data or diff (a view's is its source's), created on first use."""
        source = self._data_source if which == "data" else self._diff_source
        if source is not None:
            return source._synced(which)
        attribute = "_" + which
        buffer = getattr(self, attribute)
        if buffer is None:
            buffer = SyncedArray(self.count, self.dtype)
            setattr(self, attribute, buffer)
        return buffer

    def _host(self, which, readonly=False):
        buffer = self._synced(which)
        if not buffer.has_host:
            self._allocating(which)
        return buffer.host(readonly=readonly).reshape(self._shape)

    def read_data(self) -> np.ndarray:
        """The data on the host for reading only: the device copy stays current (no copy back later)."""
        return self._host("data", readonly=True)

    def read_diff(self) -> np.ndarray:
        return self._host("diff", readonly=True)

    @property
    def data(self) -> np.ndarray:
        return self._host("data")

    @data.setter
    def data(self, values):
        self._set("data", values)

    @property
    def diff(self) -> np.ndarray:
        return self._host("diff")

    @diff.setter
    def diff(self, values):
        self._set("diff", values)

    def _set(self, which, values):
        values = np.asarray(values)
        if values.shape != self._shape and values.size != self.count:
            raise ShapeError(f"cannot assign {which} of another size", layer=self.name,
                             expected=self._shape, actual=values.shape)
        target = getattr(self, which)
        target[...] = values.reshape(self._shape)

    # device side: flat (count,) device arrays, for kernels
    @property
    def gpu_data(self):
        """The data on the device, for reading (copied there only if the host copy is newer)."""
        return self._synced("data").device(readonly=True)

    @property
    def mutable_gpu_data(self):
        """The data on the device, for writing: the device copy becomes the one to trust."""
        return self._synced("data").device()

    @property
    def gpu_diff(self):
        return self._synced("diff").device(readonly=True)

    @property
    def mutable_gpu_diff(self):
        return self._synced("diff").device()

    def gpu_data_to_overwrite(self):
        """The data on the device, for a kernel that writes every element: like ``mutable_gpu_data`` but a
        newer host copy is not copied over first (it is about to be replaced)."""
        return self._synced("data").device(discard=True)

    def set_gpu_data(self, array, crossed=True):
        """Make the flat device array ``array`` (``count`` elements of the blob's dtype) this blob's data,
        without a copy (Caffe's ``Blob::set_gpu_data``): data layers hand their prefetched batch over this
        way. ``crossed``: the array was copied from the host for this (counted in ``SyncedArray.copies``)."""
        self._synced("data").set_device(array, crossed)

    def upload_data(self, values):
        """Copy host ``values`` (``count`` elements) straight into the device data (one copy to the device;
        the host copy, if any, goes stale): a data layer's batch in GPU mode without a prefetch thread."""
        self._synced("data").upload(values)

    def _allocating(self, which):
        if not allocation_allowed():
            raise DataNeeded(f"blob '{self.name}' {which} was read during shape inference")

    @property
    def allocated(self) -> bool:
        """Whether this blob holds memory of its own (views do not)."""
        return any(buffer is not None and buffer.allocated for buffer in (self._data, self._diff))

    def data_owner(self) -> "Blob":
        """The blob whose memory holds this blob's data (itself unless it is a view)."""
        return self._data_source or self

    def share_data(self, other: "Blob"):
        """Make this blob's data a view of ``other``'s (same count required); allocates nothing."""
        self._check_same_count(other, "data")
        if other is not self:
            self._data_source = other._data_source or other
            self._data = None

    def share_diff(self, other: "Blob"):
        """Make this blob's diff a view of ``other``'s (same count required); allocates nothing."""
        self._check_same_count(other, "diff")
        if other is not self:
            self._diff_source = other._diff_source or other
            self._diff = None

    def _check_same_count(self, other, what):
        if other.count != self.count:
            raise ShapeError(f"cannot share {what}: counts differ", layer=self.name,
                             expected=self._shape, actual=other.shape)

    def shape_string(self) -> str:
        return " ".join(str(d) for d in self._shape) + f" ({self.count})"

    # Shape, dtype and data statistics (minicaffe.display): never allocates, never copies from the GPU.
    def __repr__(self):
        from .display import blob_text
        return blob_text(self)

    def _repr_html_(self):
        from .display import blob_html
        return blob_html(self)


class SyncedArray:
    """A flat buffer with a host copy and a device copy (Caffe's SyncedMemory).

    ``head`` says which copy is current: ``"none"`` (nothing allocated yet),
    ``"host"``, ``"device"`` or ``"synced"`` (both). A copy happens only when
    the side asked for is stale; :attr:`copies` counts them for tests.
    Fresh memory is zero on either side.
    """

    copies = {"to_device": 0, "to_host": 0}

    def __init__(self, count, dtype):
        self.count = int(count)
        self.dtype = np.dtype(dtype)
        self._host = None
        self._device = None
        self.head = "none"

    @property
    def allocated(self) -> bool:
        return self._host is not None or self._device is not None

    @property
    def has_host(self) -> bool:
        return self._host is not None

    def host(self, readonly=False) -> np.ndarray:
        if self.head == "none":
            self._host = np.zeros(self.count, dtype=self.dtype)
        elif self.head == "device":
            if self._host is None:
                self._host = np.empty(self.count, dtype=self.dtype)
            self._device.copy_to_host(self._host)
            SyncedArray.copies["to_host"] += 1
        self.head = "synced" if readonly and self.head in ("device", "synced") else "host"
        return self._host

    def set_device(self, array, crossed=True):
        """Take ``array`` (a flat device array of ``count`` elements) as the device copy, now the current one.

        The host copy, if any, is stale from here on. ``crossed``: the array came from the host for this
        (a data layer's prefetched batch, copied on its own stream): counted as one ``to_device`` copy."""
        if array.ndim != 1 and array.size == self.count:
            array = array.reshape(self.count)
        if array.size != self.count or array.dtype != self.dtype:
            raise ValueError(f"set_device: expected {self.count} elements of {self.dtype}, got {array.size} of "
                             f"{array.dtype}")
        self._device = array
        self.head = "device"
        if crossed:
            SyncedArray.copies["to_device"] += 1

    def upload(self, values):
        """Copy the host array ``values`` (``count`` elements) straight into the device copy, which becomes
        the current one, without going through the host copy (one ``to_device`` copy)."""
        from . import gpu
        values = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1)
        if values.size != self.count:
            raise ValueError(f"upload: expected {self.count} elements, got {values.size}")
        if self._device is None:
            self._device = gpu.to_device(values)
        else:
            self._device.copy_to_device(values)
        self.head = "device"
        SyncedArray.copies["to_device"] += 1

    def device(self, readonly=False, discard=False):
        """The device copy (made current first unless ``discard``: the caller overwrites all of it)."""
        from . import gpu
        if discard and self.head in ("none", "host"):
            if self._device is None:
                self._device = gpu.device_empty(self.count, self.dtype)
        elif self.head == "none":
            self._device = gpu.device_zeros(self.count, self.dtype)
        elif self.head == "host":
            if self._device is None:
                self._device = gpu.to_device(self._host)
            else:
                self._device.copy_to_device(self._host)
            SyncedArray.copies["to_device"] += 1
        self.head = "synced" if readonly and self.head in ("host", "synced") else "device"
        return self._device


def check_shape(dims, what="shape", layer=None) -> int:
    """The element count of ``dims`` (a Python int: never wrapped), refusing negative dims and counts past
    :data:`MAX_COUNT` with a ShapeError that starts with ``what`` (e.g. ``"input_param.shape"``)."""
    dims = tuple(int(d) for d in dims)
    if any(d < 0 for d in dims):
        raise ShapeError(f"{what} {dims} has a negative dimension", layer=layer)
    count = math.prod(dims)
    if count > MAX_COUNT:
        raise ShapeError(f"{what} {dims} has {count} elements, more than the {MAX_COUNT} (2^63 - 1) "
                         "an array can hold", layer=layer)
    problem = empty_shape_problem(dims, count)
    if problem:
        raise ShapeError(f"{what} {dims} {problem}", layer=layer)
    return count


def empty_shape_problem(dims, count) -> str | None:
    """Why numpy cannot make even an empty array of ``dims`` (count 0): its nonzero dimensions multiply past
    :data:`MAX_EXTENT`; None when it can."""
    if count:
        return None
    extent = math.prod(d for d in dims if d)
    if extent > MAX_EXTENT:
        return (f"is empty (a zero dimension), but its other dimensions multiply to {extent}: numpy cannot make "
                f"an array of that shape even empty (at most {MAX_EXTENT}, 2^60 - 1)")
    return None


def _as_dims(shape) -> tuple:
    if hasattr(shape, "dim"):           # a BlobShape message
        shape = shape.dim
    return tuple(int(d) for d in shape)
