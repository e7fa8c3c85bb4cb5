"""Training from Python says what it does, as pycaffe's glog does: Caffe's lines on stderr with no set-up,
never twice once logging is configured; GLOG_minloglevel, init_log, log; the tqdm bar and its switches."""

import logging
import re
import sys
from contextlib import contextmanager

import pytest
import tqdm.auto
from google.protobuf import text_format

import minicaffe as caffe
from minicaffe import logs
from minicaffe.proto.text import parse_solver, parse_text
from minicaffe.train import train

NET = '''name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "t" dummy_data_param {
  shape { dim: 8 dim: 4 } shape { dim: 8 dim: 2 }
  data_filler { type: "gaussian" } data_filler { type: "constant" value: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2
  weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
'''
SOLVER = 'base_lr: 0.05 lr_policy: "fixed" display: 1 max_iter: 3 snapshot_after_train: false random_seed: 1 '
GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ \S+:\d+\] ")


def tiny_solver(extra=""):
    """A solver over NET; the fields in ``extra`` replace SOLVER's."""
    param = parse_solver(SOLVER)
    text_format.Merge(extra, param)
    parse_text(NET, param.net_param)
    return caffe.Solver(param)


@pytest.fixture(autouse=True)
def pristine_logging(monkeypatch):
    """The minicaffe logger as a fresh process has it (no handler, no level, propagating); put back after."""
    logger = logging.getLogger(logs.LOGGER_NAME)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    monkeypatch.setattr(logs, "_init_log_level", None)
    monkeypatch.setattr(logs, "_progress_switch", None)
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    monkeypatch.delenv("MINICAFFE_PROGRESS", raising=False)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


@contextmanager
def unconfigured_logging():
    """As in a plain script or notebook: no handler on the root logger (pytest's are put back after)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    for handler in handlers:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in list(root.handlers):        # basicConfig's
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def test_solve_and_step_log_caffes_lines_to_stderr_with_no_setup(capfd):
    with unconfigured_logging():
        solver = tiny_solver()
        solver.solve()
        solver.step(1)
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert lines and all(GLOG_LINE.match(line) for line in lines), lines[:3]
    assert "solver.py" in lines[0] and lines[0].endswith("Creating training net")
    assert "] Iteration 0, lr = 0.05" in err and "] Iteration 2, lr = 0.05" in err
    assert err.count("Optimization Done.") == 1
    assert "] Iteration 3, lr = 0.05" in err               # the step(1) after solve()


@pytest.mark.parametrize("configured", ["before first use", "after first use"])
def test_configured_logging_gets_the_lines_once(capfd, configured):
    with unconfigured_logging():
        if configured == "before first use":
            logging.basicConfig(level=logging.INFO, format="PY %(levelname)s %(message)s")
        solver = tiny_solver()
        solver.step(1)
        if configured == "after first use":
            logging.basicConfig(level=logging.INFO, format="PY %(levelname)s %(message)s")
        solver.solve()
    err = capfd.readouterr().err
    assert err.count("Optimization Done.") == 1
    assert "PY INFO Optimization Done." in err
    assert err.count("Iteration 1, lr = 0.05") == 1
    if configured == "after first use":                      # until then, glog's lines on stderr
        assert GLOG_LINE.match(err.splitlines()[0])


def test_configured_levels_are_kept(capfd):
    with unconfigured_logging():
        logging.basicConfig(format="PY %(message)s")          # WARNING and up
        tiny_solver().solve()
    assert "Optimization Done." not in capfd.readouterr().err


def test_glog_minloglevel_2_silences_info(capfd, monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "2")
    with unconfigured_logging():
        tiny_solver().solve()
        logging.getLogger(logs.LOGGER_NAME).error("an error still shows")
    err = capfd.readouterr().err
    assert "Iteration" not in err and "Optimization Done." not in err
    assert re.match(r"^E\d{4} .*\] an error still shows$", err.strip())
    assert not logs.progress_wanted()


def test_glog_minloglevel_is_honoured_when_logging_is_configured(caplog, monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "1")
    with caplog.at_level(logging.INFO):                   # pytest's handler on the root: logging is configured
        tiny_solver().solve()
        logs.log("hidden")
        logging.getLogger(logs.LOGGER_NAME).warning("shown")
    assert [record.getMessage() for record in caplog.records] == ["shown"]


def test_init_log_and_log(capfd, monkeypatch):
    with unconfigured_logging():
        logs.log("before init_log: the default")
        logs.init_log(0)
        logging.basicConfig(level=logging.INFO, format="PY %(message)s")
        logs.log("hello from pycaffe")
        logs.init_log(2)
        logs.log("hidden")
        tiny_solver().solve()
        logs.init_log(0, stderr=False)                      # to the handlers logging has: basicConfig's
        logs.log("through logging")
        logs.init_log()                                     # pycaffe's init_log(): the level stays
        logs.log("still through logging, to stderr")
        monkeypatch.setattr(logs, "_init_log_level", None)  # as in a fresh process
        monkeypatch.setenv("GLOG_minloglevel", "3")
        logs.init_log()                                     # glog's level from the environment
        logs.log("hidden too")
    lines = capfd.readouterr().err.splitlines()
    assert re.match(r"^I\d{4} .* test_python_logging\.py:\d+\] before init_log: the default$", lines[0])
    assert re.match(r"^I\d{4} .* test_python_logging\.py:\d+\] hello from pycaffe$", lines[1])   # once, glog's
    assert lines[2] == "PY through logging"
    assert re.match(r"^I\d{4} .*\] still through logging, to stderr$", lines[3]) and len(lines) == 4
    assert logs.min_log_level() == 3


# ---------------------------------------------------------------- the progress bar

class RecordingBar:
    """Stands in for tqdm.auto.tqdm: records how the solver drives its bar."""

    def __init__(self, made, **kwargs):
        self.kwargs = kwargs
        self.disable = kwargs["disable"]
        self.n = kwargs.get("initial", 0)
        self.postfix = None
        self.closed = False
        made.append(self)

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def update(self, count=1):
        self.n += count

    def clear(self):
        pass

    def refresh(self):
        pass

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda **kwargs: RecordingBar(made, **kwargs))
    return made


def test_a_bar_for_solve_and_step_n_but_not_step_1(bars):
    solver = tiny_solver("display: 0 max_iter: 6")
    solver.step(1)
    assert bars == []
    solver.step(3)
    assert len(bars) == 1
    bar = bars[0]
    assert (bar.kwargs["total"], bar.n, bar.closed, bar.kwargs["leave"]) == (3, 3, True, False)
    assert bar.kwargs["disable"] is None and bar.kwargs["file"] is sys.stderr   # tqdm: not off a terminal
    assert re.fullmatch(r"loss=[\d.e+-]+", bar.postfix)
    assert float(bar.postfix[5:]) == pytest.approx(solver.smoothed_loss, rel=1e-3)
    solver.solve()
    assert len(bars) == 2                                   # solve()'s step draws no bar of its own
    bar = bars[1]
    assert (bar.kwargs["total"], bar.kwargs["initial"], bar.n, bar.closed) == (6, 4, 6, True)


def test_the_bar_is_closed_and_detached_on_an_exception(bars, monkeypatch):
    logs.init_log(0)
    solver = tiny_solver()

    def fail():
        raise RuntimeError("boom")
    monkeypatch.setattr(solver, "apply_update", fail)
    with pytest.raises(RuntimeError, match="boom"):
        solver.step(3)
    assert bars[0].closed and solver._bar is None
    assert all(handler.progress is None for handler in logging.getLogger(logs.LOGGER_NAME).handlers)


def test_switches_turn_the_bar_off(bars, monkeypatch):
    solver = tiny_solver("display: 0 max_iter: 100")
    logs.set_progress(False)
    solver.step(2)
    logs.set_progress(None)
    monkeypatch.setenv("MINICAFFE_PROGRESS", "0")
    solver.step(2)
    monkeypatch.delenv("MINICAFFE_PROGRESS")
    logs.init_log(1)
    solver.step(2)
    assert bars == []
    logs.set_progress(True)                                 # forced: drawn even off a terminal
    solver.step(2)
    assert len(bars) == 1 and bars[0].kwargs["disable"] is False


def test_the_cli_draws_its_own_progress_line_not_a_tqdm_bar(bars, tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(f'net: "{tmp_path}/net.prototxt"\n' + SOLVER)
    train(str(tmp_path / "solver.prototxt"))
    assert bars == []


def test_a_forced_bar_is_drawn_on_stderr_around_the_log_lines(capfd):
    logs.set_progress(True)
    logs.init_log(0)
    tiny_solver("max_iter: 4").solve()
    err = capfd.readouterr().err
    assert re.search(r"4/4 \[.*loss=[\d.e+-]+\]", err)
    log_lines = [line.split("\r")[-1] for line in err.split("\n") if "] " in line]
    assert any(line.endswith("] Optimization Done.") and GLOG_LINE.match(line) for line in log_lines)
