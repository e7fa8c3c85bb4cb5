"""Interp: y = bilinear resize of x (cropped by -pad_beg/-pad_end) to OH x OW, corners on corners.

From DeepLab-v2's Caffe (deeplab-public-ver2; George Papandreou's
``caffe_cpu_interp2``), also the upsampling of PSPNet. ``x`` (N, C, H, W) is
first cropped: ``pad_beg`` and ``pad_end`` must be 0 or negative, and rows and
columns ``[-pad_beg, H + pad_end)`` are kept (the same on both axes), an
``Hi x Wi = (H + pad_beg + pad_end) x (W + pad_beg + pad_end)`` input. The
output size, first rule that applies:

1. a second bottom (a later variant of the layer, in PSPNet-era forks): its
   height and width (it must have bottom 0's num, and no size parameter may
   be given with it);
2. ``shrink_factor`` s alone: ``OH = (Hi - 1) / s + 1`` (integer division);
3. ``zoom_factor`` z alone: ``OH = Hi + (Hi - 1)(z - 1)``;
4. ``height`` and ``width``: those;
5. both factors: shrink, then zoom;

likewise for ``OW``. Factors must be at least 1; anything else is refused.

The resize maps the first and last cells of the input onto those of the
output: ``r = (Hi - 1) / (OH - 1)`` (0 when OH is 1), output row ``i`` reads
input row ``h = trunc(r i)`` and the next one (the same one on the last row)
with weights ``1 - l`` and ``l = r i - h``; likewise for columns, and
``y = (1 - lh)((1 - lw) x00 + lw x01) + lh((1 - lw) x10 + lw x11)``. As in the
fork, ``r``, ``r i`` and ``l`` are float32 arithmetic whatever the blob's
precision; when ``OH x OW == Hi x Wi`` the crop is copied. Backward is the
adjoint: each ``dy`` goes to the four cells with the products of the weights
(``(1 - lh)(1 - lw) dy`` ...), accumulated. The second bottom takes no
gradient.

CPU: numba kernels over chunks of the N*C planes on minicaffe's threads; the
row and column tables (index, neighbour step, weights) are worked out once per
shape.

GPU: the same tables, copied to the device once per shape; one thread per top
element computes the same weighted sum in the same order. Backward clears the
bottom's diff and adds each top element's four products with atomics, as
DeepLab's ``caffe_gpu_interp2_backward`` does (so the order of the additions
into one cell, and the last bits of the sum, may differ from the CPU's).
"""

from __future__ import annotations

import numpy as np

from ... import gpu, gpu_blas, kernels, threads
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...errors import GraphError
from ...layer import Layer
from ...registry import register


# ====================================================================== tables

def axis_table(size_in, size_out, dtype):
    """(index, step, near, far) per output position along one axis, as the fork computes them.

    ``index`` is the first input cell, ``step`` 1 or 0 (to the next cell, 0 at the last),
    ``far`` the next cell's weight ``l`` and ``near`` ``1 - l``, in ``dtype``.
    """
    ratio = (np.float32(size_in - 1) / np.float32(size_out - 1)) if size_out > 1 else np.float32(0.0)
    real = np.float32(ratio) * np.arange(size_out, dtype=np.float32)
    index = real.astype(np.int64)                  # trunc: real >= 0
    step = (index < size_in - 1).astype(np.int64)
    far = (real - index.astype(np.float32)).astype(dtype)
    near = (dtype.type(1.0) - far).astype(dtype)
    return index, step, near, far


# ====================================================================== kernels
# x, bottom_diff: (planes, H, W); top, top_diff: (planes, OH, OW); (y0, x0) = the crop's corner.
# fastmath off: the sums run in the fork's order.

@kernels.cpu_kernel(nogil=True, fastmath=False)
def interp_forward(x, top, y0, x0, rows, row_step, row_near, row_far, cols, col_step, col_near, col_far):
    planes, out_h, out_w = top.shape
    for p in range(planes):
        plane = x[p]
        out = top[p]
        for i in range(out_h):
            h = y0 + rows[i]
            h_next = h + row_step[i]
            a, b = row_near[i], row_far[i]
            for j in range(out_w):
                w = x0 + cols[j]
                w_next = w + col_step[j]
                c, d = col_near[j], col_far[j]
                out[i, j] = (a * (c * plane[h, w] + d * plane[h, w_next])
                             + b * (c * plane[h_next, w] + d * plane[h_next, w_next]))


@kernels.cpu_kernel(nogil=True, fastmath=False)
def interp_backward(top_diff, bottom_diff, y0, x0, rows, row_step, row_near, row_far,
                    cols, col_step, col_near, col_far):
    planes, out_h, out_w = top_diff.shape
    for p in range(planes):
        plane = bottom_diff[p]
        gradient = top_diff[p]
        for i in range(out_h):
            h = y0 + rows[i]
            h_next = h + row_step[i]
            a, b = row_near[i], row_far[i]
            for j in range(out_w):
                w = x0 + cols[j]
                w_next = w + col_step[j]
                c, d = col_near[j], col_far[j]
                g = gradient[i, j]
                plane[h, w] += a * c * g
                plane[h, w_next] += a * d * g
                plane[h_next, w] += b * c * g
                plane[h_next, w_next] += b * d * g


@kernels.cpu_kernel(nogil=True)
def crop_copy(x, top, y0, x0):
    planes, out_h, out_w = top.shape
    for p in range(planes):
        for i in range(out_h):
            for j in range(out_w):
                top[p, i, j] = x[p, y0 + i, x0 + j]


@kernels.cpu_kernel(nogil=True)
def crop_copy_backward(top_diff, bottom_diff, y0, x0):
    planes, out_h, out_w = top_diff.shape
    for p in range(planes):
        for i in range(out_h):
            for j in range(out_w):
                bottom_diff[p, y0 + i, x0 + j] += top_diff[p, i, j]


# ---------------------------------------------------------------- GPU kernels
# Flat arrays: x and bottom_diff are planes of height x width, top and top_diff planes of out_h x out_w.

@gpu.jit
def _interp_forward_gpu(x, top, height, width, out_h, out_w, y0, x0, rows, row_step, row_near, row_far,
                        cols, col_step, col_near, col_far):
    k = cuda.grid(1)
    if k < top.size:
        j = k % out_w
        i = (k // out_w) % out_h
        base = (k // (out_w * out_h)) * height * width
        h = y0 + rows[i]
        h_next = h + row_step[i]
        w = x0 + cols[j]
        w_next = w + col_step[j]
        a, b = row_near[i], row_far[i]
        c, d = col_near[j], col_far[j]
        top[k] = (a * (c * x[base + h * width + w] + d * x[base + h * width + w_next])
                  + b * (c * x[base + h_next * width + w] + d * x[base + h_next * width + w_next]))


@gpu.jit
def _interp_backward_gpu(top_diff, bottom_diff, height, width, out_h, out_w, y0, x0, rows, row_step, row_near,
                         row_far, cols, col_step, col_near, col_far):
    k = cuda.grid(1)
    if k < top_diff.size:
        j = k % out_w
        i = (k // out_w) % out_h
        base = (k // (out_w * out_h)) * height * width
        h = y0 + rows[i]
        h_next = h + row_step[i]
        w = x0 + cols[j]
        w_next = w + col_step[j]
        a, b = row_near[i], row_far[i]
        c, d = col_near[j], col_far[j]
        g = top_diff[k]
        cuda.atomic.add(bottom_diff, base + h * width + w, a * c * g)
        cuda.atomic.add(bottom_diff, base + h * width + w_next, a * d * g)
        cuda.atomic.add(bottom_diff, base + h_next * width + w, b * c * g)
        cuda.atomic.add(bottom_diff, base + h_next * width + w_next, b * d * g)


@gpu.jit
def _crop_gpu(source, target, height, width, out_h, out_w, y0, x0, backward):
    """Forward: top = the crop of x; Backward: the crop of bottom_diff = top_diff (the rest cleared before)."""
    k = cuda.grid(1)
    count = target.size if backward == 0 else source.size
    if k < count:
        j = k % out_w
        i = (k // out_w) % out_h
        inner = (k // (out_w * out_h)) * height * width + (y0 + i) * width + x0 + j
        if backward == 0:
            target[k] = source[inner]
        else:
            target[inner] = source[k]


# ====================================================================== layer

@register("Interp")
class InterpLayer(Layer):
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1
    never_backward_bottoms = (1,)
    fork = "DeepLab-v2 (deeplab-public-ver2)"

    def setup(self, bottom, top):
        param = self.layer_param.interp_param
        self.pad_beg, self.pad_end = int(param.pad_beg), int(param.pad_end)
        if self.pad_beg > 0 or self.pad_end > 0:
            raise GraphError(f"interp_param: pad_beg and pad_end crop and must be 0 or negative, got "
                             f"{self.pad_beg} and {self.pad_end}", layer=self.name)
        has = param.HasField
        self.shrink = int(param.shrink_factor) if has("shrink_factor") else None
        self.zoom = int(param.zoom_factor) if has("zoom_factor") else None
        self.fixed = (int(param.height), int(param.width)) if has("height") and has("width") else None
        if len(bottom) > 1:
            given = [name for name in ("shrink_factor", "zoom_factor", "height", "width") if has(name)]
            if given:
                raise GraphError(f"Interp takes its output size from bottom 1; {', '.join(given)} cannot be given "
                                 "too (ambiguous)", layer=self.name)
        elif self.shrink is None and self.zoom is None and self.fixed is None:
            raise GraphError("interp_param: give zoom_factor, shrink_factor (or both), height and width, or a "
                             "second bottom to take the size from", layer=self.name)
        for name, factor in (("shrink_factor", self.shrink), ("zoom_factor", self.zoom)):
            if factor is not None and factor < 1:
                raise GraphError(f"interp_param: {name} must be at least 1, got {factor}", layer=self.name)
        self._tables = None

    def output_size(self, bottom, height_in, width_in):
        if len(bottom) > 1:
            return bottom[1].shape[2], bottom[1].shape[3]
        if self.shrink is not None and self.zoom is None:
            return (height_in - 1) // self.shrink + 1, (width_in - 1) // self.shrink + 1
        if self.zoom is not None and self.shrink is None:
            return height_in + (height_in - 1) * (self.zoom - 1), width_in + (width_in - 1) * (self.zoom - 1)
        if self.fixed is not None:
            return self.fixed
        height = (height_in - 1) // self.shrink + 1
        width = (width_in - 1) // self.shrink + 1
        return height + (height - 1) * (self.zoom - 1), width + (width - 1) * (self.zoom - 1)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.shape_error("Interp takes a 4-D bottom (num, channels, height, width)",
                                   expected=("N", "C", "H", "W"), actual=shape)
        if len(bottom) > 1:
            other = bottom[1].shape
            if len(other) != 4 or other[0] != shape[0]:
                raise self.shape_error("Interp's bottom 1 (the size to match) must be 4-D with bottom 0's num",
                                       expected=(shape[0], "C", "OH", "OW"), actual=other)
        if top[0] is bottom[0]:
            raise GraphError("Interp does not allow in-place computation", layer=self.name)
        crop = self.pad_beg + self.pad_end
        height_in, width_in = shape[2] + crop, shape[3] + crop
        if height_in <= 0 or width_in <= 0:
            raise self.shape_error(f"pad_beg {self.pad_beg} and pad_end {self.pad_end} crop the whole bottom",
                                   expected=("N", "C", 1 - crop, 1 - crop), actual=shape)
        height_out, width_out = self.output_size(bottom, height_in, width_in)
        if height_out <= 0 or width_out <= 0:
            raise self.shape_error(f"the output size {height_out}x{width_out} must be positive",
                                   actual=shape[:2] + (height_out, width_out))
        self.size_in = (height_in, width_in)
        top[0].reshape(shape[:2] + (height_out, width_out))
        key = (height_in, width_in, height_out, width_out)
        if self._tables is None or self._tables[0] != key:
            if (height_in, width_in) == (height_out, width_out):
                tables = None
            else:
                tables = axis_table(height_in, height_out, self.dtype) + axis_table(width_in, width_out, self.dtype)
            self._tables = (key, tables)

    def _planes(self, array):
        n, c, h, w = array.shape
        return array.reshape(n * c, h, w)

    def forward(self, bottom, top):
        x = self._planes(bottom[0].data)
        out = self._planes(top[0].data)
        offset = -self.pad_beg
        tables = self._tables[1]
        if tables is None:
            body = lambda a, b: crop_copy(x[a:b], out[a:b], offset, offset)  # noqa: E731
        else:
            body = lambda a, b: interp_forward(x[a:b], out[a:b], offset, offset, *tables)  # noqa: E731
        threads.parallel_for(out.shape[0], body, out.shape[1] * out.shape[2])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = self._planes(bottom[0].diff)
        diff[...] = 0
        top_diff = self._planes(top[0].diff)
        offset = -self.pad_beg
        tables = self._tables[1]
        if tables is None:
            body = lambda a, b: crop_copy_backward(top_diff[a:b], diff[a:b], offset, offset)  # noqa: E731
        else:
            body = lambda a, b: interp_backward(top_diff[a:b], diff[a:b], offset, offset, *tables)  # noqa: E731
        threads.parallel_for(top_diff.shape[0], body, top_diff.shape[1] * top_diff.shape[2])

    # ------------------------------------------------------------ GPU
    def _gpu_tables(self):
        """The row and column tables on the device, copied once per shape (None: the crop is copied)."""
        cached = getattr(self, "_gpu_cache", None)
        if cached is None or cached[0] is not self._tables:
            tables = self._tables[1]
            cached = self._gpu_cache = (self._tables, None if tables is None else
                                        tuple(gpu.to_device(table) for table in tables))
        return cached[1]

    def _geometry(self, bottom, top):
        shape, out = bottom[0].shape, top[0].shape
        offset = -self.pad_beg
        return int(shape[2]), int(shape[3]), int(out[2]), int(out[3]), int(offset), int(offset)

    def forward_gpu(self, bottom, top):
        count = top[0].count
        if not count:
            return
        tables = self._gpu_tables()
        geometry = self._geometry(bottom, top)
        launch = (gpu.blocks_for(count), gpu.THREADS)
        if tables is None:
            _crop_gpu[launch](bottom[0].gpu_data, top[0].mutable_gpu_data, *geometry, 0)
        else:
            _interp_forward_gpu[launch](bottom[0].gpu_data, top[0].mutable_gpu_data, *geometry, *tables)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].mutable_gpu_diff
        gpu_blas.fill(diff, 0)
        count = top[0].count
        if not count:
            return
        tables = self._gpu_tables()
        geometry = self._geometry(bottom, top)
        launch = (gpu.blocks_for(count), gpu.THREADS)
        if tables is None:
            _crop_gpu[launch](top[0].gpu_diff, diff, *geometry, 1)
        else:
            _interp_backward_gpu[launch](top[0].gpu_diff, diff, *geometry, *tables)
