"""Embed: a lookup table from integer indices to learned vectors.

``embed_param``: ``num_output`` (N, the vector length), ``input_dim`` (K, the
number of indices), ``bias_term`` (default true), ``weight_filler`` and
``bias_filler``. Parameter blobs: the weight, K x N (row ``k`` is index ``k``'s
vector), then the bias (N).

The bottom holds indices (as floats; each must be a whole number in [0, K)); the
top has the bottom's shape with an extra last axis of N:
``y[..., :] = W[x[...], :] + b``.

Gradients: ``dW[k] += sum of dy over the positions holding k`` (an index that
occurs twice gets both diffs), ``db += sum of all dy``. The indices take no
gradient: the net never asks for one, and asking explicitly is an error.

GPU: Forward gathers with one thread per top element (Caffe's EmbedForward),
which also flags an index that is not a whole number in [0, K) (the first
such position comes back to the host, one integer, for the same error as on
the CPU; the thread writes the bias alone rather than read outside the
table). Backward scatters each top element's gradient into its row of the
weight diff with an atomic add (Caffe's EmbedBackward: an index that occurs
twice adds both); the bias gradient is a GEMV with ones.
"""

import numpy as np

from .. import gpu, gpu_blas
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..errors import GraphError
from ..fillers import fill
from ..layer import Layer
from ..registry import register


@gpu.jit
def _embed_forward_gpu(indices, weight, bias, add_bias, zero, input_dim, num_output, first_bad, top):
    """top[i, j] = weight[indices[i], j] (+ bias[j]); first_bad[0] = min(itself, i) for a bad index."""
    t = cuda.grid(1)
    if t < top.size:
        i = t // num_output
        j = t % num_output
        value = indices[i]
        inside = value >= 0 and value < input_dim       # false for NaN too, before any conversion
        k = int(value) if inside else 0
        result = bias[j] if add_bias else zero
        if not inside or k != value:
            cuda.atomic.min(first_bad, 0, i)
        else:
            result += weight[k * num_output + j]
        top[t] = result


@gpu.jit
def _embed_backward_gpu(indices, top_diff, num_output, weight_diff):
    """weight_diff[indices[i], j] += top_diff[i, j], atomically (an index may occur more than once)."""
    t = cuda.grid(1)
    if t < top_diff.size:
        k = int(indices[t // num_output])
        cuda.atomic.add(weight_diff, k * num_output + t % num_output, top_diff[t])


@register("Embed")
class EmbedLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1
    never_backward_bottoms = (0,)

    def setup(self, bottom, top):
        param = self.layer_param.embed_param
        self.num_output = int(param.num_output)
        self.input_dim = int(param.input_dim)
        if self.num_output <= 0:
            raise GraphError("embed_param.num_output must be positive", layer=self.name)
        if self.input_dim <= 0:
            raise GraphError("embed_param.input_dim must be positive", layer=self.name)
        self.bias_term = param.bias_term
        self.blobs = [self.new_param_blob((self.input_dim, self.num_output))]
        fill(self.blobs[0], param.weight_filler, self.name, "embed_param.weight_filler")
        if self.bias_term:
            self.blobs.append(self.new_param_blob((self.num_output,)))
            fill(self.blobs[1], param.bias_filler, self.name, "embed_param.bias_filler")
        self.indices = None

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def forward(self, bottom, top):
        values = bottom[0].data.reshape(-1)
        indices = values.astype(np.int64)
        bad = (indices != values) | (indices < 0) | (indices >= self.input_dim)
        if bad.any():
            raise GraphError(f"index {values[bad][0]:g} is not a whole number in [0, {self.input_dim}) "
                             "(embed_param.input_dim)", layer=self.name)
        self.indices = indices
        out = top[0].data.reshape(-1, self.num_output)
        np.take(self.blobs[0].data, indices, axis=0, out=out)
        if self.bias_term:
            out += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise GraphError("Embed cannot propagate a gradient to its indices (bottom 0)", layer=self.name)
        dy = top[0].diff.reshape(-1, self.num_output)
        if self.param_propagate_down[0]:
            np.add.at(self.blobs[0].diff, self.indices, dy)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)

    # ---------------------------------------------------------------- GPU
    def forward_gpu(self, bottom, top):
        count = bottom[0].count
        first_bad = getattr(self, "_first_bad_gpu", None)
        if first_bad is None:           # kept: a fresh device allocation every Forward would cost more than the flag
            first_bad = self._first_bad_gpu = gpu.device_empty(1, np.int64)
        first_bad.copy_to_device(np.array([count], dtype=np.int64))
        output = top[0].mutable_gpu_data
        weight = self.blobs[0].gpu_data
        if output.size:
            _embed_forward_gpu[gpu.blocks_for(output.size), gpu.THREADS](
                bottom[0].gpu_data, weight, self.blobs[1].gpu_data if self.bias_term else weight, bool(self.bias_term),
                self.dtype.type(0), self.input_dim, self.num_output, first_bad, output)
        bad = int(first_bad.copy_to_host()[0])
        if bad < count:
            value = bottom[0].data.reshape(-1)[bad]
            raise GraphError(f"index {value:g} is not a whole number in [0, {self.input_dim}) "
                             "(embed_param.input_dim)", layer=self.name)

    def backward_gpu(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise GraphError("Embed cannot propagate a gradient to its indices (bottom 0)", layer=self.name)
        dy = top[0].gpu_diff
        if self.param_propagate_down[0] and dy.size:
            _embed_backward_gpu[gpu.blocks_for(dy.size), gpu.THREADS](
                bottom[0].gpu_data, dy, self.num_output, self.blobs[0].mutable_gpu_diff)
        if self.bias_term and self.param_propagate_down[1]:
            rows = top[0].count // self.num_output
            ones = getattr(self, "_ones_gpu", None)
            if ones is None or ones.size != rows or ones.dtype != self.dtype:
                ones = gpu.device_empty(rows, self.dtype)
                gpu_blas.fill(ones, 1)
                self._ones_gpu = ones
            gpu_blas.gemv(dy.reshape(rows, self.num_output), ones, self.blobs[1].mutable_gpu_diff, trans_a=True,
                          beta=1.0)
