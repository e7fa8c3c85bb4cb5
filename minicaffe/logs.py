"""Log lines as ``caffe train`` writes them: glog's prefix, then Caffe's message.

``I1123 08:01:02.123456 4242 solver.py:123] Iteration 100, lr = 0.01`` — the
level letter, month and day, time with microseconds, process id, file:line,
then the message, so Caffe's ``tools/extra/parse_log.py`` (which reads the
month, day and time from the first two fields) and other existing parsers read
minicaffe's logs unchanged. Every line goes to the ``minicaffe`` logger.

Where the lines go:

- ``minicaffe train`` / ``test`` (the CLI) call :func:`setup_logging`: the lines
  go to stderr, and on a terminal a progress line (iterations, rate, time left)
  is kept below the log and redrawn after each line.
- From Python, as pycaffe's glog does with no set-up: constructing a solver,
  ``solver.step(n)`` and ``solver.solve()`` print the lines to stderr, unless
  Python logging is configured (``logging.basicConfig``, a framework's set-up,
  pytest): then the lines go to those handlers only, never twice (configured
  before the first solver, the levels set there apply; configured after, the
  ``minicaffe`` logger keeps the INFO level it was given). ``solve()`` and ``step(n)`` with n > 1 also draw a
  ``tqdm.auto`` bar on stderr (a widget in Jupyter) with the smoothed loss,
  on a terminal or in a notebook only.

The switches, pycaffe's names where pycaffe has one:

- ``GLOG_minloglevel`` (environment, as for Caffe): 0 INFO and up (the
  default), 1 WARNING and up, 2 ERROR and up, 3 FATAL only. Above 0 it also
  hides the bar. ``os.environ['GLOG_minloglevel'] = '2'`` before training
  silences minicaffe as it silences Caffe.
- :func:`init_log` ``(level, stderr)``: pycaffe's ``caffe.init_log``; the same
  levels, set from Python; ``init_log(2)`` silences the lines and the bar.
- :func:`log` ``(message)``: pycaffe's ``caffe.log``, one INFO line.
- :func:`set_progress` ``(True | False | None)`` and ``MINICAFFE_PROGRESS=0``:
  the bar only.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager

LOGGER_NAME = "minicaffe"
_LEVEL_LETTERS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
                  logging.CRITICAL: "F"}
_GLOG_LEVELS = (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)   # glog's 0..3

_init_log_level = None     # the glog level init_log() set; None until it is called
_progress_switch = None    # set_progress(): True, False, or None (on a terminal or in a notebook)


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


class _GlogHandler(logging.StreamHandler):
    """glog's lines on ``stream``, or on ``sys.stderr`` as it is at each line (notebooks and pytest replace it).

    ``progress`` (a ProgressLine or a tqdm bar's display) is cleared before each
    line and redrawn after. A ``fallback`` handler, the default from Python,
    stays silent while a handler above the ``minicaffe`` logger (the root's)
    takes the lines, so configuring logging at any time never prints them twice.
    """

    progress = None

    def __init__(self, stream=None, fallback=False):
        logging.Handler.__init__(self)
        self._stream = stream
        self.fallback = fallback
        self.setFormatter(GlogFormatter())

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    @stream.setter
    def stream(self, value):
        self._stream = value

    def emit(self, record):
        if self.fallback and _handled_above(logging.getLogger(LOGGER_NAME)):
            return
        if self.progress is not None:
            self.progress.clear()
        super().emit(record)
        if self.progress is not None:
            self.progress.redraw()


def _handled_above(logger):
    """Whether a handler on an ancestor of ``logger`` receives its records."""
    while logger.propagate and logger.parent is not None:
        logger = logger.parent
        if logger.handlers:
            return True
    return False


def _replace_glog_handler(logger, handler):
    for existing in list(logger.handlers):
        if isinstance(existing, _GlogHandler):
            logger.removeHandler(existing)
    logger.addHandler(handler)
    return handler


def min_log_level() -> int:
    """glog's minimum level in force: init_log()'s, else ``GLOG_minloglevel``'s, else 0 (INFO)."""
    if _init_log_level is not None:
        return _init_log_level
    return _env_log_level() or 0


def _env_log_level():
    try:
        return min(max(int(os.environ["GLOG_minloglevel"]), 0), 3)
    except (KeyError, ValueError):
        return None


def setup_logging(stream=None, level=None):
    """Send minicaffe's lines to ``stream`` (stderr when None) in glog's format, and only there.

    The CLI's set-up, and :func:`init_log`'s. ``level``: a ``logging`` level;
    None means glog's (``GLOG_minloglevel``, else INFO). Returns the handler.
    """
    logger = logging.getLogger(LOGGER_NAME)
    handler = _replace_glog_handler(logger, _GlogHandler(stream))
    logger.setLevel(_GLOG_LEVELS[min_log_level()] if level is None else level)
    logger.propagate = False
    return handler


def default_logging():
    """pycaffe's default, applied where the Python API starts training: lines on stderr with no set-up.

    Does nothing after :func:`init_log` or where the ``minicaffe`` logger has a
    handler of its own (the CLI's, a user's). Where no handler would receive
    the lines, attaches a fallback glog handler (which stays silent once
    logging is configured) and, unless the logger's level was set, sets it from
    ``GLOG_minloglevel`` (INFO by default). Where logging is configured, only an
    explicit ``GLOG_minloglevel`` is applied to the logger's level.
    """
    logger = logging.getLogger(LOGGER_NAME)
    if _init_log_level is not None or logger.handlers:
        return
    configured = logger.hasHandlers()
    if logger.level == logging.NOTSET and (not configured or _env_log_level() is not None):
        logger.setLevel(_GLOG_LEVELS[min_log_level()])
    if not configured:
        logger.addHandler(_GlogHandler(fallback=True))


def init_log(level=None, stderr=True):
    """pycaffe's ``caffe.init_log``: log lines at glog ``level`` and up (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL).

    ``level`` None keeps the level in force (the last init_log's, else
    ``GLOG_minloglevel``'s, else 0), as pycaffe's ``init_log()`` does. ``stderr=True``: the lines go to stderr in glog's
    format, and there only. ``stderr=False``: minicaffe writes nothing itself
    and the lines go to the handlers configured with ``logging`` (glog would
    write them to files under /tmp). A level above 0 also hides the progress bar.
    """
    global _init_log_level
    _init_log_level = min_log_level() if level is None else min(max(int(level), 0), 3)
    logger = logging.getLogger(LOGGER_NAME)
    if stderr:
        setup_logging()
        return
    for existing in list(logger.handlers):
        if isinstance(existing, _GlogHandler):
            logger.removeHandler(existing)
    logger.setLevel(_GLOG_LEVELS[_init_log_level])
    logger.propagate = True


def log(message):
    """pycaffe's ``caffe.log``: ``message`` as one INFO line of minicaffe's log, naming the caller's file:line."""
    default_logging()
    logging.getLogger(LOGGER_NAME).info("%s", message, stacklevel=2)


# ---------------------------------------------------------------- the progress bar

def set_progress(enabled):
    """The solver's progress bar from Python: True always draws it (even off a terminal),
    False never, None (the default) on a terminal or in a notebook only."""
    global _progress_switch
    _progress_switch = None if enabled is None else bool(enabled)


def progress_wanted() -> bool:
    """Whether a bar may be drawn: set_progress()'s choice, else not with ``MINICAFFE_PROGRESS=0``
    or a glog level above INFO."""
    if _progress_switch is not None:
        return _progress_switch
    if os.environ.get("MINICAFFE_PROGRESS", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return min_log_level() == 0


class _BarDisplay:
    """A tqdm bar as the glog handler's ``progress``: updated once per iteration with the smoothed loss."""

    def __init__(self, bar):
        self.bar = bar

    def update(self, loss):
        self.bar.set_postfix_str(f"loss={loss:.4g}", refresh=False)
        self.bar.update(1)

    def clear(self):
        self.bar.clear()

    def redraw(self):
        self.bar.refresh()


@contextmanager
def progress_bar(total, initial=0, leave=True):
    """A ``tqdm.auto`` bar on stderr while the block runs (yields its display, or None where no bar
    is drawn: see :func:`progress_wanted`, and tqdm's own rule: not off a terminal unless forced)."""
    if not progress_wanted():
        yield None
        return
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=initial, file=sys.stderr, unit="iter", leave=leave, dynamic_ncols=True,
               disable=False if _progress_switch else None)
    if bar.disable:
        yield None
        return
    display = _BarDisplay(bar)
    attach_progress(display)
    try:
        yield display
    finally:
        attach_progress(None)
        bar.close()


def attach_progress(progress):
    """Let minicaffe's glog handlers clear ``progress`` before each line and redraw it after (None: detach)."""
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(handler, _GlogHandler):
            handler.progress = progress
