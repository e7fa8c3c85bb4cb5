"""minicaffe's one exception family.

Every error minicaffe raises on bad input derives from :class:`MinicaffeError`,
so callers (and the CLI, which prints one line per error) can catch them all.
Each subclass carries the context a user needs to find the mistake: a
file:line:column for text, a layer and blob for graph problems, both shapes for
shape problems, a path for files.
"""

from __future__ import annotations

import re

QUOTE_LIMIT = 200       # characters of file content an error message quotes at most, about


class MinicaffeError(Exception):
    """Base class of every error minicaffe raises on bad input.

    A message stays short whatever the file holds: each run of more than 300 characters without a
    space or a quote (a name, a token, a line of base64 from the file) is cut to its first
    :data:`QUOTE_LIMIT` characters (:func:`excerpt`), and each line to 2000 characters.
    """

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (shorten_message(args[0]),)
        super().__init__(*args)


def excerpt(text: str, column=None, limit=QUOTE_LIMIT) -> str:
    """``text`` as an error message quotes file content: whole when short, else ``limit`` characters
    (around ``column``, 1-based, when given) with ``...`` where it was cut and its full length."""
    if len(text) <= limit:
        return text
    start = 0 if not column else max(0, min(column - 1 - limit // 2, len(text) - limit))
    return (("..." if start else "") + text[start:start + limit] + ("..." if start + limit < len(text) else "")
            + f" [{len(text)} characters]")


_LONG_RUN = re.compile(r"[^\s'\"]{301,}")     # not across quotes: "'NAME', blob" keeps its punctuation


def shorten_message(text: str) -> str:
    """``text`` with its runs of over 300 characters without a space or a quote, and its lines of over 2000
    characters, cut (:func:`excerpt`)."""
    if len(text) <= 300:
        return text
    text = _LONG_RUN.sub(lambda match: excerpt(match.group(0)), text)
    return "\n".join(excerpt(line, limit=2000) for line in text.split("\n"))


class PrototxtError(MinicaffeError):
    """A .prototxt that does not parse: names file:line:column and the text there."""

    def __init__(self, path, line, column, message, snippet=None):
        self.path = str(path)
        self.line = line
        self.column = column
        self.reason = message
        self.snippet = snippet
        where = self.path
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        text = f"{where}: {message}"
        if snippet:
            text += f" (at: {snippet!r})"
        super().__init__(text)


class GraphError(MinicaffeError):
    """A net whose wiring is wrong: names the layer and, where there is one, the blob."""

    def __init__(self, message, layer=None, blob=None):
        self.layer = layer
        self.blob = blob
        prefix = ""
        if layer is not None:
            prefix = f"layer '{layer}'"
            if blob is not None:
                prefix += f", blob '{blob}'"
            prefix += ": "
        elif blob is not None:
            prefix = f"blob '{blob}': "
        super().__init__(prefix + message)


class ShapeError(MinicaffeError):
    """Shapes that do not fit: names the layer and shows both shapes."""

    def __init__(self, message, layer=None, expected=None, actual=None):
        self.layer = layer
        self.expected = expected
        self.actual = actual
        text = f"layer '{layer}': {message}" if layer is not None else message
        if expected is not None or actual is not None:
            text += f" (expected {_fmt_shape(expected)}, got {_fmt_shape(actual)})"
        super().__init__(text)


class WeightsError(MinicaffeError):
    """A .caffemodel, .binaryproto or .solverstate that cannot be read or does not fit."""

    def __init__(self, path, message):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class UpgradeError(MinicaffeError):
    """A legacy (V0/V1) net or solver that cannot be upgraded to the current format."""


class NonFiniteError(MinicaffeError):
    """Training produced a NaN or Inf: names the first layer and blob where it appeared, and the iteration."""

    def __init__(self, message, layer=None, iteration=None):
        self.layer = layer
        self.iteration = iteration
        super().__init__(message)


class MemoryLimitError(MinicaffeError, MemoryError):
    """A net that needs more memory than the process may use, refused before allocating
    (:mod:`minicaffe.memory_budget`): names the estimate, the limit and its source, and the largest blobs.

    ``estimate`` (a MemoryEstimate), ``limit`` (a MemoryLimit) and ``needed`` (bytes) say the numbers.
    Also a ``MemoryError``, so code that catches that catches it too.
    """

    def __init__(self, message, estimate=None, limit=None, needed=None):
        self.estimate = estimate
        self.limit = limit
        self.needed = needed
        super().__init__(message)


class LayerMemoryError(MinicaffeError, MemoryError):
    """numpy's MemoryError inside a layer (a buffer the estimate missed, or memory taken by others meanwhile):
    names the layer and what it was doing."""

    def __init__(self, layer, during, original=None):
        self.layer = layer
        self.during = during
        detail = f" ({original})" if original is not None and str(original) else ""
        where = f"layer '{layer}'" if layer is not None else "the net"
        super().__init__(f"{where}: out of memory {during}{detail}; free memory, lower the batch size, "
                         "or check the estimate with `minicaffe check`")


class MinicaffeWarning(UserWarning):
    """A net that runs, but not as its author may expect (an option that has no effect)."""


def _fmt_shape(shape):
    if shape is None:
        return "?"
    return "(" + ", ".join(str(d) for d in shape) + ")"
