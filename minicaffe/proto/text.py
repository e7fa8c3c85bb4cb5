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

from ..errors import QUOTE_LIMIT, GraphError, PrototxtError, excerpt
from ..fork_names import FORK_OF_FIELD
from ..plugins import extension_text_name, load_plugins, plain_field_names, plugin_field_names
from . import caffe_pb2
from .layer_blocks import blank_out, block_at, layer_blocks, offset_of
from .upgrade import upgrade_net, upgrade_solver

# protobuf prefixes its messages with "LINE:COLUMN : "; we report the position
# ourselves, with the file name in front.
_POSITION_PREFIX = re.compile(r"^\s*\d+:\d+\s*:\s*")
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')


def parse_text(text: str, message, source: str = "<string>"):
    """Parse protobuf text ``text`` into the (cleared) ``message``; return it.

    ``source`` names the text in errors (a path, or ``<string>``). Plugin
    fields of LayerParameter (:mod:`minicaffe.plugins`) are read under their
    plain names, as the forks' own files write them.
    """
    load_plugins()
    while True:
        try:
            text_format.Parse(text, message)
            return message
        except text_format.ParseError as exc:
            rewritten = _with_plugin_field_named(text, exc)
            if rewritten is None:
                raise _prototxt_error(text, exc, source) from None
            text = rewritten
            message.Clear()   # Parse merges into what the failed attempt had read


def _with_plugin_field_named(text, exc):
    """``text`` with the plugin field ``exc`` stumbled on spelled as protobuf's extension syntax, or None."""
    match = _UNKNOWN_FIELD.search(str(exc))
    if not match or match.group(1) != "caffe.LayerParameter" or match.group(2) not in plugin_field_names():
        return None
    field_name = match.group(2)
    offset = offset_of(text, exc.GetLine(), exc.GetColumn())
    if text[offset:offset + len(field_name)] != field_name:
        return None
    return text[:offset] + extension_text_name(field_name) + text[offset + len(field_name):]


def _prototxt_error(text, exc, source):
    line, column = exc.GetLine(), exc.GetColumn()
    reason = _POSITION_PREFIX.sub("", str(exc))
    match = _UNKNOWN_FIELD.search(reason)
    if match:
        reason = _unknown_field_reason(text, line, column, *match.groups(), reason)
    snippet = _line_at(text, line, column)
    if snippet and snippet in reason:
        snippet = None  # protobuf already quoted the line
    return PrototxtError(source, line, column, _shorten_tokens(reason), snippet)


def _unknown_field_reason(text, line, column, type_name, field_name, reason):
    """An unknown field's error: the layer it is in, then a near-miss spelling or the fork it is from."""
    layer = _layer_described_at(text, line, column)
    in_layer = f"{layer}: " if layer else ""
    try:
        descriptor = caffe_pb2.DESCRIPTOR.pool.FindMessageTypeByName(type_name)
        names = [field.name for field in descriptor.fields]
    except KeyError:
        names = []
    if type_name in ("caffe.LayerParameter", "caffe.V1LayerParameter"):
        # A layer field minicaffe lacks is nearly always a fork's layer, not a typo: offer only a
        # very close name (norm_param is not "transform_param"), and none for a known fork's field.
        fork = FORK_OF_FIELD.get(field_name)
        close = [] if fork else difflib.get_close_matches(field_name, names, n=1, cutoff=0.85)
        if close:
            return f'{in_layer}{reason} Did you mean "{close[0]}"?'
        if not field_name.endswith("_param"):
            return in_layer + reason
        origin = (f"it comes from {fork}, a Caffe fork whose layer minicaffe does not implement"
                  if fork else "it comes from a Caffe fork minicaffe does not know")
        return (f'{in_layer}field "{field_name}" is not in minicaffe\'s schema (BVLC Caffe\'s and the forks '
                f"listed in docs/compatibility.md): {origin}. Run the net up to a layer before this one with "
                "`--end LAYER` (`Net(..., end=LAYER)`), or add the field and its layer from a plugin")
    close = difflib.get_close_matches(field_name, names, n=3, cutoff=0.6)
    if close:
        return in_layer + reason + " Did you mean " + " or ".join(f'"{name}"' for name in close) + "?"
    return f"{in_layer}{reason} (a field of a Caffe fork minicaffe does not know?)"


def _layer_described_at(text, line, column):
    """``layer "NAME" (type "TYPE")`` for the layer block around line:column, or None."""
    if not line:
        return None
    _, block = block_at(layer_blocks(text), offset_of(text, line, column or 1))
    if block is None:
        return None
    layer = _lenient_layer(text, block)
    if layer is None:
        return None
    kind = layer.type if isinstance(layer.type, str) else caffe_pb2.V1LayerParameter.LayerType.Name(layer.type)
    return f'layer "{layer.name}" (type "{kind}")'


def _lenient_layer(text, block):
    """The block's LayerParameter (V1LayerParameter for ``layers``) with unknown fields skipped, or None."""
    layer = caffe_pb2.LayerParameter() if block.keyword == "layer" else caffe_pb2.V1LayerParameter()
    try:
        text_format.Parse(_block_body(text, block), layer, allow_unknown_field=True)
    except text_format.ParseError:
        return None
    return layer


def _block_body(text, block):
    """The text between a layer block's brackets."""
    opening = min(index for index in (text.find("{", block.start, block.end), text.find("<", block.start, block.end))
                  if index >= 0)
    return text[opening + 1:block.end - 1]


def read_text_file(path, message):
    """Read the text-format file at ``path`` into ``message`` (no upgrade)."""
    return parse_text(_read_text(path), message, os.fspath(path))


def _read_text(path) -> str:
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise PrototxtError(path, None, None, f"cannot read file: {exc.strerror or exc}") from None
    except ValueError:          # open() refuses a path with a NUL byte
        raise PrototxtError(repr(path)[:200], None, None, "cannot read file: the path contains a NUL byte") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        hint = " (is this a binary .caffemodel?)" if b"\x00" in raw[:4096] else ""
        raise PrototxtError(path, line, column, "not UTF-8 text" + hint) from None
    return text


def read_net(path) -> "caffe_pb2.NetParameter":
    """Read a net ``.prototxt`` and upgrade V0/V1/legacy-input forms, as Caffe does.

    A file that defines no layers (an empty file, or a solver's fields only) is a PrototxtError:
    Caffe would build a net that does nothing, which is never what was meant.
    """
    net = read_text_file(path, caffe_pb2.NetParameter())
    upgrade_net(net, source=os.fspath(path))
    _refuse_empty_net(net, path)
    return net


def _refuse_empty_net(net, path):
    if not net.layer:
        raise PrototxtError(os.fspath(path), None, None, "defines no layers (an empty net); is it the right file?")


def read_net_until(path, end: str):
    """Read a net ``.prototxt`` up to and including the layer named ``end``: (NetParameter, notes).

    The layers after ``end`` (in file order, which is the order Caffe runs
    them in) are left out before the text is parsed, so a layer type or field
    of a Caffe fork that minicaffe does not know only stops the net when it
    comes before ``end``. ``notes`` says what was left out, naming each unknown
    layer type or field it skipped.
    """
    path = os.fspath(path)
    text = _read_text(path)
    load_plugins()
    blocks = layer_blocks(text)
    layers = [_lenient_layer(text, block) for block in blocks]
    names = [layer.name if layer is not None else None for layer in layers]
    if end not in names:
        known = ", ".join(f"'{name}'" for name in names if name) or "none"
        raise GraphError(f"--end: {path} has no layer named '{end}' (its layers: {known})", layer=end)
    last = names.index(end)
    from ..registry import registered_types
    known_types = set(registered_types())
    notes = []
    after = blocks[last + 1:]
    for block, layer in zip(after, layers[last + 1:]):
        problem = _unknown_in_block(text, block, layer, known_types)
        if problem:
            notes.append(f"skipped layer '{layer.name if layer else '?'}' after '{end}': {problem}")
    if after:
        notes.insert(0, f"--end {end}: {len(after)} layer{'s' if len(after) != 1 else ''} after it "
                        f"left out ({', '.join(repr(name) for name in names[last + 1:last + 4] if name)}"
                        f"{', ...' if len(after) > 3 else ''})")
    for block in reversed(after):
        text = blank_out(text, block.start, block.end)
    net = parse_text(text, caffe_pb2.NetParameter(), path)
    upgrade_net(net, source=path)
    _refuse_empty_net(net, path)
    return net, notes


def _unknown_in_block(text, block, layer, known_types):
    """What minicaffe does not know in one layer block (a field, a type), or None."""
    if layer is None:
        return "its text does not parse"
    strict = caffe_pb2.LayerParameter() if block.keyword == "layer" else caffe_pb2.V1LayerParameter()
    try:
        parse_text(_block_body(text, block), strict, "<layer>")
    except PrototxtError as exc:
        match = _UNKNOWN_FIELD.search(exc.reason) or re.search(r'field "(\w+)"', exc.reason)
        field = match.groups()[-1] if match else "?"
        return f"field '{field}' unknown to minicaffe (type '{layer.type}')"
    if block.keyword == "layer" and layer.type and layer.type not in known_types:
        from ..fork_names import FORK_OF_TYPE
        fork = FORK_OF_TYPE.get(layer.type)
        return f"type '{layer.type}' unknown to minicaffe" + (f" (from {fork})" if fork else "")
    return None


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
    return plain_field_names(text_format.MessageToString(message))


def _line_at(text: str, line, column=None):
    """The text of line ``line`` (1-based) for an error message: at most about 200 characters, around
    ``column`` when the line is longer (a megabyte-long line is never quoted whole)."""
    if not line:
        return None
    start = 0
    for _ in range(line - 1):       # no splitlines(): a huge file is not copied line by line
        start = text.find("\n", start) + 1
        if start == 0:
            return None
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    if start >= len(text) and line > 1:
        return None
    raw = text[start:end]
    indent = len(raw) - len(raw.lstrip())
    return excerpt(raw.strip(), column - indent if column and column > indent else None) or None


def _shorten_tokens(reason: str) -> str:
    """A parser message with each run of over QUOTE_LIMIT characters without spaces (a quoted token or
    name from the file) cut to QUOTE_LIMIT, and at most 1000 characters in all."""
    reason = re.sub(r"\S{%d,}" % (QUOTE_LIMIT + 1), lambda match: excerpt(match.group(0)), reason)
    return excerpt(reason, limit=1000)
