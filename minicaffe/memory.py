"""Shape inference without memory: the switch behind ``minicaffe check``.

Inside :func:`shapes_only`, nets are set up to learn every blob's shape, but no
blob memory is allocated: fillers and loss-weight seeding are skipped, and a
layer that reads ``data``/``diff`` during setup raises :class:`DataNeeded`, so
the caller can report that layer's shapes as unknown.

Layers raise :class:`ShapeUnknown` themselves when they cannot know their top
shapes without something that is absent (a data source, a Python module): the
net then reports ``?`` for their tops and everything downstream, with the
reason, while the rest of the structure is still checked. Outside shape
inference the same situation is a plain error, since the net cannot run.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from .errors import MinicaffeError

_state = threading.local()


class ShapeUnknown(MinicaffeError):
    """A layer cannot know its top shapes here; the message says why (shown by ``check``)."""


class DataNeeded(ShapeUnknown):
    """A layer needed blob values to know its shapes (during shape inference)."""


def shape_inference_active() -> bool:
    """True inside :func:`shapes_only` (``minicaffe check``): layers may then raise ShapeUnknown."""
    return not allocation_allowed()


def allocation_allowed() -> bool:
    return not getattr(_state, "shapes_only", False)


@contextmanager
def shapes_only():
    previous = getattr(_state, "shapes_only", False)
    _state.shapes_only = True
    try:
        yield
    finally:
        _state.shapes_only = previous


@contextmanager
def memory_allowed():
    """Inside :func:`shapes_only`, let one block use blob memory after all (zero-filled).

    For code that expects arrays, not shapes: a Python layer's ``setup`` and
    ``reshape`` (``np.zeros_like(bottom[0].data)``) run in it under ``check``.
    """
    previous = getattr(_state, "shapes_only", False)
    _state.shapes_only = False
    try:
        yield
    finally:
        _state.shapes_only = previous
