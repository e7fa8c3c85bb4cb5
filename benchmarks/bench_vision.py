"""Time a training iteration (forward + backward) of LeNet and CIFAR-10 quick against PyTorch CPU.

Run from the project's root (PyTorch comes with the `bench` extra):

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_vision.py            # writes benchmarks/results/vision.md

The nets are Caffe's own prototxt files (`examples/lenet/lenet_train_test.prototxt`,
batch 64 of 1x28x28; `examples/cifar10/cifar10_quick_train_test.prototxt`, batch
100 of 3x32x32), TRAIN phase, with DummyData as the data layer. PyTorch runs the
same architectures (Caffe's pooling rounds up: `ceil_mode=True`) with the very
same weights and input, and the losses of the two are compared before timing,
so both compute the same thing. An iteration is Forward and Backward of every
layer after the data layer (the input is a fixed tensor on both sides: the
DummyData refill is not timed); parameter gradients are computed, the solver's
update is not run on either side.

Both run in this process with the same number of threads: PyTorch's intra-op
threads are set to the number BLAS uses (minicaffe's numba kernels run on one
thread, its matrix products on BLAS's threads). The two are timed in
alternating rounds so that a change in the machine's load hits both; the
figure is the median over all timed iterations, after warm-up iterations that
also compile minicaffe's numba kernels. The minicaffe per-layer breakdown is
`minicaffe time`'s (minicaffe.timing).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from minicaffe.fillers import set_random_seed  # noqa: E402
from minicaffe.net import Net  # noqa: E402
from minicaffe.timing import time_net  # noqa: E402

NETS = [
    ("LeNet", "examples/lenet/lenet_train_test.prototxt", 64),
    ("CIFAR-10 quick", "examples/cifar10/cifar10_quick_train_test.prototxt", 100),
]
TARGET = 1.5          # minicaffe within 1.5x of PyTorch CPU
CAFFE_RATIOS = {"LeNet": 1.9, "CIFAR-10 quick": 2.4}   # BVLC Caffe (CPU) vs PyTorch CPU, from the issue


def blas_threads() -> int:
    """Threads numpy's BLAS runs on (OpenBLAS reads OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else all cores)."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(name):
            return int(os.environ[name])
    return os.cpu_count() or 1


# ------------------------------------------------------------------ PyTorch twins

def torch_model(name, net):
    """The architecture of ``net`` in PyTorch, with ``net``'s weights copied in."""
    import torch
    from torch import nn

    def conv(layer, channels):
        param = layer.layer_param.convolution_param
        module = nn.Conv2d(channels, param.num_output, layer.kernel[0], stride=layer.stride[0], padding=layer.pad[0])
        module.weight.data = torch.from_numpy(layer.blobs[0].data.copy())
        module.bias.data = torch.from_numpy(layer.blobs[1].data.copy())
        return module

    def linear(layer):
        weight = layer.blobs[0].data
        module = nn.Linear(weight.shape[1], weight.shape[0])
        module.weight.data = torch.from_numpy(weight.copy())
        module.bias.data = torch.from_numpy(layer.blobs[1].data.copy())
        return module

    layers = net.layer_dict
    if name == "LeNet":
        return nn.Sequential(
            conv(layers["conv1"], 1), nn.MaxPool2d(2, 2, ceil_mode=True),
            conv(layers["conv2"], 20), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Flatten(), linear(layers["ip1"]), nn.ReLU(inplace=True), linear(layers["ip2"]))
    return nn.Sequential(
        conv(layers["conv1"], 3), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(inplace=True),
        conv(layers["conv2"], 32), nn.ReLU(inplace=True), nn.AvgPool2d(3, 2, ceil_mode=True),
        conv(layers["conv3"], 32), nn.ReLU(inplace=True), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), linear(layers["ip1"]), linear(layers["ip2"]))


# ------------------------------------------------------------------ runners

def minicaffe_runner(net):
    last = len(net.layers) - 1

    def run():
        loss = net.forward_from_to(1, last)
        net.backward_from_to(last, 1)
        return loss
    return run


def torch_runner(model, data, labels):
    import torch.nn.functional as F

    def run():
        for parameter in model.parameters():
            parameter.grad = None
        loss = F.cross_entropy(model(data), labels)
        loss.backward()
        return float(loss)
    return run


def timed(run, iterations):
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def benchmark(name, path, batch, rounds, per_round, threads):
    import torch

    set_random_seed(1)
    net = Net(os.path.join(ROOT, path), "TRAIN")
    assert net.blobs["data"].shape[0] == batch
    net.forward_from_to(0, 0)                     # the DummyData batch, then fixed
    data = torch.from_numpy(net.blobs["data"].data.copy())
    labels = torch.from_numpy(net.blobs["label"].data.astype(np.int64))
    model = torch_model(name, net)
    ours, theirs = minicaffe_runner(net), torch_runner(model, data, labels)
    loss, torch_loss = ours(), theirs()           # warm-up (numba compiles here) and a sanity check
    if not np.isclose(loss, torch_loss, rtol=1e-4, atol=1e-5):
        raise SystemExit(f"{name}: minicaffe loss {loss} != PyTorch loss {torch_loss}: not the same net")
    for _ in range(3):
        ours(), theirs()
    mc, pt = [], []
    for _ in range(rounds):
        mc += timed(ours, per_round)
        pt += timed(theirs, per_round)
    report = time_net(net, iterations=max(5, per_round))
    return {"name": name, "path": path, "batch": batch, "minicaffe": statistics.median(mc) * 1e3,
            "torch": statistics.median(pt) * 1e3, "minicaffe_min": min(mc) * 1e3, "torch_min": min(pt) * 1e3,
            "loss": loss, "torch_loss": torch_loss, "layers": report.layers[1:]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="alternating timing rounds")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per round and side")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "vision.md"))
    args = parser.parse_args(argv)
    import numba
    import torch

    threads = blas_threads()
    torch.set_num_threads(threads)
    rows = []
    for name, path, batch in NETS:
        row = benchmark(name, path, batch, args.rounds, args.iterations, threads)
        rows.append(row)
        print(f"{name:16s} minicaffe {row['minicaffe']:8.2f} ms  PyTorch {row['torch']:8.2f} ms  "
              f"ratio {row['minicaffe'] / row['torch']:.2f}", flush=True)
    command = "  ".join(["python benchmarks/bench_vision.py"] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Vision nets: one training iteration (forward + backward), float32, CPU",
        "",
        f"Made by `.venv/bin/{command.strip()}` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba.__version__}, PyTorch {torch.__version__}. Threads: {threads} for BLAS and for PyTorch "
        "(`torch.set_num_threads`); minicaffe's numba kernels run on one thread.",
        "",
        "Median milliseconds per iteration over "
        f"{args.rounds} alternating rounds of {args.iterations} iterations each (minimum in brackets); "
        "lower is better. Both sides run the same weights on the same input (the losses agree); the "
        "data layer is not timed. Target: minicaffe within "
        f"{TARGET}x of PyTorch CPU (BVLC Caffe's CPU build is about 1.9x on LeNet and 2.4x on CIFAR-10 quick).",
        "",
        "| net | batch | minicaffe | PyTorch CPU | minicaffe / PyTorch | target 1.5x |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        ratio = row["minicaffe"] / row["torch"]
        verdict = "met" if ratio <= TARGET else f"missed by {ratio / TARGET:.2f}x"
        lines.append(f"| {row['name']} | {row['batch']} | {row['minicaffe']:.2f} ({row['minicaffe_min']:.2f}) "
                     f"| {row['torch']:.2f} ({row['torch_min']:.2f}) | {ratio:.2f}x | {verdict} |")
    for row in rows:
        lines += ["", f"minicaffe per layer, {row['name']} (`minicaffe time {row['path']}`, ms per iteration):", "",
                  "| layer | type | forward | backward |", "| --- | --- | ---: | ---: |"]
        for layer in row["layers"]:
            lines.append(f"| {layer.name} | {layer.type} | {layer.forward_ms:.3f} | {layer.backward_ms:.3f} |")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
