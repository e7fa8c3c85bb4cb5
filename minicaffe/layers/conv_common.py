"""What Convolution and Deconvolution share (Caffe's BaseConvolutionLayer).

Parameters (``convolution_param``): ``num_output``, ``kernel_size`` (or
``kernel_h``/``kernel_w``), ``stride``, ``pad``, ``dilation`` (each once or once
per spatial axis), ``group``, ``bias_term``, ``axis`` (the channel axis; the
axes before it are the batch, those after it spatial, any number of them),
``force_nd_im2col``, ``weight_filler``, ``bias_filler``.

Both layers are computed as a convolution from a *conv input* (``Cin``
channels) to a *conv output* (``Cout`` channels): Convolution's bottom is the
conv input, Deconvolution's bottom the conv output. The weight blob is
``(Cout, Cin / group, *kernel)``, which is ``(num_output, channels / group, ...)``
for Convolution and ``(channels, num_output / group, ...)`` for Deconvolution,
as in Caffe. Three operations, on a chunk of images at a time:

- apply: im2col of the conv input into a column buffer ``(Cin * taps, images
  * locations)``, one matrix product per group ``W_g @ cols_g`` for all the
  chunk's images at once, then the result moved to the images' layout (with
  the bias added on the way).
- transpose: the conv output moved to rows ``(Cout, images * locations)``, the
  product ``W_g^T @ rows_g`` into the column buffer, then col2im (which sums
  the overlapping columns back into the conv input).
- weight gradient: ``dW_g += rows_g @ cols_g^T`` with the conv output's
  gradient as rows and the conv input's columns.

The groups are one stacked ``numpy.matmul`` call (BLAS per group, no Python
loop over them). The chunk holds as many images as fit a few megabytes of
columns, so the buffer stays in cache between im2col and the product; the
buffers are kept on the layer and reused by every pass. The numba kernels run
on one thread; the products use BLAS's threads.
"""

from __future__ import annotations

import numpy as np

from ..fillers import fill
from ..kernels import cpu_kernel
from ..layer import Layer
from .im2col import ConvParamError, Im2colGeometry, conv_output_dims, parse_spatial_params

_U = np.uint64

#: Bytes of column buffer per chunk of images. A few MB keeps the columns in the
#: last-level cache between im2col and the matrix product that reads them.
COLUMN_BUDGET = 4 << 20


@cpu_kernel
def _rows_to_images(rows, channels, images, locations, out, bias, add_bias):
    """out[n, c, p] = rows[c, n, p] (+ bias[c]): the product's layout back to the blob's."""
    for n in range(images):
        for c in range(channels):
            source = (c * images + n) * locations
            target = (n * channels + c) * locations
            if add_bias:
                value = bias[c]
                for p in range(locations):
                    out[_U(target + p)] = rows[_U(source + p)] + value
            else:
                for p in range(locations):
                    out[_U(target + p)] = rows[_U(source + p)]


@cpu_kernel
def _images_to_rows(data, channels, images, locations, rows, sums, add_sums):
    """rows[c, n, p] = data[n, c, p]; with ``add_sums``, also sums[c] += the sum over n and p."""
    for n in range(images):
        for c in range(channels):
            source = (n * channels + c) * locations
            target = (c * images + n) * locations
            if add_sums:
                total = data[_U(source)] * 0
                for p in range(locations):
                    value = data[_U(source + p)]
                    rows[_U(target + p)] = value
                    total += value
                sums[c] += total
            else:
                for p in range(locations):
                    rows[_U(target + p)] = data[_U(source + p)]


@cpu_kernel
def _channel_sums(data, channels, images, locations, sums):
    """sums[c] += the sum of data[n, c, p] over n and p."""
    for n in range(images):
        for c in range(channels):
            source = (n * channels + c) * locations
            total = data[_U(source)] * 0
            for p in range(locations):
                total += data[_U(source + p)]
            sums[c] += total


@cpu_kernel
def _add_channel_bias(data, channels, images, locations, bias):
    """data[n, c, p] += bias[c]."""
    for n in range(images):
        for c in range(channels):
            target = (n * channels + c) * locations
            value = bias[c]
            for p in range(locations):
                data[_U(target + p)] += value


class BaseConvolution(Layer):
    """Caffe's BaseConvolutionLayer: parameters, weights, shapes, and the chunked im2col + BLAS core."""

    min_bottoms = 1
    min_tops = 1
    equal_bottoms_and_tops = True
    #: Deconvolution: the bottom is the conv output and the top the conv input.
    reverse = False

    # ---------------------------------------------------------------- setup
    def setup(self, bottom, top):
        param = self.layer_param.convolution_param
        self.force_nd = param.force_nd_im2col
        self.channel_axis = bottom[0].canonical_axis(param.axis, layer=self.name)
        self.setup_shape = bottom[0].shape
        self.spatial_axes = bottom[0].ndim - self.channel_axis - 1
        try:
            self.kernel, self.stride, self.pad, self.dilation = parse_spatial_params(param, self.spatial_axes)
        except ConvParamError as exc:
            raise self.shape_error(f"convolution_param: {exc}") from None
        self.is_1x1 = all(k == 1 and s == 1 and p == 0 for k, s, p in zip(self.kernel, self.stride, self.pad))
        self.channels = bottom[0].shape[self.channel_axis]
        self.num_output = param.num_output
        self.group = param.group
        if self.num_output <= 0:
            raise self.shape_error("convolution_param.num_output must be positive")
        if self.group <= 0:
            raise self.shape_error(f"convolution_param.group must be positive, got {self.group}")
        if self.channels % self.group:
            raise self.shape_error(f"the input's {self.channels} channels are not a multiple of group {self.group}",
                                   actual=bottom[0].shape)
        if self.num_output % self.group:
            raise self.shape_error(f"num_output {self.num_output} is not a multiple of group {self.group}")
        if self.reverse:
            self.conv_out_channels, self.conv_in_channels = self.channels, self.num_output
        else:
            self.conv_out_channels, self.conv_in_channels = self.num_output, self.channels
        self.bias_term = param.bias_term
        weight_shape = (self.conv_out_channels, self.conv_in_channels // self.group) + tuple(self.kernel)
        self.blobs = [self.new_param_blob(weight_shape)]
        fill(self.blobs[0], param.weight_filler, self.name)
        if self.bias_term:
            self.blobs.append(self.new_param_blob((self.num_output,)))
            fill(self.blobs[1], param.bias_filler, self.name)
        self._buffers = {}

    # ---------------------------------------------------------------- shapes
    def output_dims(self, input_dims, shape):
        """The top's spatial dims from the bottom's (Convolution: floor rule; Deconvolution: its inverse)."""
        dims = conv_output_dims(input_dims, self.kernel, self.stride, self.pad, self.dilation)
        if None in dims:
            raise self.shape_error(f"kernel extent (dilation * (kernel - 1) + 1) exceeds the padded input "
                                   f"(kernel {self.kernel}, dilation {self.dilation}, pad {self.pad})",
                                   actual=shape)
        return dims

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = self.channel_axis
        if len(shape) != axis + 1 + self.spatial_axes:
            raise self.shape_error(f"the bottom's number of axes may not change (set up with "
                                   f"{axis + 1 + self.spatial_axes})", expected=self.setup_shape, actual=shape)
        if shape[axis] != self.channels:
            raise self.shape_error(f"input size incompatible with the convolution kernel: channel axis {axis} "
                                   f"must stay {self.channels}", actual=shape)
        for index, blob in enumerate(bottom[1:], start=1):
            if blob.shape != shape:
                raise self.shape_error(f"all bottoms must have the same shape (bottom {index})",
                                       expected=shape, actual=blob.shape)
        in_dims = tuple(shape[axis + 1:])
        out_dims = tuple(self.output_dims(in_dims, shape))
        top_shape = tuple(shape[:axis]) + (self.num_output,) + out_dims
        for blob in top:
            blob.reshape(top_shape)
        self.num = bottom[0].count_axes(0, axis)
        conv_in_dims, conv_out_dims = (out_dims, in_dims) if self.reverse else (in_dims, out_dims)
        self.geometry = Im2colGeometry(self.conv_in_channels, conv_in_dims, conv_out_dims, self.kernel, self.stride,
                                       self.pad, self.dilation, self.force_nd)
        self.conv_in_size = self.geometry.image_size
        self.locations = self.geometry.locations
        self.conv_out_size = self.conv_out_channels * self.locations
        per_image = max(1, self.geometry.rows * self.locations * self.dtype.itemsize)
        self.chunk = int(max(1, min(self.num, COLUMN_BUDGET // per_image)))

    # ---------------------------------------------------------------- buffers
    def _buffer(self, name, size):
        """A flat work array of at least ``size`` elements, kept on the layer and reused."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != self.dtype:
            buffer = np.empty(max(size, 1), dtype=self.dtype)
            self._buffers[name] = buffer
        return buffer[:size]

    def _chunks(self):
        for start in range(0, self.num, self.chunk):
            yield start, min(self.chunk, self.num - start)

    def _weights(self, blob_array):
        """(group, Cout/group, Cin/group * taps) view of a weight-shaped array."""
        return blob_array.reshape(self.group, self.conv_out_channels // self.group, -1)

    # ---------------------------------------------------------------- the three operations
    def _columns(self, conv_input, images):
        """im2col of ``images`` conv-input images (flat) into the column buffer, (group, K/group, images*L)."""
        g = self.geometry
        width = images * self.locations
        cols = self._buffer("cols", g.rows * width)
        g.im2col(conv_input, images, cols, width, self.locations)
        return cols.reshape(self.group, g.rows // self.group, width)

    def _apply(self, cols, weights, conv_output, images, bias):
        """conv_output (flat images) = W @ cols (+ bias per output channel)."""
        width = images * self.locations
        product = self._buffer("rows", self.conv_out_channels * width)
        np.matmul(weights, cols, out=product.reshape(self.group, -1, width))
        add_bias = bias is not None
        _rows_to_images(product, self.conv_out_channels, images, self.locations, conv_output,
                        bias if add_bias else product[:1], add_bias)

    def _rows(self, conv_output, images, bias_diff=None):
        """The conv-output images (flat) as rows (group, Cout/group, images*L); sums per channel into bias_diff."""
        width = images * self.locations
        rows = self._buffer("rows", self.conv_out_channels * width)
        add_sums = bias_diff is not None
        _images_to_rows(conv_output, self.conv_out_channels, images, self.locations, rows,
                        bias_diff if add_sums else rows[:1], add_sums)
        return rows.reshape(self.group, -1, width)

    def _transpose(self, rows, weights, conv_input, images):
        """conv_input (flat images) = col2im(W^T @ rows)."""
        g = self.geometry
        width = images * self.locations
        cols = self._buffer("cols", g.rows * width)
        np.matmul(weights.transpose(0, 2, 1), rows, out=cols.reshape(self.group, -1, width))
        g.col2im(cols, images, conv_input, width, self.locations)

    def _weight_gradient(self, rows, cols, weight_diff):
        weight_diff += np.matmul(rows, cols.transpose(0, 2, 1))

    # ---------------------------------------------------------------- helpers for the layers
    def _flat_chunks(self, array, size):
        """(images, flat slice) over the chunks of a blob array with ``size`` elements per image."""
        flat = array.reshape(-1)
        for start, images in self._chunks():
            yield images, flat[start * size:(start + images) * size]

    def _bias(self):
        return self.blobs[1].data if self.bias_term else None

    def _bias_diff(self):
        if self.bias_term and self.param_propagate_down[1]:
            return self.blobs[1].diff
        return None
