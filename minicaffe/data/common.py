"""Errors, optional dependencies and source checks shared by the data layers and tools."""

from __future__ import annotations

import importlib
import os
import warnings

from ..errors import MinicaffeError, MinicaffeWarning
from ..memory import ShapeUnknown, shape_inference_active

#: Which extra installs each optional package.
EXTRAS = {"lmdb": "data", "h5py": "data", "PIL": "data", "plyvel": "leveldb"}
_PACKAGE_NAMES = {"PIL": "Pillow"}


class DataError(MinicaffeError):
    """A dataset that cannot be read: names the layer (or tool), the path and, for a record, its key."""

    def __init__(self, message, layer=None, path=None, key=None):
        self.layer = layer
        self.path = None if path is None else os.fspath(path)
        self.key = key
        prefix = f"layer '{layer}': " if layer is not None else ""
        super().__init__(prefix + message)


_REQUIRED = object()


def cursor_int(state, key, layer=None, high=None, default=_REQUIRED, allow_none=False):
    """Field ``key`` of a saved reading position (a data cursor from a solverstate), checked: an integer in
    [0, ``high``) (``high`` None: below 2^63), or None where ``allow_none``; ``default`` when absent.
    Anything else is a DataError naming the layer, the field and the value."""
    if not isinstance(state, dict):
        raise DataError(f"the saved data cursor is {state!r:.80}, not an object", layer=layer)
    if key not in state:
        if default is not _REQUIRED:
            return default
        raise DataError(f"the saved data cursor has no '{key}' (it has {sorted(map(str, state))})", layer=layer)
    value = state[key]
    if value is None and allow_none:
        return None
    limit = 2 ** 63 if high is None else high
    if type(value) is not int or not 0 <= value < limit:
        raise DataError(f"the saved data cursor's '{key}' is {value!r:.80}; expected an integer in [0, "
                        f"{limit if high is not None else '2^63'})", layer=layer)
    return value


class MissingDependency(DataError):
    """An optional package a net or tool needs is not installed: names the extra that installs it."""


def optional_import(module: str, purpose: str, layer=None):
    """Import ``module`` or raise :class:`MissingDependency` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        root = module.split(".")[0]
        extra = EXTRAS.get(root, "data")
        package = _PACKAGE_NAMES.get(root, root)
        raise MissingDependency(f"{purpose} needs the '{package}' package, which is not installed: "
                                f"pip install 'minicaffe[{extra}]'", layer=layer) from None


def require_path(path, what: str, layer=None, field=None) -> str:
    """``path`` as a string if it exists; otherwise why not.

    Under shape inference (``minicaffe check``) an absent path raises
    :class:`~minicaffe.memory.ShapeUnknown` so the net's structure is still
    checked; running a net, it is a :class:`DataError` naming the layer and the path.
    """
    path = os.fspath(path) if path is not None else ""
    where = f" ({field})" if field else ""
    if not path:
        raise DataError(f"no {what} given{where}", layer=layer)
    if os.path.exists(path):
        return path
    message = f"{what} '{path}'{where} does not exist"
    if shape_inference_active():
        raise ShapeUnknown(message)
    raise DataError(message, layer=layer, path=path)


def unknown_or_error(message, layer=None, path=None):
    """ShapeUnknown during ``check`` (the net cannot be shaped here), else a DataError."""
    if shape_inference_active():
        return ShapeUnknown(message)
    return DataError(message, layer=layer, path=path)


_warned = set()


def warn_once(key, message):
    """A MinicaffeWarning shown once per ``key`` in this process."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, MinicaffeWarning, stacklevel=3)


def warn_deprecated_fields(layer, param, param_name, fields):
    """Warn (once) about legacy transformation fields a current-format net sets but Caffe ignores."""
    given = [name for name in fields if param.HasField(name)]
    if given:
        warn_once((layer.name, param_name), f"layer '{layer.name}': {param_name} "
                  f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} ignored, as in Caffe; "
                  "set them in transform_param")
