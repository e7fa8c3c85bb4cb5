"""Convolution and Deconvolution: learned filters over N-D images (Caffe's ConvolutionLayer, DeconvolutionLayer).

Convolution: ``y[n, m, o] = b[m] + sum over c in m's group, tap k of W[m, c, k] *
x[n, c, o * stride - pad + k * dilation]`` (zero outside the input), with output
size ``(in + 2 pad - (dilation (kernel - 1) + 1)) // stride + 1`` per spatial
axis. Gradients: ``dW[m, c, k] += sum over n, o of dy[n, m, o] x[n, c, o*stride -
pad + k*dilation]``, ``db[m] += sum over n, o of dy[n, m, o]``, and ``dx`` the
transposed convolution of ``dy`` (each input position receives every output
that read it, times the weight it was read with).

Deconvolution is the transpose: its forward is Convolution's input gradient
(with the weight ``(channels, num_output / group, *kernel)``), plus a bias per
output channel; its output size is ``stride (in - 1) + dilation (kernel - 1) + 1
- 2 pad``. Its bottom gradient is a Convolution forward of the top gradient,
and its weight gradient the Convolution weight gradient with the roles of
bottom and top exchanged.

Several bottoms (all of one shape) give as many tops, through the same weights;
parameter gradients accumulate over them. See :mod:`.conv_common` for the
parameters and how the work is laid out (im2row in numba, BLAS products over
chunks of images).

Deliberate differences from Caffe, each an error naming the layer where Caffe
goes wrong: a kernel extent larger than the padded input (Caffe's truncating
division gives a size of 0, a negative one, or even 1); ``dilation: 0`` (Caffe
reads every tap of the kernel from one pixel); ``stride_h`` or ``stride_w``
alone (Caffe leaves the other 0 and divides by it); a Deconvolution whose
output would be empty. GPU mode runs these CPU kernels.
"""

from __future__ import annotations

from itertools import repeat

from ..registry import register
from .conv_common import BaseConvolution, _add_channel_bias, _channel_sums


@register("Convolution")
class ConvolutionLayer(BaseConvolution):
    """Convolution; see the module docstring."""

    def forward(self, bottom, top):
        weight_rows = self._weight_rows()
        bias = self._bias()
        for x_blob, y_blob in zip(bottom, top):
            outputs = self._flat_chunks(y_blob.data, self.conv_out_size)
            for (images, x), (_, y) in zip(self._flat_chunks(x_blob.data, self.conv_in_size), outputs):
                self._apply(self._patches(x, images), weight_rows, y, images, bias)

    def backward(self, top, propagate_down, bottom):
        learn_weight = self.param_propagate_down[0]
        weight_rows = self._weight_rows() if any(propagate_down) else None
        accumulator = self._weight_accumulator() if learn_weight else None
        bias_diff = self._bias_diff()
        for y_blob, x_blob, need_input in zip(top, bottom, propagate_down):
            if not learn_weight and not need_input:
                if bias_diff is not None:
                    _channel_sums(y_blob.diff.reshape(-1), self.conv_out_channels, self.num, self.locations,
                                  bias_diff)
                continue
            top_diffs = self._flat_chunks(y_blob.diff, self.conv_out_size)
            inputs = self._flat_chunks(x_blob.data, self.conv_in_size)
            input_diffs = self._flat_chunks(x_blob.diff, self.conv_in_size) if need_input else repeat(None)
            for (images, dy), (_, x), dx in zip(top_diffs, inputs, input_diffs):
                outputs = self._outputs(dy, images, bias_diff)
                if learn_weight:
                    self._weight_gradient(outputs, self._patches(x, images), accumulator)
                if dx is not None:
                    self._transpose(outputs, weight_rows, dx[1], images)
        if learn_weight:
            self._store_weight_gradient(accumulator)


@register("Deconvolution")
class DeconvolutionLayer(BaseConvolution):
    """Deconvolution (transposed convolution); see the module docstring."""

    reverse = True

    def output_dims(self, input_dims, shape):
        dims = [s * (size - 1) + d * (k - 1) + 1 - 2 * p
                for size, k, s, p, d in zip(input_dims, self.kernel, self.stride, self.pad, self.dilation)]
        if any(d < 1 for d in dims):
            raise self.shape_error(f"the output would be empty: stride * (in - 1) + dilation * (kernel - 1) + 1 "
                                   f"- 2 * pad = {dims} (kernel {self.kernel}, stride {self.stride}, pad {self.pad})",
                                   actual=shape)
        return dims

    def forward(self, bottom, top):
        weight_rows = self._weight_rows()
        for x_blob, y_blob in zip(bottom, top):
            outputs = self._flat_chunks(y_blob.data, self.conv_in_size)
            for (images, x), (_, y) in zip(self._flat_chunks(x_blob.data, self.conv_out_size), outputs):
                self._transpose(self._outputs(x, images), weight_rows, y, images)
            if self.bias_term:
                _add_channel_bias(y_blob.data.reshape(-1), self.num_output, self.num,
                                  self.geometry.image_size // self.num_output, self.blobs[1].data)

    def backward(self, top, propagate_down, bottom):
        learn_weight = self.param_propagate_down[0]
        weight_rows = self._weight_rows() if any(propagate_down) else None
        accumulator = self._weight_accumulator() if learn_weight else None
        bias_diff = self._bias_diff()
        for y_blob, x_blob, need_input in zip(top, bottom, propagate_down):
            if bias_diff is not None:
                _channel_sums(y_blob.diff.reshape(-1), self.num_output, self.num,
                              self.geometry.image_size // self.num_output, bias_diff)
            if not learn_weight and not need_input:
                continue
            top_diffs = self._flat_chunks(y_blob.diff, self.conv_in_size)
            inputs = self._flat_chunks(x_blob.data, self.conv_out_size)
            input_diffs = self._flat_chunks(x_blob.diff, self.conv_out_size) if need_input else repeat(None)
            for (images, dy), (_, x), dx in zip(top_diffs, inputs, input_diffs):
                patches = self._patches(dy, images)
                if learn_weight:
                    self._weight_gradient(self._outputs(x, images), patches, accumulator)
                if dx is not None:
                    self._apply(patches, weight_rows, dx[1], images, None)
        if learn_weight:
            self._store_weight_gradient(accumulator)
