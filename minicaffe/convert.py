"""Upgrading whole files: legacy nets and solvers (text) and caffemodels (binary)."""

from __future__ import annotations

import os

from .errors import PrototxtError
from .io import atomic_write_bytes, read_caffemodel_upgrades, write_caffemodel
from .proto import caffe_pb2
from .proto.text import _read_text, parse_text, to_text
from .proto.upgrade import upgrade_net, upgrade_solver


def upgrade_file(source, target, kind="auto"):
    """Upgrade the net, solver or caffemodel at ``source`` and write it to ``target``.

    ``kind`` is ``"net"``, ``"solver"`` or ``"auto"``. Returns (the upgrades
    applied, what the file held: "net", "solver" or "caffemodel").
    """
    source = os.fspath(source)
    if kind == "auto" and _is_binary(source):
        net, applied = read_caffemodel_upgrades(source)
        write_caffemodel(net, target)
        return applied, "caffemodel"
    text = _read_text(source)          # a missing, unreadable or binary SOURCE: a PrototxtError naming it
    if kind == "auto":
        kind = _text_kind(source, text)
    if kind == "net":
        message = parse_text(text, caffe_pb2.NetParameter(), source)
        applied = upgrade_net(message, source=source)
    else:
        message = parse_text(text, caffe_pb2.SolverParameter(), source)
        applied = upgrade_solver(message, source=source)
    if not message.ListFields():
        raise PrototxtError(source, None, None, f"holds no {kind} fields (an empty file?): nothing to upgrade")
    if kind == "net" and not message.layer:
        raise PrototxtError(source, None, None, "defines no layers (an empty net): nothing to upgrade")
    atomic_write_bytes(target, to_text(message).encode("utf-8"))
    return applied, kind


def _is_binary(path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False  # let the text reader report the missing file
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the 4096-byte boundary is still text.
        return exc.start < len(head) - 4
    return False


def _text_kind(path, text) -> str:
    """Tell a net from a solver: whichever message the text parses as (the net when both do)."""
    errors = []
    for kind, message in (("net", caffe_pb2.NetParameter()), ("solver", caffe_pb2.SolverParameter())):
        try:
            parse_text(text, message, path)
            return kind
        except PrototxtError as exc:
            errors.append(exc)
    # Neither parses: report the error of the reading that got further into the file.
    raise max(errors, key=lambda exc: (exc.line or 0, exc.column or 0))
