"""Memory before allocation: what a net needs, what the process may use, and a refusal when it does not fit.

A net is set up once without memory (shape inference, :func:`minicaffe.memory.shapes_only`,
as ``minicaffe check`` does), its memory is estimated from those shapes
(:func:`estimate_memory`), and only then built for real, so a net that needs
3.7 TB stops with a :class:`~minicaffe.errors.MemoryLimitError` naming the
estimate, the limit, where the limit comes from and the largest blobs, instead
of numpy's ``MemoryError`` halfway through (or the kernel's OOM killer).

The estimate, per layer and in total, counts what minicaffe really allocates
(blob memory is lazy: see :mod:`minicaffe.blob`):

- blob data: every top's data when the net runs Forward (a view, as Split,
  Flatten or Reshape make, counts once, with the blob it shows);
- blob diffs: only where Backward uses them (the tops of layers that run
  Backward, the bottoms they propagate to), and the loss tops' (their loss
  weight is stored there when the net is built);
- parameters: data once per distinct blob (shared ones once), diffs with Backward;
- workspaces: the buffers layers keep between passes (im2row patch matrices and
  weight-gradient accumulators of the convolution paths, pooling argmax masks,
  LRN scales, softmax probabilities, dropout masks, batch-norm's normalised input,
  data layers' prefetched batches...) and, once, the largest temporary any layer
  makes during a pass (by default one array the size of the layer's largest blob);
- fillers: they draw in place, so only a sparse gaussian's mask chunk;
- training (:func:`check_training_memory`): the solver's history (one or two
  arrays per parameter), its update's temporaries, and the test nets' Forward.

The limit (:func:`memory_limit`) is the smallest of the address-space limit
``RLIMIT_AS`` (and ``RLIMIT_DATA``) less the address space in use, the memory
cgroup's limit less its usage (v2 ``memory.max``, v1 ``memory.limit_in_bytes``,
of the process's own cgroup and its parents), and the memory available
(``MemAvailable`` + ``SwapFree`` in ``/proc/meminfo``, else the physical
memory). ``--max-memory SIZE`` on the commands, the variable
``MINICAFFE_MAX_MEMORY`` or ``Net(..., max_memory=SIZE)`` replace it (``8G``,
``512M``, ``1.5T``, a number of bytes; ``none`` turns the check off).

The estimate is an upper bound on the peak of what numpy allocates (as
tracemalloc sees it) while the net is built and run: 0-12% above it on the
test nets of ``tests/test_memory_budget.py`` and the classic nets of
``examples/classic`` (GoogLeNet, ResNet-50, MobileNet, SqueezeNet, CaffeNet,
FCN-32s at most 18%). Python objects are counted at :data:`LAYER_OVERHEAD` per
layer; BLAS's and numba's own buffers, the interpreter and the imported modules
are not counted (the limit found already has them in use). Device memory in GPU
mode is not estimated.

A net built inside a layer (RNN, LSTM's unrolled net) is part of that layer's
estimate. Python layers are not run for the estimate (their code runs once,
when the net is built): the layers from a Python layer on are not counted.
"""

from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import MemoryLimitError, MinicaffeError
from .memory import allocation_allowed, shapes_only

try:
    import resource
except ImportError:     # not on Windows: no rlimits there
    resource = None

ENV_VAR = "MINICAFFE_MAX_MEMORY"
# Limits given (not found): they cap the net's whole estimate, already allocated or not.
_GIVEN = ("--max-memory", ENV_VAR, "max_memory=")

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_OFF = ("none", "off", "unlimited", "no")

_state = threading.local()


# ====================================================================== sizes
def parse_size(value, what="--max-memory"):
    """Bytes from ``8G``, ``512M``, ``1.5GiB``, ``100000`` (K, M, G, T, P: powers of 1024; a B is allowed);
    None for ``none``/``off``/``unlimited`` (no limit). Raises MinicaffeError naming ``what`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise MinicaffeError(f"{what}: give a size such as 8G or 512M, or none, not {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise MinicaffeError(f"{what}: a size must be a positive number of bytes, not {value!r}")
        return int(value)
    text = str(value).strip()
    if text.lower() in _OFF:
        return None
    upper = text.upper().replace(" ", "")
    for suffix in ("IB", "B"):
        if upper.endswith(suffix) and len(upper) > len(suffix):
            upper = upper[:-len(suffix)]
            break
    unit = upper[-1:] if upper[-1:] in _UNITS and upper[-1:] else ""
    number = upper[:-1] if unit else upper
    try:
        amount = float(number)
    except ValueError:
        amount = float("nan")
    if not math.isfinite(amount) or amount <= 0:
        raise MinicaffeError(f"{what}: {text!r} is not a size; give e.g. 8G, 512M, 1.5T or a number of bytes "
                             "(K, M, G, T: powers of 1024), or none for no limit")
    return int(amount * _UNITS[unit])


def format_size(count) -> str:
    """``512 bytes``, ``3.0 KiB``, ``1.5 MiB``, ``2.0 GiB``, ``3.6 TiB``, ``4.0 PiB``."""
    count = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} PiB"


# ====================================================================== the limit
@dataclass(frozen=True)
class MemoryLimit:
    """The bytes this process may still use (None: no limit) and where that number comes from."""

    bytes: int | None
    source: str

    def __str__(self):
        return "no limit" if self.bytes is None else f"{format_size(self.bytes)} ({self.source})"


@contextmanager
def max_memory(size, source="--max-memory"):
    """Within the block, nets are held to ``size`` (``8G``, bytes, or ``none``) instead of the detected limit.

    The CLI's ``--max-memory`` wraps each command in it; a Net's own ``max_memory=`` still comes first.
    """
    limit = MemoryLimit(parse_size(size, source), source)
    previous = getattr(_state, "override", None)
    _state.override = limit
    try:
        yield limit
    finally:
        _state.override = previous


def memory_limit(max_memory=None) -> MemoryLimit:
    """The limit nets are held to: ``max_memory`` (a Net's keyword), else :func:`max_memory`'s block
    (``--max-memory``), else ``MINICAFFE_MAX_MEMORY``, else :func:`detect_limit`."""
    if max_memory is not None:
        if isinstance(max_memory, MemoryLimit):
            return max_memory
        return MemoryLimit(parse_size(max_memory, "max_memory"), "max_memory=")
    override = getattr(_state, "override", None)
    if override is not None:
        return override
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        return MemoryLimit(parse_size(text, ENV_VAR), ENV_VAR)
    return detect_limit()


def detect_limit() -> MemoryLimit:
    """The smallest of: the address-space (and data) rlimit less what is in use, the cgroup's limit less
    its usage, the available memory. ``MemoryLimit(None, ...)`` when none can be read."""
    candidates = _rlimit_candidates() + _cgroup_candidates() + _available_candidates()
    if not candidates:
        return MemoryLimit(None, "no limit found")
    available, source = min(candidates, key=lambda item: item[0])
    return MemoryLimit(max(0, available), source)


def _status_kib(field_name):
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rlimit_candidates():
    found = []
    if resource is None:
        return found
    for name, status_field, label in (("RLIMIT_AS", "VmSize", "address-space limit RLIMIT_AS"),
                                      ("RLIMIT_DATA", "VmData", "data limit RLIMIT_DATA")):
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            soft, _ = resource.getrlimit(which)
        except (OSError, ValueError):
            continue
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        used = _status_kib(status_field) or 0
        found.append((soft - used, f"{label} {format_size(soft)}, {format_size(used)} of it in use"))
    return found


def _read_int(path):
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path, *keys):
    try:
        with open(path) as handle:
            values = dict(line.split(None, 1) for line in handle if " " in line)
    except (OSError, ValueError):
        return 0
    for key in keys:
        if key in values:
            try:
                return int(values[key])
            except ValueError:
                return 0
    return 0


def _cgroup_dirs():
    """[(version, folder)] of this process's memory cgroup and its parents, innermost first."""
    try:
        with open("/proc/self/cgroup") as handle:
            memberships = [line.rstrip("\n").split(":", 2) for line in handle]
        with open("/proc/self/mountinfo") as handle:
            mounts = [line.split() for line in handle]
    except OSError:
        return []
    paths = {}
    for parts in memberships:
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            paths.setdefault(2, path)
        elif "memory" in controllers.split(","):
            paths[1] = path
    found = []
    for fields in mounts:
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 3 or len(fields) < 5:
            continue
        fstype, options = fields[dash + 1], fields[-1]
        root, mount_point = fields[3], fields[4]
        if fstype == "cgroup2" and 2 in paths:
            version = 2
        elif fstype == "cgroup" and 1 in paths and "memory" in options.split(","):
            version = 1
        else:
            continue
        path = paths[version]
        relative = os.path.relpath(path, root) if path.startswith(root) else None
        if relative is None or relative.startswith(".."):
            continue
        folder = os.path.normpath(os.path.join(mount_point, relative))
        while True:
            found.append((version, folder))
            if folder == mount_point or len(folder) <= len(mount_point):
                break
            folder = os.path.dirname(folder)
    return found


def _cgroup_candidates():
    found = []
    for version, folder in _cgroup_dirs():
        if version == 2:
            limit = _read_int(os.path.join(folder, "memory.max"))
            usage = _read_int(os.path.join(folder, "memory.current"))
            inactive = _stat_value(os.path.join(folder, "memory.stat"), "inactive_file")
            name = "memory.max"
        else:
            limit = _read_int(os.path.join(folder, "memory.limit_in_bytes"))
            usage = _read_int(os.path.join(folder, "memory.usage_in_bytes"))
            inactive = _stat_value(os.path.join(folder, "memory.stat"), "total_inactive_file", "inactive_file")
            name = "memory.limit_in_bytes"
        if limit is None or limit >= 1 << 62:       # "max", or v1's "unlimited" (a page-rounded 2^63 - 1)
            continue
        used = max(0, (usage or 0) - inactive)
        found.append((limit - used, f"cgroup {name} {format_size(limit)} in {folder}, "
                                    f"{format_size(used)} of it in use"))
    return found


def _available_candidates():
    info = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts:
                    info[key] = int(parts[0]) * 1024
    except (OSError, ValueError):
        info = {}
    if "MemAvailable" in info:
        available = info["MemAvailable"] + info.get("SwapFree", 0)
        return [(available, "available memory: MemAvailable + SwapFree in /proc/meminfo")]
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return []
    return [(total, "physical memory")] if total > 0 else []


# ====================================================================== the estimate
@dataclass
class Workspace:
    """A layer's own arrays, in bytes: ``kept`` between passes after Forward, ``kept_backward`` more after
    Backward; the largest ``transient`` array during Forward and ``transient_backward`` during Backward."""

    kept: int = 0
    kept_backward: int = 0
    transient: int = 0
    transient_backward: int = 0


@dataclass
class BlobMemory:
    name: str          # a blob's name, or "LAYER param I" for a parameter
    shape: tuple
    bytes: int

    def __str__(self):
        return f"{self.name} ({'x'.join(str(d) for d in self.shape) or 'scalar'}, {format_size(self.bytes)})"


@dataclass
class LayerMemory:
    """One layer's share, in bytes: the top data and parameters it owns, the diffs Backward gives it, and
    its workspace."""

    name: str
    type: str
    top_data: int = 0
    params: int = 0
    diffs: int = 0
    param_diffs: int = 0
    loss_diffs: int = 0
    workspace: Workspace = field(default_factory=Workspace)

    @property
    def forward(self) -> int:
        return self.top_data + self.params + self.loss_diffs + self.workspace.kept


@dataclass
class MemoryEstimate:
    """What a net needs (see the module docstring); every figure in bytes."""

    net: str
    layers: list
    blobs: list                 # BlobMemory of every distinct buffer, largest first
    forward: int = 0            # to build the net and run Forward
    backward: int = 0           # to build it and run Forward and Backward
    build: int = 0              # while building: parameters and the fillers' temporaries
    training: int | None = None  # Forward and Backward, the solver's history and update, the test nets
    partial: bool = False       # some shapes were unknown (shape inference): those layers are not counted

    def largest(self, count=3) -> list:
        return self.blobs[:count]

    def largest_text(self, count=3) -> str:
        return ", ".join(str(blob) for blob in self.largest(count)) or "none"

    def table(self) -> str:
        """One line per layer: top data, parameters, workspace, diffs (MiB)."""
        mib = 1 << 20
        rows = [f"{'layer':<24} {'type':<18} {'tops':>10} {'params':>10} {'workspace':>10} {'diffs':>10}"]
        for layer in self.layers:
            work = layer.workspace
            rows.append(f"{layer.name[:24]:<24} {layer.type[:18]:<18} {layer.top_data / mib:>10.2f} "
                        f"{layer.params / mib:>10.2f} {(work.kept + work.kept_backward) / mib:>10.2f} "
                        f"{(layer.diffs + layer.param_diffs) / mib:>10.2f}")
        rows.append(f"Forward {format_size(self.forward)}, with Backward {format_size(self.backward)}"
                    + (f", training {format_size(self.training)}" if self.training is not None else ""))
        return "\n".join(rows)


def estimate_memory(net) -> MemoryEstimate:
    """The memory ``net`` needs to run, from its blobs' shapes (a shapes-only net from ``check`` or
    ``Net(..., shape_inference=True)`` is enough: nothing is allocated here)."""
    state = _Tally()
    state.add_net(net)
    return state.result(getattr(net.plan, "name", "") or "")


class _Tally:
    def __init__(self):
        self.seen_data = set()
        self.seen_diff = set()
        self.layers = []
        self.blobs = []
        self.partial = False
        self.transient = 0
        self.transient_backward = 0
        self.largest_param = 0
        self.param_bytes = 0
        self.layer_count = 0        # inner nets' layers included
        self.param_itemsize = 4

    def _data_once(self, blob, name):
        """Bytes of the memory behind blob's data, the first time that memory is seen; 0 after."""
        owner = blob.data_owner()
        if id(owner) in self.seen_data:
            return 0
        self.seen_data.add(id(owner))
        size = math.prod(owner.shape) * owner.dtype.itemsize
        self.blobs.append(BlobMemory(name, tuple(owner.shape), size))
        return size

    def _diff_once(self, blob):
        owner = getattr(blob, "_diff_source", None) or blob
        if id(owner) in self.seen_diff:
            return 0
        self.seen_diff.add(id(owner))
        return math.prod(owner.shape) * owner.dtype.itemsize

    def add_net(self, net):
        unknown = getattr(net, "unknown_shapes", set())
        skipped = getattr(net, "skipped_layers", set())
        if unknown or skipped:
            self.partial = True
        need_backward = net.layer_need_backward
        bottom_need = net.bottom_need_backward
        try:
            folds = net.active_folds()
        except (AttributeError, TypeError):
            folds = {}
        # layers merged into the Convolution before them (minicaffe.fold): they run only before a Backward
        merged = {index for chain in folds.values() for index in range(chain.first + 1, chain.last + 1)}
        for index, layer in enumerate(net.layers):
            entry = LayerMemory(layer.name, layer.type)
            self.layers.append(entry)
            self.layer_count += 1
            if layer.name in skipped:
                continue
            planned = net.plan.layers[index]
            bottoms, tops = net._bottom_vecs[index], net._top_vecs[index]
            for name, blob in zip(planned.tops, tops):
                entry.top_data += self._data_once(blob, name)
            for param_index, blob in enumerate(layer.blobs):
                size = self._data_once(blob, f"{layer.name} param {param_index}")
                entry.params += size
                self.param_bytes += size
                self.largest_param = max(self.largest_param, math.prod(blob.shape))
                self.param_itemsize = blob.dtype.itemsize
            for blob, weight in zip(tops, layer.loss_weights):
                if weight:
                    entry.loss_diffs += self._diff_once(blob)
            if need_backward[index]:
                for blob in tops:
                    entry.diffs += self._diff_once(blob)
                for blob, needed in zip(bottoms, bottom_need[index]):
                    if needed:
                        entry.diffs += self._diff_once(blob)
                for blob, propagate in zip(layer.blobs, layer.param_propagate_down):
                    if propagate:
                        entry.param_diffs += self._diff_once(blob)
            entry.workspace = layer_workspace(layer, bottoms, tops, backward=need_backward[index])
            if index in folds and layer.blobs:
                # a folded BatchNorm/Scale chain (minicaffe.fold): the weight scaled into a copy each Forward
                entry.workspace.transient += _bytes(layer.blobs[0])
            if index in merged:
                work = entry.workspace
                work.kept_backward += work.kept
                work.transient_backward = max(work.transient, work.transient_backward)
                work.kept = work.transient = 0
            self.transient = max(self.transient, entry.workspace.transient)
            self.transient_backward = max(self.transient_backward, entry.workspace.transient_backward)
            for inner in _inner_nets(layer):
                before = len(self.layers)
                self.add_net(inner)
                for sub in self.layers[before:]:
                    entry.top_data += sub.top_data
                    entry.params += sub.params
                    entry.diffs += sub.diffs
                    entry.param_diffs += sub.param_diffs
                    entry.loss_diffs += sub.loss_diffs
                    entry.workspace.kept += sub.workspace.kept
                    entry.workspace.kept_backward += sub.workspace.kept_backward
                del self.layers[before:]

    def result(self, name):
        layers = self.layers
        total = lambda attribute: sum(getattr(layer, attribute) for layer in layers)  # noqa: E731
        kept = sum(layer.workspace.kept for layer in layers)
        kept_backward = sum(layer.workspace.kept_backward for layer in layers)
        resident = (total("top_data") + total("params") + total("loss_diffs") + kept
                    + LAYER_OVERHEAD * self.layer_count)
        forward = resident + self.transient
        backward = (resident + total("diffs") + total("param_diffs") + kept_backward
                    + max(self.transient, self.transient_backward))
        build = self.param_bytes + filler_temporary(self.largest_param, self.param_itemsize)
        blobs = sorted(self.blobs, key=lambda blob: -blob.bytes)
        return MemoryEstimate(net=name, layers=layers, blobs=blobs, forward=max(forward, build),
                              backward=max(backward, build), build=build, partial=self.partial)


#: Bytes counted per layer for what the table does not model: Python objects (the layer, its blobs, its
#: messages: about 4 KiB measured) and small arrays (per-channel statistics, index vectors).
LAYER_OVERHEAD = 8 << 10


def _inner_nets(layer):
    """Nets a layer runs inside itself (RNN and LSTM's unrolled net)."""
    from .net import Net
    return [value for value in vars(layer).values() if isinstance(value, Net)]


def filler_temporary(count, itemsize=4) -> int:
    """Fillers draw straight into the blob (minicaffe.fillers); a sparse gaussian's keep mask is drawn in
    chunks of at most 2^20 elements (a float and a bool array): for the largest parameter, ``count`` elements."""
    return min(count, 1 << 20) * (itemsize + 1)


# ---------------------------------------------------------------- workspaces, per layer type
def _bytes(blob):
    return math.prod(blob.shape) * blob.dtype.itemsize


def _count(blob):
    return math.prod(blob.shape)


def _largest(bottom, top):
    return max([_bytes(blob) for blob in list(bottom) + list(top)] + [0])


def _threads():
    from .threads import get_num_threads
    return max(1, get_num_threads())


def _no_workspace(layer, bottom, top, backward):
    return Workspace()


def _convolution(layer, bottom, top, backward):
    """By the path the layer took (minicaffe.layers.conv_common): im2row keeps a patch matrix, scratch and
    product per chunk of images (one set per thread when there are several chunks) and, for Backward, a
    weight-gradient accumulator; it copies the weight into the patches' order each pass. 1x1 keeps per-image
    weight-gradient products; direct allocates a few planes per task, on each thread."""
    itemsize = layer.dtype.itemsize
    weight = _count(layer.blobs[0]) * itemsize if layer.blobs else 0
    name = getattr(layer, "conv_path", "")
    path = getattr(layer, "path", None)
    work = Workspace()
    if name == "im2row" and path is not None:
        g = layer.geometry

        def per_set(images):     # the patch matrix, the padded scratch and the product of `images` images
            return (g.rows_size(images) + max(g.scratch_size(images), 1)
                    + images * g.locations * layer.conv_out_channels) * itemsize
        chunk = path.chunk
        full, rest = divmod(layer.num, chunk)       # chunks of `chunk` images, and a last smaller one
        shared = per_set(chunk)     # the buffers every sequential pass uses
        if layer.reverse or full + (1 if rest else 0) == 1:
            # Deconvolution's Forward (a transpose) and a one-chunk apply use the shared buffers
            work.kept = shared
            extra = 0
        else:
            # Convolution's Forward: chunks on the threads, each thread with buffers of its own, as large as
            # the largest chunk it took; Backward then uses the shared ones
            # (counted, not listed: a batch of 2^62 images is refused by this estimate, not built as a list)
            threads = _threads()
            largest = [chunk] * min(full, threads) + ([rest] if rest and full < threads else [])
            work.kept = sum(per_set(images) for images in largest)
            extra = shared
        work.kept_backward = extra + weight if backward else 0
        # the weight in rows order; with groups, numpy's copy of a strided operand of a product (a chunk)
        strided = shared if layer.group > 1 else 0
        work.transient = weight + strided
        work.transient_backward = 2 * weight + strided
    elif name == "1x1":
        if backward:
            work.kept_backward = weight if layer.group > 1 else max(weight, min(layer.num * weight, 4 << 20))
        work.transient_backward = weight
        if path is not None and path.strided:   # the gathered pixels, kept on the layer
            work.kept += path._picked_size * itemsize
    elif name == "direct" and path is not None:
        from .layers.conv_direct import _phase_shape
        dims = path.dims
        _, phase_w, phase_size, length = _phase_shape(dims)
        group_in = layer.conv_in_channels // layer.group
        per_task = (group_in * phase_size + 2 * phase_w + dims[9] * dims[15] + 1 + length) * itemsize
        work.transient = _threads() * per_task
        work.transient_backward = _threads() * (per_task + group_in * dims[8] * dims[9] * itemsize)
    else:
        work.transient = work.transient_backward = 2 * weight + _largest(bottom, top)
    return work


def _pooling(layer, bottom, top, backward):
    from .proto import caffe_pb2
    method = layer.layer_param.pooling_param.pool
    count = _count(top[0])
    if method == caffe_pb2.PoolingParameter.MAX:
        return Workspace(kept=4 * count)
    if method == caffe_pb2.PoolingParameter.STOCHASTIC and getattr(layer, "phase", 1) == 0:
        return Workspace(kept=(4 + layer.dtype.itemsize) * count)
    return Workspace()


def _lrn(layer, bottom, top, backward):
    size = _bytes(bottom[0])
    across = getattr(layer, "region", 0) == 0
    return Workspace(kept=size if across else 2 * size, kept_backward=size if backward else 0)


def _spp(layer, bottom, top, backward):
    size = _bytes(top[0])
    return Workspace(kept=size + size * 4 // max(1, layer.dtype.itemsize), transient=size)


def _im2col(layer, bottom, top, backward):
    g = layer.geometry
    return Workspace(kept=(g.rows_size(layer.num) + max(g.scratch_size(layer.num), 1)) * layer.dtype.itemsize)


def _dropout(layer, bottom, top, backward):
    if layer.phase != 0:        # TEST: a copy at most
        return Workspace()
    count = _count(bottom[0])
    # the mask kept (blob dtype); while drawing it, a float64 draw and a bool array
    return Workspace(kept=count * layer.dtype.itemsize, transient=count * 9)


def _batch_norm(layer, bottom, top, backward):
    if getattr(layer, "use_global_stats", True):
        return Workspace(transient=_bytes(bottom[0]))
    return Workspace(kept=_bytes(top[0]), transient=_bytes(bottom[0]), transient_backward=2 * _bytes(bottom[0]))


def _keeps_its_input_when_in_place(layer, bottom, top, backward):
    kept = _bytes(bottom[0]) if top and top[0] is bottom[0] else 0
    return Workspace(kept=kept, transient=_bytes(bottom[0]), transient_backward=2 * _bytes(bottom[0]))


def _normalize(layer, bottom, top, backward):
    work = _keeps_its_input_when_in_place(layer, bottom, top, backward)
    work.kept += 8 * math.prod(getattr(layer, "norm_shape", ()) or (0,))
    return work


def _keeps_bottom_sized(layer, bottom, top, backward):
    """Loss layers that keep a bottom-sized array between Forward and Backward (probabilities, differences)."""
    size = _bytes(bottom[0])
    return Workspace(kept=size, transient=size, transient_backward=size)


def _eltwise(layer, bottom, top, backward):
    from .proto import caffe_pb2
    work = Workspace(transient=_bytes(top[0]), transient_backward=_bytes(top[0]))
    if layer.layer_param.eltwise_param.operation == caffe_pb2.EltwiseParameter.MAX:
        work.kept = 4 * _count(top[0])
    return work


def _roi_pooling(layer, bottom, top, backward):
    return Workspace(kept=4 * _count(top[0]))


def _inner_product(layer, bottom, top, backward):
    weight = _bytes(layer.blobs[0]) if layer.blobs else 0
    return Workspace(transient=_bytes(top[0]), transient_backward=weight + _bytes(top[0]))


def _lstm_unit(layer, bottom, top, backward):
    # kept for Backward: the four gate activations and tanh(c); a few c-sized temporaries each pass
    size = _bytes(top[0])
    return Workspace(kept=5 * size, transient=4 * size, transient_backward=6 * size)


def _data(layer, bottom, top, backward):
    # the prefetcher's batches read ahead (each decoded, then stacked), and the one being read
    depth = 4
    try:
        depth = layer.prefetch_depth()
    except Exception:   # noqa: BLE001 - an estimate: keep the default
        pass
    size = sum(_bytes(blob) for blob in top)
    return Workspace(kept=(depth + 1) * size, transient=2 * size)


WORKSPACES = {
    "Input": _no_workspace, "Split": _no_workspace, "Flatten": _no_workspace, "Reshape": _no_workspace,
    "Silence": _no_workspace, "Parameter": _no_workspace, "Slice": _no_workspace, "Concat": _no_workspace,
    "Convolution": _convolution, "Deconvolution": _convolution,
    "Pooling": _pooling, "LRN": _lrn, "SPP": _spp, "Im2col": _im2col,
    "Dropout": _dropout, "BatchNorm": _batch_norm,
    "PReLU": _keeps_its_input_when_in_place, "Scale": _keeps_its_input_when_in_place,
    "Axpy": _keeps_its_input_when_in_place, "Normalize": _normalize,
    "SoftmaxWithLoss": _keeps_bottom_sized, "SoftmaxLoss": _keeps_bottom_sized,
    "InfogainLoss": _keeps_bottom_sized, "SoftlabelSoftmaxLoss": _keeps_bottom_sized,
    "EuclideanLoss": _keeps_bottom_sized, "SquareLoss": _keeps_bottom_sized,
    "ContrastiveLoss": _keeps_bottom_sized, "ShuffleChannel": _keeps_bottom_sized,
    "Eltwise": _eltwise, "ROIPooling": _roi_pooling, "InnerProduct": _inner_product, "LSTMUnit": _lstm_unit,
    "Data": _data, "ImageData": _data, "HDF5Data": _data, "WindowData": _data,
}


for _name in ("ReLU", "Sigmoid", "TanH"):       # numba kernels or ufuncs with out=: no temporaries
    WORKSPACES[_name] = _no_workspace


def _neuron(layer, bottom, top, backward):
    """The numpy-expression neurons (minicaffe.layers.elementwise): a few blob-sized temporaries per pass,
    and the input kept when in place and the gradient needs it."""
    size = _bytes(bottom[0])
    kept = size if getattr(layer, "gradient_needs_input", False) and top and top[0] is bottom[0] else 0
    return Workspace(kept=kept, transient=3 * size, transient_backward=3 * size)


def _default_workspace(layer, bottom, top, backward):
    """A layer not in the table: one temporary the size of its largest blob, in Forward and in Backward."""
    size = _largest(bottom, top)
    return Workspace(transient=size, transient_backward=size)


def layer_workspace(layer, bottom, top, backward=False) -> Workspace:
    """The workspace of one set-up layer (see :data:`WORKSPACES`; others: :func:`_default_workspace`)."""
    from .layers.elementwise import NeuronLayer
    estimator = WORKSPACES.get(layer.type, _neuron if isinstance(layer, NeuronLayer) else _default_workspace)
    try:
        return estimator(layer, bottom, top, backward)
    except (AttributeError, IndexError, TypeError, ValueError):
        return _default_workspace(layer, bottom, top, backward)


# ====================================================================== checks
def over_limit_message(estimate, limit, needed, what, allocated=0, built=False) -> str:
    """The refusal: the estimate, the limit and its source, the largest blobs, what to do.

    ``allocated``: bytes of the estimate in use already (a built net's parameters), which the limit found
    has counted; ``built``: the nets are built (their parameters allocated), the passes not run."""
    name = f"net '{estimate.net}'" if estimate.net else "the net"
    about = "at least" if estimate.partial else "about"     # layers with unknown shapes are not counted
    in_use = f" ({format_size(allocated)} of it in use already)" if allocated else ""
    done = ("Refused before the first pass (only the parameters are allocated)" if built
            else "Nothing was allocated")
    return (f"{name} needs {about} {format_size(needed)} to {what}{in_use}, more than the "
            f"{format_size(limit.bytes + allocated)} this process may use ({limit.source}); the largest blobs: "
            f"{estimate.largest_text()}. {done}; give --max-memory SIZE (or MINICAFFE_MAX_MEMORY, or "
            "max_memory=) to set another limit")


def refuse(estimate, limit, needed, what, allocated=0, built=False):
    raise MemoryLimitError(over_limit_message(estimate, limit, needed, what, allocated, built), estimate=estimate,
                           limit=limit, needed=needed)


def allocated_bytes(*nets) -> int:
    """Bytes the nets' blobs (parameters included) already hold: the limit found now has them in use already."""
    seen, total = set(), 0

    def add(blob):
        nonlocal total
        for which in ("_data", "_diff"):
            buffer = getattr(blob, which, None)
            if buffer is not None and buffer.allocated and id(buffer) not in seen:
                seen.add(id(buffer))
                total += buffer.count * buffer.dtype.itemsize

    def walk(net):
        for blob in net.blobs.values():
            add(blob)
        for layer in net.layers:
            for blob in layer.blobs:
                add(blob)
            for inner in _inner_nets(layer):
                walk(inner)
    for net in nets:
        walk(net)
    return total


def check_memory(net, backward=False, max_memory=None) -> MemoryEstimate:
    """Raise MemoryLimitError if ``net`` (built or shapes-only) needs more than the limit to run Forward
    (and Backward, with ``backward``); returns the estimate."""
    limit = memory_limit(max_memory if max_memory is not None else getattr(net, "max_memory", None))
    estimate = estimate_memory(net)
    needed = estimate.backward if backward else estimate.forward
    # A built net's parameters are in use already: the limit found now has counted them.
    built = allocation_allowed() and not getattr(net, "_shape_inference", False)
    allocated = allocated_bytes(net) if built and not limit.source.startswith(_GIVEN) else 0
    if limit.bytes is not None and needed - allocated > limit.bytes:
        refuse(estimate, limit, needed, "run Forward and Backward" if backward else "run Forward", allocated,
               built)
    return estimate


def check_training_memory(solver) -> MemoryEstimate:
    """Before the solver allocates its history: the train net's Forward and Backward, the history, the
    update's temporaries and the test nets' Forward against the limit (the train net's ``max_memory``)."""
    net = solver.net
    limit = memory_limit(getattr(net, "max_memory", None))
    state = _Tally()
    state.add_net(net)
    train = state.result(getattr(net.plan, "name", "") or "")
    params = [entry.blob for entry in net.learnable_param_specs]
    param_bytes = sum(_bytes(blob) for blob in params)
    largest = max([_bytes(blob) for blob in params] + [0])
    history = getattr(solver, "history_sets", 1) * param_bytes
    update = 3 * largest + (2 * largest if getattr(solver.param, "clip_gradients", -1) >= 0 else 0)
    tests = 0
    for test_net in getattr(solver, "test_nets", []):
        test = estimate_memory(test_net)
        shared = sum(_bytes(layer_blob) for layer in test_net.layers for layer_blob in layer.blobs)
        tests += max(0, test.forward - shared)
    train.training = train.backward + history + update + tests
    nets = [net] + list(getattr(solver, "test_nets", []))
    allocated = allocated_bytes(*nets) if not limit.source.startswith(_GIVEN) else 0
    if limit.bytes is not None and train.training - allocated > limit.bytes:
        refuse(train, limit, train.training, "train (Forward, Backward, the solver's history and the test nets)",
               allocated, built=True)
    return train


def summary_line(net, max_memory=None) -> str:
    """``check``'s line: ``memory: ~X to run Forward (Y with Backward), limit Z (source)``, flagged when over."""
    estimate = estimate_memory(net)
    limit = memory_limit(max_memory if max_memory is not None else getattr(net, "max_memory", None))
    text = (f"memory: ~{format_size(estimate.forward)} to run Forward "
            f"({format_size(estimate.backward)} with Backward")
    if limit.bytes is not None and estimate.forward <= limit.bytes < estimate.backward:
        text += ": over the limit"
    text += f"), limit {limit}"
    if limit.bytes is not None and estimate.forward > limit.bytes:
        text += " -- over the limit"
    if estimate.partial:
        text += " (not counting the layers with ? shapes)"
    return text


def refuse_if_over(net, max_memory=None):
    """``check``: the one-line error when the net cannot even run Forward within the limit."""
    return check_memory(net, backward=False, max_memory=max_memory)


# ====================================================================== building within the limit
def nested() -> bool:
    """True while a net is being built: nets built inside a layer (RNN, LSTM) are part of its estimate."""
    return getattr(_state, "building", 0) > 0


@contextmanager
def _building():
    _state.building = getattr(_state, "building", 0) + 1
    try:
        yield
    finally:
        _state.building -= 1


def build_within_limit(net, max_memory=None):
    """Build ``net`` (its plan made): first its shapes only, then, if its estimate fits the limit, for real.

    Skipped (a plain build) under shape inference, for a net built inside another's layer, and with no limit.
    """
    if not allocation_allowed() or nested():
        net._build()
        return
    limit = memory_limit(max_memory)
    if limit.bytes is not None:
        with _building(), shapes_only():
            net._shape_inference = True
            net._estimating = True
            try:
                net._build()
            finally:
                net._shape_inference = False
                net._estimating = False
        estimate = estimate_memory(net)
        if estimate.forward > limit.bytes:
            refuse(estimate, limit, estimate.forward, "build and run Forward")
    with _building():
        try:
            net._build()
        except MemoryError as exc:
            if isinstance(exc, MinicaffeError):
                raise
            from .errors import LayerMemoryError
            layers = net.plan.layers
            built = len(getattr(net, "_layers", []))
            name = layers[built].name if built < len(layers) else None
            raise LayerMemoryError(name, "building the net", exc) from None
