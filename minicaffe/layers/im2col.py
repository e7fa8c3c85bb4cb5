"""Im2col: each output location's receptive field laid out as a column (Caffe's Im2colLayer).

For a bottom ``(N, C, *spatial)`` (the channel axis is ``convolution_param.axis``,
the axes before it are flattened into N), the top is ``(N, C * prod(kernel),
*out)`` with ``out_d = (in_d + 2 pad_d - (dilation_d (kernel_d - 1) + 1)) //
stride_d + 1``. Row ``(c, k_1, ..., k_D)`` of image ``n`` at output location
``o`` holds ``x[n, c, o_d stride_d - pad_d + k_d dilation_d ...]``, or 0 where
that falls in the padding. Backward (col2im) sums each column entry back into
the input position it was copied from: ``dx[n, c, i] = sum of dtop over every
(row, location) that read x[n, c, i]``.

This module also holds the numba kernels that Convolution and Deconvolution
use (:class:`ConvGeometry`), and the parsing of the kernel, stride, pad and
dilation fields (:func:`parse_spatial_params`), with Caffe's rules:
``kernel_size``/``stride``/``pad``/``dilation`` given once or once per spatial
axis, ``kernel_h``/``kernel_w`` (and the ``_h``/``_w`` forms of stride and pad)
for 2-D only.

Kernels. They build the transpose of Caffe's column buffer, one *row* per
output location ("im2row"): row ``(n, o)`` holds the receptive field of
location ``o`` of image ``n``, ordered (group, kernel tap, channel within the
group). In two dimensions (and one, as 2-D) the images are first copied
channels-last into a zero-padded scratch buffer, so that a row is assembled
from runs of ``kernel_w * channels`` contiguous values with no bounds to test;
the reverse (row2im) sums rows into the padded buffer, then copies its
interior back channels-first. Other numbers of spatial axes (and
``force_nd_im2col``) use a general N-D kernel that gives the same values.
This layout is what makes the convolution's matrix products fast: BLAS's
products with the patch matrix on the left ran up to 1.8x faster than with
Caffe's layout (OpenBLAS, AVX-512 kernels), and never slower. This layer's
top, in Caffe's layout, is a transposed copy of those rows. Indices are cast
to unsigned before use so numba emits no negative-index wraparound, which
would keep LLVM from vectorizing the copies.

GPU: Caffe's column layout (row ``(c, tap)``, one column per output location),
which the device GEMMs read as it is: im2col runs one thread per (image,
channel, output location) that copies the location's taps down its column
(zero in the padding); col2im one thread per input element that sums every
column entry read from it (no atomics, overwriting). Both take the distance
between images and between rows, so the convolution can lay a chunk of images
side by side (one GEMM per group for the chunk) while this layer writes
Caffe's per-image layout straight into its top. 1-D and 2-D run as 2-D;
more spatial axes (and ``force_nd_im2col``) use N-D kernels that read the
geometry from a small device array.
"""

from __future__ import annotations

import numpy as np

from .. import gpu
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..kernels import cpu_kernel
from ..layer import Layer
from ..registry import register

_U = np.uint64


# ====================================================================== kernels

@cpu_kernel
def _to_padded_channels_last(x, images, channels, height, width, pad_h, pad_w, padded):
    """padded[n, y + pad_h, x + pad_w, c] = x[n, c, y, x]; the border is zero."""
    padded_h = height + 2 * pad_h
    padded_w = width + 2 * pad_w
    if pad_h > 0 or pad_w > 0:
        for k in range(images * padded_h * padded_w * channels):
            padded[_U(k)] = 0
    for n in range(images):
        for c in range(channels):
            source = (n * channels + c) * height * width
            for y in range(height):
                target = ((n * padded_h + y + pad_h) * padded_w + pad_w) * channels + c
                for x_ in range(width):
                    padded[_U(target + x_ * channels)] = x[_U(source + y * width + x_)]


@cpu_kernel
def _from_padded_channels_last(padded, images, channels, height, width, pad_h, pad_w, x):
    """x[n, c, y, x] = padded[n, y + pad_h, x + pad_w, c] (the interior, channels first again)."""
    padded_h = height + 2 * pad_h
    padded_w = width + 2 * pad_w
    for n in range(images):
        for c in range(channels):
            target = (n * channels + c) * height * width
            for y in range(height):
                source = ((n * padded_h + y + pad_h) * padded_w + pad_w) * channels + c
                for x_ in range(width):
                    x[_U(target + y * width + x_)] = padded[_U(source + x_ * channels)]


#: Elements of slack after the patch matrix and the padded images: a run shorter than a vector is copied
#: as a whole vector of _SLACK values, whose excess lands where a later run (or the slack) is written.
_SLACK = 16


@cpu_kernel
def _im2row_2d(padded, images, channels, groups, padded_h, padded_w, kernel_h, kernel_w, stride_h, stride_w,
               dilation_h, dilation_w, out_h, out_w, rows):
    """rows[(n, oy, ox), g, i, j, c'] = padded[n, oy*sh + i*dh, ox*sw + j*dw, g*C/G + c'] (channels-last input).

    Runs are copied in increasing order of target, so a short run copied as _SLACK values (one vector
    instruction instead of a scalar loop) only overwrites targets that are written later: both arrays need
    _SLACK elements beyond their data.
    """
    group_channels = channels // groups
    width = channels * kernel_h * kernel_w
    group_width = group_channels * kernel_h * kernel_w
    run = kernel_w * channels
    for n in range(images):
        for oy in range(out_h):
            for ox in range(out_w):
                row = ((n * out_h + oy) * out_w + ox) * width
                for i in range(kernel_h):
                    line = ((n * padded_h + oy * stride_h + i * dilation_h) * padded_w + ox * stride_w) * channels
                    if groups == 1 and dilation_w == 1:
                        target = row + i * run
                        if run < _SLACK:
                            for q in range(_SLACK):
                                rows[_U(target + q)] = padded[_U(line + q)]
                        else:
                            for q in range(run):
                                rows[_U(target + q)] = padded[_U(line + q)]
                    else:
                        for j in range(kernel_w):
                            source = line + j * dilation_w * channels
                            for g in range(groups):
                                target = row + g * group_width + (i * kernel_w + j) * group_channels
                                start = source + g * group_channels
                                for q in range(group_channels):
                                    rows[_U(target + q)] = padded[_U(start + q)]


@cpu_kernel
def _row2im_2d(rows, images, channels, groups, padded_h, padded_w, kernel_h, kernel_w, stride_h, stride_w,
               dilation_h, dilation_w, out_h, out_w, padded):
    """padded = 0, then every row entry added back where _im2row_2d read it."""
    group_channels = channels // groups
    width = channels * kernel_h * kernel_w
    group_width = group_channels * kernel_h * kernel_w
    run = kernel_w * channels
    for k in range(images * padded_h * padded_w * channels):
        padded[_U(k)] = 0
    for n in range(images):
        for oy in range(out_h):
            for ox in range(out_w):
                row = ((n * out_h + oy) * out_w + ox) * width
                for i in range(kernel_h):
                    line = ((n * padded_h + oy * stride_h + i * dilation_h) * padded_w + ox * stride_w) * channels
                    if groups == 1 and dilation_w == 1:
                        source = row + i * run
                        for q in range(run):
                            padded[_U(line + q)] += rows[_U(source + q)]
                    else:
                        for j in range(kernel_w):
                            target = line + j * dilation_w * channels
                            for g in range(groups):
                                source = row + g * group_width + (i * kernel_w + j) * group_channels
                                start = target + g * group_channels
                                for q in range(group_channels):
                                    padded[_U(start + q)] += rows[_U(source + q)]


@cpu_kernel
def _nd_offset(position, in_shape, out_shape, tap, kernel, pad, stride, dilation):
    """Flat input offset that output location ``position`` reads through kernel ``tap``; -1 in the padding."""
    offset = 0
    scale = 1
    out_rest = position
    tap_rest = tap
    for d in range(in_shape.size - 1, -1, -1):
        o = out_rest % out_shape[d]
        out_rest //= out_shape[d]
        k = tap_rest % kernel[d]
        tap_rest //= kernel[d]
        coordinate = o * stride[d] - pad[d] + k * dilation[d]
        if coordinate < 0 or coordinate >= in_shape[d]:
            return -1
        offset += coordinate * scale
        scale *= in_shape[d]
    return offset


@cpu_kernel
def _im2row_nd(x, images, channels, groups, in_shape, out_shape, kernel, pad, stride, dilation, rows):
    """The N-D im2row, reading channels-first x directly: any number of spatial axes."""
    in_size = 1
    locations = 1
    taps = 1
    for d in range(in_shape.size):
        in_size *= in_shape[d]
        locations *= out_shape[d]
        taps *= kernel[d]
    group_channels = channels // groups
    width = channels * taps
    for n in range(images):
        for position in range(locations):
            row = (n * locations + position) * width
            for tap in range(taps):
                offset = _nd_offset(position, in_shape, out_shape, tap, kernel, pad, stride, dilation)
                for c in range(channels):
                    target = row + (c // group_channels) * group_channels * taps + tap * group_channels \
                        + c % group_channels
                    if offset < 0:
                        rows[_U(target)] = 0
                    else:
                        rows[_U(target)] = x[_U((n * channels + c) * in_size + offset)]


@cpu_kernel
def _row2im_nd(rows, images, channels, groups, in_shape, out_shape, kernel, pad, stride, dilation, x):
    """The N-D row2im: x = 0, then every row entry added back where _im2row_nd read it."""
    in_size = 1
    locations = 1
    taps = 1
    for d in range(in_shape.size):
        in_size *= in_shape[d]
        locations *= out_shape[d]
        taps *= kernel[d]
    group_channels = channels // groups
    width = channels * taps
    for k in range(images * channels * in_size):
        x[_U(k)] = 0
    for n in range(images):
        for position in range(locations):
            row = (n * locations + position) * width
            for tap in range(taps):
                offset = _nd_offset(position, in_shape, out_shape, tap, kernel, pad, stride, dilation)
                if offset < 0:
                    continue
                for c in range(channels):
                    source = row + (c // group_channels) * group_channels * taps + tap * group_channels \
                        + c % group_channels
                    x[_U((n * channels + c) * in_size + offset)] += rows[_U(source)]


# ====================================================================== GPU kernels
# Column entry (n, row, location) sits at n * image_stride + row * row_stride + location, with row = c * taps
# + tap (Caffe's order, so a group's rows are one contiguous block).

@gpu.jit
def _im2col_gpu(x, images, channels, height, width, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                dilation_h, dilation_w, out_h, out_w, image_stride, row_stride, col):
    i = cuda.grid(1)
    if i < images * channels * out_h * out_w:
        ox = i % out_w
        rest = i // out_w
        oy = rest % out_h
        rest //= out_h
        c = rest % channels
        n = rest // channels
        source = (n * channels + c) * height * width
        target = n * image_stride + c * kernel_h * kernel_w * row_stride + oy * out_w + ox
        for ki in range(kernel_h):
            y = oy * stride_h - pad_h + ki * dilation_h
            for kj in range(kernel_w):
                x_ = ox * stride_w - pad_w + kj * dilation_w
                if y >= 0 and y < height and x_ >= 0 and x_ < width:
                    col[target] = x[source + y * width + x_]
                else:
                    col[target] = 0
                target += row_stride


@gpu.jit
def _col2im_gpu(col, images, channels, height, width, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                dilation_h, dilation_w, out_h, out_w, image_stride, row_stride, zero, x):
    i = cuda.grid(1)
    if i < images * channels * height * width:
        ix = i % width
        rest = i // width
        iy = rest % height
        rest //= height
        c = rest % channels
        n = rest // channels
        base = n * image_stride + c * kernel_h * kernel_w * row_stride
        total = zero
        for ki in range(kernel_h):
            oy = iy + pad_h - ki * dilation_h
            if oy >= 0 and oy % stride_h == 0 and oy // stride_h < out_h:
                for kj in range(kernel_w):
                    ox = ix + pad_w - kj * dilation_w
                    if ox >= 0 and ox % stride_w == 0 and ox // stride_w < out_w:
                        total += col[base + (ki * kernel_w + kj) * row_stride + (oy // stride_h) * out_w
                                     + ox // stride_w]
        x[i] = total


# dims (int64, 6 * axes): in_shape, out_shape, kernel, pad, stride, dilation, each one value per axis.

@gpu.device
def _nd_source_gpu(dims, axes, location, tap):
    """Input offset that output ``location`` reads through ``tap``; -1 in the padding."""
    offset = 0
    scale = 1
    out_rest = location
    tap_rest = tap
    for d in range(axes - 1, -1, -1):
        size = dims[d]
        o = out_rest % dims[axes + d]
        out_rest //= dims[axes + d]
        k = tap_rest % dims[2 * axes + d]
        tap_rest //= dims[2 * axes + d]
        coordinate = o * dims[4 * axes + d] - dims[3 * axes + d] + k * dims[5 * axes + d]
        if coordinate < 0 or coordinate >= size:
            return -1
        offset += coordinate * scale
        scale *= size
    return offset


@gpu.device
def _nd_target_gpu(dims, axes, position, tap):
    """Output location that reads input ``position`` through ``tap``; -1 where none does."""
    location = 0
    scale = 1
    in_rest = position
    tap_rest = tap
    for d in range(axes - 1, -1, -1):
        i = in_rest % dims[d]
        in_rest //= dims[d]
        k = tap_rest % dims[2 * axes + d]
        tap_rest //= dims[2 * axes + d]
        o = i + dims[3 * axes + d] - k * dims[5 * axes + d]
        stride = dims[4 * axes + d]
        if o < 0 or o % stride != 0 or o // stride >= dims[axes + d]:
            return -1
        location += (o // stride) * scale
        scale *= dims[axes + d]
    return location


@gpu.jit
def _im2col_nd_gpu(x, images, channels, axes, in_size, locations, taps, dims, image_stride, row_stride, col):
    i = cuda.grid(1)
    if i < images * channels * locations:
        location = i % locations
        rest = i // locations
        c = rest % channels
        n = rest // channels
        source = (n * channels + c) * in_size
        target = n * image_stride + c * taps * row_stride + location
        for tap in range(taps):
            offset = _nd_source_gpu(dims, axes, location, tap)
            if offset < 0:
                col[target] = 0
            else:
                col[target] = x[source + offset]
            target += row_stride


@gpu.jit
def _col2im_nd_gpu(col, images, channels, axes, in_size, locations, taps, dims, image_stride, row_stride, zero,
                   x):
    i = cuda.grid(1)
    if i < images * channels * in_size:
        position = i % in_size
        rest = i // in_size
        c = rest % channels
        n = rest // channels
        base = n * image_stride + c * taps * row_stride
        total = zero
        for tap in range(taps):
            location = _nd_target_gpu(dims, axes, position, tap)
            if location >= 0:
                total += col[base + tap * row_stride + location]
        x[i] = total


# ====================================================================== parameters

class ConvParamError(ValueError):
    """A convolution_param field that Caffe rejects; the layer turns it into a named error."""


def _per_axis(values, name, axes, default=None):
    """A repeated field given once (for every axis) or once per spatial axis; ``default`` when absent."""
    values = list(values)
    if not values and default is not None:
        return [default] * axes
    if len(values) not in (1, axes):
        raise ConvParamError(f"{name} must be specified once, or once per spatial dimension "
                             f"({name} specified {len(values)} times; {axes} spatial dims)")
    return [int(values[0 if len(values) == 1 else i]) for i in range(axes)]


def _hw_or_list(param, name, axes, default):
    """``name_h``/``name_w`` (2-D only, not with the list form) or the repeated ``name`` field."""
    has_h, has_w = param.HasField(f"{name}_h"), param.HasField(f"{name}_w")
    listed = getattr(param, "kernel_size" if name == "kernel" else name)
    list_name = "kernel_size" if name == "kernel" else name
    if has_h or has_w:
        if axes != 2:
            raise ConvParamError(f"{name}_h & {name}_w can only be used for 2D convolution "
                                 f"(the input has {axes} spatial axes)")
        if len(listed):
            raise ConvParamError(f"either {list_name} or {name}_h/w should be specified; not both")
        return [int(getattr(param, f"{name}_h")), int(getattr(param, f"{name}_w"))]
    return _per_axis(listed, list_name, axes, default)


def parse_spatial_params(param, axes):
    """(kernel, stride, pad, dilation) lists of length ``axes`` from a ConvolutionParameter.

    Raises :class:`ConvParamError` with Caffe's rule when a field is malformed.
    Deliberate differences from Caffe: ``dilation: 0`` is rejected (Caffe would
    read every tap of a kernel from the same pixel), and so is a zero stride
    from ``stride_h``/``stride_w`` (Caffe checks the list form only, then
    divides by zero).
    """
    kernel = _hw_or_list(param, "kernel", axes, None)
    if any(k <= 0 for k in kernel):
        raise ConvParamError(f"filter dimensions must be nonzero (kernel {kernel})")
    stride = _hw_or_list(param, "stride", axes, 1)
    if any(s <= 0 for s in stride):
        raise ConvParamError(f"stride dimensions must be nonzero (stride {stride})")
    pad = _hw_or_list(param, "pad", axes, 0)
    dilation = _per_axis(param.dilation, "dilation", axes, 1)
    if any(d <= 0 for d in dilation):
        raise ConvParamError(f"dilation must be positive (dilation {dilation})")
    for name, values in (("kernel", kernel), ("stride", stride), ("pad", pad), ("dilation", dilation)):
        if any(v > INT_MAX for v in values):   # the kernels' index arithmetic (int64) assumes Caffe's range
            raise ConvParamError(f"{name} {values} is past {INT_MAX} (2^31 - 1): the field is a uint32, but Caffe "
                                 "reads it as an int, where it would be negative")
    return kernel, stride, pad, dilation


INT_MAX = 2 ** 31 - 1


def conv_output_dims(input_dims, kernel, stride, pad, dilation):
    """Convolution's output extent per axis, ``(in + 2 pad - extent) // stride + 1``; None where it would be < 1."""
    dims = []
    for size, k, s, p, d in zip(input_dims, kernel, stride, pad, dilation):
        extent = d * (k - 1) + 1
        dims.append((size + 2 * p - extent) // s + 1 if size + 2 * p >= extent else None)
    return dims


# ====================================================================== geometry

class ConvGeometry:
    """One convolution shape: ``channels`` x ``in_dims`` images seen through a kernel, giving ``out_dims``.

    :meth:`im2row` fills a row matrix of ``images * locations`` rows by
    ``width = channels * taps`` from flat, channels-first images; row entries
    are ordered (group, tap, channel within the group), so group ``g``'s
    patches are the column block ``[g * width / groups, (g + 1) * width /
    groups)``. :meth:`row2im` is its transpose (sums back, overwriting).
    """

    def __init__(self, channels, in_dims, out_dims, kernel, stride, pad, dilation, groups=1, force_nd=False):
        self.channels = int(channels)
        self.groups = int(groups)
        self.in_dims = tuple(int(d) for d in in_dims)
        self.out_dims = tuple(int(d) for d in out_dims)
        self.kernel, self.stride, self.pad, self.dilation = (tuple(int(v) for v in values)
                                                             for values in (kernel, stride, pad, dilation))
        self.taps = int(np.prod(self.kernel, dtype=np.int64))
        self.width = self.channels * self.taps
        self.locations = int(np.prod(self.out_dims, dtype=np.int64))
        self.image_size = self.channels * int(np.prod(self.in_dims, dtype=np.int64))
        axes = len(self.in_dims)
        self.use_nd = force_nd or axes > 2
        self._gpu_dims = None
        if self.use_nd:
            as_array = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
            self.pointwise = False
            self._padded_image_size = 0
            self._args_nd = (self.channels, self.groups, as_array(self.in_dims), as_array(self.out_dims),
                             as_array(self.kernel), as_array(self.pad), as_array(self.stride),
                             as_array(self.dilation))
            return

        def two(values, fill):                  # 0-D and 1-D geometry run as 2-D with leading unit axes
            return (fill,) * (2 - axes) + tuple(values)
        height, width = two(self.in_dims, 1)
        pad_h, pad_w = two(self.pad, 0)
        # 1x1 kernel, stride 1, no padding: the patch matrix is the channels-last image itself (Caffe's 1x1 case).
        self.pointwise = all(k == 1 and s == 1 and p == 0 for k, s, p in zip(self.kernel, self.stride, self.pad))
        self._padding = (self.channels, height, width, pad_h, pad_w)
        padded_h, padded_w = height + 2 * pad_h, width + 2 * pad_w
        self._padded_image_size = self.channels * padded_h * padded_w
        self._args_2d = (self.channels, self.groups, padded_h, padded_w, *two(self.kernel, 1), *two(self.stride, 1),
                         *two(self.dilation, 1), *two(self.out_dims, 1))
        out_h, out_w = two(self.out_dims, 1)
        self._gpu_args_2d = (self.channels, height, width, *two(self.kernel, 1), pad_h, pad_w, *two(self.stride, 1),
                             *two(self.dilation, 1), out_h, out_w)

    def scratch_size(self, images):
        """Elements of scratch that :meth:`im2row` and :meth:`row2im` need for ``images`` images."""
        return 0 if self.pointwise or self.use_nd else images * self._padded_image_size + _SLACK

    def rows_size(self, images):
        """Elements the row matrix of ``images`` images needs (with the slack :meth:`im2row` may write into)."""
        return images * self.locations * self.width + _SLACK

    def im2row(self, x, images, rows, scratch=None):
        """Fill ``rows`` (flat, ``images * locations`` x ``width``) from ``images`` images in ``x`` (flat).

        ``rows``: at least :meth:`rows_size` elements (the matrix, then slack that may be overwritten);
        ``scratch``: at least :meth:`scratch_size` elements (allocated here if not given).
        """
        if rows.size < self.rows_size(images):
            raise ValueError(f"im2row needs {self.rows_size(images)} elements of rows, got {rows.size}")
        if self.use_nd:
            _im2row_nd(x, images, *self._args_nd, rows)
            return
        if self.pointwise:
            _to_padded_channels_last(x, images, *self._padding, rows)
            return
        padded = self._scratch(scratch, images, x.dtype)
        _to_padded_channels_last(x, images, *self._padding, padded)
        _im2row_2d(padded, images, *self._args_2d, rows)

    def row2im(self, rows, images, x, scratch=None):
        """Overwrite ``x`` (flat, ``images`` images) with the row entries summed back to where they were read."""
        if self.use_nd:
            _row2im_nd(rows, images, *self._args_nd, x)
            return
        if self.pointwise:
            _from_padded_channels_last(rows, images, *self._padding, x)
            return
        padded = self._scratch(scratch, images, x.dtype)
        _row2im_2d(rows, images, *self._args_2d, padded)
        _from_padded_channels_last(padded, images, *self._padding, x)

    # ---------------------------------------------------------------- the GPU's column layout
    def im2col_gpu(self, x, images, col, image_stride, row_stride):
        """Device: column entry (n, c * taps + tap, location) of ``images`` flat images in ``x`` into ``col``
        at ``n * image_stride + row * row_stride + location`` (Caffe's order; zero in the padding)."""
        count = images * self.channels * self.locations
        if not count:
            return
        if self.use_nd:
            _im2col_nd_gpu[gpu.blocks_for(count), gpu.THREADS](x, int(images), *self._gpu_args_nd(), int(image_stride),
                                                               int(row_stride), col)
            return
        _im2col_gpu[gpu.blocks_for(count), gpu.THREADS](x, int(images), *self._gpu_args_2d, int(image_stride),
                                                         int(row_stride), col)

    def col2im_gpu(self, col, images, x, image_stride, row_stride):
        """Device: overwrite ``images`` flat images in ``x`` with the column entries summed back to where
        :meth:`im2col_gpu` read them (same strides)."""
        count = images * self.image_size
        if not count:
            return
        zero = x.dtype.type(0)
        if self.use_nd:
            _col2im_nd_gpu[gpu.blocks_for(count), gpu.THREADS](col, int(images), *self._gpu_args_nd(),
                                                               int(image_stride), int(row_stride), zero, x)
            return
        _col2im_gpu[gpu.blocks_for(count), gpu.THREADS](col, int(images), *self._gpu_args_2d, int(image_stride),
                                                         int(row_stride), zero, x)

    def _gpu_args_nd(self):
        """(channels, axes, in_size, locations, taps, dims on the device): dims is uploaded once per geometry."""
        if self._gpu_dims is None:
            self._gpu_dims = gpu.to_device(np.array(self.in_dims + self.out_dims + self.kernel + self.pad
                                                    + self.stride + self.dilation, dtype=np.int64))
        return (self.channels, len(self.in_dims), self.image_size // self.channels, self.locations, self.taps,
                self._gpu_dims)

    def _scratch(self, scratch, images, dtype):
        size = self.scratch_size(images)
        return np.empty(size, dtype=dtype) if scratch is None else scratch[:size]

    # weights in row order: (groups, outputs / groups, taps * channels / groups)
    def weights_to_rows(self, weight):
        """A ``(Cout, C / groups, *kernel)`` weight in the rows' order, (groups, Cout / groups, taps * C / groups)."""
        outputs = weight.shape[0]
        return np.ascontiguousarray(weight.reshape(self.groups, outputs // self.groups, -1, self.taps)
                                    .transpose(0, 1, 3, 2)).reshape(self.groups, outputs // self.groups, -1)

    def add_rows_to_weights(self, rows_order, weight):
        """weight (Caffe's layout) += a weight-shaped array in the rows' order."""
        outputs = weight.shape[0]
        view = weight.reshape(self.groups, outputs // self.groups, -1, self.taps)
        view += rows_order.reshape(self.groups, outputs // self.groups, self.taps, -1).transpose(0, 1, 3, 2)


# ====================================================================== the layer

@register("Im2col")
class Im2colLayer(Layer):
    """See the module docstring. Parameters: convolution_param's kernel, stride, pad, dilation, axis,
    force_nd_im2col (chooses the N-D kernel for 2-D input; same values)."""

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.convolution_param
        self.force_nd = param.force_nd_im2col
        self.channel_axis = bottom[0].canonical_axis(param.axis, layer=self.name)
        self.setup_shape = bottom[0].shape
        self.spatial_axes = bottom[0].ndim - self.channel_axis - 1
        if self.spatial_axes < 1:
            raise self.shape_error(f"Im2col needs at least one spatial axis after the channel axis "
                                   f"{self.channel_axis}", actual=bottom[0].shape)
        try:
            self.kernel, self.stride, self.pad, self.dilation = parse_spatial_params(param, self.spatial_axes)
        except ConvParamError as exc:
            raise self.shape_error(f"convolution_param: {exc}") from None
        self._rows = self._scratch = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = self.channel_axis
        if len(shape) != axis + 1 + self.spatial_axes:
            raise self.shape_error(f"the bottom's number of axes may not change (set up with "
                                   f"{axis + 1 + self.spatial_axes})", expected=self.setup_shape, actual=shape)
        in_dims = shape[axis + 1:]
        out_dims = conv_output_dims(in_dims, self.kernel, self.stride, self.pad, self.dilation)
        if None in out_dims:
            raise self.shape_error(f"kernel extent (dilation * (kernel - 1) + 1) exceeds the padded input "
                                   f"(kernel {self.kernel}, dilation {self.dilation}, pad {self.pad})",
                                   actual=shape)
        self.geometry = ConvGeometry(shape[axis], in_dims, out_dims, self.kernel, self.stride, self.pad,
                                     self.dilation, force_nd=self.force_nd)
        self.num = bottom[0].count_axes(0, axis)
        top[0].reshape(shape[:axis] + (self.geometry.width,) + tuple(out_dims))

    def _buffers(self):
        """The row matrix and the padded scratch, kept on the layer and reused by every pass."""
        g = self.geometry
        size = g.rows_size(self.num)
        if self._rows is None or self._rows.size < size or self._rows.dtype != self.dtype:
            self._rows = np.empty(size, dtype=self.dtype)
        scratch = g.scratch_size(self.num)
        if self._scratch is None or self._scratch.size < scratch or self._scratch.dtype != self.dtype:
            self._scratch = np.empty(max(scratch, 1), dtype=self.dtype)
        return self._rows[:size], self._scratch

    def _caffe_view(self, rows):
        """The rows (N, locations, taps, C) seen in Caffe's column order (N, C, taps, locations)."""
        g = self.geometry
        matrix = rows[:self.num * g.locations * g.width]
        return matrix.reshape(self.num, g.locations, g.taps, g.channels).transpose(0, 3, 2, 1)

    def forward(self, bottom, top):
        g = self.geometry
        rows, scratch = self._buffers()
        g.im2row(bottom[0].data.reshape(-1), self.num, rows, scratch)
        top[0].data.reshape(self.num, g.channels, g.taps, g.locations)[...] = self._caffe_view(rows)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = self.geometry
        rows, scratch = self._buffers()
        self._caffe_view(rows)[...] = top[0].diff.reshape(self.num, g.channels, g.taps, g.locations)
        g.row2im(rows, self.num, bottom[0].diff.reshape(-1), scratch)

    def forward_gpu(self, bottom, top):
        g = self.geometry
        g.im2col_gpu(bottom[0].gpu_data, self.num, top[0].mutable_gpu_data, g.width * g.locations, g.locations)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = self.geometry
        g.col2im_gpu(top[0].gpu_diff, self.num, bottom[0].mutable_gpu_diff, g.width * g.locations, g.locations)
