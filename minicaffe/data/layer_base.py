"""The prefetching data layer (Caffe's BasePrefetchingDataLayer) the data layer types build on.

Setup opens the layer's source and shapes the tops from its first record only;
then (except under ``minicaffe check``) a :class:`~.prefetch.Prefetcher` starts
reading batches ahead, ``data_param.prefetch`` of them (4 by default), as
Caffe does for every prefetching layer. Forward takes the next batch, shapes
the tops from it (as Caffe's Forward does) and fills them; ``reshape`` reads
no data.

GPU: in GPU mode the prefetch thread also puts each batch it reads into
device memory, on a CUDA stream of its own through a pinned host buffer, and
waits for that copy before queueing the batch, so the copy overlaps the
current batch's kernels and the batch is on the device when Forward takes it.
``forward_gpu`` hands the device arrays to the tops without a copy
(``Blob.set_gpu_data``, as Caffe's Forward_gpu), or, for transformed layers,
runs the transformation (crop, mirror, mean, scale) as a kernel from the raw
device batch into the top; random offsets and flips are drawn as on the CPU,
so both modes give the same tops. Each top filled from a prefetched batch
counts as one host-to-device copy (``SyncedArray.copies``): the batch crossed.
A batch read ahead in CPU mode is copied over when Forward takes it.

Snapshots: :meth:`PrefetchingDataLayer.state` is the source's position after
the last batch Forward consumed (batches read ahead do not count), and
:meth:`PrefetchingDataLayer.restore` puts the source back there, dropping what
was read ahead. States are plain JSON-serialisable dicts.
"""

from __future__ import annotations

import copy
import weakref

import numpy as np

from .. import gpu
from ..blob import SyncedArray
from ..errors import GraphError
from ..layer import Layer
from ..memory import ShapeUnknown, shape_inference_active
from ..mode import device, mode
from .common import MissingDependency, require_path
from .prefetch import Prefetcher
from .transform import DataTransformer


class PrefetchingDataLayer(Layer):
    """A data layer whose batches are read on a background thread.

    Subclasses define ``open_source()`` (the source: ``read_batch``, ``state``,
    ``restore``, ``close``; ``batch_size`` set), ``initial_top_shapes(top)``
    (from the source's first record) and ``fill_tops(batch, top)``.
    """

    exact_bottoms = 0
    batch_size = 0

    # ------------------------------------------------------------ lifecycle
    def setup(self, bottom, top):
        self._prefetcher = None
        self.source = None
        try:
            self.source = self.open_source()
            shapes = self.initial_top_shapes(top)
        except BaseException as exc:
            if self.source is not None:
                self.source.close()
            if isinstance(exc, MissingDependency) and shape_inference_active():
                raise ShapeUnknown(str(exc)) from None
            raise
        for blob, shape in zip(top, shapes):
            blob.reshape(shape)
        self._consumed = self.source.state()
        if shape_inference_active():
            self.source.close()                   # shapes only: nothing more will be read
        else:
            self._start()

    def positive_batch_size(self, value, field):
        if int(value) <= 0:
            raise GraphError(f"{field} must be positive (got {int(value)})", layer=self.name)
        return int(value)

    def prefetch_depth(self):
        return max(1, int(self.layer_param.data_param.prefetch))

    def _start(self):
        source, count, stack, dtype = self.source, self.batch_size, self.stacks_items, self.dtype
        staging = {}        # the prefetch thread's stream and pinned buffers (GPU mode)

        def produce():
            batch = source.read_batch(count)
            if stack and batch.items and len({item.shape for item in batch.items}) == 1:
                batch.stacked = np.stack(batch.items)
                batch.items = list(batch.stacked)       # views: the decoded copies can go
            if mode() == "gpu":
                upload_batch(batch, dtype, staging)
            return batch

        self._prefetcher = Prefetcher(produce, self.prefetch_depth(), name=f"minicaffe-prefetch-{self.name}")
        self._prefetcher.start()
        weakref.finalize(self, _shut_down, self._prefetcher, source)

    stacks_items = True

    def reshape(self, bottom, top):
        pass  # tops are shaped at setup and by each Forward, from the data

    def _take_batch(self):
        if self._prefetcher is None:
            raise GraphError(f"{self.type} was set up for shape inference only and cannot run", layer=self.name)
        batch = self._prefetcher.get()
        self._consumed = batch.state
        return batch

    def forward(self, bottom, top):
        # A batch of another size reaches the layers downstream: each reshapes before its Forward.
        self.fill_tops(self._take_batch(), top)

    def forward_gpu(self, bottom, top):
        self.fill_tops_gpu(self._take_batch(), top)

    def fill_tops_gpu(self, batch, top):
        """The tops of a batch read as one array per top (HDF5Data, WindowData), on the device."""
        arrays = batch.device or [None] * len(batch.tops)
        for blob, values, array in zip(top, batch.tops, arrays):
            blob.reshape(values.shape)
            if array is None:           # read ahead in CPU mode: it crosses now
                blob.upload_data(values)
            else:
                blob.set_gpu_data(array)

    def backward(self, top, propagate_down, bottom):
        pass  # no bottoms

    # ------------------------------------------------------------ snapshots
    def state(self) -> dict:
        """Where the data stands after the last consumed batch (a JSON-serialisable dict)."""
        return copy.deepcopy(self._consumed)

    def restore(self, state):
        """Continue from ``state`` (from :meth:`state`), dropping batches read ahead."""
        running = self._prefetcher is not None
        if running:
            self._prefetcher.stop()
        self.source.restore(copy.deepcopy(state))
        self._consumed = self.source.state()
        if running:
            self._prefetcher.start()

    # The names the solver's snapshots use (minicaffe/solvers/solver.py).
    def cursor_state(self) -> dict:
        return self.state()

    def restore_cursor(self, state):
        self.restore(state)

    def close(self):
        """Stop the prefetch thread and close the source."""
        if self._prefetcher is not None:
            self._prefetcher.stop()
        if self.source is not None:
            self.source.close()


def upload_batch(batch, dtype, staging):
    """On the prefetch thread: copy the batch to the device (``batch.device``), through pinned buffers on the
    thread's own stream, and wait for the copy, so the queued batch is ready on the device.

    Uploads the tops (in the net's dtype) of a batch that has them, else the stacked raw items (in their own
    dtype: the transformation kernel converts them as the CPU kernel does) and the labels. Items of
    different shapes are not uploaded: Forward transforms them on the host."""
    if batch.tops is not None:
        arrays = [np.asarray(values, dtype=dtype) for values in batch.tops]
    elif batch.stacked is not None:
        arrays = [batch.stacked, np.asarray(batch.labels, dtype=dtype)]
    else:
        return
    cuda = gpu.require()
    with cuda.gpus[device()]:
        stream = staging.get("stream")
        if stream is None:
            stream = staging["stream"] = cuda.stream()
        copies = []
        for index, values in enumerate(arrays):
            flat = np.ascontiguousarray(values).reshape(-1)
            pinned = staging.get(index)
            if pinned is None or pinned.shape != flat.shape or pinned.dtype != flat.dtype:
                pinned = staging[index] = cuda.pinned_array(flat.shape, dtype=flat.dtype)
            pinned[...] = flat
            copies.append(cuda.to_device(pinned, stream=stream))
        stream.synchronize()        # done before the batch is queued, and the pinned buffers are free again
    batch.device = copies


def _shut_down(prefetcher, source):
    prefetcher.stop()
    source.close()


class TransformingDataLayer(PrefetchingDataLayer):
    """A prefetching layer with a ``transform_param`` and tops (data, optional label)."""

    def setup(self, bottom, top):
        self.transformer = DataTransformer(self.layer_param.transform_param, self.phase, self.name, self.dtype)
        super().setup(bottom, top)

    def first_item_shape(self) -> tuple:
        return self.source.first_shape()

    def initial_top_shapes(self, top):
        item = self.first_item_shape()
        if not shape_inference_active():
            self.transformer.load_mean()
        shape = self.transformer.output_shape(item, "the first record")
        shapes = [(self.batch_size,) + tuple(shape)]
        if len(top) > 1:
            shapes.append((self.batch_size,))
        return shapes

    def fill_tops(self, batch, top):
        count = len(batch.items)
        shape = self.transformer.output_shape(batch.items[0].shape, batch.keys[0])
        top[0].reshape((count,) + tuple(shape))
        self.transformer.apply(batch.items, top[0].data, batch.keys, batch.stacked)
        if len(top) > 1:
            top[1].reshape((count,))
            top[1].data[...] = batch.labels

    def fill_tops_gpu(self, batch, top):
        count = len(batch.items)
        if batch.stacked is None:       # items of different sizes (cropped): transformed on the host
            shape = self.transformer.output_shape(batch.items[0].shape, batch.keys[0])
            top[0].reshape((count,) + tuple(shape))
            values = np.empty(top[0].shape, dtype=self.dtype)
            self.transformer.apply(batch.items, values, batch.keys)
            top[0].upload_data(values)
            if len(top) > 1:
                top[1].reshape((count,))
                top[1].upload_data(batch.labels)
            return
        item_shape = tuple(batch.stacked.shape[1:])
        shape = self.transformer.output_shape(item_shape, batch.keys[0])
        top[0].reshape((count,) + tuple(shape))
        if batch.device:
            raw, labels = batch.device
        else:                           # read ahead in CPU mode: it crosses now
            raw, labels = gpu.to_device(batch.stacked.reshape(-1)), None
        self.transformer.apply_gpu(raw, item_shape, count, top[0].gpu_data_to_overwrite(), shape)
        SyncedArray.copies["to_device"] += 1        # the raw batch crossed (to the prefetch stream) for this top
        if len(top) > 1:
            top[1].reshape((count,))
            if labels is None:
                top[1].upload_data(batch.labels)
            else:
                top[1].set_gpu_data(labels)


def source_path(layer, path, what, field):
    """``require_path`` for a layer's source."""
    return require_path(path, what, layer.name, field)
