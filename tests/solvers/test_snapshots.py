"""Snapshots: file names, both formats, atomic writes, and bit-exact resume."""

import os

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import MinicaffeError
from minicaffe.proto import caffe_pb2

from .test_solvers import cycle_param


def params_of(net):
    return {name: [blob.data.copy() for blob in blobs] for name, blobs in net.params.items()}


def build(tmp_path, kind, snapshot_format="BINARYPROTO", extra=""):
    param = cycle_param(4, f'type: "{kind}" snapshot_prefix: "{tmp_path}/snap" snapshot_format: {snapshot_format} '
                           f'momentum2: 0.999 {extra}')
    if kind in ("AdaGrad", "RMSProp"):
        param.momentum = 0
    return caffe.Solver(param)


@pytest.mark.parametrize("snapshot_format", ["BINARYPROTO", "HDF5"])
@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdaDelta"])
def test_resume_is_bit_exact(tmp_path, kind, snapshot_format):
    # Dropout draws from the generator and the data layer has a cursor: both must resume.
    straight = build(tmp_path, kind, snapshot_format)
    straight.step(6)
    expected = params_of(straight.net)
    expected_loss = float(straight.net.blobs["loss"].data)

    first = build(tmp_path, kind, snapshot_format)
    first.step(3)
    model, state = first.snapshot()
    suffix = ".h5" if snapshot_format == "HDF5" else ""
    assert model == f"{tmp_path}/snap_iter_3.caffemodel{suffix}"
    assert state == f"{tmp_path}/snap_iter_3.solverstate{suffix}"
    caffe.set_random_seed(12345)                       # disturb the generator: restore must undo it
    resumed = build(tmp_path, kind, snapshot_format)
    resumed.restore(state)
    assert resumed.iter == 3
    resumed.step(3)
    for name, arrays in expected.items():
        for index, array in enumerate(arrays):
            np.testing.assert_array_equal(resumed.net.params[name][index].data, array)
    assert float(resumed.net.blobs["loss"].data) == expected_loss


def test_snapshot_every_n_iterations_and_after_training(tmp_path):
    solver = build(tmp_path, "SGD", extra="snapshot: 2 max_iter: 5 snapshot_after_train: true")
    solver.solve()
    names = sorted(os.listdir(tmp_path))
    assert names == ["snap_iter_2.caffemodel", "snap_iter_2.solverstate", "snap_iter_4.caffemodel",
                     "snap_iter_4.solverstate", "snap_iter_5.caffemodel", "snap_iter_5.solverstate"]
    state = caffe_pb2.SolverState()
    state.ParseFromString((tmp_path / "snap_iter_4.solverstate").read_bytes())
    assert state.iter == 4 and state.learned_net == f"{tmp_path}/snap_iter_4.caffemodel"
    assert len(state.history) == 4                  # ip weight and bias, ip2 weight and bias
    weights = caffe.io.read_caffemodel(tmp_path / "snap_iter_5.caffemodel")
    assert [layer.name for layer in weights.layer if layer.blobs] == ["ip", "ip2"]


def test_solve_resumes_from_a_state(tmp_path):
    solver = build(tmp_path, "SGD", extra="max_iter: 4")
    solver.step(2)
    _, state = solver.snapshot()
    again = build(tmp_path, "SGD", extra="max_iter: 4")
    again.solve(resume=state)
    assert again.iter == 4


def test_hdf5_weights_load_with_copy_from(tmp_path):
    solver = build(tmp_path, "SGD", "HDF5")
    solver.step(1)
    model, _ = solver.snapshot()
    net = caffe.Net(solver.net.to_proto(), caffe.TEST)
    net.copy_from(model)
    np.testing.assert_array_equal(net.params["ip2"][0].data, solver.net.params["ip2"][0].data)


def test_crash_while_writing_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    solver = build(tmp_path, "SGD")
    solver.step(1)
    model, state = solver.snapshot()
    before = (open(model, "rb").read(), open(state, "rb").read())
    solver.iter -= 1                                   # the same file names again
    solver.step(1)

    def crash(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        solver.snapshot()
    assert (open(model, "rb").read(), open(state, "rb").read()) == before
    assert sorted(os.listdir(tmp_path)) == ["snap_iter_1.caffemodel", "snap_iter_1.solverstate"]


def test_restore_errors(tmp_path):
    solver = build(tmp_path, "SGD")
    with pytest.raises(MinicaffeError, match="cannot read solver state"):
        solver.restore(tmp_path / "missing.solverstate")
    adam = build(tmp_path, "Adam")
    adam.step(1)
    _, state = adam.snapshot()
    with pytest.raises(MinicaffeError, match="8 history blobs, but this solver keeps 4"):
        build(tmp_path, "SGD").restore(state)
