"""Time forward+backward of each loss layer against numpy and PyTorch CPU, side by side.

Run from the project's root (PyTorch comes with the `bench` extra):

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_losses.py            # writes benchmarks/results/losses.md

Shapes: a classifier's (64, 1000) and a segmentation net's (1, 21, 500, 500)
with ignore_label 255 on a tenth of the labels. Each implementation computes
the loss and the gradient w.r.t. the prediction; minicaffe through its layer
(Forward then Backward, as a Net runs them), numpy as a straightforward
vectorized version of the formula, PyTorch as its loss function plus
``backward()``. Times are the median of repeated runs after a warm-up (numba's
compilation excluded). The copy bandwidth measured on the same machine is
reported to put the times in context.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minicaffe.testing import empty_blobs, layer_from_text, make_blobs  # noqa: E402

IGNORE = 255


def median_ms(function, repeats):
    function()  # warm-up (and numba compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def copy_bandwidth_gbs():
    source = np.ones(64 * 2**20 // 4, dtype=np.float32)
    target = np.empty_like(source)
    ms = median_ms(lambda: np.copyto(target, source), 10)
    return 2 * source.nbytes / (ms / 1e3) / 1e9   # read + write


# ------------------------------------------------------------------ problems

def softmax_problem(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    label_shape = shape[:1] + shape[2:]
    labels = rng.integers(0, shape[1], size=label_shape).astype(np.float32)
    if len(shape) > 2:
        labels[rng.random(label_shape) < 0.1] = IGNORE
    return x, labels


def sigmoid_problem(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    t = rng.integers(0, 2, size=shape).astype(np.float32)
    if len(shape) > 2:
        t[rng.random(shape) < 0.1] = IGNORE
    return x, t


def euclidean_problem(shape, rng):
    return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------ minicaffe

def minicaffe_runner(text, arrays, on_gpu=False):
    """Forward + Backward of the layer; on the GPU, inputs stay on the device between runs."""
    layer = layer_from_text(text, dtype=np.float32)
    bottom, top = make_blobs(*arrays, dtype=np.float32), empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    propagate = [True] + [False] * (len(bottom) - 1)

    def run():
        layer.run_forward(bottom, top)
        layer.run_backward(top, propagate, bottom)
        if on_gpu:
            from numba import cuda
            cuda.synchronize()
    return run


def gpu_ms(text, arrays, repeats):
    """minicaffe's numba.cuda kernels, when a real GPU is present (not the simulator)."""
    from minicaffe import gpu, mode
    if not gpu.available() or gpu.simulated():
        return None
    mode.set_mode_gpu()
    try:
        return median_ms(minicaffe_runner(text, arrays, on_gpu=True), repeats)
    finally:
        mode.set_mode_cpu()


# ------------------------------------------------------------------ numpy

def numpy_softmax(x, labels):
    def run():
        shifted = x - x.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        prob = exp / total
        flat_labels = labels.astype(np.int64)
        keep = flat_labels != IGNORE
        safe = np.where(keep, flat_labels, 0)
        log_prob = np.take_along_axis(shifted, safe[:, None], axis=1)[:, 0] - np.log(total[:, 0])
        count = max(1, int(keep.sum()))
        loss = -(log_prob * keep).sum() / count
        grad = prob
        np.put_along_axis(grad, safe[:, None], np.take_along_axis(grad, safe[:, None], axis=1) - 1, axis=1)
        grad *= (keep / count)[:, None]
        return loss, grad
    return run


def numpy_sigmoid(x, t):
    def run():
        keep = t.astype(np.int64) != IGNORE
        per = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
        loss = (per * keep).sum() / x.shape[0]
        grad = (1 / (1 + np.exp(-x)) - t) * keep / x.shape[0]
        return loss, grad
    return run


def numpy_euclidean(a, b):
    def run():
        difference = a - b
        return (difference * difference).sum() / a.shape[0] / 2, difference / a.shape[0]
    return run


# ------------------------------------------------------------------ PyTorch

def torch_runner(kind, arrays):
    import torch
    import torch.nn.functional as F
    a = torch.from_numpy(arrays[0]).requires_grad_(True)
    if kind == "softmax":
        labels = torch.from_numpy(arrays[1].astype(np.int64))
        loss_fn = lambda: F.cross_entropy(a, labels, ignore_index=IGNORE)  # noqa: E731
    elif kind == "sigmoid":
        t = torch.from_numpy(arrays[1])
        weight = (t != IGNORE).float()
        # BATCH_SIZE normalization, as Caffe's default: sum over elements / N
        loss_fn = lambda: F.binary_cross_entropy_with_logits(  # noqa: E731
            a, t * weight, weight=weight, reduction="sum") / a.shape[0]
    else:
        b = torch.from_numpy(arrays[1])
        loss_fn = lambda: ((a - b) ** 2).sum() / a.shape[0] / 2  # noqa: E731

    def run():
        a.grad = None
        loss_fn().backward()
    return run


LOSSES = [
    ("SoftmaxWithLoss", "softmax", softmax_problem, numpy_softmax,
     'name: "l" type: "SoftmaxWithLoss" loss_param { ignore_label: 255 }'),
    ("SigmoidCrossEntropyLoss", "sigmoid", sigmoid_problem, numpy_sigmoid,
     'name: "l" type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: 255 }'),
    ("EuclideanLoss", "euclidean", euclidean_problem, numpy_euclidean, 'name: "l" type: "EuclideanLoss"'),
]
SHAPES = [(64, 1000), (1, 21, 500, 500)]


def numpy_args(kind, arrays):
    """numpy's softmax works on (locations, C): move the class axis last-but-flat."""
    if kind != "softmax" or arrays[0].ndim == 2:
        return arrays
    x, labels = arrays
    channels = x.shape[1]
    return np.ascontiguousarray(np.moveaxis(x, 1, -1).reshape(-1, channels)), labels.reshape(-1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "losses.md"))
    args = parser.parse_args(argv)
    try:
        import torch
        torch_version, threads = torch.__version__, torch.get_num_threads()
    except ImportError:
        torch_version, threads = None, 0
    rng = np.random.default_rng(0)
    rows = []
    for name, kind, problem, numpy_fn, text in LOSSES:
        for shape in SHAPES:
            arrays = problem(shape, rng)
            mc = median_ms(minicaffe_runner(text, arrays), args.repeats)
            npy = median_ms(numpy_fn(*numpy_args(kind, arrays)), args.repeats)
            pt = median_ms(torch_runner(kind, arrays), args.repeats) if torch_version else float("nan")
            on_gpu = gpu_ms(text, arrays, args.repeats)
            rows.append((name, "x".join(map(str, shape)), mc, npy, pt, on_gpu))
            print(f"{name:24s} {str(shape):18s} minicaffe {mc:8.3f} ms  numpy {npy:8.3f} ms  torch {pt:8.3f} ms"
                  + (f"  minicaffe GPU {on_gpu:8.3f} ms" if on_gpu is not None else ""), flush=True)
    bandwidth = copy_bandwidth_gbs()
    lines = [
        "# Loss layers: forward + backward, float32, CPU",
        "",
        f"Made by `.venv/bin/python benchmarks/bench_losses.py --repeats {args.repeats}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, PyTorch {torch_version or 'absent'} ({threads} threads). "
        f"Copy bandwidth measured in the same run: {bandwidth:.1f} GB/s (read + write).",
        "",
        "Median milliseconds per forward+backward; lower is better. minicaffe runs one thread.",
        "",
        "| loss | shape | minicaffe | numpy | PyTorch CPU | vs numpy | vs PyTorch | minicaffe GPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, shape, mc, npy, pt, on_gpu in rows:
        gpu_cell = f"{on_gpu:.3f}" if on_gpu is not None else "no GPU"
        lines.append(f"| {name} | {shape} | {mc:.3f} | {npy:.3f} | {pt:.3f} | {npy / mc:.1f}x | {pt / mc:.1f}x "
                     f"| {gpu_cell} |")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"copy bandwidth {bandwidth:.1f} GB/s; wrote {args.output}")


if __name__ == "__main__":
    main()
