"""Inference folding: a BatchNorm/Scale/Bias chain that runs in place on a Convolution's top, merged into it.

In a TEST net, ``conv -> BatchNorm -> Scale`` (ResNet, MobileNet...) writes
the same blob three times: the convolution's output, then a normalized copy,
then a scaled one. All three are affine per output channel, so
``scale(bn(conv(x) + b))`` is ``a * conv(x) + shift`` with, per channel,

    a     = gamma / sqrt(var + eps)        (gamma = 1 without Scale)
    shift = (b - mean) * a + beta + bias   (each term where its layer exists)

(``mean`` and ``var`` are BatchNorm's stored statistics over its scale factor,
as its TEST Forward uses them). The convolution applies ``a`` and ``shift``
where it already adds its bias, and the BatchNorm, Scale and Bias layers do not
run: the blob is written once. The result equals the three Forwards to float32
rounding.

Nothing is precomputed from the weights: ``a`` and ``shift`` are computed from
the layers' current parameters at every Forward (a few vectors of length C),
so a parameter changed in any way, even through an array kept from an earlier
``net.params[...][0].data``, is always seen, and there is nothing to refold.

A chain is folded only where nothing can tell: the net's phase is TEST and it
has no ``force_backward``, the chain's tops carry no loss weight, the BatchNorm
uses its global statistics, Scale and Bias have one bottom and one value per
channel (axis 1), the net runs on the CPU, and the Forward covers the whole
chain (``forward(end='conv1')`` still gives the convolution's own output). If
Backward later reaches a chain that ran folded (a TEST net's loss is
backpropagated after all), the net first runs that chain's layers one by one,
so every layer has what its Backward needs and the gradients are Caffe's.
``net.fold_inference = False``, or ``MINICAFFE_FOLD=0`` in the environment,
turns folding off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .graph import TEST

_FOLDABLE = ("BatchNorm", "Scale", "Bias")


@dataclass
class FoldedChain:
    """A Convolution (layer ``first``) and the in-place layers ``first + 1 .. last`` merged into it."""
    first: int
    last: int
    conv: object
    batch_norm: object = None
    scale: object = None
    bias: object = None

    def scale_and_shift(self):
        """(a, shift) per output channel, in the convolution's dtype, from the current parameters."""
        conv = self.conv
        channels = conv.num_output
        a = np.ones(channels, dtype=np.float64)
        shift = (conv.blobs[1].read_data().astype(np.float64) if conv.bias_term
                 else np.zeros(channels, dtype=np.float64))
        if self.batch_norm is not None:
            blobs = self.batch_norm.blobs
            factor = float(blobs[2].read_data().reshape(-1)[0])
            correction = 0.0 if factor == 0 else 1.0 / factor
            mean = blobs[0].read_data().astype(np.float64) * correction
            var = blobs[1].read_data().astype(np.float64) * correction
            inv_std = 1.0 / np.sqrt(var + self.batch_norm.eps)
            a *= inv_std
            shift = (shift - mean) * inv_std
        if self.scale is not None:
            gamma = self.scale.blobs[0].read_data().astype(np.float64).reshape(-1)
            a *= gamma
            shift *= gamma
            if self.scale.bias_term:
                shift += self.scale.blobs[1].read_data().astype(np.float64).reshape(-1)
        if self.bias is not None:
            shift += self.bias.blobs[0].read_data().astype(np.float64).reshape(-1)
        return a.astype(conv.dtype), shift.astype(conv.dtype)

    @property
    def names(self):
        return [layer.name for layer in (self.batch_norm, self.scale, self.bias) if layer is not None]


def folding_enabled() -> bool:
    return os.environ.get("MINICAFFE_FOLD", "1").strip().lower() not in ("0", "false", "no", "off")


def find_chains(net) -> dict:
    """``{index of the Convolution: FoldedChain}`` for every chain of ``net`` that may be folded."""
    if net.phase != TEST or net.plan.force_backward:
        return {}
    layers, plan = net._layers, net.plan
    chains = {}
    for i, conv in enumerate(layers):
        if conv.type != "Convolution" or not _plain_top(plan.layers[i], 1):
            continue
        if getattr(conv, "channel_axis", None) != 1 or len(plan.layers[i].bottoms) != 1:
            continue
        top = plan.layers[i].tops[0]
        chain = FoldedChain(first=i, last=i, conv=conv)
        j = i + 1
        while j < len(layers) and layers[j].type in _FOLDABLE:
            planned, layer = plan.layers[j], layers[j]
            if planned.bottoms != (top,) or planned.tops != (top,) or any(planned.loss_weights):
                break
            if not _takes(chain, layer, conv.num_output, conv.spatial_axes + 2):
                break
            setattr(chain, _ROLE[layer.type], layer)
            chain.last = j
            j += 1
        if chain.last > i:
            chains[i] = chain
    return chains


_ROLE = {"BatchNorm": "batch_norm", "Scale": "scale", "Bias": "bias"}


def _plain_top(planned, count):
    return len(planned.tops) == count and not any(planned.loss_weights) and not any(planned.in_place)


def _takes(chain, layer, channels, ndim) -> bool:
    """Whether ``layer`` may join the chain: its role is still free, it comes in BatchNorm, Scale, Bias
    order, and it is affine per channel with its parameters in its own blobs."""
    role = _ROLE[layer.type]
    order = list(_ROLE.values())
    if getattr(chain, role) is not None or any(getattr(chain, later) is not None
                                                  for later in order[order.index(role) + 1:]):
        return False
    if layer.type == "BatchNorm":
        return bool(getattr(layer, "use_global_stats", False)) and len(layer.blobs) == 3
    axis = (layer.layer_param.scale_param.axis if layer.type == "Scale" else layer.layer_param.bias_param.axis)
    return axis in (1, 1 - ndim) and bool(layer.blobs) and layer.blobs[0].shape == (channels,) and \
        (layer.type != "Scale" or not layer.bias_term or layer.blobs[1].shape == (channels,))
