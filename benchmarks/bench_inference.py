"""Forward-pass time of the classic nets and MTCNN-like nets: minicaffe against OpenCV dnn and PyTorch CPU.

Run from the project's root (OpenCV and PyTorch come with the `bench` extra):

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_inference.py --load          # every net: benchmarks/results/inference.md
                                                                   # (about 13 min on 2 cores)
    .venv/bin/python benchmarks/bench_inference.py --quick         # smoke run: the small nets, printed only
    .venv/bin/python benchmarks/bench_inference.py --nets pnet,mobilenet --batches 1 --threads 1

The nets: the classic architectures of ``examples/classic`` (CaffeNet, VGG-16,
GoogLeNet, ResNet-50, SqueezeNet 1.1, MobileNet v1) made deploy nets in
memory (the DummyData layer becomes an Input of the batch asked for, the loss
and accuracy layers and whatever feeds only them, such as GoogLeNet's
auxiliary classifiers, are dropped, and a Softmax ``prob`` ends the net), and
three MTCNN-like nets written here: PNet on a 240x320 image, RNet on 24x24 and
ONet on 48x48 crops (MTCNN's layer sizes, PReLU activations).

Weights: minicaffe's fillers as each prototxt asks (a Gaussian of std 0.01
for a Convolution/InnerProduct with no ``weight_filler``; Scale layers get a
uniform [0.5, 1.5] scale and a Gaussian bias of std 0.1 so that they are not
identities; BatchNorm statistics, which no filler draws, are a Gaussian mean
of std 0.1, a variance uniform in [0.5, 1.5] and scale factor 1), saved with
``Net.save`` as a ``.caffemodel`` in a temporary folder that OpenCV reads;
PyTorch gets minicaffe's arrays. The input is drawn in the DummyData's range
(e.g. uniform [-128, 128]), standard normal for the MTCNN nets.

Before anything is timed, each engine's outputs (the net's output blobs and
the blob before each final Softmax) are compared with minicaffe's: an engine
whose largest difference exceeds ``--tolerance`` times the largest magnitude
of minicaffe's blob is reported as a mismatch and gets no timing. PyTorch runs
a translation of the planned minicaffe net (``torch_twin``) in eager mode under
``torch.inference_mode()``; OpenCV runs ``cv2.dnn.readNetFromCaffe`` on the
same prototxt and weights with ``DNN_BACKEND_OPENCV`` / ``DNN_TARGET_CPU``.

Timing, per net x batch x thread setting: one untimed run of each engine (the
check; numba compiles here), ``--warmup`` untimed rounds (none for a net whose
check took over a quarter of the budget: the check warmed it up), then rounds
of one timed forward per engine in turn (minicaffe, OpenCV, PyTorch); up to
``--repeats`` rounds, and no round that would end past ``--max-seconds`` of
timed passes (at least ``--min-repeats`` are run: VGG-16 at batch 16 gets
one or two). An engine whose passes take under 0.1 s runs one untimed pass
right before each timed one, back to back, as in a loop of forward calls:
its worker threads are awake and another engine's threads that spin after
their work have stopped. (A pause between passes instead made PyTorch's two
OpenMP threads take 10 ms for an RNet pass of 0.2 ms: here, waking a
sleeping thread pool costs more than a small net's pass.) Figures are medians, minima in
brackets. Every engine runs with the same thread count: OpenCV's
``cv2.setNumThreads``, PyTorch's ``torch.set_num_threads``, minicaffe's
``minicaffe.threads.set_num_threads`` when that module exists, else numba's
``set_num_threads`` and threadpoolctl's BLAS limit (the file says which).
minicaffe's thread budget holds every BLAS library in the process at one
thread, OpenCV's bundled OpenBLAS included (the environment line lists each
pool's threads): OpenCV dnn's convolutions and fully connected layers run its
own kernels, and its times on CaffeNet and MobileNet did not change with
1 or 2 OpenBLAS threads when this was written.

``--load``: in a fresh process (so that every engine keeps its own default
thread count, as a user gets it), each net is timed idle and then beside one
busy process (``while True: pass``, pinned to the last CPU this process may
use); the slowdown is the ratio of the medians.

Each row also says how many cores other processes (and the hypervisor) kept
busy while it was timed, from ``/proc/stat`` less this process's own CPU
time (both counted in 10 ms ticks: rough for a row timed in a fraction of a
second): on a shared machine PyTorch's OpenMP threads in particular wait for a
descheduled partner at every layer (SqueezeNet at batch 1 took up to 900 ms a
pass instead of 13 while another process kept one of two cores busy), so a
row timed beside more than 0.1 core of other work is not an idle machine's.

The targets (issue 20) are computed from the figures, never written by hand:
forward within 1.5x of OpenCV on every net at every batch (each thread
setting); ahead of OpenCV on at least half of them; the most threads at least
1.6x faster than one on ResNet-50 and MobileNet at batch 16; under load at most
2x slower than idle. A run over a subset of the nets judges only that subset,
and says so.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from minicaffe import NetSpec  # noqa: E402
from minicaffe import layers as L  # noqa: E402
from minicaffe.fillers import set_random_seed  # noqa: E402
from minicaffe.graph import TEST  # noqa: E402
from minicaffe.net import Net  # noqa: E402
from minicaffe.proto import caffe_pb2  # noqa: E402
from minicaffe.proto.text import read_net, to_text  # noqa: E402

CLASSIC = {   # --nets name: (title, prototxt in examples/classic)
    "caffenet": ("CaffeNet (AlexNet)", "caffenet.prototxt"),
    "vgg16": ("VGG-16", "vgg16.prototxt"),
    "googlenet": ("GoogLeNet", "googlenet.prototxt"),
    "resnet50": ("ResNet-50", "resnet50.prototxt"),
    "squeezenet": ("SqueezeNet 1.1", "squeezenet_v1.1.prototxt"),
    "mobilenet": ("MobileNet v1", "mobilenet.prototxt"),
}
MTCNN_TITLES = {"pnet": "PNet 240x320", "rnet": "RNet 24x24", "onet": "ONet 48x48"}
ALL_NETS = list(CLASSIC) + list(MTCNN_TITLES)
QUICK_NETS = ["pnet", "rnet", "onet"]
ENGINES = ("minicaffe", "OpenCV", "PyTorch")
TITLES = {**{name: title for name, (title, _) in CLASSIC.items()}, **MTCNN_TITLES}

WITHIN_OPENCV = 1.5           # forward within 1.5x of OpenCV dnn
THREAD_SPEEDUP = 1.6          # the most threads >= 1.6x faster than one ...
SPEEDUP_NETS = ("resnet50", "mobilenet")     # ... on these, at batch 16
LOAD_SLOWDOWN = 2.0           # under load at most 2x slower than idle
REWARM_SECONDS = 0.1          # a pass shorter than this follows an untimed one of the same engine
BUSY_CORES = 0.1              # other processes using more than this while a row is timed: not an idle machine


# ====================================================================== deploy nets

def classic_deploy(file_name, batch):
    """(NetParameter, input range) of a classic training net made a deploy net at ``batch``."""
    source = read_net(os.path.join(ROOT, "examples", "classic", file_name))
    data = next(layer for layer in source.layer if layer.type in ("DummyData", "Input"))
    if data.type == "DummyData":
        dims, filler = list(data.dummy_data_param.shape[0].dim), data.dummy_data_param.data_filler[0]
        low_high = (filler.min, filler.max) if filler.type == "uniform" else None
    else:
        dims, low_high = list(data.input_param.shape[0].dim), None
    logits = [layer for layer in source.layer if layer.type == "SoftmaxWithLoss"][-1].bottom[0]
    needed, kept = {logits}, []
    for layer in reversed(source.layer):       # only what the last classifier needs
        if layer is data or layer.type in ("SoftmaxWithLoss", "Accuracy") or not set(layer.top) & needed:
            continue
        kept.append(layer)
        needed |= set(layer.bottom)
    net = caffe_pb2.NetParameter(name=source.name)
    net.layer.add(name=data.name, type="Input", top=[data.top[0]]).input_param.shape.add(dim=[batch] + dims[1:])
    for layer in reversed(kept):
        entry = net.layer.add()
        entry.CopyFrom(layer)
        del entry.include[:]
        if entry.type in ("Convolution", "InnerProduct"):
            param = entry.convolution_param if entry.type == "Convolution" else entry.inner_product_param
            if not param.HasField("weight_filler"):
                param.weight_filler.type, param.weight_filler.std = "gaussian", 0.01
        elif entry.type == "Scale":
            if not entry.scale_param.HasField("filler"):
                entry.scale_param.filler.type, entry.scale_param.filler.min, entry.scale_param.filler.max = \
                    "uniform", 0.5, 1.5
            if entry.scale_param.bias_term and not entry.scale_param.HasField("bias_filler"):
                entry.scale_param.bias_filler.type, entry.scale_param.bias_filler.std = "gaussian", 0.1
    net.layer.add(name="prob", type="Softmax", bottom=[logits], top=["prob"])
    return net, low_high


def _conv(bottom, num_output, kernel):
    return L.Convolution(bottom, num_output=num_output, kernel_size=kernel, weight_filler=dict(type="xavier"),
                         bias_filler=dict(type="gaussian", std=0.1))


def _prelu(bottom):
    return L.PReLU(bottom, in_place=True, filler=dict(type="uniform", min=0.05, max=0.4))


def mtcnn_deploy(name, batch):
    """MTCNN's PNet (on a 240x320 image), RNet (24x24) or ONet (48x48) layer sizes, as a NetSpec."""
    n = NetSpec()
    side = {"pnet": (240, 320), "rnet": (24, 24), "onet": (48, 48)}[name]
    n.data = L.Input(shape=dict(dim=[batch, 3, *side]))
    if name == "pnet":
        n.conv1 = _conv(n.data, 10, 3)
        n.prelu1 = _prelu(n.conv1)
        n.pool1 = L.Pooling(n.prelu1, pool="MAX", kernel_size=2, stride=2)
        n.conv2 = _conv(n.pool1, 16, 3)
        n.prelu2 = _prelu(n.conv2)
        n.conv3 = _conv(n.prelu2, 32, 3)
        n.prelu3 = _prelu(n.conv3)
        setattr(n, "conv4-1", _conv(n.prelu3, 2, 1))
        setattr(n, "conv4-2", _conv(n.prelu3, 4, 1))
        n.prob1 = L.Softmax(getattr(n, "conv4-1"))
        return n.to_proto(), None
    widths = (28, 48, 64, 128) if name == "rnet" else (32, 64, 64, 128, 256)
    top = n.data
    for index, width in enumerate(widths[:-1], start=1):
        kernel = 2 if index == len(widths) - 1 else 3
        setattr(n, f"conv{index}", _conv(top, width, kernel))
        top = getattr(n, f"conv{index}")
        setattr(n, f"prelu{index}", _prelu(top))
        if index < len(widths) - 1:
            size = 2 if index == 3 else 3
            setattr(n, f"pool{index}", L.Pooling(top, pool="MAX", kernel_size=size, stride=2))
            top = getattr(n, f"pool{index}")
    last = len(widths)
    fc = f"fc{last}" if name == "onet" else f"conv{last}"
    setattr(n, fc, L.InnerProduct(top, num_output=widths[-1], weight_filler=dict(type="xavier"),
                                  bias_filler=dict(type="gaussian", std=0.1)))
    setattr(n, f"prelu{last}", _prelu(getattr(n, fc)))
    heads = (("1", 2), ("2", 4)) if name == "rnet" else (("1", 2), ("2", 4), ("3", 10))
    for suffix, width in heads:
        setattr(n, f"{fc[:-1]}{last + 1}-{suffix}", L.InnerProduct(
            getattr(n, fc), num_output=width, weight_filler=dict(type="xavier")))
    setattr(n, "prob1", L.Softmax(getattr(n, f"{fc[:-1]}{last + 1}-1")))
    return n.to_proto(), None


def deploy(name, batch):
    if name in CLASSIC:
        return classic_deploy(CLASSIC[name][1], batch)
    return mtcnn_deploy(name, batch)


def weights_net(name, seed):
    """The batch-1 minicaffe net whose parameters every engine runs (the same ones in every process)."""
    param, _ = deploy(name, 1)
    set_random_seed(seed)
    net = Net(param, TEST)
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            mean, variance, factor = layer.blobs
            mean.data[...] = rng.normal(0.0, 0.1, mean.shape)
            variance.data[...] = rng.uniform(0.5, 1.5, variance.shape)
            factor.data[...] = 1.0
    return net


def input_batch(name, batch, seed):
    param, low_high = deploy(name, batch)
    shape = param.layer[0].input_param.shape[0].dim
    rng = np.random.default_rng([seed, batch])
    values = rng.uniform(*low_high, size=tuple(shape)) if low_high else rng.standard_normal(tuple(shape))
    return values.astype(np.float32)


def prepare(workdir, names, batches, seed):
    """Write each net's deploy prototxt (per batch) and its weights; {name: {batch: prototxt}, ...}."""
    files = {}
    for name in names:
        started = time.perf_counter()
        net = weights_net(name, seed)
        weights = os.path.join(workdir, f"{name}.caffemodel")
        net.save(weights)
        files[name] = {"weights": weights}
        for batch in batches:
            path = os.path.join(workdir, f"{name}_b{batch}.prototxt")
            with open(path, "w") as handle:
                handle.write(to_text(deploy(name, batch)[0]))
            files[name][batch] = path
        print(f"prepared {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return files


# ====================================================================== PyTorch twin of a planned net

def torch_twin(net):
    """A function of the input tensor giving {blob: tensor}, doing what the planned minicaffe ``net`` does.

    Built from each layer's LayerParameter and parameter blobs (not from the layers' internals, which
    change), for the layer types the benchmark's nets use; others raise NotImplementedError.
    """
    import torch
    import torch.nn.functional as F

    def tensor(blob):
        return torch.from_numpy(np.array(blob.data, dtype=np.float32, copy=True))

    def spatial(param, name, default):
        """Caffe's (h, w) of kernel/pad/stride/dilation: the _h/_w fields, else the plain (or repeated) field."""
        fields = param.DESCRIPTOR.fields_by_name
        if f"{name}_h" in fields and (param.HasField(f"{name}_h") or param.HasField(f"{name}_w")):
            return getattr(param, f"{name}_h"), getattr(param, f"{name}_w")
        value = getattr(param, name)
        if isinstance(value, int):
            return value, value
        values = list(value)               # a repeated field: one value for both axes, or h and w
        return (values[0], values[-1]) if values else (default, default)

    def convolution(planned, layer, bottom_shape, top_shape):
        param = planned.param.convolution_param
        if param.axis != 1 or len(layer.blobs[0].shape) != 4:
            raise NotImplementedError("Convolution other than 2-D on axis 1")
        weight = tensor(layer.blobs[0])
        bias = tensor(layer.blobs[1]) if param.bias_term else None
        stride, pad, dilation = spatial(param, "stride", 1), spatial(param, "pad", 0), spatial(param, "dilation", 1)
        return lambda x: F.conv2d(x, weight, bias, stride, pad, dilation, param.group)

    def pooling(planned, layer, bottom_shape, top_shape):
        param = planned.param.pooling_param
        if param.global_pooling:
            kernel, stride, pad = tuple(bottom_shape[2:]), (1, 1), (0, 0)
        else:
            kernel = spatial(param, "kernel_size", 1)
            stride, pad = spatial(param, "stride", 1), spatial(param, "pad", 0)
        ceil = param.round_mode == caffe_pb2.PoolingParameter.CEIL
        if param.pool == caffe_pb2.PoolingParameter.MAX:
            fill = float(np.finfo(np.float32).min)
            pool = lambda x: F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil)  # noqa: E731
        elif param.pool == caffe_pb2.PoolingParameter.AVE:
            # count_include_pad: the divisor counts padded cells but not those past the padding, as Caffe's
            fill = 0.0
            pool = lambda x: F.avg_pool2d(x, kernel, stride, pad, ceil_mode=ceil, count_include_pad=True)  # noqa: E731
        else:
            raise NotImplementedError("STOCHASTIC pooling")

        def run(x):
            y = pool(x)
            # Caffe drops a last window that starts past the input only when pad > 0; torch always does.
            # minicaffe keeps it (AVE 0, MAX -FLT_MAX): add the missing row/column the same way.
            missing_h, missing_w = top_shape[2] - y.shape[2], top_shape[3] - y.shape[3]
            return F.pad(y, (0, missing_w, 0, missing_h), value=fill) if missing_h or missing_w else y
        return run

    def lrn(planned, layer, bottom_shape, top_shape):
        param = planned.param.lrn_param
        size, alpha, beta = param.local_size, param.alpha, param.beta
        if param.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            # torch divides alpha by the window size, as Caffe does: the same alpha
            return lambda x: F.local_response_norm(x, size, alpha, beta, param.k)
        pad = (size - 1) // 2
        return lambda x: x * (1 + alpha * F.avg_pool2d(x * x, size, 1, pad, count_include_pad=True)) ** -beta

    def inner_product(planned, layer, bottom_shape, top_shape):
        param = planned.param.inner_product_param
        weight = tensor(layer.blobs[0])
        weight = weight.t().contiguous() if param.transpose else weight
        bias = tensor(layer.blobs[1]) if param.bias_term else None
        return lambda x: F.linear(torch.flatten(x, param.axis), weight, bias)

    def batch_norm(planned, layer, bottom_shape, top_shape):
        param = planned.param.batch_norm_param
        if param.HasField("use_global_stats") and not param.use_global_stats:
            raise NotImplementedError("BatchNorm with batch statistics in TEST")
        factor = float(layer.blobs[2].data.reshape(-1)[0])
        factor = 0.0 if factor == 0 else 1.0 / factor
        mean, variance = tensor(layer.blobs[0]) * factor, tensor(layer.blobs[1]) * factor
        return lambda x: F.batch_norm(x, mean, variance, None, None, False, 0.0, param.eps)

    def scale_or_bias(planned, layer, bottom_shape, top_shape):
        """Scale (with its optional bias) or Bias: parameter blobs shaped to broadcast from ``axis``."""
        param = planned.param.scale_param if planned.type == "Scale" else planned.param.bias_param
        if len(planned.bottoms) > 1:
            raise NotImplementedError(f"{planned.type} with a second bottom")
        shape = [1] * len(bottom_shape)
        axis = param.axis % len(bottom_shape)
        shape[axis:axis + len(layer.blobs[0].shape)] = layer.blobs[0].shape
        blobs = [tensor(blob).reshape(shape) for blob in layer.blobs]
        if planned.type == "Bias":
            return lambda x: x + blobs[0]
        if param.bias_term:
            return lambda x: torch.addcmul(blobs[1], x, blobs[0])
        return lambda x: x * blobs[0]

    def eltwise(planned, layer, bottom_shape, top_shape):
        param = planned.param.eltwise_param
        if param.operation == caffe_pb2.EltwiseParameter.PROD:
            return lambda *xs: functools.reduce(torch.mul, xs)
        if param.operation == caffe_pb2.EltwiseParameter.MAX:
            return lambda *xs: functools.reduce(torch.maximum, xs)
        coeffs = list(param.coeff) or [1.0] * len(planned.bottoms)
        if all(c == 1.0 for c in coeffs):
            return lambda *xs: functools.reduce(torch.add, xs)
        return lambda *xs: functools.reduce(torch.add, [c * x for c, x in zip(coeffs, xs)])

    def concat(planned, layer, bottom_shape, top_shape):
        param = planned.param.concat_param
        axis = param.concat_dim if param.HasField("concat_dim") else param.axis
        return lambda *xs: torch.cat(xs, axis)

    def relu(planned, layer, bottom_shape, top_shape):
        slope = planned.param.relu_param.negative_slope
        return (lambda x: F.leaky_relu(x, slope)) if slope else F.relu

    def prelu(planned, layer, bottom_shape, top_shape):
        weight = tensor(layer.blobs[0])
        return lambda x: F.prelu(x, weight)

    translations = {
        "Convolution": convolution, "Pooling": pooling, "LRN": lrn, "InnerProduct": inner_product,
        "BatchNorm": batch_norm, "Scale": scale_or_bias, "Bias": scale_or_bias, "Eltwise": eltwise,
        "Concat": concat, "ReLU": relu, "PReLU": prelu,
        "Softmax": lambda planned, *_: lambda x: F.softmax(x, planned.param.softmax_param.axis),
        "Sigmoid": lambda *_: torch.sigmoid,
        "TanH": lambda *_: torch.tanh,
        "Flatten": lambda planned, layer, bottom_shape, top_shape: lambda x: x.reshape(top_shape),
        "Reshape": lambda planned, layer, bottom_shape, top_shape: lambda x: x.reshape(top_shape),
        "Dropout": lambda *_: None,             # the identity in TEST
        "Split": lambda *_: None,
    }
    steps = []
    for planned, layer in zip(net.plan.layers, net.layers):
        if planned.type == "Input":
            continue
        if planned.type not in translations:
            raise NotImplementedError(f"no PyTorch translation of {planned.type} (layer '{planned.name}')")
        bottom_shape = tuple(net.blobs[planned.bottoms[0]].shape)
        top_shape = tuple(net.blobs[planned.tops[0]].shape)
        run = translations[planned.type](planned, layer, bottom_shape, top_shape)
        steps.append((run, tuple(planned.bottoms), tuple(planned.tops)))
    input_name = net.inputs[0]

    def forward(x):
        blobs = {input_name: x}
        for run, bottoms, tops in steps:
            if run is None:
                for top in tops:
                    blobs[top] = blobs[bottoms[0]]
            else:
                blobs[tops[0]] = run(*[blobs[name] for name in bottoms])
        return blobs
    return forward


# ====================================================================== engines

def failure(exc):
    """An exception as one line for a Markdown table."""
    return f"{type(exc).__name__}: {exc}".replace("|", "/").replace("\n", " ")[:200]


def compared_blobs(net):
    """The net's outputs and the bottom of each Softmax that makes one (the logits)."""
    names = list(net.outputs)
    for planned in net.plan.layers:
        if planned.type == "Softmax" and planned.tops[0] in names and planned.bottoms[0] not in names:
            names.append(planned.bottoms[0])
    return names


def producer(net, blob):
    """The last layer that writes ``blob`` (OpenCV names its outputs by layer)."""
    return [planned.name for planned in net.plan.layers if blob in planned.tops][-1]


class Engines:
    """minicaffe, OpenCV dnn and PyTorch on one net at one batch: ``runs`` (timed) and ``fetchers`` (checked)."""

    def __init__(self, name, batch, files, seed, source_net, others=("OpenCV", "PyTorch")):
        self.errors = {}
        self.data = input_batch(name, batch, seed)
        self.net = Net(files[name][batch], TEST)
        self.net.share_with(source_net)
        self.blob_names = compared_blobs(self.net)
        self.net.blobs[self.net.inputs[0]].data[...] = self.data
        self.runs = {"minicaffe": self.net.forward}
        self.fetchers = {"minicaffe": lambda: {blob: self.net.blobs[blob].data.copy() for blob in self.blob_names}}
        for engine, build in (("OpenCV", self._opencv), ("PyTorch", self._torch)):
            if engine not in others:        # benchmarks/profile_inference.py builds OpenCV's alone
                continue
            try:
                build(files[name][batch], files[name]["weights"])
            except Exception as exc:        # an engine that cannot run a net is reported, not fatal
                self.errors[engine] = failure(exc)

    def _opencv(self, prototxt, weights):
        import cv2
        dnn = cv2.dnn.readNetFromCaffe(prototxt, weights)
        dnn.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        dnn.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.opencv = dnn                   # for its per-layer profile (benchmarks/profile_inference.py)
        # The compared blobs are asked for in timed runs too: asking for other outputs than the last
        # forward did makes OpenCV set the net up again, which a timed run must not include.
        checked = [producer(self.net, blob) for blob in self.blob_names]

        def run():
            dnn.setInput(self.data)
            return dnn.forward(checked)

        def fetch():
            return dict(zip(self.blob_names, (np.array(out) for out in run())))
        self.runs["OpenCV"], self.fetchers["OpenCV"] = run, fetch

    def _torch(self, prototxt, weights):
        import torch
        forward = torch_twin(self.net)
        data = torch.from_numpy(self.data.copy())

        def run():
            with torch.inference_mode():
                return forward(data)

        def fetch():
            blobs = run()
            return {blob: blobs[blob].numpy().copy() for blob in self.blob_names}
        self.runs["PyTorch"], self.fetchers["PyTorch"] = run, fetch

    def check(self, tolerance, differences):
        """Compare OpenCV's and PyTorch's outputs with minicaffe's; a mismatching engine is dropped."""
        reference = self.fetchers["minicaffe"]()
        for engine in ("OpenCV", "PyTorch"):
            if engine in self.errors or engine not in self.fetchers:
                continue
            try:
                theirs = self.fetchers[engine]()
            except Exception as exc:
                self.errors[engine] = failure(exc)
                continue
            worst_abs, worst_rel = 0.0, 0.0
            for blob in self.blob_names:
                ours, other = reference[blob], theirs[blob]
                if other.size != ours.size:
                    worst_abs = worst_rel = float("inf")
                    continue
                difference = float(np.max(np.abs(ours.astype(np.float64) - other.reshape(ours.shape))))
                worst_abs = max(worst_abs, difference)
                worst_rel = max(worst_rel, difference / max(float(np.max(np.abs(ours))), 1e-30))
            before = differences.get(engine, (0.0, 0.0))
            differences[engine] = (max(before[0], worst_abs), max(before[1], worst_rel))
            if not worst_rel <= tolerance:
                self.errors[engine] = (f"output mismatch: max abs diff {worst_abs:.3g}, {worst_rel:.3g} of the "
                                       "largest magnitude")


# ====================================================================== threads and timing

class ThreadControl:
    """Sets every engine's thread count; ``how`` says how minicaffe's was set."""

    def __init__(self):
        self._limits = None
        try:
            from minicaffe import threads
            self._minicaffe = threads.set_num_threads
            self.how = "minicaffe.threads.set_num_threads"
        except (ImportError, AttributeError):
            self._minicaffe = None
            self.how = "numba.set_num_threads and threadpoolctl.threadpool_limits(user_api='blas')"

    def set(self, count):
        import cv2
        import torch
        if self._minicaffe is not None:
            self._minicaffe(count)
        else:
            import numba
            from threadpoolctl import threadpool_limits
            if self._limits is not None:
                self._limits.restore_original_limits()
            numba.set_num_threads(count)
            self._limits = threadpool_limits(limits=count, user_api="blas")
        cv2.setNumThreads(count)
        torch.set_num_threads(count)


def cpu_seconds():
    """(CPU seconds used on the whole machine, by this process), or None where /proc/stat is missing.

    Their changes over a measurement give how many cores other processes kept busy meanwhile (hypervisor
    steal included): figures taken beside them are not an idle machine's.
    """
    try:
        with open("/proc/stat") as handle:
            ticks = [int(value) for value in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    own = os.times()
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def measure(engines, args, check_seconds):
    """({engine: [ms, ...]}, cores other processes used): warm-up, then alternated rounds within the budget.

    The check run is a warm-up too: a net whose check took over a quarter of the budget gets no other.
    A round is not started when the mean round so far says it would end past ``--max-seconds``. A short
    pass is preceded by an untimed one of the same engine (see the module's docstring).
    """
    active = [engine for engine in ENGINES if engine not in engines.errors]
    last = {}                # seconds of each engine's last pass
    for _ in range(args.warmup if check_seconds < args.max_seconds / 4 else 0):
        for engine in active:
            start = time.perf_counter()
            engines.runs[engine]()
            last[engine] = time.perf_counter() - start
    times = {engine: [] for engine in active}
    before, started = cpu_seconds(), time.perf_counter()
    spent = 0.0
    for index in range(args.repeats):
        if index >= args.min_repeats and spent * (index + 1) / index > args.max_seconds:
            break
        for engine in active:
            if last.get(engine, float("inf")) < REWARM_SECONDS:
                engines.runs[engine]()
            start = time.perf_counter()
            engines.runs[engine]()
            last[engine] = elapsed = time.perf_counter() - start
            times[engine].append(elapsed * 1e3)
            spent += elapsed
    after, wall = cpu_seconds(), time.perf_counter() - started
    others = None
    if before is not None and after is not None:
        others = max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / wall
    return times, others


def checked_and_timed(engines, args, differences):
    """Check the engines against minicaffe at the current thread setting, then time them.

    Returns (times, errors, cores other processes used while timing).

    When minicaffe itself fails, the net gets no timing at all (there is nothing to check the others against).
    """
    if "minicaffe" in engines.errors:
        return {}, dict(engines.errors), None
    start = time.perf_counter()
    try:
        engines.net.forward()
        engines.check(args.tolerance, differences)
        times, others = measure(engines, args, time.perf_counter() - start)
    except Exception as exc:
        engines.errors["minicaffe"] = failure(exc)
        times, others = {}, None
    return times, dict(engines.errors), others


def build_engines(name, batch, files, args, source_net):
    """Engines for one net and batch; when minicaffe cannot even build it, an object that says so."""
    try:
        return Engines(name, batch, files, args.seed, source_net)
    except Exception as exc:
        broken = Engines.__new__(Engines)
        broken.errors = {"minicaffe": failure(exc)}
        return broken


def load_child(args):
    """``--load``, in a process of its own: every engine at its default thread count, idle then loaded."""
    files = json.loads(args.files_json)
    files = {name: {(int(key) if key.isdigit() else key): value for key, value in entry.items()}
             for name, entry in files.items()}
    results, differences = {}, {}
    # The busy process spins on the last CPU this process may use, beside the engines' threads there.
    cpu = sorted(os.sched_getaffinity(0))[-1] if hasattr(os, "sched_getaffinity") else None
    for name in args.net_list:
        source_net = weights_net(name, args.seed)
        for batch in args.batch_list:
            key = f"{name}/{batch}"
            differences[key] = {}
            engines = build_engines(name, batch, files, args, source_net)
            idle, _, others_idle = checked_and_timed(engines, args, differences[key])
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                if cpu is not None:
                    os.sched_setaffinity(busy.pid, {cpu})
                time.sleep(0.5)         # its interpreter starts up before it spins; a small net is timed in ms
                loaded, errors, others_load = checked_and_timed(engines, args, differences[key])
            finally:
                busy.kill()
                busy.wait()
            results[key] = {"idle": idle, "load": loaded, "errors": errors, "cpu": cpu,
                            "others": [others_idle, others_load]}
            print(f"load {key}: " + ", ".join(f"{engine} {statistics.median(idle[engine]):.1f} -> "
                                               f"{statistics.median(loaded[engine]):.1f} ms"
                                               for engine in idle if loaded.get(engine)) +
                  "".join(f"; {engine}: {message}" for engine, message in errors.items()),
                  file=sys.stderr, flush=True)
    with open(args.load_child, "w") as handle:
        json.dump({"results": results, "differences": differences, "defaults": default_threads()}, handle)


def default_threads():
    import cv2
    import numba
    import torch
    counts = {"OpenCV": cv2.getNumThreads(), "PyTorch": torch.get_num_threads(), "numba": numba.get_num_threads()}
    try:
        from minicaffe import threads
        counts["minicaffe"] = threads.get_num_threads()
    except (ImportError, AttributeError):
        pass
    return counts


# ====================================================================== report

def plural(count):
    return f"{count} thread{'s' if count != 1 else ''}"


def cores(value):
    return "-" if value is None else f"{value:.2f}"


def cell(times):
    if not times:
        return "-"
    return f"{statistics.median(times):.1f} ({min(times):.1f})"


def median(row, engine):
    times = row["times"].get(engine)
    return statistics.median(times) if times else None


def ratio_text(ours, theirs):
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def thread_table(rows):
    lines = ["| net | batch | minicaffe (ms) | OpenCV dnn (ms) | PyTorch (ms) | minicaffe / OpenCV | "
             f"minicaffe / PyTorch | within {WITHIN_OPENCV}x of OpenCV | runs | other processes (cores) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for row in rows:
        ours, opencv = median(row, "minicaffe"), median(row, "OpenCV")
        verdict = "-" if not (ours and opencv) else ("met" if ours <= WITHIN_OPENCV * opencv else "missed")
        cells = [cell(row["times"].get(engine)) if engine not in row["errors"] else
                 "mismatch" if row["errors"][engine].startswith("output mismatch") else "failed" for engine in ENGINES]
        lines.append(f"| {TITLES[row['net']]} | {row['batch']} | {' | '.join(cells)} | "
                     f"{ratio_text(ours, opencv)} | {ratio_text(ours, median(row, 'PyTorch'))} | {verdict} | "
                     f"{len(row['times'].get('minicaffe', []))} | {cores(row['others'])} |")
    return "\n".join(lines)


def load_table(load):
    lines = ["| net | batch | " + " | ".join(f"{engine} idle (ms) | under load | slowdown" for engine in ENGINES)
             + f" | minicaffe at most {LOAD_SLOWDOWN:g}x | other processes (cores): idle / load |",
             "| --- | ---: |" + " ---: | ---: | ---: |" * len(ENGINES) + " --- | ---: |"]
    for key, result in load["results"].items():
        name, batch = key.split("/")
        cells, verdict = [], "-"
        for engine in ENGINES:
            idle, loaded = result["idle"].get(engine), result["load"].get(engine)
            if engine in result["errors"] or not idle or not loaded:
                cells.append("failed | - | -")
                continue
            slowdown = statistics.median(loaded) / statistics.median(idle)
            cells.append(f"{cell(idle)} | {cell(loaded)} | {slowdown:.2f}x")
            if engine == "minicaffe":
                verdict = "met" if slowdown <= LOAD_SLOWDOWN else "missed"
        idle_others, load_others = result["others"]
        lines.append(f"| {TITLES[name]} | {batch} | {' | '.join(cells)} | {verdict} | "
                     f"{cores(idle_others)} / {cores(load_others)} |")
    return "\n".join(lines)


def targets(by_threads, load, names):
    """Rows (target, verdict, evidence) computed from the figures."""
    scope = "every net timed" if set(names) >= set(ALL_NETS) else f"only the nets timed ({', '.join(names)})"
    rows = []
    for count, table_rows in by_threads.items():
        # A row where minicaffe has no figure misses; one where only OpenCV has none cannot be judged.
        pairs = [(row, median(row, "minicaffe"), median(row, "OpenCV")) for row in table_rows]
        judged = [(row, ours / theirs if ours else float("inf")) for row, ours, theirs in pairs if theirs]
        unjudged = len(pairs) - len(judged)
        note = f"; {unjudged} without an OpenCV figure, not judged" if unjudged else ""
        if not judged:
            rows.append((f"Within {WITHIN_OPENCV}x of OpenCV, {plural(count)}", "not measured", "no OpenCV figures"))
            continue
        worst_row, worst = max(judged, key=lambda item: item[1])
        within = sum(ratio <= WITHIN_OPENCV for _, ratio in judged)
        rows.append((f"Forward within {WITHIN_OPENCV}x of OpenCV dnn on every net and batch, {plural(count)} "
                     f"({scope})", "met" if within == len(judged) else "missed",
                     f"{within} of {len(judged)} within{note}; worst {TITLES[worst_row['net']]} batch "
                     f"{worst_row['batch']}: {worst:.2f}x"))
        ahead = sum(ratio < 1.0 for _, ratio in judged)
        rows.append((f"Ahead of OpenCV dnn on at least half of them, {plural(count)}",
                     "met" if 2 * ahead >= len(judged) else "missed", f"ahead on {ahead} of {len(judged)}"))
    counts = sorted(by_threads)
    target = (f"{counts[-1] if len(counts) > 1 else 'N'} threads at least {THREAD_SPEEDUP}x faster than 1 on "
              "ResNet-50 and MobileNet, batch 16")
    if len(counts) < 2 or counts[0] != 1:
        rows.append((target, "not measured", "needs --threads 1,N"))
    else:
        speedups, evidence = [], []
        for name in SPEEDUP_NETS:
            one = next((row for row in by_threads[1] if row["net"] == name and row["batch"] == 16), None)
            many = next((row for row in by_threads[counts[-1]] if row["net"] == name and row["batch"] == 16), None)
            if one is None or many is None:
                evidence.append(f"{TITLES[name]}: not timed at batch 16")
                speedups.append(None)
                continue
            parts = []
            for engine in ENGINES:
                a, b = median(one, engine), median(many, engine)
                parts.append(f"{engine} {a / b:.2f}x" if a and b else f"{engine} -")
                if engine == "minicaffe":
                    speedups.append(a / b if a and b else 0.0)
            evidence.append(f"{TITLES[name]}: " + ", ".join(parts))
        verdict = ("not measured" if None in speedups
                   else "met" if all(s >= THREAD_SPEEDUP for s in speedups) else "missed")
        rows.append((target, verdict, "; ".join(evidence)))
    if load is None:
        rows.append((f"Under load at most {LOAD_SLOWDOWN:g}x slower than idle", "not measured", "needs --load"))
    else:
        slowdowns = []
        for key, result in load["results"].items():
            idle, loaded = result["idle"].get("minicaffe"), result["load"].get("minicaffe")
            slowdown = statistics.median(loaded) / statistics.median(idle) if idle and loaded else float("inf")
            slowdowns.append((slowdown, key))
        if slowdowns:
            worst, key = max(slowdowns)
            name, batch = key.split("/")
            rows.append((f"Under load at most {LOAD_SLOWDOWN:g}x slower than idle ({scope})",
                         "met" if worst <= LOAD_SLOWDOWN else "missed",
                         f"worst {TITLES[name]} batch {batch}: {worst:.2f}x"))
    return rows


def source_version():
    """The commit minicaffe was run from, and whether its files differed from it (git; '?' without)."""
    def git(*command):
        return subprocess.run(["git", "-C", ROOT, *command], capture_output=True, text=True, check=True).stdout
    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        changed = git("status", "--porcelain", "--", "minicaffe")
    except (OSError, subprocess.CalledProcessError):
        return "(commit unknown)"
    return f"at {commit}" + (" with uncommitted changes in minicaffe/" if changed.strip() else "")


def environment(control, load_before):
    import cv2
    import numba
    import torch
    from threadpoolctl import threadpool_info
    try:
        layer = numba.threading_layer()
    except ValueError:                  # no parallel kernel has run
        layer = "not started"
    pools = "; ".join(f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('architecture') or '-'}, "
                      f"{pool.get('num_threads')} threads, {os.path.basename(pool.get('filepath', ''))})"
                      for pool in threadpool_info())
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    variables = ", ".join(f"{name}={os.environ[name]}" for name in
                          ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                           "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "MINICAFFE_NUM_THREADS")
                          if os.environ.get(name)) or "no thread variables set"
    return (f"minicaffe {source_version()}; {model}, {os.cpu_count()} CPUs ({cpus} usable), "
            f"Python {platform.python_version()}, "
            f"numpy {np.__version__}, thread pools (threadpoolctl): {pools}; numba {numba.__version__}, "
            f"threading layer {layer}; PyTorch {torch.__version__}; OpenCV {cv2.__version__}; {variables}; "
            f"minicaffe's threads set by {control.how}; load average {load_before:.2f} before, "
            f"{os.getloadavg()[0]:.2f} after")


def agreement_table(differences):
    lines = ["| net | batch | OpenCV: max abs diff | relative | PyTorch: max abs diff | relative |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, found in differences.items():
        name, batch = key.split("/")
        cells = []
        for engine in ("OpenCV", "PyTorch"):
            absolute, relative = found.get(engine, (None, None))
            cells.append("- | -" if absolute is None else f"{absolute:.2g} | {relative:.2g}")
        lines.append(f"| {TITLES[name]} | {batch} | {' | '.join(cells)} |")
    return "\n".join(lines)


def busy_note(by_threads, load):
    """How many figures were taken beside other work, which an idle machine's should not be."""
    def busy(value):
        return value is not None and value > BUSY_CORES
    rows = [row["others"] for table_rows in by_threads.values() for row in table_rows]
    note = f"{sum(map(busy, rows))} of {len(rows)} rows of the thread tables"
    if load is not None:
        idle = [result["others"][0] for result in load["results"].values()]
        note += f" and {sum(map(busy, idle))} of {len(idle)} idle figures of the load table"
    return note + f" were timed beside more than {BUSY_CORES} core of other work: not an idle machine's figures."


def report(args, command, control, load_before, minutes, by_threads, errors, differences, load):
    lines = [
        "# Inference: forward pass, minicaffe against OpenCV dnn and PyTorch CPU",
        "",
        f"Made by `.venv/bin/{command}` ({minutes:.1f} min) on {environment(control, load_before)}.",
        "",
        f"Median milliseconds per forward pass (minimum in brackets), lower is better; random weights, the same in "
        f"every engine; rounds of one pass per engine in turn after the check run and {args.warmup} warm-up "
        f"round(s) (none where the check took over {args.max_seconds / 4:g} s), up to {args.repeats} rounds "
        f"within about {args.max_seconds:g} s of timed passes per net, batch and setting (at least "
        f"{args.min_repeats}; the `runs` column counts them); a pass under {REWARM_SECONDS:g} s follows an untimed "
        "one of the same engine. See the script's docstring for the method.",
        "",
        "`other processes`: the cores that other processes (and the hypervisor) kept busy while a row was timed. "
        f"{busy_note(by_threads, load)}",
        "",
        "## Targets (issue 20), computed from the tables below",
        "",
        "| target | verdict | figures |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {target} | {verdict} | {evidence} |" for target, verdict, evidence in
              targets(by_threads, load, args.net_list)]
    for count, rows in by_threads.items():
        lines += ["", f"## {plural(count)} in every engine", "", thread_table(rows)]
    if load is not None:
        cpu = next(iter(load["results"].values()), {}).get("cpu")
        defaults = ", ".join(f"{engine} {count}" for engine, count in load["defaults"].items())
        lines += ["", "## Under load: one busy process on CPU " + str(cpu) + ", default thread counts", "",
                  f"Each engine as it starts, in a fresh process (thread counts: {defaults}); the same net timed "
                  "idle, then beside the busy process.", "", load_table(load)]
    lines += ["", "## Output agreement with minicaffe (largest over the settings; relative: to the largest "
              f"magnitude of minicaffe's blob; tolerance {args.tolerance:g})", "", agreement_table(differences)]
    failures = [f"- {TITLES[key.split('/')[0]]} batch {key.split('/')[1]}, {engine}: {message}"
                for key, found in errors.items() for engine, message in found.items()]
    if failures:
        lines += ["", "## Engines that failed or disagreed (no timing)", ""] + sorted(set(failures))
    return "\n".join(lines) + "\n"


# ====================================================================== main

def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(ALL_NETS), help=f"comma-separated, from {','.join(ALL_NETS)}")
    parser.add_argument("--batches", default="1,16")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser.add_argument("--threads", default="1" if cores == 1 else f"1,{cores}",
                        help="thread counts, every engine the same (default: 1 and the usable cores)")
    parser.add_argument("--load", action="store_true", help="also the table under load (default thread counts)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {','.join(QUICK_NETS)} unless --nets, 1 timed round, printed only "
                             "unless --output")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds at most")
    parser.add_argument("--min-repeats", type=int, default=1, help="timed rounds at least")
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="time budget of the timed rounds of one net, batch and setting (all engines)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds after the check run")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest difference allowed, relative to the largest magnitude of minicaffe's blob")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None,
                        help="Markdown file to write ('-': print only; default benchmarks/results/inference.md, "
                             "or '-' with --quick)")
    parser.add_argument("--load-child", help=argparse.SUPPRESS)    # JSON path: run the load table, write there
    parser.add_argument("--files-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        if args.nets == parser.get_default("nets"):
            args.nets = ",".join(QUICK_NETS)
        args.repeats, args.min_repeats, args.warmup = 1, 1, 0
    if args.output is None:
        args.output = "-" if args.quick else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                         "inference.md")
    args.net_list = [name.strip() for name in args.nets.split(",") if name.strip()]
    unknown = [name for name in args.net_list if name not in ALL_NETS]
    if unknown:
        parser.error(f"unknown net(s) {', '.join(unknown)}; known: {', '.join(ALL_NETS)}")
    args.batch_list = [int(item) for item in args.batches.split(",")]
    args.thread_list = [int(item) for item in args.threads.split(",")]
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.load_child:
        load_child(args)
        return 0
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as workdir:
        files = prepare(workdir, args.net_list, args.batch_list, args.seed)
        load = None
        if args.load:       # first, in its own process: every engine still at its default thread count
            result_path = os.path.join(workdir, "load.json")
            child = [sys.executable, os.path.abspath(__file__)] + [item for item in argv if item != "--load"] + \
                ["--nets", args.nets, "--load-child", result_path, "--files-json", json.dumps(files)]
            subprocess.run(child, check=True)
            with open(result_path) as handle:
                load = json.load(handle)
        control = ThreadControl()
        by_threads = {count: [] for count in args.thread_list}
        errors = {}
        differences = {key: dict(found) for key, found in (load or {}).get("differences", {}).items()}
        for name in args.net_list:
            source_net = weights_net(name, args.seed)
            for batch in args.batch_list:
                key = f"{name}/{batch}"
                differences.setdefault(key, {})
                engines = build_engines(name, batch, files, args, source_net)
                for count in args.thread_list:
                    control.set(count)
                    times, found, others = checked_and_timed(engines, args, differences[key])
                    errors.setdefault(key, {}).update(found)
                    by_threads[count].append({"net": name, "batch": batch, "times": times, "errors": found,
                                              "others": others})
                    print(f"{plural(count)}, {name} batch {batch}: " + ", ".join(
                        f"{engine} {statistics.median(t):.1f} ms" for engine, t in times.items()) +
                        "".join(f"; {engine}: {message}" for engine, message in found.items()),
                        file=sys.stderr, flush=True)
        if load is not None:
            for key, result in load["results"].items():
                errors.setdefault(key, {}).update(result["errors"])
    differences = {key: {engine: tuple(pair) for engine, pair in found.items()} for key, found in differences.items()}
    command = " ".join(["python benchmarks/bench_inference.py"] + argv)
    minutes = (time.perf_counter() - started) / 60
    text = report(args, command, control, load_before, minutes, by_threads, errors, differences, load)
    print(text)
    if args.output != "-":
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as handle:
            handle.write(text)
        print(f"wrote {os.path.relpath(args.output)}", file=sys.stderr)
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
