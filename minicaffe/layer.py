"""The Layer base: Caffe's fixed lifecycle, which layers fill in but never override.

Lifecycle (``set_up``, as Caffe's ``Layer::SetUp``): check the bottom and top
counts the class declares, ``setup`` (one-time work: parameter blobs, options),
``reshape`` (top shapes from bottom shapes), then store each top's loss weight in
its diff. After that the Net calls ``forward`` and ``backward`` through
:meth:`Layer.run_forward` and :meth:`Layer.run_backward`.

As Caffe's ``Layer::Forward``, every Forward reshapes first: ``run_forward``
calls ``reshape`` when a bottom's or top's shape differs from the shapes the
layer last saw (so ``net.blobs['data'].reshape(...)`` followed by
``net.forward()`` just works, and a data layer that changes its batch size
reaches the layers after it). An unchanged net skips ``reshape`` at the cost
of comparing a few tuples; Python layers, whose ``reshape`` may depend on
anything, are always reshaped, as in Caffe. Backward refuses blobs whose shape
changed since the layer's last Forward, naming the layer and both shapes,
rather than handing a kernel arrays of another size.

To write a layer: subclass, decorate with ``@register("TypeName")``, declare the
blob counts, and implement ``reshape``, ``forward`` and, when it has one,
``backward``. The method names and signatures are pycaffe's Python-layer API.
``forward`` and ``backward`` are the CPU implementations; a layer with GPU
kernels adds ``forward_gpu`` and ``backward_gpu`` beside them, which run in GPU
mode (``minicaffe.set_mode_gpu()``). Layers without them run their CPU methods
in either mode.

GPU: in GPU mode the lifecycle itself stays on the device: a top's loss
weight is stored in its diff with a fill kernel, and the loss a Forward adds
to the net's is the one scalar read back from a loss top (a weighted top of
several elements is reduced with a device dot product instead).
"""

from __future__ import annotations

import numpy as np

from .errors import GraphError, MinicaffeError, MinicaffeWarning, ShapeError
from .graph import TRAIN
from .memory import allocation_allowed
from .mode import mode


class Layer:
    """Base of every layer. Subclasses declare the class attributes below."""

    type = ""
    # Blob counts; None means "any". Caffe's ExactNum*/Min*/Max* declarations.
    exact_bottoms = None
    min_bottoms = None
    max_bottoms = None
    exact_tops = None
    min_tops = None
    max_tops = None
    equal_bottoms_and_tops = False
    # Caffe's AutoTopBlobs: missing tops up to the required count are added anonymously (losses).
    auto_top_blobs = False
    # Bottom indices that can never take a gradient, even under force_backward
    # (labels): Caffe's AllowForceBackward returning false.
    never_backward_bottoms = ()
    # False for layers Caffe gives no Backward (Accuracy, ArgMax, Threshold...).
    has_backward = True
    # For a type that comes from a Caffe fork, not BVLC: the fork, as `minicaffe layers` shows it
    # (e.g. "SSD (weiliu89/caffe, branch ssd)").
    fork = None
    # True when reshape must run before every Forward even if no shape changed
    # (Python layers: user code may shape its tops from anything).
    always_reshape = False
    # The (bottom shapes, top shapes) the layer was last reshaped for or left
    # by its Forward; None until set up.
    _blob_shapes = None
    _param_shapes = ()            # the parameter blobs' shapes after set-up
    _in_place = ()                # (top index, bottom index) pairs computed in place, found by set_up

    def __init__(self, layer_param, phase=TRAIN, dtype=np.float32):
        self.layer_param = layer_param
        self.name = layer_param.name
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.blobs = []                   # learnable parameter Blobs, in Caffe's order
        self.param_propagate_down = []    # per parameter blob: compute its gradient?
        self.loss_weights = list(layer_param.loss_weight)

    # ---------------------------------------------------------------- to implement
    def setup(self, bottom, top):
        """One-time setup: read parameters, create ``self.blobs``."""

    def reshape(self, bottom, top):
        """Shape the tops (and internal buffers) from the bottoms' shapes."""
        raise MinicaffeError(f"layer '{self.name}' ({self.type}) defines no reshape")

    def forward(self, bottom, top):
        """Compute the tops' data from the bottoms' data."""
        raise MinicaffeError(f"layer '{self.name}' ({self.type}) defines no forward")

    def backward(self, top, propagate_down, bottom):
        """Compute bottom diffs (where ``propagate_down[i]``) and parameter diffs (accumulated)."""
        raise GraphError(f"{self.type} has no Backward, but a gradient was asked of it "
                         "(force_backward, or a loss behind it)", layer=self.name)

    # ---------------------------------------------------------------- fixed lifecycle
    def set_up(self, bottom, top):
        # (top index, bottom index) of the tops that are their bottom's blob (in place): the shape must stay.
        self._in_place = [(t, b) for t, blob in enumerate(top) for b, source in enumerate(bottom) if blob is source]
        bottom_shapes = tuple(blob.shape for blob in bottom)
        try:
            self._check_blob_counts(bottom, top)
            self.setup(bottom, top)
            if len(self.param_propagate_down) < len(self.blobs):
                self.param_propagate_down += [True] * (len(self.blobs) - len(self.param_propagate_down))
            self.reshape(bottom, top)
            self._check_in_place(top, bottom_shapes)
            self.seed_loss_weights(top)
        except MemoryError as exc:
            if isinstance(exc, MinicaffeError):     # already names its layer (a net inside this layer)
                raise
            raise self._out_of_memory(exc, "setting it up") from exc
        self._blob_shapes = _shapes_of(bottom, top)
        self._param_shapes = tuple(blob.shape for blob in self.blobs)

    def _out_of_memory(self, exc, during):
        """numpy's MemoryError as a minicaffe error naming this layer."""
        from .errors import LayerMemoryError
        return LayerMemoryError(self.name, during, exc)

    def reshape_for_forward(self, bottom, top, force=False):
        """Caffe's reshape-before-Forward: run ``reshape`` if any blob's shape changed (or ``force``).

        Tops whose shape changed get their loss weight stored in their diff
        again (a resized buffer starts at zero).
        """
        if self.blobs and not self.always_reshape:
            self._check_param_shapes()
        shapes = _shapes_of(bottom, top)
        if shapes == self._blob_shapes and not (force or self.always_reshape):
            return
        top_shapes_before = shapes[1]
        self.reshape(bottom, top)
        if self._in_place:
            self._check_in_place(top, shapes[0])
        shapes = _shapes_of(bottom, top)
        if any(self.loss_weights):
            self.seed_loss_weights([blob if force or blob.shape != before else None
                                    for blob, before in zip(top, top_shapes_before)])
        self._blob_shapes = shapes

    def seed_loss_weights(self, top):
        """Store each top's loss weight in its diff (every element), as Caffe does.

        Loss layers scale their gradient by ``top[0].diff.flat[0]``, and the
        reported loss is the dot product of a top's data with its diff.
        """
        if not allocation_allowed():
            return
        on_device = mode() == "gpu"
        for blob, weight in zip(top, self.loss_weights):
            if weight and blob is not None:
                if on_device:       # the diff stays on the device, where Backward reads it
                    from . import gpu_blas
                    gpu_blas.fill(blob.mutable_gpu_diff, weight)
                else:
                    blob.diff[...] = weight

    def loss(self, top_index: int) -> float:
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    def _implementation(self, name):
        """The GPU method in GPU mode when the layer has one, else the CPU method."""
        if mode() == "gpu":
            gpu = getattr(self, name + "_gpu", None)
            if gpu is not None:
                return gpu
        return getattr(self, name)

    def run_forward(self, bottom, top) -> float:
        """Reshape if a shape changed, Forward, then this layer's contribution to the net's loss."""
        try:
            self.reshape_for_forward(bottom, top)
            self._implementation("forward")(bottom, top)
        except MemoryError as exc:
            if isinstance(exc, MinicaffeError):     # already names its layer (a net inside this layer)
                raise
            raise self._out_of_memory(exc, "in Forward") from exc
        self._blob_shapes = _shapes_of(bottom, top)    # data layers and Filter shape their tops in Forward
        total = 0.0
        for index, blob in enumerate(top):
            if self.loss(index):
                if blob.count != 1 and mode() == "gpu":     # a weighted non-scalar top: dot on the device
                    from . import gpu_blas
                    total += gpu_blas.dot(blob.gpu_data, blob.gpu_diff)
                    continue
                # One scalar crosses to the host (the top stays current on both sides).
                data, diff = blob.read_data(), blob.read_diff()
                if data.size == 1:          # a loss top: skip np.dot's overhead (a few microseconds)
                    total += float(data.reshape(-1)[0]) * float(diff.reshape(-1)[0])
                else:
                    total += float(np.dot(data.ravel(), diff.ravel()))
        return total

    def run_backward(self, top, propagate_down, bottom):
        if not self.has_backward and any(propagate_down):
            needed = [i for i, flag in enumerate(propagate_down) if flag]
            raise GraphError(f"{self.type} has no Backward, but a gradient to bottom(s) {needed} was asked "
                             "(force_backward, or propagate_down: true)", layer=self.name)
        self._check_shapes_unchanged(bottom, top)
        if self.blobs and not self.always_reshape:
            self._check_param_shapes()
        try:
            self._implementation("backward")(top, propagate_down, bottom)
        except MemoryError as exc:
            if isinstance(exc, MinicaffeError):     # already names its layer (a net inside this layer)
                raise
            raise self._out_of_memory(exc, "in Backward") from exc

    def _check_in_place(self, top, bottom_shapes):
        """A top computed in place (named as its bottom) shares the bottom's memory, so it must keep the
        bottom's shape: a layer whose output is shaped otherwise (ArgMax, Reduction, InnerProduct...) cannot."""
        for top_index, bottom_index in self._in_place:
            if top[top_index].shape != bottom_shapes[bottom_index]:
                raise ShapeError(f"{self.type} cannot compute top {top_index} '{top[top_index].name}' in place: "
                                 "its shape would differ from the bottom's; give the top a name of its own",
                                 layer=self.name, expected=bottom_shapes[bottom_index], actual=top[top_index].shape)

    def _check_param_shapes(self):
        """Kernels size their loops from the shapes set up; a parameter reshaped since is refused."""
        for index, (blob, shape) in enumerate(zip(self.blobs, self._param_shapes)):
            if blob.shape != shape:
                raise ShapeError(f"parameter blob {index} was reshaped after set-up; {self.type} needs the shape "
                                 "it was set up with", layer=self.name, expected=shape, actual=blob.shape)

    def _check_shapes_unchanged(self, bottom, top):
        """Backward's kernels assume the shapes of the last Forward: refuse anything else."""
        if self._blob_shapes is None or _shapes_of(bottom, top) == self._blob_shapes:
            return
        for role, blobs, seen in (("bottom", bottom, self._blob_shapes[0]), ("top", top, self._blob_shapes[1])):
            for blob, shape in zip(blobs, seen):
                if blob.shape != shape:
                    raise ShapeError(f"{role} blob '{blob.name}' was reshaped after this layer's last Forward; "
                                     "run forward() (or net.reshape()) before backward()", layer=self.name,
                                     expected=shape, actual=blob.shape)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index not in self.never_backward_bottoms

    # ---------------------------------------------------------------- helpers for subclasses
    def _check_blob_counts(self, bottom, top):
        def check(what, count, exact, low, high):
            if exact is not None and count != exact:
                raise GraphError(f"{self.type} takes {exact} {what} blob(s), got {count}", layer=self.name)
            if low is not None and count < low:
                raise GraphError(f"{self.type} takes at least {low} {what} blob(s), got {count}", layer=self.name)
            if high is not None and count > high:
                raise GraphError(f"{self.type} takes at most {high} {what} blob(s), got {count}", layer=self.name)
        check("bottom", len(bottom), self.exact_bottoms, self.min_bottoms, self.max_bottoms)
        check("top", len(top), self.exact_tops, self.min_tops, self.max_tops)
        if self.equal_bottoms_and_tops and len(bottom) != len(top):
            raise GraphError(f"{self.type} takes as many tops as bottoms, got {len(bottom)} bottoms "
                             f"and {len(top)} tops", layer=self.name)

    def new_param_blob(self, shape):
        from .blob import Blob
        return Blob(shape, dtype=self.dtype, name=f"{self.name} param {len(self.blobs)}")

    def shape_error(self, message, expected=None, actual=None):
        return ShapeError(message, layer=self.name, expected=expected, actual=actual)

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}' ({self.type})>"


def _shapes_of(bottom, top):
    # Called twice per layer per Forward: list comprehensions and the attribute, not generators and a property.
    return tuple([blob._shape for blob in bottom]), tuple([blob._shape for blob in top])


# ====================================================================== losses

_NORMALIZATION = None  # filled lazily: caffe_pb2.LossParameter enum values by name
_warned_fixed_divisor = set()


def _modes():
    global _NORMALIZATION
    if _NORMALIZATION is None:
        from .proto import caffe_pb2
        _NORMALIZATION = {name: value for name, value in caffe_pb2.LossParameter.NormalizationMode.items()}
    return _NORMALIZATION


class LossLayer(Layer):
    """Caffe's loss-layer contract, shared by every ``*Loss`` type.

    - Bottoms: the prediction first, then the label or target; optional extra
      bottoms (weights, H matrices) come last. The label bottom (index 1) never
      takes a gradient, not even under ``force_backward`` (Caffe's
      AllowForceBackward); layers whose second bottom is a regression target
      (EuclideanLoss) say so with ``never_backward_bottoms = ()``.
    - One scalar top (shape ``()``) holding the normalized loss.
    - Backward scales the gradient by ``top[0].diff[0]``: the loss weight the
      net stores there (seed 004), so ``loss_weight: 0.3`` scales both the
      reported loss (through the net's sum) and the gradient.
    - Classification losses (``classification = True``: a class label per
      location) honour ``loss_param``: ``ignore_label`` and ``normalization``
      (FULL, VALID, BATCH_SIZE, NONE; legacy ``normalize: false`` = BATCH_SIZE),
      with ``default_normalization`` when neither is set. The normalizer is
      never below 1, so a batch whose every label is ignored gives loss 0 and a
      zero gradient. Other losses keep their fixed divisor and warn once when
      ``normalization`` is set.
    """

    exact_bottoms = 2
    exact_tops = 1
    # Caffe's AutoTopBlobs: written without a top, the layer gets an anonymous one (loss weight 1).
    auto_top_blobs = True
    never_backward_bottoms = (1,)
    classification = False
    default_normalization = "VALID"

    def setup(self, bottom, top):
        loss_param = self.layer_param.loss_param
        self.has_ignore_label = loss_param.HasField("ignore_label")
        self.ignore_label = loss_param.ignore_label
        if self.classification:
            self.normalization = self._normalization_mode(loss_param)
        elif loss_param.HasField("normalization") or loss_param.HasField("normalize"):
            self._warn_fixed_divisor()
        self.loss_setup(bottom, top)

    def loss_setup(self, bottom, top):
        """Layer-specific one-time setup (read parameters)."""

    def reshape(self, bottom, top):
        for index, blob in enumerate(bottom[:2]):      # Caffe's LossLayer::Reshape reads shape(0) of both
            if blob.ndim == 0:
                raise self.shape_error(f"bottom {index} has shape () (a scalar); a loss needs the prediction and "
                                       "the label to have a first (batch) axis")
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.shape_error("the prediction and the label must have the same first dimension",
                                   expected=bottom[0].shape, actual=bottom[1].shape)
        top[0].reshape(())

    def loss_weight_scale(self, top, normalizer=1.0):
        """The factor Backward applies: the stored loss weight over the normalizer."""
        # read_diff: a loss layer's CPU Backward in GPU mode leaves the weight current on the device too
        return float(top[0].read_diff().reshape(-1)[0]) / normalizer

    def normalizer(self, outer_num, inner_num, valid_count):
        """Caffe's get_normalizer, never below 1 (``valid_count`` -1 means 'no ignore label')."""
        mode = self.normalization
        modes = _modes()
        if mode == modes["FULL"]:
            value = outer_num * inner_num
        elif mode == modes["VALID"]:
            value = outer_num * inner_num if valid_count < 0 else valid_count
        elif mode == modes["BATCH_SIZE"]:
            value = outer_num
        else:
            value = 1
        return float(max(1, value))

    def _normalization_mode(self, loss_param):
        modes = _modes()
        if loss_param.HasField("normalization"):
            return loss_param.normalization
        if loss_param.HasField("normalize"):
            return modes["VALID"] if loss_param.normalize else modes["BATCH_SIZE"]
        return modes[self.default_normalization]

    def _warn_fixed_divisor(self):
        key = (self.type, self.name)
        if key in _warned_fixed_divisor:
            return
        _warned_fixed_divisor.add(key)
        import warnings
        warnings.warn(f"layer '{self.name}': {self.type} has a fixed divisor; loss_param normalization "
                      "is ignored", MinicaffeWarning, stacklevel=2)
