"""Running a loss layer once: set up on arrays, Forward, Backward with a loss weight."""

import numpy as np

from minicaffe.testing import empty_blobs, layer_from_text, make_blobs


def loss_param_text(ignore_label=None, normalization=None, normalize=None):
    fields = []
    if ignore_label is not None:
        fields.append(f"ignore_label: {ignore_label}")
    if normalization is not None:
        fields.append(f"normalization: {normalization}")
    if normalize is not None:
        fields.append(f"normalize: {str(normalize).lower()}")
    return f"loss_param {{ {' '.join(fields)} }}" if fields else ""


def run_loss(text, arrays, dtype=np.float32, weight=1.0, num_tops=1, propagate=None):
    """Forward and Backward of the layer in `text`; returns (loss, bottom blobs, top blobs)."""
    layer = layer_from_text(text + f" loss_weight: {weight}" + (" loss_weight: 0" if num_tops == 2 else ""),
                            dtype=dtype)
    bottom = make_blobs(*arrays, dtype=dtype)
    top = empty_blobs(num_tops, dtype=dtype)
    layer.set_up(bottom, top)
    layer.run_forward(bottom, top)
    propagate = propagate if propagate is not None else [True] + [False] * (len(bottom) - 1)
    layer.run_backward(top, propagate, bottom)
    return float(top[0].data), bottom, top
