"""What Convolution and Deconvolution share (Caffe's BaseConvolutionLayer), and how each picks its path.

Parameters (``convolution_param``): ``num_output``, ``kernel_size`` (or
``kernel_h``/``kernel_w``), ``stride``, ``pad``, ``dilation`` (each once or once
per spatial axis), ``group``, ``bias_term``, ``axis`` (the channel axis; the
axes before it are the batch, those after it spatial, any number of them),
``force_nd_im2col``, ``weight_filler``, ``bias_filler``.

Both layers are computed as a convolution from a *conv input* (``Cin``
channels) to a *conv output* (``Cout`` channels): Convolution's bottom is the
conv input, Deconvolution's bottom the conv output. The weight blob is
``(Cout, Cin / group, *kernel)``, which is ``(num_output, channels / group, ...)``
for Convolution and ``(channels, num_output / group, ...)`` for Deconvolution,
as in Caffe. Three operations, on whole flat blob arrays (every image):

- apply: conv output = the convolution of the conv input (+ bias per output
  channel): Convolution's forward, Deconvolution's bottom gradient;
- transpose: conv input = the transposed convolution of the conv output:
  Convolution's bottom gradient, Deconvolution's forward (its bias added after);
- weight gradient: ``dW[m, c, k] += sum over images and locations o of
  Y[m, o] X[c, input of o at tap k]`` from a conv output ``Y`` and conv input
  ``X`` (Convolution: top diff and bottom data; Deconvolution: bottom data and
  top diff), and the bias gradient as the channel sums of ``Y``.

Paths. Each layer computes these operations through one of three paths, one
module each, all of them :class:`ConvPath` subclasses:

- ``"1x1"`` (:mod:`.conv_1x1`): 1x1 kernel, stride 1, no padding (any group,
  dilation or number of spatial axes): matrix products on the blob as it is,
  no im2row copy; taken wherever it fits but for 1x1 depthwise layers;
- ``"direct"`` (:mod:`.conv_direct`): numba loops over planes, no patches and
  no BLAS, for one or two spatial axes; taken for depthwise convolutions and
  others with few channels per group (:meth:`.DirectPath.wins`, measured);
- ``"im2row"`` (:mod:`.conv_im2row`): patches in a matrix, then BLAS
  products; everything else.

The choice is made in :meth:`BaseConvolution.reshape`, which the layer runs
only when a shape changed, so an unchanged net pays nothing for it: the first
of the layer's ``paths`` (in that order) whose ``fits(layer)`` (it can compute
the geometry) and ``wins(layer)`` (it is the faster there) hold.
``layer.conv_path`` names the path taken (``layer.path`` is the path object),
and ``minicaffe time`` prints it after each convolution layer's two lines.
To force one (tests, benchmarks), set the environment variable
``MINICAFFE_CONV_PATH`` (read at each reshape) or the attribute
``force_path`` (on :class:`BaseConvolution` for every layer, on a layer
class, or on one layer before its set-up; it takes precedence over the
variable) to ``"im2row"``, ``"direct"`` or ``"1x1"``: that path is used
wherever it fits, im2row elsewhere; ``"auto"`` (or unset) chooses by shape.
Every path gives the same numbers up to float rounding.

Threads. Two functions here run all of the paths' heavy work, so the thread
budget is applied in one place (:mod:`minicaffe.threads`): :func:`_product`
does every matrix product (``threads.matmul``: big products cut into blocks
that the pool's threads take one at a time, BLAS itself on one thread), and
:func:`_tasks` runs every direct kernel, which takes a range of independent
tasks (planes) and releases the GIL, so ``threads.parallel_for`` splits its
range across the pool with bit-identical results. The direct kernels are not
``parallel=True``: compiled so they took 2.3 s each from a cold cache instead
of 0.8 s, and with numba's OpenMP layer every call waited 4-8 ms for its
second thread whenever another process held a core. The im2row path's own
numba kernels (im2row, row2im, the transposes) still run on the calling
thread.

GPU: in GPU mode the layers run :class:`GpuConvPath` subclasses instead, on
the blobs' device arrays, chosen the same way (:meth:`BaseConvolution.gpu_conv_path`,
from the layer's ``gpu_paths``; ``force_path`` and ``MINICAFFE_CONV_PATH``
name them alike): ``"direct"`` (:mod:`.conv_direct`: one thread per output
or input element, for depthwise layers), ``"1x1"`` (:mod:`.conv_1x1`: one
device GEMM per image and group on the blob as it is, for batches of one or
two images) and ``"im2row"``
(:mod:`.conv_im2row`: Caffe's im2col + GEMM, a chunk of images per product).
The kernels here move a conv output between the blob's (image, channel,
location) order and the products' (channel, image and location) order, one
thread per element, adding the bias on the way; the bias gradient (channel
sums) is two GEMVs with a vector of ones, as Caffe's ``backward_gpu_bias``,
so the sums go through cuBLAS rather than a reduction kernel. Device work
buffers are kept on the layer and reallocated only when a shape grows.
"""

from __future__ import annotations

import abc
import os

import numpy as np

from .. import gpu, gpu_blas, threads
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..fillers import fill
from ..kernels import cpu_kernel
from ..layer import Layer
from .im2col import ConvGeometry, ConvParamError, conv_output_dims, parse_spatial_params

_U = np.uint64


def _product(a, b, out=None):
    """``a @ b`` into ``out`` (numpy.matmul's semantics, for 2-D ``(M, K) @ (K, N)`` and stacked
    ``(G, M, K) @ (G, K, N)``, either side possibly 2-D and shared by every group; ``out`` never overlaps
    ``a`` or ``b``); returns ``out``. Every product of the convolution paths goes through here."""
    return threads.matmul(a, b, out)


def _tasks(kernel, count, work, *args):
    """``kernel(first, stop, *args)`` over the tasks ``[0, count)``: every direct kernel runs through here.
    A task does about ``work`` multiply-adds and writes only its own outputs, in a fixed order, so the range
    may be split into chunks on any threads (the kernels release the GIL) with bit-identical results."""
    threads.parallel_for(count, lambda first, stop: kernel(first, stop, *args), work)


@cpu_kernel
def _channel_sums(data, channels, images, locations, sums):
    """sums[c] += the sum of data[n, c, p] over n and p."""
    for n in range(images):
        for c in range(channels):
            source = (n * channels + c) * locations
            total = data[_U(source)] * 0
            for p in range(locations):
                total += data[_U(source + p)]
            sums[c] += total


@cpu_kernel
def _scale_and_shift_channels(data, channels, images, locations, scale, shift):
    """data[n, c, p] = data[n, c, p] * scale[c] + shift[c]."""
    for n in range(images):
        for c in range(channels):
            target = (n * channels + c) * locations
            factor = scale[c]
            value = shift[c]
            for p in range(locations):
                data[_U(target + p)] = data[_U(target + p)] * factor + value


@cpu_kernel
def _add_channel_bias(data, channels, images, locations, bias):
    """data[n, c, p] += bias[c]."""
    for n in range(images):
        for c in range(channels):
            target = (n * channels + c) * locations
            value = bias[c]
            for p in range(locations):
                data[_U(target + p)] += value


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _channels_to_images_gpu(product, channels, images, locations, bias, add_bias, out):
    """out[n, c, p] = product[c, n * locations + p] (+ bias[c])."""
    i = cuda.grid(1)
    if i < channels * images * locations:
        p = i % locations
        rest = i // locations
        c = rest % channels
        n = rest // channels
        value = product[(c * images + n) * locations + p]
        if add_bias:
            value += bias[c]
        out[i] = value


@gpu.jit
def _images_to_channels_gpu(data, channels, images, locations, out):
    """out[c, n * locations + p] = data[n, c, p]."""
    i = cuda.grid(1)
    if i < channels * images * locations:
        p = i % locations
        rest = i // locations
        c = rest % channels
        n = rest // channels
        out[(c * images + n) * locations + p] = data[i]


@gpu.jit
def _add_channel_bias_gpu(data, channels, locations, bias):
    """data[n, c, p] += bias[c]."""
    i = cuda.grid(1)
    if i < data.size:
        data[i] += bias[(i // locations) % channels]


def _launch(kernel, count, *arguments):
    """One thread per element of ``count`` (nothing for none)."""
    if count:
        kernel[gpu.blocks_for(count), gpu.THREADS](*arguments)


class ConvPath(abc.ABC):
    """One way to compute a layer's three operations; made by the layer's reshape for its current shapes.

    A path declares ``name``, ``fits(layer)`` (it can compute this geometry) and
    ``wins(layer)`` (the automatic choice takes it; only asked where it fits), and
    implements :meth:`apply`, :meth:`transpose` and :meth:`weight_gradient` on flat
    arrays of all the layer's images. Each layer's backward is a composition of
    them (:meth:`backward`, :meth:`backward_transposed`), which a path may
    override to share work between the two gradients. Buffers live on the layer
    (``layer._buffer``), so a new path after a reshape reuses them.
    """

    name = ""

    def __init__(self, layer):
        self.layer = layer

    @abc.abstractmethod
    def apply(self, conv_input, conv_output, bias, scale=None):
        """conv_output = the convolution of conv_input (+ bias, or None); with ``scale`` (one value per
        output channel, Convolution's folded BatchNorm/Scale: see :mod:`minicaffe.fold`),
        ``scale * convolution + bias``."""

    @abc.abstractmethod
    def transpose(self, conv_output, conv_input):
        """conv_input = the transposed convolution of conv_output."""

    def weight_gradient(self, output_diff, conv_input, weight_diff, bias_diff):
        """weight_diff (the weight blob's diff) += the weight gradient, bias_diff += the channel sums of
        output_diff; either may be None (not wanted). A path that computes the gradients together
        overrides :meth:`backward` and :meth:`backward_transposed` instead."""
        raise TypeError(f"{type(self).__name__} defines neither weight_gradient nor both backward methods")

    def backward(self, output_diff, conv_input, input_diff, weight_diff, bias_diff):
        """Convolution's gradients for one bottom; input_diff, weight_diff and bias_diff are None where not
        wanted."""
        self.weight_gradient(output_diff, conv_input, weight_diff, bias_diff)
        if input_diff is not None:
            self.transpose(output_diff, input_diff)

    def backward_transposed(self, input_diff, conv_output, output_diff, weight_diff):
        """Deconvolution's gradients for one bottom (its bias gradient is the layer's): the weight gradient
        from its bottom data (conv_output) and top diff (input_diff), and output_diff = apply(input_diff)."""
        self.weight_gradient(conv_output, input_diff, weight_diff, None)
        if output_diff is not None:
            self.apply(input_diff, output_diff, None)

    def output_channel_sums(self, conv_output, sums):
        """sums[c] += the sum of conv-output channel c over every image and location."""
        layer = self.layer
        _channel_sums(conv_output, layer.conv_out_channels, layer.num, layer.locations, sums)


class GpuConvPath(ConvPath):
    """A :class:`ConvPath` on device arrays (the blobs' flat ``gpu_data``/``gpu_diff``), for GPU mode.

    The weight and its gradient are used in the blob's own layout: group ``g``'s block of the flat weight is
    the ``(Cout / group, Cin / group * taps)`` matrix :meth:`_weight_group` returns, rows ordered as the
    im2col columns' (channel, tap). ``weight_gradient``'s bias gradient is :meth:`output_channel_sums`.
    """

    def __init__(self, layer):
        super().__init__(layer)
        self.group = layer.group
        self.group_out = layer.conv_out_channels // layer.group
        self.group_in = layer.conv_in_channels // layer.group
        self.group_width = self.group_in * layer.geometry.taps

    def _weight_group(self, weight, g):
        """Group g's (Cout / group, Cin / group * taps) block of a flat weight (or weight gradient)."""
        rows = self.group_out
        return weight.reshape(self.layer.conv_out_channels, self.group_width)[g * rows:(g + 1) * rows]

    def output_channel_sums(self, conv_output, sums):
        layer = self.layer
        layer._channel_sums_gpu(conv_output, layer.conv_out_channels, layer.locations, sums)


class BaseConvolution(Layer):
    """Caffe's BaseConvolutionLayer: parameters, weights, shapes, and the choice of a :class:`ConvPath`."""

    min_bottoms = 1
    min_tops = 1
    equal_bottoms_and_tops = True
    #: Deconvolution: the bottom is the conv output and the top the conv input.
    reverse = False
    #: The :class:`ConvPath` classes this layer may use, in the order the automatic choice tries them; the
    #: last one fits every geometry (set by the layer classes).
    paths = ()
    #: A path name to force ("auto" or None: by shape); see the module docstring.
    force_path = None
    #: The :class:`GpuConvPath` classes for GPU mode, chosen as ``paths`` are (set by the layer classes).
    gpu_paths = ()
    _gpu_path = None

    # ---------------------------------------------------------------- setup
    def setup(self, bottom, top):
        param = self.layer_param.convolution_param
        self.force_nd = param.force_nd_im2col
        self.channel_axis = bottom[0].canonical_axis(param.axis, layer=self.name)
        self.setup_shape = bottom[0].shape
        self.spatial_axes = bottom[0].ndim - self.channel_axis - 1
        try:
            self.kernel, self.stride, self.pad, self.dilation = parse_spatial_params(param, self.spatial_axes)
        except ConvParamError as exc:
            raise self.shape_error(f"convolution_param: {exc}") from None
        self.channels = bottom[0].shape[self.channel_axis]
        self.num_output = param.num_output
        self.group = param.group
        if self.num_output <= 0:
            raise self.shape_error("convolution_param.num_output must be positive")
        if self.group <= 0:
            raise self.shape_error(f"convolution_param.group must be positive, got {self.group}")
        if self.channels % self.group:
            raise self.shape_error(f"the input's {self.channels} channels are not a multiple of group {self.group}",
                                   actual=bottom[0].shape)
        if self.num_output % self.group:
            raise self.shape_error(f"num_output {self.num_output} is not a multiple of group {self.group}")
        if self.reverse:
            self.conv_out_channels, self.conv_in_channels = self.channels, self.num_output
        else:
            self.conv_out_channels, self.conv_in_channels = self.num_output, self.channels
        self.bias_term = param.bias_term
        weight_shape = (self.conv_out_channels, self.conv_in_channels // self.group) + tuple(self.kernel)
        self.blobs = [self.new_param_blob(weight_shape)]
        fill(self.blobs[0], param.weight_filler, self.name, "convolution_param.weight_filler")
        if self.bias_term:
            self.blobs.append(self.new_param_blob((self.num_output,)))
            fill(self.blobs[1], param.bias_filler, self.name, "convolution_param.bias_filler")
        self._buffers = {}

    # ---------------------------------------------------------------- shapes
    def output_dims(self, input_dims, shape):
        """The top's spatial dims from the bottom's (Convolution: floor rule; Deconvolution: its inverse)."""
        dims = conv_output_dims(input_dims, self.kernel, self.stride, self.pad, self.dilation)
        if None in dims:
            raise self.shape_error(f"kernel extent (dilation * (kernel - 1) + 1) exceeds the padded input "
                                   f"(kernel {self.kernel}, dilation {self.dilation}, pad {self.pad})",
                                   actual=shape)
        return dims

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = self.channel_axis
        if len(shape) != axis + 1 + self.spatial_axes:
            raise self.shape_error(f"the bottom's number of axes may not change (set up with "
                                   f"{axis + 1 + self.spatial_axes})", expected=self.setup_shape, actual=shape)
        if shape[axis] != self.channels:
            raise self.shape_error(f"input size incompatible with the convolution kernel: channel axis {axis} "
                                   f"must stay {self.channels}", actual=shape)
        for index, blob in enumerate(bottom[1:], start=1):
            if blob.shape != shape:
                raise self.shape_error(f"all bottoms must have the same shape (bottom {index})",
                                       expected=shape, actual=blob.shape)
        in_dims = tuple(shape[axis + 1:])
        out_dims = tuple(self.output_dims(in_dims, shape))
        top_shape = tuple(shape[:axis]) + (self.num_output,) + out_dims
        for blob in top:
            blob.reshape(top_shape)
        self.num = bottom[0].count_axes(0, axis)
        conv_in_dims, conv_out_dims = (out_dims, in_dims) if self.reverse else (in_dims, out_dims)
        self.geometry = ConvGeometry(self.conv_in_channels, conv_in_dims, conv_out_dims, self.kernel, self.stride,
                                     self.pad, self.dilation, self.group, self.force_nd)
        self.conv_in_size = self.geometry.image_size
        self.locations = self.geometry.locations
        self.conv_out_size = self.conv_out_channels * self.locations
        self.path = self._choose_path()
        self.conv_path = self.path.name
        self._gpu_path = None           # chosen at the next GPU pass, for these shapes

    def gpu_conv_path(self):
        """The :class:`GpuConvPath` for the current shapes (chosen once per reshape, as :attr:`path` is)."""
        if self._gpu_path is None:
            self._gpu_path = self._choose_path(self.gpu_paths)
        return self._gpu_path

    def _choose_path(self, paths=None):
        paths = self.paths if paths is None else paths
        forced = self.force_path or os.environ.get("MINICAFFE_CONV_PATH") or "auto"
        names = [path.name for path in paths]
        if forced != "auto" and forced not in names:
            raise self.shape_error(f"unknown convolution path {forced!r} (force_path or MINICAFFE_CONV_PATH); "
                                   f"known: auto, {', '.join(names)}")
        fallback = paths[-1]
        for path in paths:
            if path.fits(self) and (path.name == forced if forced != "auto" else path.wins(self)):
                return path(self)
        return fallback(self)

    # ---------------------------------------------------------------- buffers
    def _buffer(self, name, size):
        """A flat work array of at least ``size`` elements, kept on the layer and reused."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != self.dtype:
            buffer = np.empty(max(size, 1), dtype=self.dtype)
            self._buffers[name] = buffer
        return buffer[:size]

    def _gpu_buffer(self, name, size):
        """A flat device work array of at least ``size`` elements, kept on the layer and reused."""
        buffers = self.__dict__.setdefault("_gpu_buffers", {})
        buffer = buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != self.dtype:
            buffer = gpu.device_empty(max(size, 1), self.dtype)
            buffers[name] = buffer
            if name == "ones":
                gpu_blas.fill(buffer, 1)
        return buffer[:size]

    def _gpu_in_place_copy(self, name, array):
        """A copy of the device array ``array`` in the work array ``name``, for a layer run in place (top =
        bottom): the output (or bottom diff) is then the very memory the kernels read, and a GPU thread, or
        cuBLAS, would read values other threads have already overwritten."""
        copy = self._gpu_buffer(name, array.size)
        gpu_blas.copy(array, copy)
        return copy

    def _channel_sums_gpu(self, data, channels, locations, sums):
        """sums[c] += the sum over images and locations of data[n, c, p] (device): two GEMVs with ones."""
        images = self.num
        if not images * channels * locations:
            return
        per_image = data
        if locations > 1:
            per_image = self._gpu_buffer("image_channel_sums", images * channels)
            gpu_blas.gemv(data.reshape(images * channels, locations), self._gpu_buffer("ones", locations),
                          per_image)
        gpu_blas.gemv(per_image.reshape(images, channels), self._gpu_buffer("ones", images), sums, trans_a=True,
                      beta=1.0)

    # ---------------------------------------------------------------- helpers for the layers
    def _bias(self):
        return self.blobs[1].data if self.bias_term else None

    def _gpu_param_diffs(self):
        """(weight diff, bias diff) on the device for Backward, None where not wanted."""
        weight_diff = self.blobs[0].mutable_gpu_diff if self.param_propagate_down[0] else None
        bias_diff = None
        if self.bias_term and self.param_propagate_down[1]:
            bias_diff = self.blobs[1].mutable_gpu_diff
        return weight_diff, bias_diff

    def _bias_diff(self):
        if self.bias_term and self.param_propagate_down[1]:
            return self.blobs[1].diff
        return None
