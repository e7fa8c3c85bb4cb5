"""Solvers in GPU mode: the update on the device (clearing, iter_size, weight decay, clipping, the six rules,
Net::Update) against CPU mode, without copying parameters or history to the host; the test pass's device sums;
snapshots; and the data-parallel all-reduce of device gradients (packed, one copy each way, unpacked)."""

import logging

import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
from minicaffe import distributed, mode
from minicaffe.blob import SyncedArray
from minicaffe.errors import NonFiniteError
from minicaffe.proto.text import parse_solver, parse_text

NET = '''name: "tiny"
layer { name: "x" type: "Input" top: "x" top: "label" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0.5 }
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "y" bottom: "label" top: "accuracy" include { phase: TEST } }
'''

rng = np.random.default_rng(5)
X = rng.standard_normal((4, 3)).astype(np.float32)
LABELS = np.array([0, 2, 1, 2], dtype=np.float32)

RULES = {
    "SGD": "momentum: 0.9",
    "Nesterov": "momentum: 0.9",
    "AdaGrad": "delta: 1e-6",
    "RMSProp": "rms_decay: 0.9 delta: 1e-6",
    "AdaDelta": "momentum: 0.9 delta: 1e-6",
    "Adam": "momentum: 0.9 momentum2: 0.999 delta: 1e-6",
}
OPTIONS = {
    "L2, clipping, iter_size 2": 'weight_decay: 0.01 regularization_type: "L2" clip_gradients: 0.1 iter_size: 2',
    "L1": 'weight_decay: 0.02 regularization_type: "L1"',
}


def make_solver(kind, options="", test_net=False):
    param = parse_solver(f'type: "{kind}" base_lr: 0.1 lr_policy: "fixed" display: 0 max_iter: 10 '
                         'snapshot_after_train: false random_seed: 3')
    text_format.Merge(RULES[kind] + " " + options, param)
    parse_text(NET, param.net_param)
    if test_net:
        text_format.Merge("test_iter: 3 test_interval: 1000 test_initialization: false", param)
    solver = caffe.Solver(param)
    solver.net.blobs["x"].data[...] = X
    solver.net.blobs["label"].data[...] = LABELS
    return solver


def train(kind, options, use_gpu, iterations=2):
    solver = make_solver(kind, options)
    (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
    try:
        solver.step(iterations)
    finally:
        mode.set_mode_cpu()
    return solver


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("kind", RULES)
def test_training_on_the_device_matches_cpu_mode(kind, options, caplog):
    cpu = train(kind, options, use_gpu=False)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        gpu = train(kind, options, use_gpu=True)
    if "clip" in options:
        assert "Gradient clipping" in caplog.text
    for index, (gpu_blob, cpu_blob) in enumerate(zip(gpu.net.learnable_params, cpu.net.learnable_params)):
        np.testing.assert_allclose(gpu_blob.data, cpu_blob.data, rtol=1e-5, atol=1e-6, err_msg=f"param {index}")
    assert len(gpu.history) == len(cpu.history) == 2 * gpu.history_sets
    for index, (gpu_history, cpu_history) in enumerate(zip(gpu.history, cpu.history)):
        np.testing.assert_allclose(gpu_history, cpu_history, rtol=1e-5, atol=1e-6, err_msg=f"history {index}")


def diffs_on_the_device(solver, seed=9):
    """Gradients written on the host, then made current on the device (as a Backward on the device leaves them)."""
    generator = np.random.default_rng(seed)
    for blob in solver.net.learnable_params:
        blob.diff[...] = generator.standard_normal(blob.shape)
        blob.mutable_gpu_diff
        blob.gpu_data


@pytest.mark.parametrize("kind", RULES)
def test_apply_update_copies_nothing_to_the_host(kind):
    cpu = make_solver(kind, 'weight_decay: 0.01 clip_gradients: 0.5 iter_size: 2')
    gpu = make_solver(kind, 'weight_decay: 0.01 clip_gradients: 0.5 iter_size: 2')
    diffs_on_the_device(cpu)
    diffs_on_the_device(gpu)
    cpu.apply_update()
    mode.set_mode_gpu()
    try:
        for blob in gpu.history_blobs:      # warm-up: the fresh history is allocated on the device
            blob.gpu_data
        before = dict(SyncedArray.copies)
        gpu.apply_update()
        gpu._check_parameters_finite()
        after = dict(SyncedArray.copies)
        gpu.net.clear_param_diffs()
    finally:
        mode.set_mode_cpu()
    assert after == before, "the update in GPU mode copied between host and device"
    for gpu_blob, cpu_blob in zip(gpu.net.learnable_params, cpu.net.learnable_params):
        np.testing.assert_allclose(gpu_blob.data, cpu_blob.data, rtol=1e-5, atol=1e-6)
        assert not gpu_blob.diff.any()
    for gpu_history, cpu_history in zip(gpu.history, cpu.history):
        np.testing.assert_allclose(gpu_history, cpu_history, rtol=1e-5, atol=1e-6)


@pytest.fixture
def copies_by_array(monkeypatch):
    """id(SyncedArray) -> how many times it was copied to the host."""
    counts = {}
    original = SyncedArray.host

    def host(self, readonly=False):
        if self.head == "device":
            counts[id(self)] = counts.get(id(self), 0) + 1
        return original(self, readonly)
    monkeypatch.setattr(SyncedArray, "host", host)
    return counts


def test_a_training_step_after_warm_up_keeps_parameters_and_history_on_the_device(copies_by_array, monkeypatch):
    solver = make_solver("Adam", 'weight_decay: 0.01 clip_gradients: 0.5')
    net = solver.net
    in_layers = []
    forward_backward = net.forward_backward

    def layers_only():      # the layers' own copies (the loss scalar), apart from the solver's
        before = sum(copies_by_array.values())
        try:
            return forward_backward()
        finally:
            in_layers.append(sum(copies_by_array.values()) - before)
    monkeypatch.setattr(net, "forward_backward", layers_only)
    mode.set_mode_gpu()
    try:
        solver.step(1)                  # warm-up: history allocated, data and weights moved to the device
        copies_by_array.clear()
        in_layers.clear()
        solver.step(1)
    finally:
        mode.set_mode_cpu()
    history = {id(blob._synced(which)) for blob in solver.history_blobs for which in ("data", "diff")}
    params = {id(blob._synced(which)) for blob in net.learnable_params for which in ("data", "diff")}
    assert not history & set(copies_by_array), "the history was copied to the host"
    assert not params & set(copies_by_array), "a parameter was copied to the host"
    by_solver = sum(copies_by_array.values()) - sum(in_layers)
    assert by_solver == 0, f"the solver copied {by_solver} array(s) to the host"
    loss = id(net.blobs["loss"]._synced("data"))
    assert copies_by_array == {loss: 1}, "more than the loss scalar crossed to the host"


def test_the_nan_check_stays_on_the_device_and_names_the_parameter():
    solver = make_solver("SGD")
    mode.set_mode_gpu()
    try:
        for blob in solver.net.learnable_params:
            blob.gpu_data
        before = dict(SyncedArray.copies)
        solver._check_parameters_finite()
        assert SyncedArray.copies == before
        bias = solver.net.learnable_params[1]
        values = bias.data
        values[1] = np.inf
        bias.gpu_data
        with pytest.raises(NonFiniteError, match="parameter 1 of layer 'ip'"):
            solver._check_parameters_finite()
    finally:
        mode.set_mode_cpu()


def test_a_test_pass_sums_its_outputs_on_the_device(copies_by_array):
    cpu = make_solver("SGD", test_net=True)
    gpu = make_solver("SGD", test_net=True)
    for solver in (cpu, gpu):
        solver.test_nets[0].blobs["x"].data[...] = X
        solver.test_nets[0].blobs["label"].data[...] = LABELS
    expected = cpu.test(0)
    mode.set_mode_gpu()
    try:
        copies_by_array.clear()
        got = gpu.test(0)
    finally:
        mode.set_mode_cpu()
    accuracy = gpu.test_nets[0].blobs["accuracy"]
    assert id(accuracy._synced("data")) not in copies_by_array, "the accuracy was copied at every iteration"
    assert got.keys() == expected.keys() == {"loss", "accuracy"}
    for name in got:
        assert got[name] == pytest.approx(expected[name], rel=1e-5)
    assert gpu.test_nets[0].last_loss == pytest.approx(cpu.test_nets[0].last_loss, rel=1e-5)


def test_a_snapshot_copies_once_and_the_history_stays_current_on_the_device(tmp_path):
    solver = make_solver("AdaDelta")
    solver.param.snapshot_prefix = str(tmp_path / "tiny")
    mode.set_mode_gpu()
    try:
        solver.step(2)
        before = SyncedArray.copies["to_host"]
        _, state_file = solver.snapshot()
        copied = SyncedArray.copies["to_host"] - before
        # read, not taken over by the host: the next update needs no copy back
        assert {blob._synced("data").head for blob in solver.history_blobs} == {"synced"}
        diffs_on_the_device(solver)
        solver.apply_update()
        expected = [array.copy() for array in solver.history]
    finally:
        mode.set_mode_cpu()
    assert copied <= len(solver.net.learnable_params) + len(solver.history_blobs)     # each once at most
    resumed = make_solver("AdaDelta")
    resumed.restore(state_file)
    diffs_on_the_device(resumed)
    mode.set_mode_gpu()
    try:
        resumed.apply_update()
    finally:
        mode.set_mode_cpu()
    for got, want in zip(resumed.history, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    for got, want in zip(resumed.net.learnable_params, solver.net.learnable_params):
        np.testing.assert_allclose(got.data, want.data, rtol=1e-5, atol=1e-7)


class TwoRanks(distributed.World):
    """A world of two ranks in one process: the other rank's contribution is added by the all-reduce."""

    size = 2

    def __init__(self, other):
        self.other = other
        self.reduced = []

    def allreduce_sum(self, arrays, what):
        self.reduced.append([array.copy() for array in arrays])
        for array, theirs in zip(arrays, self.other(arrays)):
            array += theirs


def test_the_all_reduce_packs_device_gradients_and_averages_them():
    from minicaffe import gpu
    generator = np.random.default_rng(1)
    mine = [generator.standard_normal(n).astype(np.float32) for n in (5, 0, 130)]
    theirs = [generator.standard_normal(n).astype(np.float32) for n in (5, 0, 130)]
    world = TwoRanks(lambda arrays: [np.concatenate(theirs), np.ones_like(arrays[1])])
    device = [gpu.to_device(array) for array in mine]
    meta = np.array([1.5, 0.0])
    world.allreduce_mean_device(device, [meta], "a test")
    np.testing.assert_array_equal(world.reduced[0][0], np.concatenate(mine))    # one flat buffer on the host
    for got, a, b in zip(device, mine, theirs):
        np.testing.assert_allclose(got.copy_to_host(), (a + b) * np.float32(0.5), rtol=1e-6)
    np.testing.assert_allclose(meta, [2.5, 1.0])


def test_a_data_parallel_iteration_averages_device_gradients_as_on_the_cpu():
    def run(use_gpu):
        solver = make_solver("SGD")
        solver.world = TwoRanks(lambda arrays: [2 * array for array in arrays])   # the other rank: twice ours
        solver._ranks_synced = True
        diffs_on_the_device(solver, seed=4)
        if use_gpu:
            mode.set_mode_gpu()
        try:
            before = dict(SyncedArray.copies)
            loss, _, request = solver._average_over_ranks(0.75, display=False)
            if use_gpu:
                assert SyncedArray.copies == before, "the device all-reduce went through the blobs' host copies"
        finally:
            mode.set_mode_cpu()
        return loss, request, [blob.diff.copy() for blob in solver.net.learnable_params]

    gpu_loss, gpu_request, gpu_diffs = run(True)
    cpu_loss, cpu_request, cpu_diffs = run(False)
    assert gpu_loss == cpu_loss == pytest.approx(0.75 * 3 / 2)
    assert gpu_request is cpu_request is None
    for got, want in zip(gpu_diffs, cpu_diffs):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_subclass_that_redefines_the_cpu_rule_keeps_it_in_gpu_mode():
    from minicaffe.solvers import SGDSolver

    class HalfSteps(SGDSolver):
        def compute_update_value(self, index, local_rate):
            self.learnable[index].blob.diff[...] *= 0.5

    solver = HalfSteps(make_solver("SGD").param)
    solver.net.blobs["x"].data[...] = X
    diffs_on_the_device(solver)
    start = [blob.data.copy() for blob in solver.net.learnable_params]
    steps = [blob.diff.copy() for blob in solver.net.learnable_params]
    mode.set_mode_gpu()
    try:
        solver.apply_update()
    finally:
        mode.set_mode_cpu()
    for blob, before, step in zip(solver.net.learnable_params, start, steps):
        np.testing.assert_allclose(blob.data, before - 0.5 * step, rtol=1e-6)


RANK_SCRIPT = '''
import sys
import numpy as np
import minicaffe as caffe
from minicaffe import distributed, mode
from minicaffe.proto.text import parse_solver, parse_text
solver_text, net_text, data, out = sys.argv[1:]
param = parse_solver(solver_text)
parse_text(net_text, param.net_param)
world = distributed.world()
solver = caffe.Solver(param)
arrays = np.load(data)
solver.net.blobs["x"].data[...] = arrays["x"][world.rank::world.size]       # rank r: records r, r + K, ...
solver.net.blobs["label"].data[...] = arrays["label"][world.rank::world.size]
mode.set_mode_gpu()
solver.step(3)
mode.set_mode_cpu()
np.savez(f"{out}/rank{world.rank}.npz", *[blob.data for blob in solver.net.learnable_params])
'''


@pytest.mark.skipif(distributed.find_mpiexec() is None, reason="needs MPI: the distributed extra")
def test_two_ranks_on_the_device_equal_one_process_with_twice_the_batch(tmp_path):
    """Real `mpiexec -n 2` in GPU mode (the simulator): the device all-reduce averages the ranks' gradients."""
    import os
    import subprocess
    import sys
    solver_text = ('type: "Adam" base_lr: 0.1 lr_policy: "fixed" display: 0 max_iter: 10 snapshot_after_train: false '
                   'random_seed: 3 weight_decay: 0.01 clip_gradients: 0.5 ' + RULES["Adam"])
    generator = np.random.default_rng(6)
    x, label = generator.standard_normal((8, 3)).astype(np.float32), np.array([0, 2, 1, 2, 1, 0, 0, 2], np.float32)
    np.savez(tmp_path / "data.npz", x=x, label=label)
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PMI_", "OMPI_"))}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))     # this checkout's minicaffe
    environment.update(NUMBA_ENABLE_CUDASIM="1", MINICAFFE_MPI_TIMEOUT="60",
                       PYTHONPATH=os.pathsep.join(filter(None, [root, environment.get("PYTHONPATH")])))
    done = subprocess.run([distributed.find_mpiexec(), "-n", "2", sys.executable, str(tmp_path / "rank.py"),
                           solver_text, NET, str(tmp_path / "data.npz"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=environment)
    assert done.returncode == 0, done.stderr
    param = parse_solver(solver_text)
    parse_text(NET.replace("dim: 4 dim: 3 } shape { dim: 4 }", "dim: 8 dim: 3 } shape { dim: 8 }"), param.net_param)
    one = caffe.Solver(param)           # one process, both ranks' records in one batch, on the CPU
    one.net.blobs["x"].data[...] = x
    one.net.blobs["label"].data[...] = label
    one.step(3)
    ranks = [np.load(tmp_path / f"rank{rank}.npz") for rank in range(2)]
    for index, blob in enumerate(one.net.learnable_params):
        np.testing.assert_allclose(ranks[0][f"arr_{index}"], blob.data, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ranks[1][f"arr_{index}"], ranks[0][f"arr_{index}"])
