"""The demo's example: the shipped digits go to HDF5 and a short training run learns."""

import os
import runpy

import numpy as np

import minicaffe as caffe
from minicaffe.proto.text import read_net, read_solver

from tests.conftest import EXAMPLES

DIGITS = os.path.join(EXAMPLES, "digits")


def test_prepare_and_train_briefly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(os.path.join(DIGITS, "prepare_digits.py"), run_name="prepare")["main"](str(tmp_path / "data"))
    assert (tmp_path / "data" / "train.txt").read_text().strip() == "data/train.h5"
    net = read_net(os.path.join(DIGITS, "digits_net.prototxt"))
    for layer in net.layer:
        if layer.type == "HDF5Data":
            layer.hdf5_data_param.source = layer.hdf5_data_param.source.replace("examples/digits/data", "data")
    solver_param = read_solver(os.path.join(DIGITS, "digits_solver.prototxt"))
    solver_param.ClearField("net")
    solver_param.net_param.CopyFrom(net)
    solver_param.max_iter = 60
    solver_param.display = 0
    solver_param.snapshot_after_train = False
    solver = caffe.Solver(solver_param)
    accuracy_before = solver.test(0)["accuracy"]
    losses = []
    for _ in range(60):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 2
    assert solver.test(0)["accuracy"] > max(0.6, accuracy_before)


def test_the_vae_example_trains_from_the_cli(tmp_path, monkeypatch):
    import re

    from click.testing import CliRunner

    from minicaffe.cli import main
    monkeypatch.chdir(tmp_path)
    runpy.run_path(os.path.join(DIGITS, "prepare_digits.py"), run_name="prepare")["main"](str(tmp_path / "data"))
    with open(os.path.join(EXAMPLES, "vae", "vae_net.prototxt")) as handle:
        (tmp_path / "vae_net.prototxt").write_text(handle.read().replace("examples/digits/data", "data"))
    with open(os.path.join(EXAMPLES, "vae", "vae_solver.prototxt")) as handle:
        solver = handle.read().replace("examples/vae/vae_net.prototxt", "vae_net.prototxt")
    (tmp_path / "solver.prototxt").write_text(solver.replace("max_iter: 400", "max_iter: 150"))
    result = CliRunner().invoke(main, ["train", "solver.prototxt"])
    assert result.exit_code == 0, result.output
    losses = [float(v) for v in re.findall(r"Iteration \d+ \([^)]*\), loss = ([\d.e+-]+)", result.output)]
    kl = [float(v) for v in re.findall(r"Train net output #\d+: kl = ([\d.e+-]+)", result.output)]
    assert len(losses) == 3 and losses[-1] < 0.75 * losses[0], losses
    assert kl and all(value >= 0 for value in kl)
