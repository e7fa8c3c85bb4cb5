"""Log lines as ``caffe train`` writes them: glog's prefix, then Caffe's message.

``I1123 08:01:02.123456 4242 solver.py:123] Iteration 100, lr = 0.01`` — the
level letter, month and day, time with microseconds, process id, file:line,
then the message, so Caffe's ``tools/extra/parse_log.py`` (which reads the
month, day and time from the first two fields) and other existing parsers read
minicaffe's logs unchanged.

On a terminal, a progress line (iterations, rate, time left) is kept below the
log and redrawn after each line; it is never written when stderr is not a tty.
"""

from __future__ import annotations

import logging
import os
import sys
import time

LOGGER_NAME = "minicaffe"
_LEVEL_LETTERS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
                  logging.CRITICAL: "F"}


class GlogFormatter(logging.Formatter):
    def format(self, record):
        stamp = time.localtime(record.created)
        micros = int((record.created - int(record.created)) * 1e6)
        prefix = (f"{_LEVEL_LETTERS.get(record.levelno, 'I')}{time.strftime('%m%d %H:%M:%S', stamp)}.{micros:06d} "
                  f"{os.getpid()} {record.filename}:{record.lineno}]")
        return f"{prefix} {record.getMessage()}"


class ProgressLine:
    """A one-line progress display on a terminal: cleared before each log line, redrawn after."""

    def __init__(self, stream, total, start_iter=0):
        self.stream = stream
        self.enabled = hasattr(stream, "isatty") and stream.isatty()
        self.total = total
        self.start_iter = start_iter
        self.started = time.perf_counter()
        self.text = ""

    def update(self, iteration):
        if not self.enabled:
            return
        done = iteration - self.start_iter
        elapsed = time.perf_counter() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - iteration) / rate if rate > 0 else float("nan")
        width = 30
        filled = int(width * iteration / self.total) if self.total else width
        self.text = (f"[{'#' * filled}{'.' * (width - filled)}] {iteration}/{self.total} iters, "
                     f"{rate:.2f} iter/s, {left:.0f}s left")
        self.stream.write("\r" + self.text)
        self.stream.flush()

    def clear(self):
        if self.enabled and self.text:
            self.stream.write("\r" + " " * len(self.text) + "\r")
            self.stream.flush()

    def redraw(self):
        if self.enabled and self.text:
            self.stream.write("\r" + self.text)
            self.stream.flush()


class _ProgressAwareHandler(logging.StreamHandler):
    progress = None

    def emit(self, record):
        if self.progress is not None:
            self.progress.clear()
        super().emit(record)
        if self.progress is not None:
            self.progress.redraw()


def setup_logging(stream=None, level=logging.INFO):
    """Send minicaffe's log to ``stream`` (stderr, as glog) in glog's format; returns the handler."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if isinstance(handler, _ProgressAwareHandler):
            logger.removeHandler(handler)
    handler = _ProgressAwareHandler(stream or sys.stderr)
    handler.setFormatter(GlogFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler
