"""The net on the GPU: its own work stays on the device, a training iteration moves only the loss and the next
batch, and training the digits LeNet in GPU mode gives the CPU's loss curve (numba's CUDA simulator)."""

import gzip
import logging
import os

import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
from minicaffe.blob import SyncedArray
from minicaffe.proto.text import parse_net, parse_solver, parse_text, read_net, read_solver

from ..conftest import EXAMPLES

NET = '''name: "tiny"
layer { name: "x" type: "Input" top: "x" top: "t" input_param { shape { dim: 3 dim: 4 } shape { dim: 3 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2
  weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" loss_weight: 2 }
'''


def copies_during(action):
    before = dict(SyncedArray.copies)
    action()
    return {key: SyncedArray.copies[key] - before[key] for key in before}


def test_clearing_and_updating_the_parameters_stay_on_the_device():
    net = caffe.Net(parse_net(NET), caffe.TRAIN)
    rng = np.random.default_rng(0)
    steps = [rng.standard_normal(blob.shape).astype(np.float32) for blob in net.learnable_params]
    for blob, step in zip(net.learnable_params, steps):
        blob.diff[...] = step
    before = [blob.data.copy() for blob in net.learnable_params]
    caffe.set_mode_gpu()
    try:
        for blob in net.learnable_params:       # on the device before counting
            blob.gpu_data, blob.gpu_diff
        assert copies_during(net.update) == {"to_device": 0, "to_host": 0}
        assert copies_during(net.clear_param_diffs) == {"to_device": 0, "to_host": 0}
    finally:
        caffe.set_mode_cpu()
    for blob, old, step in zip(net.learnable_params, before, steps):
        np.testing.assert_allclose(blob.data, old - step, rtol=1e-6)
        assert not blob.diff.any()


PAIR = '''name: "pair"
layer { name: "x" type: "Input" top: "y" top: "t" input_param { shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
'''


def test_inputs_given_to_forward_go_straight_to_the_device():
    net = caffe.Net(parse_net(PAIR), caffe.TRAIN)
    rng = np.random.default_rng(5)
    y, t = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    caffe.set_mode_gpu()
    try:
        net.forward(y=y, t=t)
        net.blobs["loss"].gpu_data      # forward() handed the loss out writable: back on the device before counting
        moved = copies_during(lambda: net.forward(y=y + 1, t=np.full((3, 1), 0.5)))    # broadcast, as pycaffe
        loss = net.last_loss
    finally:
        caffe.set_mode_cpu()
    assert moved == {"to_device": 2, "to_host": 1}, moved       # the two inputs in, the loss out
    assert loss == pytest.approx(float(np.sum((y + 1 - 0.5) ** 2) / 6), rel=1e-5)
    np.testing.assert_array_equal(net.blobs["t"].data, np.full((3, 2), 0.5, np.float32))


WEIGHTED = '''name: "weighted"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "scaled" type: "Power" bottom: "x" top: "y" power_param { scale: 2 } loss_weight: 0.25 }
'''


def test_a_weighted_top_of_several_elements_is_seeded_and_reduced_on_the_device():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    expected = 0.25 * float(np.sum(2 * x))
    cpu = caffe.Net(parse_net(WEIGHTED), caffe.TRAIN)
    cpu.forward(x=x)
    assert cpu.last_loss == pytest.approx(expected)
    caffe.set_mode_gpu()
    try:
        net = caffe.Net(parse_net(WEIGHTED), caffe.TRAIN)
        assert net.blobs["y"]._synced("diff").head == "device"        # the loss weight, filled on the device
        net.blobs["x"].reshape(4, 3)
        net.reshape()                         # a resized top is seeded again, on the device
        assert net.blobs["y"]._synced("diff").head == "device"
        net.forward(x=np.concatenate([x, x]))
        assert net.last_loss == pytest.approx(2 * expected, rel=1e-6)
    finally:
        caffe.set_mode_cpu()
    np.testing.assert_array_equal(net.blobs["y"].diff, np.full((4, 3), 0.25, np.float32))


def debug_lines(use_gpu, caplog):
    caffe.set_random_seed(1)
    net = caffe.Net(parse_net(NET), caffe.TRAIN)
    rng = np.random.default_rng(2)
    net.blobs["x"].data[...] = rng.standard_normal((3, 4))
    net.blobs["t"].data[...] = rng.standard_normal((3, 2))
    net.debug_info = True
    (caffe.set_mode_gpu if use_gpu else caffe.set_mode_cpu)()
    try:
        net.forward_backward()          # warm-up: the blobs reach the device
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="minicaffe"):
            moved = copies_during(net.forward_backward)
    finally:
        caffe.set_mode_cpu()
    if use_gpu:
        assert moved == {"to_device": 0, "to_host": 1}, moved     # the magnitudes are reduced on the device
    return [record.getMessage() for record in caplog.records if "Layer" in record.getMessage()]


def test_debug_info_reduces_on_the_device_and_logs_what_the_cpu_logs(caplog):
    cpu, gpu = debug_lines(False, caplog), debug_lines(True, caplog)
    assert len(cpu) == len(gpu) >= 6
    for cpu_line, gpu_line in zip(cpu, gpu):
        cpu_text, cpu_value = cpu_line.rsplit(" ", 1)
        gpu_text, gpu_value = gpu_line.rsplit(" ", 1)
        assert cpu_text == gpu_text
        assert float(gpu_value) == pytest.approx(float(cpu_value), rel=1e-4)


# ---------------------------------------------------------------- a training iteration's copies

MEMORY_DATA = '''layer { name: "data" type: "MemoryData" top: "x" top: "label"
  memory_data_param { batch_size: 4 channels: 3 height: 1 width: 1 } }'''
HDF5_DATA = '''layer { name: "data" type: "HDF5Data" top: "x" top: "label"
  hdf5_data_param { source: "LIST" batch_size: 4 } }'''
TRAIN_NET = '''
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" inner_product_param { num_output: 5
  weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "score" inner_product_param { num_output: 3
  weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
'''
TRAIN_SOLVER = ('type: "SGD" base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 lr_policy: "fixed" display: 0 '
                'max_iter: 100 snapshot_after_train: false random_seed: 1')
ROWS = np.random.default_rng(0).standard_normal((8, 3, 1, 1)).astype(np.float32)
LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1], np.float32)


def small_solver(solver_mode, source, tmp_path):
    """SGD over MemoryData or HDF5Data + InnerProduct + ReLU + InnerProduct + SoftmaxWithLoss."""
    if source == "HDF5Data":
        h5py = pytest.importorskip("h5py")
        if not (tmp_path / "rows.h5").exists():
            with h5py.File(tmp_path / "rows.h5", "w") as handle:
                handle["x"], handle["label"] = ROWS, LABELS
            (tmp_path / "list.txt").write_text(f"{tmp_path / 'rows.h5'}\n")
        data = HDF5_DATA.replace("LIST", str(tmp_path / "list.txt"))
    else:
        data = MEMORY_DATA
    param = parse_solver(TRAIN_SOLVER + f" solver_mode: {solver_mode}")
    parse_text(data + TRAIN_NET, param.net_param)
    solver = caffe.Solver(param)
    if source == "MemoryData":
        solver.net.set_input_arrays(ROWS, LABELS)
    return solver


@pytest.mark.parametrize("source", ["MemoryData", "HDF5Data"])
def test_a_training_iteration_moves_only_the_loss_and_the_next_batch(source, tmp_path):
    cpu = small_solver("CPU", source, tmp_path)
    cpu.step(3)
    solver = small_solver("GPU", source, tmp_path)
    try:
        solver.step(2)          # warm-up: parameters, history and loss weights reach the device
        moved = copies_during(lambda: solver.step(1))
        loss = float(solver.net.blobs["loss"].data)
    finally:
        caffe.set_mode_cpu()
    assert moved == {"to_device": 2, "to_host": 1}, moved     # data + label in (the next batch); the loss out
    assert loss == pytest.approx(float(cpu.net.blobs["loss"].data), rel=1e-5)
    for gpu_blob, cpu_blob in zip(solver.net.learnable_params, cpu.net.learnable_params):
        np.testing.assert_allclose(gpu_blob.data, cpu_blob.data, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the digits LeNet, GPU against CPU

DIGITS = os.path.join(EXAMPLES, "digits")


def digits_solver(tmp_path, solver_mode, batch=2):
    """examples/digits' net and solver on the first 24 digits, the given batch, no test net."""
    h5py = pytest.importorskip("h5py")
    data = tmp_path / "train.h5"
    if not data.exists():
        with gzip.open(os.path.join(DIGITS, "digits.csv.gz"), "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float32, max_rows=24)
        with h5py.File(data, "w") as handle:
            handle["data"] = (table[:, :64] / 16.0).reshape(-1, 1, 8, 8)
            handle["label"] = table[:, 64]
        (tmp_path / "train.txt").write_text(f"{data}\n")
    net = read_net(os.path.join(DIGITS, "digits_net.prototxt"))
    for layer in net.layer:
        if layer.type == "HDF5Data":
            layer.hdf5_data_param.source = str(tmp_path / "train.txt")
            layer.hdf5_data_param.batch_size = batch
    param = read_solver(os.path.join(DIGITS, "digits_solver.prototxt"))
    param.ClearField("net")
    param.ClearField("test_iter")
    param.ClearField("test_interval")
    param.net_param.CopyFrom(net)
    text_format.Merge(f"display: 0 snapshot_after_train: false solver_mode: {solver_mode}", param)
    return caffe.Solver(param)


def loss_curve(tmp_path, solver_mode, iterations):
    """The losses of the first iterations, the parameters after them, and what the last iteration copied."""
    solver = digits_solver(tmp_path, solver_mode)
    try:
        losses = []
        for _ in range(iterations):
            moved = copies_during(lambda: solver.step(1))
            losses.append(float(solver.net.blobs["loss"].read_data()))
        return losses, [blob.data.copy() for blob in solver.net.learnable_params], moved
    finally:
        caffe.set_mode_cpu()


def test_training_the_digits_lenet_on_the_gpu_gives_the_cpu_loss_curve(tmp_path):
    # Two iterations: the second step adds momentum to the first's history, so the parameters after it check
    # the whole SGD rule (weight decay, inv policy, momentum). Each iteration costs ~15 s under the simulator,
    # mostly in the kernels over the 14k parameters (one Python thread per element).
    cpu_losses, cpu_params, _ = loss_curve(tmp_path, "CPU", 2)
    gpu_losses, gpu_params, moved = loss_curve(tmp_path, "GPU", 2)
    assert moved == {"to_device": 2, "to_host": 1}, moved     # HDF5Data's batch in, the loss out
    assert cpu_losses[0] != cpu_losses[1]
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-5)
    for gpu_param, cpu_param in zip(gpu_params, cpu_params):
        np.testing.assert_allclose(gpu_param, cpu_param, rtol=1e-4, atol=1e-6)
