"""`minicaffe train` and `test`: Caffe's log lines, flags, signals, the NaN guard."""

import datetime
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import minicaffe as caffe
from minicaffe.cli import main
from minicaffe.errors import NonFiniteError
from minicaffe.layer import Layer
from minicaffe.registry import register
from minicaffe.train import train

NET = '''name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "t" dummy_data_param {
  shape { dim: 8 dim: 4 } shape { dim: 8 dim: 2 } data_filler { type: "gaussian" } data_filler { type: "constant" value: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2
  weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
'''


def write_solver(tmp_path, **overrides):
    """A solver file for NET; keyword arguments replace (or add) its fields."""
    (tmp_path / "net.prototxt").write_text(NET)
    fields = {"net": f'"{tmp_path}/net.prototxt"', "base_lr": 0.05, "lr_policy": '"fixed"', "momentum": 0.9,
              "display": 2, "max_iter": 6, "test_iter": 1, "test_interval": 3, "random_seed": 2,
              "snapshot_prefix": f'"{tmp_path}/snap"'}
    fields.update(overrides)
    path = tmp_path / "solver.prototxt"
    path.write_text("".join(f"{key}: {value}\n" for key, value in fields.items()))
    return str(path)


def run_cli(*args):
    result = CliRunner().invoke(main, list(args))
    return result, result.output                        # click's output holds stdout and stderr


# Caffe's tools/extra/parse_log.py reads logs with these expressions and glog's first two fields.
PARSE_LOG = {
    "iteration": re.compile(r"Iteration (\d+)"),
    "train_output": re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)"),
    "test_output": re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)"),
    "learning_rate": re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)"),
}


def glog_datetime(line, year=2026):
    """parse_log's extract_datetime_from_line: 'I1123 08:01:02.123456 ...'."""
    fields = line.strip().split()
    month, day = int(fields[0][1:3]), int(fields[0][3:])
    clock, micros = fields[1].rsplit(".", 1)
    hour, minute, second = (int(part) for part in clock.split(":"))
    return datetime.datetime(year, month, day, hour, minute, second, int(micros))


def test_train_logs_what_parse_log_reads(tmp_path):
    result, text = run_cli("train", write_solver(tmp_path))
    assert result.exit_code == 0, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert all(re.match(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ \S+:\d+\] ", line) for line in lines), lines[:3]
    start = next(line for line in lines if "Solving tiny" in line)
    glog_datetime(start)                                   # parse_log finds its start time here
    assert any(PARSE_LOG["learning_rate"].search(line) and "Iteration 0, lr = 0.05" in line for line in lines)
    train_outputs = [m.groups() for m in map(PARSE_LOG["train_output"].search, lines) if m]
    assert train_outputs[0][:2] == ("0", "loss") and float(train_outputs[0][2]) > 0
    test_outputs = [m.groups() for m in map(PARSE_LOG["test_output"].search, lines) if m]
    assert [group[0] for group in test_outputs] == ["0", "0", "0"]   # tests at iterations 0, 3 and 6
    assert re.search(r"Iteration 2 \([\d.e+-]+ iter/s, [\d.e+-]+s/2 iters\), loss = [\d.e+-]+", text)
    assert "(* 1 = " in text and "Optimization Done." in text
    assert "\r" not in text                                # no progress line off a terminal


def test_progress_line_on_a_terminal(tmp_path):
    class Terminal:
        def __init__(self):
            self.parts = []

        def isatty(self):
            return True

        def write(self, text):
            self.parts.append(text)

        def flush(self):
            pass
    terminal = Terminal()
    train(write_solver(tmp_path), progress_stream=terminal)
    drawn = "".join(terminal.parts)
    assert "\r[" in drawn and "iters," in drawn and "iter/s" in drawn and "left" in drawn


def test_weights_fine_tune_and_snapshot_resume(tmp_path):
    solver = caffe.Solver(write_solver(tmp_path, snapshot_after_train="false"))
    for blob in solver.net.params["ip"]:
        blob.data[...] = 0.25
    solver.net.save(str(tmp_path / "pretrained.caffemodel"))
    fine = train(write_solver(tmp_path, base_lr=0, max_iter=1), weights=str(tmp_path / "pretrained.caffemodel"))
    assert (fine.net.params["ip"][0].data == 0.25).all()
    assert (fine.test_nets[0].params["ip"][0].data == 0.25).all()

    first = train(write_solver(tmp_path, snapshot=2, max_iter=2))
    assert first.iter == 2 and (tmp_path / "snap_iter_2.solverstate").exists()
    result, text = run_cli("train", "--solver", write_solver(tmp_path, snapshot=100, max_iter=4),
                           "--snapshot", str(tmp_path / "snap_iter_2.solverstate"))
    assert result.exit_code == 0, text
    assert "Restoring previous solver status from" in text and "Iteration 4, Testing net" not in text
    assert (tmp_path / "snap_iter_4.caffemodel").exists()  # snapshot_after_train (default true)

    both, text = run_cli("train", write_solver(tmp_path), "--weights", "a", "--snapshot", "b")
    assert both.exit_code == 1 and "not both" in text


@register("MinicaffeTestSqrt")
class _Sqrt(Layer):
    """sqrt(x): NaN for negative inputs, a layer that poisons a net."""
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        with np.errstate(invalid="ignore"):
            top[0].data[...] = np.sqrt(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff / (2 * top[0].data)


def test_nan_guard_names_the_layer(tmp_path):
    # a diverging run: the squared error overflows first, so the loss layer's top is named
    solver_path = write_solver(tmp_path, base_lr=1e30, max_iter=20)
    with pytest.raises(NonFiniteError, match=r"iteration 1: the loss is not finite; .* top 'loss' of layer "
                                             r"'loss' \(EuclideanLoss\), in Forward") as info:
        train(solver_path)
    assert info.value.layer == "loss" and info.value.iteration == 1
    # a NaN made in the middle of the net is traced to its layer, not to the loss it spoils
    (tmp_path / "net.prototxt").write_text(NET.replace('bottom: "x" top: "y"', 'bottom: "r" top: "y"').replace(
        'layer { name: "ip"', 'layer { name: "root" type: "MinicaffeTestSqrt" bottom: "x" top: "r" }\nlayer { name: "ip"'))
    with pytest.raises(NonFiniteError, match=r"iteration 0: .* top 'r' of layer 'root' \(MinicaffeTestSqrt\)"):
        train(str(tmp_path / "solver.prototxt"))
    result, text = run_cli("train", solver_path)
    assert result.exit_code == 1 and "minicaffe: error: iteration" in text
    result, text = run_cli("train", solver_path, "--no-nan-check")
    assert result.exit_code == 0, text


def test_test_command(tmp_path):
    solver = caffe.Solver(write_solver(tmp_path))
    solver.net.save(str(tmp_path / "w.caffemodel"))
    result, text = run_cli("test", "--model", str(tmp_path / "net.prototxt"), "--weights",
                           str(tmp_path / "w.caffemodel"), "--iterations", "3")
    assert result.exit_code == 0, text
    batches = re.findall(r"Batch (\d), loss = ([\d.e+-]+)", text)
    assert [b for b, _ in batches] == ["0", "1", "2"]
    mean = np.mean([float(v) for _, v in batches])
    final = re.search(r"\] loss = ([\d.e+-]+) \(\* 1 = ([\d.e+-]+) loss\)", text)
    assert final and float(final.group(1)) == pytest.approx(mean, rel=1e-4)
    assert re.search(r"Loss: [\d.e+-]+", text)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_sighup_snapshots_and_sigint_stops(tmp_path):
    solver_path = write_solver(tmp_path, display=1000, test_interval=100000, max_iter=10_000_000)
    process = subprocess.Popen([sys.executable, "-m", "minicaffe", "train", solver_path], cwd=tmp_path,
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while "Starting Optimization" not in (process.stderr.readline() or "") and time.time() < deadline:
            pass
        time.sleep(0.5)
        process.send_signal(signal.SIGHUP)
        while not list(tmp_path.glob("snap_iter_*.solverstate")) and time.time() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob("snap_iter_*.solverstate")), "SIGHUP wrote no snapshot"
        assert process.poll() is None, "SIGHUP must not stop training"
        process.send_signal(signal.SIGINT)
        output, errors = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, errors[-2000:]
    assert "Optimization stopped early." in errors
    assert len(list(tmp_path.glob("snap_iter_*.caffemodel"))) == 2   # SIGHUP's, then the final one


def test_debug_info_logs_per_layer_magnitudes(tmp_path):
    result, text = run_cli("train", write_solver(tmp_path, debug_info="true", max_iter=1, display=1))
    assert result.exit_code == 0, text
    assert re.search(r"\[Forward\] Layer ip, top blob y data: [\d.e+-]+", text)
    assert re.search(r"\[Forward\] Layer ip, param blob 0 data: [\d.e+-]+", text)
    assert re.search(r"\[Backward\] Layer loss, bottom blob y diff: [\d.e+-]+", text)
    assert re.search(r"\[Backward\] Layer ip, param blob 1 diff: [\d.e+-]+", text)


def test_the_seeds_python_loss_trains_from_the_cli(tmp_path):
    """Seed 001's MyCustomLossLayer, in a module beside the net (no PYTHONPATH), learns with no loss_weight."""
    fixtures = os.path.join(os.path.dirname(__file__), "fixtures", "python_layers")
    with open(os.path.join(fixtures, "my_custom_loss.py")) as handle:
        (tmp_path / "my_custom_loss.py").write_text(handle.read())
    (tmp_path / "net.prototxt").write_text('''name: "seed_loss"
layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param {
  shape { dim: 8 dim: 3 } shape { dim: 8 dim: 2 } data_filler { type: "gaussian" } data_filler { type: "constant" value: 0.5 } } }
layer { name: "fc8" type: "InnerProduct" bottom: "data" top: "fc8" inner_product_param { num_output: 2
  weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: -1 } } }
layer { name: "my_custom_loss" type: "Python" bottom: "fc8" bottom: "label" top: "loss"
  python_param { module: "my_custom_loss" layer: "MyCustomLossLayer" } }
''')
    (tmp_path / "solver.prototxt").write_text(f'net: "{tmp_path}/net.prototxt"\nbase_lr: 0.05\nlr_policy: "fixed"\n'
                                              'momentum: 0.9\ndisplay: 10\nmax_iter: 60\nrandom_seed: 4\n'
                                              'snapshot_after_train: false\n')
    result, text = run_cli("train", str(tmp_path / "solver.prototxt"))
    assert result.exit_code == 0, text
    losses = [float(value) for value in re.findall(r"Iteration \d+ \([^)]*\), loss = ([\d.e+-]+)", text)]
    assert len(losses) == 6 and losses[-1] < losses[0] / 4, losses
