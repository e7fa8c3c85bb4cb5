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
