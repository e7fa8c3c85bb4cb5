"""Loss curves: `minicaffe parse-log` (Caffe's tools/extra/parse_log.py), `minicaffe plot`, `train --plot`."""

import csv
import datetime
import io
import math
import sys

import pytest
from click.testing import CliRunner

from minicaffe.cli import main
from minicaffe.errors import MinicaffeError
from minicaffe.plot import LivePlot, plot_logs
from minicaffe.training_log import LogParser, parse_log

# An excerpt of a BVLC Caffe training log (LeNet, `caffe train`, glog's stderr) in Caffe's exact
# format: the solver's dump, the set-up lines, then tests every 200 and displays every 100
# iterations with a "step" policy (lr 0.01, 0.001, 0.0001, 1e-05), a data layer's line, the
# snapshot at the end, and New Year's midnight between iterations 100 and 200.
CAFFE_LOG = """\
I1231 23:59:45.105342 12345 caffe.cpp:218] Using GPUs 0
I1231 23:59:45.182145 12345 caffe.cpp:223] GPU 0: GeForce GTX 1080 Ti
I1231 23:59:45.631188 12345 solver.cpp:44] Initializing solver from parameters: 
test_iter: 100
test_interval: 200
base_lr: 0.01
display: 100
max_iter: 400
lr_policy: "step"
gamma: 0.1
stepsize: 100
snapshot_prefix: "examples/mnist/lenet"
net: "examples/mnist/lenet_train_test.prototxt"
I1231 23:59:45.631400 12345 solver.cpp:87] Creating training net from net file: examples/mnist/lenet_train_test.prototxt
I1231 23:59:46.902110 12345 solver.cpp:172] Creating test net (#0) specified by net file: examples/mnist/lenet_train_test.prototxt
I1231 23:59:47.480214 12345 solver.cpp:56] Solver scaffolding done.
I1231 23:59:47.480700 12345 caffe.cpp:248] Starting Optimization
I1231 23:59:48.500000 12345 solver.cpp:272] Solving LeNet
I1231 23:59:48.500040 12345 solver.cpp:273] Learning Rate Policy: step
I1231 23:59:48.501000 12345 solver.cpp:330] Iteration 0, Testing net (#0)
I1231 23:59:50.250000 12345 solver.cpp:397]     Test net output #0: accuracy = 0.0881
I1231 23:59:50.250013 12345 solver.cpp:397]     Test net output #1: loss = 2.32857 (* 1 = 2.32857 loss)
I1231 23:59:50.262000 12345 solver.cpp:218] Iteration 0 (0 iter/s, 1.761s/100 iters), loss = 2.30906
I1231 23:59:50.262020 12345 solver.cpp:237]     Train net output #0: loss = 2.30906 (* 1 = 2.30906 loss)
I1231 23:59:50.262051 12345 sgd_solver.cpp:105] Iteration 0, lr = 0.01
I1231 23:59:55.101200 12345 solver.cpp:218] Iteration 100 (20.6626 iter/s, 4.8396s/100 iters), loss = 0.215378
I1231 23:59:55.101230 12345 solver.cpp:237]     Train net output #0: loss = 0.215378 (* 1 = 0.215378 loss)
I1231 23:59:55.101260 12345 sgd_solver.cpp:105] Iteration 100, lr = 0.001
I1231 23:59:58.700312 12345 data_layer.cpp:73] Restarting data prefetching from start.
I1231 23:59:59.934000 12345 solver.cpp:330] Iteration 200, Testing net (#0)
I0101 00:00:01.650400 12345 solver.cpp:397]     Test net output #0: accuracy = 0.9716
I0101 00:00:01.650420 12345 solver.cpp:397]     Test net output #1: loss = 0.0917215 (* 1 = 0.0917215 loss)
I0101 00:00:01.662100 12345 solver.cpp:218] Iteration 200 (14.2386 iter/s, 6.5609s/100 iters), loss = 0.148152
I0101 00:00:01.662130 12345 solver.cpp:237]     Train net output #0: loss = 0.148152 (* 1 = 0.148152 loss)
I0101 00:00:01.662170 12345 sgd_solver.cpp:105] Iteration 200, lr = 0.0001
I0101 00:00:06.480900 12345 solver.cpp:218] Iteration 300 (20.7527 iter/s, 4.8187s/100 iters), loss = 0.0763521
I0101 00:00:06.480930 12345 solver.cpp:237]     Train net output #0: loss = 0.0763521 (* 1 = 0.0763521 loss)
I0101 00:00:06.480960 12345 sgd_solver.cpp:105] Iteration 300, lr = 1e-05
I0101 00:00:11.300000 12345 solver.cpp:447] Snapshotting to binary proto file examples/mnist/lenet_iter_400.caffemodel
I0101 00:00:11.310000 12345 sgd_solver.cpp:273] Snapshotting solver state to binary proto file examples/mnist/lenet_iter_400.solverstate
I0101 00:00:11.322000 12345 solver.cpp:310] Iteration 400, loss = 0.0887764
I0101 00:00:11.322400 12345 solver.cpp:330] Iteration 400, Testing net (#0)
I0101 00:00:13.049000 12345 solver.cpp:397]     Test net output #0: accuracy = 0.9774
I0101 00:00:13.049016 12345 solver.cpp:397]     Test net output #1: loss = 0.0712354 (* 1 = 0.0712354 loss)
I0101 00:00:13.049100 12345 solver.cpp:315] Optimization Done.
I0101 00:00:13.049200 12345 caffe.cpp:259] Optimization Done.
"""

# What parse_log.py writes for it, worked out by hand. Seconds count from the Solving line
# (23:59:48.5) across midnight; a row's LearningRate is the last `lr = ` before the row began
# (Caffe logs it after the outputs), and the first row takes the second row's; the final
# "Iteration 400, loss =" line has no Train net output, so no training row.
CAFFE_TRAIN_CSV = (
    "NumIters,Seconds,LearningRate,loss\r\n"
    "0.0,1.76202,0.01,2.30906\r\n"
    "100.0,6.60123,0.01,0.215378\r\n"
    "200.0,13.16213,0.001,0.148152\r\n"
    "300.0,17.98093,0.0001,0.0763521\r\n"
)
CAFFE_TEST_CSV = (
    "NumIters,Seconds,LearningRate,accuracy,loss\r\n"
    "0.0,1.75,0.001,0.0881,2.32857\r\n"
    "200.0,13.1504,0.001,0.9716,0.0917215\r\n"
    "400.0,24.549,1e-05,0.9774,0.0712354\r\n"
)

# A tiny classifier for minicaffe's own logs: a training loss, and a test accuracy and loss.
NET = '''name: "tinyclass"
layer { name: "data" type: "DummyData" top: "x" top: "label" dummy_data_param {
  shape { dim: 8 dim: 4 } shape { dim: 8 } data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3
  weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "accuracy" type: "Accuracy" bottom: "y" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "label" top: "loss" }
'''


def write_solver(tmp_path, **overrides):
    (tmp_path / "net.prototxt").write_text(NET)
    fields = {"net": f'"{tmp_path}/net.prototxt"', "base_lr": 0.05, "lr_policy": '"step"', "gamma": 0.5,
              "stepsize": 2, "momentum": 0.9, "display": 2, "max_iter": 6, "test_iter": 1, "test_interval": 3,
              "random_seed": 2, "snapshot_after_train": "false"}
    fields.update(overrides)
    path = tmp_path / "solver.prototxt"
    path.write_text("".join(f"{key}: {value}\n" for key, value in fields.items()))
    return str(path)


def run_cli(*args):
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    return result, result.output                   # stdout and stderr together


def read_csv(path):
    with open(path, newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


@pytest.fixture
def caffe_log(tmp_path):
    path = tmp_path / "caffe.INFO"
    path.write_text(CAFFE_LOG)
    return path


@pytest.fixture(scope="module")
def minicaffe_log(tmp_path_factory):
    """A real `minicaffe train` log (stderr) of the tiny classifier: displays at 0, 2, 4; tests at 0, 3, 6."""
    folder = tmp_path_factory.mktemp("run")
    result, text = run_cli("train", write_solver(folder))
    assert result.exit_code == 0, text
    path = folder / "train.log"
    path.write_text(text)
    return path


def stamp(line):
    """glog's time of a line, read here by hand: 'I1207 01:02:03.456789 ...' (the year does not matter)."""
    day, clock = line.split()[:2]
    return datetime.datetime.strptime(f"2001{day[1:]} {clock}", "%Y%m%d %H:%M:%S.%f")


def expected_minicaffe_rows(path):
    """The rows of the minicaffe log, from its lines read by hand: the iterations and learning rates
    follow from the solver (step policy: 0.05, 0.025 from iteration 2, 0.0125 from 4)."""
    lines = path.read_text().splitlines()
    start = stamp(next(line for line in lines if "] Solving tinyclass" in line))
    values = {"Train": [], "Test": []}
    for line in lines:
        for kind in values:
            if f"{kind} net output #" in line:
                name, value = line.split(": ", 1)[1].split(" = ")[:2]
                values[kind].append((name, float(value.split()[0]), (stamp(line) - start).total_seconds()))
    train = [{"NumIters": it, "Seconds": s, "LearningRate": lr, "loss": v}
             for it, lr, (name, v, s) in zip([0.0, 2.0, 4.0], [0.05, 0.05, 0.025], values["Train"])]
    assert [name for name, _, _ in values["Train"]] == ["loss"] * 3
    tests = values["Test"]
    assert [name for name, _, _ in tests] == ["accuracy", "loss"] * 3
    test = [{"NumIters": it, "Seconds": tests[2 * i][2], "LearningRate": lr, "accuracy": tests[2 * i][1],
             "loss": tests[2 * i + 1][1]}
            for i, (it, lr) in enumerate(zip([0.0, 3.0, 6.0], [0.025, 0.025, 0.0125]))]
    return train, test


# ------------------------------------------------------------------ parse-log

def test_parse_log_writes_parse_log_py_files_for_a_caffe_log(caffe_log, tmp_path):
    result, text = run_cli("parse-log", caffe_log, tmp_path / "out")
    assert result.exit_code == 0, text
    assert (tmp_path / "out" / "caffe.INFO.train").read_bytes().decode() == CAFFE_TRAIN_CSV
    assert (tmp_path / "out" / "caffe.INFO.test").read_bytes().decode() == CAFFE_TEST_CSV
    assert "4 rows (NumIters, Seconds, LearningRate, loss)" in text
    parsed = parse_log(caffe_log)
    assert parsed.loss_outputs == {"train": {"loss"}, "test": {"loss"}}     # accuracy has no loss weight


def test_parse_log_takes_the_delimiter_in_both_spellings(caffe_log, tmp_path):
    result, text = run_cli("parse-log", caffe_log, tmp_path, "-delimiter=;")
    assert result.exit_code == 0, text
    assert (tmp_path / "caffe.INFO.test").read_bytes().decode() == CAFFE_TEST_CSV.replace(",", ";")
    result, text = run_cli("parse-log", caffe_log, tmp_path, "--delimiter", "\\t")
    assert (tmp_path / "caffe.INFO.train").read_bytes().decode() == CAFFE_TRAIN_CSV.replace(",", "\t")
    result, text = run_cli("parse-log", caffe_log, tmp_path, "--delimiter", ";;")
    assert result.exit_code == 2 and "one character" in text


def test_parse_log_reads_a_minicaffe_training_log(minicaffe_log, tmp_path):
    result, text = run_cli("parse-log", minicaffe_log, tmp_path)
    assert result.exit_code == 0, text
    train, test = expected_minicaffe_rows(minicaffe_log)
    assert (tmp_path / "train.log.train").read_text().splitlines()[0] == "NumIters,Seconds,LearningRate,loss"
    assert (tmp_path / "train.log.test").read_text().splitlines()[0] == \
        "NumIters,Seconds,LearningRate,accuracy,loss"
    assert read_csv(tmp_path / "train.log.train") == train
    assert read_csv(tmp_path / "train.log.test") == test
    assert parse_log(minicaffe_log).loss_outputs == {"train": {"loss"}, "test": {"loss"}}


def test_parser_rules_kept_and_where_it_goes_on(tmp_path):
    # One display only: parse_log.py drops the row still open at the end; pending=True keeps it.
    lines = CAFFE_LOG.splitlines(keepends=True)[:26]
    assert lines[-1].endswith("Iteration 100 (20.6626 iter/s, 4.8396s/100 iters), loss = 0.215378\n")
    parsed_path = tmp_path / "short.log"
    parsed_path.write_text("".join(lines))
    short = parse_log(parsed_path)
    assert short.train == [] and short.test == []
    kept = parse_log(parsed_path, pending=True)
    assert [(row["NumIters"], row["Seconds"], row["loss"]) for row in kept.train] == [(0.0, 1.76202, 2.30906)]
    assert math.isnan(kept.train[0]["LearningRate"])     # logged after the outputs, and no second row
    assert [row["NumIters"] for row in kept.test] == [0.0]
    # pycaffe's solver.step() logs no Solving line: the clock starts at the first glog line;
    # blank and foreign lines are skipped.
    parser = LogParser(2024)
    for line in ["I0301 10:00:00.000000 1 solver.py:160] Creating training net", "",
                 "I0301 10:00:01.000000 1 solver.py:249] Iteration 0 (0 iter/s, 0s/1 iters), loss = 1",
                 "I0301 10:00:01.000000 1 solver.py:340]     Train net output #0: loss = 1 (* 1 = 1 loss)",
                 "some warning printed by a library", "",
                 "I0301 10:00:03.500000 1 solver.py:249] Iteration 1 (1 iter/s, 2.5s/1 iters), loss = 0.5",
                 "I0301 10:00:03.500000 1 solver.py:340]     Train net output #0: loss = 0.5 (* 1 = 0.5 loss)",
                 "I0301 10:00:03.600000 1 solver.py:340]     Train net output #0: loss = nan (* 1 = nan loss)"]:
        parser.feed(line)
    rows = parser.result().train
    assert [(row["NumIters"], row["Seconds"], row["loss"]) for row in rows] == [(0.0, 1.0, 1.0), (1.0, 3.5, 0.5)]
    assert all(math.isnan(row["LearningRate"]) for row in rows)


# ------------------------------------------------------------------ plot

def lines_by_label(figure):
    return {line.get_label(): line for axes in figure.axes for line in axes.get_lines()}


@pytest.mark.parametrize("x, column", [("iters", "NumIters"), ("seconds", "Seconds")])
def test_plot_lines_are_the_logs_values(caffe_log, minicaffe_log, x, column):
    train, test = expected_minicaffe_rows(minicaffe_log)
    caffe_train = list(csv.DictReader(io.StringIO(CAFFE_TRAIN_CSV)))
    caffe_test = list(csv.DictReader(io.StringIO(CAFFE_TEST_CSV)))
    expected = {}
    for label, rows, kind in (("caffe.INFO", caffe_train, "train"), ("caffe.INFO", caffe_test, "test"),
                              ("train.log", train, "train"), ("train.log", test, "test")):
        for name in [key for key in rows[0] if key not in ("NumIters", "Seconds", "LearningRate")]:
            expected[f"{kind} {name} ({label})"] = ([float(row[column]) for row in rows],
                                                    [float(row[name]) for row in rows])
    figure = plot_logs([caffe_log, minicaffe_log], x=x)
    lines = lines_by_label(figure)
    assert sorted(lines) == sorted(expected)
    for label, (xs, ys) in expected.items():
        assert list(lines[label].get_xdata()) == xs, label
        assert list(lines[label].get_ydata()) == ys, label
    loss_axes, metric_axes = figure.axes
    assert {line.get_label() for line in metric_axes.get_lines()} == {"test accuracy (caffe.INFO)",
                                                                     "test accuracy (train.log)"}
    assert metric_axes.get_xlabel() == {"iters": "iterations", "seconds": "seconds"}[x]
    # One log: labels without the file name, the same values.
    single = lines_by_label(plot_logs(caffe_log, x=x))
    assert sorted(single) == ["test accuracy", "test loss", "train loss"]
    assert list(single["test loss"].get_ydata()) == [2.32857, 0.0917215, 0.0712354]


def test_plot_command_writes_the_picture(caffe_log, minicaffe_log, tmp_path):
    out = tmp_path / "curves.png"
    result, text = run_cli("plot", caffe_log, minicaffe_log, "--out", out, "--x", "seconds")
    assert result.exit_code == 0, text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "train loss (4 points), test accuracy (3 points), test loss (3 points)" in text


# ------------------------------------------------------------------ train --plot

def test_train_plot_draws_while_training(tmp_path, monkeypatch):
    seen = {}
    original_close = LivePlot.close

    def close(self):
        seen["live"], seen["draws before the end"] = self, self.draws
        return original_close(self)

    monkeypatch.setattr(LivePlot, "close", close)
    monkeypatch.setattr(LivePlot, "min_interval", 0.0)
    out = tmp_path / "live.png"
    result, text = run_cli("train", write_solver(tmp_path), "--plot", out)
    assert result.exit_code == 0, text
    assert seen["draws before the end"] >= 1          # drawn from the solver's callback, during training
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Loss curves drawn in {out}" in text
    assert not list(tmp_path.glob("live.png.*"))      # no temporary file left
    # The picture holds the rows `parse-log` reads from the same run's log.
    log_path = tmp_path / "train.log"
    log_path.write_text(text)
    drawn = seen["live"].parser.result(pending=True)
    train, test = expected_minicaffe_rows(log_path)
    assert drawn.train == train and drawn.test == test


# ------------------------------------------------------------------ errors

def test_cli_errors(tmp_path, monkeypatch):
    missing = tmp_path / "nothere.log"
    for command in (["plot", missing], ["parse-log", missing, tmp_path]):
        result, text = run_cli(*command)
        assert result.exit_code == 1 and f"{missing}: cannot read the log" in text, text
    setup_only = tmp_path / "setup.log"
    setup_only.write_text(CAFFE_LOG.split("I1231 23:59:48.501000")[0])     # stops before iteration 0
    for command in (["plot", setup_only], ["parse-log", setup_only, tmp_path]):
        result, text = run_cli(*command)
        assert result.exit_code == 1 and f"{setup_only}: no training iterations in this log" in text, text
    assert not list(tmp_path.glob("setup.log.*"))
    no_outputs = tmp_path / "quiet.log"
    no_outputs.write_text("".join(line + "\n" for line in CAFFE_LOG.splitlines() if "net output" not in line))
    result, text = run_cli("plot", no_outputs)
    assert result.exit_code == 1 and "no 'Train net output' or 'Test net output' lines" in text
    with pytest.raises(MinicaffeError, match="'iters' or 'seconds'"):
        plot_logs(tmp_path / "x.log", x="epochs")


def test_missing_matplotlib_names_the_extra(caffe_log, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result, text = run_cli("plot", caffe_log, "--out", tmp_path / "a.png")
    assert result.exit_code == 1 and "pip install 'minicaffe[plot]'" in text
    result, text = run_cli("train", write_solver(tmp_path), "--plot", tmp_path / "a.png")
    assert result.exit_code == 1 and "pip install 'minicaffe[plot]'" in text
    assert "Solving" not in text                      # refused before training
