"""The GPU user surface under numba's simulator: `minicaffe time --gpu 0` marks the layers that ran their CPU
code, synchronizes the device before reading the clock; `device-query` prints Caffe's fields in Caffe's order.

The nets are made of Python layers defined here, some with ``forward_gpu``/``backward_gpu`` and some without,
so what is marked does not change as the built-in layers gain GPU kernels.
"""

import re

import pytest
from click.testing import CliRunner
from numba import cuda

import minicaffe
from minicaffe import gpu_blas, mode
from minicaffe.cli import main
from minicaffe.net import Net
from minicaffe.timing import report_lines, time_net


class DeviceSource(minicaffe.Layer):
    """A 2x3 top of 0.5, written on the device in GPU mode."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(2, 3)

    def forward(self, bottom, top):
        top[0].data[...] = 0.5

    def forward_gpu(self, bottom, top):
        gpu_blas.fill(top[0].mutable_gpu_data, 0.5)

    def backward(self, top, propagate_down, bottom):
        pass

    backward_gpu = backward


class Host(minicaffe.Layer):
    """top = 2 bottom, on the host only (no GPU methods)."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * top[0].diff


class HalfDevice(Host):
    """top = bottom: Forward on the device, Backward on the host."""

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data

    def forward_gpu(self, bottom, top):
        gpu_blas.copy(bottom[0].gpu_data, top[0].mutable_gpu_data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff


class Device(HalfDevice):
    """top = bottom, both ways on the device."""

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            gpu_blas.copy(top[0].gpu_diff, bottom[0].mutable_gpu_diff)


def python_layer(name, cls, bottom, top):
    wiring = (f' bottom: "{bottom}"' if bottom else "") + f' top: "{top}"'
    return (f'layer {{ name: "{name}" type: "Python"{wiring} '
            f'python_param {{ module: "{__name__}" layer: "{cls}" }} }}\n')


MIXED = ("name: 'mixed'\nforce_backward: true\n" + python_layer("src", "DeviceSource", None, "x")
         + python_layer("host", "Host", "x", "h") + python_layer("half", "HalfDevice", "h", "f")
         + python_layer("dev", "Device", "f", "out"))
ALL_DEVICE = ("name: 'device'\nforce_backward: true\n" + python_layer("src", "DeviceSource", None, "x")
              + python_layer("dev", "Device", "x", "out"))


@pytest.fixture
def write_net(tmp_path):
    def write(text):
        path = tmp_path / "net.prototxt"
        path.write_text(text)
        return str(path)
    return write


def per_layer(output):
    """{(layer, direction): the rest of its line after the time} from `minicaffe time`'s report."""
    found = re.findall(r"^ *(\S+)\t(forward|backward): [0-9.e+-]+ ms\.(.*)$", output, re.M)
    return {(name, direction): rest for name, direction, rest in found}


def test_time_gpu_marks_the_layers_that_ran_on_the_cpu(write_net):
    path = write_net(MIXED)
    result = CliRunner().invoke(main, ["time", path, "--gpu", "0", "--iterations", "1"])
    mode.set_mode_cpu()
    assert result.exit_code == 0, result.output
    assert per_layer(result.output) == {
        ("src", "forward"): "", ("src", "backward"): "",
        ("host", "forward"): " (CPU)", ("host", "backward"): " (CPU)",
        ("half", "forward"): "", ("half", "backward"): " (CPU)",
        ("dev", "forward"): "", ("dev", "backward"): ""}
    summary = "2 layers ran on the CPU in GPU mode: host (Python), half (Python, backward only)\n"
    assert summary in result.output
    # the summary follows the per-layer block, before Caffe's totals
    assert result.output.index(summary) < result.output.index("Average Forward pass: ")


def test_time_with_caffes_gflags_and_every_layer_on_the_gpu(write_net):
    path = write_net(ALL_DEVICE)
    result = CliRunner().invoke(main, ["time", "-model", path, "-gpu", "0", "-iterations", "1"])
    mode.set_mode_cpu()
    assert result.exit_code == 0, result.output
    assert "(CPU)" not in result.output
    assert "All 2 layers ran on the GPU.\n" in result.output
    cpu = CliRunner().invoke(main, ["time", "-model", path, "-iterations", "1"])
    assert cpu.exit_code == 0, cpu.output
    assert "ran on the" not in cpu.output and "(CPU)" not in cpu.output       # CPU mode: Caffe's lines alone


def test_timing_synchronizes_the_device_after_every_layer(write_net, monkeypatch):
    """Kernels run asynchronously: a layer's time is read only after the device finished its work."""
    net = Net(write_net(MIXED), "TRAIN")
    events = []
    clock = __import__("time").perf_counter
    monkeypatch.setattr(cuda, "synchronize", lambda: events.append("sync"))
    monkeypatch.setattr("minicaffe.timing.time.perf_counter", lambda: (events.append("clock"), clock())[1])
    mode.set_mode_gpu()
    try:
        report = time_net(net, iterations=2)
    finally:
        mode.set_mode_cpu()
    assert report.gpu
    # per iteration: 4 forward and 4 backward steps, each synchronized before its time is read
    assert events.count("sync") == 1 + 2 * 8
    timed = events[events.index("sync") + 1:]
    for index, event in enumerate(timed[1:], start=1):
        if event == "sync":
            assert timed[index + 1] == "clock"
    lines = list(report_lines(report))
    assert sum(line.endswith(" (CPU)") for line in lines) == 3


def test_time_gpu_shows_the_path_each_line_ran():
    """A convolution's bracketed path: its GPU path on the lines of its GPU kernels, the CPU's on (CPU) lines."""
    from minicaffe.timing import LayerTime, TimingReport
    report = TimingReport(iterations=1, gpu=True, layers=[
        LayerTime("conv", "Convolution", 1.0, 2.0, "direct", runs_backward=True, backward_on_cpu=True,
                  gpu_path="im2row"),
        LayerTime("conv2", "Convolution", 1.0, 2.0, "im2row", runs_backward=True, gpu_path="1x1")])
    lines = [line for line in report_lines(report) if "\t" in line]
    assert lines == ["      conv\tforward: 1 ms. [im2row]", "      conv\tbackward: 2 ms. [direct] (CPU)",
                     "     conv2\tforward: 1 ms. [1x1]", "     conv2\tbackward: 2 ms. [1x1]"]


CONV = """name: "conv"
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }
layer { name: "pw" type: "Convolution" bottom: "x" top: "pw"
  convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
"""


def test_time_gpu_names_the_gpu_path_of_a_convolution(write_net):
    result = CliRunner().invoke(main, ["time", write_net(CONV), "--gpu", "0", "--iterations", "1"])
    mode.set_mode_cpu()
    assert result.exit_code == 0, result.output
    lines = per_layer(result.output)
    assert lines[("pw", "forward")] == lines[("pw", "backward")] == " [1x1]"


CAFFE_FIELDS = ["Device id", "Major revision number", "Minor revision number", "Name", "Total global memory",
                "Total shared memory per block", "Total registers per block", "Warp size", "Maximum memory pitch",
                "Maximum threads per block", "Maximum dimension of block", "Maximum dimension of grid",
                "Clock rate", "Total constant memory", "Texture alignment", "Concurrent copy and execution",
                "Number of multiprocessors", "Kernel execution timeout"]


@pytest.mark.parametrize("arguments", [["device-query"], ["device_query", "-gpu", "0"], ["device-query", "--gpu=all"]])
def test_device_query_prints_caffes_fields_in_caffes_order(arguments):
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "(numba's CUDA simulator: NUMBA_ENABLE_CUDASIM=1)"
    assert [line[:31].rstrip().rstrip(":") for line in lines[1:]] == CAFFE_FIELDS
    assert all(line[:31].endswith((":", " ")) and line[31] != " " for line in lines[1:])   # Caffe's columns
    assert lines[1] == "Device id:                     0"
    major, minor = cuda.get_current_device().compute_capability
    assert lines[2:4] == [f"Major revision number:         {major}", f"Minor revision number:         {minor}"]
    assert lines[-1].startswith("Kernel execution timeout:      ")


def test_device_query_refuses_a_device_numba_does_not_see():
    result = CliRunner().invoke(main, ["device-query", "--gpu", "0,3"])
    assert result.exit_code == 1
    assert result.output == "minicaffe: error: device 3 does not exist: numba sees 1 CUDA device(s)\n"
