"""Mutations for the fuzz harness: token-level edits of prototxt text, byte edits of binary files, and
field-level edits of protobuf messages (through reflection, so every message type gets them).

Each mutation is a small tuple of integers that hypothesis draws (:func:`edits`): ``(op, a, b)``, where
``a`` picks the place (modulo the places there are) and ``b`` the new value. Applying them is
deterministic, so a failing example shrinks to the fewest, simplest edits and replays from its seed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st

from minicaffe.proto import caffe_pb2

# ---------------------------------------------------------------- values

#: What a number in a prototxt becomes: the extremes of each type a field can have, and small values.
NUMBERS = ["0", "-1", "1", "2", "3", "-2", "2147483647", "2147483648", "-2147483648", "4294967295",
           "4294967296", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
           "18446744073709551616", "1e308", "-1e308", "1e-45", "1e-310", "nan", "-nan", "inf", "-inf",
           "0.5", "-0.5", "1e38", "3.4e39", "65536", "100000", "-0", "0.0", "7", "1.5", "1e9"]

#: Strings a quoted value may become besides the ones already in the file (all relative or empty: the
#: harness runs in a temporary folder, and nothing it writes may land anywhere else).
STRINGS = ["", "x", "data", "label", "loss", "gaussian", "xavier", "msra", "uniform", "constant", "bilinear",
           "positive_unitball", "sparse", "fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid",
           "SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam", "nonexistent.caffemodel",
           "\\000", "a\\nb", "missing_folder/file", ".", "..", "fuzz_out"]


def enum_names() -> list:
    """Every enum value name in caffe.proto (MAX, TEST, LMDB, CAFFE...), the identifiers a value may take."""
    names = set()

    def walk(descriptor):
        for enum in descriptor.enum_types:
            names.update(value.name for value in enum.values)
        for nested in descriptor.nested_types:
            walk(nested)
    for message in caffe_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(message)
    for enum in caffe_pb2.DESCRIPTOR.enum_types_by_name.values():
        names.update(value.name for value in enum.values)
    return sorted(names) + ["true", "false", "True", "nan", "inf", "UNKNOWN_VALUE"]


ENUMS = enum_names()

#: Layer-level fields a mutation may insert into a block.
SNIPPETS = ['propagate_down: false', 'propagate_down: true', 'loss_weight: 1', 'loss_weight: -1',
            'param { name: "shared" }', 'param { lr_mult: 0 }', 'param { name: "shared" lr_mult: 2 }',
            'include { phase: TEST }', 'include { phase: TRAIN }', 'exclude { stage: "s" }',
            'include { min_level: 1 }', 'bottom: "data"', 'top: "data"', 'top: "extra"', 'bottom: "label"',
            'phase: TRAIN', 'axis: -1', 'axis: 3', 'engine: CAFFE', 'force_backward: true',
            'debug_info: true', 'blobs { shape { dim: 2 } data: 1 data: 2 }', 'input: "extra"',
            'input_dim: 1', 'input_shape { dim: 1 dim: 2 }', 'state { phase: TEST }',
            'shape { dim: 0 }', 'shape { dim: 2 dim: -1 }', 'num_output: 0', 'kernel_size: 0', 'stride: 0',
            'pad: 9', 'dilation: 0', 'group: 3', 'bias_term: false', 'transpose: true']


def edits(max_size=6):
    """Hypothesis strategy: a list of (op, a, b) edits."""
    return st.lists(st.tuples(st.integers(0, 255), st.integers(0, 1 << 20), st.integers(0, 1 << 20)),
                    min_size=1, max_size=max_size)


# ---------------------------------------------------------------- prototxt text

_TOKEN = re.compile(r'''
    (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}:<>\[\],;])
  | (?P<space>\s+)
  | (?P<other>.)
''', re.VERBOSE | re.DOTALL)


@dataclass
class Token:
    kind: str
    text: str
    start: int
    end: int


def tokens(text) -> list:
    return [Token(m.lastgroup, m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)
            if m.lastgroup not in ("space", "comment")]


@dataclass
class Field:
    name: str
    start: int          # character offsets of the whole field (name to value or closing brace)
    end: int
    value: Token | None     # the scalar value token; None for a block
    body: int | None = None     # for a block: the offset just after its '{'


def fields(toks) -> list:
    """Every field in the text, nested ones too: ``name: value``, ``name { ... }``, ``name: { ... }``."""
    found = []
    for index, token in enumerate(toks):
        if token.kind != "ident":
            continue
        if index > 0 and toks[index - 1].text == ":":
            continue        # an identifier value (an enum), not a field name
        after = index + 1
        if after < len(toks) and toks[after].text == ":":
            after += 1
        if after >= len(toks):
            continue
        opener = toks[after]
        if opener.text in "{<" and opener.kind == "punct":
            depth, close = 0, None
            for j in range(after, len(toks)):
                if toks[j].text in "{<":
                    depth += 1
                elif toks[j].text in "}>":
                    depth -= 1
                    if depth == 0:
                        close = j
                        break
            if close is None:
                continue
            found.append(Field(token.text, token.start, toks[close].end, None, opener.end))
        elif toks[after - 1].text == ":" and opener.kind in ("string", "number", "ident"):
            end = opener.end
            j = after + 1
            while j < len(toks) and toks[j].kind == "string" and opener.kind == "string":   # "a" "b"
                end = toks[j].end
                j += 1
            found.append(Field(token.text, token.start, end, opener))
    return found


def _replace(text, start, end, new):
    return text[:start] + new + text[end:]


def _quote(value: str) -> str:
    return '"' + value.replace('"', '\\"') + '"'


# How often each text edit comes (out of 100): numbers first, then types, deletions and names.
_TEXT_KINDS = [0] * 30 + [1] * 12 + [2] * 10 + [3] * 6 + [4] * 12 + [5] * 10 + [6] * 6 + [7] * 5 + [8] * 5 + [9] * 4


def mutate_text(text: str, ops, layer_types=(), names_extra=()) -> str:
    """Apply token-level edits: numbers to extremes, fields deleted, duplicated, moved or inserted, enum values
    changed, layer types swapped among ``layer_types``, blob names and other strings exchanged."""
    for op, a, b in ops:
        toks = tokens(text)
        flds = fields(toks)
        kind = _TEXT_KINDS[op % len(_TEXT_KINDS)]
        if kind == 0:       # a number to an extreme
            numbers = [t for t in toks if t.kind == "number" or t.text in ("nan", "inf", "-inf")]
            if numbers:
                t = numbers[a % len(numbers)]
                choice = b % (len(NUMBERS) + 16)
                new = NUMBERS[choice] if choice < len(NUMBERS) else str(choice - len(NUMBERS))
                text = _replace(text, t.start, t.end, new)
        elif kind == 1:     # delete a field
            if flds:
                f = flds[a % len(flds)]
                text = _replace(text, f.start, f.end, "")
        elif kind == 2:     # duplicate a field
            if flds:
                f = flds[a % len(flds)]
                text = _replace(text, f.end, f.end, " " + text[f.start:f.end])
        elif kind == 3:     # an identifier value to another enum name
            values = [f.value for f in flds if f.value is not None and f.value.kind == "ident"]
            if values:
                t = values[a % len(values)]
                text = _replace(text, t.start, t.end, ENUMS[b % len(ENUMS)])
        elif kind == 4 and layer_types:     # a layer's type to another
            values = [f.value for f in flds if f.name == "type" and f.value is not None
                      and f.value.kind == "string"]
            if values:
                t = values[a % len(values)]
                text = _replace(text, t.start, t.end, _quote(layer_types[b % len(layer_types)]))
        elif kind == 5:     # a bottom/top name to another blob's, or to a new one
            values = [f.value for f in flds if f.name in ("bottom", "top") and f.value is not None]
            if values:
                t = values[a % len(values)]
                names = sorted({v.text for v in values}) + ['"fresh"', '""']
                text = _replace(text, t.start, t.end, names[b % len(names)])
        elif kind == 6:     # any string to another in the file, or to one of STRINGS
            values = [f.value for f in flds if f.value is not None and f.value.kind == "string"]
            if values:
                t = values[a % len(values)]
                pool = sorted({v.text for v in values}) + [_quote(s) for s in STRINGS + list(names_extra)]
                text = _replace(text, t.start, t.end, pool[b % len(pool)])
        elif kind == 7:     # copy a field into a block (or to the top level)
            if flds:
                f = flds[a % len(flds)]
                blocks = [g for g in flds if g.body is not None]
                where = blocks[b % (len(blocks) + 1)].body if b % (len(blocks) + 1) < len(blocks) else len(text)
                text = _replace(text, where, where, " " + text[f.start:f.end] + " ")
        elif kind == 8:     # insert a snippet into a block
            blocks = [g for g in flds if g.body is not None]
            snippet = SNIPPETS[b % len(SNIPPETS)]
            where = blocks[a % len(blocks)].body if blocks else len(text)
            text = _replace(text, where, where, " " + snippet + " ")
        else:               # a raw edit: drop a token, or cut the text
            if toks and b % 4:
                t = toks[a % len(toks)]
                text = _replace(text, t.start, t.end, "")
            else:
                text = text[:a % (len(text) + 1)]
    return text


# ---------------------------------------------------------------- bytes

def mutate_bytes(payload: bytes, ops) -> bytes:
    """Byte flips, overwrites, truncations, insertions, deletions and duplicated runs."""
    data = bytearray(payload)
    for op, a, b in ops:
        n = len(data)
        kind = op % 6
        if kind == 0 and n:
            data[a % n] ^= 1 << (b % 8)
        elif kind == 1 and n:
            data[a % n] = b & 0xFF
        elif kind == 2:
            del data[a % (n + 1):]
        elif kind == 3:
            at = a % (n + 1)
            data[at:at] = bytes([b & 0xFF]) * (1 + (b >> 8) % 8)
        elif kind == 4 and n:
            at = a % n
            del data[at:at + 1 + b % 16]
        elif kind == 5 and n:
            at = a % n
            run = data[at:at + 1 + b % 32]
            data[at:at] = run
    return bytes(data)


# ---------------------------------------------------------------- protobuf messages

_INT_EXTREMES = [0, -1, 1, 2, 2 ** 31 - 1, -2 ** 31, 2 ** 32 - 1, 2 ** 63 - 1, -2 ** 63, 2 ** 64 - 1, 7, 1000]
_FLOAT_EXTREMES = [0.0, -1.0, 1.0, math.nan, math.inf, -math.inf, 1e38, -1e38, 1e308, 5e-324, 0.5, 255.0]
_STRING_EXTREMES = ["", "x", "\0", "data", "ip", "conv1", "\u00e9\u00e8", "{}", "[]", "null", "1e999",
                    '{"epoch": -1, "position": 99999999999999999999, "key": "zz"}',
                    '{"epoch": 0, "position": 0, "key": null}', '{"bit_generator": "PCG64"}', "[1, 2]",
                    "nonexistent.caffemodel", "missing_folder/x.caffemodel"]

_RANGES = {
    FieldDescriptor.TYPE_INT32: (-2 ** 31, 2 ** 31 - 1), FieldDescriptor.TYPE_SINT32: (-2 ** 31, 2 ** 31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-2 ** 31, 2 ** 31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2 ** 32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2 ** 32 - 1), FieldDescriptor.TYPE_INT64: (-2 ** 63, 2 ** 63 - 1),
    FieldDescriptor.TYPE_SINT64: (-2 ** 63, 2 ** 63 - 1), FieldDescriptor.TYPE_SFIXED64: (-2 ** 63, 2 ** 63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2 ** 64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2 ** 64 - 1),
}


def _repeated(field) -> bool:
    is_repeated = getattr(field, "is_repeated", None)        # protobuf 6+; older ones have ``label``
    return is_repeated if is_repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _places(message, out):
    """(message, field) for every field of ``message`` and its sub-messages, set or not."""
    for field in message.DESCRIPTOR.fields:
        out.append((message, field))
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if _repeated(field):
                for item in getattr(message, field.name):
                    _places(item, out)
            elif message.HasField(field.name):
                _places(getattr(message, field.name), out)
    return out


def _scalar_value(field, b):
    if field.type in _RANGES:
        low, high = _RANGES[field.type]
        value = _INT_EXTREMES[b % len(_INT_EXTREMES)]
        return min(max(value, low), high)
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return _FLOAT_EXTREMES[b % len(_FLOAT_EXTREMES)]
    if field.type == FieldDescriptor.TYPE_BOOL:
        return bool(b % 2)
    if field.type == FieldDescriptor.TYPE_ENUM:
        values = field.enum_type.values
        return values[b % len(values)].number
    if field.type == FieldDescriptor.TYPE_STRING:
        return _STRING_EXTREMES[b % len(_STRING_EXTREMES)]
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes([b & 0xFF]) * ((b >> 8) % 5)
    raise AssertionError(field.type)


def mutate_message(message, ops):
    """Field-level edits of a protobuf message, in place: set a scalar to an extreme, clear a field, cut or
    grow a repeated field, add an empty sub-message. Serialize with SerializePartialToString."""
    for op, a, b in ops:
        places = [p for p in _places(message, []) if p[1].type != FieldDescriptor.TYPE_GROUP]
        if not places:
            return message
        holder, field = places[a % len(places)]
        repeated = _repeated(field)
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        kind = op % 5
        if kind == 0:           # clear
            holder.ClearField(field.name)
        elif kind == 1 and repeated:    # cut to a length
            values = getattr(holder, field.name)
            del values[b % (len(values) + 1):]
        elif kind == 2 and repeated:    # grow: duplicate an element, or append a new one
            values = getattr(holder, field.name)
            if is_message:
                new = values.add()
                if len(values) > 1 and b % 2:
                    new.CopyFrom(values[b % (len(values) - 1)])
            elif len(values) and b % 2:
                values.append(values[b % len(values)])
            else:
                values.append(_scalar_value(field, b))
        elif is_message:
            if repeated:
                getattr(holder, field.name).add()
            else:
                getattr(holder, field.name).SetInParent()
        elif repeated:              # one element to an extreme
            values = getattr(holder, field.name)
            if len(values):
                values[b % len(values)] = _scalar_value(field, b // 7)
            else:
                values.append(_scalar_value(field, b))
        else:
            setattr(holder, field.name, _scalar_value(field, b))
    return message


# ---------------------------------------------------------------- HDF5 files

_H5_NAMES = ["0", "1", "00", "-1", "99", " 0", "1e3", "x", "data", "history", "iter", "learned_net", "\u00e9"]
_H5_SHAPES = [(), (0,), (1,), (2,), (3, 2), (1, 1, 1, 1, 1), (6,), (2, 0, 3)]
_H5_ATTRS = ["minicaffe_rng_state", "minicaffe_smoothed_loss", "minicaffe_data_cursors", "other"]


def _h5_values():
    import numpy as np
    return [b"\xff\xfe", "", "[]", "{}", "[[1, 2, 3]]", '[["train", "data", "{}"]]', '[["train", "data", "[]"]]',
            '{"bit_generator": "PCG64", "state": {"state": 1, "inc": 1}, "has_uint32": 0, "uinteger": 0}',
            np.array([1.0, 2.0]), 1.5, np.int64(2 ** 62), np.float32("nan"), "x" * 300]


def _h5_dtypes():
    import h5py
    import numpy as np
    return [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint64, np.bool_, np.complex64,
            np.dtype("S4"), h5py.string_dtype(), np.dtype([("a", "f4"), ("b", "i4")])]


def mutate_h5(path, ops):
    """Structural edits of an HDF5 file, in place: objects deleted, a dataset turned into a group or back,
    datasets recast (strings, compounds, complex, bool), reshaped, emptied or filled with extremes, renamed,
    linked (soft, external, hard), attributes set to odd values."""
    import h5py
    import numpy as np
    with h5py.File(path, "r+") as h5:
        for op, a, b in ops:
            names = []
            h5.visit(names.append)      # hard links only once, so a cycle is visited once
            names = sorted(names)
            target = names[a % len(names)] if names else None
            kind = op % 10
            try:
                if kind == 0 and target:
                    del h5[target]
                elif kind == 1 and target:
                    was_group = isinstance(h5[target], h5py.Group)
                    del h5[target]
                    if was_group:
                        h5.create_dataset(target, data=np.float32(b % 7))
                    else:
                        h5.create_group(target)
                elif kind == 2 and target and isinstance(h5[target], h5py.Dataset):
                    old = h5[target]
                    dtype = _h5_dtypes()[b % len(_h5_dtypes())]
                    shape = old.shape
                    del h5[target]
                    h5.create_dataset(target, shape=shape, dtype=dtype)
                elif kind == 3 and target and isinstance(h5[target], h5py.Dataset):
                    shape = _H5_SHAPES[b % len(_H5_SHAPES)]
                    del h5[target]
                    values = _FLOAT_EXTREMES[(b // 8) % len(_FLOAT_EXTREMES)]
                    h5.create_dataset(target, data=np.full(shape, values, dtype=np.float32))
                elif kind == 4 and target and isinstance(h5[target], h5py.Dataset):
                    del h5[target]
                    h5.create_dataset(target, data=h5py.Empty("f4"))
                elif kind == 5:
                    holder = h5 if b % 3 == 0 or not target else h5[target] if isinstance(h5[target], h5py.Group) \
                        else h5
                    name = _H5_ATTRS[b % len(_H5_ATTRS)]
                    holder.attrs[name] = _h5_values()[(b // 4) % len(_h5_values())]
                elif kind == 6 and target:
                    parent = target.rpartition("/")[0]
                    new = (parent + "/" if parent else "") + _H5_NAMES[b % len(_H5_NAMES)]
                    if new not in h5:
                        h5.move(target, new)
                elif kind == 7 and target:
                    parent = target.rpartition("/")[0]
                    new = (parent + "/" if parent else "") + _H5_NAMES[b % len(_H5_NAMES)]
                    if new not in h5:
                        link = b % 3
                        other = names[b % len(names)]
                        h5[new] = (h5py.SoftLink("/" + other) if link == 0 else
                                   h5py.ExternalLink("elsewhere.h5", "/" + other) if link == 1 else h5[other])
                elif kind == 8 and target and isinstance(h5[target], h5py.Dataset):
                    dataset = h5[target]
                    if dataset.dtype.kind == "f" and dataset.size:
                        flat = dataset[()].reshape(-1)
                        flat[b % flat.size] = _FLOAT_EXTREMES[(b // 16) % len(_FLOAT_EXTREMES)]
                        dataset[...] = flat.reshape(dataset.shape)
                elif kind == 9:
                    group = h5[target] if target and isinstance(h5[target], h5py.Group) else h5
                    name = _H5_NAMES[b % len(_H5_NAMES)]
                    if name not in group:
                        if b % 2:
                            group.create_group(name)
                        else:
                            group.create_dataset(name, data=np.arange(b % 5, dtype=np.float32))
            except (ValueError, KeyError, TypeError, OSError, RuntimeError):
                pass        # an edit h5py refuses (a name taken, a link it cannot make): the file stays valid
    return path
