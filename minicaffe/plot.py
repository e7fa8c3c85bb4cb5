"""Loss curves: training loss, test loss and every test output of one or more training logs.

:func:`plot_logs` draws the rows :mod:`minicaffe.training_log` reads (what
``minicaffe parse-log`` writes) and returns a matplotlib ``Figure``; each
line's data are the log's values (``line.get_xdata()`` the NumIters or Seconds
column, ``line.get_ydata()`` the output's column). The outputs with a loss
weight (Caffe's ``(* W = L loss)`` lines) share the top axes; the others
(accuracy, ...) get a second axes below. Several logs overlay, one colour per
log, labelled with its file name.

:class:`LivePlot` redraws a PNG as training goes (``minicaffe train --plot``):
it reads minicaffe's log lines as they are logged and rewrites the picture at
display and test intervals, atomically (a temporary file renamed).

Needs matplotlib (``pip install 'minicaffe[plot]'``). Figures are drawn on
matplotlib's Agg canvas, without pyplot, so no window opens and a notebook's
backend is left as it is (a notebook shows the returned Figure inline).
"""

from __future__ import annotations

import io
import logging
import os
import time

from .errors import MinicaffeError
from .training_log import LogParser, TrainingLog, parse_log, require_rows

_STYLES = ("-", "--", ":", "-.")
_X_LABELS = {"iters": "iterations", "seconds": "seconds"}


def require_matplotlib():
    """Import matplotlib, or say which extra installs it."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise MinicaffeError("plotting needs matplotlib: pip install 'minicaffe[plot]' "
                             "(or pip install matplotlib)") from None


def _labels(logs):
    """Each log's legend label: its file name, or its path where two logs share a file name."""
    paths = [log.path or f"log {index + 1}" for index, log in enumerate(logs)]
    names = [os.path.basename(path) for path in paths]
    return [name if names.count(name) == 1 else path for name, path in zip(names, paths)]


def plot_logs(logs, x="iters", title=None, require=True):
    """A Figure with the curves of ``logs``: paths of training logs, or TrainingLog objects (or one of either).

    ``x``: ``"iters"`` (NumIters) or ``"seconds"`` (Seconds since Solving).
    Train outputs are plain lines, test outputs lines with dots. With
    ``require`` (the default), a log with no rows is a MinicaffeError naming it.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if x not in _X_LABELS:
        raise MinicaffeError(f"the x axis is 'iters' or 'seconds', not {x!r}")
    if isinstance(logs, (str, os.PathLike, TrainingLog)):
        logs = [logs]
    logs = [log if isinstance(log, TrainingLog) else parse_log(log, pending=True) for log in logs]
    if require:
        for log in logs:
            require_rows(log, "curves")
    # The curves: (log index, kind, output name, is a loss), losses first on the top axes.
    curves = [(index, kind, name, log.is_loss(kind, name))
              for index, log in enumerate(logs) for kind in ("train", "test") for name in log.outputs(kind)]
    series = list(dict.fromkeys((kind, name) for _, kind, name, _ in curves))
    has_metrics = any(not loss for *_, loss in curves)
    has_losses = any(loss for *_, loss in curves) or not curves
    panels = int(has_losses) + int(has_metrics)

    figure = Figure(figsize=(8, 3.4 * panels + 0.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    loss_axes = axes[0] if has_losses else None
    metric_axes = axes[-1] if has_metrics else None
    labels = _labels(logs)
    several = len(logs) > 1
    for index, kind, name, loss in curves:
        xs, ys = logs[index].series(kind, name, x)
        number = series.index((kind, name))
        if several:     # a colour per log, a line style per output
            color, style = f"C{index % 10}", _STYLES[number % len(_STYLES)]
        else:
            color, style = f"C{number % 10}", "-"
        label = f"{kind} {name}" + (f" ({labels[index]})" if several else "")
        target = loss_axes if loss else metric_axes
        target.plot(xs, ys, style, color=color, label=label, marker="o" if kind == "test" else None,
                    markersize=4, linewidth=1.4 if kind == "train" else 1.8)
    if loss_axes is not None:
        loss_axes.set_ylabel("loss")
    if metric_axes is not None:
        metric_axes.set_ylabel("test outputs" if all(kind == "test" for _, kind, _, loss in curves if not loss)
                               else "outputs")
    for axis in axes:
        axis.grid(True, alpha=0.3)
        if axis.lines:
            axis.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel(_X_LABELS[x])
    if title is None:
        title = labels[0] if len(labels) == 1 else ", ".join(labels)
    axes[0].set_title(title)
    figure.tight_layout()
    return figure


def figure_png(figure) -> bytes:
    """The Figure as PNG bytes (Agg)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def save_figure(figure, path):
    """Write the Figure to ``path`` as PNG through a temporary file and a rename (readers never see half a picture).

    Other extensions (.svg, .pdf) are written in their format, the same way.
    """
    from .io import atomic_write_bytes

    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format=fmt)
    except ValueError as exc:
        raise MinicaffeError(f"{path}: cannot write this format: {exc}") from None
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise MinicaffeError(f"{path}: cannot write the picture: {exc.strerror or exc}") from None


def plot_to_file(logs, out, x="iters", title=None):
    """Draw ``logs`` (see :func:`plot_logs`) into ``out``; returns the TrainingLogs drawn."""
    if isinstance(logs, (str, os.PathLike, TrainingLog)):
        logs = [logs]
    logs = [log if isinstance(log, TrainingLog) else parse_log(log, pending=True) for log in logs]
    figure = plot_logs(logs, x=x, title=title)
    save_figure(figure, out)
    return logs


class _Capture(logging.Handler):
    """Feeds each minicaffe log line, formatted as glog's, to a LogParser."""

    def __init__(self, parser):
        super().__init__()
        from .logs import GlogFormatter
        self.parser = parser
        self.setFormatter(GlogFormatter())

    def emit(self, record):
        try:
            self.parser.feed(self.format(record))
        except Exception:  # pragma: no cover - a plot never stops training
            self.handleError(record)


class LivePlot:
    """Keeps a picture of the loss curves of the training under way up to date.

    ``LivePlot(path).attach(solver)`` reads the ``minicaffe`` logger's lines
    from then on (so the logger must pass INFO lines: the CLI's set-up, or
    pycaffe's default) and, before each iteration, redraws ``path`` if new
    outputs were logged, at most once every ``min_interval`` seconds (longer
    where drawing is slow, so that it takes a tenth of the time at most);
    :meth:`close` draws the last state and stops reading. As a context manager,
    ``with LivePlot(path).attach(solver): solver.solve()``, it closes on leaving
    the block (a failure in the block is never hidden by one in drawing) and
    logs where the picture is.
    """

    min_interval = 1.0

    def __init__(self, path, x="iters", title=None, logger="minicaffe"):
        require_matplotlib()
        if x not in _X_LABELS:
            raise MinicaffeError(f"the x axis is 'iters' or 'seconds', not {x!r}")
        self.path = os.fspath(path)
        self.x = x
        self.title = title if title is not None else "training curves"
        self.parser = LogParser()
        self._logger = logging.getLogger(logger)
        self._handler = _Capture(self.parser)
        self._last_draw = None
        self._wait = self.min_interval
        self.draws = 0

    def attach(self, solver=None):
        """Start reading the log; with a ``solver``, also redraw from its ``on_start`` callback. Returns self."""
        if self._handler not in self._logger.handlers:
            self._logger.addHandler(self._handler)
        if solver is not None:
            solver.add_callback(on_start=self.refresh)
        return self

    def refresh(self, force=False):
        """Redraw if outputs were logged since the last picture (and min_interval has passed, unless ``force``)."""
        if not self.parser.changed:
            return False
        now = time.monotonic()
        if not force and self._last_draw is not None and now - self._last_draw < self._wait:
            return False
        log = self.parser.result(pending=True)
        if not (log.train or log.test):
            return False
        self.parser.changed = False
        save_figure(plot_logs([log], x=self.x, title=self.title, require=False), self.path)
        self._last_draw = time.monotonic()
        # Drawing takes a tenth of the time at most: a slow draw (a long log) waits longer for the next.
        self._wait = max(self.min_interval, 10 * (self._last_draw - now))
        self.draws += 1
        return True

    def close(self):
        """Stop reading the log and draw the last state; returns whether a picture was ever written."""
        self._logger.removeHandler(self._handler)
        self.refresh(force=True)
        return self.draws > 0

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if kind is None:
            self._close_and_say()
            return
        try:      # training failed: draw what was logged, never hiding the failure
            self._close_and_say()
        except Exception:
            pass

    def _close_and_say(self):
        if self.close():
            self._logger.info("Loss curves drawn in %s", self.path)
        else:
            self._logger.warning("No training or test outputs were logged: %s not drawn", self.path)
