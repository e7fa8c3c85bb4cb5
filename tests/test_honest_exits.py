"""Honest exits: a tool that reads nothing fails, one that skips says how many; a net with no loss,
a GPU that is not there and a diverging run each say so in one clean line (issue 22)."""

import re
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import minicaffe
from minicaffe import gpu, threads
from minicaffe.cli import main
from minicaffe.errors import MinicaffeWarning, NonFiniteError
from minicaffe.train import train

from .data.helpers import write_image

NET = '''name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "t" dummy_data_param {
  shape { dim: 8 dim: 4 } shape { dim: 8 dim: 2 } data_filler { type: "gaussian" } data_filler { type: "constant" value: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2
  weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" LOSS_WEIGHT}
'''

# Diverges with a huge learning rate: Power's square overflows in float32 (numpy warns "overflow
# encountered in multiply"), then the InnerProduct after it meets inf - inf ("invalid value").
DIVERGING = '''name: "diverging"
layer { name: "data" type: "DummyData" top: "x" top: "t" dummy_data_param {
  shape { dim: 8 dim: 4 } shape { dim: 8 dim: 2 } data_filler { type: "gaussian" } data_filler { type: "constant" value: 0.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 8
  weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "sig" type: "Sigmoid" bottom: "y" top: "s" }
layer { name: "exp" type: "Exp" bottom: "s" top: "e" }
layer { name: "ip2" type: "InnerProduct" bottom: "e" top: "z" inner_product_param { num_output: 2
  weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "pw" type: "Power" bottom: "z" top: "p" power_param { power: 2 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "t" top: "loss" }
'''


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result, result.output          # stdout and stderr together


def write_solver(tmp_path, net_text, **fields):
    (tmp_path / "net.prototxt").write_text(net_text)
    values = {"net": f'"{tmp_path / "net.prototxt"}"', "base_lr": 0.01, "lr_policy": '"fixed"', "display": 1,
              "max_iter": 2, "random_seed": 3, "snapshot_after_train": "false"}
    values.update(fields)
    path = tmp_path / "solver.prototxt"
    path.write_text("".join(f"{key}: {value}\n" for key, value in values.items()))
    return str(path)


def warning_lines(text):
    return [line for line in text.splitlines() if "warning" in line.lower()]


# ---------------------------------------------------------------- data tools

def pictures(tmp_path, listed):
    root = tmp_path / "pictures"
    root.mkdir()
    for i in range(2):
        write_image(root / f"p{i}.png", np.full((4, 5, 3), 30 * i + 10, dtype=np.uint8))
    (tmp_path / "list.txt").write_text("".join(f"{name} {i}\n" for i, name in enumerate(listed)))
    return f"{root}/"


def test_convert_imageset_that_reads_nothing_fails_with_the_count_and_first_path(tmp_path):
    root = pictures(tmp_path, ["p0.png", "p1.png", "missing.png"])
    wrong = str(tmp_path / "elsewhere") + "/"
    result, text = run("convert-imageset", wrong, tmp_path / "list.txt", tmp_path / "db")
    assert result.exit_code == 1, text
    lines = [line for line in text.splitlines() if line.startswith("minicaffe:")]
    assert len(lines) == 1 and lines[0].startswith("minicaffe: error: could not read any of the 3 images"), text
    assert f"the first: image '{wrong}p0.png' does not exist" in lines[0]
    assert not (tmp_path / "db").exists()          # no empty database left behind to block the next try
    # the right root: the same command works at once
    result, text = run("convert-imageset", root, tmp_path / "list.txt", tmp_path / "db")
    assert result.exit_code == 0 and "wrote 2 records" in text


def test_convert_imageset_says_how_many_it_skipped(tmp_path):
    root = pictures(tmp_path, ["p0.png", "gone.png", "p1.png", "missing.png"])
    (tmp_path / "pictures" / "broken.png").write_bytes(b"not a picture")
    result, text = run("convert-imageset", root, tmp_path / "list.txt", tmp_path / "db")
    assert result.exit_code == 0, text            # as Caffe: skipped images are not an error
    assert "wrote 2 records" in text
    assert warning_lines(text) == [f"minicaffe: warning: skipped 2 of the 4 images, which could not be read; "
                                   f"the first: image '{root}gone.png' does not exist"]


def test_compute_mean_of_an_empty_database_fails(tmp_path):
    from minicaffe.data.db import Writer
    with Writer(str(tmp_path / "empty")):
        pass
    result, text = run("compute-mean", tmp_path / "empty", tmp_path / "mean.binaryproto")
    assert result.exit_code == 1
    assert re.search(r"minicaffe: error: database '.*empty' holds no records", text)
    assert not (tmp_path / "mean.binaryproto").exists()


# ---------------------------------------------------------------- no loss

def test_training_a_net_with_no_loss_warns_at_start(tmp_path):
    result, text = run("train", write_solver(tmp_path, NET.replace("LOSS_WEIGHT", "loss_weight: 0 "), max_iter=1))
    assert result.exit_code == 0, text
    lines = [line for line in text.splitlines() if "no loss" in line]
    assert len(lines) == 1 and re.match(r"^W\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ solver\.py:\d+\] The train net has "
                                        r"no loss \(no top with a nonzero loss_weight\)", lines[0]), text
    start = text.index("Starting Optimization")
    assert text.index(lines[0]) < start            # before the first iteration
    result, text = run("train", write_solver(tmp_path, NET.replace("LOSS_WEIGHT", ""), max_iter=1))
    assert result.exit_code == 0 and "no loss" not in text


def test_check_says_a_net_has_no_loss(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET.replace("LOSS_WEIGHT", "loss_weight: 0 "))
    result, text = run("check", path)
    assert result.exit_code == 0, text
    assert "warning: no loss: no top has a nonzero loss_weight, so training this net computes no gradients" in text
    result, text = run("check", path, "--phase", "TEST")
    assert result.exit_code == 0 and "note: no loss (fine for a deploy net)" in text and "warning: no loss" not in text
    result, text = run("check", path, "--end", "ip")
    assert "note: no loss among the layers up to 'ip' (--end)" in text and "warning: no loss" not in text
    path.write_text(NET.replace("LOSS_WEIGHT", ""))
    result, text = run("check", path)
    assert result.exit_code == 0 and "no loss" not in text


# ---------------------------------------------------------------- warnings on the command line

@pytest.mark.skipif(gpu.available(), reason="a GPU (or numba's simulator) is there: no fallback to see")
def test_solver_mode_gpu_without_a_gpu_falls_back_with_one_clean_line(tmp_path):
    result, text = run("train", write_solver(tmp_path, NET.replace("LOSS_WEIGHT", ""), solver_mode="GPU",
                                             max_iter=1))
    assert result.exit_code == 0, text
    assert warning_lines(text) == ["minicaffe: warning: solver_mode: GPU, but no CUDA device is usable: "
                                   "training on the CPU"]
    assert "MinicaffeWarning" not in text and "Solver(" not in text      # no Python file:line and source line
    assert minicaffe.mode.mode() == "cpu"


def test_every_command_shows_a_warning_as_one_line(tmp_path, monkeypatch):
    import minicaffe.check

    def describe(net, end=None):
        warnings.warn("a minicaffe warning\nover two lines", MinicaffeWarning)
        warnings.warn("a library's own warning", RuntimeWarning)
        return "described"
    monkeypatch.setattr(minicaffe.check, "describe", describe)
    path = tmp_path / "net.prototxt"
    path.write_text(NET.replace("LOSS_WEIGHT", ""))
    result, text = run("check", path)
    assert result.exit_code == 0, text
    assert warning_lines(text) == ["minicaffe: warning: a minicaffe warning over two lines",
                                   "minicaffe: warning: RuntimeWarning: a library's own warning"]
    with warnings.catch_warnings(record=True) as caught:     # --debug: Python's own warnings
        warnings.simplefilter("always")
        result, text = run("--debug", "check", path)
    assert result.exit_code == 0 and "minicaffe: warning" not in text
    assert [w.category for w in caught] == [MinicaffeWarning, RuntimeWarning]


# ---------------------------------------------------------------- NaN before numpy

def test_a_diverging_run_shows_minicaffes_nan_message_and_no_numpy_warning(tmp_path):
    solver = write_solver(tmp_path, DIVERGING, base_lr=1e20, max_iter=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(NonFiniteError, match=r"iteration 1: the loss is not finite; .* layer 'pw' \(Power\)"):
            train(solver)
        assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
        # the same run through without the check: numpy does warn, so the net really overflows
        train(solver, nan_check=False)
        assert any("overflow" in str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    result, text = run("train", solver)
    assert result.exit_code == 1
    assert "minicaffe: error: iteration 1: the loss is not finite" in text
    assert "RuntimeWarning" not in text and "encountered in" not in text
    # outside a minicaffe call, numpy's own settings are as they were
    with pytest.warns(RuntimeWarning, match="overflow"):
        np.float32(3e38) * np.float32(10)


def test_the_thread_pool_keeps_the_callers_numpy_errstate():
    saved = threads.get_num_threads()
    threads.set_num_threads(4)
    try:
        a = np.full((256, 256), 1e30, dtype=np.float32)
        assert len(threads._product_blocks(1, 256, 256, 256, 4)) > 1      # the pool's threads do take part
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with np.errstate(over="ignore"):
                threads.matmul(a, a)
            assert not caught, [str(w.message) for w in caught]
            threads.matmul(a, a)
            assert any("overflow" in str(w.message) for w in caught)
    finally:
        threads.set_num_threads(saved)
