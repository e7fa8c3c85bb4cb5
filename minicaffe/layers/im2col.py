"""Im2col: each output location's receptive field laid out as a column (Caffe's Im2colLayer).

For a bottom ``(N, C, *spatial)`` (the channel axis is ``convolution_param.axis``,
the axes before it are flattened into N), the top is ``(N, C * prod(kernel),
*out)`` with ``out_d = (in_d + 2 pad_d - (dilation_d (kernel_d - 1) + 1)) //
stride_d + 1``. Row ``(c, k_1, ..., k_D)`` of image ``n`` at output location
``o`` holds ``x[n, c, o_d stride_d - pad_d + k_d dilation_d ...]``, or 0 where
that falls in the padding. Backward (col2im) sums each column entry back into
the input position it was copied from: ``dx[n, c, i] = sum of dtop over every
(row, location) that read x[n, c, i]``.

This module also holds the numba im2col/col2im kernels that Convolution and
Deconvolution use (:class:`Im2colGeometry`), and the parsing of the kernel,
stride, pad and dilation fields (:func:`parse_spatial_params`), with Caffe's
rules: ``kernel_size``/``stride``/``pad``/``dilation`` given once or once per
spatial axis, ``kernel_h``/``kernel_w`` (and the ``_h``/``_w`` forms of stride
and pad) for 2-D only.

Kernels: the column buffer is a flat array indexed ``row * row_stride + image
* image_stride + location``, so one kernel fills both the per-image layout of
this layer's top (rows inside images) and the rows-outside layout Convolution
uses for one matrix product over many images. Two-dimensional geometry has a
kernel whose inner loop is a contiguous copy (stride 1); any other number of
spatial axes (or ``force_nd_im2col``) uses the general N-D kernel, which gives
the same values. Indices are cast to unsigned before use so numba emits no
negative-index wraparound, which would keep LLVM from vectorizing the copies.
"""

from __future__ import annotations

import numpy as np

from ..kernels import cpu_kernel
from ..layer import Layer
from ..registry import register

_U = np.uint64


# ====================================================================== kernels

@cpu_kernel
def _im2col_2d(x, channels, height, width, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
               dilation_h, dilation_w, out_h, out_w, images, cols, row_stride, image_stride):
    """cols[(c, i, j), n, oy, ox] = x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw] (0 in the padding)."""
    plane = height * width
    for c in range(channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                row = (c * kernel_h + i) * kernel_w + j
                shift = j * dilation_w - pad_w          # input column of output column 0
                # Output columns [low, high) read inside the image; the rest read padding.
                low = 0
                if shift < 0:
                    low = min(out_w, (-shift + stride_w - 1) // stride_w)
                high = 0
                if width - shift > 0:
                    high = min(out_w, (width - shift + stride_w - 1) // stride_w)
                high = max(high, low)
                for n in range(images):
                    base = row * row_stride + n * image_stride
                    image = (n * channels + c) * plane
                    for oy in range(out_h):
                        iy = oy * stride_h - pad_h + i * dilation_h
                        target = base + oy * out_w
                        if iy < 0 or iy >= height:
                            for ox in range(out_w):
                                cols[_U(target + ox)] = 0
                            continue
                        source = image + iy * width + shift
                        for ox in range(low):
                            cols[_U(target + ox)] = 0
                        if stride_w == 1:
                            for ox in range(low, high):
                                cols[_U(target + ox)] = x[_U(source + ox)]
                        else:
                            for ox in range(low, high):
                                cols[_U(target + ox)] = x[_U(source + ox * stride_w)]
                        for ox in range(high, out_w):
                            cols[_U(target + ox)] = 0


@cpu_kernel
def _col2im_2d(cols, row_stride, image_stride, channels, height, width, kernel_h, kernel_w, pad_h, pad_w,
               stride_h, stride_w, dilation_h, dilation_w, out_h, out_w, images, x):
    """x = 0, then x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw] += cols[(c, i, j), n, oy, ox] inside the image."""
    plane = height * width
    for k in range(images * channels * plane):
        x[_U(k)] = 0
    for c in range(channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                row = (c * kernel_h + i) * kernel_w + j
                shift = j * dilation_w - pad_w
                low = 0
                if shift < 0:
                    low = min(out_w, (-shift + stride_w - 1) // stride_w)
                high = 0
                if width - shift > 0:
                    high = min(out_w, (width - shift + stride_w - 1) // stride_w)
                high = max(high, low)
                for n in range(images):
                    base = row * row_stride + n * image_stride
                    image = (n * channels + c) * plane
                    for oy in range(out_h):
                        iy = oy * stride_h - pad_h + i * dilation_h
                        if iy < 0 or iy >= height:
                            continue
                        source = base + oy * out_w
                        target = image + iy * width + shift
                        if stride_w == 1:
                            for ox in range(low, high):
                                x[_U(target + ox)] += cols[_U(source + ox)]
                        else:
                            for ox in range(low, high):
                                x[_U(target + ox * stride_w)] += cols[_U(source + ox)]


@cpu_kernel
def _nd_offset(position, in_shape, out_shape, kernel_index, kernel, pad, stride, dilation):
    """Flat input offset read by output location ``position`` through kernel tap ``kernel_index``; -1 in padding."""
    axes = in_shape.size
    offset = 0
    scale = 1
    out_rest = position
    kernel_rest = kernel_index
    for d in range(axes - 1, -1, -1):
        o = out_rest % out_shape[d]
        out_rest //= out_shape[d]
        k = kernel_rest % kernel[d]
        kernel_rest //= kernel[d]
        coordinate = o * stride[d] - pad[d] + k * dilation[d]
        if coordinate < 0 or coordinate >= in_shape[d]:
            return -1
        offset += coordinate * scale
        scale *= in_shape[d]
    return offset


@cpu_kernel
def _im2col_nd(x, channels, in_shape, out_shape, kernel, pad, stride, dilation, images, cols, row_stride,
               image_stride):
    """The N-D im2col: any number of spatial axes (shapes and parameters as int64 arrays)."""
    in_size = 1
    out_size = 1
    taps = 1
    for d in range(in_shape.size):
        in_size *= in_shape[d]
        out_size *= out_shape[d]
        taps *= kernel[d]
    for c in range(channels):
        for tap in range(taps):
            row = c * taps + tap
            for position in range(out_size):
                offset = _nd_offset(position, in_shape, out_shape, tap, kernel, pad, stride, dilation)
                for n in range(images):
                    target = row * row_stride + n * image_stride + position
                    if offset < 0:
                        cols[_U(target)] = 0
                    else:
                        cols[_U(target)] = x[_U((n * channels + c) * in_size + offset)]


@cpu_kernel
def _col2im_nd(cols, row_stride, image_stride, channels, in_shape, out_shape, kernel, pad, stride, dilation,
               images, x):
    """The N-D col2im: x = 0, then every column entry added back where it was read from."""
    in_size = 1
    out_size = 1
    taps = 1
    for d in range(in_shape.size):
        in_size *= in_shape[d]
        out_size *= out_shape[d]
        taps *= kernel[d]
    for k in range(images * channels * in_size):
        x[_U(k)] = 0
    for c in range(channels):
        for tap in range(taps):
            row = c * taps + tap
            for position in range(out_size):
                offset = _nd_offset(position, in_shape, out_shape, tap, kernel, pad, stride, dilation)
                if offset < 0:
                    continue
                for n in range(images):
                    x[_U((n * channels + c) * in_size + offset)] += cols[_U(row * row_stride + n * image_stride
                                                                            + position)]


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
    Deliberate difference from Caffe: ``dilation: 0`` is rejected (Caffe would
    read every tap of a kernel from the same pixel).
    """
    kernel = _hw_or_list(param, "kernel", axes, None)
    if any(k <= 0 for k in kernel):
        raise ConvParamError(f"filter dimensions must be nonzero (kernel {kernel})")
    stride = _hw_or_list(param, "stride", axes, 1)
    if any(s <= 0 for s in stride):
        raise ConvParamError(f"stride dimensions must be nonzero (stride {stride})")
    pad = _hw_or_list(param, "pad", axes, 0)
    if any(p < 0 for p in pad):
        raise ConvParamError(f"pad must not be negative (pad {pad})")
    dilation = _per_axis(param.dilation, "dilation", axes, 1)
    if any(d <= 0 for d in dilation):
        raise ConvParamError(f"dilation must be positive (dilation {dilation})")
    return kernel, stride, pad, dilation


def conv_output_dims(input_dims, kernel, stride, pad, dilation):
    """Convolution's output extent per axis, ``(in + 2 pad - extent) // stride + 1``; None where it would be < 1."""
    dims = []
    for size, k, s, p, d in zip(input_dims, kernel, stride, pad, dilation):
        extent = d * (k - 1) + 1
        dims.append((size + 2 * p - extent) // s + 1 if size + 2 * p >= extent else None)
    return dims


# ====================================================================== geometry

class Im2colGeometry:
    """One im2col shape: ``channels`` x ``in_dims`` images seen through a kernel, giving ``out_dims``.

    ``rows`` (channels x kernel taps) by ``locations`` (prod(out_dims)) per image.
    :meth:`im2col` and :meth:`col2im` work on flat, contiguous arrays of several
    images at once; the column layout is given by ``row_stride`` and
    ``image_stride`` (see the module docstring).
    """

    def __init__(self, channels, in_dims, out_dims, kernel, stride, pad, dilation, force_nd=False):
        self.channels = int(channels)
        self.in_dims = tuple(int(d) for d in in_dims)
        self.out_dims = tuple(int(d) for d in out_dims)
        self.kernel, self.stride, self.pad, self.dilation = (tuple(int(v) for v in values)
                                                             for values in (kernel, stride, pad, dilation))
        self.taps = int(np.prod(self.kernel, dtype=np.int64))
        self.rows = self.channels * self.taps
        self.locations = int(np.prod(self.out_dims, dtype=np.int64))
        self.image_size = self.channels * int(np.prod(self.in_dims, dtype=np.int64))
        axes = len(self.in_dims)
        self.use_nd = force_nd or axes > 2
        if not self.use_nd:
            # 0-D and 1-D geometry run as 2-D with leading unit axes.
            def two(values, fill):
                return (fill,) * (2 - axes) + tuple(values)
            height, width = two(self.in_dims, 1)
            kernel_h, kernel_w = two(self.kernel, 1)
            pad_h, pad_w = two(self.pad, 0)
            stride_h, stride_w = two(self.stride, 1)
            dilation_h, dilation_w = two(self.dilation, 1)
            out_h, out_w = two(self.out_dims, 1)
            self._args_2d = (self.channels, height, width, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                             dilation_h, dilation_w, out_h, out_w)
        else:
            as_array = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
            self._args_nd = (self.channels, as_array(self.in_dims), as_array(self.out_dims), as_array(self.kernel),
                             as_array(self.pad), as_array(self.stride), as_array(self.dilation))

    def im2col(self, x, images, cols, row_stride, image_stride):
        """Fill ``cols`` (flat) from ``images`` images in ``x`` (flat, contiguous)."""
        if self.use_nd:
            _im2col_nd(x, *self._args_nd, images, cols, row_stride, image_stride)
        else:
            _im2col_2d(x, *self._args_2d, images, cols, row_stride, image_stride)

    def col2im(self, cols, images, x, row_stride, image_stride):
        """Overwrite ``x`` (flat, ``images`` images) with the column entries summed back to their sources."""
        if self.use_nd:
            _col2im_nd(cols, row_stride, image_stride, *self._args_nd, images, x)
        else:
            _col2im_2d(cols, row_stride, image_stride, *self._args_2d, images, x)


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
        self.geometry = Im2colGeometry(shape[axis], in_dims, out_dims, self.kernel, self.stride, self.pad,
                                       self.dilation, self.force_nd)
        self.num = bottom[0].count_axes(0, axis)
        top[0].reshape(shape[:axis] + (self.geometry.rows,) + tuple(out_dims))

    def forward(self, bottom, top):
        g = self.geometry
        # Per image: rows x locations, as the top's (rows, *out) layout.
        g.im2col(bottom[0].data.reshape(-1), self.num, top[0].data.reshape(-1), g.locations, g.rows * g.locations)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = self.geometry
        g.col2im(top[0].diff.reshape(-1), self.num, bottom[0].diff.reshape(-1), g.locations, g.rows * g.locations)
