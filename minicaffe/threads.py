"""The thread budget: how many threads minicaffe's CPU work runs on, and the one pool that runs it.

Everything parallel in minicaffe goes through this module; nothing else calls
``numba.set_num_threads``, limits BLAS or reads a thread environment variable.

**Budget.** The cores this process may use (``os.sched_getaffinity``, else
``os.cpu_count()``), or ``MINICAFFE_NUM_THREADS``, or :func:`set_num_threads`
(pycaffe-style ``caffe.set_num_threads(n)``; the CLI's ``--threads N``).
:func:`get_num_threads` reads it. Data-parallel ranks that share a machine
divide the default among them (:func:`share_cores`, from MPI's count).

**One pool, chunks handed out on demand.** Work is cut into chunks and run by
a small pool of persistent Python threads plus the calling thread: each takes
the next chunk of the job until none is left (:func:`run`), so a thread that
the OS deschedules (another process wants the core) delays only the chunk it
holds while the others take the rest; a fixed split into one piece per thread
would stall the whole job on it. Idle pool threads block on a queue and the
caller blocks while it waits for the last chunks: nothing here ever spins, so
a busy process beside minicaffe gets its share of the cores and so do we.
Chunks are numpy BLAS calls (:func:`matmul`) or numba kernels compiled with
``nogil=True``; both release the GIL while they compute.

**Same result run to run.** Chunk boundaries are a function of the shapes and
the thread count alone, and every output element is computed inside one chunk
(a product's element by one BLAS call over the whole ``K``; a per-channel sum
by one thread, in a fixed order), so at a fixed thread count results are
bit-identical run to run. Element-wise kernels and per-channel sums do not
depend on the chunking at all: they are the same at any thread count. Products
cut for another thread count gave the same float32 results in our checks
(119 random shapes, 1 to 4 threads, OpenBLAS 0.3.31); in float64, about one
shape in five differed in the last bits, where OpenBLAS takes its
small-matrix kernels for pieces under its size limit.

**BLAS runs on one thread.** threadpoolctl holds numpy's BLAS (OpenBLAS, MKL,
BLIS) at one thread from minicaffe's first use of the budget on, and
:func:`matmul` puts it back to one if something raised it since: minicaffe
splits big products itself. OpenBLAS splits each product statically across
its threads and its idle workers spin after every call, so with a busy
process on one core a forward became 5-70x slower; at one BLAS thread its
workers never run. This is process-wide: numpy products in your own code then
run on one thread too (wrap them in ``threadpoolctl.threadpool_limits(n)`` to
give them more; minicaffe takes BLAS back to one at its next product). Only
numpy's BLAS is held: the OpenBLAS that other packages bundle (OpenCV's, for
one) keeps its own thread count.

**numba's own parallel kernels.** minicaffe compiles none: chunks in this pool
cost no ``parallel=True`` compilation (about 1 s per specialization from a
cold cache) and are safe on any thread, whereas numba's parallel kernels split
the work statically and, under the workqueue layer, abort the process when
two threads launch them at once (the data prefetch thread, these pool
threads). For kernels of your own (Python layers), numba's thread count
follows the budget (set on the thread that sets the budget; numba keeps it per
thread) and the threading layer is ``workqueue`` unless ``NUMBA_THREADING_LAYER``
chose one: it is always available (tbb often is not) and its idle workers
block, where the OpenMP layer's spin for a while after each kernel. The rule
that keeps workqueue safe: run ``parallel=True`` kernels from one thread only,
never from a prefetch thread (:mod:`minicaffe.data.prefetch`) or a chunk of
this pool.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import queue
import threading

import numpy as np

#: Products below this many floating-point operations (2 G M N K) run as one BLAS call.
SERIAL_FLOPS = 4_000_000
#: A block of a product is at least this many flops (tens of microseconds of BLAS).
CHUNK_FLOPS = 2_000_000
#: Blocks per thread: more than one, so that a descheduled thread holds up only its own.
CHUNKS_PER_THREAD = 2
#: Rows (or columns) of a piece of one group's product, at least.
MIN_PIECE = 16
#: Rows (or columns) per piece from which a group is cut in more pieces than threads.
LONG_SIDE = 256
#: Pieces start on multiples of this many rows (columns) where they can: the BLAS then works
#: each piece in the same tiles as the whole product (unaligned pieces gave float32 results
#: that differed in the last bit from one thread's on some shapes; aligned ones none).
PIECE_ALIGN = 64
#: Elements of a chunk of an element-wise kernel, at least (see :func:`parallel_for`).
CHUNK_ELEMENTS = 1 << 17

_ENV = "MINICAFFE_NUM_THREADS"

_budget = None            # the thread count; None until first use
_explicit = False         # set_num_threads() chose the budget (the default is not applied over it)
_sharing = 1              # processes dividing this machine's cores (MPI ranks: share_cores)
_blas = None              # threadpoolctl's controllers of the BLAS libraries, once looked up
_local = threading.local()
_setup_lock = threading.Lock()


# ----------------------------------------------------------------- the budget

def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _default_budget() -> int:
    text = os.environ.get(_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{_ENV}={text!r}: give a whole number of threads, 1 or more")
        return value
    return max(1, available_cores() // _sharing)


def get_num_threads() -> int:
    """How many threads minicaffe's CPU work runs on (the calling thread included)."""
    if _budget is None:
        _configure(_default_budget())
    return _budget


def set_num_threads(count: int) -> None:
    """Run minicaffe's CPU work on ``count`` threads (1 = everything on the calling thread)."""
    global _explicit
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"the number of threads must be a whole number, 1 or more; got {count!r}")
    _explicit = True
    _configure(int(count))


def share_cores(processes: int) -> None:
    """``processes`` minicaffe processes share this process's cores (data-parallel ranks on one machine,
    with the same CPU affinity: :mod:`minicaffe.distributed` counts them): the default budget becomes
    each one's share, at least 1. A budget chosen with :func:`set_num_threads` (``--threads``) or
    ``MINICAFFE_NUM_THREADS`` is kept as it is."""
    global _sharing
    _sharing = max(1, int(processes))
    if _budget is not None and not _explicit:
        _configure(_default_budget())


def _configure(count):
    global _budget
    with _setup_lock:
        _hold_blas_to_one()
        _set_numba_threads(count)
        _budget = count


def _set_numba_threads(count):
    import numba
    from numba.np.ufunc import parallel

    if not getattr(parallel, "_is_initialized", True) and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "workqueue"
    numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))


def _hold_blas_to_one():
    """BLAS at one thread (see the module docstring); its libraries are looked up once."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = _numpys_blas(ThreadpoolController().select(user_api="blas").lib_controllers)
    _blas_held()


def _numpys_blas(libraries):
    """The BLAS libraries numpy calls, not those other packages bundle (OpenCV and others ship an
    OpenBLAS of their own, whose threads are theirs to set): the ones inside numpy's folders
    (``numpy/``, ``numpy.libs/``), else, for a numpy linked to the system's BLAS, those outside
    every installed package's folder."""
    import numpy
    package = os.path.dirname(os.path.abspath(numpy.__file__))
    owned = (package + os.sep, package + ".libs" + os.sep)
    mine = [library for library in libraries if os.path.abspath(library.filepath).startswith(owned)]
    if mine:
        return mine
    site = os.path.dirname(package) + os.sep
    return [library for library in libraries if not os.path.abspath(library.filepath).startswith(site)]


def _blas_held():
    for library in _blas:
        if library.get_num_threads() != 1:
            library.set_num_threads(1)


# ----------------------------------------------------------------- the pool

class _Job:
    """Chunks of one call: every participating thread takes the next index until none is left.

    ``done`` is a lock held until the last chunk finishes (a bare lock: waking a thread on it
    costs less than on a threading.Event, which is a condition variable written in Python).
    ``context`` is the caller's contextvars, which pool threads run the chunks in: numpy's
    ``errstate`` lives there, so a caller's ``np.errstate(...)`` holds for its chunks too.
    """

    __slots__ = ("body", "bounds", "claim", "finished", "done", "error", "context")

    def __init__(self, body, bounds):
        self.context = contextvars.copy_context()
        self.body = body
        self.bounds = bounds
        self.claim = itertools.count()      # next() is atomic under the GIL
        self.finished = itertools.count(1)
        self.done = threading.Lock()
        self.done.acquire()
        self.error = None

    def work(self):
        count = len(self.bounds)
        while True:
            index = next(self.claim)
            if index >= count:
                return
            try:
                self.body(*self.bounds[index])
            except BaseException as exc:     # handed to the caller
                if self.error is None:
                    self.error = exc
            if next(self.finished) == count:
                self.done.release()


class _Pool:
    """Persistent daemon threads blocked on a queue of jobs; the caller works on its job too."""

    def __init__(self):
        self._jobs = queue.SimpleQueue()
        self._threads = []
        self._lock = threading.Lock()

    def grow(self, count):
        with self._lock:
            while len(self._threads) < count:
                thread = threading.Thread(target=self._serve, name=f"minicaffe-{len(self._threads) + 1}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)

    def _serve(self):
        _local.in_pool = True
        while True:
            job = self._jobs.get()
            job.context.copy().run(job.work)     # a copy each: one Context cannot be entered by two threads

    def run(self, job, helpers):
        if len(self._threads) < helpers:
            self.grow(helpers)
        for _ in range(helpers):
            self._jobs.put(job)
        # The caller works on the job too, as a pool thread: work a chunk splits runs inline there as
        # well, so a chunk computes the same way whichever thread takes it.
        nested = getattr(_local, "in_pool", False)
        _local.in_pool = True
        try:
            job.work()
        finally:
            _local.in_pool = nested
        job.done.acquire()
        if job.error is not None:
            raise job.error


_pool = _Pool()


def _after_fork_in_child():
    # Threads do not survive fork: a child starts its own pool when it next needs one.
    global _pool
    _pool = _Pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def split_even(total: int, pieces: int, align: int = 1) -> list:
    """``range(total)`` in ``pieces`` near-equal ``(start, stop)`` parts (fewer if ``total`` is smaller),
    inner boundaries on multiples of ``align`` when every part can keep at least ``align`` items."""
    pieces = max(1, min(pieces, total))
    if align > 1 and total >= pieces * align:
        cuts = [0] + [round(total * i / pieces / align) * align for i in range(1, pieces)] + [total]
    else:
        cuts = [total * i // pieces for i in range(pieces + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(pieces) if cuts[i + 1] > cuts[i]]


def run(body, bounds) -> None:
    """Call ``body(*bound)`` for every bound, on the pool's threads and the caller's.

    Inline, in order, when there is one bound, the budget is 1, or the caller is
    itself a pool thread (a chunk that splits its own work).
    """
    count = len(bounds)
    threads = get_num_threads()
    if count <= 1 or threads == 1 or getattr(_local, "in_pool", False):
        for bound in bounds:
            body(*bound)
        return
    _pool.run(_Job(body, bounds), min(threads, count) - 1)


def parallel_for(count: int, body, item_size: int = 1) -> None:
    """``body(start, stop)`` over ``range(count)``, items of about ``item_size`` elements (or
    operations) each: one call on the calling thread when the budget is 1 or the work is under
    twice :data:`CHUNK_ELEMENTS`, else :data:`CHUNKS_PER_THREAD` near-equal chunks per thread (fewer
    when chunks would drop under :data:`CHUNK_ELEMENTS`) on the pool."""
    threads = get_num_threads()
    work = count * max(1, item_size)
    if threads == 1 or work < 2 * CHUNK_ELEMENTS or count < 2:
        body(0, count)
        return
    run(body, split_even(count, min(CHUNKS_PER_THREAD * threads, work // CHUNK_ELEMENTS)))


# ----------------------------------------------------------------- products

def matmul(a, b, out=None):
    """``np.matmul(a, b, out=out)`` for 2-D ``(M, K) @ (K, N)`` and stacked
    ``(G, M, K) @ (G, K, N)`` (either side may be 2-D, shared by every group),
    split across the pool; returns ``out`` (allocated when None).

    With one thread, or under :data:`SERIAL_FLOPS`, it is one BLAS call. Else it
    is cut into about :data:`CHUNKS_PER_THREAD` blocks per thread, each one
    single-threaded BLAS call over the whole ``K``: bundles of whole groups when
    there are enough groups, else pieces of each group along ``M`` (rows) or
    ``N`` (columns), whichever is longer. Each piece costs the BLAS one more
    packing of the other operand (``B`` for rows, ``A`` for columns): about 16
    rows' worth of work, measured with OpenBLAS, so pieces are kept at least
    :data:`MIN_PIECE` long and the longer side is the one cut (columns win for a
    fully connected layer at batch 1 and the last convolutions of a net).
    ``out`` must not overlap ``a`` or ``b``.
    """
    threads = get_num_threads()
    _blas_held()
    if a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(f"threads.matmul takes 2-D or stacked 3-D operands, got shapes {a.shape} and {b.shape}")
    m, k = a.shape[-2:]
    n = b.shape[-1]
    stacked = a.ndim == 3 or b.ndim == 3
    groups = a.shape[0] if a.ndim == 3 else b.shape[0] if b.ndim == 3 else 1
    if b.shape[-2] != k or (a.ndim == 3 and b.ndim == 3 and a.shape[0] != b.shape[0]):
        raise ValueError(f"threads.matmul: shapes {a.shape} and {b.shape} do not multiply")
    if out is None:
        out = np.empty(((groups,) if stacked else ()) + (m, n), dtype=np.result_type(a, b))
    bounds = _product_blocks(groups, m, n, k, threads)
    if len(bounds) <= 1:
        np.matmul(a, b, out=out)
        return out
    a3 = a if a.ndim == 3 else a[None]
    b3 = b if b.ndim == 3 else b[None]
    out3 = out if stacked else out[None]
    shared_a, shared_b = a.ndim == 2, b.ndim == 2

    def block(g0, g1, r0, r1, c0, c1):
        np.matmul(a3[0, r0:r1] if shared_a else a3[g0:g1, r0:r1], b3[0, :, c0:c1] if shared_b else b3[g0:g1, :, c0:c1],
                  out=out3[g0:g1, r0:r1, c0:c1])

    run(block, bounds)
    return out


def _product_blocks(groups, m, n, k, threads):
    """``[(g0, g1, r0, r1, c0, c1), ...]`` for a product: a function of the shapes and the thread count."""
    flops = 2 * groups * m * n * k
    if threads == 1 or flops < SERIAL_FLOPS:
        return [(0, groups, 0, m, 0, n)]
    wanted = max(1, min(CHUNKS_PER_THREAD * threads, flops // CHUNK_FLOPS))
    if groups >= wanted:
        return [(g0, g1, 0, m, 0, n) for g0, g1 in split_even(groups, wanted)]
    # Pieces of each group: one per thread, or CHUNKS_PER_THREAD per thread where the cut side
    # is long enough that the extra packings cost little.
    length = max(m, n)
    per_group = -(-threads // groups)
    if length >= LONG_SIDE * CHUNKS_PER_THREAD * per_group:
        per_group *= CHUNKS_PER_THREAD
    pieces = max(1, min(per_group, length // MIN_PIECE))
    cuts = split_even(length, pieces, PIECE_ALIGN)
    if m >= n:
        return [(g, g + 1, r0, r1, 0, n) for g in range(groups) for r0, r1 in cuts]
    return [(g, g + 1, 0, m, c0, c1) for g in range(groups) for c0, c1 in cuts]
