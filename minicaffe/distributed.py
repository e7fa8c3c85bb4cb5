"""Data-parallel training over MPI: the one module that knows MPI exists.

``mpiexec -n K minicaffe train --solver S`` (or a script that builds a
``caffe.Solver`` under ``mpiexec``) trains with K processes, *ranks*, as
Caffe's multi-GPU training does: every rank builds the same net and runs its
own batch; after Backward the solver sums the ranks' gradients with one
all-reduce of a flat buffer and scales the sum by 1/K (Caffe's NCCL
callback), so every rank applies the same update to the same weights. The
solver (:mod:`minicaffe.solvers.solver`) calls this module; data layers ask
it for :func:`rank` and :func:`world_size` to shard their TRAIN source.

**Without MPI nothing changes.** :func:`world` is a single-process world
(rank 0 of 1) unless this process was started by an MPI launcher with more
than one process (``PMI_SIZE`` from MPICH or Intel MPI,
``OMPI_COMM_WORLD_SIZE`` from Open MPI, ``MV2_COMM_WORLD_SIZE`` from
MVAPICH) or ``MINICAFFE_MPI=1`` asks for MPI; only then is ``mpi4py``
imported (the ``distributed`` extra: ``pip install 'minicaffe[distributed]'``,
which brings MPICH's wheel and its ``mpiexec``). ``MINICAFFE_MPI=0`` keeps
every process on its own even under a launcher.

**Never hang forever.** Every collective is non-blocking (``Iallreduce``,
``Ibcast``, ``Igather``, ``Ibarrier``) and polled with a deadline,
``MINICAFFE_MPI_TIMEOUT`` seconds (300 by default) of silence from the other
ranks: past it, the waiting rank prints which collective it was waiting in and
calls ``MPI_Abort``, which stops every rank. Rank 0 alone tests and writes
snapshots while the others wait; it tells them it is alive every few seconds
meanwhile (:meth:`MPIWorld.keepalive`), so a long test pass is not taken for
a dead rank. A rank that fails (an exception) aborts the run too
(:meth:`World.fail`, and an ``excepthook`` for scripts), rather than leave the
others waiting: with MPI, a process that exits while the others sit in a
collective would otherwise hang them.

**One machine, several ranks.** Ranks that share a machine (MPI's
``COMM_TYPE_SHARED``) and the same CPU set divide the default thread budget
among them (:func:`minicaffe.threads.share_cores`); ranks the launcher bound
to their own cores keep theirs. Only rank 0 logs INFO lines; the others log
warnings and errors, prefixed with their rank.

GPU: gradients that live on the device (GPU mode) are reduced by
:meth:`World.allreduce_mean_device`: one kernel per parameter packs its diff
into a flat device buffer, the buffer crosses to the host once, is summed by
the all-reduce, crosses back once, and one kernel per parameter unpacks it into
the diffs scaled by 1/K. The host hop is needed because MPICH's wheel (the
``distributed`` extra) is not CUDA-aware: MPI cannot read device memory. The
host buffer is page-locked on a real GPU, so both copies are single DMA
transfers.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import numpy as np

from . import gpu
from .errors import MinicaffeError
from .gpu import cuda  # the name kernels use: the simulator swaps it

#: Environment variables an MPI launcher sets to the number of processes it started.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
TIMEOUT_VARIABLE = "MINICAFFE_MPI_TIMEOUT"
#: Seconds a rank waits in a collective for the others before it stops the run.
DEFAULT_TIMEOUT = 300.0
_SWITCH_VARIABLE = "MINICAFFE_MPI"
#: Seconds a collective is polled without pause before the polls back off (see MPIWorld._wait).
SPIN_SECONDS = 5e-3
_HEARTBEAT_TAG = 7701

_world = None


def launcher_size() -> int:
    """The number of processes the MPI launcher that started this one says it started (1 when none)."""
    for name in LAUNCHER_SIZE_VARIABLES:
        text = os.environ.get(name, "").strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
    return 1


def timeout() -> float:
    """``MINICAFFE_MPI_TIMEOUT`` (seconds, > 0), else :data:`DEFAULT_TIMEOUT`."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise MinicaffeError(f"{TIMEOUT_VARIABLE}={text!r}: give a positive number of seconds")
    return value


def world() -> "World":
    """This process's world: :class:`MPIWorld` when started by an MPI launcher with more than one process
    (MPI is initialized on this first call), else the single-process :class:`World`."""
    global _world
    if _world is None:
        _world = _connect()
    return _world


def rank() -> int:
    """This process's rank (0 without MPI)."""
    return world().rank


def world_size() -> int:
    """The number of ranks training together (1 without MPI)."""
    return world().size


def shard(phase) -> tuple:
    """(rank, world size) a data layer of ``phase`` reads its share with: the TRAIN phase is sharded
    (record i goes to rank i mod K, as Caffe's ``DataLayer::Skip``); TEST data is not: (0, 1)."""
    from .graph import TRAIN
    if phase != TRAIN:
        return 0, 1
    current = world()
    return current.rank, current.size


@gpu.jit
def _pack_gpu(source, flat, offset):
    for i in range(cuda.grid(1), source.size, cuda.gridsize(1)):
        flat[offset + i] = source[i]


@gpu.jit
def _unpack_gpu(flat, offset, scale, target):
    for i in range(cuda.grid(1), target.size, cuda.gridsize(1)):
        target[i] = scale * flat[offset + i]


class World:
    """A single process: rank 0 of 1. Every collective is a no-op (the arrays are already "reduced")."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    _device_buffers = None      # allreduce_mean_device's (device, host) flat buffers

    def allreduce_sum(self, arrays, what):
        """Sum each array over the ranks, in place, on every rank."""

    def allreduce_mean_device(self, device_arrays, host_arrays, what):
        """Average the flat device arrays ``device_arrays`` (one dtype; the gradients) over the ranks, in place,
        and sum the host arrays ``host_arrays`` with them in the same all-reduce (see the module's docstring:
        packed on the device, one copy each way, unpacked scaled by 1/K on the device)."""
        total = sum(array.size for array in device_arrays)
        if not total:
            self.allreduce_sum(list(host_arrays), what)
            return
        dtype = device_arrays[0].dtype
        buffers = self._device_buffers
        if buffers is None or buffers[0].size != total or buffers[0].dtype != dtype:
            host = np.empty(total, dtype) if gpu.simulated() else cuda.pinned_array(total, dtype)
            self._device_buffers = buffers = (gpu.device_empty(total, dtype), host)
        flat, host = buffers
        offset = 0
        for array in device_arrays:
            if array.size:
                _pack_gpu[gpu.strided(array.size)](array, flat, offset)
            offset += array.size
        flat.copy_to_host(host)
        self.allreduce_sum([host, *host_arrays], what)
        flat.copy_to_device(host)
        scale, offset = dtype.type(1.0 / self.size), 0
        for array in device_arrays:
            if array.size:
                _unpack_gpu[gpu.strided(array.size)](flat, offset, scale, array)
            offset += array.size

    def broadcast(self, arrays, what):
        """Overwrite each array with rank 0's, in place."""

    def broadcast_bytes(self, payload, what) -> bytes:
        """Rank 0's ``payload`` on every rank (the others pass None)."""
        return payload

    def gather_bytes(self, payload, what):
        """On rank 0, the list of every rank's ``payload`` in rank order; None on the others."""
        return [payload]

    def barrier(self, what):
        """Wait until every rank is here."""

    def keepalive(self):
        """Rank 0, busy on its own (testing, snapshotting): tell the waiting ranks it is alive."""

    def fail(self, exc):
        """A rank failed with ``exc``: stop the whole run (nothing to do in one process)."""

    def __repr__(self):
        return "World(single process)"


class MPIWorld(World):
    """K ranks over MPI (``mpi4py``). The collectives wait with a deadline (see the module's docstring)."""

    def __init__(self, mpi, comm, local_rank, local_size):
        self.MPI = mpi
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.local_rank = local_rank
        self.local_size = local_size
        self.timeout = timeout()
        self._beat_interval = max(0.05, min(5.0, self.timeout / 6))
        self._last_beat = 0.0
        self._beats_sent = []
        self._beat_out = np.zeros(1, dtype=np.int8)
        self._beat_in = np.zeros(1, dtype=np.int8)
        self.wait_seconds = 0.0          # time spent waiting in collectives (benchmarks read it)

    # ------------------------------------------------------------ collectives
    def allreduce_sum(self, arrays, what):
        requests = [self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM) for array in arrays]
        self._wait(requests, what)

    def broadcast(self, arrays, what):
        requests = [self.comm.Ibcast(array, root=0) for array in arrays if array.size]
        self._wait(requests, what)

    def broadcast_bytes(self, payload, what) -> bytes:
        length = np.array([len(payload) if self.rank == 0 else 0], dtype=np.int64)
        self._wait([self.comm.Ibcast(length, root=0)], what)
        buffer = (np.frombuffer(payload, dtype=np.uint8).copy() if self.rank == 0
                  else np.empty(int(length[0]), dtype=np.uint8))
        if buffer.size:
            self._wait([self.comm.Ibcast(buffer, root=0)], what)
        return buffer.tobytes()

    def gather_bytes(self, payload, what):
        mine = np.frombuffer(payload, dtype=np.uint8)
        lengths = np.zeros(self.size, dtype=np.int64)
        self._wait([self.comm.Igather(np.array([mine.size], dtype=np.int64),
                                      lengths if self.rank == 0 else None, root=0)], what)
        if self.rank != 0:
            self._wait([self.comm.Igatherv(mine, None, root=0)], what)
            return None
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        gathered = np.empty(int(lengths.sum()), dtype=np.uint8)
        self._wait([self.comm.Igatherv(mine, [gathered, lengths, offsets, self.MPI.BYTE], root=0)], what)
        return [gathered[start:start + length].tobytes() for start, length in zip(offsets, lengths)]

    def barrier(self, what):
        self._wait([self.comm.Ibarrier()], what)
        # Heartbeats rank 0 sent before it reached the barrier: delivered, then dropped.
        if self.rank == 0:
            self._wait(self._beats_sent, what)
            self._beats_sent = []
        else:
            self._heard_from_root()

    # ------------------------------------------------------------ liveness
    def keepalive(self):
        if self.rank != 0:
            return
        now = time.monotonic()
        if now - self._last_beat < self._beat_interval:
            return
        self._last_beat = now
        self._beats_sent = [request for request in self._beats_sent if not request.Test()]
        for destination in range(1, self.size):
            self._beats_sent.append(self.comm.Isend(self._beat_out, dest=destination, tag=_HEARTBEAT_TAG))

    def _heard_from_root(self) -> bool:
        heard = False
        while self.comm.Iprobe(source=0, tag=_HEARTBEAT_TAG):
            self.comm.Recv(self._beat_in, source=0, tag=_HEARTBEAT_TAG)
            heard = True
        return heard

    def _wait(self, requests, what):
        """Poll ``requests`` until all complete; past the deadline with no word from the others, abort.

        MPI's progress runs only inside MPI calls, so the first :data:`SPIN_SECONDS` poll without pause
        (an all-reduce of a small net's gradients completes within them); later polls back off to naps
        of up to a millisecond (the other ranks are still computing). Polling with ``Test`` lets the
        prefetch threads have the GIL; ``time.sleep(0)`` would cost the timer slack (50 us or more) each."""
        pending = [request for request in requests if not request.Test()]
        if not pending:
            return
        started = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        pause = 0.0
        while pending:
            pending = [request for request in pending if not request.Test()]
            if not pending or time.perf_counter() - started < SPIN_SECONDS:
                continue
            now = time.monotonic()
            if self.rank != 0 and self._heard_from_root():
                deadline = now + self.timeout
            if now > deadline:
                self.abort(f"no answer from the other ranks for {self.timeout:g} s while waiting in {what}: a rank "
                           f"died or hangs ({TIMEOUT_VARIABLE} sets this limit); stopping all {self.size} ranks")
            pause = min(1e-3, pause * 2 if pause else 1e-4)
            time.sleep(pause)
        self.wait_seconds += time.perf_counter() - started

    # ------------------------------------------------------------ failure
    def abort(self, message):
        """Print ``message`` as this rank's error and stop every rank (``MPI_Abort``).

        The launcher stops forwarding output once a rank aborts, so each rank waits a moment first: 0.3 s
        for its own lines to get through, and a second more on ranks other than 0, so that where every
        rank fails alike (a bad solver file) rank 0 is the one that reports and aborts."""
        try:
            sys.stdout.flush()
            sys.stderr.write(f"minicaffe: error: rank {self.rank} of {self.size}: {message}\n")
            sys.stderr.flush()
            time.sleep(0.3 if self.rank == 0 else 1.3)
        finally:
            self.MPI.COMM_WORLD.Abort(1)

    def fail(self, exc):
        report = getattr(exc, "minicaffe_context", None)
        if isinstance(exc, MinicaffeError) or report is not None:
            text = report or str(exc)
        else:
            import traceback
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        self.abort(f"{text}\n(rank {self.rank} failed: stopping all {self.size} ranks)")

    def __repr__(self):
        return f"MPIWorld(rank {self.rank} of {self.size}, {self.local_size} on this machine)"


# ---------------------------------------------------------------- launching

def find_mpiexec():
    """The ``mpiexec`` beside this Python (the MPICH wheel's, in a virtual environment), else on PATH; None."""
    import shutil
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("mpiexec")


def launch_self(ranks, option="--ranks", argv=None):
    """``minicaffe train --ranks K``: run this process's command line again under ``mpiexec -n K``, without
    ``option`` (this process becomes mpiexec). Under a launcher already, it returns when the launcher
    started K processes and refuses another count; ``--ranks 1`` returns at once."""
    started = launcher_size()
    if started > 1 or os.environ.get(_SWITCH_VARIABLE, "").strip() == "1":
        if started != ranks:
            raise MinicaffeError(f"{option} {ranks}, but the MPI launcher started {started} processes: give "
                                 f"{option} only without mpiexec (or the launcher's count)")
        return
    if ranks == 1:
        return
    import importlib.util
    mpiexec = find_mpiexec()
    if mpiexec is None or importlib.util.find_spec("mpi4py") is None:
        missing = "mpiexec" if mpiexec is None else "mpi4py"
        raise MinicaffeError(f"{option} {ranks} needs MPI, and {missing} is not installed: pip install "
                             "'minicaffe[distributed]' (mpi4py and MPICH's wheel, which brings mpiexec)")
    arguments = _without_option(list(sys.argv[1:] if argv is None else argv), option)
    command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "minicaffe", *arguments]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(mpiexec, command)


def _without_option(arguments, option):
    """``arguments`` without ``option`` and its value (``--ranks K``, ``--ranks=K``, gflags' ``-ranks=K``)."""
    names = {option, option[1:]} if option.startswith("--") else {option}
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in names:
            skip = True
        elif argument.split("=", 1)[0] not in names:
            kept.append(argument)
    return kept


# ---------------------------------------------------------------- set-up

def _connect() -> World:
    switch = os.environ.get(_SWITCH_VARIABLE, "").strip()
    size = launcher_size()
    if switch == "0" or (size <= 1 and switch != "1"):
        return World()
    try:
        import mpi4py
    except ImportError:
        raise MinicaffeError(
            f"this process was started by an MPI launcher with {size} processes, but mpi4py is not installed: "
            "pip install 'minicaffe[distributed]' (or set MINICAFFE_MPI=0 to run each process on its own)") from None
    mpi4py.rc.thread_level = "funneled"      # MPI is called from the main thread only (prefetch threads never do)
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_size() <= 1:
        return World()
    comm = MPI.COMM_WORLD.Dup()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        cpus = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()
        sharing = sum(1 for other in local.allgather(cpus) if other == cpus)
        current = MPIWorld(MPI, comm, local.Get_rank(), local.Get_size())
    finally:
        local.Free()
    from . import mode, threads
    threads.share_cores(sharing)
    mode.set_solver_count(current.size)
    mode.set_solver_rank(current.rank)
    if current.rank != 0:
        logging.getLogger("minicaffe").addFilter(_WarningsOnly(current.rank))
    _abort_on_uncaught_exceptions(current)
    return current


class _WarningsOnly(logging.Filter):
    """Ranks other than 0 log warnings and errors only, prefixed with their rank (Caffe's LOG_IF(root))."""

    def __init__(self, rank):
        super().__init__()
        self.prefix = f"rank {rank}: "

    def filter(self, record):
        if record.levelno < logging.WARNING:
            return False
        if not str(record.msg).startswith(self.prefix):
            record.msg = self.prefix + str(record.msg)
        return True


def _abort_on_uncaught_exceptions(current):
    """A script's uncaught exception on one rank stops every rank (mpi4py's ``-m mpi4py`` rule), rather than
    leave the others waiting in a collective."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        current.abort(f"uncaught {kind.__name__} (above): stopping all {current.size} ranks")

    sys.excepthook = hook
