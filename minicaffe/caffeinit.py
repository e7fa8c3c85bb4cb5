"""``.caffeinit``: Python layers registered by name (seed 001's registration file).

A ``.caffeinit`` holds one directive per line::

    # comments and blank lines are ignored
    python_layer NAME CLASS FILE

which makes ``python_param { module: "NAME" layer: "CLASS" }`` load ``CLASS``
from ``FILE`` (relative to the ``.caffeinit``'s folder, or absolute; it may
contain spaces), and lets ``type: "NAME"`` name the layer directly. A ``#``
after whitespace starts a comment.

Two files are read, when they exist: ``.caffeinit`` in the working directory
and ``~/.caffeinit``. The working directory's entry wins when both name the
same ``NAME``. Files are read on every lookup (they are a few lines), so an
edit takes effect on the next net built. A malformed line is a
:class:`CaffeinitError` naming the file and line; a ``FILE`` that does not
exist is reported only when a net uses that entry.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import MinicaffeError

FILE_NAME = ".caffeinit"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class CaffeinitError(MinicaffeError):
    """A ``.caffeinit`` line that cannot be read: ``path:line: message``."""

    def __init__(self, path, line, message):
        self.path = str(path)
        self.line = line
        super().__init__(f"{self.path}:{line}: {message}")


@dataclass(frozen=True)
class PythonLayerEntry:
    """One ``python_layer NAME CLASS FILE`` line."""

    name: str
    class_name: str
    file: str          # absolute path
    source: str        # the .caffeinit it came from
    line: int

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def caffeinit_paths() -> list:
    """The ``.caffeinit`` files consulted, most important first (working directory, then home)."""
    candidates = [os.path.join(os.getcwd(), FILE_NAME), os.path.join(os.path.expanduser("~"), FILE_NAME)]
    paths, seen = [], set()
    for path in candidates:
        real = os.path.realpath(path)
        if real not in seen and os.path.isfile(path):
            seen.add(real)
            paths.append(os.path.abspath(path))
    return paths


def read_caffeinit(path) -> dict:
    """The entries of one ``.caffeinit``, ``{NAME: PythonLayerEntry}``; CaffeinitError if malformed."""
    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaffeinitError(path, 0, f"cannot read: {exc}") from None
    folder = os.path.dirname(path)
    entries = {}
    for number, raw in enumerate(lines, start=1):
        text = re.split(r"(?:^|\s)#", raw, maxsplit=1)[0].strip()
        if not text:
            continue
        fields = text.split(None, 3)
        if fields[0] != "python_layer":
            raise CaffeinitError(path, number, f"unknown directive '{fields[0]}': the only one is "
                                 "'python_layer NAME CLASS FILE'")
        if len(fields) != 4:
            raise CaffeinitError(path, number, f"'python_layer' takes NAME CLASS FILE, got {len(fields) - 1} "
                                 f"field(s): {text!r}")
        _, name, class_name, file = fields
        if not _NAME.match(name):
            raise CaffeinitError(path, number, f"NAME {name!r} is not a layer type or module name")
        if not _IDENTIFIER.match(class_name):
            raise CaffeinitError(path, number, f"CLASS {class_name!r} is not a Python class name")
        if name in entries:
            raise CaffeinitError(path, number, f"'{name}' is registered twice (first on line {entries[name].line})")
        file = os.path.expanduser(file)
        if not os.path.isabs(file):
            file = os.path.join(folder, file)
        entries[name] = PythonLayerEntry(name, class_name, os.path.normpath(file), path, number)
    return entries


def python_layers() -> dict:
    """Every registered Python layer, ``{NAME: PythonLayerEntry}`` (working directory over home)."""
    merged = {}
    for path in reversed(caffeinit_paths()):
        merged.update(read_caffeinit(path))
    return merged


def find_python_layer(name: str):
    """The entry registering ``name``, or None."""
    if not name:
        return None
    return python_layers().get(name)


def python_class_name(layer_param):
    """The class name a Python layer loads, or None when ``layer_param`` is no Python layer.

    ``type: "Python"`` gives ``python_param.layer``; a type that is no built-in
    but is registered in a ``.caffeinit`` gives ``python_param.layer`` if set,
    else the registered CLASS.
    """
    if layer_param.type == "Python":
        return layer_param.python_param.layer or None
    from .registry import known_types
    if layer_param.type in known_types():
        return None
    entry = find_python_layer(layer_param.type)
    if entry is None:
        return None
    return layer_param.python_param.layer or entry.class_name


def is_python_loss_class(class_name) -> bool:
    """The naming rule for Python loss layers: a class name ending in ``Loss`` or ``LossLayer``."""
    return bool(class_name) and (class_name.endswith("Loss") or class_name.endswith("LossLayer"))
