"""The GPU user surface, the parts that need no device: one GPU per process (--gpu all or a list refused
outside MPI, one device per rank under it), `time --gpu`'s marks and summary line, benchmarks/bench_gpu.py's
arguments and nets (never timed here)."""

import importlib.util
import os

import pytest
from click.testing import CliRunner

import minicaffe.distributed
import minicaffe.mode
import minicaffe.train
from minicaffe.cli import main
from minicaffe.timing import LayerTime, TimingReport, cpu_summary, report_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def library(monkeypatch):
    """The library functions the commands would run, replaced by recorders: name -> [(args, kwargs)]."""
    calls = {}

    def recorder(name, result=None):
        def record(*args, **kwargs):
            calls.setdefault(name, []).append((args, kwargs))
            return result
        return record
    monkeypatch.setattr(minicaffe.train, "train", recorder("train"))
    monkeypatch.setattr(minicaffe.train, "test", recorder("test"))
    monkeypatch.setattr("minicaffe.timing.run_time", recorder("run_time", result=[]))
    monkeypatch.setattr("minicaffe.run.run_forward", recorder("run_forward", result=[]))
    monkeypatch.setattr("minicaffe.logs.setup_logging", recorder("setup_logging"))
    monkeypatch.setattr("minicaffe.cli._select_device", recorder("select_device"))
    return calls


@pytest.mark.parametrize("command", [
    ["train", "-solver", "s.prototxt"], ["test", "-model", "n.prototxt", "-weights", "w.caffemodel"],
    ["time", "-model", "n.prototxt"], ["forward", "n.prototxt"]])
@pytest.mark.parametrize("gpu", [["-gpu", "all"], ["--gpu", "0,1"], ["-gpu=1,0"]])
def test_several_devices_are_refused_in_one_process(library, command, gpu):
    result = CliRunner().invoke(main, command + gpu)
    assert result.exit_code == 1
    value = gpu[-1].split("=")[-1]
    assert result.output == (
        f"minicaffe: error: {command[0]} --gpu {value}: minicaffe runs one GPU per process; give one device id "
        f"(--gpu 0), or train on several GPUs with `mpiexec -n K minicaffe train ... --gpu {value}` "
        "(one device per rank)\n")
    assert set(library) <= {"setup_logging"}      # nothing was built or run, no device chosen


@pytest.mark.parametrize("command, called", [
    (["train", "-solver", "s.prototxt"], "train"), (["test", "-model", "n.prototxt", "-weights", "w"], "test"),
    (["time", "-model", "n.prototxt"], "run_time"), (["forward", "n.prototxt"], "run_forward")])
def test_one_device_id_is_taken(library, command, called):
    result = CliRunner().invoke(main, command + ["-gpu", "1"])
    assert result.exit_code == 0, result.output
    assert called in library


class _TwoRanks(minicaffe.distributed.World):
    size = 2
    rank = local_rank = 1
    local_size = 2


def test_under_mpi_train_takes_all_or_a_list(library, monkeypatch):
    """mpiexec -n K minicaffe train ... --gpu all: every rank gets the flag, and picks its own device."""
    monkeypatch.setattr(minicaffe.distributed, "world", lambda: _TwoRanks())
    for gpu in ("all", "0,1"):
        result = CliRunner().invoke(main, ["train", "-solver", "s.prototxt", "-gpu", gpu])
        assert result.exit_code == 0, result.output
        assert library["train"][-1][1]["gpu"] == gpu
    # forward, test and time run one process each: a list is refused under MPI too
    refused = CliRunner().invoke(main, ["time", "-model", "n.prototxt", "-gpu", "all"])
    assert refused.exit_code == 1 and "mpiexec -n K minicaffe train" in refused.output


@pytest.mark.parametrize("gpu, device", [("all", 1), ("0,1", 1), ("2,3", 3), ("5", 5), ("4,5,6", 5)])
def test_rank_r_on_a_machine_takes_device_r(monkeypatch, gpu, device):
    """Under MPI, the rank of local rank r uses device r for 'all', the (r mod count)-th of a list, or the one
    id given (several ranks then share that device)."""
    chosen = []
    monkeypatch.setattr(minicaffe.distributed, "world", lambda: _TwoRanks())
    monkeypatch.setattr(minicaffe.mode, "set_device", chosen.append)
    monkeypatch.setattr(minicaffe.mode, "set_mode_gpu", lambda: chosen.append("gpu"))
    minicaffe.train.select_mode(gpu)
    assert chosen == [device, "gpu"]


def _report(*layers):
    return TimingReport(iterations=1, gpu=True, layers=list(layers))


def test_the_summary_names_each_layer_and_what_ran_on_the_cpu():
    both = LayerTime("norm1", "LRN", 1, 1, runs_backward=True, forward_on_cpu=True, backward_on_cpu=True)
    forward = LayerTime("prob", "Softmax", 1, 1, runs_backward=True, forward_on_cpu=True)
    backward = LayerTime("loss", "SoftmaxWithLoss", 1, 1, runs_backward=True, backward_on_cpu=True)
    no_backward = LayerTime("data", "Data", 1, 0, forward_on_cpu=True)
    on_gpu = LayerTime("conv1", "Convolution", 1, 1, runs_backward=True)
    assert cpu_summary(_report(on_gpu, both, forward, backward, no_backward)) == (
        "4 layers ran on the CPU in GPU mode: norm1 (LRN), prob (Softmax, forward only), "
        "loss (SoftmaxWithLoss, backward only), data (Data)")
    assert cpu_summary(_report(on_gpu, both)) == "1 layer ran on the CPU in GPU mode: norm1 (LRN)"
    assert cpu_summary(_report(on_gpu)) == "All 1 layers ran on the GPU."
    lines = list(report_lines(_report(on_gpu, forward)))
    assert lines[lines.index("Average time per layer: ") + 1:][:5] == [
        "     conv1\tforward: 1 ms.", "     conv1\tbackward: 1 ms.",
        "      prob\tforward: 1 ms. (CPU)", "      prob\tbackward: 1 ms.",
        "1 layer ran on the CPU in GPU mode: prob (Softmax, forward only)"]
    cpu_mode = TimingReport(iterations=1, layers=[LayerTime("conv1", "Convolution", 1, 1, "im2row")])
    assert not any("ran on the" in line or "(CPU)" in line for line in report_lines(cpu_mode))


# ---------------------------------------------------------------- benchmarks/bench_gpu.py

@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", os.path.join(ROOT, "benchmarks", "bench_gpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_arguments(bench):
    args = bench.parse([])
    assert args.nets == ["lenet", "cifar10_quick", "resnet50"] and args.device == 0
    assert args.output == os.path.join(ROOT, "benchmarks", "results", "gpu.md")
    assert bench.parse(["--nets", "resnet50, lenet", "--rounds", "2"]).nets == ["resnet50", "lenet"]
    for wrong in (["--nets", "alexnet"], ["--nets", ","], ["--iterations", "0"]):
        with pytest.raises(SystemExit) as stopped:
            bench.parse(wrong)
        assert stopped.value.code == 2


def test_bench_gpu_refuses_without_a_gpu(bench, monkeypatch):
    """This suite runs without a GPU and without the simulator: the benchmark says why and times nothing."""
    import minicaffe.gpu
    monkeypatch.setattr(minicaffe.gpu, "available", lambda: False)
    with pytest.raises(SystemExit, match="needs an NVIDIA GPU that numba can use .* nothing was timed"):
        bench.main(["--output", os.devnull])
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    with pytest.raises(SystemExit, match="NUMBA_ENABLE_CUDASIM is set: the simulator's timings measure Python"):
        bench.main([])


@pytest.mark.parametrize("name, shapes", [("lenet", [[64, 1, 28, 28], [64]]),
                                          ("cifar10_quick", [[100, 3, 32, 32], [100]])])
def test_bench_gpu_training_nets_hold_one_batch(bench, name, shapes):
    net = bench.training_net(name)
    first = net.layer[0]
    assert first.type == "Input" and list(first.top) == ["data", "label"]
    assert [list(shape.dim) for shape in first.input_param.shape] == shapes
    assert "DummyData" not in [layer.type for layer in net.layer]
    assert not any(layer.include for layer in net.layer)            # the TRAIN phase's layers only
    assert "Accuracy" not in [layer.type for layer in net.layer]


def test_bench_gpu_twin_holds_the_solvers_weights(bench):
    """The PyTorch twin of a training row is built from the solver's net (no iteration is run here: that
    costs numba's compilation; the benchmark checks the first losses before timing)."""
    torch = pytest.importorskip("torch")
    solver = bench.training_solver("lenet")
    assert solver.type_name == "SGD" and solver.nan_check is False and not solver.test_nets
    assert (solver.param.momentum, solver.param.weight_decay) == pytest.approx((0.9, 0.0005))
    labels = solver.net.blobs["label"].data
    assert labels.min() >= 0 and labels.max() <= 9 and len(set(labels.tolist())) > 1
    theirs = bench.torch_training("lenet", solver.net, "cpu")
    weights = [p for cell in theirs.__closure__ if isinstance(cell.cell_contents, torch.nn.Module)
               for p in cell.cell_contents.parameters()]
    ours = [blob.data for name in ("conv1", "conv2", "ip1", "ip2") for blob in solver.net.layer_dict[name].blobs]
    assert len(weights) == len(ours) == 8
    for tensor, array in zip(weights, ours):
        assert tensor.detach().numpy().tolist() == array.tolist()
    bench.check_losses("LeNet", {"minicaffe": 2.3, "PyTorch": 2.3 * (1 + 1e-5)})
    with pytest.raises(SystemExit, match="the first losses differ"):
        bench.check_losses("LeNet", {"minicaffe": 2.3, "PyTorch": 2.4})


class _FakeDevice:
    """What numba's Device gives for a card: its attributes are CUDA's device attributes by name."""
    name = b"NVIDIA H100 80GB HBM3"
    compute_capability = (9, 0)
    MAX_SHARED_MEMORY_PER_BLOCK, MAX_REGISTERS_PER_BLOCK, WARP_SIZE, MAX_PITCH = 49152, 65536, 32, 2147483647
    MAX_THREADS_PER_BLOCK, MAX_BLOCK_DIM_X, MAX_BLOCK_DIM_Y, MAX_BLOCK_DIM_Z = 1024, 1024, 1024, 64
    MAX_GRID_DIM_X, MAX_GRID_DIM_Y, MAX_GRID_DIM_Z = 2147483647, 65535, 65535
    CLOCK_RATE, TOTAL_CONSTANT_MEMORY, TEXTURE_ALIGNMENT = 1980000, 65536, 512
    GPU_OVERLAP, MULTIPROCESSOR_COUNT, KERNEL_EXEC_TIMEOUT = 1, 132, 0


class _FakeCuda:
    gpus = [__import__("contextlib").nullcontext()] * 2

    @staticmethod
    def is_available():
        return True

    @staticmethod
    def get_current_device():
        return _FakeDevice()

    @staticmethod
    def current_context():
        class Context:
            def get_memory_info(self):
                return 84000000000, 85045395456
        return Context()


def test_device_query_prints_a_card_as_caffe_does(monkeypatch):
    """Caffe's Caffe::DeviceQuery lines, byte for byte (values of an H100), for each device asked for."""
    import minicaffe.gpu
    monkeypatch.setattr(minicaffe.gpu, "require", lambda: _FakeCuda)
    monkeypatch.setattr(minicaffe.gpu, "simulated", lambda: False)
    result = CliRunner().invoke(main, ["device_query", "-gpu", "1"])
    assert result.exit_code == 0, result.output
    assert result.output == """\
Device id:                     1
Major revision number:         9
Minor revision number:         0
Name:                          NVIDIA H100 80GB HBM3
Total global memory:           85045395456
Total shared memory per block: 49152
Total registers per block:     65536
Warp size:                     32
Maximum memory pitch:          2147483647
Maximum threads per block:     1024
Maximum dimension of block:    1024, 1024, 64
Maximum dimension of grid:     2147483647, 65535, 65535
Clock rate:                    1980000
Total constant memory:         65536
Texture alignment:             512
Concurrent copy and execution: Yes
Number of multiprocessors:     132
Kernel execution timeout:      No
"""
    every = CliRunner().invoke(main, ["device-query"])
    assert every.exit_code == 0 and every.output.count("Device id:") == 2
    missing = CliRunner().invoke(main, ["device-query", "--gpu", "2"])
    assert missing.exit_code == 1 and "device 2 does not exist: numba sees 2 CUDA device(s)" in missing.output


def test_every_device_attribute_read_is_one_numba_knows():
    """numba's Device reads CU_DEVICE_ATTRIBUTE_<NAME> by attribute name: each one device-query reads exists."""
    import re

    from minicaffe import cli
    driver = pytest.importorskip("cuda.bindings.driver")
    source = __import__("inspect").getsource(cli)
    names = set(re.findall(r"device\.([A-Z_]+)", source))
    assert len(names) >= 15
    assert {name for name in names if not hasattr(driver.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{name}")} == set()


def test_detect_refuses_several_devices_too():
    """detect (minicaffe/cli_infer.py) chooses its device through the same function."""
    result = CliRunner().invoke(main, ["detect", "net.prototxt", "w.caffemodel", "image.png", "--gpu", "0,1"])
    assert result.exit_code == 1
    assert result.output.startswith("minicaffe: error: detect --gpu 0,1: minicaffe runs one GPU per process")
