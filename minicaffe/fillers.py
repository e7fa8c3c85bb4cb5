"""Fillers: the initial values of parameter blobs (Caffe's filler.hpp).

Random fillers draw from minicaffe's generator, reseeded by
:func:`minicaffe.set_random_seed`, so a seeded run is reproducible (Caffe's own
random streams cannot be reproduced bit for bit outside Caffe).

Values are drawn in the blob's own dtype, straight into its memory: a float32
net draws float32 numbers and needs no float64 temporaries (a sparse gaussian's
mask is drawn in chunks of bounded size). Each filler's parameters are checked
first, as Caffe's CHECKs do, and a bad one is a :class:`GraphError` naming the
layer, the filler field and the value.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import GraphError
from .memory import allocation_allowed
from .proto import caffe_pb2

_rng = np.random.default_rng()

# Elements per draw of a sparse gaussian's keep mask: bounds its temporaries (a float32 and a bool array).
_CHUNK = 1 << 16
# The dtypes numpy's Generator draws directly.
_DRAWN = (np.dtype(np.float32), np.dtype(np.float64))


def set_random_seed(seed: int) -> None:
    """Reseed the generator behind fillers, dropout masks and other random layers."""
    global _rng
    _rng = np.random.default_rng(int(seed))


def rng() -> np.random.Generator:
    return _rng


def fill(blob, filler_param=None, layer=None, field=None) -> None:
    """Fill ``blob.data`` as ``filler_param`` (a FillerParameter) says.

    ``field`` names the filler in its layer (``weight_filler``, ``bias_filler``...) for error messages.
    The parameters are checked even during shape inference (``minicaffe check``), where nothing is drawn.
    """
    if filler_param is None:
        filler_param = caffe_pb2.FillerParameter()
    check = check_filler(blob, filler_param, layer, field)
    if not allocation_allowed():
        return  # shape inference: the values are never read
    filler = _FILLERS[filler_param.type]
    data = blob.data
    if data.flags.c_contiguous and data.dtype in _DRAWN:
        filler(data, filler_param, check)
    else:   # a strided view or another dtype: fill a buffer numpy can draw into, then copy
        values = np.empty(data.shape, dtype=data.dtype if data.dtype in _DRAWN else np.float64)
        filler(values, filler_param, check)
        data[...] = values


def check_filler(blob, filler_param, layer=None, field=None):
    """Refuse a filler whose parameters are out of their domain for ``blob`` (a GraphError), as :func:`fill`."""
    where = f"{field}: " if field else ""
    kind = filler_param.type
    if kind not in _FILLERS:
        raise GraphError(f"{where}unknown filler type '{kind}' (known: {', '.join(sorted(_FILLERS))})",
                         layer=layer)
    check = _Check(filler_param, blob, layer, where)
    if kind != "gaussian" and filler_param.sparse != -1:
        check.fail(f"the {kind} filler does not support sparse (sparse: {filler_param.sparse})")
    _CHECKS[kind](check)
    return check


class _Check:
    """One filler's parameters and blob, and how to name them in an error."""

    def __init__(self, param, blob, layer, where):
        self.param, self.shape, self.layer, self.where = param, tuple(blob.shape), layer, where
        self.dtype = np.dtype(blob.dtype) if np.dtype(blob.dtype) in _DRAWN else np.dtype(np.float64)

    def fail(self, message):
        raise GraphError(f"{self.where}{message}", layer=self.layer)

    def finite(self, *names):
        """Each named float field must be finite in the blob's dtype (1e39 is inf as a float32)."""
        for name in names:
            value = getattr(self.param, name)
            with np.errstate(over="ignore"):
                if not np.isfinite(self.dtype.type(value)):
                    self.fail(f"{self.param.type} filler's {name} is {value:g}, "
                              f"which is not a finite {self.dtype.name}")


def _check_constant(check):
    check.finite("value")


def _check_uniform(check):
    param = check.param
    check.finite("min", "max")
    if param.min > param.max:
        check.fail(f"uniform filler's min ({param.min:g}) is greater than its max ({param.max:g})")
    with np.errstate(over="ignore"):
        span = check.dtype.type(param.max) - check.dtype.type(param.min)
    if not np.isfinite(span):
        check.fail(f"uniform filler's range max - min = {param.max:g} - {param.min:g} overflows "
                   f"{check.dtype.name}")


def _check_gaussian(check):
    param = check.param
    check.finite("mean", "std")
    if param.std <= 0:
        check.fail(f"gaussian filler's std is {param.std:g}; it must be positive (Caffe checks std > 0)")
    if param.sparse < -1:
        check.fail(f"gaussian filler's sparse is {param.sparse}; give -1 (dense) or a count >= 0")
    if param.sparse >= 0:
        if not check.shape:
            check.fail(f"a sparse gaussian filler (sparse: {param.sparse}) needs a blob with at least one axis")
        outputs = check.shape[0]
        if outputs and param.sparse > outputs:
            check.fail(f"gaussian filler's sparse is {param.sparse}, more than the blob's {outputs} outputs "
                       f"(its first axis, of shape {check.shape}): each weight is kept with probability "
                       "sparse / outputs, at most 1")


def _check_positive_unitball(check):
    pass


def _check_fans(check):
    kind = check.param.type
    if not check.shape:
        check.fail(f"the {kind} filler needs a blob with at least one axis")
    if _fan(check.shape, check.param) == 0:
        norm = caffe_pb2.FillerParameter.VarianceNorm.Name(check.param.variance_norm)
        check.fail(f"the {kind} filler's fan ({norm}) is 0 for the blob of shape {check.shape}: "
                   "its scale would divide by zero (a zero dimension upstream?)")


def _check_bilinear(check):
    shape = check.shape
    if len(shape) != 4 or shape[2] != shape[3]:
        check.fail(f"the bilinear filler needs a 4-D blob with square kernels, got shape {shape}")


def _fan(shape, param):
    count = math.prod(shape)
    if count == 0:
        return 0
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    if param.variance_norm == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    if param.variance_norm == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


# Each filler writes into ``out`` (C-contiguous, the blob's float dtype) in place: no temporaries of the
# blob's size. For float64 blobs the numbers equal numpy's normal()/uniform() for the same seed.

def _constant(out, param, check):
    out.fill(param.value)


def _uniform_into(out, low, high):
    _rng.random(dtype=out.dtype, out=out)      # [0, 1), as Generator.uniform draws it
    out *= out.dtype.type(high - low)
    out += out.dtype.type(low)


def _normal_into(out, mean, std):
    _rng.standard_normal(dtype=out.dtype, out=out)
    out *= out.dtype.type(std)
    out += out.dtype.type(mean)


def _uniform(out, param, check):
    _uniform_into(out, param.min, param.max)


def _gaussian(out, param, check):
    _normal_into(out, param.mean, param.std)
    if param.sparse >= 0 and out.size:
        # Each weight is kept with probability sparse / num_outputs, so each
        # output sees `sparse` non-zero inputs on average.
        keep_probability = param.sparse / out.shape[0]
        flat = out.reshape(-1)
        for start in range(0, flat.size, _CHUNK):
            part = flat[start:start + _CHUNK]
            part *= _rng.random(part.size, dtype=out.dtype) < keep_probability


def _positive_unitball(out, param, check):
    _rng.random(dtype=out.dtype, out=out)
    if out.size:
        rows = out.reshape(out.shape[0], -1) if out.ndim else out.reshape(1, -1)
        rows /= rows.sum(axis=1, keepdims=True)


def _xavier(out, param, check):
    if out.size:
        scale = math.sqrt(3.0 / _fan(out.shape, param))
        _uniform_into(out, -scale, scale)


def _msra(out, param, check):
    if out.size:
        _normal_into(out, 0.0, math.sqrt(2.0 / _fan(out.shape, param)))


def _bilinear(out, param, check):
    # Upsampling kernels for Deconvolution: a separable tent centred on the kernel.
    width = out.shape[3]
    if not out.size:
        return
    f = math.ceil(width / 2.0)
    c = (width - 1) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(width) / f - c)
    out[...] = np.outer(ramp, ramp)


_FILLERS = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}

_CHECKS = {
    "constant": _check_constant,
    "uniform": _check_uniform,
    "gaussian": _check_gaussian,
    "positive_unitball": _check_positive_unitball,
    "xavier": _check_fans,
    "msra": _check_fans,
    "bilinear": _check_bilinear,
}

#: The filler types Caffe knows, for layers that validate their filler parameters early.
FILLER_TYPES = frozenset(_FILLERS)


def random_state() -> dict:
    """The generator's full state (for snapshots): restoring it replays the same draws."""
    return _rng.bit_generator.state


def set_random_state(state: dict) -> None:
    """Restore a state :func:`random_state` returned (check it first with :func:`check_random_state`)."""
    global _rng
    generator = np.random.default_rng()
    generator.bit_generator.state = state
    _rng = generator


def check_random_state(state) -> str | None:
    """What is wrong with ``state`` as a :func:`random_state` value, or None when it can be restored.

    The state minicaffe saves is numpy's PCG64 state: ``{"bit_generator": "PCG64", "state": {"state": S,
    "inc": I}, "has_uint32": 0|1, "uinteger": U}`` with S, I < 2^128 and U < 2^32.
    """
    name = type(_rng.bit_generator).__name__
    if not isinstance(state, dict):
        return f"the JSON is a {type(state).__name__}, not an object"
    if state.get("bit_generator") != name:
        return f"bit_generator is {state.get('bit_generator')!r}, not {name!r}"
    expected = {"bit_generator", "state", "has_uint32", "uinteger"}
    if set(state) != expected:
        return f"has the keys {sorted(state)}, not {sorted(expected)}"
    inner = state["state"]
    if not isinstance(inner, dict) or set(inner) != {"state", "inc"}:
        return f"state.state is {inner!r:.80}, not an object with 'state' and 'inc'"
    for key, value, bits in (("state.state", inner["state"], 128), ("state.inc", inner["inc"], 128),
                             ("uinteger", state["uinteger"], 32), ("has_uint32", state["has_uint32"], 1)):
        if type(value) is not int or not 0 <= value < 2 ** bits:
            return f"{key} is {value!r:.80}, not an integer in [0, 2^{bits})"
    return None
