"""BVLC Caffe's own training run: the same losses, and resuming from Caffe's snapshot.

The fixture files were written by BVLC Caffe (SGD, momentum 0.9, weight decay
0.01, step policy): `expected.npz` holds the losses of 8 `solver.step(1)` calls
from `init.caffemodel`, the losses of 4 steps after restoring
`tiny_iter_4.solverstate`, and every parameter after the 8 steps.
"""

import os
import shutil

import numpy as np
import pytest

import minicaffe as caffe

HERE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "caffe_snapshot")


@pytest.fixture
def in_fixture_dir(monkeypatch, tmp_path):
    # A copy: the solver snapshots every 4 iterations into its working directory.
    for name in os.listdir(HERE):
        shutil.copy(os.path.join(HERE, name), tmp_path)
    monkeypatch.chdir(tmp_path)        # the solver names its net relative to the working directory, as Caffe


def expected():
    return np.load(os.path.join(HERE, "expected.npz"))


def test_training_reproduces_caffes_losses_and_parameters(in_fixture_dir):
    solver = caffe.get_solver("solver.prototxt")
    solver.net.copy_from("init.caffemodel")
    losses = []
    for _ in range(8):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    reference = expected()
    np.testing.assert_allclose(losses, reference["losses"], rtol=1e-5)
    for key in reference.files:
        if key.startswith("param/"):
            _, layer, index = key.split("/")
            np.testing.assert_allclose(solver.net.params[layer][int(index)].data, reference[key],
                                       rtol=1e-5, atol=1e-6, err_msg=key)


def test_resuming_from_caffes_solverstate(in_fixture_dir):
    solver = caffe.get_solver("solver.prototxt")
    solver.restore("tiny_iter_4.solverstate")
    assert solver.iter == 4 and solver.current_step == 1
    losses = []
    for _ in range(4):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    reference = expected()
    np.testing.assert_allclose(losses, reference["resumed_losses"], rtol=1e-5)
    np.testing.assert_allclose(solver.net.params["ip2"][0].data, reference["param/ip2/0"], rtol=1e-5, atol=1e-6)
