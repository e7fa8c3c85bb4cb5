"""How coordinates move through a NetSpec's layers: pycaffe's ``caffe.coord_map``.

Used to align feature maps, chiefly to crop an upsampled top back onto the
input it came from (fully convolutional nets)::

    from minicaffe import NetSpec, layers as L
    from minicaffe.coord_map import crop

    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 64, 64]))
    n.conv = L.Convolution(n.data, num_output=8, kernel_size=3, pad=10)
    n.up = L.Deconvolution(n.conv, num_output=8, kernel_size=4, stride=2)
    ...
    n.score = crop(n.up_somewhere, n.data)    # an L.Crop with the right axis and offset

A layer's coordinate map is a triple ``(axis, scale, shift)``: along the
spatial axes after ``axis``, output coordinate ``x`` lines up with input
coordinate ``scale * x + shift`` (``scale`` and ``shift`` are numbers or one
per spatial axis). A convolution of kernel ``k``, stride ``s`` and pad ``p``
maps ``(axis, 1/s, (p - (k-1)/2)/s)``; a deconvolution the inverse;
pointwise layers (ReLU, Dropout, ...) ``(None, 1, 0)``, where None fits any
axis. Maps compose along a path of layers (:func:`compose`), and
:func:`coord_map_from_to` joins two tops through their nearest common
ancestor.

The layer fields are read from the NetSpec ``Function`` (``type_name``,
``params`` as given to ``L.<Type>(...)``, ``inputs``). Beyond pycaffe:
fields given in the nested message (``convolution_param=dict(...)``,
``pooling_param=...``, also as protobuf messages) and as keywords are read
together; ``kernel_h``/``kernel_w`` (and stride, pad) work instead of being
refused; the errors are minicaffe errors that are also the exceptions pycaffe
raised (RuntimeError for unconnected tops, AssertionError for impossible
crops), so pycaffe code that catches those still does.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from google.protobuf.message import Message

from .errors import GraphError, MinicaffeError
from .net_spec import Top, layers as L

__all__ = ["PASS_THROUGH_LAYERS", "conv_params", "crop_params", "coord_map", "compose", "inverse",
           "coord_map_from_to", "crop", "UndefinedMapException", "AxisMismatchException",
           "UnconnectedTopsError", "CropError"]

# Layers whose output pixel i depends on input pixel i only (pycaffe's list, plus Clip and Swish).
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Clip", "Dropout", "Eltwise", "ELU", "Exp",
                       "Log", "LRN", "MVN", "Power", "PReLU", "ReLU", "Scale", "Sigmoid", "Split", "Swish",
                       "TanH", "Threshold"]

_CONV_TYPES = ("Convolution", "Deconvolution", "Im2col")
IDENTITY = (None, 1, 0)


class UndefinedMapException(MinicaffeError):
    """A layer with no coordinate map (InnerProduct, global pooling, an unknown type...)."""


class AxisMismatchException(MinicaffeError):
    """Two maps along different axes, which do not compose."""


class UnconnectedTopsError(MinicaffeError, RuntimeError):
    """Two tops with no common ancestor reached through mappable layers (a RuntimeError, as in pycaffe)."""


class CropError(MinicaffeError, AssertionError):
    """A crop that cannot align its tops (an AssertionError, as pycaffe's checks were asserts)."""


def _message_fields(message) -> dict:
    """The fields set in a protobuf message, as the keywords NetSpec would take."""
    return {field.name: (list(value) if field.is_repeated else value) for field, value in message.ListFields()}


def _fields(fn, message_field) -> dict:
    """``fn``'s keywords with those of its nested ``message_field`` (a dict or a message) over them."""
    fields = dict(fn.params)
    nested = fields.get(message_field)
    if isinstance(nested, Message):
        nested = _message_fields(nested)
    if isinstance(nested, dict):
        fields.update(nested)
    return fields


def _sizes(fields, name, prefix, default):
    """A spatial size as an array: ``<prefix>_h`` and ``<prefix>_w`` when both are given (Caffe takes
    them only in pairs), else ``name`` (one value or a list)."""
    if f"{prefix}_h" in fields and f"{prefix}_w" in fields:
        return np.array([fields[f"{prefix}_h"], fields[f"{prefix}_w"]], ndmin=1)
    return np.array(fields.get(name, default), ndmin=1)


def conv_params(fn) -> tuple:
    """``(axis, stride, kernel extent, pad)`` of a Convolution, Deconvolution, Im2col or Pooling ``fn``.

    The kernel extent counts dilation (``(kernel - 1) * dilation + 1``).
    Sizes are arrays of one value, or of one per spatial axis. Raises
    UndefinedMapException for global pooling and GraphError for a layer
    with no kernel size.
    """
    fields = _fields(fn, "pooling_param" if fn.type_name == "Pooling" else "convolution_param")
    if fields.get("global_pooling"):
        raise UndefinedMapException(f"{fn.type_name} with global_pooling has no coordinate map")
    has_hw = "kernel_h" in fields and "kernel_w" in fields
    if "kernel_size" not in fields and not has_hw:
        raise GraphError(f"{fn.type_name} layer without kernel_size (or kernel_h and kernel_w): "
                         "its coordinate map is unknown")
    kernel = _sizes(fields, "kernel_size", "kernel", None)
    dilation = np.array(fields.get("dilation", 1), ndmin=1)
    return (fields.get("axis", 1), _sizes(fields, "stride", "stride", 1), (kernel - 1) * dilation + 1,
            _sizes(fields, "pad", "pad", 0))


def crop_params(fn) -> tuple:
    """``(axis, offset)`` of a Crop ``fn``, with Caffe's defaults (axis 2, offset 0); offset is an array."""
    fields = _fields(fn, "crop_param")
    return fields.get("axis", 2), np.array(fields.get("offset", 0), ndmin=1)


def coord_map(fn) -> tuple:
    """The coordinate map ``(axis, scale, shift)`` of the layer ``fn`` (a NetSpec Function).

    Raises UndefinedMapException for layer types without one.
    """
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, kernel, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (kernel - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, kernel, pad = conv_params(fn)
        return axis, stride, (kernel - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return IDENTITY
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        # Crop's axis is the first cropped one; a map names the last axis left alone.
        return axis - 1, 1, -offset
    raise UndefinedMapException(f"{fn.type_name} layers have no coordinate map")


def compose(base_map, next_map) -> tuple:
    """The map of ``base_map`` followed by ``next_map``: scales multiply, and
    ``next_map``'s shift is scaled by ``base_map``'s scale before adding.

    An axis of None fits any axis; two different axes raise AxisMismatchException.
    """
    axis1, scale1, shift1 = base_map
    axis2, scale2, shift2 = next_map
    if axis1 is None:
        axis = axis2
    elif axis2 is None or axis1 == axis2:
        axis = axis1
    else:
        raise AxisMismatchException(f"coordinate maps along axis {axis1} and axis {axis2} do not compose")
    return axis, scale1 * scale2, scale1 * shift2 + shift1


def inverse(coord_map) -> tuple:
    """The map back from output to input coordinates: ``(axis, 1/scale, -shift/scale)``."""
    axis, scale, shift = coord_map
    return axis, 1 / scale, -shift / scale


def _mapped_bottoms(top):
    # Crop's second bottom only gives the size to crop to; its coordinates do not flow to the top.
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == "Crop" else bottoms


def _maps_to_ancestors(top):
    """Yield ``(ancestor, map from ancestor to top)``, nearest first, through mappable layers."""
    maps = {top: IDENTITY}
    queue = deque([top])
    while queue:
        current = queue.popleft()
        yield current, maps[current]
        try:
            layer_map = coord_map(current.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(current):
            if bottom not in maps:
                maps[bottom] = compose(maps[current], layer_map)
                queue.append(bottom)


def coord_map_from_to(top_from, top_to) -> tuple:
    """The map ``(axis, scale, shift)`` taking ``top_from``'s coordinates to ``top_to``'s.

    Both tops are walked back to their nearest common ancestor; the map is
    ``top_to``'s path composed with the inverse of ``top_from``'s. Raises
    UnconnectedTopsError (a RuntimeError) when no common ancestor is reached
    through layers with coordinate maps, AxisMismatchException when the
    layers on the way map different axes.
    """
    for name, top in (("top_from", top_from), ("top_to", top_to)):
        if not isinstance(top, Top):
            raise TypeError(f"{name} must be a NetSpec Top, not {type(top).__name__}")
    from_maps = dict(_maps_to_ancestors(top_from))
    for ancestor, to_map in _maps_to_ancestors(top_to):
        if ancestor in from_maps:
            return compose(to_map, inverse(from_maps[ancestor]))
    raise UnconnectedTopsError(f"no coordinate map from {top_from!r} to {top_to!r}: they meet at no common "
                               "top through spatial or pointwise layers")


def crop(top_from, top_to):
    """An ``L.Crop(top_from, top_to)`` whose axis and offset align ``top_from`` onto ``top_to``.

    Raises CropError (an AssertionError) when the two tops are at different
    scales, when ``top_from`` would need padding rather than cropping
    (negative offset), or when the offset is not a whole number.
    """
    axis, scale, shift = coord_map_from_to(top_from, top_to)
    scale, shift = np.atleast_1d(scale), np.atleast_1d(shift)
    if not np.allclose(scale, 1):
        raise CropError(f"cannot crop: the tops are at different scales (scale {scale})")
    if np.any(shift > 1e-9):
        raise CropError(f"cannot crop: {top_from!r} would need padding, not cropping (offset {-shift})")
    offset = np.round(-shift)
    if not np.allclose(offset, -shift):
        raise CropError(f"cannot crop: the offset {-shift} is not a whole number")
    # A path of pointwise layers leaves the axis open: crop from Caffe's default, the first spatial axis.
    first_cropped = 2 if axis is None else int(axis) + 1
    return L.Crop(top_from, top_to, crop_param=dict(axis=first_cropped, offset=[int(v) for v in offset]))
