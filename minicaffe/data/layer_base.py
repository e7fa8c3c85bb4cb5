"""The prefetching data layer (Caffe's BasePrefetchingDataLayer) the data layer types build on.

Setup opens the layer's source and shapes the tops from its first record only;
then (except under ``minicaffe check``) a :class:`~.prefetch.Prefetcher` starts
reading batches ahead, ``data_param.prefetch`` of them (4 by default), as
Caffe does for every prefetching layer. Forward takes the next batch, shapes
the tops from it (as Caffe's Forward does) and fills them; ``reshape`` reads
no data.

Snapshots: :meth:`PrefetchingDataLayer.state` is the source's position after
the last batch Forward consumed (batches read ahead do not count), and
:meth:`PrefetchingDataLayer.restore` puts the source back there, dropping what
was read ahead. States are plain JSON-serialisable dicts.
"""

from __future__ import annotations

import copy
import weakref

import numpy as np

from ..errors import GraphError
from ..layer import Layer
from ..memory import ShapeUnknown, shape_inference_active
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
        source, count, stack = self.source, self.batch_size, self.stacks_items

        def produce():
            batch = source.read_batch(count)
            if stack and batch.items and len({item.shape for item in batch.items}) == 1:
                batch.stacked = np.stack(batch.items)
                batch.items = list(batch.stacked)       # views: the decoded copies can go
            return batch

        self._prefetcher = Prefetcher(produce, self.prefetch_depth(), name=f"minicaffe-prefetch-{self.name}")
        self._prefetcher.start()
        weakref.finalize(self, _shut_down, self._prefetcher, source)

    stacks_items = True

    def reshape(self, bottom, top):
        pass  # tops are shaped at setup and by each Forward, from the data

    def forward(self, bottom, top):
        if self._prefetcher is None:
            raise GraphError(f"{self.type} was set up for shape inference only and cannot run", layer=self.name)
        batch = self._prefetcher.get()
        self._consumed = batch.state
        # A batch of another size reaches the layers downstream: each reshapes before its Forward.
        self.fill_tops(batch, top)

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


def source_path(layer, path, what, field):
    """``require_path`` for a layer's source."""
    return require_path(path, what, layer.name, field)
