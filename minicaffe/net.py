"""Net: builds the layers of a planned graph and runs Forward and Backward.

The graph is planned by :mod:`minicaffe.graph` (filtering, splits, loss weights,
sharing); this module only wires blobs to layers, decides which layers need
Backward (Caffe's ``Net::Init`` rules), and runs them in order. The Python
surface follows pycaffe's ``caffe.Net``.

GPU: in GPU mode the net's own work stays on the device too: clearing the
parameter diffs is a fill kernel, ``update`` (data -= diff) an axpy, and
debug_info's magnitudes are device reductions, so a training iteration moves
only the loss scalar and the data layers' next batch between host and device.
What the user reads (``forward()``'s outputs, ``blob.data``) is copied when read.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .blob import Blob
from .errors import GraphError, MinicaffeError, ShapeError
from .fold import find_chains, folding_enabled
from .graph import TEST, TRAIN, phase_value, plan_net
from .layer import Layer
from .mode import mode
from .net_batches import BatchedPasses
from .net_pycaffe import PycaffeBindings
from .net_weights import NetWeights
from .proto import caffe_pb2
from .registry import create_layer


class Net(BatchedPasses, NetWeights, PycaffeBindings):
    """A net built for one phase (pycaffe's ``caffe.Net``).

    ``Net(model, phase, level=0, stages=None, weights=None, dtype=numpy.float32)``
    or the legacy ``Net(model, weights, phase)``. ``model`` is a ``.prototxt``
    path or a NetParameter; ``dtype=numpy.float64`` builds a double net (for
    gradient checks). ``end="LAYER"`` (minicaffe) builds only the layers up to
    and including LAYER, leaving the rest unparsed, so a Caffe fork's layer or
    field after it does not stop the net; ``net.notes`` says what was left out.
    ``max_memory`` (``"8G"``, bytes, or ``"none"``) replaces the memory limit the
    net is held to before it allocates (see :mod:`minicaffe.memory_budget`): a
    net whose estimate exceeds it raises MemoryLimitError unbuilt.
    """

    def __init__(self, model, *args, phase=None, level=0, stages=None, weights=None, dtype=np.float32,
                 input_shapes=None, shape_inference=False, end=None, max_memory=None):
        phase, weights = _constructor_args(args, phase, weights)
        # `end`: build only the layers up to and including this one (file order), leaving out the
        # rest unparsed, so a Caffe fork's layer after it does not stop the net; `notes` says what.
        self.notes = []
        self._shape_inference = shape_inference
        self.max_memory = max_memory    # None: --max-memory, MINICAFFE_MAX_MEMORY, or the process's limit
        self.debug_info = False     # Caffe's debug_info: log per-layer magnitudes in Forward and Backward
        # TEST nets merge a BatchNorm/Scale/Bias chain into the Convolution it follows (minicaffe.fold).
        self.fold_inference = True
        self.dtype = np.dtype(dtype)
        if isinstance(model, caffe_pb2.NetParameter):
            from .proto.upgrade import upgrade_net
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(model)
            upgrade_net(net_param, source=net_param.name or "<NetParameter>")
            self._source = net_param.name or "<NetParameter>"
            if end is not None:
                self.notes = _keep_layers_until(net_param, end)
        elif end is not None:
            from .proto.text import read_net_until
            net_param, self.notes = read_net_until(model, end)
            self._source = os.fspath(model)
        else:
            from .proto.text import read_net
            net_param = read_net(model)
            self._source = os.fspath(model)
        # Python layers also look for their module in the prototxt's folder (None: no file).
        self._model_dir = (None if isinstance(model, caffe_pb2.NetParameter)
                           else os.path.dirname(os.path.abspath(self._source)))
        if input_shapes:
            _override_input_shapes(net_param, input_shapes)
        self.plan = plan_net(net_param, phase=phase, level=level, stages=stages or ())
        self.phase = self.plan.state.phase
        if shape_inference:
            from .memory import shapes_only
            with shapes_only():
                self._build()
        else:   # shapes first: a net that cannot fit is refused before it allocates (minicaffe.memory_budget)
            from .memory_budget import build_within_limit
            build_within_limit(self, max_memory)
        if weights is not None:
            self.copy_from(weights)

    # ---------------------------------------------------------------- building
    def _build(self):
        plan = self.plan
        self._blob_dict = OrderedDict()
        self._layers = []
        self._bottom_vecs, self._top_vecs = [], []
        self._bottom_need_backward = []
        blob_need_backward = {}
        layer_need_backward = []
        owners = {}  # (layer name, param index) -> Blob, for sharing by name
        self._learnable = []            # LearnableParam per distinct parameter blob, in Caffe's order
        self._learnable_by_key = {}
        self.unknown_shapes = set()  # shape inference: blobs whose shape needs data
        self.skipped_layers = set()
        self.unknown_reasons = {}   # layer name -> why its shapes are unknown
        for planned in plan.layers:
            layer = self._create_layer(planned)
            bottoms = [self._blob_dict[name] for name in planned.bottoms]
            tops = []
            for name in planned.tops:
                if name not in self._blob_dict:
                    self._blob_dict[name] = Blob((), dtype=self.dtype, name=name)
                    blob_need_backward[name] = False
                tops.append(self._blob_dict[name])
            bottom_need = []
            need_backward = False
            for j, name in enumerate(planned.bottoms):
                need = blob_need_backward[name]
                need_backward |= need
                if planned.param.propagate_down:
                    need = bool(planned.param.propagate_down[j])
                bottom_need.append(need)
            if not self._set_up_layer(layer, planned, bottoms, tops):
                self._layers.append(layer)
                self._bottom_vecs.append(bottoms)
                self._top_vecs.append(tops)
                self._bottom_need_backward.append(bottom_need)
                layer_need_backward.append(need_backward)
                continue
            specs = planned.param.param
            if len(specs) > len(layer.blobs):
                raise GraphError(f"{len(specs)} param specs given but {layer.type} has {len(layer.blobs)} "
                                 "parameter blob(s)", layer=layer.name)
            for index in range(len(layer.blobs)):
                lr_mult = specs[index].lr_mult if index < len(specs) else 1.0
                layer.param_propagate_down[index] = lr_mult != 0
                need_backward |= lr_mult != 0
            self._share_params(planned, layer, owners)
            for index, blob in enumerate(layer.blobs):
                owners.setdefault((layer.name, index), blob)
            self._register_learnable(planned, layer)
            if need_backward:
                for name in planned.tops:
                    blob_need_backward[name] = True
            self._layers.append(layer)
            self._bottom_vecs.append(bottoms)
            self._top_vecs.append(tops)
            self._bottom_need_backward.append(bottom_need)
            layer_need_backward.append(need_backward)
        self._layer_need_backward = _prune_backward(plan, self._layers, layer_need_backward,
                                                    self._bottom_need_backward)
        if plan.force_backward:
            self._force_backward(blob_need_backward)
        self._blob_need_backward = blob_need_backward
        self._layer_names = [layer.name for layer in self._layers]
        self._blob_index = {name: index for index, name in enumerate(self._blob_dict)}
        self._folds = find_chains(self)
        self._ran_folded = set()        # Convolutions whose chain the last Forward ran folded
        self._callbacks = {"before_forward": [], "after_forward": [], "before_backward": [], "after_backward": []}

    def _create_layer(self, planned):
        """The layer object; under shape inference, a placeholder when it cannot be created here."""
        from .layers.python_layer import model_folder
        from .memory import ShapeUnknown
        try:
            if planned.type == "Python" and getattr(self, "_estimating", False):
                raise ShapeUnknown("a Python layer's code is not run twice (for the memory estimate)")
            with model_folder(self._model_dir):
                return create_layer(planned.param, phase=self.phase, dtype=self.dtype)
        except ShapeUnknown as exc:
            if not self._shape_inference:
                raise
            self.unknown_reasons[planned.name] = str(exc)
            return _Unbuilt(planned.param, phase=self.phase, dtype=self.dtype)

    def _set_up_layer(self, layer, planned, bottoms, tops) -> bool:
        """Set the layer up; under shape inference, False when its shapes cannot be known."""
        if not self._shape_inference:
            layer.set_up(bottoms, tops)
            return True
        from .memory import ShapeUnknown
        ready = False
        if isinstance(layer, _Unbuilt) or any(name in self.unknown_shapes for name in planned.bottoms):
            ready = False
        else:
            try:
                layer.set_up(bottoms, tops)
                ready = True
            except ShapeUnknown as exc:
                self.unknown_reasons[planned.name] = str(exc)
        if not ready:
            self.unknown_shapes.update(planned.tops)
            self.skipped_layers.add(layer.name)
        return ready

    def _register_learnable(self, planned, layer):
        """Caffe's AppendParam: owned parameters are learnable; sharers may supply a missing lr/decay mult."""
        if layer.name in self.skipped_layers:
            return
        specs = planned.param.param
        shared = {share.index: share for share in planned.shared_params}
        for index, blob in enumerate(layer.blobs):
            spec = specs[index] if index < len(specs) else None
            share = shared.get(index)
            if share is None:
                entry = LearnableParam(
                    blob=blob, layer=layer.name, index=index,
                    lr_mult=spec.lr_mult if spec is not None else 1.0,
                    decay_mult=spec.decay_mult if spec is not None else 1.0,
                    has_lr=spec is not None and spec.HasField("lr_mult"),
                    has_decay=spec is not None and spec.HasField("decay_mult"))
                self._learnable.append(entry)
                self._learnable_by_key[(layer.name, index)] = entry
                continue
            owner = self._learnable_by_key[(share.owner_layer, share.owner_index)]
            if spec is not None and spec.HasField("lr_mult") and not owner.has_lr:
                owner.lr_mult, owner.has_lr = spec.lr_mult, True
            if spec is not None and spec.HasField("decay_mult") and not owner.has_decay:
                owner.decay_mult, owner.has_decay = spec.decay_mult, True

    def _share_params(self, planned, layer, owners):
        if layer.name in self.skipped_layers:
            return
        for share in planned.shared_params:
            if share.index >= len(layer.blobs):
                raise GraphError(f"param {share.index} ('{share.name}') is named but {layer.type} has only "
                                 f"{len(layer.blobs)} parameter blob(s)", layer=layer.name)
            owner = owners[(share.owner_layer, share.owner_index)]
            mine = layer.blobs[share.index]
            spec = planned.param.param[share.index]
            if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
                if owner.count != mine.count:
                    raise ShapeError(f"cannot share param '{share.name}' owned by layer '{share.owner_layer}': "
                                     "counts differ", layer=layer.name, expected=owner.shape, actual=mine.shape)
                view = Blob(mine.shape, dtype=self.dtype, name=mine.name)
                view.share_data(owner)
                view.share_diff(owner)
                layer.blobs[share.index] = view
            else:
                if owner.shape != mine.shape:
                    raise ShapeError(f"cannot share param '{share.name}' owned by layer '{share.owner_layer}': "
                                     "shapes differ (share_mode: PERMISSIVE compares counts only)",
                                     layer=layer.name, expected=owner.shape, actual=mine.shape)
                layer.blobs[share.index] = owner

    def _force_backward(self, blob_need_backward):
        for i, layer in enumerate(self._layers):
            self._layer_need_backward[i] = True
            planned = self.plan.layers[i]
            for j, name in enumerate(planned.bottoms):
                need = self._bottom_need_backward[i][j] or layer.allow_force_backward(j)
                self._bottom_need_backward[i][j] = need
                blob_need_backward[name] = blob_need_backward[name] or need
            layer.param_propagate_down = [True] * len(layer.blobs)

    # ---------------------------------------------------------------- running
    def _layer_index(self, name, default):
        if name is None:
            return default
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise MinicaffeError(f"no layer named '{name}' in this net") from None

    def forward_from_to(self, start: int, end: int) -> float:
        """Run Forward over layers start..end (inclusive); return their weighted loss."""
        loss = 0.0
        callbacks = self._callbacks
        folds = self.active_folds()
        i = start
        while i <= end:
            chain = folds.get(i)
            last = chain.last if chain is not None and chain.last <= end else i
            for callback in callbacks["before_forward"]:
                callback(i)
            layer = self._layers[i]
            if last > i:
                layer.folded = chain.scale_and_shift()
                self._ran_folded.add(i)
            else:
                self._ran_folded.discard(i)
            try:
                loss += layer.run_forward(self._bottom_vecs[i], self._top_vecs[i])
            finally:
                if last > i:
                    layer.folded = None
            for index in range(i, last + 1):      # layers folded into layer i ran with it
                if index > i:
                    for callback in callbacks["before_forward"]:
                        callback(index)
                if self.debug_info:
                    self._log_debug("Forward", index)
                for callback in callbacks["after_forward"]:
                    callback(index)
            i = last + 1
        return loss

    def _unfold_before_backward(self, start, end):
        """Run, layer by layer, the folded chains Backward will reach: their Backward needs what each
        layer's own Forward keeps (the chain's top ends with the same values, to float rounding)."""
        for first in sorted(self._ran_folded):
            chain = self._folds[first]
            if chain.first > start or chain.last < end:
                continue
            for index in range(chain.first, chain.last + 1):
                self._layers[index].run_forward(self._bottom_vecs[index], self._top_vecs[index])
            self._ran_folded.discard(first)

    def active_folds(self) -> dict:
        """The BatchNorm/Scale/Bias chains Forward merges into their Convolution now (see minicaffe.fold):
        ``{index of the Convolution: FoldedChain}``; empty when folding is off or the net runs on a GPU."""
        if not self._folds or not self.fold_inference or mode() != "cpu" or not folding_enabled():
            return {}
        return self._folds

    def backward_from_to(self, start: int, end: int) -> None:
        """Run Backward from layer start down to layer end (start >= end)."""
        if self._ran_folded:
            self._unfold_before_backward(start, end)
        callbacks = self._callbacks
        for i in range(start, end - 1, -1):
            for callback in callbacks["before_backward"]:
                callback(i)
            if self._layer_need_backward[i]:
                self._layers[i].run_backward(self._top_vecs[i], self._bottom_need_backward[i], self._bottom_vecs[i])
                if self.debug_info:
                    self._log_debug("Backward", i)
            for callback in callbacks["after_backward"]:
                callback(i)

    def _log_debug(self, direction, index):
        """Caffe's debug_info lines: the mean absolute value of each top (Forward) or bottom diff (Backward)."""
        import logging
        log = logging.getLogger("minicaffe")
        layer, planned = self._layers[index], self.plan.layers[index]
        if direction == "Forward":
            for name in planned.tops:
                log.info("    [Forward] Layer %s, top blob %s data: %.6g", layer.name, name,
                         _mean_magnitude(self._blob_dict[name], "data"))
            for param_index, blob in enumerate(layer.blobs):
                log.info("    [Forward] Layer %s, param blob %d data: %.6g", layer.name, param_index,
                         _mean_magnitude(blob, "data"))
            return
        for name, needed in zip(planned.bottoms, self._bottom_need_backward[index]):
            if needed:
                log.info("    [Backward] Layer %s, bottom blob %s diff: %.6g", layer.name, name,
                         _mean_magnitude(self._blob_dict[name], "diff"))
        for param_index, blob in enumerate(layer.blobs):
            if layer.param_propagate_down[param_index]:
                log.info("    [Backward] Layer %s, param blob %d diff: %.6g", layer.name, param_index,
                         _mean_magnitude(blob, "diff"))

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe's ``forward``: set inputs from ``kwargs``, run Forward, return outputs.

        Returns ``{name: array}`` for the net's outputs (or the ``end`` layer's
        tops), plus any blob named in ``blobs``. The weighted loss of the pass is
        kept in ``net.last_loss`` (a minicaffe addition).
        """
        for name, value in kwargs.items():
            if name not in self.plan.inputs:
                raise MinicaffeError(f"'{name}' is not an input of this net (inputs: {', '.join(self.plan.inputs)})")
            _assign_batch(self._blob_dict[name], value, "data", name)
        start_index = self._layer_index(start, 0)
        end_index = self._layer_index(end, len(self._layers) - 1)
        self.last_loss = self.forward_from_to(start_index, end_index)
        names = list(self.plan.outputs) if end is None else list(self.plan.layers[end_index].tops)
        names += [name for name in (blobs or []) if name not in names]
        return {name: self._blob_dict[name].data for name in names}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe's ``backward``: set output diffs from ``kwargs``, run Backward, return input diffs."""
        for name, value in kwargs.items():
            if name not in self.plan.outputs:
                raise MinicaffeError(f"'{name}' is not an output of this net (outputs: {', '.join(self.plan.outputs)})")
            _assign_batch(self._blob_dict[name], value, "diff", name)
        start_index = self._layer_index(start, len(self._layers) - 1)
        end_index = self._layer_index(end, 0)
        self.backward_from_to(start_index, end_index)
        names = list(self.plan.inputs) if end is None else list(self.plan.layers[end_index].bottoms)
        names += [name for name in (diffs or []) if name not in names]
        return {name: self._blob_dict[name].diff for name in names}

    def forward_backward(self) -> float:
        """One Forward and one Backward over the whole net; return the loss."""
        loss = self.forward_from_to(0, len(self._layers) - 1)
        self.backward_from_to(len(self._layers) - 1, 0)
        return loss

    def reshape(self):
        """Propagate changed input shapes through every layer's reshape (Caffe's ``Net::Reshape``).

        Optional: every Forward reshapes each layer whose blob shapes changed
        just before running it, as Caffe's ``Layer::Forward`` does. Call it to
        see the new shapes of every blob before running Forward.
        """
        for layer, bottoms, tops in zip(self._layers, self._bottom_vecs, self._top_vecs):
            layer.reshape_for_forward(bottoms, tops, force=True)

    def set_input_arrays(self, data, labels):
        """pycaffe's ``set_input_arrays``: give the net's first MemoryData layer its arrays."""
        for layer in self._layers:
            if layer.type == "MemoryData":
                return layer.reset(data, labels)
        raise MinicaffeError("set_input_arrays needs a MemoryData layer, and this net has none")

    def clear_param_diffs(self):
        if mode() == "gpu":
            from . import gpu_blas
            for blob in self.learnable_params:
                gpu_blas.fill(blob.mutable_gpu_diff, 0)
            return
        for blob in self.learnable_params:
            blob.diff[...] = 0

    # ---------------------------------------------------------------- pycaffe properties
    @property
    def blobs(self):
        return self._blob_dict

    @property
    def layers(self):
        return list(self._layers)

    @property
    def layer_dict(self):
        return OrderedDict((layer.name, layer) for layer in self._layers)

    @property
    def params(self):
        return OrderedDict((layer.name, layer.blobs) for layer in self._layers if layer.blobs)

    @property
    def learnable_params(self):
        """Each distinct parameter blob once (shared ones by their owner), in Caffe's order."""
        return [entry.blob for entry in self._learnable]

    @property
    def learnable_param_specs(self):
        """The LearnableParam entries (blob, lr_mult, decay_mult, owner layer and index) solvers use."""
        return list(self._learnable)

    @property
    def params_lr(self):
        return [entry.lr_mult for entry in self._learnable]

    @property
    def params_weight_decay(self):
        return [entry.decay_mult for entry in self._learnable]

    def update(self):
        """Caffe's Net::Update: data -= diff for every learnable parameter (its diff holds the step)."""
        if mode() == "gpu":
            from . import gpu_blas
            for entry in self._learnable:
                gpu_blas.axpy(-1.0, entry.blob.gpu_diff, entry.blob.mutable_gpu_data)
            return
        for entry in self._learnable:
            entry.blob.data[...] -= entry.blob.diff

    @property
    def inputs(self):
        return list(self.plan.inputs)

    @property
    def outputs(self):
        return list(self.plan.outputs)

    @property
    def blob_loss_weights(self):
        weights = OrderedDict((name, 0.0) for name in self._blob_dict)
        for planned in self.plan.layers:
            for name, weight in zip(planned.tops, planned.loss_weights):
                weights[name] = weight
        return weights

    @property
    def top_names(self):
        return OrderedDict((p.name, list(p.tops)) for p in self.plan.layers)

    @property
    def bottom_names(self):
        return OrderedDict((p.name, list(p.bottoms)) for p in self.plan.layers)

    @property
    def layer_need_backward(self):
        return list(self._layer_need_backward)

    @property
    def bottom_need_backward(self):
        return [list(flags) for flags in self._bottom_need_backward]

    # repr() and a notebook's table: layers in run order, shapes, parameters, totals (minicaffe.display).
    def __repr__(self):
        from .display import net_text
        return net_text(self)

    def _repr_html_(self):
        from .display import net_html
        return net_html(self)


def _mean_magnitude(blob, which) -> float:
    """The mean absolute value of a blob's data or diff (debug_info): reduced on the device in GPU mode,
    so only the number crosses (as Caffe's asum_data/asum_diff on the GPU)."""
    if mode() == "gpu":
        if not blob.count:
            return float("nan")
        from . import gpu_blas
        values = blob.gpu_data if which == "data" else blob.gpu_diff
        return gpu_blas.absolute_sum(values) / blob.count
    values = blob.read_data() if which == "data" else blob.read_diff()
    return float(np.abs(values).mean())


def _constructor_args(args, phase, weights):
    """Accept pycaffe's Net(model, phase) and legacy Net(model, weights, phase)."""
    if len(args) == 1:
        phase = args[0] if phase is None else phase
    elif len(args) == 2:
        weights, phase = args
    elif len(args) > 2:
        raise TypeError("Net(model, phase) or Net(model, weights, phase)")
    if phase is None:
        raise TypeError("Net needs a phase: minicaffe.TRAIN or minicaffe.TEST")
    return phase_value(phase), weights


@dataclass
class LearnableParam:
    """A parameter blob the solver updates, with the multipliers its ParamSpecs give it."""
    blob: Blob
    layer: str
    index: int
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    has_lr: bool = False
    has_decay: bool = False


class _Unbuilt(Layer):
    """Stands in, during shape inference only, for a layer that could not be created."""

    has_backward = False

    def reshape(self, bottom, top):  # pragma: no cover - never set up
        pass


def _assign_batch(blob, value, which, name):
    """Copy ``value`` into a blob's data or diff as pycaffe does: batch-sized, numpy broadcasting."""
    value = np.asarray(value)
    if value.ndim == 0 or not blob.shape or value.shape[0] != blob.shape[0]:
        raise ShapeError(f"'{name}' is not batch sized: reshape the blob and call net.reshape() first",
                         layer=name, expected=blob.shape, actual=value.shape)
    try:
        if mode() == "gpu":     # straight to the device: the stale device copy is not brought back first
            blob._synced(which).upload(np.broadcast_to(value, blob.shape))
        else:
            getattr(blob, which)[...] = value
    except ValueError:
        raise ShapeError(f"cannot copy into {which} of '{name}'", layer=name,
                         expected=blob.shape, actual=value.shape) from None


def _override_input_shapes(net_param, input_shapes):
    """Give Input tops new shapes: ``{top name: dims}`` (``check --input-shape``)."""
    remaining = dict(input_shapes)
    for layer in net_param.layer:
        if layer.type != "Input":
            continue
        shapes = layer.input_param.shape
        if len(shapes) == 1 and len(layer.top) > 1:
            for _ in range(len(layer.top) - 1):
                shapes.add().CopyFrom(shapes[0])
        for index, top in enumerate(layer.top):
            if top in remaining:
                while len(shapes) <= index:
                    shapes.add()
                del shapes[index].dim[:]
                shapes[index].dim.extend(int(d) for d in remaining.pop(top))
    if remaining:
        raise GraphError(f"no Input layer produces {', '.join(repr(n) for n in remaining)}; "
                         "--input-shape names tops of Input layers", blob=next(iter(remaining)))


def _prune_backward(plan, layers, layer_need_backward, bottom_need_backward):
    """Caffe's backward sweep: skip layers that feed no loss, or whose every top skips backprop."""
    need = list(layer_need_backward)
    under_loss, skip_backprop = set(), set()
    for i in range(len(layers) - 1, -1, -1):
        planned = plan.layers[i]
        contributes = False
        skip_propagate = True
        for j, name in enumerate(planned.tops):
            if layers[i].loss(j) or name in under_loss:
                contributes = True
            if name not in skip_backprop:
                skip_propagate = False
            if contributes and not skip_propagate:
                break
        if need[i] and skip_propagate:
            need[i] = False
            bottom_need_backward[i] = [False] * len(bottom_need_backward[i])
        if not contributes:
            need[i] = False
        for j, name in enumerate(planned.bottoms):
            if contributes:
                under_loss.add(name)
            else:
                bottom_need_backward[i][j] = False
            if not bottom_need_backward[i][j]:
                skip_backprop.add(name)
    return need


__all__ = ["Net", "TRAIN", "TEST"]


def _keep_layers_until(net_param, end):
    """Drop the layers after the one named ``end`` from ``net_param``; the note saying so."""
    names = [layer.name for layer in net_param.layer]
    if end not in names:
        raise GraphError(f"end: the net has no layer named '{end}'", layer=end)
    dropped = names[names.index(end) + 1:]
    del net_param.layer[names.index(end) + 1:]
    return [f"end {end}: {len(dropped)} layers after it left out"] if dropped else []
