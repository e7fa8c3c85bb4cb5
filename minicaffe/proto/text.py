"""Reading ``.prototxt`` nets and solvers, upgraded to the current format.

Caffe reads text files with protobuf's text parser and then upgrades legacy
formats in place (``ReadNetParamsFromTextFileOrDie``). minicaffe does the same,
but turns every failure into a :class:`~minicaffe.errors.PrototxtError` that
names ``file:line:column`` and the text found there, instead of aborting.
"""

from __future__ import annotations

import difflib
import os
import re

from google.protobuf import text_format

from ..errors import PrototxtError
from . import caffe_pb2
from .upgrade import upgrade_net, upgrade_solver

# protobuf prefixes its messages with "LINE:COLUMN : "; we report the position
# ourselves, with the file name in front.
_POSITION_PREFIX = re.compile(r"^\s*\d+:\d+\s*:\s*")
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')


def parse_text(text: str, message, source: str = "<string>"):
    """Parse protobuf text ``text`` into the (cleared) ``message``; return it.

    ``source`` names the text in errors (a path, or ``<string>``).
    """
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        reason = _POSITION_PREFIX.sub("", str(exc)) + _field_suggestion(str(exc))
        snippet = _line_at(text, line)
        if snippet and snippet in reason:
            snippet = None  # protobuf already quoted the line
        raise PrototxtError(source, line, column, reason, snippet) from None
    return message


def _field_suggestion(message: str) -> str:
    """For an unknown field, name the closest fields the message does have."""
    match = _UNKNOWN_FIELD.search(message)
    if not match:
        return ""
    type_name, field_name = match.groups()
    try:
        descriptor = caffe_pb2.DESCRIPTOR.pool.FindMessageTypeByName(type_name)
    except KeyError:
        return ""
    close = difflib.get_close_matches(field_name, [f.name for f in descriptor.fields], n=3, cutoff=0.6)
    return (" Did you mean " + " or ".join(f'"{name}"' for name in close) + "?") if close else ""


def read_text_file(path, message):
    """Read the text-format file at ``path`` into ``message`` (no upgrade)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise PrototxtError(path, None, None, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        hint = " (is this a binary .caffemodel?)" if b"\x00" in raw[:4096] else ""
        raise PrototxtError(path, line, column, "not UTF-8 text" + hint) from None
    return parse_text(text, message, path)


def read_net(path) -> "caffe_pb2.NetParameter":
    """Read a net ``.prototxt`` and upgrade V0/V1/legacy-input forms, as Caffe does."""
    net = read_text_file(path, caffe_pb2.NetParameter())
    upgrade_net(net, source=os.fspath(path))
    return net


def read_solver(path) -> "caffe_pb2.SolverParameter":
    """Read a solver ``.prototxt`` and upgrade the legacy ``solver_type`` enum."""
    solver = read_text_file(path, caffe_pb2.SolverParameter())
    upgrade_solver(solver, source=os.fspath(path))
    return solver


def parse_net(text: str, source: str = "<string>") -> "caffe_pb2.NetParameter":
    """Parse and upgrade a net given as prototxt text (for notebooks and tests)."""
    net = parse_text(text, caffe_pb2.NetParameter(), source)
    upgrade_net(net, source=source)
    return net


def parse_solver(text: str, source: str = "<string>") -> "caffe_pb2.SolverParameter":
    """Parse and upgrade a solver given as prototxt text."""
    solver = parse_text(text, caffe_pb2.SolverParameter(), source)
    upgrade_solver(solver, source=source)
    return solver


def to_text(message) -> str:
    """Print a message as prototxt (Caffe's ``upgrade_net_proto_text`` layout)."""
    return text_format.MessageToString(message)


def _line_at(text: str, line):
    if not line:
        return None
    lines = text.splitlines()
    if 1 <= line <= len(lines):
        return lines[line - 1].strip() or None
    return None
