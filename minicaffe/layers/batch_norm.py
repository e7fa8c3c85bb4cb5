"""BatchNorm: normalize each channel (axis 1) to zero mean and unit variance.

The bottom (at least 2 axes) is viewed as N x C x S (S: the product of the
axes after the channel axis); statistics are per channel, over N and S.

- With batch statistics (the default in TRAIN): ``mean`` and ``var`` (biased,
  ``E[(x - mean)^2]``) of this batch, and ``y = (x - mean) / sqrt(var + eps)``.
- With ``use_global_stats`` (the default in TEST; set explicitly to override
  the phase): the stored running statistics, ``mean = blobs[0] / blobs[2]``,
  ``var = blobs[1] / blobs[2]`` (0 when ``blobs[2]`` is 0).

Three parameter blobs, exactly as Caffe stores them (so Caffe's weights load and
training continues from them): ``blobs[0]`` (C) the running sum of means,
``blobs[1]`` (C) the running sum of unbiased variances, ``blobs[2]`` (1) the
scale factor. Each Forward with batch statistics updates them, with
``f = moving_average_fraction`` (default 0.999) and ``m = N * S``::

    blobs[2] = f * blobs[2] + 1
    blobs[0] = f * blobs[0] + mean
    blobs[1] = f * blobs[1] + var * m / (m - 1)      (m / (m - 1) is 1 when m == 1)

They are statistics, not learned: like Caffe, setup gives the layer
``param { lr_mult: 0 }`` for each of them that the net does not declare (and
refuses a non-zero ``lr_mult``), so the net computes no gradient for them and a
solver leaves them alone; Backward never writes their diffs.

Gradient with batch statistics (means over N and S per channel)::

    dx = (dy - mean(dy) - y * mean(dy * y)) / sqrt(var + eps)

and with global statistics ``dx = dy / sqrt(var + eps)``. The normalized
output is cached for Backward, so it works in place and under later in-place
layers (Scale, ReLU) that overwrite the top.
"""

import numpy as np

from ..errors import GraphError
from ..graph import TEST
from ..layer import Layer
from ..registry import register


@register("BatchNorm")
class BatchNormLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.batch_norm_param
        if param.HasField("use_global_stats"):
            self.use_global_stats = param.use_global_stats
        else:
            self.use_global_stats = self.phase == TEST
        self.moving_average_fraction = float(param.moving_average_fraction)
        self.eps = float(param.eps)
        if bottom[0].ndim < 2:
            raise self.shape_error("BatchNorm needs a bottom with at least 2 axes (N x C x ...)",
                                   actual=bottom[0].shape)
        self.channels = bottom[0].shape[1]
        self.blobs = [self.new_param_blob((self.channels,)), self.new_param_blob((self.channels,)),
                      self.new_param_blob((1,))]     # fresh memory is zero, as Caffe's
        specs = self.layer_param.param
        for index in range(len(self.blobs)):
            if index < len(specs):
                if specs[index].lr_mult != 0:
                    raise GraphError(f"param {index} has lr_mult {specs[index].lr_mult:g}: BatchNorm's mean, "
                                     "variance and scale factor are statistics, not learned parameters "
                                     "(give lr_mult: 0 or no param spec)", layer=self.name)
            else:
                specs.add().lr_mult = 0.0
        self.param_propagate_down = [False] * len(self.blobs)
        self.x_norm = None
        self.inv_std = None

    def reshape(self, bottom, top):
        if bottom[0].ndim < 2 or bottom[0].shape[1] != self.channels:
            raise self.shape_error(f"the bottom must keep its {self.channels} channels (axis 1)",
                                   expected=(None, self.channels), actual=bottom[0].shape)
        shape = bottom[0].shape
        self.view = (shape[0], self.channels, bottom[0].count_axes(2))
        top[0].reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        dtype = x.dtype.type
        if self.use_global_stats:
            factor = self.blobs[2].data[0]
            scale = dtype(0) if factor == 0 else dtype(1) / factor
            mean = self.blobs[0].data * scale
            var = self.blobs[1].data * scale
        else:
            mean = x.mean(axis=(0, 2))
            centered = x - mean[None, :, None]
            var = np.einsum("ncs,ncs->c", centered, centered) / dtype(self.view[0] * self.view[2])
            self._update_running_stats(mean, var)
        self.inv_std = dtype(1) / np.sqrt(var + dtype(self.eps))
        y = top[0].data.reshape(self.view)
        np.subtract(x, mean[None, :, None], out=y)
        y *= self.inv_std[None, :, None]
        if not self.use_global_stats:
            self.x_norm = y.copy()

    def _update_running_stats(self, mean, var):
        f = self.dtype.type(self.moving_average_fraction)
        m = self.view[0] * self.view[2]
        correction = self.dtype.type(m / (m - 1) if m > 1 else 1.0)
        factor = self.blobs[2].data
        factor *= f
        factor += 1
        running_mean = self.blobs[0].data
        running_mean *= f
        running_mean += mean
        running_var = self.blobs[1].data
        running_var *= f
        running_var += correction * var

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.view)
        dx = bottom[0].diff.reshape(self.view)
        inv_std = self.inv_std[None, :, None]
        if self.use_global_stats:
            np.multiply(dy, inv_std, out=dx)
            return
        y = self.x_norm
        count = self.dtype.type(self.view[0] * self.view[2])
        mean_dy = dy.sum(axis=(0, 2)) / count
        mean_dy_y = np.einsum("ncs,ncs->c", dy, y) / count
        # Both means are taken before dx is written: in place, dx is dy.
        np.subtract(dy, mean_dy[None, :, None], out=dx)
        dx -= y * mean_dy_y[None, :, None]
        dx *= inv_std
