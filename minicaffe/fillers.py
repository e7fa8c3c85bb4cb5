"""Fillers: the initial values of parameter blobs (Caffe's filler.hpp).

Random fillers draw from minicaffe's generator, reseeded by
:func:`minicaffe.set_random_seed`, so a seeded run is reproducible (Caffe's own
random streams cannot be reproduced bit for bit outside Caffe).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import MinicaffeError
from .memory import allocation_allowed
from .proto import caffe_pb2

_rng = np.random.default_rng()


def set_random_seed(seed: int) -> None:
    """Reseed the generator behind fillers, dropout masks and other random layers."""
    global _rng
    _rng = np.random.default_rng(int(seed))


def rng() -> np.random.Generator:
    return _rng


def fill(blob, filler_param=None, layer=None) -> None:
    """Fill ``blob.data`` as ``filler_param`` (a FillerParameter) says."""
    if filler_param is None:
        filler_param = caffe_pb2.FillerParameter()
    kind = filler_param.type
    try:
        filler = _FILLERS[kind]
    except KeyError:
        raise MinicaffeError(f"layer '{layer}': unknown filler type '{kind}' "
                             f"(known: {', '.join(sorted(_FILLERS))})") from None
    if kind != "gaussian" and filler_param.sparse != -1:
        raise MinicaffeError(f"layer '{layer}': the {kind} filler does not support sparse")
    if not allocation_allowed():
        return  # shape inference: the values are never read
    values = filler(blob.shape, filler_param, layer)
    blob.data[...] = values


def _fans(shape, layer, kind):
    if not shape:
        raise MinicaffeError(f"layer '{layer}': the {kind} filler needs a blob with at least one axis")
    count = int(np.prod(shape))
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _fan_for_norm(shape, param, layer, kind):
    fan_in, fan_out = _fans(shape, layer, kind)
    if param.variance_norm == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    if param.variance_norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def _constant(shape, param, layer):
    return np.full(shape, param.value)


def _uniform(shape, param, layer):
    return _rng.uniform(param.min, param.max, size=shape)


def _gaussian(shape, param, layer):
    values = _rng.normal(param.mean, param.std, size=shape)
    if param.sparse >= 0:
        # Each weight is kept with probability sparse / num_outputs, so each
        # output sees `sparse` non-zero inputs on average.
        if not shape:
            raise MinicaffeError(f"layer '{layer}': a sparse gaussian filler needs at least one axis")
        keep_probability = param.sparse / shape[0]
        values *= _rng.random(size=shape) < keep_probability
    return values


def _positive_unitball(shape, param, layer):
    values = _rng.uniform(0.0, 1.0, size=shape)
    rows = values.reshape(shape[0], -1) if shape else values.reshape(1, -1)
    rows /= rows.sum(axis=1, keepdims=True)
    return values


def _xavier(shape, param, layer):
    scale = math.sqrt(3.0 / _fan_for_norm(shape, param, layer, "xavier"))
    return _rng.uniform(-scale, scale, size=shape)


def _msra(shape, param, layer):
    std = math.sqrt(2.0 / _fan_for_norm(shape, param, layer, "msra"))
    return _rng.normal(0.0, std, size=shape)


def _bilinear(shape, param, layer):
    # Upsampling kernels for Deconvolution: a separable tent centred on the kernel.
    if len(shape) != 4 or shape[2] != shape[3]:
        raise MinicaffeError(f"layer '{layer}': the bilinear filler needs a 4-D blob with square kernels, "
                             f"got shape {tuple(shape)}")
    width = shape[3]
    f = math.ceil(width / 2.0)
    c = (width - 1) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(width) / f - c)
    return np.broadcast_to(np.outer(ramp, ramp), shape)


_FILLERS = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}

#: The filler types Caffe knows, for layers that validate their filler parameters early.
FILLER_TYPES = frozenset(_FILLERS)


def random_state() -> dict:
    """The generator's full state (for snapshots): restoring it replays the same draws."""
    return _rng.bit_generator.state


def set_random_state(state: dict) -> None:
    global _rng
    generator = np.random.default_rng()
    generator.bit_generator.state = state
    _rng = generator
