"""The direct path: depthwise and few-channel convolutions as numba loops over planes, no BLAS.

A depthwise convolution (``group`` equal to the conv input's channels: each
output channel reads one input channel) does ``kernel_h * kernel_w``
multiply-adds per output value. Through im2row it becomes ``group`` products
of a ``locations x taps`` patch block by a single weight row, where BLAS's
per-call cost and the patch copy dominate (9 ms for a 16-channel 120x160 3x3
layer, against 0.3 ms here on one thread). These kernels work on planes
instead, one *task* per plane: an output plane (forward), an input plane
(transpose) or an output channel (weight gradient). A task writes only its
own outputs and sums in a fixed order, so any split of the tasks gives the
same bits; each kernel takes a range of tasks and releases the GIL, and
:func:`.conv_common._tasks` runs them (see its Threads paragraph).

How a plane is computed. The input plane is copied, zero-padded, into
``stride_h * stride_w`` *phase* planes (:func:`_to_phases`; phase ``(a, b)``
holds the padded rows ``a, a + stride_h, ...`` and columns ``b, b + stride_w,
...``), each ``phase_w`` wide. Laid out with that row length, the outputs of
the plane are a flat array ``(out_h, phase_w)`` (the columns past ``out_w``
are spare), and tap ``(i, j)`` reads its phase plane at one constant offset
from every output: a convolution is ``taps`` multiply-adds of a shifted flat
array, ``out[q] += w[i, j] * phase[q + offset]`` over all ``q``, whatever the
stride, dilation or padding. Those loops are long (the whole plane, in blocks
of ``_BLOCK`` that stay in L1 across the taps), branch-free and contiguous, so
LLVM vectorizes them: 2-3x faster than row-by-row loops on 7x7 to 56x56 planes
and on stride 2, where rows are short or read with a stride. The spare
columns are computed and dropped (forward), or kept at zero so they add
nothing (transpose, weight gradient; so an inf or NaN in the input can reach
a weight gradient through a spare column, 0 times inf, where im2row's would
stay finite). Buffers are allocated per task, the phase planes zeroed (their
padding stays zero).

- forward (apply): ``y[n, m] = b[m] + sum over c in m's group and taps (i, j)
  of w[m, c, i, j] x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]``, one task
  per output plane;
- transpose: one task per input plane, which sums into its own phase planes
  what every output plane of its group read from it, then copies their
  interior back (:func:`_from_phases`);
- weight gradient: one task per output channel, summing over images the dot
  products of the output diff with each tap's shifted phase plane, into a
  local array added to the weight diff once; the bias gradient (the sum of
  the output diff) on the way.

The kernels take any grouping (``group_in`` input and ``group_out`` output
channels per group; depthwise is ``group_in == 1``, with any channel
multiplier ``group_out``), any kernel, stride, pad and dilation, in one or two
spatial dimensions (1-D as 2-D with one row); which geometries the layer sends
here by itself is :meth:`DirectPath.wins`.

GPU: :class:`DirectGpuPath` takes depthwise layers (one input channel per
group, any channel multiplier; one or two spatial axes), where im2col + GEMM
would be ``group`` products of a single weight row. Forward runs one thread
per output (its taps from its one input channel, plus the bias); the input
gradient one thread per input element, summing what every output of its group
read from it (no atomics); the weight gradient one thread per (weight, image,
output row) writing a partial sum, reduced into the weight diff by one GEMV
with ones (beta 1: it accumulates), so no thread sums a whole plane and no
atomics contend for the few weights.
"""

from __future__ import annotations

import numpy as np

from .. import gpu, gpu_blas
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..kernels import cpu_kernel
from .conv_common import ConvPath, GpuConvPath, _launch, _tasks

_U = np.uint64

#: Flat outputs per block: the block of outputs and the phase windows it reads stay in L1 across the taps.
_BLOCK = 1024


@cpu_kernel(inline="always")
def _phase_shape(dims):
    """(phase_h, phase_w, phase_size, length): one phase plane's rows and columns, the elements of all the
    phase planes of one image plane, and of the flat (out_h, phase_w) outputs."""
    height, width = dims[2], dims[3]
    out_h = dims[6]
    stride_h, stride_w, pad_h, pad_w = dims[10], dims[11], dims[12], dims[13]
    phase_h = (height + 2 * pad_h + stride_h - 1) // stride_h
    phase_w = (width + 2 * pad_w + stride_w - 1) // stride_w
    return phase_h, phase_w, stride_h * stride_w * phase_h * phase_w, out_h * phase_w


@cpu_kernel(inline="always")
def _slack(dims, phase_w):
    """Elements after the last phase plane that the spare columns of the last output row may reach."""
    kernel_w, dilation_w, stride_w = dims[9], dims[15], dims[11]
    return phase_w + (kernel_w - 1) * dilation_w // stride_w + 1


@cpu_kernel(inline="always")
def _tap_offset(dims, phase_h, phase_w, i, j):
    """Where tap (i, j) reads, in the phase planes, for output 0: output q reads offset + q."""
    stride_h, stride_w, dilation_h, dilation_w = dims[10], dims[11], dims[14], dims[15]
    a = (i * dilation_h) % stride_h
    b = (j * dilation_w) % stride_w
    return (((a * stride_w + b) * phase_h + (i * dilation_h) // stride_h) * phase_w
            + (j * dilation_w) // stride_w)


@cpu_kernel(inline="always")
def _to_phases(x, source_start, dims, phase_h, phase_w, phases, target_start):
    """phases[a, b, r, q] = the padded plane at row r * stride_h + a, column q * stride_w + b: writes the
    interior only (the same elements for every plane), so the padding is zero if the array was allocated so."""
    height, width = dims[2], dims[3]
    stride_h, stride_w, pad_h, pad_w = dims[10], dims[11], dims[12], dims[13]
    phase_plane = phase_h * phase_w
    for iy in range(height):
        a = (iy + pad_h) % stride_h
        row = target_start + (a * stride_w * phase_h + (iy + pad_h) // stride_h) * phase_w   # phase (a, 0)
        source = source_start + iy * width
        if stride_w == 1:
            for ix in range(width):
                phases[_U(row + pad_w + ix)] = x[_U(source + ix)]
        elif stride_w == 2:                     # even columns to one phase, odd ones to the other
            even = row + (pad_w % 2) * phase_plane + pad_w // 2
            odd = row + ((pad_w + 1) % 2) * phase_plane + (pad_w + 1) // 2
            for k in range(width // 2):
                phases[_U(even + k)] = x[_U(source + 2 * k)]
                phases[_U(odd + k)] = x[_U(source + 2 * k + 1)]
            if width % 2:
                phases[_U(even + width // 2)] = x[_U(source + width - 1)]
        else:
            b = pad_w % stride_w
            q = pad_w // stride_w
            for ix in range(width):
                phases[_U(row + b * phase_plane + q)] = x[_U(source + ix)]
                b += 1
                if b == stride_w:
                    b = 0
                    q += 1


@cpu_kernel(inline="always")
def _from_phases(phases, dims, phase_h, phase_w, x, target_start):
    """x's plane = the interior of the padded plane held in phases (the inverse of _to_phases)."""
    height, width = dims[2], dims[3]
    stride_h, stride_w, pad_h, pad_w = dims[10], dims[11], dims[12], dims[13]
    phase_plane = phase_h * phase_w
    for iy in range(height):
        a = (iy + pad_h) % stride_h
        row = (a * stride_w * phase_h + (iy + pad_h) // stride_h) * phase_w
        target = target_start + iy * width
        if stride_w == 1:
            for ix in range(width):
                x[_U(target + ix)] = phases[_U(row + pad_w + ix)]
        elif stride_w == 2:
            even = row + (pad_w % 2) * phase_plane + pad_w // 2
            odd = row + ((pad_w + 1) % 2) * phase_plane + (pad_w + 1) // 2
            for k in range(width // 2):
                x[_U(target + 2 * k)] = phases[_U(even + k)]
                x[_U(target + 2 * k + 1)] = phases[_U(odd + k)]
            if width % 2:
                x[_U(target + width - 1)] = phases[_U(even + width // 2)]
        else:
            b = pad_w % stride_w
            q = pad_w // stride_w
            for ix in range(width):
                x[_U(target + ix)] = phases[_U(row + b * phase_plane + q)]
                b += 1
                if b == stride_w:
                    b = 0
                    q += 1


@cpu_kernel(inline="always")
def _to_outputs_grid(y, source_start, out_h, out_w, phase_w, grid):
    """grid[oy, ox] = y's plane, rows phase_w long; the spare columns are zero."""
    zero = grid.dtype.type(0)
    for oy in range(out_h):
        for ox in range(out_w):
            grid[_U(oy * phase_w + ox)] = y[_U(source_start + oy * out_w + ox)]
        for ox in range(out_w, phase_w):
            grid[_U(oy * phase_w + ox)] = zero


@cpu_kernel(nogil=True)
def _direct_forward(first, stop, x, weight, bias, add_bias, dims, y):
    """y = the convolution of x (+ bias[m] on output channel m): tasks [first, stop), one per output plane."""
    (images, in_channels, height, width, out_channels, groups, out_h, out_w,
     kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w) = dims
    group_in = in_channels // groups
    group_out = out_channels // groups
    taps = kernel_h * kernel_w
    phase_h, phase_w, phase_size, length = _phase_shape(dims)
    zero = y.dtype.type(0)
    for task in range(first, stop):
        n = task // out_channels
        m = task - n * out_channels
        first_channel = n * in_channels + (m // group_out) * group_in
        phases = np.zeros(group_in * phase_size + _slack(dims, phase_w), dtype=y.dtype)
        for c in range(group_in):
            _to_phases(x, (first_channel + c) * height * width, dims, phase_h, phase_w, phases, c * phase_size)
        grid = np.empty(length, dtype=y.dtype)
        value = bias[m] if add_bias else zero
        for start in range(0, length, _BLOCK):
            stop = min(start + _BLOCK, length)
            for q in range(start, stop):
                grid[_U(q)] = value
            for c in range(group_in):
                w_start = (m * group_in + c) * taps
                for i in range(kernel_h):
                    for j in range(kernel_w):
                        offset = c * phase_size + _tap_offset(dims, phase_h, phase_w, i, j)
                        w = weight[_U(w_start + i * kernel_w + j)]
                        for q in range(start, stop):
                            grid[_U(q)] += w * phases[_U(offset + q)]
        out_start = task * out_h * out_w
        for oy in range(out_h):
            for ox in range(out_w):
                y[_U(out_start + oy * out_w + ox)] = grid[_U(oy * phase_w + ox)]


@cpu_kernel(nogil=True)
def _direct_transpose(first, stop, y, weight, dims, x):
    """x = the transposed convolution of y (no bias): tasks [first, stop), one per input plane, which it alone
    writes."""
    (images, in_channels, height, width, out_channels, groups, out_h, out_w,
     kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w) = dims
    group_in = in_channels // groups
    group_out = out_channels // groups
    taps = kernel_h * kernel_w
    phase_h, phase_w, phase_size, length = _phase_shape(dims)
    for task in range(first, stop):
        n = task // in_channels
        c = task - n * in_channels
        group = c // group_in
        phases = np.zeros(phase_size + _slack(dims, phase_w), dtype=x.dtype)
        grid = np.empty(length, dtype=x.dtype)
        for k in range(group_out):
            m = group * group_out + k
            _to_outputs_grid(y, (n * out_channels + m) * out_h * out_w, out_h, out_w, phase_w, grid)
            w_start = (m * group_in + c - group * group_in) * taps
            for start in range(0, length, _BLOCK):
                stop = min(start + _BLOCK, length)
                for i in range(kernel_h):
                    for j in range(kernel_w):
                        offset = _tap_offset(dims, phase_h, phase_w, i, j)
                        w = weight[_U(w_start + i * kernel_w + j)]
                        for q in range(start, stop):
                            phases[_U(offset + q)] += w * grid[_U(q)]
        _from_phases(phases, dims, phase_h, phase_w, x, task * height * width)


@cpu_kernel(nogil=True)
def _direct_weight_gradient(first, stop, y, x, dims, weight_diff, bias_diff, add_bias):
    """weight_diff[m, c, i, j] += sum over n, oy, ox of y[n, m, oy, ox] x[n, c, input of (oy, ox) at tap (i, j)];
    bias_diff[m] += the sum of y[n, m] when ``add_bias``. Tasks [first, stop), one per output channel m."""
    (images, in_channels, height, width, out_channels, groups, out_h, out_w,
     kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w) = dims
    group_in = in_channels // groups
    group_out = out_channels // groups
    taps = kernel_h * kernel_w
    phase_h, phase_w, phase_size, length = _phase_shape(dims)
    zero = weight_diff.dtype.type(0)
    for m in range(first, stop):
        first_channel = (m // group_out) * group_in
        sums = np.zeros(group_in * taps, dtype=weight_diff.dtype)
        bias_sum = zero
        phases = np.zeros(group_in * phase_size + _slack(dims, phase_w), dtype=x.dtype)
        grid = np.empty(length, dtype=y.dtype)
        for n in range(images):
            out_start = (n * out_channels + m) * out_h * out_w
            if add_bias:
                total = zero
                for p in range(out_h * out_w):
                    total += y[_U(out_start + p)]
                bias_sum += total
            _to_outputs_grid(y, out_start, out_h, out_w, phase_w, grid)
            for c in range(group_in):
                _to_phases(x, (n * in_channels + first_channel + c) * height * width, dims, phase_h, phase_w,
                           phases, c * phase_size)
            for start in range(0, length, _BLOCK):
                stop = min(start + _BLOCK, length)
                for c in range(group_in):
                    for i in range(kernel_h):
                        for j in range(kernel_w):
                            offset = c * phase_size + _tap_offset(dims, phase_h, phase_w, i, j)
                            total = zero
                            for q in range(start, stop):
                                total += grid[_U(q)] * phases[_U(offset + q)]
                            sums[(c * kernel_h + i) * kernel_w + j] += total
        w_start = m * group_in * taps
        for k in range(group_in * taps):
            weight_diff[_U(w_start + k)] += sums[k]
        if add_bias:
            bias_diff[m] += bias_sum


class DirectPath(ConvPath):
    """Direct numba kernels; see the module docstring."""

    name = "direct"

    @staticmethod
    def fits(layer):
        return layer.spatial_axes in (1, 2)

    @staticmethod
    def wins(layer):
        """Few output channels per group (at most ``MAX_GROUP_OUTPUTS``, or ``MAX_SINGLE_GROUP_OUTPUTS`` with one
        group) and at most ``MAX_CHANNEL_PRODUCT`` input times output channels per group."""
        group_in = layer.conv_in_channels // layer.group
        group_out = layer.conv_out_channels // layer.group
        limit = MAX_GROUP_OUTPUTS if layer.group > 1 else MAX_SINGLE_GROUP_OUTPUTS
        return group_out <= limit and group_in * group_out <= MAX_CHANNEL_PRODUCT

    def __init__(self, layer):
        super().__init__(layer)
        g = layer.geometry

        def two(values, fill):          # 1-D runs as 2-D with one row
            return (fill,) * (2 - len(values)) + tuple(values)
        self.dims = (layer.num, layer.conv_in_channels, *two(g.in_dims, 1), layer.conv_out_channels, layer.group,
                     *two(g.out_dims, 1), *two(g.kernel, 1), *two(g.stride, 1), *two(g.pad, 0),
                     *two(g.dilation, 1))
        self.output_planes = layer.num * layer.conv_out_channels
        self.input_planes = layer.num * layer.conv_in_channels
        self.out_channels = layer.conv_out_channels
        # multiply-adds of one output plane through the weights of one input channel
        plane_work = g.taps * g.locations
        self.forward_work = plane_work * (layer.conv_in_channels // layer.group)
        self.transpose_work = plane_work * (layer.conv_out_channels // layer.group)
        self.weight_work = self.forward_work * layer.num

    def apply(self, conv_input, conv_output, bias, scale=None):
        weight = self.layer.blobs[0].data.reshape(-1)
        if scale is not None:       # a folded BatchNorm/Scale: this path's weights are few, scale a copy
            weight = (weight.reshape(scale.size, -1) * scale[:, None]).reshape(-1)
        add_bias = bias is not None
        _tasks(_direct_forward, self.output_planes, self.forward_work, conv_input, weight,
               bias if add_bias else weight, add_bias, self.dims, conv_output)

    def transpose(self, conv_output, conv_input):
        weight = self.layer.blobs[0].data.reshape(-1)
        _tasks(_direct_transpose, self.input_planes, self.transpose_work, conv_output, weight, self.dims, conv_input)

    def weight_gradient(self, output_diff, conv_input, weight_diff, bias_diff):
        if weight_diff is None:
            if bias_diff is not None:
                self.output_channel_sums(output_diff, bias_diff)
            return
        add_bias = bias_diff is not None
        flat_diff = weight_diff.reshape(-1)
        _tasks(_direct_weight_gradient, self.out_channels, self.weight_work, output_diff, conv_input, self.dims,
               flat_diff, bias_diff if add_bias else flat_diff, add_bias)

# Where the automatic choice sends a layer here rather than to im2row. Measured with one thread (OpenBLAS
# 0.3.31 on an AVX-512 Xeon, float32, 3x3 kernels, batch 1, 64 channels at 56x56 with stride 1 and at 112x112
# with stride 2): im2row's time over the direct kernels', forward, by (inputs, outputs) per group:
#   stride 1: (1, 1) 20x, (1, 8) 3.3x, (1, 32) 2.0x, (1, 64) 1.1x, (2, 16) 1.6x, (4, 8) 1.9x, (4, 16) 1.2x,
#             (8, 8) 1.6x, (8, 16) 0.9x, (16, 8) 1.4x, (16, 16) 0.7x, (64, 1) 4.4x
#   stride 2: (1, 1) 21x, (1, 8) 1.9x, (1, 16) 1.4x, (1, 32) 1.1x, (1, 64) 0.6x, (2, 16) 0.9x, (4, 8) 1.3x,
#             (4, 16) 0.7x, (8, 16) 0.7x, (16, 8) 2.5x
# (backward alike). With a single group im2row's patches are copied in long runs and its one product is
# more efficient: at 120x160, 64 -> 2 channels 7x, 32 -> 4 2.0x, 3 -> 10 1.0x, 16 -> 8 0.9x, 3 -> 16 0.7x.
MAX_GROUP_OUTPUTS = 8
MAX_SINGLE_GROUP_OUTPUTS = 4
MAX_CHANNEL_PRODUCT = 128


# ====================================================================== GPU
# Geometry arguments, in this order: images, channels (conv input), height, width, out_channels (conv output,
# a multiple of channels), out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
# dilation_w. Output channel m reads input channel m // (out_channels // channels).

@gpu.jit
def _direct_forward_gpu(x, weight, bias, add_bias, zero, images, channels, height, width, out_channels, out_h,
                        out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, y):
    i = cuda.grid(1)
    if i < images * out_channels * out_h * out_w:
        ox = i % out_w
        rest = i // out_w
        oy = rest % out_h
        rest //= out_h
        m = rest % out_channels
        n = rest // out_channels
        source = (n * channels + m // (out_channels // channels)) * height * width
        taps = m * kernel_h * kernel_w
        total = bias[m] if add_bias else zero
        for ki in range(kernel_h):
            iy = oy * stride_h - pad_h + ki * dilation_h
            if iy >= 0 and iy < height:
                for kj in range(kernel_w):
                    ix = ox * stride_w - pad_w + kj * dilation_w
                    if ix >= 0 and ix < width:
                        total += weight[taps + ki * kernel_w + kj] * x[source + iy * width + ix]
        y[i] = total


@gpu.jit
def _direct_transpose_gpu(dy, weight, zero, images, channels, height, width, out_channels, out_h, out_w, kernel_h,
                          kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, dx):
    i = cuda.grid(1)
    if i < images * channels * height * width:
        ix = i % width
        rest = i // width
        iy = rest % height
        rest //= height
        c = rest % channels
        n = rest // channels
        multiplier = out_channels // channels
        total = zero
        for j in range(multiplier):
            m = c * multiplier + j
            plane = (n * out_channels + m) * out_h * out_w
            for ki in range(kernel_h):
                oy = iy + pad_h - ki * dilation_h
                if oy >= 0 and oy % stride_h == 0 and oy // stride_h < out_h:
                    for kj in range(kernel_w):
                        ox = ix + pad_w - kj * dilation_w
                        if ox >= 0 and ox % stride_w == 0 and ox // stride_w < out_w:
                            total += weight[(m * kernel_h + ki) * kernel_w + kj] * \
                                dy[plane + (oy // stride_h) * out_w + ox // stride_w]
        dx[i] = total


@gpu.jit
def _direct_weight_partials_gpu(dy, x, zero, images, channels, height, width, out_channels, out_h, out_w,
                                kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                                partials):
    """partials[m, tap, n, oy] = sum over ox of dy[n, m, oy, ox] times the input that tap read there."""
    i = cuda.grid(1)
    if i < out_channels * kernel_h * kernel_w * images * out_h:
        oy = i % out_h
        rest = i // out_h
        n = rest % images
        rest //= images
        tap = rest % (kernel_h * kernel_w)
        m = rest // (kernel_h * kernel_w)
        ki = tap // kernel_w
        kj = tap % kernel_w
        total = zero
        iy = oy * stride_h - pad_h + ki * dilation_h
        if iy >= 0 and iy < height:
            outputs = ((n * out_channels + m) * out_h + oy) * out_w
            inputs = ((n * channels + m // (out_channels // channels)) * height + iy) * width
            for ox in range(out_w):
                ix = ox * stride_w - pad_w + kj * dilation_w
                if ix >= 0 and ix < width:
                    total += dy[outputs + ox] * x[inputs + ix]
        partials[i] = total


class DirectGpuPath(GpuConvPath):
    """Depthwise kernels on the device; see the module docstring."""

    name = "direct"

    @staticmethod
    def fits(layer):
        return layer.spatial_axes in (1, 2) and layer.conv_in_channels == layer.group

    @staticmethod
    def wins(layer):
        return layer.group > 1

    def __init__(self, layer):
        super().__init__(layer)
        g = layer.geometry

        def two(values, fill):          # 1-D runs as 2-D with one row
            return (fill,) * (2 - len(values)) + tuple(int(v) for v in values)
        height, width = two(g.in_dims, 1)
        self.out_h, self.out_w = two(g.out_dims, 1)
        self.dims = (int(layer.num), int(layer.conv_in_channels), height, width, int(layer.conv_out_channels),
                     self.out_h, self.out_w, *two(g.kernel, 1), *two(g.stride, 1), *two(g.pad, 0),
                     *two(g.dilation, 1))
        self.zero = layer.dtype.type(0)

    def apply(self, conv_input, conv_output, bias, scale=None):
        weight = self.layer.blobs[0].gpu_data
        add_bias = bias is not None
        _launch(_direct_forward_gpu, conv_output.size, conv_input, weight, bias if add_bias else weight, add_bias,
                self.zero, *self.dims, conv_output)

    def transpose(self, conv_output, conv_input):
        _launch(_direct_transpose_gpu, conv_input.size, conv_output, self.layer.blobs[0].gpu_data, self.zero,
                *self.dims, conv_input)

    def weight_gradient(self, output_diff, conv_input, weight_diff, bias_diff):
        if bias_diff is not None:
            self.output_channel_sums(output_diff, bias_diff)
        if weight_diff is None:
            return
        layer = self.layer
        rows = weight_diff.size
        columns = layer.num * self.out_h
        partials = layer._gpu_buffer("weight_partials", rows * columns)
        _launch(_direct_weight_partials_gpu, rows * columns, output_diff, conv_input, self.zero, *self.dims, partials)
        gpu_blas.gemv(partials.reshape(rows, columns), layer._gpu_buffer("ones", columns), weight_diff, beta=1.0)
