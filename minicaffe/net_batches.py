"""pycaffe's batched passes over inputs of any length (``forward_all``, ``forward_backward_all``).

A mixin of :class:`minicaffe.net.Net`: the inputs are cut into batches of the
net's batch size, the last one padded with zeros, and the outputs concatenated
with the padding dropped.
"""

from __future__ import annotations

import numpy as np

from .errors import MinicaffeError


class BatchedPasses:
    """Mixed into Net; uses its ``forward``, ``backward``, ``plan`` and ``_blobs``."""

    def forward_all(self, blobs=None, **kwargs):
        """pycaffe's ``forward_all``: Forward over inputs of any length, in batches.

        The inputs are cut into batches of the net's batch size (the last one
        padded with zeros); the outputs (and ``blobs``) are concatenated, with
        the padding dropped.
        """
        outputs = {name: [] for name in list(self.plan.outputs) + [b for b in (blobs or []) if b not in self.plan.outputs]}
        for batch in self._batches(kwargs):
            for name, array in self.forward(blobs=blobs, **batch).items():
                _collect(outputs[name], array)
        return self._unpad(outputs, kwargs)

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """pycaffe's ``forward_backward_all``: batched Forward and Backward.

        Keyword arguments name inputs (for Forward) and outputs (their diffs, for
        Backward). Returns (outputs, input diffs), both concatenated over batches.
        """
        forward_args = {k: v for k, v in kwargs.items() if k in self.plan.inputs}
        backward_args = {k: v for k, v in kwargs.items() if k in self.plan.outputs}
        unknown = set(kwargs) - set(forward_args) - set(backward_args)
        if unknown:
            raise MinicaffeError(f"{', '.join(sorted(unknown))}: neither an input nor an output of this net")
        outputs = {name: [] for name in list(self.plan.outputs) + [b for b in (blobs or []) if b not in self.plan.outputs]}
        input_diffs = {name: [] for name in list(self.plan.inputs) + [d for d in (diffs or []) if d not in self.plan.inputs]}
        for forward_batch, backward_batch in zip(self._batches(forward_args), self._batches(backward_args)):
            for name, array in self.forward(blobs=blobs, **forward_batch).items():
                _collect(outputs[name], array)
            for name, array in self.backward(diffs=diffs, **backward_batch).items():
                _collect(input_diffs[name], array)
        reference = forward_args or backward_args
        return self._unpad(outputs, reference), self._unpad(input_diffs, reference)

    def _batch_size(self):
        return next(iter(self._blob_dict.values())).shape[0]

    def _batches(self, arrays):
        """Batches of the net's batch size over ``arrays`` (one dict per batch, last one zero-padded)."""
        if not arrays:
            while True:
                yield {}
        batch_size = self._batch_size()
        total = len(next(iter(arrays.values())))
        for start in range(0, total, batch_size):
            batch = {}
            for name, values in arrays.items():
                chunk = np.asarray(values[start:start + batch_size])
                if len(chunk) < batch_size:
                    padding = np.zeros((batch_size - len(chunk),) + chunk.shape[1:], dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, padding])
                batch[name] = chunk
            yield batch

    @staticmethod
    def _unpad(collected, reference):
        result = {name: np.asarray(values) for name, values in collected.items()}
        if reference:
            total = len(next(iter(reference.values())))
            result = {name: values[:total] for name, values in result.items()}
        return result


def _collect(collected, array):
    """Items of a batch's output; a scalar output (a loss) is kept once per batch.

    (pycaffe's forward_all fails on scalar outputs; this keeps one value per batch.)
    """
    if array.ndim == 0:
        collected.append(array.copy())
    else:
        collected.extend(array.copy())
