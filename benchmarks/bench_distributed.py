"""Data-parallel training over MPI: images per second at 1 and 2 ranks, the all-reduce's cost, and the
same figures extrapolated to 8 and 64 ranks with the ring all-reduce's cost model.

Run from the project's root (mpi4py and MPICH's wheel come with the `distributed` extra):

    .venv/bin/pip install -e '.[distributed]'
    .venv/bin/python benchmarks/bench_distributed.py          # writes benchmarks/results/distributed.md

What is timed, for LeNet (examples/lenet, batch 64) and CIFAR-10 quick (examples/cifar10, batch 100),
both with DummyData inputs (each rank draws its own random images):

- 1 rank: `minicaffe`'s ordinary single-process training (no MPI), on every core of the machine;
- 2 ranks: `mpiexec -n 2`, each rank on its share of the cores (minicaffe divides the thread budget),
  each running the prototxt's batch: twice the images per iteration.

SGD with momentum at ``base_lr`` 0 (see :func:`worker`); ``--warmup`` iterations (numba's compilation, the first broadcast) are not timed, then
``--iterations`` are; each configuration runs ``--rounds`` times, 1 and 2 ranks in turn, and the fastest
round is kept (the machine may be shared). For 2 ranks, *compute* is an iteration's time less the time rank 0 waited in
the gradient all-reduce; that wait includes waiting for the slower rank, so the all-reduce itself is
also timed alone, on the same number of bytes right after a barrier (``--repeats`` of them, median).

The extrapolation: an all-reduce of ``n`` bytes over ``K`` ranks with a ring costs
``t(K, n) = 2 (K - 1) alpha + 2 (K - 1) / K * n / beta`` (each rank sends and receives
``2 (K - 1) / K`` of the buffer in ``2 (K - 1)`` steps). ``alpha`` and ``beta`` are fitted to
all-reduces of 4 KiB to 64 MiB between the 2 ranks (``t(2, n) = 2 alpha + n / beta``, least squares of
the relative error). minicaffe reduces
after Backward (no overlap), so an iteration at K ranks takes ``compute + t(K, n)`` and moves ``K x batch``
images. Communication dominates when ``t(K, n)`` exceeds the compute time: below the batch
``t(K, n) / (compute per image)``. Ranks on one machine talk through shared memory; across machines the
network sets alpha and beta, so the tables are repeated for an assumed 10 Gb/s Ethernet
(alpha 25 us, beta 1.1 GB/s) and 100 Gb/s InfiniBand (alpha 2 us, beta 11 GB/s) beside the measured one.
"""

from __future__ import annotations

import argparse
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

NETS = {
    "LeNet": os.path.join(ROOT, "examples", "lenet", "lenet_train_test.prototxt"),
    "CIFAR-10 quick": os.path.join(ROOT, "examples", "cifar10", "cifar10_quick_train_test.prototxt"),
}
NETWORKS = [("10 Gb/s Ethernet (assumed)", 25e-6, 1.1e9), ("100 Gb/s InfiniBand (assumed)", 2e-6, 11e9)]
SCALES = (8, 64)


# ---------------------------------------------------------------- inside one rank

def worker(args):
    """Train ``args.net`` for warm-up + timed iterations in this process (one rank of mpiexec, or alone)."""
    from minicaffe.proto import caffe_pb2
    from minicaffe.solvers import Solver
    from minicaffe.threads import get_num_threads

    logging_off()
    # base_lr 0: the update runs in full but the weights stay where the fillers put them. With the examples'
    # constant labels, training drives CIFAR-10 quick's gradients into float32's subnormal range within 20
    # iterations, where each iteration became 25x slower (0.16 s to 4 s): a drift that would time the CPU's
    # subnormal arithmetic, not the data-parallel training.
    param = caffe_pb2.SolverParameter(net=NETS[args.net], base_lr=0.0, momentum=0.9, lr_policy="fixed",
                                      max_iter=args.warmup + args.iterations, display=0, random_seed=1)
    solver = Solver(param)
    solver.progress_bar = False
    world = solver.world
    solver.step(args.warmup)
    world.barrier("the benchmark's start")
    waited = getattr(world, "wait_seconds", 0.0)
    start = time.perf_counter()
    solver.step(args.iterations)
    elapsed = time.perf_counter() - start
    waited = getattr(world, "wait_seconds", 0.0) - waited
    batch = solver.net.blobs["data"].shape[0]
    count = sum(entry.blob.count for entry in solver.learnable)
    result = {"net": args.net, "ranks": world.size, "threads": get_num_threads(), "batch": batch,
              "parameters": count, "bytes": count * 4, "iteration_s": elapsed / args.iterations,
              "wait_s": waited / args.iterations, "images_per_s": world.size * batch * args.iterations / elapsed}
    if world.size > 1:
        result["allreduce_s"] = timed_allreduce(world, np.zeros(count, dtype=np.float32), args.repeats)
    if world.rank == 0:
        with open(args.json, "w") as handle:
            json.dump(result, handle)


def sweep(args):
    """All-reduce times of float32 buffers from 4 KiB to 64 MiB between the ranks (rank 0 writes them)."""
    from minicaffe import distributed
    world = distributed.world()
    times = {}
    for power in range(12, 27, 2):
        buffer = np.ones(2 ** power // 4, dtype=np.float32)
        times[2 ** power] = timed_allreduce(world, buffer, args.repeats)
    if world.rank == 0:
        with open(args.json, "w") as handle:
            json.dump({"size": world.size, "times": times}, handle)


def timed_allreduce(world, buffer, repeats):
    """Median seconds of one all-reduce of ``buffer`` (minicaffe.distributed's, as the solver calls it),
    each started right after a barrier so that no rank waits for another's compute."""
    times = []
    world.allreduce_sum([buffer], "a warm-up all-reduce")
    for _ in range(repeats):
        world.barrier("the benchmark's barrier")
        start = time.perf_counter()
        world.allreduce_sum([buffer], "the benchmark's all-reduce")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def logging_off():
    import logging
    logging.getLogger("minicaffe").setLevel(logging.WARNING)


# ---------------------------------------------------------------- the driver

def launch(ranks, arguments, timeout=900):
    from minicaffe.distributed import find_mpiexec
    command = [sys.executable, os.path.abspath(__file__), *arguments]
    if ranks > 1:
        command = [find_mpiexec(), "-n", str(ranks), *command]
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PMI_", "OMPI_"))}
    subprocess.run(command, check=True, timeout=timeout, env=environment)


def measure(args):
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.json")
        for round_ in range(args.rounds):
            for name in NETS:
                for ranks in (1, 2):
                    print(f"round {round_ + 1}: {name}, {ranks} rank(s)...", file=sys.stderr, flush=True)
                    launch(ranks, ["--worker", "--net", name, "--iterations", str(args.iterations),
                                   "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--json", out])
                    with open(out) as handle:
                        result = json.load(handle)
                    best = results.get((name, ranks))
                    if best is None or result["iteration_s"] < best["iteration_s"]:
                        results[name, ranks] = result
        print("all-reduce sweep...", file=sys.stderr, flush=True)
        launch(2, ["--sweep", "--repeats", str(args.repeats), "--json", out])
        with open(out) as handle:
            sweep_times = {int(size): value for size, value in json.load(handle)["times"].items()}
    return results, sweep_times


def fit(sweep_times):
    """(alpha, beta) of t(2, n) = 2 alpha + n / beta, least squares of the relative error over the sweep
    (plain least squares would let the largest buffers alone set both)."""
    sizes = np.array(sorted(sweep_times), dtype=np.float64)
    times = np.array([sweep_times[int(size)] for size in sizes])
    slope, intercept = np.polyfit(sizes, times, 1, w=1.0 / times)
    return max(intercept / 2, 0.0), 1.0 / slope


def ring(ranks, size, alpha, beta):
    return 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * size / beta


def report(args, results, sweep_times, seconds, loads):
    alpha, beta = fit(sweep_times)
    lines = ["# Data-parallel training over MPI: images per second, all-reduce cost, extrapolation", ""]
    import numba

    from minicaffe.distributed import find_mpiexec
    mpi = subprocess.run([find_mpiexec(), "--version"], capture_output=True, text=True).stdout
    mpi_version = next((line.split(":", 1)[1].strip() for line in mpi.splitlines() if "Version" in line), "?")
    lines.append(
        f"Made by `.venv/bin/python benchmarks/bench_distributed.py --iterations {args.iterations} --warmup "
        f"{args.warmup} --repeats {args.repeats} --rounds {args.rounds}` ({seconds / 60:.1f} min) on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, numba {numba.__version__}, MPICH {mpi_version} (mpi4py), ranks on one machine "
        f"(shared memory); load average {loads[0]:.2f} before, {loads[1]:.2f} after. Nets from examples/ with "
        "DummyData inputs; SGD with momentum at base_lr 0 (the weights stay at their fillers' values: with the "
        "examples' constant labels, CIFAR-10 quick's gradients turn subnormal within 20 iterations, which slows "
        "float32 arithmetic 25x); float32. Fastest of the rounds, "
        f"{args.iterations} timed iterations each.")
    lines += ["", "## Measured: 1 rank (no MPI) and 2 ranks (`mpiexec -n 2`)", "",
              "| net | ranks | threads per rank | batch per rank | images per iteration | iteration (ms) "
              "| images/s | speed-up | all-reduce alone (ms) | wait in all-reduce (ms) | gradient bytes |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in NETS:
        base = results[name, 1]["images_per_s"]
        for ranks in (1, 2):
            r = results[name, ranks]
            alone = f"{r['allreduce_s'] * 1e3:.2f}" if "allreduce_s" in r else "-"
            wait = f"{r['wait_s'] * 1e3:.2f}" if ranks > 1 else "-"
            lines.append(f"| {name} | {ranks} | {r['threads']} | {r['batch']} | {ranks * r['batch']} | "
                         f"{r['iteration_s'] * 1e3:.1f} | {r['images_per_s']:.0f} | {r['images_per_s'] / base:.2f}x | "
                         f"{alone} | {wait} | {r['bytes']:,} |")
    lines += ["", "`all-reduce alone`: the median of the gradient buffer's all-reduce started right after a barrier. "
              "`wait in all-reduce`: what rank 0 spent in it while training, including waiting for the other "
              "rank to finish its Backward.", "",
              "## The all-reduce between 2 ranks", "",
              "| bytes | time (ms) | bus bandwidth (GB/s) |", "| ---: | ---: | ---: |"]
    for size in sorted(sweep_times):
        lines.append(f"| {size:,} | {sweep_times[size] * 1e3:.3f} | {size / sweep_times[size] / 1e9:.2f} |")
    lines += ["", f"Fitted to `t(2, n) = 2 alpha + n / beta` (least squares of the relative error): alpha = "
              f"{alpha * 1e6:.1f} us, beta = {beta / 1e9:.2f} GB/s (shared memory on this machine).", "",
              "## On paper: 8 and 64 ranks (ring all-reduce model)", "",
              "Each rank computes as it did in the 2-rank run (its `compute` = iteration less the wait, "
              "one rank per core share as measured); the gradients are reduced after Backward, so an iteration "
              "takes `compute + t(K, n)` with `t(K, n) = 2 (K - 1) alpha + 2 (K - 1) / K * n / beta`. "
              "`efficiency`: images/s over K times one rank's images/s without communication. `batch below "
              "which communication dominates`: per-rank batch under which `t(K, n)` exceeds the compute time "
              "(compute taken as proportional to the batch).", "",
              "| net | interconnect | K | all-reduce (ms) | compute (ms) | iteration (ms) | images/s | efficiency "
              "| batch below which communication dominates |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    scenarios = [("measured shared memory", alpha, beta)] + NETWORKS
    for name in NETS:
        r = results[name, 2]
        compute = max(r["iteration_s"] - r["wait_s"], 1e-9)      # one rank's iteration without communication
        per_image = compute / r["batch"]
        for label, a, b in scenarios:
            for ranks in SCALES:
                t = ring(ranks, r["bytes"], a, b)
                iteration = compute + t
                rate = ranks * r["batch"] / iteration
                ideal = ranks * r["batch"] / compute
                lines.append(f"| {name} | {label} | {ranks} | {t * 1e3:.2f} | {compute * 1e3:.1f} | "
                             f"{iteration * 1e3:.1f} | {rate:,.0f} | {rate / ideal:.0%} | {t / per_image:.0f} |")
    lines += ["", "The per-rank batch is what each rank's prototxt says; the effective batch is K times it "
              "(README: \"Training on several processes or machines\" on the learning rate).", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--repeats", type=int, default=30, help="all-reduces timed per size")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each configuration (the fastest is kept)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "distributed.md"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--net", choices=sorted(NETS), help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.sweep:
        return sweep(args)
    started, load = time.perf_counter(), os.getloadavg()[0]
    results, sweep_times = measure(args)
    text = report(args, results, sweep_times, time.perf_counter() - started, (load, os.getloadavg()[0]))
    with open(args.out, "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
