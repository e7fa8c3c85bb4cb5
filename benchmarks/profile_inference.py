"""Where the forward time goes: minicaffe layer by layer against OpenCV dnn, on the nets where it misses its target.

Run from the project's root (OpenCV comes with the `bench` extra):

    .venv/bin/python benchmarks/profile_inference.py                 # benchmarks/results/inference_profile.md
    .venv/bin/python benchmarks/profile_inference.py --quick         # smoke run: RNet, ONet, PNet at batch 1, printed
    .venv/bin/python benchmarks/profile_inference.py --cases vgg16/16,resnet50/16 --threads 1

``benchmarks/bench_inference.py`` times whole forward passes; this script says
which layers make the difference where minicaffe is more than 1.5x OpenCV
dnn's time (issue 20's target). The nets, their random weights, the input and
OpenCV's loading are bench_inference.py's (imported from it, so both time the
same thing); the outputs of both engines are compared before anything is
timed, as there.

Per (net, batch), at ``--threads`` threads in both engines (minicaffe's
``minicaffe.threads.set_num_threads``, OpenCV's ``cv2.setNumThreads``): the
check run, ``--warmup`` untimed rounds, then up to ``--repeats`` rounds (fewer
where they would run past about ``--max-seconds``) of, in turn:

- one whole minicaffe ``net.forward()``, timed: minicaffe's total;
- one minicaffe pass layer by layer, each layer's ``forward_from_to`` timed on
  its own as ``minicaffe time`` does (:mod:`minicaffe.timing`): a BatchNorm /
  Scale / Bias chain that minicaffe folds into its convolution runs, and is
  charged, with it; each convolution is labelled with the path it took
  (``layer.conv_path``: ``1x1``, ``im2row``, ``direct``);
- one OpenCV forward (``setInput`` + ``forward``), timed: OpenCV's total, and
  its per-layer times from ``net.getPerfProfile()`` for that same pass.

A pass under 0.1 s follows an untimed one of the same engine, as in the
benchmark; a small net gets more rounds, until they have taken 0.3 s.
``--passes`` (default 3) goes over all the cases that many times, one pass
after the other, and each pass of a case notes how many cores other
processes kept busy meanwhile (as bench_inference.py does, from /proc/stat):
on a shared machine a burst of other work slows both engines unevenly and
makes the layer-by-layer pass disagree with the whole one. A case's figures
pool the rounds of its passes beside at most 0.1 core of other work (or the
quietest pass, where none was); each case lists every pass's medians and
load, and which were used. Figures are medians, per layer and per total.

Grouping. OpenCV names its layers after the prototxt's, so layers are matched
by name. With fusion on (OpenCV's default; ``--no-fusion`` turns it off)
OpenCV runs BatchNorm, Scale, ReLU, PReLU (and sometimes an Eltwise) inside the
layer before them and reports 0 for them: such a layer, in both engines, is
counted with the layer it was fused into (the latest producer of its bottoms,
followed up through other fused layers), so a convolution's row holds the same
work on both sides (minicaffe runs the activations as layers of their own: the
column "of which layers OpenCV fused" gives their share of minicaffe's time). Each unit is then put in
a group by its first layer: convolution by path, inner product, pooling, LRN,
elementwise/activation (those OpenCV did not fuse), concat/other (Concat,
Softmax, Dropout, minicaffe's Split layers, which OpenCV does not have...).
"outside the layers" is an engine's total less the sum of its layer times:
for minicaffe the Python of ``Net.forward`` between layers (each layer's own
Python, its reshape check and dispatch, is in that layer's time), for OpenCV
``setInput``, output copies and its scheduling. It is computed from medians
taken in different passes (the whole one and the layer-by-layer one), so on a
busy machine it is noisy and can be negative.

Under each table: the layers OpenCV fused, the 1x1 convolutions that went the
im2row path (strided ones), and the fixed cost per layer: minicaffe's median
time on the layers OpenCV runs in under 5 us (a Softmax on 2 values, an
InnerProduct with 2 outputs...), where nearly all of minicaffe's time is the
Python around the kernel. Then the 3 slowest minicaffe layers, each against
OpenCV's time for the same layer (with the layers fused into it).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _bench():
    """benchmarks/bench_inference.py as a module (its nets, weights, input, OpenCV loading and checks)."""
    if "bench_inference" in sys.modules:
        return sys.modules["bench_inference"]
    spec = importlib.util.spec_from_file_location("bench_inference", os.path.join(HERE, "bench_inference.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_inference"] = module
    spec.loader.exec_module(module)
    return module


B = _bench()

# The (net, batch) pairs that miss "within 1.5x of OpenCV dnn" at 2 threads in benchmarks/results/inference.md,
# less VGG-16 at batch 16 (about 4 s a pass: ask for it with --cases vgg16/16).
DEFAULT_CASES = ("vgg16/1,googlenet/1,resnet50/1,squeezenet/1,squeezenet/16,pnet/1,pnet/16,rnet/1,rnet/16,"
                 "onet/1,onet/16")
QUICK_CASES = "rnet/1,onet/1,pnet/1"

CONVOLUTION_GROUPS = {"1x1": "convolution 1x1", "im2row": "convolution im2row",
                      "direct": "convolution direct (depthwise/grouped)"}
GROUPS = ("convolution 1x1", "convolution im2row", "convolution direct (depthwise/grouped)", "convolution",
          "inner product", "pooling", "LRN", "elementwise/activation", "concat/other")
OUTSIDE = "outside the layers"
TINY_MS = 0.005         # a layer OpenCV runs faster than this does almost no work: minicaffe's time there is fixed cost
# Layer types OpenCV may run inside the layer before them (it then reports 0 ms for them).
FUSABLE = {"BatchNorm", "Scale", "Bias", "ReLU", "PReLU", "ReLU6", "ELU", "TanH", "Sigmoid", "Power", "AbsVal",
           "BNLL", "Eltwise", "Swish", "Mish"}
ELEMENTWISE = FUSABLE | {"Exp", "Log", "Threshold", "Clip", "GELU"}


def group_of(layer_type, conv_path=""):
    if layer_type in ("Convolution", "Deconvolution"):
        return CONVOLUTION_GROUPS.get(conv_path, "convolution")
    if layer_type == "InnerProduct":
        return "inner product"
    if layer_type == "Pooling":
        return "pooling"
    if layer_type == "LRN":
        return "LRN"
    if layer_type in ELEMENTWISE:
        return "elementwise/activation"
    return "concat/other"


# ====================================================================== timing

def set_threads(count):
    """Both engines at ``count`` threads; returns how minicaffe's were set."""
    import cv2
    try:
        from minicaffe import threads
        threads.set_num_threads(count)
        how = "minicaffe.threads.set_num_threads"
    except (ImportError, AttributeError):       # before the thread budget existed
        import numba
        from threadpoolctl import threadpool_limits
        numba.set_num_threads(count)
        threadpool_limits(limits=count, user_api="blas")
        how = "numba.set_num_threads and threadpoolctl"
    cv2.setNumThreads(count)
    return how


def forward_steps(net):
    """(first, last) layer indices as ``minicaffe time`` runs them: a folded chain is one step."""
    folds = net.active_folds()
    steps, i = [], 0
    while i < len(net.layers):
        last = folds[i].last if i in folds else i
        steps.append((i, last))
        i = last + 1
    return steps


def minicaffe_layer_pass(net, steps):
    """Milliseconds per layer of one Forward run step by step (0 for the layers folded into another)."""
    times = [0.0] * len(net.layers)
    clock = time.perf_counter
    for first, last in steps:
        start = clock()
        net.forward_from_to(first, last)
        times[first] = (clock() - start) * 1e3
    return times


def opencv_layer_times(dnn):
    """{layer name: ms} of OpenCV's last forward (``getPerfProfile``; 0 for a fused layer)."""
    import cv2
    _, ticks = dnn.getPerfProfile()
    scale = 1e3 / cv2.getTickFrequency()
    return {name: float(value) * scale for name, value in zip(dnn.getLayerNames(), np.asarray(ticks).ravel())}


def measure(engines, repeats, max_seconds, warmup, min_repeats=1, min_seconds=0.3):
    """Alternated rounds; returns (samples: both engines' totals and per-layer times, cores other processes used).

    Up to ``repeats`` rounds within ``max_seconds``; a small net's rounds go on until ``min_seconds`` have
    passed (at most 20 times ``repeats``), so that /proc/stat's 10 ms ticks can tell whether other processes
    ran meanwhile.
    """
    net, dnn = engines.net, engines.opencv
    steps = forward_steps(net)
    run_mc, run_cv = engines.runs["minicaffe"], engines.runs["OpenCV"]
    last = {}

    def timed(key, run):
        if last.get(key, float("inf")) < B.REWARM_SECONDS:
            run()
        start = time.perf_counter()
        result = run()
        last[key] = time.perf_counter() - start
        return last[key] * 1e3, result

    for _ in range(warmup):
        timed("minicaffe", run_mc)
        timed("layers", lambda: minicaffe_layer_pass(net, steps))
        timed("OpenCV", run_cv)
    samples = {"minicaffe": [], "OpenCV": [], "minicaffe_layers": [], "OpenCV_layers": []}
    before, started, spent = B.cpu_seconds(), time.perf_counter(), 0.0
    for index in range(20 * repeats):
        if index >= repeats and spent >= min_seconds:
            break
        if index >= min_repeats and spent * (index + 1) / index > max_seconds:
            break
        round_start = time.perf_counter()
        total, _ = timed("minicaffe", run_mc)
        samples["minicaffe"].append(total)
        _, layer_times = timed("layers", lambda: minicaffe_layer_pass(net, steps))
        samples["minicaffe_layers"].append(layer_times)
        total, _ = timed("OpenCV", run_cv)
        samples["OpenCV"].append(total)
        samples["OpenCV_layers"].append(opencv_layer_times(dnn))
        spent += time.perf_counter() - round_start
    after, wall = B.cpu_seconds(), time.perf_counter() - started
    others = None
    if before is not None and after is not None:
        others = max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / wall
    return samples, others


# ====================================================================== grouping

def conv_shape(layer):
    """A convolution's kernel, stride and group as text: ``1x1 stride 2``, ``3x3 group 32``."""
    try:
        text = "x".join(str(int(k)) for k in layer.kernel)
        strides = [int(s) for s in layer.stride]
        if set(strides) != {1}:
            text += " stride " + (str(strides[0]) if len(set(strides)) == 1 else "x".join(map(str, strides)))
        if getattr(layer, "group", 1) != 1:
            text += f" group {layer.group}"
        return text
    except (AttributeError, TypeError):
        return ""


def layer_rows(net, minicaffe_ms, opencv_ms):
    """One dict per minicaffe layer: name, type, path, group, minicaffe and OpenCV ms, and the unit it counts in.

    ``opencv_ms``: {name: ms} (a name missing there, e.g. minicaffe's Split layers, is None). ``owner``: the
    index of the layer whose unit it counts in (itself, or the layer OpenCV or minicaffe fused it into).
    """
    plan = net.plan.layers
    folds = net.active_folds()
    folded = {index: first for first, chain in folds.items() for index in range(first + 1, chain.last + 1)}
    rows, writer = [], {}          # writer: blob -> index of the last layer that wrote it
    for index, (planned, layer) in enumerate(zip(plan, net.layers)):
        theirs = opencv_ms.get(planned.name)
        owner, fused = index, ""
        producers = [writer[blob] for blob in planned.bottoms if blob in writer]
        if index in folded:
            owner, fused = rows[folded[index]]["owner"], "minicaffe and OpenCV"
        elif planned.type in FUSABLE and theirs == 0.0 and producers:
            owner, fused = rows[max(producers)]["owner"], "OpenCV"
        path = getattr(layer, "conv_path", "") or ""
        rows.append({"index": index, "name": planned.name, "type": planned.type, "path": path,
                     "shape": conv_shape(layer) if path else "",
                     "group": group_of(planned.type, path), "minicaffe": minicaffe_ms[index], "opencv": theirs,
                     "owner": owner, "fused": fused})
        for blob in planned.tops:
            writer[blob] = index
    for row in rows:
        row["unit_group"] = rows[row["owner"]]["group"]
    return rows


def summarize(rows, minicaffe_total, opencv_total):
    """{group: {"minicaffe": ms, "opencv": ms, "layers": units, "fused": ms}} in GROUPS order, then OUTSIDE.

    ``fused``: the part of minicaffe's ms spent in layers that OpenCV fused into the unit's first layer.
    OUTSIDE is each engine's total less its layers' times, so the groups sum to the totals.
    """
    groups = {}
    for group in GROUPS:
        members = [row for row in rows if row["unit_group"] == group]
        if members:
            groups[group] = {"minicaffe": sum(row["minicaffe"] for row in members),
                             "opencv": sum(row["opencv"] or 0.0 for row in members),
                             "fused": sum(row["minicaffe"] for row in members if row["fused"] == "OpenCV"),
                             "layers": sum(row["owner"] == row["index"] for row in members)}
    groups[OUTSIDE] = {"minicaffe": minicaffe_total - sum(g["minicaffe"] for g in groups.values()),
                       "opencv": opencv_total - sum(g["opencv"] for g in groups.values()), "layers": 0,
                       "fused": 0.0}
    return groups


def biggest_gap(groups):
    """(group, minicaffe ms, OpenCV ms) of the group where minicaffe loses the most milliseconds."""
    group = max(groups, key=lambda name: groups[name]["minicaffe"] - groups[name]["opencv"])
    return group, groups[group]["minicaffe"], groups[group]["opencv"]


def sample(name, batch, files, source_net, threads=2, repeats=15, max_seconds=10.0, warmup=1, fusion=True,
           tolerance=1e-3, seed=0, min_seconds=0.3):
    """One pass over a case: (minicaffe net, samples, cores other processes used, OpenCV's difference).

    ``files``: bench_inference.prepare's; ``source_net``: bench_inference.weights_net's (the weights).
    """
    set_threads(threads)
    engines = B.Engines(name, batch, files, seed, source_net, others=("OpenCV",))
    if "OpenCV" in engines.errors:
        raise RuntimeError(f"OpenCV cannot run {name}: {engines.errors['OpenCV']}")
    engines.opencv.enableFusion(fusion)
    started = time.perf_counter()
    engines.net.forward()
    differences = {}
    engines.check(tolerance, differences)
    if "OpenCV" in engines.errors:
        raise RuntimeError(f"{name} batch {batch}: {engines.errors['OpenCV']}")
    check_seconds = time.perf_counter() - started
    samples, others = measure(engines, repeats, max_seconds, warmup if check_seconds < max_seconds / 4 else 0,
                              min_seconds=min_seconds)
    return engines.net, samples, others, differences.get("OpenCV")


def quiet_passes(passes):
    """Indices of the passes timed beside at most BUSY_CORES of other work; else the quietest one."""
    quiet = [index for index, (_, others, _) in enumerate(passes) if others is not None and others <= B.BUSY_CORES]
    if quiet:
        return quiet
    return [min(range(len(passes)), key=lambda index: float("inf") if passes[index][1] is None else passes[index][1])]


def combine(name, batch, threads, fusion, net, passes):
    """The profile of one case from its passes [(samples, others, difference), ...]: medians over the rounds
    of its quiet passes (:func:`quiet_passes`); a dict with the totals, the layer rows and the groups (see the
    module's docstring)."""
    used = quiet_passes(passes)
    samples = {key: [value for index in used for value in passes[index][0][key]] for key in passes[0][0]}
    per_layer = [statistics.median(values) for values in zip(*samples["minicaffe_layers"])]
    names = samples["OpenCV_layers"][0].keys()
    theirs = {key: statistics.median(run[key] for run in samples["OpenCV_layers"]) for key in names}
    totals = {engine: statistics.median(samples[engine]) for engine in ("minicaffe", "OpenCV")}
    rows = layer_rows(net, per_layer, theirs)
    differences = [difference for _, _, difference in passes if difference is not None]
    return {"net": name, "batch": batch, "threads": threads, "runs": len(samples["minicaffe"]),
            "passes": len(passes), "used": used, "minicaffe": totals["minicaffe"], "opencv": totals["OpenCV"],
            "minicaffe_min": min(samples["minicaffe"]), "opencv_min": min(samples["OpenCV"]),
            "pass_medians": [(statistics.median(found["minicaffe"]), statistics.median(found["OpenCV"]))
                             for found, _, _ in passes],
            "rows": rows, "groups": summarize(rows, totals["minicaffe"], totals["OpenCV"]),
            "difference": max(differences) if differences else None,
            "others": [others for _, others, _ in passes], "fusion": fusion, "opencv_layers": len(theirs)}


def profile(name, batch, files, source_net, threads=2, repeats=15, max_seconds=10.0, warmup=1, fusion=True,
            tolerance=1e-3, seed=0, min_seconds=0.3):
    """Profile one net at one batch in one pass (see :func:`combine` for the result)."""
    net, samples, others, difference = sample(name, batch, files, source_net, threads, repeats, max_seconds,
                                              warmup, fusion, tolerance, seed, min_seconds)
    return combine(name, batch, threads, fusion, net, [(samples, others, difference)])


# ====================================================================== report

def ms(value):
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def signed(value):
    return ("+" if value >= 0 else "-") + ms(abs(value))


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}x" if theirs and theirs > 0.0005 and ours > 0 else "-"


def case_title(result):
    return f"{B.TITLES[result['net']]}, batch {result['batch']}"


def per_pass(result):
    """Each pass's medians, the cores other processes used meanwhile, and whether its rounds were used."""
    parts = [f"{ms(ours)} / {ms(theirs)} ms, other processes {B.cores(others)} cores"
             for (ours, theirs), others in zip(result["pass_medians"], result["others"])]
    if len(parts) == 1:
        return f"; {parts[0]}"
    return "; by pass: " + "; ".join(f"{index + 1}: {part}{'' if index in result['used'] else ' (not used)'}"
                                     for index, part in enumerate(parts))


def case_section(result):
    total, groups, rows = result["minicaffe"], result["groups"], result["rows"]
    gap_group, _, _ = biggest_gap(groups)
    lines = [f"### {case_title(result)}", "",
             f"minicaffe {ms(total)} ms, OpenCV dnn {ms(result['opencv'])} ms: {ratio(total, result['opencv'])} "
             f"(minima {ms(result['minicaffe_min'])} and {ms(result['opencv_min'])}; {result['runs']} rounds from "
             f"{len(result['used'])} of {result['passes']} pass{'es' if result['passes'] > 1 else ''}"
             f"{per_pass(result)}). "
             f"Largest gap: {gap_group}.", "",
             "| group | units | minicaffe (ms) | of which layers OpenCV fused (ms) | OpenCV (ms) | "
             "minicaffe / OpenCV | share of minicaffe | gap (ms) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for group, values in groups.items():
        ours, theirs = values["minicaffe"], values["opencv"]
        lines.append(f"| {group} | {values['layers'] or '-'} | {ms(ours)} | "
                     f"{ms(values['fused']) if values['fused'] else '-'} | {ms(theirs)} | {ratio(ours, theirs)} | "
                     f"{100 * ours / total:.0f}% | {signed(ours - theirs)} |")
    lines.append(f"| **total** | {len(rows)} layers | {ms(total)} | | {ms(result['opencv'])} | "
                 f"{ratio(total, result['opencv'])} | 100% | {signed(total - result['opencv'])} |")
    fused = [row for row in rows if row["fused"] == "OpenCV"]
    folded = [row for row in rows if row["fused"] == "minicaffe and OpenCV"]
    notes = []
    if fused:
        kinds = ", ".join(sorted({row["type"] for row in fused}))
        notes.append(f"OpenCV fused {len(fused)} layers ({kinds}) into the layer before them; minicaffe ran them "
                     f"as layers of their own, {ms(sum(row['minicaffe'] for row in fused))} ms in all, counted "
                     "in the group of the layer they were fused into.")
    if folded:
        notes.append(f"{len(folded)} BatchNorm/Scale/Bias layers were folded into their convolution by both "
                     "engines.")
    running = [row for row in rows if not row["fused"].startswith("minicaffe") and row["type"] != "Input"]
    opencv_run = [row for row in rows if row["opencv"]]
    notes.append(f"minicaffe ran {len(running)} layers, OpenCV {len(opencv_run)} of its {result['opencv_layers']}.")
    strided = [row for row in rows if row["path"] == "im2row" and row["shape"].startswith("1x1")]
    if strided:
        members = [other for row in strided for other in rows if other["owner"] == row["index"]]
        shapes = ", ".join(sorted({row["shape"] for row in strided}))
        notes.append(f"{len(strided)} 1x1 convolutions went the im2row path ({shapes}): minicaffe "
                     f"{ms(sum(other['minicaffe'] for other in members))} ms with the layers fused into them, "
                     f"OpenCV {ms(sum(other['opencv'] or 0.0 for other in members))} ms.")
    tiny = [row for row in rows if row["opencv"] and row["opencv"] < TINY_MS and not row["fused"]]
    if tiny:
        notes.append(f"Fixed cost per layer: on the {len(tiny)} layer{'s' if len(tiny) > 1 else ''} OpenCV ran in "
                     f"under {1e3 * TINY_MS:.0f} us "
                     f"({', '.join(sorted({row['type'] for row in tiny}))}), minicaffe took "
                     f"{1e3 * statistics.median(row['minicaffe'] for row in tiny):.0f} us each (median), OpenCV "
                     f"{1e3 * statistics.median(row['opencv'] for row in tiny):.1f} us.")
    lines += ["", " ".join(notes), "", "Slowest minicaffe layers:", "",
              "| layer | type | minicaffe (ms) | OpenCV, same layer (ms) | minicaffe / OpenCV |",
              "| --- | --- | ---: | ---: | ---: |"]
    for row in sorted(rows, key=lambda row: -row["minicaffe"])[:3]:
        kind = row["type"] + (f" {row['shape']} [{row['path']}]" if row["path"] else "")
        merged = [other["name"] for other in rows if other["owner"] == row["index"] and other is not row]
        theirs = "fused" if row["fused"] else ms(row["opencv"])
        if merged and row["opencv"] is not None:
            theirs += f" (with {', '.join(merged)})"
        lines.append(f"| {row['name']} | {kind} | {ms(row['minicaffe'])} | {theirs} | "
                     f"{ratio(row['minicaffe'], row['opencv']) if not row['fused'] else '-'} |")
    return lines


def summary_table(results):
    lines = ["| net | batch | minicaffe (ms) | OpenCV dnn (ms) | minicaffe / OpenCV | largest gap | "
             "its minicaffe (ms) | its OpenCV (ms) | 2nd largest gap | minicaffe / OpenCV (ms) |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: |"]
    for result in results:
        groups = result["groups"]
        ordered = sorted(groups, key=lambda name: -(groups[name]["minicaffe"] - groups[name]["opencv"]))
        first, second = ordered[0], ordered[1]
        lines.append(f"| {B.TITLES[result['net']]} | {result['batch']} | {ms(result['minicaffe'])} | "
                     f"{ms(result['opencv'])} | {ratio(result['minicaffe'], result['opencv'])} | {first} | "
                     f"{ms(groups[first]['minicaffe'])} | {ms(groups[first]['opencv'])} | {second} | "
                     f"{ms(groups[second]['minicaffe'])} / {ms(groups[second]['opencv'])} |")
    return lines


def environment(how, threads):
    import cv2
    import numba
    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"minicaffe {B.source_version()}; {model}, {os.cpu_count()} CPUs ({cpus} usable); {threads} threads in "
            f"both engines (minicaffe's set by {how}, OpenCV's by cv2.setNumThreads); Python "
            f"{platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, OpenCV "
            f"{cv2.__version__}")


def report(args, command, how, minutes, results, load):
    lines = ["# Inference profile: minicaffe's forward layer by layer against OpenCV dnn", "",
             f"Made by `.venv/bin/{command}` ({minutes:.1f} min) on {environment(how, args.threads)}; load "
             f"average {load[0]:.2f} before, {load[1]:.2f} after.", "",
             "The (net, batch) pairs that miss issue 20's target (forward within 1.5x of OpenCV dnn) in "
             "`benchmarks/results/inference.md`, with the same nets, random weights and input "
             "(`benchmarks/bench_inference.py`), outputs checked against each other first. Median milliseconds "
             f"over alternated rounds (up to {args.repeats}, within about {args.max_seconds:g} s per case, in each of "
             f"{args.passes} pass{'es' if args.passes > 1 else ''} over all the cases one after the other; the "
             f"rounds of the passes timed beside at most {B.BUSY_CORES:g} core of other processes' work are pooled, "
             "or the quietest pass's where none was) of a "
             "whole minicaffe forward, a minicaffe forward timed layer by layer (as `minicaffe time`), and an OpenCV "
             f"forward with its `getPerfProfile()` (fusion {'on' if args.fusion else 'off'}). A layer OpenCV fused "
             "into the one before it (0 ms there) counts with that layer in both engines; a unit is put in a group "
             "by its first layer (a convolution by the path minicaffe took). \"outside the layers\": the total "
             "less the layers' times (minicaffe: Net.forward's Python between layers; each layer's own Python "
             "is in its time). Gap: minicaffe less OpenCV. See the script's docstring for the method.", "",
             "## Summary", ""] + summary_table(results) + ["", "## Per net", ""]
    for result in results:
        lines += case_section(result) + [""]
    return "\n".join(lines)


# ====================================================================== main

def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help=f"net/batch pairs, comma-separated (nets: {','.join(B.ALL_NETS)})")
    parser.add_argument("--threads", type=int, default=2, help="threads in both engines")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds at most")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="time budget of one case's timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds after the check run")
    parser.add_argument("--passes", type=int, default=3,
                        help="passes over all the cases, one after the other; each case's figures pool its quiet "
                             "passes' rounds")
    parser.add_argument("--no-fusion", dest="fusion", action="store_false", help="OpenCV's enableFusion(False)")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_CASES} unless --cases, 2 rounds, no warm-up, 1 pass unless --passes, "
                             "printed only unless --output")
    parser.add_argument("--output", default=None,
                        help="Markdown file ('-': print only; default benchmarks/results/inference_profile.md)")
    args = parser.parse_args(argv)
    if args.quick:
        if args.cases == DEFAULT_CASES:
            args.cases = QUICK_CASES
        args.repeats, args.warmup = 2, 0
        if args.passes == parser.get_default("passes"):
            args.passes = 1
    if args.output is None:
        args.output = "-" if args.quick else os.path.join(HERE, "results", "inference_profile.md")
    args.case_list = []
    for item in args.cases.split(","):
        name, _, batch = item.strip().partition("/")
        if name not in B.ALL_NETS or not batch.isdigit():
            parser.error(f"bad case '{item}': want net/batch with net in {','.join(B.ALL_NETS)}")
        args.case_list.append((name, int(batch)))
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    how = set_threads(args.threads)
    names = list(dict.fromkeys(name for name, _ in args.case_list))
    passes = {case: [] for case in args.case_list}
    nets = {}
    with tempfile.TemporaryDirectory(prefix="profile_inference_") as workdir:
        files = B.prepare(workdir, names, sorted({batch for _, batch in args.case_list}), args.seed)
        for index in range(args.passes):
            for name in names:
                source_net = B.weights_net(name, args.seed)
                for batch in [batch for other, batch in args.case_list if other == name]:
                    net, samples, others, difference = sample(
                        name, batch, files, source_net, args.threads, args.repeats, args.max_seconds,
                        args.warmup, args.fusion, args.tolerance, args.seed)
                    nets[name, batch] = net
                    passes[name, batch].append((samples, others, difference))
                    print(f"pass {index + 1}, {name} batch {batch}: minicaffe "
                          f"{ms(statistics.median(samples['minicaffe']))} ms, OpenCV "
                          f"{ms(statistics.median(samples['OpenCV']))} ms ({len(samples['OpenCV'])} rounds, "
                          f"other processes {B.cores(others)} cores)", file=sys.stderr, flush=True)
                del source_net
    results = [combine(name, batch, args.threads, args.fusion, nets[name, batch], passes[name, batch])
               for name, batch in args.case_list]
    command = " ".join(["python benchmarks/profile_inference.py"] + argv)
    minutes = (time.perf_counter() - started) / 60
    text = report(args, command, how, minutes, results, (load_before, os.getloadavg()[0]))
    print(text)
    if args.output != "-":
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as handle:
            handle.write(text)
        print(f"wrote {os.path.relpath(args.output)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
