"""Learning-rate policies (SolverParameter.lr_policy), as Caffe's SGDSolver::GetLearningRate.

With base_lr, gamma, power, stepsize, stepvalue and max_iter from the solver:

- fixed:     base_lr
- step:      base_lr * gamma ^ floor(iter / stepsize)
- exp:       base_lr * gamma ^ iter
- inv:       base_lr * (1 + gamma * iter) ^ (-power)
- multistep: base_lr * gamma ^ step, where step counts the stepvalues passed; like
             Caffe, it advances at most one step per call (the solver calls once
             per iteration), and the step is saved in snapshots (current_step)
- poly:      base_lr * (1 - iter / max_iter) ^ power
- sigmoid:   base_lr / (1 + exp(-gamma * (iter - stepsize)))

:func:`check_policy` refuses values outside each policy's domain, as Caffe's
CHECKs do (gamma >= 0 for step, exp, inv and multistep; a positive stepsize for
step and sigmoid; a positive max_iter and power >= 0 for poly; increasing
stepvalues), so no formula meets a negative base or a zero divisor. Unlike
Caffe, sigmoid accepts a negative gamma (a decaying rate). A rate too large for
a float is infinite, as in Caffe (the solver's NaN check then stops training).
"""

from __future__ import annotations

import math

from ..errors import MinicaffeError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_policy(param) -> str | None:
    """What is wrong with ``param``'s learning-rate policy and its fields, or None."""
    policy = param.lr_policy
    if policy not in POLICIES:
        return f"unknown lr_policy '{policy}' (known: {', '.join(POLICIES)})"
    if not math.isfinite(param.base_lr):
        return f"base_lr is {param.base_lr:g}; it must be finite"
    uses = {"step": ("gamma",), "exp": ("gamma",), "inv": ("gamma", "power"), "multistep": ("gamma",),
            "poly": ("power",), "sigmoid": ("gamma",)}.get(policy, ())
    for name in uses:
        if not math.isfinite(getattr(param, name)):
            return f"lr_policy '{policy}' needs a finite {name}, got {name}: {getattr(param, name):g}"
    if policy in ("step", "exp", "inv", "multistep") and param.gamma < 0:
        return f"lr_policy '{policy}' needs gamma >= 0, got gamma: {param.gamma:g}"
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        return f"lr_policy '{policy}' needs a positive stepsize, got stepsize: {param.stepsize}"
    if policy == "poly":
        if param.max_iter <= 0:
            return f"lr_policy 'poly' needs a positive max_iter, got max_iter: {param.max_iter}"
        if param.power < 0:
            return (f"lr_policy 'poly' needs power >= 0, got power: {param.power:g} (the rate would grow to "
                    "infinity at max_iter)")
    if policy == "multistep":
        values = list(param.stepvalue)
        for index in range(1, len(values)):
            if values[index] <= values[index - 1]:
                return (f"lr_policy 'multistep' needs increasing stepvalues, got stepvalue {values[index]} "
                        f"after {values[index - 1]}")
    return None


def learning_rate(param, iteration: int, current_step: int):
    """(rate, current_step) for ``iteration``; ``current_step`` is multistep's position."""
    problem = check_policy(param)
    if problem:
        raise MinicaffeError(problem)
    policy = param.lr_policy
    base = param.base_lr
    if policy == "fixed":
        return base, current_step
    if policy == "step":
        current_step = iteration // param.stepsize
        return base * _pow(param.gamma, current_step), current_step
    if policy == "exp":
        return base * _pow(param.gamma, iteration), current_step
    if policy == "inv":
        return base * _pow(1.0 + param.gamma * iteration, -param.power), current_step
    if policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
        return base * _pow(param.gamma, current_step), current_step
    if policy == "poly":
        if iteration > param.max_iter:
            raise MinicaffeError(f"lr_policy 'poly' is defined up to max_iter ({param.max_iter}); "
                                 f"iteration {iteration} is past it")
        return base * _pow(1.0 - iteration / param.max_iter, param.power), current_step
    # sigmoid: 1 / (1 + e^x), written so that a large x gives 0 rather than an overflow
    x = -param.gamma * (iteration - param.stepsize)
    factor = math.exp(-x) / (1.0 + math.exp(-x)) if x > 0 else 1.0 / (1.0 + math.exp(x))
    return base * factor, current_step


def _pow(base, exponent):
    """``base ** exponent`` (base >= 0), infinite where a float overflows, as C's pow."""
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return math.inf
