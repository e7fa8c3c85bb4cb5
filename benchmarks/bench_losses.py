"""Time forward+backward of each loss layer against numpy and PyTorch CPU, side by side.

Run from the project's root (PyTorch comes with the `bench` extra):

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_losses.py            # writes benchmarks/results/losses.md

Shapes: a classifier's (64, 1000) and a segmentation net's (1, 21, 500, 500)
with ignore_label 255 on a tenth of the labels. Each implementation computes
the loss and the gradient w.r.t. the prediction; minicaffe through its layer
(Forward then Backward, as a Net runs them), numpy as a straightforward
vectorized version of the formula, PyTorch as its loss function plus
``backward()`` (GaussianKLLoss: w.r.t. both its bottoms; the class-weighted
SoftmaxWithLoss rows use LOCAL weight normalization, as the layer's default).
Times are the median of repeated runs after a warm-up (numba's
compilation excluded). The copy bandwidth measured on the same machine is
reported to put the times in context.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
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


def binary_problem(shape, rng):
    return rng.standard_normal(shape).astype(np.float32), rng.choice([-1.0, 1.0], size=shape).astype(np.float32)


def probability_problem(shape, rng):
    x, labels = softmax_problem(shape, rng)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32), labels


def infogain_problem(shape, rng):
    x, labels = softmax_problem(shape, rng)
    return x, labels, rng.uniform(0, 1, size=(shape[1], shape[1])).astype(np.float32)


def pair_problem(shape, rng):
    a, b = euclidean_problem(shape, rng)
    return a, (a + 0.02 * b).astype(np.float32), rng.integers(0, 2, size=shape[0]).astype(np.float32)


def box_problem(shape, rng):
    a, b = euclidean_problem(shape, rng)
    inside = rng.integers(0, 2, size=shape).astype(np.float32)
    return a, b, inside, rng.uniform(0, 1, size=shape).astype(np.float32)


def class_weight_vector(channels):
    """Fixed class weights (0.5 to 2), written into the prototxt as class_weight."""
    return [0.5 + 0.25 * (c % 7) for c in range(channels)]


def class_weight_text(shape):
    weights = " ".join(f"class_weight: {w}" for w in class_weight_vector(shape[1]))
    return f'name: "l" type: "SoftmaxWithLoss" loss_param {{ ignore_label: 255 {weights} }}'


def weight_map_problem(shape, rng):
    x, labels = softmax_problem(shape, rng)
    return x, labels, rng.uniform(0.1, 2.0, size=shape).astype(np.float32)


def soft_label_problem(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    raw = rng.random(shape).astype(np.float32) + 0.05
    return x, raw / raw.sum(axis=1, keepdims=True)


def bce_problem(shape, rng):
    return (rng.uniform(0.02, 0.98, size=shape).astype(np.float32),
            rng.integers(0, 2, size=shape).astype(np.float32))


def gaussian_problem(shape, rng):
    return rng.standard_normal(shape).astype(np.float32), rng.uniform(0.3, 2.0, size=shape).astype(np.float32)


#: Losses whose every bottom takes a gradient (in all three implementations).
GRADIENT_TO_ALL = {"gaussian_kl"}


# ------------------------------------------------------------------ minicaffe

def minicaffe_runner(text, arrays, on_gpu=False, all_bottoms=False):
    """Forward + Backward of the layer; on the GPU, inputs stay on the device between runs."""
    layer = layer_from_text(text, dtype=np.float32)
    bottom, top = make_blobs(*arrays, dtype=np.float32), empty_blobs(1, dtype=np.float32)
    layer.set_up(bottom, top)
    propagate = [True] + [all_bottoms] * (len(bottom) - 1)

    def run():
        layer.run_forward(bottom, top)
        layer.run_backward(top, propagate, bottom)
        if on_gpu:
            from numba import cuda
            cuda.synchronize()
    return run


def gpu_ms(text, arrays, repeats, all_bottoms=False):
    """minicaffe's numba.cuda kernels, when a real GPU is present (not the simulator)."""
    from minicaffe import gpu, mode
    if not gpu.available() or gpu.simulated():
        return None
    mode.set_mode_gpu()
    try:
        return median_ms(minicaffe_runner(text, arrays, on_gpu=True, all_bottoms=all_bottoms), repeats)
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


def numpy_hinge(x, labels):
    def run():
        rows, picked = np.arange(x.shape[0]), labels.astype(np.int64)
        signed = x.copy()
        signed[rows, picked] *= -1
        t = np.maximum(0, 1 + signed)
        grad = (t > 0).astype(x.dtype)
        grad[rows, picked] *= -1
        return t.sum() / x.shape[0], grad / x.shape[0]
    return run


def numpy_binary_hinge(x, y):
    def run():
        t = np.maximum(0, 1 - x * y)
        return t.sum() / x.shape[0], -y * (t > 0) / x.shape[0]
    return run


def numpy_multinomial(prob, labels):
    def run():
        rows, picked = np.arange(prob.shape[0]), labels.astype(np.int64)
        p = np.maximum(prob[rows, picked], 1e-20)
        grad = np.zeros_like(prob)
        grad[rows, picked] = -1 / p / prob.shape[0]
        return -np.log(p).sum() / prob.shape[0], grad
    return run


def numpy_infogain(x, labels, H):
    def run():
        shifted = x - x.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        prob = exp / total
        log_prob = np.maximum(shifted - np.log(total), np.log(1e-20))
        flat_labels = labels.astype(np.int64)
        keep = flat_labels != IGNORE
        weights = np.moveaxis(H[np.where(keep, flat_labels, 0)], -1, 1) * keep[:, None]   # H[g] per location
        count = max(1, int(keep.sum()))
        loss = -(weights * log_prob).sum() / count
        grad = (prob * weights.sum(axis=1, keepdims=True) - weights) / count
        return loss, grad
    return run


def numpy_contrastive(a, b, similar):
    def run():
        difference = a - b
        d2 = (difference * difference).sum(axis=1)
        d = np.sqrt(d2)
        gap = np.maximum(1 - d, 0)
        loss = np.where(similar != 0, d2, gap * gap).sum() / a.shape[0] / 2
        coefficient = np.where(similar != 0, 1, -gap / (d + 1e-4))
        return loss, coefficient[:, None] * difference / a.shape[0]
    return run


def numpy_l1(a, b):
    def run():
        difference = a - b
        return np.abs(difference).sum() / a.shape[0], np.sign(difference) / a.shape[0]
    return run


def numpy_smooth_l1(a, b, inside, outside, sigma2=9.0):
    def run():
        d = inside * (a - b)
        magnitude = np.abs(d)
        small = magnitude < 1 / sigma2
        loss = (outside * np.where(small, 0.5 * sigma2 * d * d, magnitude - 0.5 / sigma2)).sum() / a.shape[0]
        grad = outside * inside * np.where(small, sigma2 * d, np.sign(d)) / a.shape[0]
        return loss, grad
    return run


def _weighted_softmax(x, labels, location_weights):
    """Softmax loss and gradient with a weight per location (0 where ignored), over the valid count."""
    shifted = x - x.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    prob = exp / total
    flat_labels = labels.astype(np.int64)
    keep = flat_labels != IGNORE
    safe = np.where(keep, flat_labels, 0)
    weights = location_weights(safe) * keep
    log_prob = np.take_along_axis(shifted, safe[:, None], axis=1)[:, 0] - np.log(total[:, 0])
    count = max(1, int(keep.sum()))
    loss = -(weights * log_prob).sum() / count
    grad = prob
    np.put_along_axis(grad, safe[:, None], np.take_along_axis(grad, safe[:, None], axis=1) - 1, axis=1)
    grad *= (weights / count)[:, None]
    return loss, grad


def numpy_class_weighted_softmax(x, labels):
    vector = np.array(class_weight_vector(x.shape[1]), dtype=x.dtype)

    def run():
        normalized = vector * (vector.size / vector.sum())        # LOCAL: the weights sum to C
        return _weighted_softmax(x, labels, lambda safe: normalized[safe])
    return run


def numpy_weight_map_softmax(x, labels, weights):
    def run():
        def picked(safe):
            # LOCAL: each location's C weights scaled to sum to C; only the label's one is needed
            own = np.take_along_axis(weights, safe[:, None], axis=1)[:, 0]
            return own * (weights.shape[1] / weights.sum(axis=1))
        return _weighted_softmax(x, labels, picked)
    return run


def numpy_softlabel(x, q):
    def run():
        shifted = x - x.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        log_prob = np.maximum(shifted - np.log(total), np.log(1e-20))
        locations = x.shape[0]
        loss = -(q * log_prob).sum() / locations
        return loss, (exp / total - q) / locations
    return run


def numpy_bce(p, y):
    def run():
        clipped = np.clip(p, 1e-7, 1 - 1e-7)
        n = p.shape[0]
        loss = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)).sum() / n
        return loss, -(y / clipped - (1 - y) / (1 - clipped)) / n
    return run


def numpy_gaussian_kl(mu, sigma):
    def run():
        n = mu.shape[0]
        loss = 0.5 * (mu * mu + sigma * sigma - 2 * np.log(sigma) - 1).sum() / n
        return loss, mu / n, (sigma - 1 / sigma) / n
    return run


# ------------------------------------------------------------------ PyTorch

def torch_runner(kind, arrays):
    import torch
    import torch.nn.functional as F
    a = torch.from_numpy(arrays[0]).requires_grad_(True)
    leaves = [a]
    if kind in ("class_weighted_softmax", "weight_map_softmax"):
        labels = torch.from_numpy(arrays[1].astype(np.int64))
        keep = labels != IGNORE
        safe = torch.where(keep, labels, 0)
        count = max(1, int(keep.sum()))
        if kind == "class_weighted_softmax":
            vector = torch.tensor(class_weight_vector(a.shape[1]), dtype=a.dtype)

            def location_weights():
                return (vector * (vector.numel() / vector.sum()))[safe]
        else:
            weight_map = torch.from_numpy(arrays[2])

            def location_weights():
                own = weight_map.gather(1, safe.unsqueeze(1)).squeeze(1)
                return own * (weight_map.shape[1] / weight_map.sum(dim=1))

        def loss_fn():
            per_location = F.cross_entropy(a, safe, reduction="none")
            return (per_location * location_weights() * keep).sum() / count
    elif kind == "softlabel":
        q = torch.from_numpy(arrays[1])
        locations = a.numel() // a.shape[1]
        loss_fn = lambda: F.cross_entropy(a, q, reduction="sum") / locations  # noqa: E731
    elif kind == "bce":
        y = torch.from_numpy(arrays[1])
        loss_fn = lambda: F.binary_cross_entropy(a, y, reduction="sum") / a.shape[0]  # noqa: E731
    elif kind == "gaussian_kl":
        sigma = torch.from_numpy(arrays[1]).requires_grad_(True)
        leaves.append(sigma)
        loss_fn = lambda: 0.5 * (a * a + sigma * sigma - 2 * torch.log(sigma) - 1).sum() / a.shape[0]  # noqa: E731
    elif kind == "softmax":
        labels = torch.from_numpy(arrays[1].astype(np.int64))
        loss_fn = lambda: F.cross_entropy(a, labels, ignore_index=IGNORE)  # noqa: E731
    elif kind == "sigmoid":
        t = torch.from_numpy(arrays[1])
        weight = (t != IGNORE).float()
        # BATCH_SIZE normalization, as Caffe's default: sum over elements / N
        loss_fn = lambda: F.binary_cross_entropy_with_logits(  # noqa: E731
            a, t * weight, weight=weight, reduction="sum") / a.shape[0]
    elif kind == "hinge":
        signs = torch.ones_like(a).scatter_(1, torch.from_numpy(arrays[1].astype(np.int64))[:, None], -1.0)
        loss_fn = lambda: torch.relu(1 + signs * a).sum() / a.shape[0]  # noqa: E731
    elif kind == "binary_hinge":
        y = torch.from_numpy(arrays[1])
        loss_fn = lambda: torch.relu(1 - a * y).sum() / a.shape[0]  # noqa: E731
    elif kind == "multinomial":
        picked = torch.from_numpy(arrays[1].astype(np.int64))[:, None]
        loss_fn = lambda: -torch.log(a.gather(1, picked).clamp_min(1e-20)).sum() / a.shape[0]  # noqa: E731
    elif kind == "infogain":
        labels = torch.from_numpy(arrays[1].astype(np.int64))
        keep = labels != IGNORE
        H = torch.from_numpy(arrays[2])
        weights = torch.movedim(H[torch.where(keep, labels, 0)], -1, 1) * keep.unsqueeze(1)
        count = max(1, int(keep.sum()))
        loss_fn = lambda: -(weights * F.log_softmax(a, dim=1).clamp_min(np.log(1e-20))).sum() / count  # noqa: E731
    elif kind == "contrastive":
        b, similar = torch.from_numpy(arrays[1]), torch.from_numpy(arrays[2])

        def loss_fn():
            d2 = ((a - b) ** 2).sum(dim=1)
            gap = torch.relu(1 - torch.sqrt(d2))
            return torch.where(similar != 0, d2, gap * gap).sum() / a.shape[0] / 2
    elif kind == "l1":
        b = torch.from_numpy(arrays[1])
        loss_fn = lambda: (a - b).abs().sum() / a.shape[0]  # noqa: E731
    elif kind == "smooth_l1":
        b, inside, outside = (torch.from_numpy(array) for array in arrays[1:])
        # Fast R-CNN's sigma 3 is PyTorch's beta = 1 / sigma^2
        loss_fn = lambda: (outside * F.smooth_l1_loss(  # noqa: E731
            inside * a, inside * b, reduction="none", beta=1 / 9)).sum() / a.shape[0]
    else:
        b = torch.from_numpy(arrays[1])
        loss_fn = lambda: ((a - b) ** 2).sum() / a.shape[0] / 2  # noqa: E731

    def run():
        for leaf in leaves:
            leaf.grad = None
        loss_fn().backward()
    return run


LOSSES = [
    ("SoftmaxWithLoss", "softmax", softmax_problem, numpy_softmax,
     'name: "l" type: "SoftmaxWithLoss" loss_param { ignore_label: 255 }'),
    ("SigmoidCrossEntropyLoss", "sigmoid", sigmoid_problem, numpy_sigmoid,
     'name: "l" type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: 255 }'),
    ("EuclideanLoss", "euclidean", euclidean_problem, numpy_euclidean, 'name: "l" type: "EuclideanLoss"'),
    # A sixth element lists the shapes where a loss makes sense (Caffe's class-index losses have no axis).
    ("HingeLoss", "hinge", softmax_problem, numpy_hinge, 'name: "l" type: "HingeLoss"', [(64, 1000)]),
    ("HingeLoss (binary)", "binary_hinge", binary_problem, numpy_binary_hinge, 'name: "l" type: "HingeLoss"'),
    ("MultinomialLogisticLoss", "multinomial", probability_problem, numpy_multinomial,
     'name: "l" type: "MultinomialLogisticLoss"', [(64, 1000)]),
    ("InfogainLoss", "infogain", infogain_problem, numpy_infogain,
     'name: "l" type: "InfogainLoss" loss_param { ignore_label: 255 }'),
    ("ContrastiveLoss", "contrastive", pair_problem, numpy_contrastive, 'name: "l" type: "ContrastiveLoss"',
     [(64, 1000)]),
    ("L1Loss", "l1", euclidean_problem, numpy_l1, 'name: "l" type: "L1Loss"'),
    ("SmoothL1Loss", "smooth_l1", box_problem, numpy_smooth_l1,
     'name: "l" type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 3 }'),
    # Losses III. A callable text is made for each shape (the class weights need C).
    ("SoftmaxWithLoss + class_weight", "class_weighted_softmax", softmax_problem, numpy_class_weighted_softmax,
     class_weight_text),
    ("SoftmaxWithLoss + weight map", "weight_map_softmax", weight_map_problem, numpy_weight_map_softmax,
     'name: "l" type: "SoftmaxWithLoss" loss_param { ignore_label: 255 }', [(1, 21, 500, 500)]),
    ("SoftlabelSoftmaxLoss", "softlabel", soft_label_problem, numpy_softlabel,
     'name: "l" type: "SoftlabelSoftmaxLoss"'),
    ("BinaryCrossEntropyLoss", "bce", bce_problem, numpy_bce, 'name: "l" type: "BinaryCrossEntropyLoss"'),
    ("GaussianKLLoss", "gaussian_kl", gaussian_problem, numpy_gaussian_kl, 'name: "l" type: "GaussianKLLoss"',
     [(64, 1000)]),
]
SHAPES = [(64, 1000), (1, 21, 500, 500)]


#: Losses whose numpy versions work on (locations, C).
CLASS_AXIS_LAST = {"softmax", "class_weighted_softmax", "weight_map_softmax", "softlabel"}


def numpy_args(kind, arrays):
    """numpy's softmax works on (locations, C): move the class axis last-but-flat."""
    if kind not in CLASS_AXIS_LAST or arrays[0].ndim == 2:
        return arrays
    channels = arrays[0].shape[1]
    return tuple(np.ascontiguousarray(np.moveaxis(array, 1, -1).reshape(-1, channels))
                 if array.ndim == arrays[0].ndim else array.reshape(-1) for array in arrays)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "losses.md"))
    parser.add_argument("--only", default=None, help="a regular expression: run only the losses whose row name matches")
    args = parser.parse_args(argv)
    try:
        import torch
        torch_version, threads = torch.__version__, torch.get_num_threads()
    except ImportError:
        torch_version, threads = None, 0
    rng = np.random.default_rng(0)
    rows = []
    for name, kind, problem, numpy_fn, text, *shapes in LOSSES:
        if args.only and not re.search(args.only, name):
            continue
        for shape in (shapes[0] if shapes else SHAPES):
            arrays = problem(shape, rng)
            layer_text = text(shape) if callable(text) else text
            all_bottoms = kind in GRADIENT_TO_ALL
            mc = median_ms(minicaffe_runner(layer_text, arrays, all_bottoms=all_bottoms), args.repeats)
            npy = median_ms(numpy_fn(*numpy_args(kind, arrays)), args.repeats)
            pt = median_ms(torch_runner(kind, arrays), args.repeats) if torch_version else float("nan")
            on_gpu = gpu_ms(layer_text, arrays, args.repeats, all_bottoms=all_bottoms)
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
