"""GPU mode's speed: training iterations of LeNet and CIFAR-10 quick and a ResNet-50 forward, against PyTorch CUDA
on the same card and against minicaffe's own CPU path, in one run.

Run from the project's root on a machine with an NVIDIA GPU (numba-cuda and CuPy from the `gpu` extra, and a
CUDA build of PyTorch: the `bench` extra's wheel is the CPU one on some platforms):

    .venv/bin/pip install -e '.[gpu,bench]'
    .venv/bin/python benchmarks/bench_gpu.py                  # writes benchmarks/results/gpu.md
    .venv/bin/python benchmarks/bench_gpu.py --nets lenet --rounds 3 --output /tmp/gpu.md

With no usable GPU, or under numba's simulator (NUMBA_ENABLE_CUDASIM=1, whose timings measure Python, not a
GPU), it refuses with one line and times nothing.

The rows (issue 25):

- LeNet, batch 64, and CIFAR-10 quick, batch 100: one training iteration, Forward, Backward and the SGD
  update with momentum and weight decay (Caffe's example solvers' settings), on Caffe's own prototxt files
  (`examples/lenet`, `examples/cifar10`) with the DummyData layer made an Input holding one fixed batch, so
  the data layer is timed on neither side (as in bench_vision.py). minicaffe runs ``solver.step(1)`` with
  the NaN check off (Caffe has none; PyTorch neither); PyTorch runs bench_vision.py's twin of the net with
  ``torch.optim.SGD`` (zeroing the gradients, forward, cross-entropy, backward, step).
- ResNet-50, batch 32: one Forward of the deploy net bench_inference.py makes from
  `examples/classic/resnet50.prototxt` (its weights and input too), against bench_inference.py's PyTorch
  twin of the planned net, run on the GPU under ``torch.inference_mode()``.

Before timing, each row checks that the engines compute the same thing: the first training loss of minicaffe
GPU, minicaffe CPU and PyTorch agree (relative 1e-3), and ResNet-50's `prob` agrees within ``--tolerance``
of its largest value. Timing: warm-up iterations (numba compiles the kernels at their first launch, cuDNN
picks its algorithms), then ``--rounds`` alternating rounds of ``--iterations`` iterations for minicaffe GPU
and PyTorch CUDA, each iteration ending with a device synchronization (numba's and torch's) before the clock
is read; the figure is the median iteration, the minimum in brackets. The CPU path runs ``--cpu-iterations``
iterations (it is 20 to 100 times slower) in CPU mode, on a second copy of the net.

Also written, per net: which layers ran their CPU code in GPU mode (`minicaffe time --gpu`'s line) and the
host<->device copies of blob memory per iteration (SyncedArray's counters), the two things that make GPU mode
slow when they are not zero.

The targets (issue 25) are computed from the figures: minicaffe GPU at least 20x faster than its CPU path on
CIFAR-10 quick at batch 100, and within 2x of PyTorch CUDA on every row.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from minicaffe.proto import caffe_pb2  # noqa: E402
from minicaffe.proto.text import read_net  # noqa: E402

# --nets name: (title, prototxt, batch, solver settings of Caffe's example solver) for the training rows
TRAINING = {
    "lenet": ("LeNet", "examples/lenet/lenet_train_test.prototxt", 64,
              dict(base_lr=0.01, momentum=0.9, weight_decay=0.0005)),
    "cifar10_quick": ("CIFAR-10 quick", "examples/cifar10/cifar10_quick_train_test.prototxt", 100,
                      dict(base_lr=0.001, momentum=0.9, weight_decay=0.004)),
}
FORWARD = {"resnet50": ("ResNet-50", 32)}       # --nets name: (title, batch) for the forward rows
ALL_NETS = list(TRAINING) + list(FORWARD)
CPU_SPEEDUP = 20.0          # minicaffe GPU at least 20x its CPU path ...
SPEEDUP_NET = "cifar10_quick"   # ... on CIFAR-10 quick at batch 100
WITHIN_TORCH = 2.0          # within 2x of PyTorch CUDA on every row
SEED = 1701


def _sibling(name):
    """Another benchmark script of this folder as a module (bench_vision's and bench_inference's twins)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(ALL_NETS),
                        help=f"comma-separated, of {', '.join(ALL_NETS)} (default: all)")
    parser.add_argument("--device", type=int, default=0, help="the CUDA device (minicaffe's --gpu, torch's cuda:N)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (minicaffe GPU, PyTorch)")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per round and engine")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per engine first")
    parser.add_argument("--cpu-iterations", type=int, default=3, help="timed iterations of the CPU path")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest difference of ResNet-50's prob, relative to its largest value")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "gpu.md"))
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.nets.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALL_NETS]
    if unknown or not names:
        parser.error(f"--nets: unknown {', '.join(unknown) or 'empty list'} (known: {', '.join(ALL_NETS)})")
    if min(args.rounds, args.iterations, args.cpu_iterations) < 1 or args.warmup < 0:
        parser.error("--rounds, --iterations and --cpu-iterations take at least 1, --warmup at least 0")
    args.nets = names
    return args


def refusal():
    """Why this machine cannot be benchmarked (one line), or None when it can."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in ("", "0"):
        return ("bench_gpu.py times a real GPU, and NUMBA_ENABLE_CUDASIM is set: the simulator's timings "
                "measure Python, not a GPU; nothing was timed")
    from minicaffe import gpu
    if not gpu.available():
        return ("bench_gpu.py needs an NVIDIA GPU that numba can use (pip install -e '.[gpu]'), and numba finds "
                "none: nothing was timed")
    if importlib.util.find_spec("cupy") is None:
        return "bench_gpu.py needs CuPy for cuBLAS (pip install -e '.[gpu]'): nothing was timed"
    try:
        import torch
    except ImportError:
        return "bench_gpu.py needs PyTorch with CUDA for its reference (pip install -e '.[bench]'): nothing was timed"
    if not torch.cuda.is_available():
        return (f"bench_gpu.py needs a CUDA build of PyTorch for its reference; torch {torch.__version__} sees "
                "no GPU: nothing was timed")
    return None


# ====================================================================== the nets

def training_net(name):
    """The training net of ``name`` (a NetParameter): Caffe's prototxt with its TRAIN DummyData made an Input
    of the same tops and shapes, so one fixed batch stays in the blobs (on the device in GPU mode)."""
    _, path, batch, _ = TRAINING[name]
    source = read_net(os.path.join(ROOT, path))
    net = caffe_pb2.NetParameter(name=source.name)
    for layer in source.layer:
        phases = {rule.phase for rule in layer.include}
        if phases and caffe_pb2.TRAIN not in phases:
            continue
        entry = net.layer.add()
        if layer.type == "DummyData":
            entry.name, entry.type = layer.name, "Input"
            entry.top.extend(layer.top)
            for shape in layer.dummy_data_param.shape:
                entry.input_param.shape.add().dim.extend(shape.dim)
            assert entry.input_param.shape[0].dim[0] == batch, (name, batch)
        else:
            entry.CopyFrom(layer)
            del entry.include[:]
    return net


def training_solver(name):
    """An SGDSolver on :func:`training_net` with Caffe's example solver's settings (no test net, no display,
    no snapshot), built in the current mode, its batch filled with seeded data and labels."""
    from minicaffe.solvers import Solver
    settings = TRAINING[name][3]
    param = caffe_pb2.SolverParameter(type="SGD", lr_policy="fixed", max_iter=10 ** 9, display=0, snapshot=0,
                                      random_seed=SEED, snapshot_after_train=False, **settings)
    param.net_param.CopyFrom(training_net(name))
    solver = Solver(param)
    solver.nan_check = False            # Caffe does not look; PyTorch neither
    data, labels = solver.net.blobs["data"], solver.net.blobs["label"]
    rng = np.random.default_rng(SEED)
    data.data[...] = rng.uniform(0, 1, data.shape)
    labels.data[...] = rng.integers(0, 10, labels.shape)
    return solver


def torch_training(name, net, device):
    """bench_vision.py's PyTorch twin of ``net`` (its weights) on ``device``, with the same SGD settings and
    batch: a function running one training iteration and returning its loss."""
    import torch
    import torch.nn.functional as F
    model = _sibling("bench_vision").torch_model(TRAINING[name][0], net).to(device)
    settings = TRAINING[name][3]
    optimizer = torch.optim.SGD(model.parameters(), lr=settings["base_lr"], momentum=settings["momentum"],
                                weight_decay=settings["weight_decay"])
    data = torch.from_numpy(net.blobs["data"].data.copy()).to(device)
    labels = torch.from_numpy(net.blobs["label"].data.astype(np.int64)).to(device)

    def iteration():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(data), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()         # read only by the check: a float() here would synchronize every iteration
    return iteration


def check_losses(title, losses):
    """Stop unless every engine's first training loss ({engine: loss}) agrees: they must compute one net."""
    values = list(losses.values())
    if not all(np.isclose(value, values[0], rtol=1e-3, atol=1e-5) for value in values):
        raise SystemExit(f"{title}: the first losses differ ({losses}): not the same net")


@contextlib.contextmanager
def _tensors_on(device):
    """bench_inference.py's twin takes its weights with torch.from_numpy (CPU tensors): here they go to the
    GPU as they are made."""
    import torch
    original = torch.from_numpy
    torch.from_numpy = lambda array: original(array).to(device)
    try:
        yield
    finally:
        torch.from_numpy = original


def forward_nets(name, workdir, copies):
    """``copies`` minicaffe nets of bench_inference.py's ResNet-50 deploy net at its batch (its seeded
    weights), each with bench_inference.py's input; built in the current mode."""
    from minicaffe.graph import TEST
    from minicaffe.net import Net
    inference = _sibling("bench_inference")
    batch = FORWARD[name][1]
    files = inference.prepare(workdir, [name], [batch], SEED)[name]
    x = inference.input_batch(name, batch, SEED)
    nets = []
    for _ in range(copies):
        net = Net(files[batch], TEST, weights=files["weights"])
        net.blobs[net.inputs[0]].data[...] = x
        nets.append(net)
    return nets, x


# ====================================================================== timing

def torch_device(args):
    return f"cuda:{args.device}"


def _synchronize_numba():
    from numba import cuda
    cuda.synchronize()


def timed(run, synchronize, count):
    """Seconds of each of ``count`` runs, the device synchronized before each reading of the clock."""
    times = []
    for _ in range(count):
        synchronize()
        start = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - start)
    return times


def _copies():
    from minicaffe.blob import SyncedArray
    return dict(SyncedArray.copies)


def gpu_diagnostics(net, run, iterations=3):
    """(copies per iteration {"to_device", "to_host"}, the line naming the layers that ran their CPU code)."""
    from minicaffe.timing import cpu_summary, time_net
    before = _copies()
    for _ in range(iterations):
        run()
    after = _copies()
    per_iteration = {kind: (after[kind] - before[kind]) / iterations for kind in after}
    return per_iteration, cpu_summary(time_net(net, iterations=1))


def benchmark_training(name, args):
    import torch
    from minicaffe import mode
    device = torch_device(args)
    mode.set_mode_cpu()
    cpu_solver = training_solver(name)
    mode.set_device(args.device)
    mode.set_mode_gpu()
    gpu_solver = training_solver(name)
    torch.manual_seed(SEED)
    theirs = torch_training(name, gpu_solver.net, device)

    def ours():
        gpu_solver.step(1)

    first_torch = float(theirs())
    ours()
    first_gpu = gpu_solver.losses[-1]           # step() keeps the losses of its iterations
    mode.set_mode_cpu()
    cpu_solver.step(1)
    losses = {"minicaffe GPU": first_gpu, "minicaffe CPU": cpu_solver.losses[-1], "PyTorch CUDA": first_torch}
    check_losses(TRAINING[name][0], losses)
    cpu_times = timed(lambda: cpu_solver.step(1), lambda: None, args.cpu_iterations)
    mode.set_mode_gpu()
    sync_torch = torch.cuda.synchronize
    for _ in range(args.warmup):
        ours(), theirs()
    _synchronize_numba(), sync_torch()
    gpu_times, torch_times = [], []
    for _ in range(args.rounds):
        gpu_times += timed(ours, _synchronize_numba, args.iterations)
        torch_times += timed(theirs, sync_torch, args.iterations)
    copies, on_cpu = gpu_diagnostics(gpu_solver.net, ours)
    mode.set_mode_cpu()
    return row(name, TRAINING[name][0], TRAINING[name][2], "training iteration", gpu_times, torch_times, cpu_times,
               losses, copies, on_cpu)


def benchmark_forward(name, args):
    import torch
    from minicaffe import mode
    device = torch_device(args)
    with tempfile.TemporaryDirectory() as workdir:
        mode.set_mode_cpu()
        (cpu_net,), x = forward_nets(name, workdir, 1)
        mode.set_device(args.device)
        mode.set_mode_gpu()
        (gpu_net,), _ = forward_nets(name, workdir, 1)
    with _tensors_on(device):
        twin = _sibling("bench_inference").torch_twin(gpu_net)
    data = torch.from_numpy(x).to(device)
    last = len(gpu_net.layers) - 1

    def ours():
        gpu_net.forward_from_to(0, last)

    def theirs():
        with torch.inference_mode():
            return twin(data)

    ours()
    reference = gpu_net.blobs["prob"].data.copy()
    difference = float(np.abs(theirs()["prob"].float().cpu().numpy() - reference).max())
    mode.set_mode_cpu()
    cpu_net.forward_from_to(0, last)
    cpu_difference = float(np.abs(cpu_net.blobs["prob"].data - reference).max())
    scale = float(np.abs(reference).max()) or 1.0
    if max(difference, cpu_difference) > args.tolerance * scale:
        raise SystemExit(f"{FORWARD[name][0]}: prob differs by {difference:.3g} (PyTorch) and {cpu_difference:.3g} "
                         f"(minicaffe CPU) from minicaffe GPU's, over {args.tolerance} x {scale:.3g}")
    cpu_times = timed(lambda: cpu_net.forward_from_to(0, last), lambda: None, args.cpu_iterations)
    mode.set_mode_gpu()
    for _ in range(args.warmup):
        ours(), theirs()
    _synchronize_numba(), torch.cuda.synchronize()
    gpu_times, torch_times = [], []
    for _ in range(args.rounds):
        gpu_times += timed(ours, _synchronize_numba, args.iterations)
        torch_times += timed(theirs, torch.cuda.synchronize, args.iterations)
    copies, on_cpu = gpu_diagnostics(gpu_net, ours)
    mode.set_mode_cpu()
    return row(name, FORWARD[name][0], FORWARD[name][1], "forward", gpu_times, torch_times, cpu_times,
               {"prob difference, PyTorch": difference, "prob difference, minicaffe CPU": cpu_difference},
               copies, on_cpu)


def row(name, title, batch, what, gpu_times, torch_times, cpu_times, check, copies, on_cpu):
    milliseconds = lambda times: (statistics.median(times) * 1e3, min(times) * 1e3)  # noqa: E731
    return {"name": name, "title": title, "batch": batch, "what": what, "gpu": milliseconds(gpu_times),
            "torch": milliseconds(torch_times), "cpu": milliseconds(cpu_times), "check": check, "copies": copies,
            "on_cpu": on_cpu}


# ====================================================================== report

def verdicts(rows):
    """The targets, judged on the rows run: [(target, verdict)]."""
    judged = []
    for entry in rows:
        ratio = entry["gpu"][0] / entry["torch"][0]
        judged.append((f"{entry['title']}: within {WITHIN_TORCH:g}x of PyTorch CUDA",
                       f"{'met' if ratio <= WITHIN_TORCH else 'missed'} ({ratio:.2f}x)"))
        if entry["name"] == SPEEDUP_NET:
            speedup = entry["cpu"][0] / entry["gpu"][0]
            judged.append((f"{entry['title']}: at least {CPU_SPEEDUP:g}x the CPU path",
                           f"{'met' if speedup >= CPU_SPEEDUP else 'missed'} ({speedup:.1f}x)"))
    if SPEEDUP_NET not in [entry["name"] for entry in rows]:
        judged.append((f"{TRAINING[SPEEDUP_NET][0]}: at least {CPU_SPEEDUP:g}x the CPU path", "not run"))
    return judged


def report(args, command, rows, device_name, seconds):
    import numba
    import torch
    cell = lambda pair: f"{pair[0]:.2f} ({pair[1]:.2f})"  # noqa: E731
    lines = [
        "# GPU mode: training iterations and a ResNet-50 forward, minicaffe against PyTorch CUDA and its CPU path",
        "",
        f"Made by `.venv/bin/{command}` in {seconds / 60:.1f} minutes on {device_name} (device {args.device}), "
        f"{platform.processor() or platform.machine()} with {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, PyTorch "
        f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}).",
        "",
        f"Median milliseconds per iteration over {args.rounds} alternating rounds of {args.iterations} iterations "
        f"(minicaffe GPU, PyTorch CUDA), minimum in brackets; the CPU path: {args.cpu_iterations} iterations. "
        "Each iteration ends with a device synchronization. Training rows: Forward, Backward and the SGD update "
        "on a fixed batch; ResNet-50: one Forward (see the script's docstring).",
        "",
        "| net | batch | timed | minicaffe GPU | PyTorch CUDA | minicaffe CPU | GPU / PyTorch | CPU / GPU |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in rows:
        lines.append(f"| {entry['title']} | {entry['batch']} | {entry['what']} | {cell(entry['gpu'])} | "
                     f"{cell(entry['torch'])} | {cell(entry['cpu'])} | {entry['gpu'][0] / entry['torch'][0]:.2f}x | "
                     f"{entry['cpu'][0] / entry['gpu'][0]:.1f}x |")
    lines += ["", "Targets (issue 25):", ""] + [f"- {target}: {verdict}" for target, verdict in verdicts(rows)]
    lines += ["", "What ran where, per net (GPU mode):", ""]
    for entry in rows:
        copies = entry["copies"]
        checked = ", ".join(f"{key} {value:.6g}" for key, value in entry["check"].items())
        lines.append(f"- {entry['title']}: {entry['on_cpu']} Host<->device copies of blob memory per iteration: "
                     f"{copies['to_device']:g} to the device, {copies['to_host']:g} to the host. Checked: {checked}.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse(argv)
    reason = refusal()
    if reason:
        raise SystemExit(f"bench_gpu.py: {reason}")
    import minicaffe
    from numba import cuda
    started = time.perf_counter()
    minicaffe.set_num_threads(os.cpu_count() or 1)
    with cuda.gpus[args.device]:
        device_name = cuda.get_current_device().name
    device_name = device_name.decode() if isinstance(device_name, bytes) else device_name
    rows = []
    for name in args.nets:
        entry = benchmark_training(name, args) if name in TRAINING else benchmark_forward(name, args)
        rows.append(entry)
        print(f"{entry['title']:16s} minicaffe GPU {entry['gpu'][0]:9.2f} ms  PyTorch CUDA {entry['torch'][0]:9.2f} ms"
              f"  minicaffe CPU {entry['cpu'][0]:9.1f} ms", flush=True)
    command = " ".join(["python benchmarks/bench_gpu.py"] + list(argv if argv is not None else sys.argv[1:]))
    text = report(args, command, rows, device_name, time.perf_counter() - started)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        handle.write(text)
    print(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
