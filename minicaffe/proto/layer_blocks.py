"""Where each top-level ``layer { ... }`` block of a net's text starts and ends.

protobuf's text parser reports a position, not the layer it falls in; errors
about a field name the layer (``minicaffe.proto.text``), and ``--end LAYER``
(:func:`minicaffe.proto.text.read_net_until`) blanks out the layers after
END, so this scanner finds the blocks: a character-level walk that knows
comments, strings and both bracket styles of the text format, and nothing
else of its grammar.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerBlock:
    keyword: str        # "layer" (current format) or "layers" (V1)
    start: int          # offset of the keyword
    end: int            # offset just past the closing bracket


def layer_blocks(text: str) -> list:
    """The top-level ``layer``/``layers`` blocks of ``text``, in file order.

    Stops quietly at anything unbalanced: the parser reports that better.
    """
    blocks = []
    depth = 0
    position = 0
    length = len(text)
    pending = None          # (keyword, start) of a top-level layer keyword awaiting its bracket
    block_start = None
    while position < length:
        char = text[position]
        if char == "#":
            newline = text.find("\n", position)
            position = length if newline < 0 else newline + 1
            continue
        if char in "\"'":
            position = _string_end(text, position)
            continue
        if char in "{<":
            if depth == 0:
                block_start = pending
            depth += 1
            pending = None
        elif char in "}>":
            depth -= 1
            if depth < 0:
                return blocks
            if depth == 0 and block_start is not None:
                blocks.append(LayerBlock(block_start[0], block_start[1], position + 1))
                block_start = None
        elif depth == 0 and (char.isalpha() or char == "_"):
            word_end = position
            while word_end < length and (text[word_end].isalnum() or text[word_end] == "_"):
                word_end += 1
            word = text[position:word_end]
            pending = (word, position) if word in ("layer", "layers") else None
            position = word_end
            continue
        elif depth == 0 and not char.isspace() and char != ":":
            pending = None
        position += 1
    return blocks


def offset_of(text: str, line: int, column: int) -> int:
    """The offset of 1-based ``line``:``column`` in ``text``."""
    offset = 0
    for _ in range(line - 1):
        newline = text.find("\n", offset)
        if newline < 0:
            return len(text)
        offset = newline + 1
    return offset + max(column - 1, 0)


def block_at(blocks, offset: int):
    """(index, block) of the block holding ``offset``, or (None, None)."""
    for index, block in enumerate(blocks):
        if block.start <= offset < block.end:
            return index, block
    return None, None


def blank_out(text: str, start: int, end: int) -> str:
    """``text`` with [start, end) replaced by spaces, newlines kept (so positions after it stay valid)."""
    removed = "".join("\n" if char == "\n" else " " for char in text[start:end])
    return text[:start] + removed + text[end:]


def _string_end(text: str, start: int) -> int:
    quote = text[start]
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == quote or char == "\n":
            return position + 1
        position += 1
    return position
