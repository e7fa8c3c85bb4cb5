"""Blob: a named n-d array pair (data, diff), as Caffe's Blob and pycaffe's view of it.

Memory is allocated lazily, on the first read of ``data`` or ``diff``, so a net can
be set up to learn its shapes without allocating (``minicaffe check``). A blob can
share its data or diff with another blob (Split, Flatten, Reshape, shared
parameters): it then reads the other blob's buffer, reshaped to its own shape,
on every access, so the view follows the source even if that is reallocated.
"""

from __future__ import annotations

import numpy as np

from .errors import ShapeError
from .memory import DataNeeded, allocation_allowed

# Caffe refuses blobs past INT_MAX elements; we keep its 32-axis limit too.
MAX_AXES = 32


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
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def num_axes(self) -> int:
        return len(self._shape)

    def count_axes(self, start: int, end: int | None = None) -> int:
        """Product of the dims in [start, end) (Caffe's ``count(start, end)``)."""
        return int(np.prod(self._shape[start:end], dtype=np.int64))

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
        if dims == self._shape:
            return
        self._shape = dims
        count = self.count
        # A view stays a view while the counts agree; otherwise it gets memory of its own.
        if self._data_source is not None and self._data_source.count != count:
            self._data_source = None
        if self._diff_source is not None and self._diff_source.count != count:
            self._diff_source = None
        self._data = self._data.reshape(dims) if self._data is not None and self._data.size == count else None
        self._diff = self._diff.reshape(dims) if self._diff is not None and self._diff.size == count else None

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
    @property
    def data(self) -> np.ndarray:
        if self._data_source is not None:
            return self._data_source.data.reshape(self._shape)
        if self._data is None:
            self._allocating("data")
            self._data = np.zeros(self._shape, dtype=self.dtype)
        return self._data

    @data.setter
    def data(self, values):
        self._set("data", values)

    @property
    def diff(self) -> np.ndarray:
        if self._diff_source is not None:
            return self._diff_source.diff.reshape(self._shape)
        if self._diff is None:
            self._allocating("diff")
            self._diff = np.zeros(self._shape, dtype=self.dtype)
        return self._diff

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

    def _allocating(self, which):
        if not allocation_allowed():
            raise DataNeeded(f"blob '{self.name}' {which} was read during shape inference")

    @property
    def allocated(self) -> bool:
        """Whether this blob holds memory of its own (views do not)."""
        return self._data is not None or self._diff is not None

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

    def __repr__(self):
        name = f" '{self.name}'" if self.name else ""
        return f"<Blob{name} shape={self._shape} dtype={self.dtype.name}>"


def _as_dims(shape) -> tuple:
    if hasattr(shape, "dim"):           # a BlobShape message
        shape = shape.dim
    return tuple(int(d) for d in shape)
