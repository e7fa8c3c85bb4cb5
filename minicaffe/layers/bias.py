"""Bias: ``y = x + b``, with ``b`` broadcast over the axes of ``x`` it does not cover.

``b`` comes from a second bottom or is a learned parameter blob. It lines up
with ``x`` from ``bias_param.axis`` (default 1, negative counts from the end);
its shape must equal that stretch of ``x``'s shape. A learned ``b`` takes the
shape of ``num_axes`` axes of ``x`` from ``axis`` (default 1; -1 = through the
last axis; 0 = a scalar), filled by ``bias_param.filler`` (default constant 0).
A scalar ``b`` (no axes) always applies from axis 0.

Viewing ``x`` as outer x dim x inner (dim = ``b``'s count):
``y[o, d, i] = x[o, d, i] + b[d]``. Gradients: ``dx = dy``;
``db[d] = sum_{o,i} dy[o, d, i]``, accumulated into a learned ``b``'s diff and
written into a second bottom's diff. Works in place.

CPU: the two kernels below, shared with Scale and BatchNorm, run on
minicaffe's threads (:mod:`minicaffe.threads`) over rows of the
``(outer * dim, inner)`` view, a small blob on one thread: ``channel_affine``
maps each row, ``channel_sums`` sums each channel, one channel per thread,
in a fixed order and in float64, so sums are the same at any thread count.
``channel_affine`` rounds after each operation, as numpy and Caffe do (no
fused multiply-add).

GPU: the same two operations, shared with Scale, BatchNorm, MVN and PReLU:
``channel_affine_gpu`` is a numba.cuda kernel (one thread per element), and
per channel sums are Caffe's: two GEMVs with a vector of ones (over the inner
axes, then over the outer ones) through cuBLAS, in the blob's type, written
or accumulated (beta 1) straight into the diff. Bias's Backward copies ``dy``
into ``dx`` on the device.
"""

import numpy as np

from .. import gpu, gpu_blas, threads
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..errors import GraphError
from ..fillers import fill
from ..kernels import cpu_kernel
from ..layer import Layer
from ..registry import register


@cpu_kernel(nogil=True, fastmath=False)
def channel_affine(x, y, in_place, shift, scale, bias, dim, start, stop):
    """y[r] = (x[r] - shift[d]) * scale[d] + bias[d] with d = r % dim, for rows [start, stop).

    ``in_place``: x is y, and the loop reads and writes y alone (LLVM vectorizes a loop over
    two arrays only after a run-time check that they do not overlap, which the same array fails).
    """
    for r in range(start, stop):
        d = r % dim
        minus, times, plus = shift[d], scale[d], bias[d]
        out = y[r]
        if in_place:
            for j in range(out.size):
                out[j] = (out[j] - minus) * times + plus
        else:
            row = x[r]
            for j in range(row.size):
                out[j] = (row[j] - minus) * times + plus


@cpu_kernel(nogil=True)
def channel_sums(a, b, use_b, dim, sums, start, stop):
    """sums[d] = sum over rows r = d, d + dim, ... of a[r] (times b[r] with ``use_b``), d in [start, stop)."""
    for d in range(start, stop):
        total = 0.0
        for r in range(d, a.shape[0], dim):
            row, other = a[r], b[r]
            if use_b:
                for j in range(row.size):
                    total += row[j] * other[j]
            else:
                for j in range(row.size):
                    total += row[j]
        sums[d] = total


# ---------------------------------------------------------------- GPU kernels

SUM, SUM_PRODUCT, SUM_NEGATIVE_PRODUCT = 0, 1, 2    # what channel_sums_gpu sums


def launch(kernel, count):
    """``kernel[blocks, threads]`` for one thread per element of ``count``: blocks of gpu.THREADS, or one
    block of ``count`` threads when fewer (the simulator runs each thread in Python: 5x faster on tiny blobs)."""
    return kernel[gpu.blocks_for(count), max(1, min(gpu.THREADS, count))]


@gpu.jit
def channel_affine_gpu(x, y, shift, scale, bias, use_shift, use_scale, use_bias, dim, inner):
    """y = (x - shift[d]) * scale[d] + bias[d] over flat arrays in an (outer, dim, inner) layout; an operand
    whose flag is off is skipped (any array of the type stands in for it). x may be y."""
    i = cuda.grid(1)
    if i < y.size:
        d = (i // inner) % dim
        value = x[i]
        if use_shift:
            value = value - shift[d]
        if use_scale:
            value = value * scale[d]
        if use_bias:
            value = value + bias[d]
        y[i] = value


@gpu.jit
def product_gpu(a, b, mode, out):
    """out = a * b (mode 1), or a * b where b <= 0 and 0 elsewhere (mode 2: PReLU's slope gradient)."""
    i = cuda.grid(1)
    if i < out.size:
        if mode == 1 or b[i] <= 0:
            out[i] = a[i] * b[i]
        else:
            out[i] = 0.0


def gpu_scratch(owner, name, count, dtype):
    """A device buffer kept on ``owner`` between iterations (:func:`minicaffe.gpu.scratch`)."""
    return gpu.scratch(owner, name, count, dtype)


def gpu_ones(owner, count, dtype):
    """A device vector of ``count`` ones (the multiplier Caffe's GEMV sums use), kept on ``owner``."""
    buffers = owner.__dict__.setdefault("_gpu_scratch", {})
    key = ("ones", count, np.dtype(dtype))
    if key not in buffers:
        buffers[key] = gpu.device_empty(count, dtype)
        gpu_blas.fill(buffers[key], 1)
    return buffers[key]


def affine_gpu(x, y, dim, inner, shift=None, scale=None, bias=None):
    """``channel_affine_gpu`` over the flat device arrays x and y; a missing operand is the identity."""
    if y.size:
        launch(channel_affine_gpu, y.size)(
            x, y, y if shift is None else shift, y if scale is None else scale, y if bias is None else bias,
            shift is not None, scale is not None, bias is not None, int(dim), int(inner))


def copy_gpu(source, target):
    """target = source on the device (one kernel launch; see :func:`launch`)."""
    affine_gpu(source, target, 1, 1)


def channel_sums_gpu(owner, a, layout, out, beta=0.0, b=None, mode=SUM, name="sums"):
    """out = per channel sums of a (a * b: ``mode``) over the flat device arrays in an (outer, dim, inner)
    layout, + beta * out: Caffe's two GEMVs with a vector of ones (over inner, then over outer), through
    cuBLAS; ``name`` keeps the scratch buffers of different calls apart."""
    outer, dim, inner = layout
    if not out.size:
        return out
    if not outer * inner:
        gpu_blas.scale(out, beta)
        return out
    if mode != SUM:
        product = gpu_scratch(owner, name + " product", a.size, a.dtype)
        launch(product_gpu, a.size)(a, b, int(mode), product)
        a = product
    if inner > 1:
        target = out if outer == 1 else gpu_scratch(owner, name + " rows", outer * dim, a.dtype)
        gpu_blas.gemv(a.reshape(outer * dim, inner), gpu_ones(owner, inner, a.dtype), target,
                      beta=beta if outer == 1 else 0.0)
        a = target
        if outer == 1:
            return out
    if outer > 1:
        gpu_blas.gemv(a.reshape(outer, dim), gpu_ones(owner, outer, a.dtype), out, trans_a=True, beta=beta)
    else:
        gpu_blas.axpby(1.0, a, beta, out)
    return out


def apply_channel_affine(x, y, dim, shift=None, scale=None, bias=None):
    """``channel_affine`` over rows of the (rows, inner) arrays ``x`` and ``y`` on minicaffe's threads;
    a missing operand is the identity (0, 1, 0)."""
    identity = {}

    def operand(values, fill_value):
        if values is not None:
            return values.reshape(-1)
        if fill_value not in identity:
            identity[fill_value] = np.full(dim, fill_value, dtype=x.dtype)
        return identity[fill_value]

    shift, scale, bias = operand(shift, 0), operand(scale, 1), operand(bias, 0)
    in_place = (x.shape == y.shape and x.strides == y.strides
                and x.__array_interface__["data"][0] == y.__array_interface__["data"][0])
    threads.parallel_for(x.shape[0], lambda start, stop: channel_affine(x, y, in_place, shift, scale, bias, dim,
                                                                        start, stop), x.shape[1])


def sum_channels(a, dim, b=None):
    """Per channel sums (float64, shape (dim,)) of a (times b) over the rows of (rows, inner) arrays."""
    sums = np.empty(dim, dtype=np.float64)
    other = a if b is None else b
    threads.parallel_for(dim, lambda start, stop: channel_sums(a, other, b is not None, dim, sums, start, stop),
                         a.size // max(1, dim))
    return sums


def rows(array, layout):
    """The (outer * dim, inner) view of an array in an (outer, dim, inner) layout."""
    return array.reshape(layout[0] * layout[1], layout[2])


def learned_operand_shape(layer, bottom0, axis_param, num_axes, what):
    """Shape of a learned Scale/Bias blob: ``num_axes`` axes of bottom 0 from ``axis`` (Caffe's rule)."""
    axis = bottom0.canonical_axis(axis_param, layer=layer.name)
    if num_axes < -1:
        raise GraphError(f"num_axes must be non-negative, or -1 to extend to the end of bottom 0; "
                         f"got {num_axes}", layer=layer.name)
    if num_axes >= 0 and bottom0.ndim < axis + num_axes:
        raise layer.shape_error(f"the {what} blob's {num_axes} axes extend past bottom 0's shape when applied "
                                f"from axis {axis}", expected=bottom0.shape[axis:], actual=(num_axes,))
    return bottom0.shape[axis:] if num_axes == -1 else bottom0.shape[axis:axis + num_axes]


def broadcast_layout(layer, bottom0, operand_shape, axis_param, what):
    """(outer, dim, inner) for an operand of ``operand_shape`` lined up with bottom 0 from ``axis``.

    A scalar operand applies from axis 0 whatever the axis says (Caffe does the
    same: the result does not depend on it).
    """
    operand_shape = tuple(operand_shape)
    count = len(operand_shape)
    axis = 0 if count == 0 else bottom0.canonical_axis(axis_param, layer=layer.name)
    stretch = bottom0.shape[axis:axis + count]
    if stretch != operand_shape:
        raise layer.shape_error(f"the {what} must have the shape of bottom 0 {bottom0.shape} from axis {axis}",
                                expected=stretch, actual=operand_shape)
    return (bottom0.count_axes(0, axis), int(np.prod(operand_shape, dtype=np.int64)),
            bottom0.count_axes(axis + count))


@register("Bias")
class BiasLayer(Layer):
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.bias_param
        if len(bottom) == 1:
            shape = learned_operand_shape(self, bottom[0], param.axis, param.num_axes, "bias")
            self.blobs = [self.new_param_blob(shape)]
            fill(self.blobs[0], param.filler, self.name, "bias_param.filler")

    def _operand(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        self.layout = broadcast_layout(self, bottom[0], self._operand(bottom).shape,
                                       self.layer_param.bias_param.axis, "bias")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        apply_channel_affine(rows(bottom[0].data, self.layout), rows(top[0].data, self.layout), self.layout[1],
                             bias=self._operand(bottom).data)

    def backward(self, top, propagate_down, bottom):
        dy = rows(top[0].diff, self.layout)
        if len(bottom) == 1:
            if self.param_propagate_down[0]:
                self.blobs[0].diff.reshape(-1)[...] += sum_channels(dy, self.layout[1]).astype(self.dtype)
        elif propagate_down[1]:
            bottom[1].diff.reshape(-1)[...] = sum_channels(dy, self.layout[1])
        if propagate_down[0] and bottom[0] is not top[0]:
            source, target = top[0].diff.reshape(-1), bottom[0].diff.reshape(-1)
            threads.parallel_for(source.size, lambda start, stop: np.copyto(target[start:stop], source[start:stop]))

    def forward_gpu(self, bottom, top):
        outer, dim, inner = self.layout
        affine_gpu(bottom[0].gpu_data, top[0].mutable_gpu_data, dim, inner, bias=self._operand(bottom).gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        dy = top[0].gpu_diff
        if len(bottom) == 1:
            if self.param_propagate_down[0]:
                channel_sums_gpu(self, dy, self.layout, self.blobs[0].mutable_gpu_diff, beta=1.0)
        elif propagate_down[1]:
            channel_sums_gpu(self, dy, self.layout, bottom[1].mutable_gpu_diff)
        if propagate_down[0] and bottom[0] is not top[0]:
            copy_gpu(dy, bottom[0].mutable_gpu_diff)
