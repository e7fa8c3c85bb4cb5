"""Training logs as tables: what BVLC Caffe's ``tools/extra/parse_log.py`` reads, read the same way.

Both minicaffe's logs (``minicaffe train 2> train.log``) and BVLC Caffe's
(``caffe train ... 2> caffe.log``, glog's ``caffe.INFO``) hold glog lines such as::

    I1207 01:02:03.456789 12345 solver.cpp:239] Iteration 100 (9.9 iter/s, 10.1s/100 iters), loss = 0.3
    I1207 01:02:03.456801 12345 solver.cpp:258]     Train net output #0: loss = 0.29 (* 1 = 0.29 loss)
    I1207 01:02:03.456830 12345 sgd_solver.cpp:112] Iteration 100, lr = 0.01
    I1207 01:02:08.000000 12345 solver.cpp:347] Iteration 500, Testing net (#0)
    I1207 01:02:09.000000 12345 solver.cpp:414]     Test net output #0: accuracy = 0.97

:func:`parse_log` turns them into two lists of rows, the training outputs and
the test outputs, with parse_log.py's columns in its order: ``NumIters``,
``Seconds`` (since the ``Solving`` line, from glog's timestamps),
``LearningRate`` (the last ``lr = `` seen), then one column per output name
(``loss``, ``accuracy``, ...) in the order the log first gives them. Values are
floats; :func:`write_csv` / :func:`save_csv_files` write the files
``LOG.train`` and ``LOG.test`` as parse_log.py writes them (Python's ``csv``,
Excel dialect: ``100.0``, ``0.01``, ``nan``; ``\\r\\n`` line ends).

parse_log.py's rules are kept, quirks included, so the tables are the ones
Caffe's users already have:

- a row is pushed once it has as many columns as the first row, or when an
  output of a later iteration arrives; a row still open at the end of the log
  (the only row of a log with one display, or a half-written one) is dropped;
- ``LearningRate`` is the last rate logged when the row began (Caffe logs the
  rate after the training outputs, so a training row shows the previous
  display's rate), and the first row takes the second row's rate;
- an output logged several times in one iteration (a blob with several
  values, or two test nets with the same output names) keeps the last value;
- lines before the first ``Iteration N`` are skipped, and so are lines whose
  glog prefix does not parse; values that are not numbers (``nan``) are not read;
- the year comes from the file's creation time and advances when the month
  goes back (a log across New Year).

Where parse_log.py fails, this module goes on: a log with no ``Solving`` line
before its first iteration (a pycaffe ``solver.step()`` log) starts the clock at
its first glog line (parse_log.py finds nothing in it); a blank line is skipped
(parse_log.py stops with IndexError); a later row with an output name the first
row lacks adds a column at the end (parse_log.py's csv writer raises).

:class:`TrainingLog` also records which outputs are losses (their lines end
``(* W = L loss)``), for :mod:`minicaffe.plot`. :class:`LogParser` reads lines
one at a time, for a log that is still being written (``train --plot``).
"""

from __future__ import annotations

import csv
import datetime
import os
import re

from .errors import MinicaffeError

# parse_log.py's expressions.
ITERATION = re.compile(r"Iteration (\d+)")
TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
# Caffe's suffix on an output with a loss weight: " (* 1 = 0.29 loss)".
LOSS_SUFFIX = re.compile(r"= \S+ \(\* \S+ = \S+ loss\)")

COLUMNS = ("NumIters", "Seconds", "LearningRate")
KINDS = ("train", "test")


def glog_datetime(line, year):
    """The time in a glog line's prefix (``I1207 01:02:03.456789 ...``) in ``year``; ValueError when it has none."""
    fields = line.split(None, 2)
    if len(fields) < 2 or len(fields[0]) < 5:
        raise ValueError("no glog prefix")
    month, day = int(fields[0][1:3]), int(fields[0][3:])
    clock, dot, micros = fields[1].rpartition(".")
    hour, minute, second = (int(part) for part in clock.split(":"))
    return datetime.datetime(year, month, day, hour, minute, second, int(micros))


class TrainingLog:
    """The rows of one training log: ``train`` and ``test``, lists of dicts (see the module's doc).

    ``loss_outputs[kind]``: the output names whose lines carry a loss weight;
    ``iterations``: whether any ``Iteration N`` line was read; ``path``: the file, if any.
    """

    def __init__(self, train, test, loss_outputs, iterations, path=None):
        self.train = train
        self.test = test
        self.loss_outputs = loss_outputs
        self.iterations = iterations
        self.path = path

    def rows(self, kind):
        if kind not in KINDS:
            raise ValueError(f"kind is 'train' or 'test', not {kind!r}")
        return self.train if kind == "train" else self.test

    def columns(self, kind) -> list:
        """The CSV header of ``kind``'s file: the first row's columns, then any a later row adds."""
        names = []
        for row in self.rows(kind):
            names += [name for name in row if name not in names]
        return names

    def outputs(self, kind) -> list:
        """The output names of ``kind`` (the columns after NumIters, Seconds, LearningRate)."""
        return [name for name in self.columns(kind) if name not in COLUMNS]

    def series(self, kind, name, x="iters"):
        """(xs, ys) of one output: x is NumIters (``x="iters"``) or Seconds (``x="seconds"``), rows lacking it skipped."""
        key = _x_column(x)
        rows = [row for row in self.rows(kind) if name in row]
        return [row[key] for row in rows], [row[name] for row in rows]

    def is_loss(self, kind, name) -> bool:
        return name in self.loss_outputs[kind]

    def __repr__(self):
        where = f" {self.path!r}" if self.path else ""
        return (f"<TrainingLog{where}: {len(self.train)} train rows {self.outputs('train')}, "
                f"{len(self.test)} test rows {self.outputs('test')}>")


def _x_column(x):
    try:
        return {"iters": "NumIters", "seconds": "Seconds"}[x]
    except KeyError:
        raise MinicaffeError(f"the x axis is 'iters' or 'seconds', not {x!r}") from None


class LogParser:
    """parse_log.py's reading of a log, one line at a time: :meth:`feed` lines, then :meth:`result`.

    ``year``: the year of the log's first line (glog's lines give none); the
    current year when None.
    """

    def __init__(self, year=None):
        self.year = datetime.date.today().year if year is None else year
        self.start = None          # the Solving line's time: Seconds count from it
        self._first_stamp = None   # the first glog time, the start of a log without a Solving line
        self._last_time = None
        self.iteration = -1.0
        self.learning_rate = float("nan")
        self._lists = {"train": [], "test": []}
        self._open = {"train": None, "test": None}
        self.loss_outputs = {"train": set(), "test": set()}
        self.changed = False       # set when an output is read; whoever draws the rows clears it

    def feed(self, line):
        if self.start is None and not self._find_start(line):
            return
        found = ITERATION.search(line)
        if found:
            self.iteration = float(found.group(1))
        if self.iteration == -1:
            return
        try:
            time = glog_datetime(line, self.year)
            if self._last_time is not None and time.month < self._last_time.month:
                self.year += 1
                time = glog_datetime(line, self.year)
        except ValueError:
            return    # no glog prefix (a wrapped or foreign line), as parse_log.py skips it
        self._last_time = time
        seconds = (time - self.start).total_seconds()
        found = LEARNING_RATE.search(line)
        if found:
            self.learning_rate = float(found.group(1))
        self._output(TRAIN_OUTPUT, "train", line, seconds)
        self._output(TEST_OUTPUT, "test", line, seconds)

    def _find_start(self, line):
        """Before the clock starts: whether ``line`` is to be read (it is the first iteration's, with no Solving line)."""
        if "Solving" in line:
            try:
                self.start = self._last_time = glog_datetime(line, self.year)
            except ValueError:
                pass
            return False      # parse_log.py reads the lines after the Solving line
        if self._first_stamp is None:
            try:
                self._first_stamp = glog_datetime(line, self.year)
            except ValueError:
                return False
        if ITERATION.search(line):
            self.start = self._last_time = self._first_stamp
            return True
        return False

    def _output(self, expression, kind, line, seconds):
        rows, row = self._lists[kind], self._open[kind]
        found = expression.search(line)
        if found:
            try:
                value = float(found.group(3))
            except ValueError:    # '-' of '-inf', '+' of '+nan': no number
                found = None
        if found:
            if row is None or row["NumIters"] != self.iteration:
                if row is not None:
                    rows.append(row)
                row = {"NumIters": self.iteration, "Seconds": seconds, "LearningRate": self.learning_rate}
            name = found.group(2)
            row[name] = value
            if LOSS_SUFFIX.search(line, found.start(3) - 2):
                self.loss_outputs[kind].add(name)
            self.changed = True
        if row is not None and rows and len(row) == len(rows[0]):
            rows.append(row)
            row = None
        self._open[kind] = row

    def result(self, pending=False, path=None) -> TrainingLog:
        """The rows so far. ``pending=True`` adds the rows still open (parse_log.py drops them at the end)."""
        lists = {}
        for kind in KINDS:
            rows = [dict(row) for row in self._lists[kind]]
            if pending and self._open[kind] is not None:
                rows.append(dict(self._open[kind]))
            if len(rows) > 1:        # parse_log.py's fix_initial_nan_learning_rate
                rows[0]["LearningRate"] = rows[1]["LearningRate"]
            lists[kind] = rows
        return TrainingLog(lists["train"], lists["test"], {kind: set(names) for kind, names in
                                                           self.loss_outputs.items()},
                           self.iteration != -1, path)


def log_year(path) -> int:
    """The year parse_log.py gives a log's first line: the year of the file's creation (status change) time."""
    return datetime.datetime.fromtimestamp(os.path.getctime(path)).year


def parse_log(path, pending=False, year=None) -> TrainingLog:
    """Read a Caffe or minicaffe training log into its train and test rows, as parse_log.py does.

    ``pending=True`` keeps the rows parse_log.py leaves out (still open when the
    log ends). ``year``: of the log's first line; by default the year of the
    file's creation time, as parse_log.py takes it.
    """
    path = os.fspath(path)
    try:
        parser = LogParser(log_year(path) if year is None else year)
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                parser.feed(line)
    except IsADirectoryError:
        raise MinicaffeError(f"{path}: is a folder, not a training log") from None
    except OSError as exc:
        raise MinicaffeError(f"{path}: cannot read the log: {exc.strerror or exc}") from None
    return parser.result(pending=pending, path=path)


def require_rows(log, what="rows"):
    """``log`` if it has rows; otherwise a MinicaffeError saying what the log lacks."""
    name = log.path or "the log"
    if not log.iterations:
        raise MinicaffeError(f"{name}: no training iterations in this log (no 'Iteration N' lines in glog's "
                             "format); give the log of `minicaffe train` or `caffe train` (their stderr)")
    if not (log.train or log.test):
        raise MinicaffeError(f"{name}: no 'Train net output' or 'Test net output' lines to read {what} from "
                             "(a solver with display: 0 and no test nets logs none)")
    return log


def write_csv(path, rows, delimiter=",", columns=None):
    """Write ``rows`` (dicts) as parse_log.py's write_csv does: a header, then one line per row."""
    if len(delimiter) != 1:
        raise MinicaffeError(f"the delimiter is one character, not {delimiter!r}")
    if columns is None:
        columns = []
        for row in rows:
            columns += [name for name in row if name not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, dialect="excel", delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def save_csv_files(log, output_dir, delimiter=","):
    """Write ``LOG.train`` and ``LOG.test`` in ``output_dir`` (made if missing), each only if it has rows.

    Returns {kind: path written or None}, as parse_log.py names its files:
    the log's file name with ``.train`` / ``.test`` appended.
    """
    if not log.path:
        raise MinicaffeError("the log has no file name to name the CSV files after")
    os.makedirs(output_dir, exist_ok=True)
    written = {}
    for kind in KINDS:
        rows = log.rows(kind)
        if not rows:
            written[kind] = None
            continue
        target = os.path.join(output_dir, os.path.basename(log.path) + "." + kind)
        write_csv(target, rows, delimiter, log.columns(kind))
        written[kind] = target
    return written
