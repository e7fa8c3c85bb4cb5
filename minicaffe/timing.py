"""``minicaffe time``: layer-by-layer Forward and Backward timings of a net (Caffe's ``caffe time``).

As Caffe: the net is built (TRAIN phase unless told otherwise), run Forward
and Backward once untimed (for minicaffe, that pass also compiles the numba
kernels), then ``iterations`` times with every layer's Forward and Backward
timed on its own. The report gives each layer's average forward and backward
time, then the average Forward pass, Backward pass and Forward-Backward per
iteration, and the total, in the lines Caffe logs (each iteration's time
first). Backward runs the layers that need it, in reverse
order, as ``Net.backward`` does. Parameter gradients accumulate over the
iterations (no solver clears them), as in Caffe. A layer that computes by
one of several paths (Convolution and Deconvolution: ``1x1``, ``direct``,
``im2row``; see :mod:`minicaffe.layers.conv_common`) has the path it took
after each of its two lines, in brackets (``... forward: 1.2 ms. [im2row]``).

In GPU mode each layer is followed by a device synchronization, so the time
of its kernels is charged to it (Caffe times with CUDA events).

GPU: a layer without a GPU kernel (no ``forward_gpu``, or no ``backward_gpu``
for a layer that runs Backward) runs its CPU code in GPU mode, its blobs
copied to the host and back. Its line ends with ``(CPU)``, and one line after
the per-layer averages names every such layer (``2 layers ran on the CPU in
GPU mode: norm1 (LRN), loss (SoftmaxWithLoss, backward only)``), so a net that
crawls through the host says so. A convolution's bracketed path is the one its
line ran: in GPU mode its GPU path (``gpu_conv_path``), on a ``(CPU)`` line the
CPU's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .mode import mode
from .net import Net


@dataclass
class LayerTime:
    name: str
    type: str
    forward_ms: float = 0.0
    backward_ms: float = 0.0
    path: str = ""          # the convolution path the layer took, or the chain folded into it ("" for others)
    forward_on_cpu: bool = False    # GPU mode, and the layer has no forward_gpu: its CPU code ran
    backward_on_cpu: bool = False   # GPU mode, the layer runs Backward, and it has no backward_gpu
    runs_backward: bool = False     # the net runs this layer's Backward
    gpu_path: str = ""              # GPU mode: the path the layer's GPU kernels took ("" where none is named)


@dataclass
class TimingReport:
    """Average milliseconds per iteration; ``total_ms`` is the whole timed run."""

    iterations: int
    layers: list = field(default_factory=list)
    forward_ms: float = 0.0
    backward_ms: float = 0.0
    forward_backward_ms: float = 0.0
    total_ms: float = 0.0
    initial_loss: float = 0.0
    iteration_ms: list = field(default_factory=list)
    gpu: bool = False       # timed in GPU mode

    def cpu_layers(self) -> list:
        """The layers whose Forward or Backward ran their CPU code although the net ran in GPU mode."""
        return [layer for layer in self.layers if layer.forward_on_cpu or layer.backward_on_cpu]


def _synchronize():
    if mode() == "gpu":
        from numba import cuda
        cuda.synchronize()


def time_net(net, iterations=50) -> TimingReport:
    """Time ``iterations`` Forward-Backward passes of ``net`` (a built Net), layer by layer."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    count = len(net.layers)
    # Untimed pass: Caffe's "Performing Forward" / "Performing Backward" (and numba's compilation).
    initial_loss = net.forward_from_to(0, count - 1)
    net.backward_from_to(count - 1, 0)
    _synchronize()
    forward = [0.0] * count
    backward = [0.0] * count
    forward_total = backward_total = 0.0
    iteration_ms = []
    untimed = 0.0
    clock = time.perf_counter
    run_start = clock()
    # A folded BatchNorm/Scale/Bias chain runs as one step, charged to its Convolution (minicaffe.fold).
    folds = net.active_folds()
    steps = []
    i = 0
    while i < count:
        last = folds[i].last if i in folds else i
        steps.append((i, last))
        i = last + 1
    for _ in range(iterations):
        pass_start = clock()
        for first, last in steps:
            start = clock()
            net.forward_from_to(first, last)
            _synchronize()
            forward[first] += clock() - start
        forward_total += clock() - pass_start
        if folds:           # untimed: Backward needs the folded chains' own Forwards (minicaffe.fold)
            unfold_start = clock()
            net._unfold_before_backward(count - 1, 0)
            untimed += clock() - unfold_start
        middle = clock()
        for i in range(count - 1, -1, -1):
            start = clock()
            net.backward_from_to(i, i)
            _synchronize()
            backward[i] += clock() - start
        end = clock()
        backward_total += end - middle
        iteration_ms.append((end - pass_start - (middle - unfold_start if folds else 0.0)) * 1e3)
    total = clock() - run_start - untimed
    scale = 1e3 / iterations
    notes = {i: getattr(layer, "conv_path", "") for i, layer in enumerate(net.layers)}
    for first, chain in folds.items():
        notes[first] += f", with {', '.join(chain.names)} folded in"
        for index in range(first + 1, chain.last + 1):
            notes[index] = f"folded into {net.layers[first].name}"
    gpu = mode() == "gpu"
    runs_backward = net._layer_need_backward
    layers = [LayerTime(layer.name, layer.type, forward[i] * scale, backward[i] * scale, notes[i],
                        runs_backward=bool(runs_backward[i]), gpu_path=_gpu_path(layer) if gpu else "",
                        forward_on_cpu=gpu and not has_gpu_kernel(layer, "forward"),
                        backward_on_cpu=gpu and bool(runs_backward[i]) and not has_gpu_kernel(layer, "backward"))
              for i, layer in enumerate(net.layers)]
    return TimingReport(iterations=iterations, layers=layers, forward_ms=forward_total * scale,
                        backward_ms=backward_total * scale, forward_backward_ms=total * scale,
                        total_ms=total * 1e3, initial_loss=initial_loss, iteration_ms=iteration_ms, gpu=gpu)


def _gpu_path(layer) -> str:
    # Convolution and Deconvolution choose their GPU path as they choose the CPU one (conv_common)
    choose = getattr(layer, "gpu_conv_path", None)
    return choose().name if choose is not None and has_gpu_kernel(layer, "forward") else ""


def has_gpu_kernel(layer, direction) -> bool:
    """Whether ``layer`` runs ``direction`` ("forward" or "backward") on the device in GPU mode: it has a
    ``forward_gpu``/``backward_gpu`` (Layer.run_forward's test; Python layers may define them too)."""
    return getattr(layer, direction + "_gpu", None) is not None


def cpu_summary(report: TimingReport) -> str:
    """The line naming the layers that ran on the CPU in GPU mode (or saying that none did)."""
    names = []
    for layer in report.cpu_layers():
        which = ""
        if not layer.forward_on_cpu:
            which = ", backward only"
        elif layer.runs_backward and not layer.backward_on_cpu:
            which = ", forward only"
        names.append(f"{layer.name} ({layer.type}{which})")
    if not names:
        return f"All {len(report.layers)} layers ran on the GPU."
    count = len(names)
    return f"{count} layer{'s' if count != 1 else ''} ran on the CPU in GPU mode: {', '.join(names)}"


def report_lines(report: TimingReport):
    """``caffe time``'s report: the initial loss, each iteration's time, per-layer averages, then the
    per-pass averages and the total (layer names right-aligned in 10 columns, as Caffe's setw(10))."""
    yield f"Initial loss: {report.initial_loss:.6g}"
    yield "*** Benchmark begins ***"
    yield f"Testing for {report.iterations} iterations."
    for index, milliseconds in enumerate(report.iteration_ms):
        yield f"Iteration: {index + 1} forward-backward time: {milliseconds:.4g} ms."
    yield "Average time per layer: "
    for layer in report.layers:
        for direction, milliseconds, on_cpu in (("forward", layer.forward_ms, layer.forward_on_cpu),
                                                ("backward", layer.backward_ms, layer.backward_on_cpu)):
            # the path this line ran: the CPU code's, or in GPU mode the GPU kernels'
            taken = layer.gpu_path if report.gpu and not on_cpu else layer.path
            path = f" [{taken}]" if taken else ""
            yield f"{layer.name:>10}\t{direction}: {milliseconds:.4g} ms.{path}{' (CPU)' if on_cpu else ''}"
    if report.gpu:
        yield cpu_summary(report)
    yield f"Average Forward pass: {report.forward_ms:.4g} ms."
    yield f"Average Backward pass: {report.backward_ms:.4g} ms."
    yield f"Average Forward-Backward: {report.forward_backward_ms:.4g} ms."
    yield f"Total Time: {report.total_ms:.6g} ms."
    yield "*** Benchmark ends ***"


def run_time(path, iterations=50, phase="TRAIN", level=0, stages=()):
    """Build the net at ``path`` and yield the lines of its timing report."""
    from .memory_budget import check_memory

    net = Net(path, phase, level=level, stages=stages)
    check_memory(net, backward=True)    # it runs Backward too: refuse before the first pass allocates
    yield from report_lines(time_net(net, iterations))
