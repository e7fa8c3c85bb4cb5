"""Forward time at batch 1, with random weights, of every deploy net in the real-world corpus.

Run by hand from the project's root (it reads ../shared/corpus; the tests never do):

    .venv/bin/python benchmarks/bench_corpus_forward.py                # writes benchmarks/results/corpus_forward.md
    .venv/bin/python benchmarks/bench_corpus_forward.py --filter ResNet --repeats 3 --output -

A deploy net is one whose only source layers are Input layers, written as
such or as the net-level ``input``/``input_shape``/``input_dim`` fields
(upgraded on load). Each is built in TEST phase with every Input top's batch
set to 1, its parameters filled with random values (He-scaled Gaussian
weights, small Gaussian biases, BatchNorm statistics mean 0 / variance 1,
Scale 1) and its inputs with standard normal noise. The nets are timed in
``--rounds`` rounds, each building every net anew and running one untimed
Forward pass (it compiles the numba kernels) and ``--repeats`` timed ones, so
that a burst of load on the machine does not fall on one net only; the table
gives the best and the median of all timed passes. "parameters" counts every
parameter blob, as ``minicaffe check`` does (BatchNorm statistics included).

``--numba-threads default,1`` times each net with numba's own thread count
and again with its parallel kernels on one thread (``numba.set_num_threads``),
as columns side by side. The file's header names numba's threading layer and
any BLAS/OpenMP thread variables set: together they change these times a lot
on a small machine, where numba's OpenMP threads and BLAS's threads compete.
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

from minicaffe.errors import MinicaffeError  # noqa: E402
from minicaffe.graph import TEST, plan_net  # noqa: E402
from minicaffe.mode import set_mode_cpu  # noqa: E402
from minicaffe.net import Net  # noqa: E402
from minicaffe.proto.text import read_net  # noqa: E402

DEFAULT_CORPUS = os.path.join(os.path.dirname(ROOT), "shared", "corpus")


def deploy_nets(corpus, name_filter=""):
    """(relative path, NetParameter) of each net whose TEST-phase sources are all Input layers."""
    found = []
    for folder, _, files in os.walk(corpus):
        for file_name in files:
            if not file_name.endswith(".prototxt") or "solver" in file_name:
                continue
            path = os.path.join(folder, file_name)
            relative = os.path.relpath(path, corpus)
            if name_filter and name_filter not in relative:
                continue
            try:
                net_param = read_net(path)
                plan = plan_net(net_param, phase=TEST)
            except MinicaffeError:        # e.g. a TRAIN-only net: not a deploy net
                continue
            sources = [layer for layer in plan.layers if not layer.bottoms]
            if sources and all(layer.type == "Input" for layer in sources):
                found.append((relative, net_param))
    return sorted(found, key=lambda item: item[0])


def input_shapes_at_batch_1(net_param):
    shapes = {}
    for layer in net_param.layer:
        if layer.type == "Input":
            params = layer.input_param.shape
            for index, top in enumerate(layer.top):
                dims = list(params[min(index, len(params) - 1)].dim)
                shapes[top] = [1] + dims[1:]
    return shapes


def fill_random(net, rng):
    """Random parameters that keep activations in range: He-scaled weights, BatchNorm as identity."""
    for layer in net.layers:
        for index, blob in enumerate(layer.blobs):
            data = blob.data
            if layer.type == "BatchNorm":
                data[...] = (0.0, 1.0, 1.0)[index] if index < 3 else 0.0
            elif layer.type == "Scale" and index == 0:
                data[...] = 1.0
            elif data.ndim >= 2:
                fan_in = max(1, data.size // data.shape[0])
                data[...] = rng.standard_normal(data.shape) * np.sqrt(2.0 / fan_in)
            else:
                data[...] = rng.standard_normal(data.shape) * 0.01


def time_forward(net, repeats):
    """Milliseconds of ``repeats`` Forward passes, after an untimed one (it compiles the kernels)."""
    net.forward()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net.forward()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def build(net_param, rng):
    """The net at batch 1 with random weights and inputs, and its facts for the table."""
    shapes = input_shapes_at_batch_1(net_param)
    net = Net(net_param, TEST, input_shapes=shapes)
    fill_random(net, rng)
    for name in net.inputs:
        blob = net.blobs[name]
        blob.data[...] = rng.standard_normal(blob.data.shape)
    parameters = sum(blob.count for layer in net.layers for blob in layer.blobs)
    inputs = ", ".join(f"{name} {'x'.join(str(d) for d in net.blobs[name].shape)}" for name in net.inputs)
    return net, dict(inputs=inputs, parameters=parameters)


def table(rows, settings):
    head = "| net | input (batch 1) | parameters |"
    rule = "| --- | --- | ---: |"
    for threads in settings:
        head += f" {threads} numba thread{'s' if threads != 1 else ''}: best (ms) | median (ms) |"
        rule += " ---: | ---: |"
    lines = [head, rule]
    for row in rows:
        if "error" in row:
            lines.append(f"| `{row['net']}` | | | error: {row['error']} |" + " |" * (2 * len(settings) - 1))
            continue
        line = f"| `{row['net']}` | {row['inputs']} | {row['parameters']:,} |"
        for threads in settings:
            times = row["times"][threads]
            line += f" {min(times):.1f} | {statistics.median(times):.1f} |"
        lines.append(line)
    return "\n".join(lines)


def threading_note():
    import numba
    try:
        layer = numba.threading_layer()
    except ValueError:                  # no parallel kernel has run
        layer = "not started"
    blas = ", ".join(f"{name}={os.environ[name]}" for name in
                     ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
                      "NUMBA_THREADING_LAYER") if os.environ.get(name)) or "no thread variables set"
    return f"numba threading layer {layer} (NUMBA_NUM_THREADS {numba.config.NUMBA_NUM_THREADS}); {blas}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help="the corpus folder (default ../shared/corpus)")
    parser.add_argument("--filter", default="", help="only nets whose path contains this")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all the nets")
    parser.add_argument("--repeats", type=int, default=3, help="timed Forward passes per net and round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--numba-threads", default="default",
                        help="comma-separated numba thread counts to time each net with, e.g. 'default,1' "
                             "(default: numba's own, NUMBA_NUM_THREADS)")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                         "corpus_forward.md"),
                        help="Markdown file to write ('-': print only)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.corpus):
        parser.error(f"no corpus at {args.corpus}")
    import numba
    try:
        settings = [numba.config.NUMBA_NUM_THREADS if item.strip() == "default" else int(item)
                    for item in args.numba_threads.split(",")]
    except ValueError:
        parser.error(f"--numba-threads {args.numba_threads!r}: use numbers or 'default', comma-separated")
    set_mode_cpu()
    rng = np.random.default_rng(args.seed)
    nets = deploy_nets(args.corpus, args.filter)
    rows = [dict(net=relative, times={threads: [] for threads in settings}) for relative, _ in nets]
    for round_index in range(args.rounds):
        for row, (relative, net_param) in zip(rows, nets):
            if "error" in row:
                continue
            try:
                net, facts = build(net_param, rng)
                row.update(facts)
                for threads in settings:
                    numba.set_num_threads(threads)
                    times = time_forward(net, args.repeats)
                    row["times"][threads] += times
                    print(f"round {round_index + 1}, {threads} numba threads: {relative}: {min(times):.1f} ms",
                          file=sys.stderr, flush=True)
            except Exception as exc:      # a net that fails is reported in the table, not fatal
                row["error"] = f"{type(exc).__name__}: {exc}".replace("|", "/")[:200]
            finally:
                numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    command = "python benchmarks/bench_corpus_forward.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "# Corpus deploy nets: Forward at batch 1, random weights, CPU",
        "",
        f"Made by `.venv/bin/{command.strip()}` on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__}; {threading_note()}. "
        f"Best and median of {args.rounds * args.repeats} Forward passes ({args.rounds} rounds over the "
        f"nets, {args.repeats} passes each after an untimed one).",
        "",
        table(rows, settings),
        "",
    ])
    if args.output == "-":
        print(text)
    else:
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as handle:
            handle.write(text)
        print(text)
        print(f"wrote {os.path.relpath(args.output)}", file=sys.stderr)
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
