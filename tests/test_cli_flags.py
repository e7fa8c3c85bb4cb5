"""Caffe's command lines as they are: gflags spellings of the options, the net named once, Caffe's command names.

Most tests record what a command hands the library (nothing runs); one trains for real in a subprocess,
as Caffe's examples/*/train_*.sh scripts call the tool.
"""

import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from minicaffe.cli import main
from tests.test_cli import run
from tests.test_train_cli import NET, write_solver


@pytest.fixture
def calls(monkeypatch):
    """Replaces the library functions the commands call with recorders: name -> [(args, kwargs), ...]."""
    import minicaffe.logs
    import minicaffe.timing
    import minicaffe.train

    recorded = {}

    def recorder(name, result=None):
        def record(*args, **kwargs):
            recorded.setdefault(name, []).append((args, kwargs))
            return result
        return record
    monkeypatch.setattr(minicaffe.logs, "setup_logging", recorder("setup_logging"))
    monkeypatch.setattr(minicaffe.train, "train", recorder("train"))
    monkeypatch.setattr(minicaffe.train, "test", recorder("test"))
    monkeypatch.setattr("minicaffe.cli._select_device", recorder("select_device"))
    monkeypatch.setattr(minicaffe.timing, "run_time", recorder("run_time", result=[]))
    monkeypatch.setattr("minicaffe.cli.device_query_lines", recorder("device_query_lines", result=[]))
    return recorded


def parsed(calls, name, *args):
    """What `minicaffe ARGS` handed to the library function ``name`` (the command must succeed)."""
    calls.clear()
    result = run(*args)
    assert result.exit_code == 0, result.output
    [call] = calls[name]
    return call


TRAIN = ["--solver", "s.prototxt", "--weights", "w.caffemodel", "--gpu", "1", "--level", "2",
         "--stage", "a", "--stage", "b", "--sigint-effect", "none", "--sighup-effect", "stop", "--no-nan-check"]


@pytest.mark.parametrize("gflags", [
    ["-solver", "s.prototxt", "-weights", "w.caffemodel", "-gpu", "1", "-level", "2", "-stage", "a,b",
     "-sigint_effect", "none", "-sighup_effect", "stop", "-nonan_check"],
    ["-solver=s.prototxt", "-weights=w.caffemodel", "-gpu=1", "-level=2", "-stage=a,b", "-sigint_effect=none",
     "-sighup_effect=stop", "-nan_check=false"],
    ["--solver=s.prototxt", "--weights=w.caffemodel", "--gpu=1", "--level=2", "--stage=a,b",
     "--sigint_effect=none", "--sighup_effect=stop", "-no_nan_check"],
    ["--solver", "s.prototxt", "-weights", "w.caffemodel", "--gpu", "1", "-level", "2", "-stage", "a",
     "--stage=b", "--sigint_effect", "none", "-sighup-effect=stop", "-nan_check=0"],
])
def test_train_gflags_spellings_parse_as_the_double_dash_form(calls, gflags):
    expected = parsed(calls, "train", "train", *TRAIN)
    assert expected == (("s.prototxt",), dict(weights="w.caffemodel", snapshot=None, gpu="1", level=2,
                                              stages=("a", "b"), sigint_effect="none", sighup_effect="stop",
                                              nan_check=False))
    assert parsed(calls, "train", "train", *gflags) == expected


@pytest.mark.parametrize("spelling, nan_check", [
    ([], True), (["-nan_check"], True), (["-nan_check=true"], True), (["-nan_check=f"], False),
    (["-nonan_check"], False), (["--no-nan-check"], False), (["-no_nan_check=false"], True),
])
def test_gflags_booleans(calls, spelling, nan_check):
    _, kwargs = parsed(calls, "train", "train", "-solver", "s.prototxt", *spelling)
    assert kwargs["nan_check"] is nan_check


def test_snapshot_and_several_gpus_refused_in_one_process(calls):
    _, kwargs = parsed(calls, "train", "train", "-solver", "s.prototxt", "-snapshot", "x.solverstate", "-gpu", "1")
    assert kwargs["snapshot"] == "x.solverstate" and kwargs["gpu"] == "1"
    for several in ("all", "0,1"):
        calls.clear()
        refused = run("train", "-solver", "s.prototxt", "-gpu", several)
        assert refused.exit_code == 1 and "mpiexec -n K minicaffe train" in refused.output
        assert "train" not in calls
    bad = run("train", "-solver", "s.prototxt", "-gpu", "first")
    assert bad.exit_code == 2 and "'first': give a device id" in bad.output


def test_test_gflags_and_a_positional_net(calls):
    expected = parsed(calls, "test", "test", "--model", "n.prototxt", "--weights", "w.caffemodel", "--gpu", "0",
                      "--iterations", "3", "--level", "1", "--stage", "a", "--stage", "b")
    assert expected == (("n.prototxt", "w.caffemodel"), dict(iterations=3, gpu="0", level=1, stages=("a", "b")))
    assert parsed(calls, "test", "test", "-model", "n.prototxt", "-weights", "w.caffemodel", "-gpu", "0",
                  "-iterations", "3", "-level", "1", "-stage", "a,b", "-phase", "TEST") == expected
    assert parsed(calls, "test", "test", "-model=n.prototxt", "-weights=w.caffemodel", "-gpu=0", "-iterations=3",
                  "-level=1", "-stage=a,b") == expected
    assert parsed(calls, "test", "test", "n.prototxt", "--weights", "w.caffemodel", "--gpu", "0",
                  "--iterations", "3", "--level", "1", "--stage", "a,b") == expected


def test_test_phase_is_accepted_and_test_all_the_same(calls):
    result = run("test", "n.prototxt", "-weights", "w.caffemodel", "-phase", "TRAIN")
    assert result.exit_code == 0, result.output
    assert "--phase TRAIN is ignored" in result.output
    assert calls["test"][0][0] == ("n.prototxt", "w.caffemodel")


def test_time_gflags_model_and_positional_net(calls):
    expected = parsed(calls, "run_time", "time", "n.prototxt", "--iterations", "2", "--phase", "TEST",
                      "--level", "1", "--stage", "deploy")
    assert expected == (("n.prototxt",), dict(iterations=2, phase="TEST", level=1, stages=("deploy",)))
    assert parsed(calls, "run_time", "time", "--model", "n.prototxt", "--iterations", "2", "--phase", "test",
                  "--level", "1", "--stage", "deploy") == expected
    # Caffe's docs/tutorial/interfaces.md line, weights and all
    assert parsed(calls, "run_time", "time", "-model", "n.prototxt", "-weights", "w.caffemodel", "-gpu", "0",
                  "-iterations", "2", "-phase", "TEST", "-level=1", "-stage=deploy") == expected
    assert calls["select_device"] == [(("0",), {})]
    _, kwargs = parsed(calls, "run_time", "time", "-model=n.prototxt")
    assert kwargs["phase"] == "TRAIN" and kwargs["iterations"] == 50          # caffe time's defaults


def test_time_takes_one_gpu_and_refuses_several(monkeypatch):
    import minicaffe.mode
    import minicaffe.timing

    modes = []
    monkeypatch.setattr(minicaffe.timing, "run_time", lambda *args, **kwargs: [])
    monkeypatch.setattr(minicaffe.mode, "set_device", lambda device: modes.append(device))
    monkeypatch.setattr(minicaffe.mode, "set_mode_gpu", lambda: modes.append("gpu"))
    monkeypatch.setattr(minicaffe.mode, "set_mode_cpu", lambda: modes.append("cpu"))
    for gpu in ("1", None):
        result = run("time", "n.prototxt", *(["-gpu", gpu] if gpu else []))
        assert result.exit_code == 0, result.output
    assert modes == [1, "gpu", "cpu"]
    for several in ("1,0", "all"):
        refused = run("time", "n.prototxt", "-gpu", several)
        assert refused.exit_code == 1 and "mpiexec -n K" in refused.output


@pytest.mark.parametrize("command, args, message", [
    ("train", ["s.prototxt", "--solver", "t.prototxt"], "give the solver once"),
    ("train", [], "give the solver: as SOLVER_FILE or --solver"),
    ("test", ["n.prototxt", "-model", "m.prototxt", "-weights", "w"], "give the net once"),
    ("test", ["-weights", "w"], "give the net: as NET or --model NET"),
    ("time", ["n.prototxt", "-model=m.prototxt"], "give the net once"),
    ("time", ["-iterations", "2"], "give the net: as NET or --model NET"),
])
def test_the_net_is_named_once(calls, command, args, message):
    result = run(command, *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not calls.get("train") and not calls.get("test") and not calls.get("run_time")


@pytest.mark.parametrize("args, named", [
    (["train", "s.prototxt", "-foo"], "-foo"),
    (["train", "s.prototxt", "-foo=1"], "-foo"),
    (["time", "n.prototxt", "-sigint_effect=none"], "-sigint_effect"),        # train's flag, not time's
    (["train", "s.prototxt", "--foo_bar"], "--foo_bar"),
])
def test_unknown_flags_are_named_as_typed(calls, args, named):
    result = run(*args)
    assert result.exit_code == 2
    assert re.search(rf"No such option:? '?{re.escape(named)}'?(\W|$)", result.output), result.output


def test_near_misses_suggest_the_option():
    result = run("time", "n.prototxt", "-iteration", "3")
    assert result.exit_code == 2 and "--iterations" in result.output, result.output
    bad_boolean = run("train", "s.prototxt", "-nan_check=maybe")
    assert bad_boolean.exit_code == 2 and "takes true or false" in bad_boolean.output


def test_values_positionals_and_after_double_dash_are_left_alone(calls):
    _, kwargs = parsed(calls, "train", "train", "-solver", "s.prototxt", "-level", "-1", "-weights", "-odd_name")
    assert kwargs["level"] == -1 and kwargs["weights"] == "-odd_name"
    args, _ = parsed(calls, "run_time", "time", "-iterations", "1", "--", "-net_file.prototxt")
    assert args == ("-net_file.prototxt",)


def test_device_query_by_caffes_name(calls):
    parsed(calls, "device_query_lines", "device_query")
    assert calls["device_query_lines"] == [((None,), {})]
    assert parsed(calls, "device_query_lines", "device_query", "-gpu", "0,1") == (([0, 1],), {})
    assert parsed(calls, "device_query_lines", "device-query", "--gpu=all") == ((None,), {})
    unknown = run("no_such_command")
    assert unknown.exit_code == 2 and "no_such_command" in unknown.output


def test_check_takes_gflags(write_file):
    path = write_file("s.prototxt", 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                      'layer { name: "deploy_only" type: "ReLU" bottom: "x" top: "y" include { stage: "deploy" } }\n'
                      'layer { name: "deep" type: "ReLU" bottom: "x" top: "z" include { min_level: 2 } }\n'
                      'layer { name: "both" type: "ReLU" bottom: "x" top: "w" include { stage: "a" stage: "b" } }\n')
    staged = run("check", path, "-stage", "deploy,a", "-stage=b", "-level=2", "-phase", "TEST")
    assert staged.exit_code == 0, staged.output
    assert all(name in staged.output for name in ("deploy_only", "deep", "both"))
    assert "state: phase TEST" in staged.output


def test_help_mentions_the_gflags_forms():
    assert run("--help").output.count("gflags") == 1
    for command in ("train", "test", "time", "check", "forward"):
        text = run(command, "--help").output
        assert "-option_name=VALUE" in text and "-noflag" in text, command


def test_time_by_model_runs(write_file):
    path = write_file("tiny.prototxt", NET)
    result = CliRunner().invoke(main, ["time", "-model", path, "-iterations", "1", "-phase", "TEST"])
    assert result.exit_code == 0, result.output
    assert "ip\tforward: " in result.output and result.output.rstrip().endswith("*** Benchmark ends ***")


def test_train_script_line_runs_in_a_subprocess(tmp_path):
    """Caffe's `caffe train --solver=S $@`, with the single-dash flags a user appends."""
    solver = write_solver(tmp_path, max_iter=2, test_interval=100, snapshot_after_train="false")
    with open(tmp_path / "net.prototxt", "a") as net:                  # a loss only stages a and b keep
        net.write('layer { name: "extra" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "extra"\n'
                  '  include { stage: "a" stage: "b" } }\n')
    script = os.path.join(os.path.dirname(sys.executable), "minicaffe")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "minicaffe"]
    process = subprocess.run(command + ["train", f"-solver={solver}", "-sigint_effect", "none", "-stage=a,b",
                                        "-level", "0", "-nonan_check"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "Solving tiny" in process.stderr and "Optimization Done." in process.stderr
    assert re.search(r"Train net output #\d: extra = ", process.stderr), process.stderr[-3000:]
    assert not re.search(r"Test net output #\d: extra", process.stderr)          # -stage is the train net's
