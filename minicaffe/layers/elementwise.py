"""Element-wise "neuron" layers: AbsVal, BNLL, ELU, Exp, Log, Power, Clip, Swish, Threshold.

Each maps every element of one bottom to the same-shaped top, ``y = f(x)``,
with gradient ``dx = dy * f'(x)``:

- AbsVal: ``y = |x|``; ``f' = sign(x)`` (0 at 0). No in-place use (Caffe refuses it too).
- BNLL: ``y = log(1 + exp(x))``, evaluated as ``max(x, 0) + log1p(exp(-|x|))``
  (no overflow); ``f' = sigmoid(x)``.
- ELU (``alpha``, default 1): ``y = x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``;
  ``f' = 1`` for ``x > 0``, else ``alpha * exp(x) = y + alpha`` (Caffe's form).
- Exp (``base`` default -1 = e, ``scale`` 1, ``shift`` 0): ``y = base^(shift + scale * x)``;
  ``f' = ln(base) * scale * y``.
- Log (same parameters): ``y = log_base(shift + scale * x)``;
  ``f' = scale / (ln(base) * (shift + scale * x))``.
- Power (``power`` 1, ``scale`` 1, ``shift`` 0): ``y = (shift + scale * x)^power``;
  ``f' = power * scale * (shift + scale * x)^(power - 1)``. When ``power * scale``
  is 0 the output is the constant ``shift^power`` (1 when ``power`` is 0) and the
  gradient 0, as in Caffe.
- Clip (``min``, ``max``, both required): ``y = min(max(x, min), max)``;
  ``f' = 1`` where ``min <= x <= max``, else 0.
- Swish (``beta`` default 1): ``y = x * sigmoid(beta * x)``;
  ``f' = beta * y + sigmoid(beta * x) * (1 - beta * y)``.
- Threshold (``threshold`` default 0): ``y = 1`` where ``x > threshold``, else 0.
  Caffe gives it no Backward: a gradient asked of it is an error.

Layers whose gradient needs the input keep a copy of it when run in place.

Deviations from Caffe: Power's gradient is computed as written above, where
Caffe's ``power * y / x`` form gives NaN at ``x = 0`` (shift 0) although the
derivative there is 0 for ``power > 1``. BNLL, Log, Power and Clip give the right
gradient in place (Caffe's read the already overwritten bottom).

GPU: each layer has one Forward and one Backward kernel, one thread per
element, with the CPU's formulas and special cases (Power's constant, power 1
and 2; Exp's and Log's scales). Run in place, the layers whose gradient needs
the input first copy it to a device buffer kept on the layer; Swish keeps
``sigmoid(beta x)`` on the device for Backward, as the CPU keeps it on the host.
"""

import math

import numpy as np

from .. import gpu, gpu_blas
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..registry import register
from .sigmoid import sigmoid_gpu


def _sigmoid(x):
    """``1 / (1 + exp(-x))`` without overflow, in x's dtype."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, z) / (1 + z)


def device_buffer(cached, count, dtype):
    """``cached`` when it is a device array of ``count`` elements of ``dtype``, else a new one (Forward
    allocates only when the shape changed)."""
    if cached is None or cached.size != count or cached.dtype != np.dtype(dtype):
        return gpu.device_empty(count, dtype)
    return cached


def _launch(kernel, count, *arguments):
    kernel[gpu.blocks_for(count), gpu.THREADS](*arguments)


# ---------------------------------------------------------------- GPU kernels
# One thread per element; x is the input (or its saved copy in place), y the output.

@gpu.jit
def _absval_forward_gpu(x, y):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = abs(x[i])


@gpu.jit
def _absval_backward_gpu(x, y, dy, dx):
    i = cuda.grid(1)
    if i < dx.size:
        value = x[i]
        # numpy's sign: 0 at 0 and NaN at NaN (value * 0 gives both).
        sign = 1.0 if value > 0 else (-1.0 if value < 0 else value * 0.0)
        dx[i] = dy[i] * sign


@gpu.jit
def _bnll_forward_gpu(x, y):
    i = cuda.grid(1)
    if i < y.size:
        value = x[i]
        y[i] = max(value, 0.0) + math.log1p(math.exp(-abs(value)))


@gpu.jit
def _bnll_backward_gpu(x, y, dy, dx):
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = dy[i] * sigmoid_gpu(x[i])


@gpu.jit
def _elu_forward_gpu(x, y, alpha):
    i = cuda.grid(1)
    if i < y.size:
        value = x[i]
        # No min(value, 0) as on the CPU (numpy evaluates both sides): here only x <= 0 and NaN reach expm1,
        # and the device's fmin would turn NaN into 0.
        y[i] = value if value > 0 else alpha * math.expm1(value)


@gpu.jit
def _elu_backward_gpu(x, y, dy, dx, alpha):
    i = cuda.grid(1)
    if i < dx.size:
        out = y[i]
        dx[i] = dy[i] * (1.0 if out > 0 else out + alpha)


@gpu.jit
def _exp_forward_gpu(x, y, inner_scale, outer_scale):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = math.exp(x[i] * inner_scale) * outer_scale


@gpu.jit
def _exp_backward_gpu(x, y, dy, dx, inner_scale):
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = dy[i] * (y[i] * inner_scale)


@gpu.jit
def _log_forward_gpu(x, y, scale, shift, base_scale):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = math.log(x[i] * scale + shift) * base_scale


@gpu.jit
def _log_backward_gpu(x, y, dy, dx, scale, shift, base_scale):
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = dy[i] * (scale * base_scale / (x[i] * scale + shift))


@gpu.jit
def _power_forward_gpu(x, y, power, scale, shift, constant, is_constant):
    i = cuda.grid(1)
    if i < y.size:
        if is_constant:
            y[i] = constant
        else:
            base = x[i] * scale + shift
            if power == 1:
                y[i] = base
            elif power == 2:
                y[i] = base * base
            else:
                y[i] = math.pow(base, power)


@gpu.jit
def _power_backward_gpu(x, y, dy, dx, power, scale, shift, diff_scale):
    i = cuda.grid(1)
    if i < dx.size:
        if diff_scale == 0 or power == 1:
            dx[i] = dy[i] * diff_scale
        else:
            base = x[i] * scale + shift
            if power == 2:
                dx[i] = dy[i] * (base * diff_scale)
            else:
                dx[i] = dy[i] * (math.pow(base, power - 1) * diff_scale)


@gpu.jit
def _clip_forward_gpu(x, y, low, high):
    i = cuda.grid(1)
    if i < y.size:
        value = x[i]
        # NaN fails both comparisons and stays NaN, as with numpy's clip.
        y[i] = low if value < low else (high if value > high else value)


@gpu.jit
def _clip_backward_gpu(x, y, dy, dx, low, high):
    i = cuda.grid(1)
    if i < dx.size:
        value = x[i]
        dx[i] = dy[i] if value >= low and value <= high else dy[i] * 0.0


@gpu.jit
def _swish_forward_gpu(x, y, sigmoid, beta):
    i = cuda.grid(1)
    if i < y.size:
        value = x[i]
        s = sigmoid_gpu(value * beta)
        sigmoid[i] = s
        y[i] = value * s


@gpu.jit
def _swish_backward_gpu(sigmoid, y, dy, dx, beta):
    i = cuda.grid(1)
    if i < dx.size:
        beta_y = beta * y[i]
        dx[i] = dy[i] * (beta_y + sigmoid[i] * (1.0 - beta_y))


@gpu.jit
def _threshold_forward_gpu(x, y, threshold):
    i = cuda.grid(1)
    if i < y.size:
        y[i] = 1.0 if x[i] > threshold else 0.0


class NeuronLayer(Layer):
    """One bottom, one same-shaped top; subclasses give ``compute`` and ``derivative``."""

    exact_bottoms = 1
    exact_tops = 1
    # True when the gradient reads the input: a copy is kept when run in place.
    gradient_needs_input = False
    allow_in_place = True

    def setup(self, bottom, top):
        if not self.allow_in_place and bottom[0] is top[0]:
            raise GraphError(f"{self.type} does not allow in-place computation (its gradient needs the input)",
                             layer=self.name)
        self.configure()
        self._saved_input = None

    def configure(self):
        """Read the layer's parameters."""

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.gradient_needs_input and bottom[0] is top[0]:
            self._saved_input = x.copy()
        top[0].data[...] = self.compute(x)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self._saved_input if bottom[0] is top[0] and self.gradient_needs_input else bottom[0].data
        derivative = self.derivative(x, top[0].data)
        np.multiply(top[0].diff, derivative, out=bottom[0].diff)

    def const(self, value):
        return self.dtype.type(value)

    # GPU: subclasses give compute_gpu(x, y) and derivative_gpu(x, y, dy, dx) on flat device arrays.
    _gpu_saved = None

    def forward_gpu(self, bottom, top):
        x = bottom[0].gpu_data
        if self.gradient_needs_input and bottom[0] is top[0]:
            self._gpu_saved = device_buffer(self._gpu_saved, x.size, x.dtype)
            gpu_blas.copy(x, self._gpu_saved)
        self.compute_gpu(x, top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        in_place = bottom[0] is top[0] and self.gradient_needs_input
        x = self._gpu_saved if in_place else bottom[0].gpu_data
        self.derivative_gpu(x, top[0].gpu_data, top[0].gpu_diff, bottom[0].mutable_gpu_diff)


@register("AbsVal")
class AbsValLayer(NeuronLayer):
    allow_in_place = False

    def compute(self, x):
        return np.abs(x)

    def derivative(self, x, y):
        return np.sign(x)

    def compute_gpu(self, x, y):
        _launch(_absval_forward_gpu, y.size, x, y)

    def derivative_gpu(self, x, y, dy, dx):
        _launch(_absval_backward_gpu, dx.size, x, y, dy, dx)


@register("BNLL")
class BNLLLayer(NeuronLayer):
    gradient_needs_input = True

    def compute(self, x):
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))

    def derivative(self, x, y):
        return _sigmoid(x)

    def compute_gpu(self, x, y):
        _launch(_bnll_forward_gpu, y.size, x, y)

    def derivative_gpu(self, x, y, dy, dx):
        _launch(_bnll_backward_gpu, dx.size, x, y, dy, dx)


@register("ELU")
class ELULayer(NeuronLayer):
    def configure(self):
        self.alpha = self.const(self.layer_param.elu_param.alpha)

    def compute(self, x):
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0)))

    def derivative(self, x, y):
        # From the output alone (in place, x is y): y > 0 exactly where x > 0 (for alpha >= 0).
        return np.where(y > 0, 1, y + self.alpha)

    def forward(self, bottom, top):
        top[0].data[...] = self.compute(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(top[0].diff, self.derivative(None, top[0].data), out=bottom[0].diff)

    def compute_gpu(self, x, y):
        _launch(_elu_forward_gpu, y.size, x, y, self.alpha)

    def derivative_gpu(self, x, y, dy, dx):
        _launch(_elu_backward_gpu, dx.size, x, y, dy, dx, self.alpha)


class _BaseParams(NeuronLayer):
    """Exp and Log: ``base`` (-1 means e, else > 0), ``scale``, ``shift``."""

    def configure(self):
        param = self.params()
        base = float(param.base)
        if base != -1 and not base > 0:
            raise GraphError(f"{self.type} base must be strictly positive (or -1 for e), got {base:g}",
                             layer=self.name)
        self.log_base = 1.0 if base == -1 else math.log(base)
        self.base = math.e if base == -1 else base
        self.scale = float(param.scale)
        self.shift = float(param.shift)


@register("Exp")
class ExpLayer(_BaseParams):
    def params(self):
        return self.layer_param.exp_param

    def configure(self):
        super().configure()
        self.inner_scale = self.const(self.log_base * self.scale)
        try:
            outer = 1.0 if self.shift == 0 else math.exp(self.log_base * self.shift)
        except OverflowError:       # Caffe's pow(base, shift) is inf: every output would be
            raise GraphError(f"exp_param: base^shift = {self.base:g}^{self.shift:g} overflows a float, so every "
                             "output would be infinite", layer=self.name) from None
        self.outer_scale = self.const(outer)

    def compute(self, x):
        y = np.exp(x * self.inner_scale)
        if self.outer_scale != 1:
            y *= self.outer_scale
        return y

    def derivative(self, x, y):
        return y * self.inner_scale

    def compute_gpu(self, x, y):
        _launch(_exp_forward_gpu, y.size, x, y, self.inner_scale, self.outer_scale)

    def derivative_gpu(self, x, y, dy, dx):
        _launch(_exp_backward_gpu, dx.size, x, y, dy, dx, self.inner_scale)


@register("Log")
class LogLayer(_BaseParams):
    gradient_needs_input = True

    def params(self):
        return self.layer_param.log_param

    def configure(self):
        super().configure()
        if self.log_base == 0:
            raise GraphError("Log base 1 has no logarithm (1 / log(base) is infinite)", layer=self.name)
        self.base_scale = self.const(1.0 / self.log_base)

    def _argument(self, x):
        if self.scale == 1 and self.shift == 0:
            return x
        return x * self.const(self.scale) + self.const(self.shift)

    def compute(self, x):
        y = np.log(self._argument(x))
        if self.base_scale != 1:
            y *= self.base_scale
        return y

    def derivative(self, x, y):
        return self.const(self.scale) * self.base_scale / self._argument(x)

    def compute_gpu(self, x, y):
        _launch(_log_forward_gpu, y.size, x, y, self.const(self.scale), self.const(self.shift), self.base_scale)

    def derivative_gpu(self, x, y, dy, dx):
        _launch(_log_backward_gpu, dx.size, x, y, dy, dx, self.const(self.scale), self.const(self.shift),
                self.base_scale)


@register("Power")
class PowerLayer(NeuronLayer):
    gradient_needs_input = True

    def configure(self):
        param = self.layer_param.power_param
        self.power = float(param.power)
        self.scale = float(param.scale)
        self.shift = float(param.shift)
        self.diff_scale = self.power * self.scale
        self.constant = None
        if self.diff_scale == 0:        # every output is shift^power
            try:
                value = 1.0 if self.power == 0 else self.shift ** self.power
            except (OverflowError, ZeroDivisionError):
                value = None
            if not isinstance(value, float) or not math.isfinite(value):    # past a float, 0^-1, complex
                raise GraphError(f"power_param: with scale {self.scale:g} every output is shift^power = "
                                 f"{self.shift:g}^{self.power:g}, which is not a finite real number", layer=self.name)
            self.constant = value

    def _argument(self, x):
        return x * self.const(self.scale) + self.const(self.shift)

    def compute(self, x):
        if self.diff_scale == 0:
            return np.full(x.shape, self.constant, dtype=x.dtype)
        base = self._argument(x)
        if self.power == 1:
            return base
        if self.power == 2:
            return base * base
        return np.power(base, self.const(self.power))

    def derivative(self, x, y):
        if self.diff_scale == 0 or self.power == 1:
            return np.full(x.shape, self.diff_scale, dtype=x.dtype)
        base = self._argument(x)
        if self.power == 2:
            return base * self.const(self.diff_scale)
        return np.power(base, self.const(self.power - 1)) * self.const(self.diff_scale)

    def compute_gpu(self, x, y):
        constant = self.constant is not None
        _launch(_power_forward_gpu, y.size, x, y, self.const(self.power), self.const(self.scale),
                self.const(self.shift), self.const(self.constant if constant else 0.0), constant)

    def derivative_gpu(self, x, y, dy, dx):
        _launch(_power_backward_gpu, dx.size, x, y, dy, dx, self.const(self.power), self.const(self.scale),
                self.const(self.shift), self.const(self.diff_scale))


@register("Clip")
class ClipLayer(NeuronLayer):
    gradient_needs_input = True

    def configure(self):
        param = self.layer_param.clip_param
        missing = [name for name in ("min", "max") if not param.HasField(name)]
        if missing:
            raise GraphError(f"clip_param needs both min and max; {' and '.join(missing)} not given",
                             layer=self.name)
        if param.min > param.max:
            raise GraphError(f"clip_param min {param.min:g} is above max {param.max:g}", layer=self.name)
        self.low = self.const(param.min)
        self.high = self.const(param.max)

    def compute(self, x):
        return np.clip(x, self.low, self.high)

    def derivative(self, x, y):
        return ((x >= self.low) & (x <= self.high)).astype(x.dtype)

    def compute_gpu(self, x, y):
        _launch(_clip_forward_gpu, y.size, x, y, self.low, self.high)

    def derivative_gpu(self, x, y, dy, dx):
        _launch(_clip_backward_gpu, dx.size, x, y, dy, dx, self.low, self.high)


@register("Swish")
class SwishLayer(NeuronLayer):
    def configure(self):
        self.beta = self.const(self.layer_param.swish_param.beta)
        self.sigmoid = None

    def compute(self, x):
        self.sigmoid = _sigmoid(x * self.beta)
        return x * self.sigmoid

    def derivative(self, x, y):
        beta_y = self.beta * y
        return beta_y + self.sigmoid * (1 - beta_y)

    _gpu_sigmoid = None

    def compute_gpu(self, x, y):
        self._gpu_sigmoid = device_buffer(self._gpu_sigmoid, y.size, y.dtype)
        _launch(_swish_forward_gpu, y.size, x, y, self._gpu_sigmoid, self.beta)

    def derivative_gpu(self, x, y, dy, dx):
        _launch(_swish_backward_gpu, dx.size, self._gpu_sigmoid, y, dy, dx, self.beta)


@register("Threshold")
class ThresholdLayer(NeuronLayer):
    has_backward = False

    def configure(self):
        self.threshold = self.const(self.layer_param.threshold_param.threshold)

    def compute(self, x):
        return (x > self.threshold).astype(x.dtype)

    def backward(self, top, propagate_down, bottom):
        pass  # run_backward refuses any gradient request first; with none asked there is nothing to do

    def compute_gpu(self, x, y):
        _launch(_threshold_forward_gpu, y.size, x, y, self.threshold)

    def backward_gpu(self, top, propagate_down, bottom):
        pass
