"""Shape inference without memory: the switch behind ``minicaffe check``.

Inside :func:`shapes_only`, nets are set up to learn every blob's shape, but no
blob memory is allocated: fillers and loss-weight seeding are skipped, and a
layer that reads ``data``/``diff`` during setup raises :class:`DataNeeded`, so
the caller can report that layer's shapes as unknown.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from .errors import MinicaffeError

_state = threading.local()


class DataNeeded(MinicaffeError):
    """A layer needed blob values to know its shapes (during shape inference)."""


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
