"""pycaffe's lower-level Net bindings, which real pycaffe code reaches for.

A mixin of :class:`minicaffe.net.Net`: the C++ Net's underscore bindings
(``_forward``, ``_backward``, ``_blobs``, ``_blob_names``, ``_blob_loss_weights``,
``_inputs``, ``_outputs`` as blob indices, ``_bottom_ids``, ``_top_ids``,
``_set_input_arrays``) and the per-layer callbacks (``before_forward`` ...)
that :meth:`Net.forward_from_to` and :meth:`Net.backward_from_to` call.
"""

from __future__ import annotations


class PycaffeBindings:
    """Mixed into Net; uses its ``_blob_dict``, ``_blob_index``, ``_callbacks`` and ``plan``."""

    # pycaffe's Net callbacks: ``callback(layer_index)`` around each layer's Forward or Backward.
    def before_forward(self, callback):
        self._callbacks["before_forward"].append(callback)

    def after_forward(self, callback):
        self._callbacks["after_forward"].append(callback)

    def before_backward(self, callback):
        self._callbacks["before_backward"].append(callback)

    def after_backward(self, callback):
        self._callbacks["after_backward"].append(callback)

    # pycaffe's underscore bindings of the C++ Net, which real pycaffe code uses.
    def _forward(self, start: int, end: int) -> float:
        return self.forward_from_to(start, end)

    def _backward(self, start: int, end: int) -> None:
        self.backward_from_to(start, end)

    def _bottom_ids(self, layer_index: int) -> list:
        return [self._blob_index[name] for name in self.plan.layers[layer_index].bottoms]

    def _top_ids(self, layer_index: int) -> list:
        return [self._blob_index[name] for name in self.plan.layers[layer_index].tops]

    def _set_input_arrays(self, data, labels):
        return self.set_input_arrays(data, labels)

    @property
    def _blob_names(self):
        return list(self._blob_dict)

    @property
    def _blobs(self):
        return list(self._blob_dict.values())

    @property
    def _blob_loss_weights(self):
        return list(self.blob_loss_weights.values())

    @property
    def _inputs(self):
        return [self._blob_index[name] for name in self.plan.inputs]

    @property
    def _outputs(self):
        return [self._blob_index[name] for name in self.plan.outputs]
