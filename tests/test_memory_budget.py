"""Memory before allocation (minicaffe.memory_budget): the estimate against what a net really allocates,
the limit and its overrides, refusals before anything is allocated (also in a process whose address space
is limited), and a MemoryError inside a layer as a minicaffe error naming the layer."""

import gc
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import pytest
from click.testing import CliRunner

import minicaffe
from minicaffe import memory_budget
from minicaffe.cli import main
from minicaffe.errors import LayerMemoryError, MemoryLimitError, MinicaffeError
from minicaffe.layers.inner_product import InnerProductLayer
from minicaffe.memory_budget import (estimate_memory, format_size, max_memory, memory_limit, parse_size)
from minicaffe.net import Net

GiB = 1 << 30

# Convolution on each of its three paths, MAX and AVE pooling, dropout, inner products, a softmax loss:
# trained (Forward and Backward).
TRAIN_NET = """
name: "train"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 32 dim: 3 dim: 32 dim: 32 } shape { dim: 32 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "dw" type: "Convolution" bottom: "pool1" top: "dw"
  convolution_param { num_output: 32 group: 32 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "pw" type: "Convolution" bottom: "dw" top: "pw"
  convolution_param { num_output: 48 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "pw" top: "pool2" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  inner_product_param { num_output: 256 weight_filler { type: "xavier" } } }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

# Batch norm, scale (folded into the convolution in TEST), LRN, eltwise, concat, deconvolution, sigmoid,
# a Euclidean loss: run Forward only, and trained.
BRANCHY_NET = """
name: "branchy"
layer { name: "data" type: "DummyData" top: "data" top: "target"
  dummy_data_param { shape { dim: 16 dim: 8 dim: 32 dim: 32 } shape { dim: 16 dim: 10 }
                     data_filler { type: "uniform" } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "lrn" type: "LRN" bottom: "conv" top: "lrn" lrn_param { local_size: 3 } }
layer { name: "side" type: "Convolution" bottom: "data" top: "side"
  convolution_param { num_output: 16 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "sum" type: "Eltwise" bottom: "lrn" bottom: "side" top: "sum" eltwise_param { operation: MAX } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "conv" top: "cat" }
layer { name: "up" type: "Deconvolution" bottom: "cat" top: "up"
  convolution_param { num_output: 4 kernel_size: 2 stride: 2 weight_filler { type: "xavier" } } }
layer { name: "sig" type: "Sigmoid" bottom: "up" top: "up" }
layer { name: "ip" type: "InnerProduct" bottom: "up" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""

LSTM_NET = """
name: "lstm"
layer { name: "data" type: "DummyData" top: "x" top: "cont"
  dummy_data_param { shape { dim: 20 dim: 16 dim: 64 } shape { dim: 20 dim: 16 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
  recurrent_param { num_output: 128 weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "h" bottom: "h" top: "loss" }
"""

HUGE_INPUT = """
name: "huge"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1000 dim: 1000 dim: 1000 dim: 1000 } } }
layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }
"""

WIDE_CONV = """
name: "wide"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 3 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2147483647 kernel_size: 3 weight_filler { type: "xavier" } } }
"""

TILED = """
name: "tiled"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 1024 dim: 1024 } } }
layer { name: "tile" type: "Tile" bottom: "data" top: "tiled" tile_param { axis: 0 tiles: 4096 } }
"""

SMALL = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 10 } }
"""


@pytest.fixture(autouse=True)
def _no_memory_variable(monkeypatch):
    monkeypatch.delenv(memory_budget.ENV_VAR, raising=False)


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


# ---------------------------------------------------------------- sizes and the limit
@pytest.mark.parametrize("text, expected", [
    ("8G", 8 * GiB), ("512M", 512 << 20), ("1.5G", 3 * GiB // 2), ("8GiB", 8 * GiB), ("8gb", 8 * GiB),
    ("64k", 64 << 10), ("2T", 2 << 40), ("100000", 100000), (" 3 M ", 3 << 20), (4096, 4096),
    ("none", None), ("off", None), ("unlimited", None),
])
def test_sizes_parse_in_powers_of_1024(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "1X", "-5G", "0", "abc", "nan", "inf", True])
def test_a_bad_size_is_a_minicaffe_error_naming_the_option(text):
    with pytest.raises(MinicaffeError, match="--max-memory"):
        parse_size(text)


def test_the_limit_comes_from_the_keyword_then_the_option_then_the_variable_then_the_process(monkeypatch):
    detected = memory_limit()
    assert detected.bytes is None or detected.bytes > 0
    monkeypatch.setenv(memory_budget.ENV_VAR, "3G")
    assert (memory_limit().bytes, memory_limit().source) == (3 * GiB, "MINICAFFE_MAX_MEMORY")
    with max_memory("2G"):
        assert (memory_limit().bytes, memory_limit().source) == (2 * GiB, "--max-memory")
        assert (memory_limit("1G").bytes, memory_limit("1G").source) == (GiB, "max_memory=")
    assert memory_limit().bytes == 3 * GiB      # the block is over
    monkeypatch.setenv(memory_budget.ENV_VAR, "none")
    assert memory_limit().bytes is None
    monkeypatch.setenv(memory_budget.ENV_VAR, "lots")
    with pytest.raises(MinicaffeError, match="MINICAFFE_MAX_MEMORY: 'lots' is not a size"):
        memory_limit()


def test_the_detected_limit_is_the_smallest_candidate(monkeypatch):
    monkeypatch.setattr(memory_budget, "_rlimit_candidates", lambda: [(5 * GiB, "address-space limit RLIMIT_AS")])
    monkeypatch.setattr(memory_budget, "_cgroup_candidates", lambda: [(3 * GiB, "cgroup memory.max")])
    monkeypatch.setattr(memory_budget, "_available_candidates", lambda: [(9 * GiB, "available memory")])
    assert memory_budget.detect_limit() == memory_budget.MemoryLimit(3 * GiB, "cgroup memory.max")
    monkeypatch.setattr(memory_budget, "_cgroup_candidates", lambda: [])
    monkeypatch.setattr(memory_budget, "_rlimit_candidates", lambda: [])
    monkeypatch.setattr(memory_budget, "_available_candidates", lambda: [])
    assert memory_budget.detect_limit().bytes is None


def test_the_cgroup_limit_is_read_from_the_process_own_cgroup_and_its_parents(tmp_path, monkeypatch):
    # cgroup v2 at tmp/cg, the process in /a/b: b has no limit, a has 4 GiB with 1 GiB in use (0.25 GiB of it
    # inactive page cache, which can be reclaimed)
    root = tmp_path / "cg"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "memory.max").write_text("max\n")
    (root / "a" / "memory.max").write_text(f"{4 * GiB}\n")
    (root / "a" / "memory.current").write_text(f"{GiB}\n")
    (root / "a" / "memory.stat").write_text(f"anon 1\ninactive_file {GiB // 4}\n")
    files = {"/proc/self/cgroup": "0::/a/b\n",
             "/proc/self/mountinfo": f"40 30 0:38 / {root} rw,relatime - cgroup2 cgroup2 rw\n"}
    real_open = open

    def fake_open(path, *args, **kwargs):
        if path in files:
            import io
            return io.StringIO(files[path])
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", fake_open)
    [(available, source)] = memory_budget._cgroup_candidates()
    assert available == 4 * GiB - 3 * GiB // 4
    assert "memory.max 4.0 GiB" in source and str(root / "a") in source


# ---------------------------------------------------------------- the estimate against what is allocated
def _peak_of(path, phase, backward):
    """(estimate, traced peak bytes) of building ``path`` and running Forward (and Backward)."""
    minicaffe.set_random_seed(1)
    warm = Net(path, phase)                 # numba kernels compiled (or loaded) before measuring
    warm.forward()
    if backward:
        warm.backward()
    del warm
    gc.collect()
    tracemalloc.start()
    try:
        net = Net(path, phase)
        net.forward()
        if backward:
            net.backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = estimate_memory(net)
    return (estimate.backward if backward else estimate.forward), peak, estimate


@pytest.mark.parametrize("text, phase, backward", [
    (TRAIN_NET, "TRAIN", True), (TRAIN_NET, "TEST", False),
    (BRANCHY_NET, "TRAIN", True), (BRANCHY_NET, "TEST", False), (LSTM_NET, "TRAIN", True),
])
def test_the_estimate_is_an_upper_bound_close_to_what_is_allocated(write_file, text, phase, backward):
    path = write_file("net.prototxt", text)
    needed, peak, estimate = _peak_of(path, phase, backward)
    # numpy reports its arrays to tracemalloc: the peak is every array minicaffe held at once (plus a little
    # of Python's own); the estimate must cover it without being much more
    assert peak <= needed <= 1.5 * peak, (format_size(needed), format_size(peak), estimate.table())
    assert estimate.forward <= estimate.backward
    assert not estimate.partial


def test_the_estimate_of_a_shapes_only_net_equals_the_built_one(write_file):
    path = write_file("net.prototxt", TRAIN_NET)
    checked = Net(path, "TRAIN", shape_inference=True)
    built = Net(path, "TRAIN")
    assert estimate_memory(checked).backward == estimate_memory(built).backward
    layers = {layer.name: layer for layer in estimate_memory(built).layers}
    assert layers["conv1"].top_data == 32 * 32 * 32 * 32 * 4
    assert layers["relu1"].top_data == 0                    # in place: conv1's memory
    assert layers["ip1"].params == (256 * 48 * 8 * 8 + 256) * 4
    assert layers["pool1"].workspace.kept == 32 * 32 * 16 * 16 * 4    # the argmax mask, int32


# ---------------------------------------------------------------- refusals
def test_a_net_over_the_limit_is_refused_before_it_allocates_naming_the_largest_blobs(write_file):
    path = write_file("net.prototxt", SMALL)
    tracemalloc.start()
    try:
        with pytest.raises(MemoryLimitError) as caught:
            Net(path, "TEST", max_memory="10K")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    error = caught.value
    message = str(error)
    assert message.startswith("net 'small' needs about ")
    assert "more than the 10.0 KiB this process may use (max_memory=)" in message
    assert ("the largest blobs: conv (4x8x14x14, 24.5 KiB), ip param 0 (10x392, 15.3 KiB), "
            "data (4x3x16x16, 12.0 KiB)") in message
    assert "Nothing was allocated" in message
    assert isinstance(error, MemoryError) and error.needed == error.estimate.forward
    assert peak < 200 << 10         # the shapes-only pass: protobuf and Python objects, no blob memory
    assert Net(path, "TEST", max_memory="10M").blobs["ip"].shape == (4, 10)


def test_check_prints_the_estimate_and_the_limit(write_file):
    path = write_file("net.prototxt", TRAIN_NET)
    result = run("check", path, "--max-memory", "1G")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    memory = [line for line in lines if line.startswith("memory: ")]
    assert len(memory) == 1 and lines[-1] == "OK"
    estimate = estimate_memory(Net(path, "TRAIN", shape_inference=True))
    assert memory[0] == (f"memory: ~{format_size(estimate.forward)} to run Forward "
                         f"({format_size(estimate.backward)} with Backward), limit 1.0 GiB (--max-memory)")
    between = (estimate.forward + estimate.backward) // 2
    flagged = run("check", path, "--max-memory", str(between))
    assert flagged.exit_code == 0 and "with Backward: over the limit), limit" in flagged.output


@pytest.mark.parametrize("text, largest", [
    (HUGE_INPUT, "data (1000x1000x1000x1000, 3.6 TiB)"),
    (WIDE_CONV, "conv param 0 (2147483647x4x3x3, 288.0 GiB)"),
    (TILED, "tiled (4096x3x1024x1024, 48.0 GiB)"),
])
def test_check_flags_the_issue_nets_and_exits_1_with_one_line(write_file, text, largest):
    path = write_file("net.prototxt", text)
    result = run("check", path, "--max-memory", "16G")
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "OK" not in result.output.splitlines()
    memory = next(line for line in result.output.splitlines() if line.startswith("memory: "))
    assert memory.endswith("limit 16.0 GiB (--max-memory) -- over the limit")
    error = result.output.splitlines()[-1]
    assert error.startswith("minicaffe: error: net '") and largest in error
    assert "more than the 16.0 GiB this process may use (--max-memory)" in error


def test_forward_time_and_the_variable_refuse_with_one_line(write_file):
    path = write_file("net.prototxt", SMALL)
    trained = write_file("trained.prototxt", TRAIN_NET)
    forward = run("forward", path, "--max-memory", "10K")
    assert forward.exit_code == 1
    assert forward.output.startswith("minicaffe: error: net 'small' needs about ") and forward.output.count("\n") == 1
    assert memory_limit().source != "--max-memory"      # the option held for its command only
    by_variable = run("forward", path, env={memory_budget.ENV_VAR: "10K"})
    assert by_variable.exit_code == 1 and "(MINICAFFE_MAX_MEMORY)" in by_variable.output
    assert run("forward", path, "--max-memory", "none", env={memory_budget.ENV_VAR: "10K"}).exit_code == 0
    bad = run("forward", path, "--max-memory", "lots")
    assert bad.exit_code == 2 and "Invalid value for '--max-memory': 'lots' is not a size" in bad.output
    # time runs Backward too: a limit between the Forward and the Forward-Backward estimates stops it
    estimate = estimate_memory(Net(trained, "TRAIN", shape_inference=True))
    timed = run("time", trained, "--iterations", "1", "--max-memory",
                str((estimate.forward + estimate.backward) // 2))
    assert timed.exit_code == 1 and "to run Forward and Backward" in timed.output
    assert "(the parameters" not in timed.output    # a given limit caps the whole estimate


def test_training_counts_the_solver_history_and_is_refused_before_it(write_file):
    net = write_file("net.prototxt", TRAIN_NET)
    solver = write_file("solver.prototxt", f'net: "{net}" type: "Adam" base_lr: 0.01 max_iter: 1 '
                                           'lr_policy: "fixed" snapshot_after_train: false')
    built = minicaffe.get_solver(solver) if hasattr(minicaffe, "get_solver") else minicaffe.AdamSolver(solver)
    training = memory_budget.check_training_memory(built)
    estimate = estimate_memory(built.net)
    params = sum(blob.data.nbytes for blob in built.net.learnable_params)
    assert training.training >= estimate.backward + 2 * params      # Adam: two history arrays per parameter
    with max_memory((estimate.backward + training.training) // 2):
        with pytest.raises(MemoryLimitError, match=r"needs about .* to train \(Forward, Backward, the solver's "
                                                   r"history and the test nets\)"):
            minicaffe.AdamSolver(solver)


# ---------------------------------------------------------------- a MemoryError that still happens
def _out_of_memory(*args):
    raise MemoryError("Unable to allocate 8.00 GiB for an array with shape (2147483648,) and data type float32")


def test_a_memory_error_in_a_layer_names_the_layer(write_file, monkeypatch):
    path = write_file("net.prototxt", TRAIN_NET)
    net = Net(path, "TRAIN")
    monkeypatch.setattr(InnerProductLayer, "forward", _out_of_memory)
    with pytest.raises(LayerMemoryError, match=r"^layer 'ip1': out of memory in Forward \(Unable to allocate "
                                                r"8.00 GiB") as caught:
        net.forward()
    assert caught.value.layer == "ip1" and isinstance(caught.value, MinicaffeError)
    monkeypatch.undo()
    net.forward()
    monkeypatch.setattr(InnerProductLayer, "backward", _out_of_memory)
    with pytest.raises(LayerMemoryError, match=r"^layer 'ip2': out of memory in Backward"):
        net.backward()
    monkeypatch.setattr(InnerProductLayer, "setup", _out_of_memory)
    with pytest.raises(LayerMemoryError, match=r"^layer 'ip1': out of memory setting it up"):
        Net(path, "TRAIN", max_memory="none")


def test_a_memory_error_in_forward_is_one_line_from_the_cli(write_file, monkeypatch):
    path = write_file("net.prototxt", SMALL)
    monkeypatch.setattr(InnerProductLayer, "forward", _out_of_memory)
    result = run("forward", path)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("minicaffe: error: layer 'ip': out of memory in Forward "
                                                     "(Unable to allocate")
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- in a process with an address-space limit
LIMITED_CHILD = textwrap.dedent("""
    import json, sys, tracemalloc
    from click.testing import CliRunner
    import minicaffe
    from minicaffe.cli import main
    from minicaffe.errors import MemoryLimitError
    report = {}
    tracemalloc.start()
    minicaffe.Net(sys.argv[1], minicaffe.TEST, input_shapes={"data": [1, 4, 3, 3]}).forward()   # imports done
    for path in sys.argv[1:]:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        try:
            minicaffe.Net(path, minicaffe.TEST)
            report[path] = {"api": "built"}
        except MemoryLimitError as exc:
            report[path] = {"api": str(exc)}
        report[path]["peak"] = tracemalloc.get_traced_memory()[1] - before
        check = CliRunner().invoke(main, ["check", path])
        forward = CliRunner().invoke(main, ["forward", path])
        report[path].update(check=[check.exit_code, check.output], forward=[forward.exit_code, forward.output])
    print(json.dumps(report))
""")


def _limited(args, limit=2 * GiB):
    import resource

    def limit_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    env = dict(os.environ, MINICAFFE_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop(memory_budget.ENV_VAR, None)
    return subprocess.run([sys.executable] + args, preexec_fn=limit_address_space, capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_under_an_address_space_limit_the_issue_nets_get_the_memory_error_before_allocating(write_file):
    huge = write_file("huge.prototxt", HUGE_INPUT)
    wide = write_file("wide.prototxt", WIDE_CONV)
    # the command itself, in its own process: one line, no MemoryError traceback
    command = _limited(["-m", "minicaffe", "forward", huge])
    assert command.returncode == 1, command.stderr
    assert command.stdout == ""
    [line] = command.stderr.splitlines()
    assert line.startswith("minicaffe: error: net 'huge' needs about ")
    assert "this process may use (address-space limit RLIMIT_AS 2.0 GiB, " in line
    assert "data (1000x1000x1000x1000, 3.6 TiB)" in line and "Nothing was allocated" in line
    assert "MemoryError" not in command.stderr
    # the API and the commands in one limited process
    child = _limited(["-c", LIMITED_CHILD, huge, wide])
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    for path, largest in ((huge, "data (1000x1000x1000x1000, 3.6 TiB)"),
                          (wide, "conv param 0 (2147483647x4x3x3, 288.0 GiB)")):
        result = report[path]
        assert "address-space limit RLIMIT_AS 2.0 GiB" in result["api"] and largest in result["api"]
        assert result["peak"] < 4 << 20         # nothing near the net's size was ever allocated
        code, output = result["check"]
        assert code == 1 and "-- over the limit" in output and output.splitlines()[-1].startswith(
            "minicaffe: error: net '")
        code, output = result["forward"]
        assert code == 1 and output.startswith("minicaffe: error: net '") and "Traceback" not in output


def test_a_python_layer_runs_once_and_the_layers_from_it_on_are_not_counted(tmp_path, monkeypatch):
    (tmp_path / "mc_memory_counting.py").write_text(textwrap.dedent("""
        import caffe
        SETUPS = []

        class Big(caffe.Layer):
            def setup(self, bottom, top):
                SETUPS.append(self)

            def reshape(self, bottom, top):
                top[0].reshape(1000, 1000, 1000, 1000)

            def forward(self, bottom, top):
                pass
    """))
    (tmp_path / "net.prototxt").write_text(textwrap.dedent("""
        name: "py"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "big" type: "Python" bottom: "data" top: "big"
                python_param { module: "mc_memory_counting" layer: "Big" } }
        layer { name: "relu" type: "ReLU" bottom: "big" top: "out" }
    """))
    monkeypatch.delitem(sys.modules, "mc_memory_counting", raising=False)
    net = Net(str(tmp_path / "net.prototxt"), "TEST", max_memory="1M")   # the estimate stops at the Python layer
    assert len(sys.modules["mc_memory_counting"].SETUPS) == 1
    assert net.blobs["big"].shape == (1000, 1000, 1000, 1000)            # unallocated until Forward
    checked = Net(str(tmp_path / "net.prototxt"), "TEST", shape_inference=True)
    if checked.skipped_layers:                      # check did not run the Python layer: a partial estimate
        assert estimate_memory(checked).partial
        assert memory_budget.summary_line(checked).endswith("(not counting the layers with ? shapes)")
    sys.modules.pop("mc_memory_counting", None)


def test_a_found_limit_already_counts_the_parameters_a_built_net_holds(write_file, monkeypatch):
    net = Net(write_file("net.prototxt", TRAIN_NET), "TRAIN")
    estimate = estimate_memory(net)
    held = memory_budget.allocated_bytes(net)
    assert held >= sum(blob.data.nbytes for blob in net.learnable_params)
    found = lambda room: lambda: memory_budget.MemoryLimit(room, "test limit")  # noqa: E731
    monkeypatch.setattr(memory_budget, "detect_limit", found(estimate.backward - held))
    memory_budget.check_memory(net, backward=True)          # what is in use is not asked for twice
    monkeypatch.setattr(memory_budget, "detect_limit", found(estimate.backward - held - 1))
    with pytest.raises(MemoryLimitError, match=r"in use already\), more than the .* \(test limit\).*Refused "
                                               r"before the first pass \(only the parameters are allocated\)"):
        memory_budget.check_memory(net, backward=True)
