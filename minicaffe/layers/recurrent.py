"""RNN and LSTM: Caffe's recurrent layers, run as an internal net unrolled over time.

Bottoms: ``x`` (T x N x ..., T time steps of N independent streams), ``cont``
(T x N: 0 where a stream starts a new sequence, which resets its state), an
optional static input ``x_static`` (N x ..., the same at every step), and with
``recurrent_param.expose_hidden`` the initial state (RNN: ``h_0``; LSTM:
``h_0``, ``c_0``; each 1 x N x num_output). Tops: the output (T x N x
num_output), then with ``expose_hidden`` the final state (RNN: ``h_T``; LSTM:
``h_T``, ``c_T``). ``cont`` takes no gradient.

As BVLC Caffe's RecurrentLayer, ``setup`` writes the unrolled net as a
NetParameter (:mod:`.recurrent_unroll`: InnerProduct, Scale, Eltwise, Slice,
Concat, TanH or LSTMUnit layers, one group per step, the per-step weights
shared by ``param { name }``), builds it as a :class:`~minicaffe.net.Net`, and
takes the parameters it owns as this layer's ``blobs``, in Caffe's order and
shapes, so ``.caffemodel`` weights load as they are:

- RNN: ``W_xh`` (D x K), ``b_h`` (D), [``W_xh_static`` (D x K_static)],
  ``W_hh`` (D x D), ``W_ho`` (D x D), ``b_o`` (D);
- LSTM: ``W_xc`` (4D x K), ``b_c`` (4D), [``W_xc_static`` (4D x K_static)],
  ``W_hc`` (4D x D), the 4D rows being the gates i, f, o, g.

(K is the product of ``x``'s axes after the first two; K_static of
``x_static``'s after the first.) The internal net's layers hold these very
blobs, so their gradients accumulate in this layer's diffs.

Without ``expose_hidden`` the state is carried between Forward calls, as in
Caffe: each Forward starts from the previous one's final state (zero at first),
which ``cont`` 0 at a stream's first step discards. ``debug_info`` logs the
internal net's per-layer magnitudes. T is fixed at setup; N may change.

With ``expose_hidden`` the gradients are Caffe's, which treat the exposed
state as data only. Caffe's RecurrentLayer shares the ``h_0``/``c_0`` bottoms
and the ``h_T``/``c_T`` tops with the unrolled net's state blobs by
``ShareData`` alone (in Reshape and Forward; ``ShareDiff`` only for ``x``,
``x_static`` and the output), puts its pseudo-losses on the output only, and
sets no ``force_backward``, so Backward is the non-exposed one started from the
given ``h_0``/``c_0``:

- ``x``, ``x_static`` and the parameters get the gradient of
  ``sum(top[0].diff * output)`` alone;
- the ``h_T``/``c_T`` top diffs are never read (a diff on ``h_T`` is not added
  to the output's last step either);
- ``h_0``/``c_0`` get no gradient. Caffe leaves their diffs unwritten; here
  they are set to 0 when a gradient is asked for (what a fresh diff holds).

These are the true gradients of a loss that does not use the final-state tops,
``h_0``/``c_0`` held fixed; chunks chained through the exposed state train as
truncated backpropagation through time.

GPU: no kernels of its own. In GPU mode the unrolled net's layers run their
own GPU paths (InnerProduct, Eltwise, TanH, LSTMUnit... wherever they have
them), on blobs that share the outer bottoms' and tops' memory on the device
as on the host; the carried state is copied on the device (gpu_blas.copy), and
the exposed initial states' diffs are zeroed there, so the recurrent layer itself
moves nothing between host and device.
"""

from __future__ import annotations

import numpy as np

from .. import gpu_blas
from ..graph import TRAIN
from ..layer import Layer
from ..memory import allocation_allowed
from ..proto import caffe_pb2
from ..registry import register
from .recurrent_unroll import add_pseudo_losses, build_lstm, build_rnn


class RecurrentLayer(Layer):
    """What RNN and LSTM share: the internal net, its inputs and outputs, the state carry."""

    never_backward_bottoms = (1,)
    #: the unrolled net's names for the state fed in and (``{T}``: the step count) carried out
    state_inputs = ()
    state_outputs = ()
    output_name = ""
    build_unrolled = None   # (net_param, T, N, num_output, static_input, recurrent_param) -> None

    def __init__(self, layer_param, phase=TRAIN, dtype=np.float32):
        super().__init__(layer_param, phase=phase, dtype=dtype)
        self.expose_hidden = layer_param.recurrent_param.expose_hidden
        exposed = len(self.state_inputs) if self.expose_hidden else 0
        self.min_bottoms = 2 + exposed
        self.max_bottoms = 3 + exposed
        self.exact_tops = 1 + exposed

    # ---------------------------------------------------------------- setup
    def setup(self, bottom, top):
        from ..net import Net

        param = self.layer_param.recurrent_param
        if param.num_output <= 0:
            raise self.shape_error("recurrent_param.num_output must be positive")
        self.num_output = int(param.num_output)
        self._check_sequence_shapes(bottom, setting_up=True)
        self.static_input = len(bottom) > 2 + (len(self.state_inputs) if self.expose_hidden else 0)
        if self.static_input:
            self._check_static(bottom[2])
        self._refuse_an_unroll_past_the_limit(param)

        net_param = caffe_pb2.NetParameter()
        net_param.name = f"{self.name or self.type} (unrolled)"
        inputs = net_param.layer.add(name="input", type="Input")
        for name, blob in [("x", bottom[0]), ("cont", bottom[1])] + (
                [("x_static", bottom[2])] if self.static_input else []):
            inputs.top.append(name)
            inputs.input_param.shape.add().dim.extend(blob.shape)
        type(self).build_unrolled(net_param, self.T, self.N, self.num_output, self.static_input, param)
        state_out_names = [name.format(T=self.T) for name in self.state_outputs]
        if self.name:
            for layer in net_param.layer:
                layer.name = f"{self.name}_{layer.name}"
        # Caffe's pseudo-losses: they make the output need Backward, and are never run. As in
        # Caffe, none sits on the final state, and there is no force_backward: the state
        # inputs need no Backward.
        self._pseudo_losses = add_pseudo_losses(net_param, [self.output_name])

        self.unrolled = net = Net(net_param, self.phase, dtype=self.dtype)
        net.debug_info = bool(param.debug_info)
        blobs = net.blobs
        self._x, self._cont = blobs["x"], blobs["cont"]
        self._x_static = blobs["x_static"] if self.static_input else None
        self._state_in = [blobs[name] for name in self.state_inputs]
        self._state_out = [blobs[name] for name in state_out_names]
        self._output = blobs[self.output_name]
        names = [layer.name for layer in net.layers]
        self._last_layer = names.index(self._pseudo_losses[0]) - 1

        # This layer's parameters: the blobs the unrolled net owns, in its order.
        self.blobs = list(net.learnable_params)
        index_of = {id(blob): k for k, blob in enumerate(self.blobs)}
        self._bindings = [(layer, j, index_of[id(blob)])
                          for layer in net.layers for j, blob in enumerate(layer.blobs)]
        self._bound = list(self.blobs)
        self.param_propagate_down = [True] * len(self.blobs)
        if allocation_allowed():
            for blob in self._state_out:
                blob.diff[...] = 0   # no gradient crosses from one batch into the previous

    def _refuse_an_unroll_past_the_limit(self, param):
        """The unrolled net holds a few layers per time step, built (as Python objects and messages) before
        any memory estimate can count them: a T whose layers alone pass the memory limit (the --max-memory
        block, MINICAFFE_MAX_MEMORY or the process's own, :func:`minicaffe.memory_budget.memory_limit`) is a
        MemoryLimitError naming the layer and T, before anything is built."""
        from ..errors import MemoryLimitError
        from ..memory_budget import LAYER_OVERHEAD, format_size, memory_limit
        limit = memory_limit()
        if limit.bytes is None:
            return
        counts = []
        for steps in (1, 2):        # layers per step: the difference between unrolling 2 steps and 1
            scratch = caffe_pb2.NetParameter()
            type(self).build_unrolled(scratch, steps, 1, 1, self.static_input, param)
            counts.append(len(scratch.layer))
        layers = self.T * (counts[1] - counts[0])
        needed = layers * LAYER_OVERHEAD
        if needed > limit.bytes:
            raise MemoryLimitError(
                f"layer '{self.name}': {self.type} unrolls its T = {self.T} time steps (bottom 0's first axis) "
                f"into about {layers} layers, which need about {format_size(needed)} before their blobs, more "
                f"than the {limit} this process may use. Nothing was built; give shorter sequences, or "
                "--max-memory SIZE (or MINICAFFE_MAX_MEMORY) to set another limit", limit=limit, needed=needed)

    # ---------------------------------------------------------------- shapes
    def _check_sequence_shapes(self, bottom, setting_up=False):
        x, cont = bottom[0], bottom[1]
        if x.ndim < 3:
            raise self.shape_error("bottom 0 (x) must be T x N x ... with at least 3 axes", actual=x.shape)
        if setting_up:
            self.T = x.shape[0]
        elif x.shape[0] != self.T:
            raise self.shape_error("the number of time steps (bottom 0's first axis) is fixed at setup",
                                   expected=(self.T,), actual=x.shape)
        self.N = x.shape[1]
        if cont.shape != (self.T, self.N):
            raise self.shape_error("bottom 1 (cont) must be T x N, as bottom 0's first two axes",
                                   expected=(self.T, self.N), actual=cont.shape)

    def _check_static(self, blob):
        if blob.ndim < 1 or blob.shape[0] != self.N:
            raise self.shape_error("bottom 2 (the static input) must be N x ..., N as bottom 0's second axis",
                                   expected=(self.N,), actual=blob.shape)

    def reshape(self, bottom, top):
        self._check_sequence_shapes(bottom)
        self._x.reshape(bottom[0].shape)
        self._cont.reshape(bottom[1].shape)
        if self.static_input:
            self._check_static(bottom[2])
            self._x_static.reshape(bottom[2].shape)
        state_shape = (1, self.N, self.num_output)
        for blob in self._state_in:
            blob.reshape(state_shape)
        self.unrolled.reshape()
        self._x.share_data(bottom[0])
        self._x.share_diff(bottom[0])
        self._cont.share_data(bottom[1])
        if self.static_input:
            self._x_static.share_data(bottom[2])
            self._x_static.share_diff(bottom[2])
        if self.expose_hidden:
            first = 3 if self.static_input else 2
            for index, (blob, inner) in enumerate(zip(bottom[first:], self._state_in), start=first):
                if blob.shape != state_shape:
                    raise self.shape_error(f"bottom {index} (initial state {self.state_inputs[index - first]}) "
                                           "must be 1 x N x num_output", expected=state_shape, actual=blob.shape)
                inner.share_data(blob)
        top[0].reshape(self._output.shape)
        top[0].share_data(self._output)
        top[0].share_diff(self._output)
        for blob, inner in zip(top[1:], self._state_out):
            blob.reshape(inner.shape)
            blob.share_data(inner)    # its diff stays the top's own, unread (Caffe's)

    # ---------------------------------------------------------------- running
    def _bind_params(self):
        """Give the unrolled net this layer's current blobs (the outer net may have swapped in shared ones)."""
        if any(mine is not bound for mine, bound in zip(self.blobs, self._bound)):
            for layer, j, k in self._bindings:
                layer.blobs[j] = self.blobs[k]
            self._bound = list(self.blobs)

    def reset(self):
        """Zero the carried state (Caffe's RecurrentLayer::Reset)."""
        for blob in self._state_out:
            blob.data[...] = 0

    def forward(self, bottom, top):
        self._bind_params()
        if not self.expose_hidden:
            for inner, carried in zip(self._state_in, self._state_out):
                inner.data[...] = carried.data
        self.unrolled.forward_from_to(0, self._last_layer)

    def forward_gpu(self, bottom, top):
        self._bind_params()
        if not self.expose_hidden:
            for inner, carried in zip(self._state_in, self._state_out):
                if inner.count:
                    gpu_blas.copy(carried.gpu_data, inner.mutable_gpu_data)
        self.unrolled.forward_from_to(0, self._last_layer)

    def _backward_unrolled(self):
        self._bind_params()
        for layer, j, k in self._bindings:
            layer.param_propagate_down[j] = self.param_propagate_down[k]
        self.unrolled.backward_from_to(self._last_layer, 0)

    def _exposed_state_bottoms(self, propagate_down, bottom):
        """The initial-state bottoms that ask for a gradient (they get zeros)."""
        if not self.expose_hidden:
            return []
        first = 3 if self.static_input else 2
        return [bottom[index] for index in range(first, len(bottom)) if propagate_down[index]]

    def backward(self, top, propagate_down, bottom):
        self._backward_unrolled()
        for blob in self._exposed_state_bottoms(propagate_down, bottom):
            blob.diff[...] = 0

    def backward_gpu(self, top, propagate_down, bottom):
        self._backward_unrolled()
        for blob in self._exposed_state_bottoms(propagate_down, bottom):
            if blob.count:
                gpu_blas.fill(blob.mutable_gpu_diff, 0)


@register("RNN")
class RNNLayer(RecurrentLayer):
    """Elman RNN: ``h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])``,
    output ``o_t = tanh(W_ho h_t + b_o)``."""

    state_inputs = ("h_0",)
    state_outputs = ("h_{T}",)
    output_name = "o"
    build_unrolled = staticmethod(build_rnn)


@register("LSTM")
class LSTMLayer(RecurrentLayer):
    """LSTM: gates ``W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static]`` through
    LSTMUnit (see :mod:`.lstm_unit`); the output is ``h``."""

    state_inputs = ("h_0", "c_0")
    state_outputs = ("h_{T}", "c_T")
    output_name = "h"
    build_unrolled = staticmethod(build_lstm)
