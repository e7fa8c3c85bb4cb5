"""The ``minicaffe`` command: thin click commands over the library.

Errors on bad input print one line (``minicaffe: error: ...``) and exit 1,
and warnings print one line each (``minicaffe: warning: ...``); ``--debug``
shows the traceback, and warnings in Python's format, instead. Every command
also takes Caffe's gflags spellings of its options (``-solver=S``, ``-stage a,b``, ``-noflag``;
see :mod:`minicaffe.cli_gflags`), so Caffe's scripts run with ``minicaffe`` in place
of ``caffe``.

GPU: ``--gpu ID`` runs a command in GPU mode on one device; ``--gpu all`` or a
list of ids is refused with a line naming ``mpiexec -n K minicaffe train ...
--gpu`` (one device per rank), except by ``train`` under MPI, where each rank
takes its own device. ``time --gpu`` marks the layers that ran their CPU code
(:mod:`minicaffe.timing`); ``device-query`` prints Caffe's device_query fields.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import click

from .cli_gflags import GflagsCommand
from .errors import MinicaffeError, MinicaffeWarning

_PHASES = click.Choice(["TRAIN", "TEST"], case_sensitive=False)


def _set_threads(ctx, param, value):
    if value is not None:
        from .threads import set_num_threads
        set_num_threads(value)


def _threads_option():
    return click.Option(["--threads"], type=click.IntRange(min=1), metavar="N", expose_value=False, is_eager=True,
                        callback=_set_threads,
                        help="Threads for the CPU work (default: the cores this process may use, "
                             "or MINICAFFE_NUM_THREADS).")


class _Command(GflagsCommand):
    """A command that takes Caffe's gflags spellings (GflagsCommand) and --threads N, as the group does."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(_threads_option())


@contextlib.contextmanager
def _one_line_warnings(ctx):
    """Show each Python warning a command raises as one line, `minicaffe: warning: ...` on stderr, without
    Python's file:line and source line (a MinicaffeWarning as its message, another with its category's
    name first); with --debug, in Python's own format."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if ctx.obj and ctx.obj.get("debug"):
            return original(message, category, filename, lineno, file, line)
        text = " ".join(str(message).split("\n"))
        if not issubclass(category, MinicaffeWarning):
            text = f"{category.__name__}: {text}"
        click.echo(f"minicaffe: warning: {text}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


class _Group(click.Group):
    """Turns MinicaffeError into one line on stderr unless --debug was given, and each warning
    into one line (`minicaffe: warning: ...`).

    Its commands take Caffe's gflags spellings, --threads N, and Caffe's command names (device_query).
    """

    command_class = _Command

    def get_command(self, ctx, cmd_name):
        return super().get_command(ctx, cmd_name) or super().get_command(ctx, cmd_name.replace("_", "-"))

    def invoke(self, ctx):
        with _one_line_warnings(ctx):
            return self._invoke_reporting_errors(ctx)

    def _invoke_reporting_errors(self, ctx):
        try:
            return super().invoke(ctx)
        except MinicaffeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"minicaffe: error: {exc}", err=True)
            ctx.exit(1)
        except click.BadParameter as exc:
            # A file argument that is a folder (click.Path(dir_okay=False)) is a bad file, not a usage
            # mistake: one line, as for a missing or unreadable one.
            if not isinstance(getattr(exc.param, "type", None), click.Path) or (ctx.obj and ctx.obj.get("debug")):
                raise
            click.echo(f"minicaffe: error: {exc.format_message()}", err=True)
            ctx.exit(1)
        except Exception as exc:
            # A Python layer's own exception keeps its type; minicaffe attached a short report.
            report = getattr(exc, "minicaffe_context", None)
            if report is None and isinstance(exc, OSError):
                # The file system failed where no reader or writer named it (they raise MinicaffeErrors).
                from .atomic import os_error_reason
                report = (f"{exc.filename}: " if exc.filename else "") + os_error_reason(exc)
            if report is None or (ctx.obj and ctx.obj.get("debug")):
                raise
            click.echo(f"minicaffe: error: {report}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback when something fails, and warnings in "
                                           "Python's format (with their source line).")
@click.option("--threads", type=click.IntRange(min=1), metavar="N", expose_value=False, is_eager=True,
              callback=_set_threads, help="Threads for the CPU work of every command (each command also takes "
                                          "--threads); default: the cores this process may use, or "
                                          "MINICAFFE_NUM_THREADS.")
@click.version_option(package_name="minicaffe")
@click.pass_context
def main(ctx, debug):
    """minicaffe: run BVLC Caffe's .prototxt nets and solvers.

    Nets and solvers written for Caffe (current, V1 or V0 format) are read as
    they are; `.caffemodel` weights load and save in Caffe's binary format.

    Caffe's command lines work with `minicaffe` in place of `caffe`: the
    commands take Caffe's gflags spellings (`train -solver=S -gpu 0`,
    `-stage a,b`, `-noflag`) and Caffe's command names (`device_query`).
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _parse_input_shapes(ctx, param, values):
    shapes = {}
    for value in values:
        name, sep, dims = value.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(d) for d in dims.split(",") if d.strip()]
        except ValueError:
            raise click.BadParameter(f"{value!r}: use NAME=D1,D2,... (e.g. data=1,3,224,224)") from None
    return shapes


def _split_stages(ctx, param, values):
    # Caffe's -stage is one comma-separated list; repeating --stage adds to it.
    return tuple(stage for value in values for stage in value.split(",") if stage)


_STAGES = click.option("--stage", "stages", multiple=True, callback=_split_stages, metavar="A[,B...]",
                       help="NetState stages, comma-separated (or repeat --stage).")


class _GpuIds(click.ParamType):
    """Caffe's -gpu: a device id, ids separated by ',' or 'all'. Only device-query, and train under an MPI
    launcher (one device per rank), take more than one: the others refuse them (_one_device)."""

    name = "gpu"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if text == "all":
            return text
        ids = [part.strip() for part in text.split(",")]
        if not all(part.isdigit() for part in ids):
            self.fail(f"{value!r}: give a device id, ids separated by ',' (0,1) or 'all'", param, ctx)
        return ",".join(ids)


def _several_devices(gpu) -> bool:
    return gpu is not None and (gpu == "all" or "," in gpu)


def _one_device(gpu, command):
    """Refuse --gpu all or a list where a process runs on one device: say how to use several GPUs.

    Caffe's train runs one solver per listed GPU in one process (NCCL); minicaffe runs one GPU per
    process and several through MPI, so a list here would silently use one device of several."""
    if _several_devices(gpu):
        raise MinicaffeError(
            f"{command} --gpu {gpu}: minicaffe runs one GPU per process; give one device id (--gpu 0), or "
            f"train on several GPUs with `mpiexec -n K minicaffe train ... --gpu {gpu}` (one device per rank)")


_GPUS = _GpuIds()


_END = click.option("--end", metavar="LAYER",
                    help="Build and run the net only up to and including LAYER (pycaffe's forward(end=...)); "
                         "the layers after it are left out unparsed, so a Caffe fork's layer or field there "
                         "does not stop the net (each one skipped is noted).")


def _hold_to_max_memory(ctx, param, value):
    # The command runs inside memory_budget.max_memory(value): nets are held to that limit, then it is undone.
    if value is None:
        return
    from .memory_budget import max_memory, parse_size
    try:
        parse_size(value)
    except MinicaffeError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1], ctx=ctx, param=param) from None
    ctx.with_resource(max_memory(value))


_MAX_MEMORY = click.option(
    "--max-memory", metavar="SIZE", expose_value=False, callback=_hold_to_max_memory,
    help="The memory the net may use: 8G, 512M, 1.5T or bytes (K, M, G, T: powers of 1024), or none (no "
         "check). Default: MINICAFFE_MAX_MEMORY, else the least of the address-space limit (RLIMIT_AS), the "
         "cgroup's memory limit and the available memory. A net whose estimate is over it is refused "
         "before anything is allocated.")


@main.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--phase", type=_PHASES, default="TRAIN", show_default=True,
              help="Phase the net is built for (layers' include/exclude rules).")
@click.option("--level", type=int, default=0, show_default=True, help="NetState level.")
@_STAGES
@_MAX_MEMORY
@click.option("--input-shape", "input_shapes", multiple=True, callback=_parse_input_shapes,
              metavar="NAME=D1,D2,...", help="Override an Input top's shape (repeat for several).")
@_END
@click.option("--run-python-layers", is_flag=True,
              help="Import the net's Python layers (python_param modules, .caffeinit types) and run their setup "
                   "and reshape to check their shapes. Without it no Python layer code runs: their tops show as "
                   "`?`. Give it only for a net whose code you trust.")
def check(net, phase, level, stages, input_shapes, end, run_python_layers):
    """Validate NET and print its graph with shapes.

    Prints each layer kept for the phase, level and stages, in run order: its
    bottoms -> tops with their shapes (including the Split layers Caffe
    inserts), parameter counts, whether it runs Backward, loss weights and
    shared parameters. No blob memory is allocated. A shape that needs data to
    be known (a data layer whose source is absent) shows as `?`, as does
    everything downstream. A net with no loss (no top with a nonzero
    loss_weight) ends with a warning in the TRAIN phase and a note in the TEST
    phase (a deploy net has none). Exits 1 with one line naming the file,
    layer or blob when the net is invalid. With --end LAYER, only the layers
    up to LAYER.

    A Python layer's module is code, and check is the command run on nets
    one was sent: it imports none unless given --run-python-layers, and shows
    such a layer's tops (and what follows from them) as `?` with a note.
    forward, train, test and time run them, as Caffe does.

    The `memory:` line estimates what running the net takes (blobs, diffs,
    parameters, the largest workspaces) and the limit it is held to (see
    --max-memory); when Forward alone needs more than the limit, check
    prints the description and exits 1 with one line naming the estimate,
    the limit and the largest blobs, as forward, train, test and time refuse
    such a net before allocating.
    """
    from .check import check_net, describe

    from .memory_budget import refuse_if_over

    checked = check_net(net, phase=phase.upper(), level=level, stages=stages, input_shapes=input_shapes, end=end,
                        run_python_layers=run_python_layers)
    click.echo(describe(checked, end=end))
    refuse_if_over(checked)     # a net that cannot run Forward within the limit: the one-line error, exit 1
    click.echo("OK")


def _preprocessing_options(with_mode=True):
    """Image preprocessing options (forward --input, detect; classify without --preprocess): minicaffe.feed."""
    options = [
        click.option("--raw-scale", type=float, metavar="S",
                     help="pycaffe: multiply the [0, 1] image by S (255 for nets trained on 0-255 pixels)."),
        click.option("--channel-swap", metavar="2,1,0",
                     help="Reorder the image's channels (2,1,0: pycaffe's RGB to Caffe's BGR), before the mean."),
        click.option("--mean", metavar="FILE|V1,V2,...",
                     help="Subtract a mean: a .binaryproto or .npy (K x H x W; reduced to per-channel means where "
                          "its H x W differ from the input's, and always for caffe-cpp, as classification.cpp "
                          "does) or comma-separated per-channel values (one value serves every channel)."),
        click.option("--input-scale", type=float, metavar="S",
                     help="Multiply by S last, after the mean (e.g. 0.007843 for MobileNet-SSD)."),
    ]
    if with_mode:
        options.insert(0, click.option(
            "--preprocess", type=click.Choice(["pycaffe", "caffe-cpp"]), default="pycaffe", show_default=True,
            help="How images become input: pycaffe's caffe.io.Transformer (RGB in [0, 1], then --raw-scale, "
                 "--channel-swap, --mean, --input-scale), or caffe-cpp, classification.cpp's (BGR 0-255 as "
                 "OpenCV reads it, resized on its 8-bit pixels, minus --mean, times --input-scale). Both resize "
                 "to the input's H x W."))

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def _split_blobs(ctx, param, values):
    return [name.strip() for value in values for name in value.split(",") if name.strip()] or None


@main.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), help="A .caffemodel to load (by layer name).")
@click.option("--phase", type=_PHASES, default="TEST", show_default=True, help="Phase to build the net in.")
@click.option("--iterations", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of Forward passes (data layers advance each time); not with --input, whose data "
                   "decides the passes.")
@click.option("--level", type=int, default=0, show_default=True, help="NetState level.")
@_STAGES
@_MAX_MEMORY
@click.option("--gpu", type=_GPUS, help="Run in GPU mode on this device id (one: see `minicaffe train` for "
                                         "several); layers without GPU kernels run on the CPU.")
@_END
@click.option("--input", "inputs", multiple=True, metavar="NAME=SOURCE",
              help="Feed input blob NAME (repeat for several; a net with one input takes a bare SOURCE): an "
                   "image file, a .npy array (one C x H x W item or N x C x H x W items; no pickle) or a folder "
                   "of images, read in batches with a progress bar.")
@click.option("--output", metavar="OUT.npz|OUT.h5|OUT.lmdb|FOLDER",
              help="Write the chosen blobs: one array per blob in OUT.npz or OUT.h5, or one BLOB.npy per blob "
                   "in FOLDER, rows in input order, with the input files' names as 'names'; or, as Caffe's "
                   "extract_features, a database of one float Datum per item keyed 0000000000, 0000000001, ... "
                   "(OUT.lmdb or OUT.leveldb; with several blobs, OUT_BLOB.lmdb each).")
@click.option("--blobs", multiple=True, callback=_split_blobs, metavar="A[,B...]",
              help="Blobs to report and write, comma-separated (default: the net's outputs), e.g. prob,fc7.")
@click.option("--batch-size", type=click.IntRange(min=1), metavar="N",
              help="Items per Forward with --input (default: the input blob's batch size; the blob is reshaped).")
@_preprocessing_options()
@click.pass_context
def forward(ctx, net, weights, phase, iterations, level, stages, gpu, end, inputs, output, blobs, batch_size,
            preprocess, raw_scale, channel_swap, mean, input_scale):
    """Run Forward passes of NET and print its outputs; with --input, on real data.

    Each output blob is printed per iteration: a scalar as its value, a larger
    blob as its shape and summary statistics; loss outputs in Caffe's form
    `NAME = V (* W = W*V loss)`. With several iterations the averages follow.
    The last line is the total weighted loss, averaged over iterations. With
    --end LAYER, only the layers up to LAYER run, and LAYER's tops are among
    the outputs.

    With --input, the inputs get images (preprocessed as --preprocess says,
    resized to the input's H x W), .npy arrays or folders of images instead of
    zeros, in batches; the chosen --blobs are printed once, over every item,
    and written with --output (as Caffe's extract_features; without --input,
    --output keeps the blobs of each iteration). A net with learnable
    parameters run without --weights gets a warning: its weights are its
    fillers'.
    """
    from .cli_infer import forward_with_inputs, warn
    from .run import run_forward

    _one_device(gpu, "forward")
    _select_device(gpu)
    if not inputs:
        image_options = {"--batch-size": batch_size, "--raw-scale": raw_scale, "--channel-swap": channel_swap,
                         "--mean": mean, "--input-scale": input_scale,
                         "--preprocess": None if preprocess == "pycaffe" else preprocess}
        given = [name for name, value in image_options.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to --input only")
        for line in run_forward(net, weights=weights, phase=phase.upper(), iterations=iterations,
                                level=level, stages=stages, end=end, blobs=blobs, output=output, warn=warn):
            click.echo(line)
        return
    if ctx.get_parameter_source("iterations") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--iterations does not apply with --input: the input's items decide the passes")
    forward_with_inputs(net, inputs, weights, phase.upper(), level, stages, end, blobs, batch_size, output,
                        dict(preprocess=preprocess, raw_scale=raw_scale, channel_swap=channel_swap, mean=mean,
                             input_scale=input_scale))


def _select_device(gpu):
    # one device id; train and test log theirs (train.select_mode)
    from .mode import set_device, set_mode_cpu, set_mode_gpu
    if gpu is None:
        set_mode_cpu()
        return
    context = click.get_current_context(silent=True)
    _one_device(gpu, context.info_name if context else "--gpu")     # detect (cli_infer) comes here directly
    set_device(int(gpu))
    set_mode_gpu()


# Caffe::DeviceQuery's lines (src/caffe/common.cpp), in its order: label, then how numba's device reads it.
_CAFFE_DEVICE_FIELDS = (
    ("Major revision number", lambda device: device.compute_capability[0]),
    ("Minor revision number", lambda device: device.compute_capability[1]),
    ("Name", lambda device: device.name.decode() if isinstance(device.name, bytes) else device.name),
    ("Total global memory", lambda device: _total_memory()),
    ("Total shared memory per block", lambda device: device.MAX_SHARED_MEMORY_PER_BLOCK),
    ("Total registers per block", lambda device: device.MAX_REGISTERS_PER_BLOCK),
    ("Warp size", lambda device: device.WARP_SIZE),
    ("Maximum memory pitch", lambda device: device.MAX_PITCH),
    ("Maximum threads per block", lambda device: device.MAX_THREADS_PER_BLOCK),
    ("Maximum dimension of block",
     lambda device: f"{device.MAX_BLOCK_DIM_X}, {device.MAX_BLOCK_DIM_Y}, {device.MAX_BLOCK_DIM_Z}"),
    ("Maximum dimension of grid",
     lambda device: f"{device.MAX_GRID_DIM_X}, {device.MAX_GRID_DIM_Y}, {device.MAX_GRID_DIM_Z}"),
    ("Clock rate", lambda device: device.CLOCK_RATE),
    ("Total constant memory", lambda device: device.TOTAL_CONSTANT_MEMORY),
    ("Texture alignment", lambda device: device.TEXTURE_ALIGNMENT),
    ("Concurrent copy and execution", lambda device: "Yes" if device.GPU_OVERLAP else "No"),
    ("Number of multiprocessors", lambda device: device.MULTIPROCESSOR_COUNT),
    ("Kernel execution timeout", lambda device: "Yes" if device.KERNEL_EXEC_TIMEOUT else "No"),
)


def _total_memory():
    # cudaDeviceProp.totalGlobalMem; numba's context reports it with the free memory
    from .gpu import require
    total = require().current_context().get_memory_info()[1]
    if not 0 < total < float("inf"):
        raise ValueError("not reported")     # the simulator's context says inf
    return int(total)


def device_query_lines(device_ids=None) -> list:
    """Caffe's device_query report of each device (every device numba sees when ``device_ids`` is None):
    `Device id:` then Caffe's fields in Caffe's order, labels padded to 31 columns as Caffe prints them.
    A field numba's simulator (or an old driver) does not report reads `unknown`."""
    from .gpu import require, simulated
    cuda = require()
    if not cuda.is_available():
        raise MinicaffeError("no CUDA device found: install the NVIDIA driver and 'minicaffe[gpu]', "
                             "or set NUMBA_ENABLE_CUDASIM=1 to use numba's simulator")
    count = len(cuda.gpus)
    ids = list(range(count)) if device_ids is None else list(device_ids)
    for device_id in ids:
        if not 0 <= device_id < count:
            raise MinicaffeError(f"device {device_id} does not exist: numba sees {count} CUDA device(s)")
    lines = ["(numba's CUDA simulator: NUMBA_ENABLE_CUDASIM=1)"] if simulated() else []
    for device_id in ids:
        with cuda.gpus[device_id]:
            device = cuda.get_current_device()
            lines.append(f"{'Device id:':<31}{device_id}")
            for label, read in _CAFFE_DEVICE_FIELDS:
                try:
                    value = read(device)
                except Exception:       # the simulator's device has only a compute capability
                    value = "unknown"
                lines.append(f"{label + ':':<31}{value}")
    return lines


@main.command(name="device-query")
@click.option("--gpu", type=_GPUS, help="Only these devices: an id, ids separated by ',' or 'all' (the default).")
def device_query(gpu):
    """Print the CUDA devices numba can use, as Caffe's device_query: for each, `Device id:` and
    Caffe's fields in Caffe's order (revision numbers, name, memory, limits, clock rate, ...,
    `Kernel execution timeout:`)."""
    device_ids = None if gpu in (None, "all") else [int(part) for part in gpu.split(",")]
    for line in device_query_lines(device_ids):
        click.echo(line)


@main.command(name="layers")
@click.option("--forks", "forks_only", is_flag=True,
              help="Only the types from Caffe forks and plugins, not BVLC Caffe's.")
def list_layers(forks_only):
    """List the layer types minicaffe knows, with a line on each.

    A type that is not BVLC Caffe's names where it comes from: the Caffe fork
    (SSD, py-faster-rcnn, SegNet, DeepLab, ...) or the plugin package that
    registered it (entry point group `minicaffe.layers`).
    """
    import sys

    from .plugins import plugin_of
    from .registry import known_types, layer_class

    names = known_types()
    width = max(len(name) for name in names)
    for name in names:
        cls = layer_class(name)
        plugin = plugin_of(name)
        origin = f"plugin {plugin}" if plugin else cls.fork
        if forks_only and not origin:
            continue
        # The module docstring opens with the layer's formula; the class's may add to it.
        doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip().splitlines()
        summary = doc[0] if doc else ""
        if summary.startswith(name + ":"):
            summary = summary[len(name) + 1:].strip()
        click.echo(f"{name:<{width}}  {summary}" + (f"  [from {origin}]" if origin else ""))


@main.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--kind", type=click.Choice(["auto", "net", "solver"]), default="auto", show_default=True,
              help="What SOURCE holds; auto tells a net from a solver by its fields.")
def upgrade(source, target, kind):
    """Upgrade a legacy net or solver SOURCE to the current format in TARGET.

    Text nets (V0, V1 `layers {...}`, net-level `input:` fields) and solvers
    (`solver_type:`) are written back as prototxt, as Caffe's
    upgrade_net_proto_text and upgrade_solver_proto_text do; a binary
    `.caffemodel` is written back as a binary caffemodel
    (upgrade_net_proto_binary). TARGET is written atomically.
    """
    from .convert import upgrade_file

    applied, detected = upgrade_file(source, target, kind)
    if applied:
        click.echo(f"upgraded {detected} {source} -> {target}: " + "; ".join(applied))
    else:
        click.echo(f"{source} is already in the current {detected} format; copied to {target}")


@main.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--layer", "layers", multiple=True, metavar="NAME", help="Check only this layer (repeat for several).")
@click.option("--weights", type=click.Path(dir_okay=False), help="A .caffemodel to load (by layer name).")
@click.option("--phase", type=_PHASES, default="TRAIN", show_default=True, help="Phase to build the net in.")
@click.option("--level", type=int, default=0, show_default=True, help="NetState level.")
@_STAGES
@click.option("--stepsize", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="Finite-difference step.")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True,
              help="Largest error that passes: |analytic - numeric| / max(|analytic|, |numeric|, 1).")
@click.option("--seed", type=int, default=1701, show_default=True, help="Seed of fillers, inputs and top weights.")
@click.pass_context
def gradcheck(ctx, net, layers, weights, phase, level, stages, stepsize, threshold, seed):
    """Check the gradients of NET's layers (Python layers included) by finite differences.

    The net runs in float64 with seeded random inputs. For each layer (or each
    --layer), every bottom that takes a gradient and every parameter that
    learns is compared with central differences; one line each gives the
    largest error and pass/FAIL. Exits 1 if any check fails.
    """
    from .gradcheck import gradcheck_net, report_lines

    results = gradcheck_net(net, layers=layers, weights=weights, phase=phase.upper(), level=level,
                            stages=stages, stepsize=stepsize, threshold=threshold, seed=seed)
    for line in report_lines(results, threshold):
        click.echo(line)
    if not all(result.passed for result in results):
        ctx.exit(1)


_EFFECTS = click.Choice(["stop", "snapshot", "none"])


def _named_once(argument, option, what, usage):
    """The file a command works on: its argument or Caffe's flag for it, exactly one of the two."""
    if argument and option:
        raise click.UsageError(f"give the {what} once, {usage}; not both")
    if not (argument or option):
        raise click.UsageError(f"give the {what}: {usage}")
    return argument or option


@main.command(name="train")
@click.argument("solver_file", required=False, type=click.Path(dir_okay=False))
@click.option("--solver", "solver_option", type=click.Path(dir_okay=False), help="The solver .prototxt.")
@click.option("--weights", help="Pretrained .caffemodel(s), comma-separated, copied by layer name (fine-tuning).")
@click.option("--snapshot", type=click.Path(dir_okay=False), help="A .solverstate to resume from.")
@click.option("--gpu", type=_GPUS, help="GPU id to train on; CPU when absent. Under `mpiexec -n K` (or with "
                                         "--ranks K), 'all' or ids 0,1,...: rank r on a machine takes device r, or "
                                         "the (r mod count)-th id of the list.")
@click.option("--level", type=int, default=0, show_default=True, help="Train net state level.")
@_STAGES
@_MAX_MEMORY
@click.option("--sigint-effect", type=_EFFECTS, default="stop", show_default=True, help="What Ctrl-C does.")
@click.option("--sighup-effect", type=_EFFECTS, default="snapshot", show_default=True, help="What SIGHUP does.")
@click.option("--no-nan-check", is_flag=True, help="Keep training through NaN/Inf (Caffe's behaviour); "
                                                  "numpy's overflow warnings then show.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), metavar="OUT.png",
              help="Draw the loss curves (as `minicaffe plot`) in OUT.png, redrawn as training goes "
                   "(at display and test intervals, at most once a second) and at the end; needs matplotlib.")
@click.option("--ranks", type=click.IntRange(min=1), metavar="K",
              help="Data-parallel training with K processes on this machine: runs this command under "
                   "`mpiexec -n K` (the distributed extra). The effective batch is K x the net's batch. "
                   "For several machines, run `mpiexec -f HOSTFILE -n K minicaffe train ...` instead.")
def train_command(solver_file, solver_option, weights, snapshot, gpu, level, stages, sigint_effect, sighup_effect,
                  no_nan_check, plot_path, ranks):
    """Train with a solver, as `caffe train`: SOLVER_FILE or --solver (one of the two).

    Caffe's command lines run as they are, e.g.
    `minicaffe train -solver examples/mnist/lenet_solver.prototxt -gpu 0`.
    Logs Caffe's lines with glog's prefix on stderr (parse_log.py reads them),
    with a progress line on a terminal. SIGINT stops (snapshotting if
    snapshot_after_train), SIGHUP snapshots and goes on, unless the
    --sig*-effect flags say otherwise. A NaN or Inf stops training with an
    error naming the first layer where it appeared (numpy's overflow warnings
    are held back meanwhile). A net with no loss gets a warning line at start;
    `solver_mode: GPU` with no usable GPU trains on the CPU with one warning
    line (--gpu with none is an error).

    Under `mpiexec -n K` (or with --ranks K) K processes train together as
    Caffe's multi-GPU training does: each runs its own batch of its share of
    the data, gradients are averaged over the ranks after each Backward, and
    rank 0 logs, tests and snapshots (README: "Training on several processes
    or machines"). A process trains on one GPU: --gpu all or a list of ids is
    refused in a single process, and under MPI the rank of local rank r (its
    rank among those on its machine) takes device r for 'all', the
    (r mod count)-th id of a list, or the one id given.
    """
    from .logs import setup_logging
    from .train import train

    path = _named_once(solver_file, solver_option, "solver", "as SOLVER_FILE or --solver SOLVER_FILE")
    from . import distributed
    if ranks is not None:
        distributed.launch_self(ranks, "--ranks")     # returns only when already running under K ranks
    if _several_devices(gpu) and distributed.world().size == 1:
        _one_device(gpu, "train")       # several devices need several processes: refused before anything runs
    if plot_path and distributed.rank() != 0:
        plot_path = None                                # data-parallel: rank 0 alone logs, so it alone draws
    setup_logging()
    from contextlib import nullcontext
    if plot_path:
        from .plot import LivePlot
    with LivePlot(plot_path) if plot_path else nullcontext() as live:
        train(path, weights=weights, snapshot=snapshot, gpu=gpu, level=level, stages=stages,
              sigint_effect=sigint_effect, sighup_effect=sighup_effect, nan_check=not no_nan_check,
              **({"setup": live.attach} if live else {}))


@main.command(name="test")
@click.argument("net", required=False, type=click.Path(dir_okay=False))
@click.option("--model", type=click.Path(dir_okay=False), help="The net .prototxt (or give it as NET).")
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="Trained .caffemodel(.h5).")
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True, help="Batches to score.")
@click.option("--phase", type=_PHASES, default="TEST", show_default=True,
              help="Accepted as `caffe test` accepts it; the net is scored in the TEST phase all the same.")
@click.option("--gpu", type=_GPUS, help="GPU id (one); CPU when absent.")
@click.option("--level", type=int, default=0, show_default=True, help="NetState level.")
@_STAGES
@_MAX_MEMORY
def test_command(net, model, weights, iterations, phase, gpu, level, stages):
    """Score a trained model, as `caffe test`: `Batch i, NAME = V` lines, then the averages.

    The net is NET or --model (one of the two), built in the TEST phase.
    """
    from .logs import setup_logging
    from .train import test

    model = _named_once(net, model, "net", "as NET or --model NET")
    _one_device(gpu, "test")
    if phase.upper() != "TEST":
        click.echo(f"minicaffe: warning: test scores the TEST phase, as caffe test does; --phase {phase} "
                   "is ignored", err=True)
    setup_logging()
    test(model, weights, iterations=iterations, gpu=gpu, level=level, stages=stages)


@main.command(name="time")
@click.argument("net", required=False, type=click.Path(dir_okay=False))
@click.option("--model", type=click.Path(dir_okay=False), help="The net .prototxt (or give it as NET).")
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed Forward-Backward passes (after one untimed pass).")
@click.option("--phase", type=_PHASES, default="TRAIN", show_default=True,
              help="Phase to build the net in; time a deploy net as it is used with --phase TEST.")
@click.option("--level", type=int, default=0, show_default=True, help="NetState level.")
@_STAGES
@_MAX_MEMORY
@click.option("--gpu", type=_GPUS, help="Time in GPU mode on this device id (one); each line of a layer "
                                         "without a GPU kernel ends with (CPU), and one line names them all.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Accepted as `caffe time` accepts it, and not loaded: weights do not change the timing.")
def time_command(net, model, iterations, phase, level, stages, gpu, weights):
    """Time a net's layers, as `caffe time`: average forward and backward per layer,
    then the average Forward pass, Backward pass, Forward-Backward, and the total.

    The net is NET or --model (one of the two); Caffe's
    `caffe time -model NET -iterations 10` runs as it is.
    """
    from .timing import run_time

    net = _named_once(net, model, "net", "as NET or --model NET")
    _one_device(gpu, "time")
    _select_device(gpu)
    for line in run_time(net, iterations=iterations, phase=phase.upper(), level=level, stages=stages):
        click.echo(line)


def _progress(iterable, length=None, label=None):
    return click.progressbar(iterable, length=length, label=label, file=sys.stderr)


_BACKENDS = click.Choice(["lmdb", "leveldb"], case_sensitive=False)


@main.command(name="convert-imageset")
@click.argument("root")
@click.argument("list_file", metavar="LIST", type=click.Path(dir_okay=False))
@click.argument("db", type=click.Path())
@click.option("--resize-height", type=click.IntRange(min=0), default=0, help="Resize images to this height (with --resize-width).")
@click.option("--resize-width", type=click.IntRange(min=0), default=0, help="Resize images to this width (with --resize-height).")
@click.option("--shuffle", is_flag=True, help="Shuffle the list before writing.")
@click.option("--gray", is_flag=True, help="Read images as grey (1 channel) instead of colour (BGR).")
@click.option("--encoded", is_flag=True, help="Store the encoded image files instead of raw pixels.")
@click.option("--encode-type", default="", help="Encoding for --encoded (jpg, png, ...); default: each file's own.")
@click.option("--check-size", is_flag=True, help="Fail unless every image has the same size.")
@click.option("--backend", type=_BACKENDS, default="lmdb", show_default=True, help="Database to write.")
def convert_imageset(root, list_file, db, resize_height, resize_width, shuffle, gray, encoded, encode_type,
                     check_size, backend):
    """Write the images in LIST (`path label` lines) to a new database DB (Caffe's convert_imageset).

    ROOT is prefixed to each path as written (give a trailing slash). Keys are
    `%08d_path`. Images that cannot be read are skipped, as Caffe skips them,
    with one warning line giving how many and the first; when none can be
    read (a wrong ROOT), no database is left and the command exits 1 with the
    count and the first path.
    """
    from .data.tools import convert_imageset as convert

    result = convert(root, list_file, db, resize_height=resize_height, resize_width=resize_width, shuffle=shuffle,
                     gray=gray, encoded=encoded, encode_type=encode_type, backend=backend.lower(),
                     check_size=check_size, progress=_progress)
    skipped = result["skipped"]
    if skipped:
        total = result["written"] + len(skipped)
        click.echo(f"minicaffe: warning: skipped {len(skipped)} of the {total} images, which could not be read; "
                   f"the first: {result['first_error']}", err=True)
    click.echo(f"wrote {result['written']} records to {db}")


@main.command(name="compute-mean")
@click.argument("db", type=click.Path())
@click.argument("mean_file", metavar="MEAN.binaryproto", type=click.Path(dir_okay=False))
@click.option("--backend", type=_BACKENDS, default="lmdb", show_default=True, help="Database to read.")
def compute_mean(db, mean_file, backend):
    """Write the mean image of database DB as a .binaryproto (Caffe's compute_image_mean).

    An empty database is an error (exit 1), and no mean file is written.
    """
    from .data.tools import compute_image_mean

    mean, per_channel = compute_image_mean(db, mean_file, backend=backend.lower(), progress=_progress)
    click.echo(f"wrote the {'x'.join(map(str, mean.shape))} mean image to {mean_file}")
    for channel, value in enumerate(per_channel):
        click.echo(f"mean_value channel [{channel}]: {value:g}")


@main.command(name="draw")
@click.argument("net", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--rankdir", type=click.Choice(["LR", "TB", "BT", "RL"], case_sensitive=False), default="LR",
              show_default=True, help="Layout direction: LR left to right, TB top to bottom, BT, RL.")
@click.option("--phase", type=click.Choice(["TRAIN", "TEST", "ALL"], case_sensitive=False), default="ALL",
              show_default=True,
              help="Draw only the layers kept in this phase by their include/exclude rules; ALL draws every layer.")
@click.option("--display-lrm", is_flag=True,
              help="Show the learning rate multipliers of Convolution, Deconvolution and InnerProduct layers.")
def draw(net, out, rankdir, phase, display_lrm):
    """Draw NET's layers and blobs as a graph in OUT (Caffe's python/draw_net.py).

    The format is OUT's extension: .png, .svg, .pdf, .jpg (laid out by
    Graphviz's `dot` program: apt-get install graphviz), or .dot/.gv, the DOT
    text, which needs no Graphviz. Needs pydot: pip install 'minicaffe[draw]'.
    """
    from .draw import draw_net_to_file
    from .proto.text import read_net

    phase = phase.upper()
    draw_net_to_file(read_net(net), out, rankdir=rankdir.upper(), phase=None if phase == "ALL" else phase,
                     display_lrm=display_lrm)
    click.echo(f"wrote {out}")


# New commands go above this line: one small decorated function each, calling the library.
from . import cli_infer  # noqa: E402,F401  (classify, detect: minicaffe/cli_infer.py)

from . import cli_plot  # noqa: E402,F401  (registers parse-log and plot)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
