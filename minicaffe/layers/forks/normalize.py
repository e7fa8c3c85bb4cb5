"""Normalize: ``y = s_c * x / sqrt(sum of x^2 over the group + eps)``, the group an image or a position.

From the SSD fork (weiliu89/caffe, branch ``ssd``), where it rescales
conv4_3's features (``across_spatial: false``, a learned scale per channel,
initialised to 20).

``norm_param``:

- ``across_spatial`` (default true): one norm per image, over all of C x H x W;
  false: one norm per image and spatial position, over the C channels.
- ``channel_shared`` (default true): one learned scale ``s`` (a blob of shape
  ()), else one per channel (shape (C)).
- ``scale_filler``: the scale's initial value; unset, the constant 1.
- ``eps`` (default 1e-10): added to the sum of squares, inside the square root,
  as the fork does: ``norm = sqrt(sum x^2 + eps)``.

The bottom has at least 2 axes, N x C x ...; the axes after C are the spatial
ones (the fork's height x width). Without ``channel_shared`` it must keep its
C channels after set-up.

Gradients, with ``n`` the group's norm, ``xh = x / n`` and sums over the group::

    dx_i = (s_i dy_i - xh_i * sum_j s_j dy_j xh_j) / n
    ds_c += sum over images and positions of dy * xh   (over everything when shared)

Deviations from the fork, whose Backward this corrects:

- With one scale per channel, the fork's bottom gradient is
  ``s_i (dy_i - xh_i sum_j dy_j xh_j) / n``: it scales the whole gradient by
  ``s_i`` instead of weighting each ``dy_j`` of the sum by its own ``s_j``. The
  two agree when the scales are all equal (the fork's tests fill them with one
  constant), and differ for trained per-channel scales (SSD's conv4_3_norm).
- The fork's scale gradient is ``sum(y * dy) / s``, NaN or infinite where the
  scale is 0; here it is the same sum computed from ``x / n``.
- In place (which the fork runs, but whose Backward there reads the
  overwritten bottom), the input is kept for Backward and the gradient is right.
- The per-image norms follow the batch size (the fork sizes them at set-up
  only, so a larger batch later overruns them with ``across_spatial``), and a
  bottom of more than 4 axes is accepted (the fork's legacy height and width
  accessors refuse it).

The fork's Forward, which this matches, computes the same thing as the formula
above up to rounding (it divides by the norm; here the input is multiplied by
the norm's reciprocal times the scale). Sums of squares are accumulated in
float64.

CPU: numba kernels, one image per work item with ``across_spatial`` (so a
batch of one runs on one thread) and one spatial position per item without;
the scale gradient is summed per channel, each channel by one thread in a
fixed order, so results do not depend on the thread count.

GPU: the same float64 sums and the same per-element formulas (so the
simulator gives the CPU's bits up to the order of the sums). Sums over a
position's channels are one thread per position; sums over a whole image
(``across_spatial``) and the scale gradient's per-channel sums are block
reductions in shared memory, one grid row per image or channel, added up with
float64 atomics. The norms stay on the device for Backward; in place the input
is kept in a device buffer.
"""

import math

import numpy as np
from numba import float64

from ... import gpu, gpu_blas, threads
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...fillers import fill
from ...kernels import cpu_kernel
from ...layer import Layer
from ...proto import caffe_pb2
from ...registry import register

# Arrays are (N, C, S) views, S the product of the spatial axes. ``norm`` is float64, (N, S) per
# position or (N, 1) across the image. Work items [start, stop) are images when ``across``, else
# flattened positions n * S + p, handled as runs of consecutive positions of one image so that the
# inner loops run over contiguous memory.


@cpu_kernel(nogil=True, inline="always")
def _forward_run(x, y, scale, norm, eps, across, n, p0, p1):
    channels = x.shape[1]
    width = p1 - p0
    sums = np.zeros(width, dtype=np.float64)
    for c in range(channels):
        row = x[n, c, p0:p1]
        for j in range(width):
            value = np.float64(row[j])
            sums[j] += value * value
    inverse = np.empty(width, dtype=x.dtype)
    if across:
        total = eps
        for j in range(width):
            total += sums[j]
        root = math.sqrt(total)
        norm[n, 0] = root
        inverse[:] = 1.0 / root
    else:
        for j in range(width):
            root = math.sqrt(sums[j] + eps)
            norm[n, p0 + j] = root
            inverse[j] = 1.0 / root
    for c in range(channels):
        s = scale[c]
        row = x[n, c, p0:p1]
        out = y[n, c, p0:p1]
        for j in range(width):
            out[j] = row[j] * (s * inverse[j])


@cpu_kernel(nogil=True, inline="always")
def _backward_run(x, dy, dx, scale, norm, across, n, p0, p1):
    channels = x.shape[1]
    width = p1 - p0
    dots = np.zeros(width, dtype=np.float64)          # sum over channels of s_c dy x
    for c in range(channels):
        s = np.float64(scale[c])
        row = x[n, c, p0:p1]
        gradient = dy[n, c, p0:p1]
        for j in range(width):
            dots[j] += s * np.float64(gradient[j]) * np.float64(row[j])
    coefficient = np.empty(width, dtype=x.dtype)      # dot / n^2
    inverse = np.empty(width, dtype=x.dtype)          # 1 / n
    if across:
        total = 0.0
        for j in range(width):
            total += dots[j]
        root = norm[n, 0]
        coefficient[:] = total / (root * root)
        inverse[:] = 1.0 / root
    else:
        for j in range(width):
            root = norm[n, p0 + j]
            coefficient[j] = dots[j] / (root * root)
            inverse[j] = 1.0 / root
    for c in range(channels):
        s = scale[c]
        row = x[n, c, p0:p1]
        gradient = dy[n, c, p0:p1]
        out = dx[n, c, p0:p1]
        for j in range(width):
            out[j] = (s * gradient[j] - row[j] * coefficient[j]) * inverse[j]


@cpu_kernel(nogil=True)
def normalize_forward(x, y, scale, norm, eps, across, start, stop):
    """y = scale_c * x / norm for work items [start, stop), storing each norm."""
    spatial = x.shape[2]
    if across:
        for n in range(start, stop):
            _forward_run(x, y, scale, norm, eps, True, n, 0, spatial)
        return
    n = start // spatial
    while n * spatial < stop:
        _forward_run(x, y, scale, norm, eps, False, n, max(start - n * spatial, 0), min(stop - n * spatial, spatial))
        n += 1


@cpu_kernel(nogil=True)
def normalize_backward(x, dy, dx, scale, norm, across, start, stop):
    """dx for work items [start, stop) (dx may be dy: each element is read before it is written)."""
    spatial = x.shape[2]
    if across:
        for n in range(start, stop):
            _backward_run(x, dy, dx, scale, norm, True, n, 0, spatial)
        return
    n = start // spatial
    while n * spatial < stop:
        _backward_run(x, dy, dx, scale, norm, False, n, max(start - n * spatial, 0), min(stop - n * spatial, spatial))
        n += 1


@cpu_kernel(nogil=True)
def normalize_scale_gradient(x, dy, norm, across, sums, start, stop):
    """sums[c] = sum over images and positions of dy * x / norm, channels [start, stop)."""
    images = x.shape[0]
    for c in range(start, stop):
        total = 0.0
        for n in range(images):
            row = x[n, c]
            gradient = dy[n, c]
            if across:
                part = 0.0
                for j in range(row.size):
                    part += np.float64(gradient[j]) * np.float64(row[j])
                total += part / norm[n, 0]
            else:
                roots = norm[n]
                for j in range(row.size):
                    total += np.float64(gradient[j]) * np.float64(row[j]) / roots[j]
        sums[c] = total


# ---------------------------------------------------------------- GPU kernels
# Flat (N, C, S) arrays; a group is an image (across) or a position n * S + p; norm and the float64 sums
# are per group. Scales: scale[c], or scale[0] when shared.

_THREADS = gpu.THREADS      # a global of this module: the shared array's size must be a constant
_SQUARES, _DOTS, _SCALE_GRADIENT = 0, 1, 2


@gpu.device
def _group_of(i, channels, spatial, across):
    if across:
        return i // (channels * spatial)
    return (i // (channels * spatial)) * spatial + i % spatial


@gpu.jit
def _normalize_block_sums_gpu(x, dy, scale, shared, norm, across, kind, channels, spatial, sums):
    """sums[blockIdx.y] += this block's share of: an image's x^2 (kind 0) or s_c dy x (1), over C x S;
    or a channel's dy x / norm (2), over N x S. A shared-memory tree, then one float64 atomic."""
    partial = cuda.shared.array(_THREADS, dtype=np.float64)
    thread = cuda.threadIdx.x
    group = cuda.blockIdx.y
    e = cuda.grid(1)
    value = 0.0
    if kind == 2:
        if e < x.size // channels:
            n = e // spatial
            i = (n * channels + group) * spatial + e % spatial
            value = float64(dy[i]) * float64(x[i]) / norm[_group_of(i, channels, spatial, across)]
    elif e < channels * spatial:
        i = group * channels * spatial + e
        if kind == 0:
            value = float64(x[i]) * float64(x[i])
        else:
            value = float64(scale[0 if shared else e // spatial]) * float64(dy[i]) * float64(x[i])
    partial[thread] = value
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2       # a power of two, at most _THREADS
    while stride > 0:
        if thread < stride:
            partial[thread] += partial[thread + stride]
        cuda.syncthreads()
        stride //= 2
    if thread == 0:
        cuda.atomic.add(sums, group, partial[0])


@gpu.jit
def _normalize_position_sums_gpu(x, dy, scale, shared, kind, channels, spatial, eps, out):
    """Per position n * S + p: out = sqrt(sum_c x^2 + eps) (kind 0), or sum_c s_c dy x (kind 1)."""
    g = cuda.grid(1)
    if g < out.size:
        base = (g // spatial) * channels * spatial + g % spatial
        total = 0.0
        for c in range(channels):
            i = base + c * spatial
            if kind == 0:
                total += float64(x[i]) * float64(x[i])
            else:
                total += float64(scale[0 if shared else c]) * float64(dy[i]) * float64(x[i])
        if kind == 0:
            out[g] = math.sqrt(total + eps)
        else:
            out[g] = total


@gpu.jit
def _normalize_roots_gpu(sums, eps, norm):
    g = cuda.grid(1)
    if g < norm.size:
        norm[g] = math.sqrt(sums[g] + eps)


@gpu.jit
def _normalize_forward_gpu(x, y, scale, shared, norm, across, channels, spatial):
    i = cuda.grid(1)
    if i < y.size:
        inverse = x.dtype.type(1.0 / norm[_group_of(i, channels, spatial, across)])
        y[i] = x[i] * (scale[0 if shared else (i // spatial) % channels] * inverse)


@gpu.jit
def _normalize_backward_gpu(x, dy, dx, scale, shared, norm, dots, across, channels, spatial):
    """dx = (s dy - x dot / n^2) / n (dx may be dy: each element is read before it is written)."""
    i = cuda.grid(1)
    if i < dx.size:
        real = x.dtype.type
        g = _group_of(i, channels, spatial, across)
        root = norm[g]
        coefficient = real(dots[g] / (root * root))
        inverse = real(1.0 / root)
        s = scale[0 if shared else (i // spatial) % channels]
        dx[i] = (s * dy[i] - x[i] * coefficient) * inverse


@gpu.jit
def _normalize_scale_diff_gpu(sums, diff, shared):
    """diff[c] += sums[c], or with a shared scale diff[0] += the sum over channels (one thread)."""
    c = cuda.grid(1)
    if shared:
        if c == 0:
            total = 0.0
            for k in range(sums.size):
                total += sums[k]
            diff[0] += diff.dtype.type(total)
    elif c < sums.size:
        diff[c] += diff.dtype.type(sums[c])


@register("Normalize")
class NormalizeLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1
    fork = "SSD (weiliu89/caffe, branch ssd)"

    def setup(self, bottom, top):
        if bottom[0].ndim < 2:
            raise self.shape_error("Normalize needs a bottom with at least 2 axes (N x C x ...)",
                                   actual=bottom[0].shape)
        param = self.layer_param.norm_param
        self.across_spatial = param.across_spatial
        self.channel_shared = param.channel_shared
        self.eps = float(np.float32(param.eps))
        self.channels = bottom[0].shape[1]
        self.blobs = [self.new_param_blob(() if self.channel_shared else (self.channels,))]
        filler = (param.scale_filler if param.HasField("scale_filler")
                  else caffe_pb2.FillerParameter(type="constant", value=1.0))
        fill(self.blobs[0], filler, self.name, "norm_param.scale_filler")
        self._saved_input = None
        self._norm = None

    def reshape(self, bottom, top):
        source = bottom[0]
        if source.ndim < 2 or (not self.channel_shared and source.shape[1] != self.channels):
            raise self.shape_error(f"the bottom must have at least 2 axes and keep its {self.channels} channels "
                                   "(axis 1), one scale each", expected=(None, self.channels), actual=source.shape)
        self.view = (source.shape[0], source.shape[1], source.count_axes(2))
        self.norm_shape = (self.view[0], 1 if self.across_spatial else self.view[2])
        top[0].reshape(source.shape)

    def _scales(self):
        """The scale per channel, as a (C,) array of the layer's dtype."""
        scale = self.blobs[0].data.reshape(-1)
        if self.channel_shared:
            return np.full(self.view[1], scale[0], dtype=self.dtype)
        return scale

    def _work(self):
        """(work items, elements per item) of the kernels: images across, else positions."""
        images, channels, spatial = self.view
        return (images, channels * spatial) if self.across_spatial else (images * spatial, channels)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.view)
        y = top[0].data.reshape(self.view)
        if bottom[0] is top[0]:
            if self._saved_input is None or self._saved_input.shape != x.shape:
                self._saved_input = np.empty_like(x)
            self._saved_input[...] = x
        if self._norm is None or self._norm.shape != self.norm_shape:
            self._norm = np.empty(self.norm_shape, dtype=np.float64)
        scale, norm = self._scales(), self._norm
        eps, across = self.eps, self.across_spatial
        items, size = self._work()
        threads.parallel_for(items, lambda start, stop: normalize_forward(x, y, scale, norm, eps, across,
                                                                          start, stop), size)

    def backward(self, top, propagate_down, bottom):
        x = self._saved_input if bottom[0] is top[0] else bottom[0].data.reshape(self.view)
        dy = top[0].diff.reshape(self.view)
        norm, across = self._norm, self.across_spatial
        images, channels, spatial = self.view
        if self.param_propagate_down[0]:    # before dx: in place, dx overwrites dy
            sums = np.empty(channels, dtype=np.float64)
            threads.parallel_for(channels, lambda start, stop: normalize_scale_gradient(
                x, dy, norm, across, sums, start, stop), images * spatial)
            if self.channel_shared:
                self.blobs[0].diff[...] += self.dtype.type(sums.sum())
            else:
                self.blobs[0].diff[...] += sums.astype(self.dtype)
        if propagate_down[0]:
            dx = bottom[0].diff.reshape(self.view)
            scale = self._scales()
            items, size = self._work()
            threads.parallel_for(items, lambda start, stop: normalize_backward(x, dy, dx, scale, norm, across,
                                                                               start, stop), size)

    # ------------------------------------------------------------ GPU
    def _gpu_buffer(self, name, size, dtype):
        """A device buffer kept on the layer, reallocated only when its size or dtype changes."""
        buffer = getattr(self, name, None)
        if buffer is None or buffer.size != size or buffer.dtype != np.dtype(dtype):
            buffer = gpu.device_empty(size, dtype)
            setattr(self, name, buffer)
        return buffer

    def _group_sums_gpu(self, x, dy, scale, kind, groups, per_group, sums):
        gpu_blas.fill(sums, 0)
        if per_group:
            # Under the simulator a block of gpu.SIMULATOR_THREADS (each thread is a Python thread).
            threads = gpu.SIMULATOR_THREADS if gpu.simulated() else gpu.THREADS
            _normalize_block_sums_gpu[(-(-per_group // threads), groups), threads](
                x, dy, scale, self.channel_shared, self._norm_gpu, self.across_spatial, int(kind),
                int(self.view[1]), int(self.view[2]), sums)

    def forward_gpu(self, bottom, top):
        images, channels, spatial = self.view
        count = bottom[0].count
        x = bottom[0].gpu_data
        if bottom[0] is top[0]:
            x = self._gpu_buffer("_saved_input_gpu", count, bottom[0].dtype)
            gpu_blas.copy(bottom[0].gpu_data, x)
        groups = self.norm_shape[0] * self.norm_shape[1]
        norm = self._norm_gpu = self._gpu_buffer("_norm_gpu_buffer", groups, np.float64)
        if not groups:
            return
        scale = self.blobs[0].gpu_data
        if self.across_spatial:
            sums = self._gpu_buffer("_sums_gpu", groups, np.float64)
            self._group_sums_gpu(x, x, scale, _SQUARES, groups, channels * spatial, sums)
            _normalize_roots_gpu[gpu.blocks_for(groups), gpu.THREADS](sums, float(self.eps), norm)
        else:
            _normalize_position_sums_gpu[gpu.blocks_for(groups), gpu.THREADS](
                x, x, scale, self.channel_shared, int(_SQUARES), int(channels), int(spatial), float(self.eps), norm)
        if count:
            _normalize_forward_gpu[gpu.blocks_for(count), gpu.THREADS](
                x, top[0].mutable_gpu_data, scale, self.channel_shared, norm, self.across_spatial, int(channels),
                int(spatial))

    def backward_gpu(self, top, propagate_down, bottom):
        images, channels, spatial = self.view
        count = bottom[0].count
        if not count:
            return
        x = self._saved_input_gpu if bottom[0] is top[0] else bottom[0].gpu_data
        dy = top[0].gpu_diff
        scale = self.blobs[0].gpu_data
        norm, groups = self._norm_gpu, self._norm_gpu.size
        if self.param_propagate_down[0]:    # before dx: in place, dx overwrites dy
            sums = self._gpu_buffer("_scale_sums_gpu", channels, np.float64)
            self._group_sums_gpu(x, dy, scale, _SCALE_GRADIENT, channels, images * spatial, sums)
            _normalize_scale_diff_gpu[gpu.blocks_for(channels), gpu.THREADS](
                sums, self.blobs[0].mutable_gpu_diff, self.channel_shared)
        if propagate_down[0]:
            dots = self._gpu_buffer("_dots_gpu", groups, np.float64)
            if self.across_spatial:
                self._group_sums_gpu(x, dy, scale, _DOTS, groups, channels * spatial, dots)
            else:
                _normalize_position_sums_gpu[gpu.blocks_for(groups), gpu.THREADS](
                    x, dy, scale, self.channel_shared, int(_DOTS), int(channels), int(spatial), float(self.eps), dots)
            _normalize_backward_gpu[gpu.blocks_for(count), gpu.THREADS](
                x, dy, bottom[0].mutable_gpu_diff, scale, self.channel_shared, norm, dots, self.across_spatial,
                int(channels), int(spatial))
