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
parameters, the three operations both layers are made of, and how each layer
picks the path that computes them (``layer.conv_path``: ``"1x1"``,
``"direct"`` or ``"im2row"``).

Deliberate differences from Caffe, each an error naming the layer where Caffe
goes wrong: a kernel extent larger than the padded input (Caffe's truncating
division gives a size of 0, a negative one, or even 1); ``dilation: 0`` (Caffe
reads every tap of the kernel from one pixel); ``stride_h`` or ``stride_w``
alone (Caffe leaves the other 0 and divides by it); a Deconvolution whose
output would be empty.

GPU: the same three operations on the blobs' device arrays, through the GPU
paths (:data:`GPU_PATHS`; see :mod:`.conv_common`): direct kernels for
depthwise layers, one GEMM per image for 1x1 kernels, im2col + GEMM (Caffe's
``base_conv_layer`` on the GPU) for the rest; parameter gradients accumulate
into the device diffs. Deconvolution's bias is added by one kernel and its
gradient summed by GEMVs. A Convolution that runs a folded BatchNorm/Scale
chain (TEST nets, :mod:`minicaffe.fold`) runs its CPU kernels in GPU mode.
"""

from __future__ import annotations

from ..registry import register
from .conv_1x1 import Conv1x1GpuPath, Conv1x1Path
from .conv_common import BaseConvolution, _add_channel_bias, _add_channel_bias_gpu, _channel_sums, _launch
from .conv_direct import DirectGpuPath, DirectPath
from .conv_im2row import Im2colGpuPath, Im2rowPath

#: The paths, in the order the automatic choice tries them; im2row takes whatever the others do not.
PATHS = (Conv1x1Path, DirectPath, Im2rowPath)
#: The GPU paths, likewise.
GPU_PATHS = (DirectGpuPath, Conv1x1GpuPath, Im2colGpuPath)


def _flat(array):
    return array.reshape(-1)


@register("Convolution")
class ConvolutionLayer(BaseConvolution):
    """Convolution; see the module docstring."""

    paths = PATHS
    gpu_paths = GPU_PATHS

    #: (scale, shift) per output channel while the net runs a folded BatchNorm/Scale/Bias chain through
    #: this layer (see :mod:`minicaffe.fold`); None otherwise.
    folded = None

    def forward(self, bottom, top):
        bias, scale = self._bias(), None
        if self.folded is not None:
            scale, bias = self.folded
        for x_blob, y_blob in zip(bottom, top):
            self.path.apply(_flat(x_blob.data), _flat(y_blob.data), bias, scale)

    def backward(self, top, propagate_down, bottom):
        weight_diff = self.blobs[0].diff if self.param_propagate_down[0] else None
        bias_diff = self._bias_diff()
        for y_blob, x_blob, need_input in zip(top, bottom, propagate_down):
            input_diff = _flat(x_blob.diff) if need_input else None
            self.path.backward(_flat(y_blob.diff), _flat(x_blob.data), input_diff, weight_diff, bias_diff)

    def forward_gpu(self, bottom, top):
        if self.folded is not None:     # the folded chain's scale and shift are host arrays: the CPU kernels
            self.forward(bottom, top)
            return
        path = self.gpu_conv_path()
        bias = self.blobs[1].gpu_data if self.bias_term else None
        for x_blob, y_blob in zip(bottom, top):
            x = x_blob.gpu_data
            if x_blob is y_blob:
                x = self._gpu_in_place_copy("in-place input", x)
            path.apply(x, y_blob.mutable_gpu_data, bias)

    def backward_gpu(self, top, propagate_down, bottom):
        path = self.gpu_conv_path()
        weight_diff, bias_diff = self._gpu_param_diffs()
        for y_blob, x_blob, need_input in zip(top, bottom, propagate_down):
            input_diff = x_blob.mutable_gpu_diff if need_input else None
            dy = y_blob.gpu_diff
            if x_blob is y_blob and input_diff is not None:
                dy = self._gpu_in_place_copy("in-place top diff", dy)
            path.backward(dy, x_blob.gpu_data, input_diff, weight_diff, bias_diff)


@register("Deconvolution")
class DeconvolutionLayer(BaseConvolution):
    """Deconvolution (transposed convolution); see the module docstring."""

    paths = PATHS
    gpu_paths = GPU_PATHS
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
        for x_blob, y_blob in zip(bottom, top):
            self.path.transpose(_flat(x_blob.data), _flat(y_blob.data))
            if self.bias_term:
                _add_channel_bias(_flat(y_blob.data), self.num_output, self.num,
                                  self.conv_in_size // self.num_output, self.blobs[1].data)

    def backward(self, top, propagate_down, bottom):
        weight_diff = self.blobs[0].diff if self.param_propagate_down[0] else None
        bias_diff = self._bias_diff()
        for y_blob, x_blob, need_input in zip(top, bottom, propagate_down):
            if bias_diff is not None:
                _channel_sums(_flat(y_blob.diff), self.num_output, self.num, self.conv_in_size // self.num_output,
                              bias_diff)
            output_diff = _flat(x_blob.diff) if need_input else None
            self.path.backward_transposed(_flat(y_blob.diff), _flat(x_blob.data), output_diff, weight_diff)

    def forward_gpu(self, bottom, top):
        path = self.gpu_conv_path()
        for x_blob, y_blob in zip(bottom, top):
            x = x_blob.gpu_data
            if x_blob is y_blob:
                x = self._gpu_in_place_copy("in-place input", x)
            output = y_blob.mutable_gpu_data
            path.transpose(x, output)
            if self.bias_term:
                _launch(_add_channel_bias_gpu, output.size, output, int(self.num_output),
                        int(self.conv_in_size // self.num_output), self.blobs[1].gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        path = self.gpu_conv_path()
        weight_diff, bias_diff = self._gpu_param_diffs()
        for y_blob, x_blob, need_input in zip(top, bottom, propagate_down):
            top_diff = y_blob.gpu_diff
            if x_blob is y_blob and need_input:
                top_diff = self._gpu_in_place_copy("in-place top diff", top_diff)
            if bias_diff is not None:
                self._channel_sums_gpu(top_diff, self.num_output, self.conv_in_size // self.num_output, bias_diff)
            output_diff = x_blob.mutable_gpu_diff if need_input else None
            path.backward_transposed(top_diff, x_blob.gpu_data, output_diff, weight_diff)
