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

CPU: numba kernels over the rows of the (N*C, S) view on minicaffe's threads
(:mod:`minicaffe.threads`), with Bias's ``channel_affine`` and
``channel_sums``. Each channel's statistics are computed by one thread in a
fixed order, in float64 (two passes: the mean, then squares about it), so
they are the same run to run and at any thread count.

GPU: the statistics stay on the device. Per channel sums (of x, of the
squares about the mean, of dy and of dy * y) are Bias's GEMVs with a vector of
ones through cuBLAS (Caffe's way), in the blob's type; the running statistics
(blobs 0-2) are updated by one thread per channel; the normalization and the
gradient are one thread per element (Bias's ``channel_affine_gpu`` and
``_normalize_backward_gpu``). The normalized output is kept in a device
buffer for Backward.
"""

import math

import numpy as np

from .. import gpu, threads
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..errors import GraphError
from ..graph import TEST
from ..kernels import cpu_kernel
from ..layer import Layer
from ..registry import register
from .bias import SUM_PRODUCT, affine_gpu, apply_channel_affine, channel_sums_gpu, copy_gpu, gpu_scratch, launch, \
    sum_channels


@cpu_kernel(nogil=True)
def channel_moments(x, channels, mean, var, start, stop):
    """Per channel c in [start, stop) of the (N*C, S) rows: mean and biased variance, in float64."""
    count = (x.shape[0] // channels) * x.shape[1]
    for c in range(start, stop):
        total = 0.0
        for r in range(c, x.shape[0], channels):
            row = x[r]
            for j in range(row.size):
                total += row[j]
        center = total / count
        squares = 0.0
        for r in range(c, x.shape[0], channels):
            row = x[r]
            for j in range(row.size):
                deviation = row[j] - center
                squares += deviation * deviation
        mean[c] = center
        var[c] = squares / count


@cpu_kernel(nogil=True, fastmath=False)
def normalize_backward(dy, y, dx, in_place, mean_dy, mean_dy_y, inv_std, channels, start, stop):
    """dx = ((dy - mean(dy)) - y * mean(dy * y)) * inv_std over rows [start, stop); ``in_place``: dx is dy
    (one array in the loop, so that it vectorizes: see bias.channel_affine)."""
    for r in range(start, stop):
        c = r % channels
        a, b, s = mean_dy[c], mean_dy_y[c], inv_std[c]
        normalized, out = y[r], dx[r]
        if in_place:
            for j in range(out.size):
                out[j] = ((out[j] - a) - normalized[j] * b) * s
        else:
            gradient = dy[r]
            for j in range(out.size):
                out[j] = ((gradient[j] - a) - normalized[j] * b) * s


@gpu.jit
def _divide_gpu(values, divisor):
    i = cuda.grid(1)
    if i < values.size:
        values[i] = values[i] / divisor


@gpu.jit
def _global_stats_gpu(sum_mean, sum_var, factor, mean, var, zero, one):
    """mean = blobs[0] / blobs[2], var = blobs[1] / blobs[2] (0 when blobs[2] is 0), as the CPU's products."""
    c = cuda.grid(1)
    if c < mean.size:
        f = factor[0]
        scale = zero if f == 0 else one / f
        mean[c] = sum_mean[c] * scale
        var[c] = sum_var[c] * scale


@gpu.jit
def _update_running_stats_gpu(mean, var, running_mean, running_var, factor, fraction, correction, one):
    """blobs[0] = f blobs[0] + mean, blobs[1] = f blobs[1] + correction var, blobs[2] = f blobs[2] + 1."""
    c = cuda.grid(1)
    if c < mean.size:
        running_mean[c] = running_mean[c] * fraction + mean[c]
        running_var[c] = running_var[c] * fraction + correction * var[c]
        if c == 0:
            factor[0] = factor[0] * fraction + one


@gpu.jit
def _inverse_std_gpu(var, eps, one, inv_std):
    c = cuda.grid(1)
    if c < var.size:
        inv_std[c] = one / math.sqrt(var[c] + eps)


@gpu.jit
def _normalize_backward_gpu(dy, y, dx, sum_dy, sum_dy_y, count, inv_std, channels, spatial):
    """dx = ((dy - mean(dy)) - y * mean(dy * y)) * inv_std; dx may be dy."""
    i = cuda.grid(1)
    if i < dx.size:
        c = (i // spatial) % channels
        dx[i] = ((dy[i] - sum_dy[c] / count) - y[i] * (sum_dy_y[c] / count)) * inv_std[c]


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

    def _rows(self, array):
        return array.reshape(self.view[0] * self.view[1], self.view[2])

    def forward(self, bottom, top):
        x = self._rows(bottom[0].data)
        dtype = x.dtype.type
        channels = self.channels
        if self.use_global_stats:
            factor = self.blobs[2].data[0]
            scale = dtype(0) if factor == 0 else dtype(1) / factor
            mean = self.blobs[0].data * scale
            var = self.blobs[1].data * scale
        else:
            mean64 = np.empty(channels)
            var64 = np.empty(channels)
            threads.parallel_for(channels, lambda start, stop: channel_moments(x, channels, mean64, var64, start, stop),
                                 x.size // max(1, channels))
            mean, var = mean64.astype(dtype), var64.astype(dtype)
            self._update_running_stats(mean, var)
        self.inv_std = dtype(1) / np.sqrt(var + dtype(self.eps))
        y = self._rows(top[0].data)
        apply_channel_affine(x, y, channels, shift=mean, scale=self.inv_std)
        if not self.use_global_stats:
            if self.x_norm is None or self.x_norm.shape != y.shape:
                self.x_norm = np.empty_like(y)
            x_norm = self.x_norm.reshape(-1)
            flat = y.reshape(-1)
            threads.parallel_for(flat.size, lambda start, stop: np.copyto(x_norm[start:stop], flat[start:stop]))

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
        dy = self._rows(top[0].diff)
        dx = self._rows(bottom[0].diff)
        channels = self.channels
        if self.use_global_stats:
            apply_channel_affine(dy, dx, channels, scale=self.inv_std)
            return
        y = self.x_norm
        count = self.view[0] * self.view[2]
        # Both means are taken before dx is written: in place, dx is dy.
        mean_dy = (sum_channels(dy, channels) / count).astype(self.dtype)
        mean_dy_y = (sum_channels(dy, channels, y) / count).astype(self.dtype)
        in_place = bottom[0] is top[0]
        threads.parallel_for(dy.shape[0], lambda start, stop: normalize_backward(
            dy, y, dx, in_place, mean_dy, mean_dy_y, self.inv_std, channels, start, stop), dy.shape[1])

    def forward_gpu(self, bottom, top):
        num, channels, spatial = self.view
        dtype = bottom[0].dtype
        one = dtype.type(1)
        x = bottom[0].gpu_data
        mean = gpu_scratch(self, "mean", channels, dtype)
        var = gpu_scratch(self, "var", channels, dtype)
        if self.use_global_stats:
            launch(_global_stats_gpu, channels)(self.blobs[0].gpu_data, self.blobs[1].gpu_data,
                                                self.blobs[2].gpu_data, mean, var, dtype.type(0), one)
        else:
            m = num * spatial
            centered = self._gpu_x_norm = gpu_scratch(self, "x_norm", x.size, dtype)
            channel_sums_gpu(self, x, self.view, mean)
            launch(_divide_gpu, channels)(mean, dtype.type(m))
            affine_gpu(x, centered, channels, spatial, shift=mean)
            channel_sums_gpu(self, centered, self.view, var, b=centered, mode=SUM_PRODUCT)
            launch(_divide_gpu, channels)(var, dtype.type(m))
            launch(_update_running_stats_gpu, channels)(
                mean, var, self.blobs[0].mutable_gpu_data, self.blobs[1].mutable_gpu_data,
                self.blobs[2].mutable_gpu_data, dtype.type(self.moving_average_fraction),
                dtype.type(m / (m - 1) if m > 1 else 1.0), one)
        self._gpu_inv_std = gpu_scratch(self, "inv_std", channels, dtype)
        launch(_inverse_std_gpu, channels)(var, dtype.type(self.eps), one, self._gpu_inv_std)
        y = top[0].mutable_gpu_data
        affine_gpu(x, y, channels, spatial, shift=mean, scale=self._gpu_inv_std)
        if not self.use_global_stats:
            copy_gpu(y, self._gpu_x_norm)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        num, channels, spatial = self.view
        dtype = bottom[0].dtype
        dy = top[0].gpu_diff
        if self.use_global_stats:
            affine_gpu(dy, bottom[0].mutable_gpu_diff, channels, spatial, scale=self._gpu_inv_std)
            return
        y = self._gpu_x_norm
        # Both sums are taken before dx is written: in place, dx is dy.
        sum_dy = channel_sums_gpu(self, dy, self.view, gpu_scratch(self, "sum dy", channels, dtype))
        sum_dy_y = channel_sums_gpu(self, dy, self.view, gpu_scratch(self, "sum dy y", channels, dtype), b=y,
                                    mode=SUM_PRODUCT)
        if dy.size:
            launch(_normalize_backward_gpu, dy.size)(dy, y, bottom[0].mutable_gpu_diff, sum_dy, sum_dy_y,
                                                     dtype.type(num * spatial), self._gpu_inv_std, int(channels),
                                                     int(spatial))
