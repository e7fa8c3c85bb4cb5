"""Building single layers outside a net, for tests and notebooks."""

from __future__ import annotations

import numpy as np

from ..blob import Blob
from ..graph import TRAIN, phase_value, resolve_loss_weights
from ..proto import caffe_pb2
from ..proto.text import parse_text
from ..registry import create_layer


def layer_from_text(text: str, phase=TRAIN, dtype=np.float64, num_tops=None):
    """A layer (not yet set up) from the text of a LayerParameter.

    Loss weights are resolved as in a net (a ``*Loss`` type weighs its first top 1).
    """
    param = parse_text(text, caffe_pb2.LayerParameter(), "<layer>")
    if not param.top:
        # Placeholder names, so loss weights resolve per top as in a net.
        count = num_tops if num_tops is not None else max(1, len(param.loss_weight))
        param.top.extend(f"top{i}" for i in range(count))
    net = caffe_pb2.NetParameter()
    net.layer.add().CopyFrom(param)
    param = resolve_loss_weights(net).layer[0]
    return create_layer(param, phase=phase_value(phase), dtype=dtype)


def make_blobs(*arrays, dtype=np.float64):
    """Blobs holding copies of ``arrays`` (cast to ``dtype``)."""
    blobs = []
    for array in arrays:
        array = np.asarray(array, dtype=dtype)
        blob = Blob(array.shape, dtype=dtype)
        blob.data[...] = array
        blobs.append(blob)
    return blobs


def empty_blobs(count, dtype=np.float64):
    return [Blob((), dtype=dtype) for _ in range(count)]


def run_layer(layer, bottom_arrays, num_tops=1, dtype=None):
    """Set up ``layer`` on copies of ``bottom_arrays``, run Forward, return (bottoms, tops)."""
    dtype = dtype or layer.dtype
    bottom = make_blobs(*bottom_arrays, dtype=dtype)
    top = empty_blobs(num_tops, dtype=dtype)
    layer.set_up(bottom, top)
    layer.run_forward(bottom, top)
    return bottom, top
