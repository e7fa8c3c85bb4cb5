"""The im2row path: patches in a matrix (numba, :mod:`.im2col`), then BLAS products; takes every geometry.

With ``P`` the patch matrix (one row per output location of every image in a
chunk, one column per (group, kernel tap, input channel)) and ``Y`` the conv
output as a matrix (one row per location, one column per output channel):

- apply: ``Y_g = P_g W_g^T`` for every group, then ``Y`` moved to the blob's
  channels-first layout with the bias added on the way;
- transpose: the conv output gathered channels-first, ``Y^T`` (a copy of whole
  rows), ``P_g = Y_g W_g``, then row2im (which sums the overlapping patches
  back into the conv input);
- weight gradient: ``dW_g += Y_g^T P_g`` with the conv output's gradient as
  ``Y``, from the same channels-first copy (which also sums the bias gradient).

(These orientations are the fastest of those measured with OpenBLAS, and the
copies they need are cheap: only the forward product is transposed, in cache
blocks.) The groups are one stacked product (BLAS per group, no Python loop
over them). A chunk holds as many images as fit :data:`COLUMN_BUDGET` bytes of
patches, so the buffer stays in cache between im2row and the product that
reads it; all buffers are kept on the layer and reused by every pass.
Convolution's backward shares the channels-first copy of the output diff
between the weight gradient and the input gradient, and Deconvolution's the
patches of its top diff, so both override :class:`ConvPath`'s compositions.

GPU: :class:`Im2colGpuPath` is Caffe's ``forward_gpu_gemm``/
``backward_gpu_gemm``/``weight_gpu_gemm``, a chunk of images at a time instead
of one: the chunk's columns (:meth:`.ConvGeometry.im2col_gpu`, Caffe's layout,
images side by side) are one ``(Cin * taps, images * L)`` matrix, so each
group is one device GEMM with the weight as it is stored, and the ``(Cout,
images * L)`` product is moved to the blob's order with the bias added by one
kernel. A chunk holds as
many images as fit :data:`GPU_COLUMN_BUDGET` bytes of columns. Backward moves
the output diff to the products' order once for both gradients (the weight
gradient GEMMs accumulate into the weight diff with beta 1), and col2im sums
the input gradient's columns back.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import gpu_blas, threads
from ..kernels import cpu_kernel
from .conv_common import (ConvPath, GpuConvPath, _channels_to_images_gpu, _images_to_channels_gpu, _launch,
                          _product)

_U = np.uint64

#: Bytes of patch matrix per chunk of images. A few MB keeps the patches in
#: cache between im2row and the matrix product that reads it.
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


class Im2rowPath(ConvPath):
    """im2row + BLAS; see the module docstring."""

    name = "im2row"

    @staticmethod
    def fits(layer):
        return True

    @staticmethod
    def wins(layer):
        return True

    def __init__(self, layer):
        super().__init__(layer)
        g = layer.geometry
        self.geometry = g
        self.locations = g.locations
        self.group = layer.group
        self.out_channels = layer.conv_out_channels
        per_image = max(1, g.width * g.locations * layer.dtype.itemsize)
        self.chunk = int(max(1, min(layer.num, COLUMN_BUDGET // per_image)))

    # ---------------------------------------------------------------- the layer's passes, chunk by chunk
    def apply(self, conv_input, conv_output, bias, scale=None):
        weight_rows = self._weight_rows()
        if scale is not None:       # a folded BatchNorm/Scale (weights_to_rows may be a view: a new array)
            weight_rows = weight_rows * scale.reshape(self.group, -1, 1)
        chunks = list(zip(self._chunks(conv_input, self.layer.conv_in_size),
                          self._chunks(conv_output, self.layer.conv_out_size)))

        def apply_chunks(first, stop):
            # Several chunks: each on one thread, with buffers of that thread's own (its product then
            # runs inline there); each writes only its own images, so the result does not depend on
            # which thread takes which chunk.
            key = "" if len(chunks) == 1 else f"@{threading.get_ident()}"
            for (images, x), (_, y) in chunks[first:stop]:
                self._apply(self._patches(x, images, key), weight_rows, y, images, bias, key)
        threads.run(apply_chunks, [(index, index + 1) for index in range(len(chunks))])

    def transpose(self, conv_output, conv_input):
        weight_rows = self._weight_rows()
        inputs = self._chunks(conv_input, self.layer.conv_in_size)
        for (images, y), (_, x) in zip(self._chunks(conv_output, self.layer.conv_out_size), inputs):
            self._transpose(self._outputs(y, images), weight_rows, x, images)

    def backward(self, output_diff, conv_input, input_diff, weight_diff, bias_diff):
        if weight_diff is None and input_diff is None:
            if bias_diff is not None:
                self.output_channel_sums(output_diff, bias_diff)
            return
        layer = self.layer
        weight_rows = self._weight_rows() if input_diff is not None else None
        accumulator = self._weight_accumulator() if weight_diff is not None else None
        chunks = zip(self._chunks(output_diff, layer.conv_out_size), self._chunks(conv_input, layer.conv_in_size),
                     self._chunks(input_diff, layer.conv_in_size))
        for (images, dy), (_, x), (_, dx) in chunks:
            outputs = self._outputs(dy, images, bias_diff)
            if accumulator is not None:
                accumulator += _product(outputs, self._patches(x, images))
            if dx is not None:
                self._transpose(outputs, weight_rows, dx, images)
        if accumulator is not None:
            self.geometry.add_rows_to_weights(accumulator, weight_diff)

    def backward_transposed(self, input_diff, conv_output, output_diff, weight_diff):
        if weight_diff is None and output_diff is None:
            return
        layer = self.layer
        weight_rows = self._weight_rows() if output_diff is not None else None
        accumulator = self._weight_accumulator() if weight_diff is not None else None
        chunks = zip(self._chunks(input_diff, layer.conv_in_size), self._chunks(conv_output, layer.conv_out_size),
                     self._chunks(output_diff, layer.conv_out_size))
        for (images, dy), (_, x), (_, dx) in chunks:
            patches = self._patches(dy, images)
            if accumulator is not None:
                accumulator += _product(self._outputs(x, images), patches)
            if dx is not None:
                self._apply(patches, weight_rows, dx, images, None)
        if accumulator is not None:
            self.geometry.add_rows_to_weights(accumulator, weight_diff)

    # ---------------------------------------------------------------- pieces
    def _chunks(self, flat, size):
        """(images, flat slice) over the chunks of a flat blob array with ``size`` elements per image;
        (images, None) throughout when ``flat`` is None."""
        for start in range(0, self.layer.num, self.chunk):
            images = min(self.chunk, self.layer.num - start)
            yield images, None if flat is None else flat[start * size:(start + images) * size]

    def _weight_rows(self):
        """The weight in the patches' order, (group, Cout / group, taps * Cin / group), for this pass."""
        return self.geometry.weights_to_rows(self.layer.blobs[0].data)

    def _by_group(self, matrix, images):
        """A (images * L, columns) matrix seen as (group, images * L, columns / group)."""
        return matrix.reshape(images * self.locations, self.group, -1).transpose(1, 0, 2)

    def _patches(self, conv_input, images, key=""):
        """im2row of ``images`` conv-input images (flat) into the patch buffer (``key``: whose), by group."""
        g = self.geometry
        patches = self.layer._buffer("patches" + key, g.rows_size(images))
        g.im2row(conv_input, images, patches, self.layer._buffer("scratch" + key, g.scratch_size(images)))
        return self._by_group(patches[:images * self.locations * g.width], images)

    def _apply(self, patches, weight_rows, conv_output, images, bias, key=""):
        """conv_output (flat images) = the patches times the weights (+ bias per output channel)."""
        product = self.layer._buffer("product" + key, images * self.locations * self.out_channels)
        _product(patches, weight_rows.transpose(0, 2, 1), self._by_group(product, images))
        add_bias = bias is not None
        _locations_to_images(product, self.out_channels, images, self.locations, conv_output,
                             bias if add_bias else product[:1], add_bias)

    def _outputs(self, conv_output, images, bias_diff=None):
        """The conv-output images (flat) as a (channels, images * L) matrix, by group; sums per channel into
        bias_diff."""
        product = self.layer._buffer("product", images * self.locations * self.out_channels)
        add_sums = bias_diff is not None
        _images_to_channels(conv_output, self.out_channels, images, self.locations, product,
                            bias_diff if add_sums else product[:1], add_sums)
        return product.reshape(self.group, self.out_channels // self.group, images * self.locations)

    def _transpose(self, outputs, weight_rows, conv_input, images):
        """conv_input (flat images) = row2im(outputs^T times the weights)."""
        g = self.geometry
        patches = self.layer._buffer("patches", g.rows_size(images))[:images * self.locations * g.width]
        _product(outputs.transpose(0, 2, 1), weight_rows, self._by_group(patches, images))
        g.row2im(patches, images, conv_input, self.layer._buffer("scratch", g.scratch_size(images)))

    def _weight_accumulator(self):
        """A zeroed (group, Cout / group, taps * Cin / group) array for this pass's weight gradient."""
        size = self.layer.blobs[0].count
        accumulator = self.layer._buffer("weight_diff", size).reshape(self.group, self.out_channels // self.group,
                                                                      -1)
        accumulator[...] = 0
        return accumulator



#: Bytes of GPU column buffer per chunk of images (the convolution's largest device work array).
GPU_COLUMN_BUDGET = 64 << 20


class Im2colGpuPath(GpuConvPath):
    """im2col + device GEMMs, a chunk of images per product; see the module docstring."""

    name = "im2row"

    @staticmethod
    def fits(layer):
        return True

    @staticmethod
    def wins(layer):
        return True

    def __init__(self, layer):
        super().__init__(layer)
        g = layer.geometry
        self.geometry = g
        self.locations = g.locations
        self.width = g.width
        self.out_channels = layer.conv_out_channels
        per_image = max(1, g.width * g.locations * layer.dtype.itemsize)
        self.chunk = int(max(1, min(layer.num, GPU_COLUMN_BUDGET // per_image)))

    # ---------------------------------------------------------------- the layer's passes, chunk by chunk
    def apply(self, conv_input, conv_output, bias, scale=None):
        for start, images in self._chunks():
            columns = self._columns(conv_input, start, images)
            product = self._product_buffer(images)
            self._forward_products(columns, product)
            self._to_images(product, images, conv_output, start, bias)

    def transpose(self, conv_output, conv_input):
        for start, images in self._chunks():
            product = self._to_channels(conv_output, start, images)
            self._columns_from(product, images, conv_input, start)

    def backward(self, output_diff, conv_input, input_diff, weight_diff, bias_diff):
        if bias_diff is not None:
            self.output_channel_sums(output_diff, bias_diff)
        if weight_diff is None and input_diff is None:
            return
        for start, images in self._chunks():
            product = self._to_channels(output_diff, start, images)
            if weight_diff is not None:
                self._weight_products(product, self._columns(conv_input, start, images), weight_diff)
            if input_diff is not None:
                self._columns_from(product, images, input_diff, start)

    def backward_transposed(self, input_diff, conv_output, output_diff, weight_diff):
        if weight_diff is None and output_diff is None:
            return
        for start, images in self._chunks():
            columns = self._columns(input_diff, start, images)
            if weight_diff is not None:
                self._weight_products(self._to_channels(conv_output, start, images), columns, weight_diff)
            if output_diff is not None:
                product = self._product_buffer(images)
                self._forward_products(columns, product)
                self._to_images(product, images, output_diff, start, None)

    # ---------------------------------------------------------------- pieces
    def _chunks(self):
        for start in range(0, self.layer.num, self.chunk):
            yield start, min(self.chunk, self.layer.num - start)

    def _columns(self, conv_input, start, images):
        """The chunk's columns, (Cin * taps, images * L) on the device."""
        size = self.layer.conv_in_size
        columns = self.layer._gpu_buffer("columns", self.width * images * self.locations)
        self.geometry.im2col_gpu(conv_input[start * size:(start + images) * size], images, columns,
                                 self.locations, images * self.locations)
        return columns.reshape(self.width, images * self.locations)

    def _product_buffer(self, images):
        product = self.layer._gpu_buffer("product", self.out_channels * images * self.locations)
        return product.reshape(self.out_channels, images * self.locations)

    def _columns_group(self, columns, g):
        rows = self.group_width
        return columns[g * rows:(g + 1) * rows]

    def _product_group(self, product, g):
        rows = self.group_out
        return product[g * rows:(g + 1) * rows]

    def _forward_products(self, columns, product):
        weight = self.layer.blobs[0].gpu_data
        for g in range(self.group):
            gpu_blas.gemm(self._weight_group(weight, g), self._columns_group(columns, g),
                          self._product_group(product, g))

    def _weight_products(self, product, columns, weight_diff):
        """weight_diff += product_g columns_g^T for every group."""
        for g in range(self.group):
            gpu_blas.gemm(self._product_group(product, g), self._columns_group(columns, g),
                          self._weight_group(weight_diff, g), trans_b=True, beta=1.0)

    def _columns_from(self, product, images, conv_input, start):
        """conv_input's chunk = col2im(weight^T product), group by group."""
        weight = self.layer.blobs[0].gpu_data
        columns = self.layer._gpu_buffer("columns", self.width * images * self.locations)
        matrix = columns.reshape(self.width, images * self.locations)
        for g in range(self.group):
            gpu_blas.gemm(self._weight_group(weight, g), self._product_group(product, g),
                          self._columns_group(matrix, g), trans_a=True)
        size = self.layer.conv_in_size
        self.geometry.col2im_gpu(columns, images, conv_input[start * size:(start + images) * size],
                                 self.locations, images * self.locations)

    def _to_images(self, product, images, conv_output, start, bias):
        """conv_output's chunk = the (Cout, images * L) product in the blob's order (+ bias, or None)."""
        size = self.layer.conv_out_size
        flat = product.reshape(-1)
        add_bias = bias is not None
        _launch(_channels_to_images_gpu, self.out_channels * images * self.locations, flat,
                int(self.out_channels), int(images), int(self.locations), bias if add_bias else flat, add_bias,
                conv_output[start * size:(start + images) * size])

    def _to_channels(self, conv_output, start, images):
        """The chunk of a conv output (or its diff) as a (Cout, images * L) device matrix."""
        size = self.layer.conv_out_size
        product = self._product_buffer(images)
        _launch(_images_to_channels_gpu, self.out_channels * images * self.locations,
                conv_output[start * size:(start + images) * size], int(self.out_channels), int(images),
                int(self.locations), product.reshape(-1))
        return product
