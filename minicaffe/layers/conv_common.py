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
as in Caffe. Three operations, on a chunk of images at a time, with ``P`` the
patch matrix (one row per output location of every image in the chunk, one
column per (group, kernel tap, input channel); see :mod:`.im2col`) and ``Y``
the conv output as a matrix (one row per location, one column per output
channel):

- apply: ``Y_g = P_g W_g^T`` for every group, then ``Y`` moved to the blob's
  channels-first layout with the bias added on the way;
- transpose: the conv output gathered channels-first, ``Y^T`` (a copy of whole
  rows), ``P_g = Y_g W_g``, then row2im (which sums the overlapping patches
  back into the conv input);
- weight gradient: ``dW_g += Y_g^T P_g`` with the conv output's gradient as
  ``Y``, from the same channels-first copy.

(These orientations are the fastest of those measured with OpenBLAS, and the
copies they need are cheap: only the forward product is transposed, in cache
blocks.)

The groups are one stacked ``numpy.matmul`` call (BLAS per group, no Python
loop over them). A chunk holds as many images as fit a few megabytes of
patches, so the buffer stays in cache between im2row and the product that
reads it; all buffers are kept on the layer and reused by every pass.

Threads: the products run on BLAS's threads; the numba kernels (im2row,
row2im, the transposes) run on one thread. Making them ``parallel=True`` put
numba's OpenMP workers and OpenBLAS's workers on the same cores, each
spinning while the other ran: CIFAR-10 quick took 7 to 40 times longer on
2 cores. Between two products there is only this layer's single-threaded work.
"""

from __future__ import annotations

import numpy as np

from ..fillers import fill
from ..kernels import cpu_kernel
from ..layer import Layer
from .im2col import ConvGeometry, ConvParamError, conv_output_dims, parse_spatial_params

_U = np.uint64

#: Bytes of patch matrix per chunk of images. A few MB keeps the patches in
#: cache between im2row and the matrix product that reads them.
COLUMN_BUDGET = 4 << 20


_BLOCK = 16   # locations per block in the transposes: a block of rows stays in L1 while its columns are written


@cpu_kernel
def _locations_to_images(product, channels, images, locations, out, bias, add_bias):
    """out[n, c, p] = product[n * locations + p, c] (+ bias[c]): the product's rows back to channels-first."""
    for n in range(images):
        for first in range(0, locations, _BLOCK):
            last = min(first + _BLOCK, locations)
            for c in range(channels):
                target = (n * channels + c) * locations
                source = n * locations * channels + c
                value = bias[c] if add_bias else product[_U(source)] * 0
                for p in range(first, last):
                    out[_U(target + p)] = product[_U(source + p * channels)] + value


@cpu_kernel
def _images_to_channels(data, channels, images, locations, out, sums, add_sums):
    """out[c, n, p] = data[n, c, p]; with ``add_sums``, also sums[c] += the sum over n and p."""
    for n in range(images):
        for c in range(channels):
            source = (n * channels + c) * locations
            target = (c * images + n) * locations
            total = data[_U(source)] * 0
            for p in range(locations):
                value = data[_U(source + p)]
                out[_U(target + p)] = value
                total += value
            if add_sums:
                sums[c] += total


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
        self.geometry = ConvGeometry(self.conv_in_channels, conv_in_dims, conv_out_dims, self.kernel, self.stride,
                                     self.pad, self.dilation, self.group, self.force_nd)
        self.conv_in_size = self.geometry.image_size
        self.locations = self.geometry.locations
        self.conv_out_size = self.conv_out_channels * self.locations
        per_image = max(1, self.geometry.width * self.locations * self.dtype.itemsize)
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

    # ---------------------------------------------------------------- the three operations
    def _weight_rows(self):
        """The weight in the patches' order, (group, Cout / group, taps * Cin / group), for this pass."""
        return self.geometry.weights_to_rows(self.blobs[0].data)

    def _by_group(self, matrix, images):
        """A (images * L, columns) matrix seen as (group, images * L, columns / group)."""
        return matrix.reshape(images * self.locations, self.group, -1).transpose(1, 0, 2)

    def _patches(self, conv_input, images):
        """im2row of ``images`` conv-input images (flat) into the patch buffer, by group."""
        g = self.geometry
        patches = self._buffer("patches", g.rows_size(images))
        g.im2row(conv_input, images, patches, self._buffer("scratch", g.scratch_size(images)))
        return self._by_group(patches[:images * self.locations * g.width], images)

    def _apply(self, patches, weight_rows, conv_output, images, bias):
        """conv_output (flat images) = the patches times the weights (+ bias per output channel)."""
        product = self._buffer("product", images * self.locations * self.conv_out_channels)
        np.matmul(patches, weight_rows.transpose(0, 2, 1), out=self._by_group(product, images))
        add_bias = bias is not None
        _locations_to_images(product, self.conv_out_channels, images, self.locations, conv_output,
                             bias if add_bias else product[:1], add_bias)

    def _outputs(self, conv_output, images, bias_diff=None):
        """The conv-output images (flat) as a (channels, images * L) matrix, by group; sums per channel into
        bias_diff."""
        product = self._buffer("product", images * self.locations * self.conv_out_channels)
        add_sums = bias_diff is not None
        _images_to_channels(conv_output, self.conv_out_channels, images, self.locations, product,
                            bias_diff if add_sums else product[:1], add_sums)
        return product.reshape(self.group, self.conv_out_channels // self.group, images * self.locations)

    def _transpose(self, outputs, weight_rows, conv_input, images):
        """conv_input (flat images) = row2im(outputs^T times the weights)."""
        g = self.geometry
        patches = self._buffer("patches", g.rows_size(images))[:images * self.locations * g.width]
        np.matmul(outputs.transpose(0, 2, 1), weight_rows, out=self._by_group(patches, images))
        g.row2im(patches, images, conv_input, self._buffer("scratch", g.scratch_size(images)))

    def _weight_gradient(self, outputs, patches, accumulator):
        accumulator += np.matmul(outputs, patches)

    def _weight_accumulator(self):
        """A zeroed (group, Cout / group, taps * Cin / group) array for this pass's weight gradient."""
        size = self.blobs[0].count
        accumulator = self._buffer("weight_diff", size).reshape(self.group, self.conv_out_channels // self.group, -1)
        accumulator[...] = 0
        return accumulator

    def _store_weight_gradient(self, accumulator):
        self.geometry.add_rows_to_weights(accumulator, self.blobs[0].diff)

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
