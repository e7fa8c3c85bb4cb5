"""MemoryData: batches from arrays given in Python with ``net.set_input_arrays(data, labels)``.

``memory_data_param``: ``batch_size``, ``channels``, ``height``, ``width``.
``data`` is N x channels x height x width and ``labels`` has N entries (1-D,
or N x 1 x 1 x 1 as pycaffe passes them), N a multiple of ``batch_size``.
Each Forward hands out the next ``batch_size`` rows, starting over after the
last. The label top is N after set-up and N x 1 x 1 x 1 after each Forward,
as in Caffe. As in Caffe, ``transform_param`` is *not* applied to these arrays (a
warning says so). pycaffe only accepts float32 arrays and keeps reading them
in place; here other dtypes are converted, and arrays already in the net's
dtype are kept by reference, so later changes to them show, as in pycaffe. pycaffe requires the MemoryData layer to be the net's first
layer; here ``set_input_arrays`` feeds the first MemoryData layer wherever it is.
In data-parallel training (:mod:`minicaffe.distributed`), every rank is given the
same arrays and a TRAIN net's layer takes its share: rank r of K the rows r, r + K,
... of the next ``batch_size`` x K (wrapping around), as the other data layers shard.

GPU: in GPU mode each Forward copies the batch's rows straight into the tops'
device memory (one copy per top; the host copies of the tops are not used).
The arrays are not kept on the device, since pycaffe reads them by reference.
"""

import numpy as np

from ..data.common import DataError, warn_once
from ..distributed import shard
from ..errors import GraphError
from ..layer import Layer
from ..registry import register


@register("MemoryData")
class MemoryDataLayer(Layer):
    exact_bottoms = 0
    exact_tops = 2

    def setup(self, bottom, top):
        param = self.layer_param.memory_data_param
        self.batch_size = int(param.batch_size)
        self.item_shape = (int(param.channels), int(param.height), int(param.width))
        if self.batch_size <= 0 or min(self.item_shape) <= 0:
            raise GraphError("memory_data_param: batch_size, channels, height and width must all be "
                             f"positive (got {self.batch_size}, {', '.join(map(str, self.item_shape))})",
                             layer=self.name)
        top[0].reshape((self.batch_size,) + self.item_shape)
        top[1].reshape((self.batch_size,))
        self._data = self._labels = None
        self.position = 0

    def reset(self, data, labels):
        """Hand the layer new arrays (pycaffe's ``set_input_arrays`` calls this)."""
        data = np.asarray(data)
        labels = np.asarray(labels)
        if data.ndim != 4 or data.shape[1:] != self.item_shape:
            raise DataError(f"set_input_arrays: data must be N x {' x '.join(map(str, self.item_shape))} "
                            f"(memory_data_param), got shape {data.shape}", layer=self.name)
        if labels.ndim == 4 and labels.shape[1:] == (1, 1, 1):
            labels = labels.reshape(-1)
        if labels.ndim != 1:
            raise DataError(f"set_input_arrays: labels must be 1-D (or N x 1 x 1 x 1), got shape {labels.shape}",
                            layer=self.name)
        if labels.shape[0] != data.shape[0]:
            raise DataError(f"set_input_arrays: data has {data.shape[0]} rows but labels has {labels.shape[0]}",
                            layer=self.name)
        if data.shape[0] == 0 or data.shape[0] % self.batch_size:
            raise DataError(f"set_input_arrays: the number of rows ({data.shape[0]}) must be a positive "
                            f"multiple of batch_size {self.batch_size}", layer=self.name)
        if self.layer_param.HasField("transform_param"):
            warn_once((self.name, "memory-transform"), f"layer '{self.name}': MemoryData does not apply "
                      "transform_param to arrays given through set_input_arrays (as in Caffe)")
        self._data = np.ascontiguousarray(data, dtype=self.dtype)
        self._labels = np.ascontiguousarray(labels, dtype=self.dtype)
        self.position = 0

    def reshape(self, bottom, top):
        pass  # shapes are fixed by memory_data_param

    def forward(self, bottom, top):
        data, labels = self._next_rows(top)
        top[0].data[...] = data
        top[1].data[...] = labels

    def forward_gpu(self, bottom, top):
        # The arrays stay the user's (read by reference, as pycaffe): each batch crosses when it is taken.
        data, labels = self._next_rows(top)
        top[0].upload_data(data)
        top[1].upload_data(labels)

    def _next_rows(self, top):
        """Shape the tops and move on: the next batch's data and labels (host arrays)."""
        if self._data is None:
            raise DataError("MemoryData has no arrays: call net.set_input_arrays(data, labels) first",
                            layer=self.name)
        rank, size = shard(self.phase)
        count = self._data.shape[0]
        if size == 1:
            rows = slice(self.position, self.position + self.batch_size)
        else:   # data-parallel TRAIN: rank r takes rows r, r + K, ... of the next batch_size * K (wrapping)
            rows = (self.position + rank + size * np.arange(self.batch_size)) % count
        top[0].reshape((self.batch_size,) + self.item_shape)
        # Caffe's label top is (N,) after set-up but N x 1 x 1 x 1 once Forward has run.
        top[1].reshape((self.batch_size, 1, 1, 1))
        batch = self._data[rows], self._labels[rows].reshape(-1, 1, 1, 1)
        self.position = (self.position + self.batch_size * size) % count
        return batch

    def backward(self, top, propagate_down, bottom):
        pass  # no bottoms

    def state(self) -> dict:
        return {"position": self.position}

    def restore(self, state):
        from ..data.common import cursor_int
        high = self._data.shape[0] if self._data is not None and self._data.shape[0] else None
        self.position = cursor_int(state, "position", self.name, high=high)

    cursor_state = state          # the names the solver's snapshots use
    restore_cursor = restore
