"""Blob: shape, lazy memory, reshape, legacy accessors, sharing."""

import numpy as np
import pytest

from minicaffe.blob import Blob
from minicaffe.errors import ShapeError


def test_shape_count_and_legacy_dims():
    blob = Blob((2, 3, 4, 5))
    assert blob.shape == (2, 3, 4, 5) and isinstance(blob.shape, tuple)
    assert blob.count == 120 and blob.count_axes(1) == 60 and blob.count_axes(1, 3) == 12
    assert (blob.num, blob.channels, blob.height, blob.width) == (2, 3, 4, 5)
    short = Blob((7, 2))
    assert (short.num, short.channels, short.height, short.width) == (7, 2, 1, 1)
    with pytest.raises(ShapeError, match="at most 4 axes"):
        Blob((1, 2, 3, 4, 5)).num
    assert Blob(()).count == 1                              # a scalar blob, as a loss top


def test_memory_is_lazy_and_float32_by_default():
    blob = Blob((1000, 1000))
    assert not blob.allocated
    assert blob.data.dtype == np.float32 and blob.allocated
    assert Blob((2,), dtype=np.float64).diff.dtype == np.float64


def test_reshape_keeps_contents_when_count_is_unchanged():
    blob = Blob((2, 3))
    blob.data[...] = np.arange(6).reshape(2, 3)
    blob.reshape(3, 2)
    assert blob.data.tolist() == [[0, 1], [2, 3], [4, 5]]
    blob.reshape((6,))
    assert blob.shape == (6,)
    blob.reshape(4, 4)
    assert blob.data.shape == (4, 4)
    with pytest.raises(ShapeError, match="negative"):
        blob.reshape(2, -1)


def test_canonical_axis():
    blob = Blob((2, 3, 4))
    assert blob.canonical_axis(-1) == 2 and blob.canonical_axis(1) == 1
    with pytest.raises(ShapeError, match="axis 3 is out of range"):
        blob.canonical_axis(3, layer="l")
    with pytest.raises(ShapeError, match="axis -4"):
        blob.canonical_axis(-4)


def test_shared_data_is_a_view_that_follows_its_source():
    source = Blob((2, 3))
    view = Blob((6,))
    view.share_data(source)
    view.share_diff(source)
    assert not view.allocated
    source.data[...] = 1.5
    assert view.data.tolist() == [1.5] * 6
    view.diff[...] = 2.0
    assert source.diff.tolist() == [[2.0] * 3] * 2
    # the source gets new memory: the view still reads it
    source.reshape(3, 2)
    source.data[...] = 7
    assert view.data.tolist() == [7] * 6
    with pytest.raises(ShapeError, match="counts differ"):
        Blob((5,)).share_data(source)


def test_assigning_data():
    blob = Blob((2, 2))
    blob.data = [[1, 2], [3, 4]]
    assert blob.data.tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ShapeError, match=r"expected \(2, 2\), got \(3\)"):
        blob.data = [1, 2, 3]
