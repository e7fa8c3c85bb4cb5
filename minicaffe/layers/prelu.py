"""PReLU: ReLU with a learned slope for negative inputs, per channel or shared.

``y = max(x, 0) + a_c * min(x, 0)`` with ``c`` the channel (axis 1; the bottom
needs at least 2 axes). The slopes ``a`` are one parameter blob: shape (C), or
a scalar (shape ()) with ``prelu_param.channel_shared``; filled by
``prelu_param.filler``, or the constant 0.25 when none is given (Caffe's default).

Gradients: ``dx = dy * (1 if x > 0 else a_c)``;
``da_c += sum over channel c of dy * x * [x <= 0]`` (over everything when shared).
In place, the input is kept for Backward.

Deviation from (some builds of) Caffe: the slope diff accumulates as every
parameter diff does; BVLC's older CPU code zeroed it first.

CPU: ReLU's one-pass numba kernels over rows (one channel of one image each), run on
minicaffe's threads (:mod:`minicaffe.threads`; a small blob stays on one
thread). The slope gradient is summed per channel, each channel by one
thread in a fixed order (images, then positions, in float64), so it is the
same at any thread count.

GPU: one thread per element for Forward and for ``dx`` (the slope of the
element's channel, or the shared one); the slope gradient is the product
``dy * x * [x <= 0]`` on the device summed per channel (or over everything
when shared) by Bias's GEMV sums, accumulated into the slope diff. In place,
the input is kept in a device buffer.
"""

import numpy as np

from .. import gpu, threads
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..fillers import fill
from ..kernels import cpu_kernel
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register
from .bias import SUM_NEGATIVE_PRODUCT, channel_sums_gpu, copy_gpu, gpu_scratch, launch
from .relu import leaky_backward, leaky_forward


# Rows are (N*C, S) views: row r is channel r % channels of image r // channels.
# A shared slope is one channel (channels = 1).

@cpu_kernel(nogil=True)
def prelu_slope_gradient(x, dy, images, channels, sums, start, stop):
    """sums[c] = sum over images and positions of dy * x where x <= 0, channels [start, stop)."""
    for c in range(start, stop):
        total = 0.0
        for n in range(images):
            row, gradient = x[n * channels + c], dy[n * channels + c]
            for j in range(row.size):
                if row[j] <= 0:
                    total += gradient[j] * row[j]
        sums[c] = total


@gpu.jit
def _prelu_forward_gpu(x, y, slopes, channels, spatial, shared, zero):
    """y = x if x > 0 else slope * x (+0, as the CPU's sum: a zero slope never gives -0)."""
    i = cuda.grid(1)
    if i < y.size:
        slope = slopes[0] if shared else slopes[(i // spatial) % channels]
        value = x[i]
        y[i] = value if value > 0 else value * slope + zero


@gpu.jit
def _prelu_backward_gpu(x, dy, dx, slopes, channels, spatial, shared):
    """dx = dy * (1 if x > 0 else slope); dx may be dy."""
    i = cuda.grid(1)
    if i < dx.size:
        slope = slopes[0] if shared else slopes[(i // spatial) % channels]
        dx[i] = dy[i] if x[i] > 0 else dy[i] * slope


@register("PReLU")
class PReLULayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.prelu_param
        if bottom[0].ndim < 2:
            raise self.shape_error("PReLU needs a bottom with at least 2 axes (N x C x ...)",
                                   actual=bottom[0].shape)
        self.channel_shared = param.channel_shared
        self.channels = bottom[0].shape[1]
        self.blobs = [self.new_param_blob(() if self.channel_shared else (self.channels,))]
        filler = param.filler if param.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=0.25)
        fill(self.blobs[0], filler, self.name, "prelu_param.filler")
        self._saved_input = None

    def reshape(self, bottom, top):
        if bottom[0].ndim < 2 or (not self.channel_shared and bottom[0].shape[1] != self.channels):
            raise self.shape_error(f"the bottom must keep its {self.channels} channels (axis 1)",
                                   expected=(None, self.channels), actual=bottom[0].shape)
        self.view = (bottom[0].shape[0], bottom[0].shape[1], bottom[0].count_axes(2))
        top[0].reshape(bottom[0].shape)

    def _rows(self, array):
        return array.reshape(self.view[0] * self.view[1], self.view[2])

    def forward(self, bottom, top):
        x = self._rows(bottom[0].data)
        y = self._rows(top[0].data)
        keep = bottom[0] is top[0]
        if keep:
            if self._saved_input is None or self._saved_input.shape != x.shape:
                self._saved_input = np.empty_like(x)
            saved = self._saved_input
        else:
            saved = x
        slopes = self.blobs[0].data.reshape(-1)
        channels = slopes.size
        threads.parallel_for(x.shape[0], lambda start, stop: leaky_forward(x, y, keep, saved, keep, slopes,
                                                                           channels, start, stop), x.shape[1])

    def backward(self, top, propagate_down, bottom):
        x = self._saved_input if bottom[0] is top[0] else self._rows(bottom[0].data)
        dy = self._rows(top[0].diff)
        images, channels, spatial = self.view
        if self.param_propagate_down[0]:    # before dx: in place, dx overwrites dy
            sums = np.empty(channels, dtype=np.float64)
            threads.parallel_for(channels, lambda start, stop: prelu_slope_gradient(
                x, dy, images, channels, sums, start, stop), images * spatial)
            if self.channel_shared:
                self.blobs[0].diff[...] += self.dtype.type(sums.sum())
            else:
                self.blobs[0].diff[...] += sums.astype(self.dtype)
        if propagate_down[0]:
            dx = self._rows(bottom[0].diff)
            slopes = self.blobs[0].data.reshape(-1)
            in_place = bottom[0] is top[0]
            threads.parallel_for(dx.shape[0], lambda start, stop: leaky_backward(
                x, dy, dx, in_place, slopes, slopes.size, start, stop), dx.shape[1])

    def forward_gpu(self, bottom, top):
        count = bottom[0].count
        x = bottom[0].gpu_data
        if bottom[0] is top[0]:                # Backward needs x, which y overwrites
            saved = gpu_scratch(self, "saved input", count, bottom[0].dtype)
            copy_gpu(x, saved)
            x = saved
        self._gpu_input = x
        if count:
            launch(_prelu_forward_gpu, count)(x, top[0].mutable_gpu_data, self.blobs[0].gpu_data, int(self.view[1]),
                                              int(self.view[2]), bool(self.channel_shared), self.dtype.type(0))

    def backward_gpu(self, top, propagate_down, bottom):
        x = self._gpu_input if bottom[0] is top[0] else bottom[0].gpu_data
        dy = top[0].gpu_diff
        count = bottom[0].count
        if self.param_propagate_down[0]:    # before dx: in place, dx overwrites dy
            layout = (1, 1, count) if self.channel_shared else self.view
            channel_sums_gpu(self, dy, layout, self.blobs[0].mutable_gpu_diff, 1.0, x, SUM_NEGATIVE_PRODUCT)
        if propagate_down[0] and count:
            launch(_prelu_backward_gpu, count)(x, dy, bottom[0].mutable_gpu_diff, self.blobs[0].gpu_data,
                                               int(self.view[1]), int(self.view[2]), bool(self.channel_shared))
