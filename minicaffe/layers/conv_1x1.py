"""The 1x1 path: a 1x1 convolution without padding is a matrix product on the blob (strided: on every s-th pixel).

Each image of the conv input is a ``(Cin, locations)`` matrix in the blob's own
layout, so with the weight as ``(Cout, Cin)`` (per group: ``(Cout / group,
Cin / group)``; the dilation of a 1x1 kernel changes nothing):

- apply: ``Y[n] = W X[n]``, then the bias added per channel;
- transpose: ``X[n] = W^T Y[n]``;
- weight gradient: ``dW += sum over n of dY[n] X[n]^T``; the bias gradient the
  channel sums of ``dY``.

No patch matrix and no transposed copies (im2row would copy the image
channels-last and the product back). With one group, apply and transpose are
one stacked product over all images (a 2-D weight shared by every image),
and the weight gradient one stacked product per chunk of images whose
``(Cout, Cin)`` results fit :data:`PRODUCT_BUDGET` bytes, summed over the
images in a fixed order; with several groups, one stacked product over the
groups per image. Any number of spatial axes (none included) works the same.

With a stride (ResNet's projection shortcuts: 1x1, stride 2), the product
reads every s-th pixel: apply and the weight gradient first gather those
pixels into one contiguous work array (a quarter of the image at stride 2),
and transpose scatters its product back onto them, zeroing the pixels the
kernel never sees. Still no patch matrix: im2row would copy the same pixels
channels-last and the product back, 4x the time on ResNet-50's six such
layers (32.5 against OpenCV's 8.4 ms at batch 1, benchmarks/results/
inference_profile.md).

GPU: :class:`Conv1x1GpuPath` (stride 1 only, as Caffe's ``is_1x1_``)
computes the same products as device GEMMs on views of the blobs, one per
image and group (Caffe's ``forward_gpu_gemm`` skips im2col there too), the
bias added by one kernel over the whole top, the weight gradient accumulated
by GEMMs with beta 1. A strided 1x1 layer takes the im2col GPU path, and so
does a batch of more than :data:`GPU_MAX_IMAGES` images: there a 1x1
geometry's im2col is a mere transposition, and one GEMM per group for a whole
chunk of images costs far fewer launches (each GEMM call pays CuPy's and
cuBLAS's fixed cost) than one per image, for two extra copy kernels.
"""

from __future__ import annotations

import math

import numpy as np

from .. import gpu_blas
from .conv_common import (ConvPath, GpuConvPath, _add_channel_bias, _add_channel_bias_gpu, _launch, _product,
                          _scale_and_shift_channels)

#: Bytes of per-image weight-gradient products computed by one stacked product.
PRODUCT_BUDGET = 4 << 20


class Conv1x1Path(ConvPath):
    """Products on the blob; see the module docstring."""

    name = "1x1"

    @staticmethod
    def fits(layer):
        g = layer.geometry
        return all(k == 1 and p == 0 for k, p in zip(g.kernel, g.pad))

    @staticmethod
    def wins(layer):
        """Everything it fits but a 1x1 depthwise layer (a scale per channel): one product per channel per
        image there, where the direct kernel is about 2x faster (0.19 against 0.38 ms, 16 channels at 120x160)."""
        return not (layer.group > 1 and layer.conv_in_channels == layer.group == layer.conv_out_channels)

    def __init__(self, layer):
        super().__init__(layer)
        self.images = layer.num
        self.group = layer.group
        self.in_channels = layer.conv_in_channels // layer.group
        self.out_channels = layer.conv_out_channels // layer.group
        self.locations = layer.geometry.locations
        geometry = layer.geometry
        self.strided = any(s != 1 for s in geometry.stride)
        # the pixels the kernel reads: every s-th along each spatial axis of the (larger) conv input
        self._picked = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in geometry.stride)
        self._input_shape = (self.images, self.group * self.in_channels) + geometry.in_dims
        self._picked_shape = (self.images, self.group * self.in_channels) + geometry.out_dims
        self._picked_size = math.prod(self._picked_shape)

    def _gather(self, conv_input):
        """The conv input's pixels the kernel reads, contiguous (the input itself without a stride)."""
        if not self.strided:
            return conv_input
        picked = self.layer._buffer("strided_pixels", self._picked_size)
        np.copyto(picked.reshape(self._picked_shape), conv_input.reshape(self._input_shape)[self._picked])
        return picked

    def _weight(self):
        return self.layer.blobs[0].data.reshape(self.group, self.out_channels, self.in_channels)

    def _by_group(self, flat, channels):
        return flat.reshape(self.images, self.group, channels, self.locations)

    def _each_image(self, weight, source, target):
        """target[n, g] = weight[g] source[n, g] for every image n, as few products as the layout allows."""
        if self.group == 1:
            _product(weight[0], source[:, 0], target[:, 0])
            return
        for n in range(self.images):
            _product(weight, source[n], target[n])

    def apply(self, conv_input, conv_output, bias, scale=None):
        self._each_image(self._weight(), self._by_group(self._gather(conv_input), self.in_channels),
                         self._by_group(conv_output, self.out_channels))
        if scale is not None:       # a folded BatchNorm/Scale: the same one pass as a bias
            _scale_and_shift_channels(conv_output, self.group * self.out_channels, self.images, self.locations,
                                      scale, bias)
        elif bias is not None:
            _add_channel_bias(conv_output, self.group * self.out_channels, self.images, self.locations, bias)

    def transpose(self, conv_output, conv_input):
        target = self.layer._buffer("strided_pixels", self._picked_size) if self.strided else conv_input
        self._each_image(self._weight().transpose(0, 2, 1), self._by_group(conv_output, self.out_channels),
                         self._by_group(target, self.in_channels))
        if self.strided:
            full = conv_input.reshape(self._input_shape)
            full[...] = 0
            full[self._picked] = target.reshape(self._picked_shape)

    def weight_gradient(self, output_diff, conv_input, weight_diff, bias_diff):
        if bias_diff is not None:
            self.output_channel_sums(output_diff, bias_diff)
        if weight_diff is None:
            return
        diff = weight_diff.reshape(self.group, self.out_channels, self.in_channels)
        outputs = self._by_group(output_diff, self.out_channels)
        inputs = self._by_group(self._gather(conv_input), self.in_channels).transpose(0, 1, 3, 2)
        per_image = diff.size
        if self.group > 1:
            product = self.layer._buffer("weight_products", per_image).reshape(diff.shape)
            for n in range(self.images):
                diff += _product(outputs[n], inputs[n], product)
            return
        chunk = int(max(1, min(self.images, PRODUCT_BUDGET // (per_image * diff.itemsize))))
        products = self.layer._buffer("weight_products", chunk * per_image)
        for start in range(0, self.images, chunk):
            images = min(chunk, self.images - start)
            product = products[:images * per_image].reshape(images, self.out_channels, self.in_channels)
            _product(outputs[start:start + images, 0], inputs[start:start + images, 0], product)
            diff[0] += product[0] if images == 1 else product.sum(axis=0)


#: Images up to which the automatic choice runs a 1x1 layer as per-image GEMMs on the GPU (deployment);
#: larger batches take the im2col path's per-chunk GEMMs. An estimate of launch costs (a GEMM call and a
#: copy kernel cost about alike), not yet measured on a GPU.
GPU_MAX_IMAGES = 2


class Conv1x1GpuPath(GpuConvPath):
    """Device GEMMs on the blobs, one per image and group; see the module docstring."""

    name = "1x1"

    @staticmethod
    def fits(layer):
        g = layer.geometry
        return all(k == 1 and s == 1 and p == 0 for k, s, p in zip(g.kernel, g.stride, g.pad))

    @staticmethod
    def wins(layer):
        return layer.num <= GPU_MAX_IMAGES and Conv1x1Path.wins(layer)

    def __init__(self, layer):
        super().__init__(layer)
        self.locations = layer.locations

    def _block(self, flat, n, g, channels):
        """Image n, group g of a flat blob array with ``channels`` per group: a (channels, L) device matrix."""
        size = channels * self.locations
        start = (n * self.group + g) * size
        return flat[start:start + size].reshape(channels, self.locations)

    def _products(self):
        """(image, group) pairs: every product of a pass."""
        return [(n, g) for n in range(self.layer.num) for g in range(self.group)]

    def apply(self, conv_input, conv_output, bias, scale=None):
        weight = self.layer.blobs[0].gpu_data
        for n, g in self._products():
            gpu_blas.gemm(self._weight_group(weight, g), self._block(conv_input, n, g, self.group_in),
                          self._block(conv_output, n, g, self.group_out))
        if bias is not None:
            _launch(_add_channel_bias_gpu, conv_output.size, conv_output, int(self.layer.conv_out_channels),
                    int(self.locations), bias)

    def transpose(self, conv_output, conv_input):
        weight = self.layer.blobs[0].gpu_data
        for n, g in self._products():
            gpu_blas.gemm(self._weight_group(weight, g), self._block(conv_output, n, g, self.group_out),
                          self._block(conv_input, n, g, self.group_in), trans_a=True)

    def weight_gradient(self, output_diff, conv_input, weight_diff, bias_diff):
        if bias_diff is not None:
            self.output_channel_sums(output_diff, bias_diff)
        if weight_diff is None:
            return
        for n, g in self._products():
            gpu_blas.gemm(self._block(output_diff, n, g, self.group_out),
                          self._block(conv_input, n, g, self.group_in), self._weight_group(weight_diff, g),
                          trans_b=True, beta=1.0)
