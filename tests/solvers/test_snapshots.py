"""Snapshots: file names, both formats, atomic writes, and bit-exact resume."""

import json
import os

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.errors import MinicaffeError, WeightsError
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


# ---------------------------------------------------------------- bad solver states (issue 23)

def snapshotted(tmp_path, snapshot_format="BINARYPROTO"):
    solver = build(tmp_path, "SGD", snapshot_format)
    solver.step(1)
    return solver.snapshot()[1]


def mutated(tmp_path, change):
    """A copy of a fresh binary snapshot's state with ``change(state)`` applied."""
    state = caffe_pb2.SolverState()
    state.ParseFromString(open(snapshotted(tmp_path), "rb").read())
    change(state)
    path = tmp_path / "bad.solverstate"
    path.write_bytes(state.SerializePartialToString())
    return str(path)


RNG = "rng_state is not a generator state minicaffe wrote: "


def set_rng(field, value):
    def change(state):
        rng = json.loads(state.rng_state)
        if field == "bit_generator":
            rng[field] = value
        else:
            rng["state"][field] = value
        state.rng_state = json.dumps(rng)
    return change


def set_cursor(text):
    def change(state):
        state.data_cursor[0].state = text
    return change


@pytest.mark.parametrize("change, message", [
    (lambda s: setattr(s, "iter", -5), "iter is -5; an iteration is between 0 and 2147483647"),
    (lambda s: setattr(s, "current_step", -1), "current_step is -1; a step count cannot be negative"),
    (lambda s: s.history[0].data.__delitem__(slice(0, 3)),
     r"history blob 0: shape \(4, 3\) needs 12 values but 'data' holds 9"),
    (lambda s: s.history[0].data.__delitem__(slice(None)), r"history blob 0: shape \(4, 3\) needs 12 values but the "
                                                            "blob holds none"),
    (lambda s: s.history[0].shape.dim.__setitem__(0, -4), r"history blob 0: shape.dim\[0\] is -4"),
    (lambda s: s.history[0].shape.dim.extend([2 ** 62, 2 ** 62]),
     r"history blob 0: shape \(4, 3, 4611686018427387904, 4611686018427387904\) has \d+ elements, more than"),
    (lambda s: (s.history[0].shape.dim.__setitem__(0, 6), s.history[0].shape.dim.__setitem__(1, 3),
                s.history[0].data.extend([0.0] * 6)),
     r"history blob 0 has shape \(6, 3\) \(18 values\), but its parameter has 12"),
    (lambda s: setattr(s, "learned_net", "snap\0.caffemodel"), r"learned_net 'snap\\x00.caffemodel' contains a NUL"),
    (lambda s: setattr(s, "rng_state", "{nope"), "rng_state is not the JSON minicaffe writes .*: '{nope'"),
    (lambda s: setattr(s, "rng_state", "[1, 2]"), RNG + "the JSON is a list"),
    (set_rng("bit_generator", "MT19937"), RNG + "bit_generator is 'MT19937', not 'PCG64'"),
    (set_rng("state", 2 ** 200), RNG + r"state.state is 1606938044258990275541962092341162602522202993782792835301376, "
                                       r"not an integer in \[0, 2\^128\)"),
    (set_rng("inc", -1), RNG + r"state.inc is -1, not an integer in \[0, 2\^128\)"),
    (set_rng("inc", "7"), RNG + r"state.inc is '7', not an integer"),
    (set_cursor("{bad"), "data_cursor of layer 'data' in the train net is not the JSON minicaffe writes"),
    (set_cursor("[1]"), "data_cursor of layer 'data' in the train net is a JSON list"),
])
def test_bad_solverstate_values_name_the_file_the_field_and_the_value(tmp_path, change, message):
    path = mutated(tmp_path, change)
    solver = build(tmp_path, "SGD")
    with pytest.raises(WeightsError, match=f"^{path}: " + message):
        solver.restore(path)
    assert solver.iter == 0 and solver.current_step == 0     # checked before anything is restored


def test_snapshotting_past_int32_iterations_is_an_error_not_a_protobuf_one(tmp_path):
    path = mutated(tmp_path, lambda s: setattr(s, "iter", 2 ** 31 - 1))
    solver = build(tmp_path, "SGD")
    solver.restore(path)
    solver.step(1)
    with pytest.raises(MinicaffeError, match="cannot snapshot iteration 2147483648: a SolverState's iter is an int32"):
        solver.snapshot()


def h5_state(tmp_path, write, name="bad.solverstate.h5"):
    import h5py
    path = tmp_path / name
    with h5py.File(path, "w") as h5:
        write(h5, h5py)
    return str(path)


def minimal(h5, h5py, **skip):
    if "iter" not in skip:
        h5["iter"] = np.int32(1)
    if "learned_net" not in skip:
        h5["learned_net"] = ""
    h5.create_group("history")


@pytest.mark.parametrize("write, message", [
    (lambda h5, h5py: None, "no 'iter' dataset: not a minicaffe or Caffe HDF5 solver state"),
    (lambda h5, h5py: minimal(h5, h5py, learned_net=1), "no 'learned_net' dataset"),
    (lambda h5, h5py: (minimal(h5, h5py, iter=1), h5.create_dataset("iter", data=np.zeros(3))),
     r"'iter' is a float64 dataset of shape \(3,\), not a single integer"),
    (lambda h5, h5py: (minimal(h5, h5py, iter=1), h5.create_dataset("iter", data="7")),
     r"'iter' is a string dataset of shape \(\), not a single integer"),
    (lambda h5, h5py: (minimal(h5, h5py, iter=1), h5.create_dataset("iter", data=np.int64(2 ** 40))),
     "'iter' is 1099511627776, outside a SolverState's int32 range"),
    (lambda h5, h5py: (minimal(h5, h5py, learned_net=1), h5.create_dataset("learned_net", data=np.zeros(2))),
     r"'learned_net' is a float64 dataset of shape \(2,\), not a string"),
    (lambda h5, h5py: (minimal(h5, h5py, learned_net=1),
                       h5.create_dataset("learned_net", data=np.bytes_(b"\xff\xfe"))),
     r"'learned_net' is not UTF-8 text: b'\\xff\\xfe'"),
    (lambda h5, h5py: (h5.create_dataset("iter", data=np.int32(1)), h5.create_dataset("learned_net", data=""),
                       h5.create_dataset("history", data=np.zeros(3))), "'history' is a dataset, not a group"),
    (lambda h5, h5py: (minimal(h5, h5py), h5["history"].create_dataset("0", data=np.array([b"ab"]))),
     "'history/0' holds .* not real numbers"),
    (lambda h5, h5py: (minimal(h5, h5py), h5["history"].create_dataset("first", data=np.zeros(2))),
     "'history/first': blobs are named 0, 1, 2, ..., not 'first'"),
    (lambda h5, h5py: (minimal(h5, h5py), h5["history"].__setitem__("0", h5py.SoftLink("/nowhere"))),
     "'history/0' is a SoftLink, not a dataset stored in the file"),
    (lambda h5, h5py: (minimal(h5, h5py), h5.attrs.__setitem__("minicaffe_data_cursors", "{x")),
     "attribute 'minicaffe_data_cursors' is not JSON"),
    (lambda h5, h5py: (minimal(h5, h5py), h5.attrs.__setitem__("minicaffe_data_cursors", "[[1]]")),
     r"attribute 'minicaffe_data_cursors' is not a list of \[net, layer, state\] strings"),
    (lambda h5, h5py: (minimal(h5, h5py), h5.attrs.__setitem__("minicaffe_smoothed_loss", "low")),
     "attribute 'minicaffe_smoothed_loss' is .*, not a number"),
])
def test_bad_hdf5_solverstates_name_the_file_and_the_object(tmp_path, write, message):
    path = h5_state(tmp_path, write)
    with pytest.raises(WeightsError, match=f"^{path}: " + message):
        build(tmp_path, "SGD").restore(path)


def test_an_empty_hdf5_solverstate_is_a_weights_error(tmp_path):
    path = tmp_path / "empty.solverstate.h5"
    path.write_bytes(b"")
    with pytest.raises(WeightsError, match=f"^{path}: cannot read HDF5 solver state"):
        build(tmp_path, "SGD").restore(str(path))


def test_hdf5_history_counts_are_checked_against_the_parameters(tmp_path):
    state = snapshotted(tmp_path, "HDF5")
    import h5py
    with h5py.File(state, "r+") as h5:
        del h5["history/0"]
        h5["history"].create_dataset("0", data=np.zeros(5, dtype=np.float32))
    with pytest.raises(WeightsError, match=r"history blob 0 has shape \(5,\) \(5 values\), but its parameter has 12"):
        build(tmp_path, "SGD", "HDF5").restore(state)
