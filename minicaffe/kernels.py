"""Shared numba helpers for CPU kernels: exp and log1p that vectorize in float32.

numba compiles ``math.exp`` to a scalar libm call that LLVM cannot vectorize on
machines without SVML, so exp becomes the bottleneck of softmax-style kernels.
For float32, :func:`exp` and :func:`log1p` here are arithmetic (Cephes' range
reduction and polynomials, accurate to about 1 ulp), which LLVM turns into SIMD
code. For float64, they are the exact libm calls: float64 is what gradient checks
use, and finite differences need the function itself, not an approximation.

Use them inside ``@njit`` kernels; the float32/float64 choice is made at compile
time from the argument's type. :func:`cpu_kernel` is the decorator for the
kernels themselves.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

#: Fast-math flags for kernels: reassociation (so reductions vectorize), FMA
#: contraction and reciprocals; not nnan/ninf, so NaN and inf inputs behave.
FASTMATH = frozenset({"reassoc", "contract", "arcp"})


def cpu_kernel(function=None, **options):
    """``@njit`` as minicaffe's CPU kernels use it: cached, vectorizing fast-math, and
    numpy's error model, since Python's (a zero check on every float division) keeps
    LLVM from vectorizing loops that divide (14x slower on a sigmoid); without the GIL,
    so the thread pool (:mod:`minicaffe.threads`) can run kernels side by side."""
    settings = {"cache": True, "error_model": "numpy", "fastmath": set(FASTMATH), "nogil": True}
    settings.update(options)
    if function is None:
        return njit(**settings)
    return njit(**settings)(function)


_LANES = 16


@njit(cache=True, error_model="numpy")
def maximum(values):
    """The largest element of a non-empty 1-D array, vectorized without fast-math's nnan.

    A running max is a reduction LLVM vectorizes only if NaN can be ignored; we
    keep NaN semantics (a NaN score must give a NaN loss, for the NaN guard), so
    the max is kept in 16 independent lanes, which vectorizes as is.
    """
    n = values.size
    if n < _LANES:
        top = values[0]
        for i in range(1, n):
            top = max(top, values[i])
        return top
    lanes = values[:_LANES].copy()
    full = n - n % _LANES
    for start in range(_LANES, full, _LANES):
        for k in range(_LANES):
            lanes[k] = max(lanes[k], values[start + k])
    top = lanes[0]
    for k in range(1, _LANES):
        top = max(top, lanes[k])
    for i in range(full, n):
        top = max(top, values[i])
    return top


_LOG2E = np.float32(1.44269504088896341)
_LN2_HIGH = np.float32(0.693359375)          # ln 2 split in two for an exact reduction
_LN2_LOW = np.float32(-2.12194440e-4)
_EXP_FLOOR = np.float32(-87.33654)           # exp below this is under FLT_MIN
_SQRT_HALF = np.float32(0.70710678118654752)


@njit(inline="always", fastmath=True, cache=True)
def _exp_f32(x):
    """exp(x) for float32 x <= 88; arguments below -87.3 give about FLT_MIN (not 0)."""
    x = max(x, _EXP_FLOOR)
    k = np.floor(x * _LOG2E + np.float32(0.5))
    r = x - k * _LN2_HIGH - k * _LN2_LOW
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    e = r + r * r * p + np.float32(1.0)
    # 2^k from its IEEE bits: exponent field k + 127.
    bits = np.int32((np.int32(k) + np.int32(127)) << np.int32(23))
    return e * _bits_to_f32(bits)


@intrinsic
def _bits_to_f32(typingctx, bits):
    """Reinterpret int32 bits as a float32 (an LLVM bitcast: free, and vectorizable)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=True, cache=True)
def _log1p_unit_f32(y):
    """log(1 + y) for float32 y in [0, 1]: Cephes' logf polynomial on a reduced argument."""
    z = np.float32(1.0) + y
    big = z > np.float32(1.0) / _SQRT_HALF
    # ln(z) = e ln2 + ln(m), m = z / 2^e in [sqrt(1/2), sqrt(2)); for small y use y itself (no cancellation)
    x = np.float32(0.5) * z - np.float32(1.0) if big else y
    e = np.float32(1.0) if big else np.float32(0.0)
    zz = x * x
    p = np.float32(7.0376836292e-2)
    p = p * x - np.float32(1.1514610310e-1)
    p = p * x + np.float32(1.1676998740e-1)
    p = p * x - np.float32(1.2420140846e-1)
    p = p * x + np.float32(1.4249322787e-1)
    p = p * x - np.float32(1.6668057665e-1)
    p = p * x + np.float32(2.0000714765e-1)
    p = p * x - np.float32(2.4999993993e-1)
    p = p * x + np.float32(3.3333331174e-1)
    value = p * x * zz + e * _LN2_LOW - np.float32(0.5) * zz
    return x + value + e * _LN2_HIGH


@intrinsic
def _f32_to_bits(typingctx, value):
    """Reinterpret a float32's bits as an int32 (an LLVM bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@njit(inline="always", fastmath=True, cache=True)
def _log_f32(z):
    """log(z) for positive, normal float32 z: split off the exponent from the bits, then log1p."""
    bits = _f32_to_bits(z)
    exponent = np.float32(((bits >> np.int32(23)) & np.int32(0xFF)) - np.int32(127))
    mantissa = _bits_to_f32((bits & np.int32(0x007FFFFF)) | np.int32(0x3F800000))   # in [1, 2)
    return _log1p_unit_f32(mantissa - np.float32(1.0)) + exponent * (_LN2_HIGH + _LN2_LOW)


def exp(x):
    """exp(x), arithmetic in float32 (vectorizable), libm in float64."""
    return math.exp(x)


def log1p_unit(y):
    """log(1 + y) for y in [0, 1], arithmetic in float32 (vectorizable), libm in float64."""
    return math.log1p(y)


@overload(exp, inline="always")
def _exp_overload(x):
    if x == types.float32:
        return lambda x: _exp_f32(x)
    return lambda x: math.exp(x)


def log(z):
    """log(z) for z > 0, arithmetic in float32 (vectorizable), libm in float64."""
    return math.log(z)


@overload(log, inline="always")
def _log_overload(z):
    if z == types.float32:
        return lambda z: _log_f32(z)
    return lambda z: math.log(z)


@overload(log1p_unit, inline="always")
def _log1p_overload(y):
    if y == types.float32:
        return lambda y: _log1p_unit_f32(y)
    return lambda y: math.log1p(y)


# -------------------------------------------------------------- softmax pieces
# Shared by the softmax-based losses (SoftmaxWithLoss, InfogainLoss,
# SoftlabelSoftmaxLoss): each then computes its own loss from the max and the
# sum of exponentials these leave behind.

@njit(inline="always", cache=True, error_model="numpy", fastmath=set(FASTMATH))
def softmax_row(row, probs):
    """probs = softmax(row) for a contiguous row; returns (max, sum of exp(row - max))."""
    top = maximum(row)
    total = row.dtype.type(0.0)
    for c in range(row.size):
        e = exp(row[c] - top)
        probs[c] = e
        total += e
    inverse = row.dtype.type(1.0) / total
    for c in range(row.size):
        probs[c] *= inverse
    return top, total


@njit(inline="always", cache=True, error_model="numpy", fastmath=set(FASTMATH))
def softmax_block(x, prob, o, start, maxima, totals, inverse):
    """Softmax over axis 1 of x[o, :, start:start+n], n = maxima.size, into prob.

    Leaves each location's max in ``maxima``, its sum of exp(x - max) in
    ``totals`` and that sum's reciprocal in ``inverse`` (scratch of size n).
    Every inner loop runs over a contiguous 1-D slice, which LLVM vectorizes
    (3-D indexing in the inner loop it does not).
    """
    channels = x.shape[1]
    n = maxima.size
    stop = start + n
    maxima[:] = x[o, 0, start:stop]
    for c in range(1, channels):
        scores = x[o, c, start:stop]
        for j in range(n):
            maxima[j] = max(maxima[j], scores[j])
    totals[:] = 0.0
    for c in range(channels):
        scores = x[o, c, start:stop]
        probs = prob[o, c, start:stop]
        for j in range(n):
            e = exp(scores[j] - maxima[j])
            probs[j] = e
            totals[j] += e
    for j in range(n):
        inverse[j] = 1.0 / totals[j]
    for c in range(channels):
        probs = prob[o, c, start:stop]
        for j in range(n):
            probs[j] *= inverse[j]
