"""Reading ahead of compute: a background thread that keeps batches ready, as Caffe's
prefetching data layers do (``data_param.prefetch`` batches, 4 by default).

:class:`Prefetcher` calls ``produce()`` on its own thread and queues up to
``depth`` results; :meth:`Prefetcher.get` hands them out in order. An exception
raised by ``produce`` is handed out in its turn (and again on every later
``get``), so a corrupt record fails the Forward that would have used it.

Only I/O and decoding belong in ``produce``: protobuf parsing, Pillow, lmdb,
h5py and numpy. numba kernels compiled with ``parallel=True`` must not run
there: under numba's default workqueue threading layer, parallel kernels
entered from two threads at once abort the process. The transformation
kernel runs on the consumer's thread for that reason (and so random draws
follow the consumer's order).

GPU: in GPU mode ``produce`` also copies the batch to the device, on a CUDA
stream of the prefetch thread's own (see :func:`minicaffe.data.layer_base.upload_batch`):
copies, not kernels, so they overlap the consumer's kernels safely.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref

_live = weakref.WeakSet()


class Prefetcher:
    """Runs ``produce()`` on a daemon thread, keeping up to ``depth`` results queued."""

    def __init__(self, produce, depth=4, name="minicaffe-prefetch"):
        self._produce = produce
        self.depth = max(1, int(depth))
        self.name = name
        self._queue = queue.Queue(self.depth)
        self._stopping = threading.Event()
        self._thread = None
        self._error = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ready(self) -> int:
        """How many results are queued now."""
        return self._queue.qsize()

    def start(self):
        if self.running:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        _live.add(self)

    def _run(self):
        while not self._stopping.is_set():
            try:
                item = (True, self._produce())
            except BaseException as exc:          # handed to the consumer, in order
                item = (False, exc)
            if self._stopping.is_set():
                return
            self._queue.put(item)                 # blocks while full; stop() drains to release it
            if not item[0]:
                return

    def get(self):
        """The next result (waiting for it); re-raises the producer's exception in its turn."""
        if self._error is not None:
            raise self._error
        if not self.running and self._queue.empty():
            self.start()
        while True:
            try:
                ok, value = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self.running and self._queue.empty():
                    self.start()               # stopped from elsewhere: read on
        if not ok:
            self._error = value
            raise value
        return value

    def stop(self):
        """Stop the thread and drop what it had read ahead."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            while thread.is_alive():
                self._drain()
                thread.join(timeout=0.05)
        self._drain()
        self._thread = None
        self._error = None

    def _drain(self):
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass


@atexit.register
def _stop_all():
    for prefetcher in list(_live):
        prefetcher.stop()
