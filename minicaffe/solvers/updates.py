"""The update rules of Caffe's six solver types (ComputeUpdateValue), one class each.

Every rule receives the parameter's diff after clipping, 1/iter_size scaling and
weight decay, and the local rate ``lr = rate * lr_mult``; it leaves in the diff
the step that ``Net.update`` subtracts from the data. ``history`` holds the
per-parameter state that snapshots save (one array per parameter, two for
AdaDelta and Adam: the second set follows the first, as in Caffe's
SolverState).

- SGD:      h = lr g + momentum h;                     step = h
- Nesterov: h' = lr g + momentum h;                    step = (1 + momentum) h' - momentum h
- AdaGrad:  h += g^2;                                  step = lr g / (sqrt(h) + delta)
- RMSProp:  h = rms_decay h + (1 - rms_decay) g^2;     step = lr g / (sqrt(h) + delta)
- AdaDelta: h = m h + (1-m) g^2;  u = g sqrt((hu + delta) / (h + delta));  hu = m hu + (1-m) u^2;  step = lr u
- Adam:     m1 = b1 m1 + (1-b1) g;  v = b2 v + (1-b2) g^2;
            step = lr sqrt(1 - b2^t) / (1 - b1^t) * m1 / (sqrt(v) + delta),  t = iter + 1

GPU: each rule is one numba.cuda kernel over the parameter's flat diff and its
history blobs on the device, one thread per element, as Caffe's
``*_solver.cu`` kernels: the history is read once and written once, and the
step is left in the diff. The scalars reach the kernels in the parameter's
dtype (1 - momentum and the like computed on the host, as the CPU rule's numpy
scalars are), so float32 stays float32 arithmetic as on the CPU.
"""

from __future__ import annotations

import math

import numpy as np

from .. import gpu
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from .solver import Solver


# ---------------------------------------------------------------- GPU kernels (Caffe's *_solver.cu)

@gpu.jit
def _sgd_gpu(gradient, history, momentum, local_rate):
    for i in range(cuda.grid(1), gradient.size, cuda.gridsize(1)):
        value = momentum * history[i] + local_rate * gradient[i]
        history[i] = value
        gradient[i] = value


@gpu.jit
def _nesterov_gpu(gradient, history, momentum, one_plus_momentum, local_rate):
    for i in range(cuda.grid(1), gradient.size, cuda.gridsize(1)):
        previous = history[i]
        current = momentum * previous + local_rate * gradient[i]
        history[i] = current
        gradient[i] = one_plus_momentum * current - momentum * previous


@gpu.jit
def _adagrad_gpu(gradient, history, delta, local_rate):
    for i in range(cuda.grid(1), gradient.size, cuda.gridsize(1)):
        g = gradient[i]
        h = history[i] + g * g
        history[i] = h
        gradient[i] = local_rate * g / (math.sqrt(h) + delta)


@gpu.jit
def _rmsprop_gpu(gradient, history, decay, one_minus_decay, delta, local_rate):
    for i in range(cuda.grid(1), gradient.size, cuda.gridsize(1)):
        g = gradient[i]
        h = decay * history[i] + one_minus_decay * g * g
        history[i] = h
        gradient[i] = local_rate * g / (math.sqrt(h) + delta)


@gpu.jit
def _adadelta_gpu(gradient, gradient_history, update_history, momentum, one_minus_momentum, delta, local_rate):
    for i in range(cuda.grid(1), gradient.size, cuda.gridsize(1)):
        g = gradient[i]
        h = momentum * gradient_history[i] + one_minus_momentum * g * g
        gradient_history[i] = h
        g = g * math.sqrt((update_history[i] + delta) / (h + delta))
        update_history[i] = momentum * update_history[i] + one_minus_momentum * g * g
        gradient[i] = local_rate * g


@gpu.jit
def _adam_gpu(gradient, first, second, beta1, one_minus_beta1, beta2, one_minus_beta2, delta, corrected_rate):
    for i in range(cuda.grid(1), gradient.size, cuda.gridsize(1)):
        g = gradient[i]
        m = beta1 * first[i] + one_minus_beta1 * g
        v = beta2 * second[i] + one_minus_beta2 * g * g
        first[i] = m
        second[i] = v
        gradient[i] = corrected_rate * m / (math.sqrt(v) + delta)


def _launch(kernel, gradient, *arguments):
    if gradient.size:
        kernel[gpu.strided(gradient.size)](gradient, *arguments)


class SGDSolver(Solver):
    type_name = "SGD"
    history_sets = 1

    def compute_update_value(self, index, local_rate):
        diff = self.learnable[index].blob.diff
        history = self.history[index]
        history *= self.param.momentum
        history += local_rate * diff
        diff[...] = history

    def compute_update_value_gpu(self, index, local_rate):
        gradient, (history,), number = self.device_arrays(index)
        _launch(_sgd_gpu, gradient, history, number(self.param.momentum), number(local_rate))


class NesterovSolver(Solver):
    type_name = "Nesterov"
    history_sets = 1

    def compute_update_value(self, index, local_rate):
        momentum = self.param.momentum
        diff = self.learnable[index].blob.diff
        history = self.history[index]
        previous = history.copy()
        history *= momentum
        history += local_rate * diff
        diff[...] = (1.0 + momentum) * history - momentum * previous

    def compute_update_value_gpu(self, index, local_rate):
        momentum = self.param.momentum
        gradient, (history,), number = self.device_arrays(index)
        _launch(_nesterov_gpu, gradient, history, number(momentum), number(1.0 + momentum), number(local_rate))


class AdaGradSolver(Solver):
    type_name = "AdaGrad"
    history_sets = 1

    def check_parameters(self):
        if self.param.momentum != 0:
            self.fail("AdaGrad does not use momentum; set momentum: 0")

    def compute_update_value(self, index, local_rate):
        diff = self.learnable[index].blob.diff
        history = self.history[index]
        history += diff * diff
        diff[...] = local_rate * diff / (np.sqrt(history) + self.param.delta)

    def compute_update_value_gpu(self, index, local_rate):
        gradient, (history,), number = self.device_arrays(index)
        _launch(_adagrad_gpu, gradient, history, number(self.param.delta), number(local_rate))


class RMSPropSolver(Solver):
    type_name = "RMSProp"
    history_sets = 1

    def check_parameters(self):
        if self.param.momentum != 0:
            self.fail("RMSProp does not use momentum; set momentum: 0")
        if not 0 <= self.param.rms_decay <= 1:
            self.fail("rms_decay must be in [0, 1]")

    def compute_update_value(self, index, local_rate):
        decay = self.param.rms_decay
        diff = self.learnable[index].blob.diff
        history = self.history[index]
        history *= decay
        history += (1.0 - decay) * diff * diff
        diff[...] = local_rate * diff / (np.sqrt(history) + self.param.delta)

    def compute_update_value_gpu(self, index, local_rate):
        decay = self.param.rms_decay
        gradient, (history,), number = self.device_arrays(index)
        _launch(_rmsprop_gpu, gradient, history, number(decay), number(1.0 - decay), number(self.param.delta),
                number(local_rate))


class AdaDeltaSolver(Solver):
    type_name = "AdaDelta"
    history_sets = 2

    def compute_update_value(self, index, local_rate):
        momentum, delta = self.param.momentum, self.param.delta
        diff = self.learnable[index].blob.diff
        gradient_history = self.history[index]
        update_history = self.history[index + len(self.learnable)]
        gradient_history *= momentum
        gradient_history += (1.0 - momentum) * diff * diff
        diff *= np.sqrt((update_history + delta) / (gradient_history + delta))
        update_history *= momentum
        update_history += (1.0 - momentum) * diff * diff
        diff *= local_rate

    def compute_update_value_gpu(self, index, local_rate):
        momentum = self.param.momentum
        gradient, (gradient_history, update_history), number = self.device_arrays(index)
        _launch(_adadelta_gpu, gradient, gradient_history, update_history, number(momentum),
                number(1.0 - momentum), number(self.param.delta), number(local_rate))


class AdamSolver(Solver):
    type_name = "Adam"
    history_sets = 2

    def check_parameters(self):
        # The bias corrections divide by 1 - momentum^t and take sqrt(1 - momentum2^t): both betas in [0, 1).
        for name in ("momentum", "momentum2"):
            value = getattr(self.param, name)
            if not 0 <= value < 1:
                self.fail(f"Adam needs {name} in [0, 1), got {name}: {value:g}")
        if not (math.isfinite(self.param.delta) and self.param.delta >= 0):
            self.fail(f"Adam needs a finite delta >= 0, got delta: {self.param.delta:g}")

    def compute_update_value(self, index, local_rate):
        beta1, beta2 = self.param.momentum, self.param.momentum2
        diff = self.learnable[index].blob.diff
        first = self.history[index]
        second = self.history[index + len(self.learnable)]
        step = self.iter + 1
        correction = math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
        first *= beta1
        first += (1.0 - beta1) * diff
        second *= beta2
        second += (1.0 - beta2) * diff * diff
        diff[...] = local_rate * correction * first / (np.sqrt(second) + self.param.delta)

    def compute_update_value_gpu(self, index, local_rate):
        beta1, beta2 = self.param.momentum, self.param.momentum2
        gradient, (first, second), number = self.device_arrays(index)
        step = self.iter + 1
        correction = math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
        _launch(_adam_gpu, gradient, first, second, number(beta1), number(1.0 - beta1), number(beta2),
                number(1.0 - beta2), number(self.param.delta), number(local_rate * correction))


SOLVER_TYPES = {cls.type_name: cls for cls in
                (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver, AdamSolver)}
