"""Scale: ``y = x * s`` (+ ``b`` with ``bias_term``), ``s`` broadcast as in Bias.

``s`` comes from a second bottom or is a learned parameter blob lined up with
``x`` from ``scale_param.axis`` (default 1); a learned ``s`` covers
``num_axes`` axes (default 1; -1 = through the last axis; 0 = a scalar) and is
filled by ``scale_param.filler`` (default constant 1). ``bias_term: true`` adds
a learned bias (filled by ``bias_filler``, default constant 0) of the shape
Caffe's internal Bias layer gives it: ``num_axes`` axes from ``axis``, or, when
``s`` is a second bottom, as many axes as that bottom has. Parameter blobs, in
Caffe's order (so ``.caffemodel`` files load): ``[scale, bias]`` with a learned
scale, ``[bias]`` when the scale is a bottom.

Viewing ``x`` as outer x dim x inner: ``y[o, d, i] = x[o, d, i] * s[d] + b[d]``.
Gradients: ``dx = dy * s``; ``ds[d] = sum_{o,i} dy * x``; ``db[d] = sum_{o,i} dy``.
Parameter diffs accumulate; a second bottom's diff is written. In place, the
input is kept for ``ds``.

Deviation from Caffe: when a learned ``s`` has as many elements as ``x``,
Caffe overwrites its diff instead of accumulating; here it accumulates as every
parameter diff does.

CPU: Bias's kernels (``channel_affine``, ``channel_sums``) on minicaffe's
threads; sums per channel are the same at any thread count.

GPU: Bias's device kernel ``channel_affine_gpu`` and its GEMV channel sums
(``ds`` from a device product ``dy * x``): the same operations in the same
layouts, the input kept in a device buffer when computed in place.
"""

import numpy as np

from .. import threads
from ..fillers import fill
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register
from .bias import (SUM_PRODUCT, affine_gpu, apply_channel_affine, broadcast_layout, channel_sums_gpu, copy_gpu,
                   gpu_scratch, learned_operand_shape, rows, sum_channels)


@register("Scale")
class ScaleLayer(Layer):
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.scale_param
        self.blobs = []
        if len(bottom) == 1:
            shape = learned_operand_shape(self, bottom[0], param.axis, param.num_axes, "scale")
            self.blobs.append(self.new_param_blob(shape))
            filler = param.filler
            if not param.HasField("filler"):
                filler = caffe_pb2.FillerParameter(type="constant", value=1.0)
            fill(self.blobs[0], filler, self.name, "scale_param.filler")
        self.bias_term = param.bias_term
        if self.bias_term:
            num_axes = bottom[1].ndim if len(bottom) > 1 else param.num_axes
            shape = learned_operand_shape(self, bottom[0], param.axis, num_axes, "bias")
            self.blobs.append(self.new_param_blob(shape))
            fill(self.blobs[-1], param.bias_filler, self.name, "scale_param.bias_filler")
        self._saved_input = None

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        axis = self.layer_param.scale_param.axis
        self.layout = broadcast_layout(self, bottom[0], self._scale(bottom).shape, axis, "scale")
        if self.bias_term:
            self.bias_layout = broadcast_layout(self, bottom[0], self.blobs[-1].shape, axis, "bias")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = rows(bottom[0].data, self.layout)
        if bottom[0] is top[0]:                # ds needs x, which y overwrites
            if self._saved_input is None or self._saved_input.shape != x.shape:
                self._saved_input = np.empty_like(x)
            saved = self._saved_input
            threads.parallel_for(x.size, lambda start, stop: np.copyto(saved.reshape(-1)[start:stop],
                                                                      x.reshape(-1)[start:stop]))
        y = rows(top[0].data, self.layout)
        dim = self.layout[1]
        scale = self._scale(bottom).data
        if self.bias_term and self.bias_layout == self.layout:
            apply_channel_affine(x, y, dim, scale=scale, bias=self.blobs[-1].data)
            return
        apply_channel_affine(x, y, dim, scale=scale)
        if self.bias_term:
            y_bias = rows(top[0].data, self.bias_layout)
            apply_channel_affine(y_bias, y_bias, self.bias_layout[1], bias=self.blobs[-1].data)

    def backward(self, top, propagate_down, bottom):
        # Parameter and scale gradients first: in place, dx overwrites dy.
        if self.bias_term and self.param_propagate_down[-1]:
            dy = rows(top[0].diff, self.bias_layout)
            self.blobs[-1].diff.reshape(-1)[...] += sum_channels(dy, self.bias_layout[1]).astype(self.dtype)
        learned = len(bottom) == 1
        dy = rows(top[0].diff, self.layout)
        dim = self.layout[1]
        if (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1]):
            x = self._saved_input if bottom[0] is top[0] else rows(bottom[0].data, self.layout)
            scale_grad = sum_channels(dy, dim, x)
            if learned:
                self.blobs[0].diff.reshape(-1)[...] += scale_grad.astype(self.dtype)
            else:
                bottom[1].diff.reshape(-1)[...] = scale_grad
        if propagate_down[0]:
            apply_channel_affine(dy, rows(bottom[0].diff, self.layout), dim, scale=self._scale(bottom).data)

    def forward_gpu(self, bottom, top):
        outer, dim, inner = self.layout
        x = bottom[0].gpu_data
        if bottom[0] is top[0]:                # ds needs x, which y overwrites
            self._gpu_saved_input = gpu_scratch(self, "saved input", bottom[0].count, bottom[0].dtype)
            copy_gpu(x, self._gpu_saved_input)
        y = top[0].mutable_gpu_data
        scale = self._scale(bottom).gpu_data
        if self.bias_term and self.bias_layout == self.layout:
            affine_gpu(x, y, dim, inner, scale=scale, bias=self.blobs[-1].gpu_data)
            return
        affine_gpu(x, y, dim, inner, scale=scale)
        if self.bias_term:
            affine_gpu(y, y, self.bias_layout[1], self.bias_layout[2], bias=self.blobs[-1].gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        dy = top[0].gpu_diff
        if self.bias_term and self.param_propagate_down[-1]:
            channel_sums_gpu(self, dy, self.bias_layout, self.blobs[-1].mutable_gpu_diff, beta=1.0, name="bias")
        learned = len(bottom) == 1
        outer, dim, inner = self.layout
        if (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1]):
            x = self._gpu_saved_input if bottom[0] is top[0] else bottom[0].gpu_data
            if learned:
                channel_sums_gpu(self, dy, self.layout, self.blobs[0].mutable_gpu_diff, 1.0, x, SUM_PRODUCT)
            else:
                channel_sums_gpu(self, dy, self.layout, bottom[1].mutable_gpu_diff, 0.0, x, SUM_PRODUCT)
        if propagate_down[0]:
            affine_gpu(dy, bottom[0].mutable_gpu_diff, dim, inner, scale=self._scale(bottom).gpu_data)
