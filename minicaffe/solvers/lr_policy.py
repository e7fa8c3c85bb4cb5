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
"""

from __future__ import annotations

import math

from ..errors import MinicaffeError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def learning_rate(param, iteration: int, current_step: int):
    """(rate, current_step) for ``iteration``; ``current_step`` is multistep's position."""
    policy = param.lr_policy
    base = param.base_lr
    if policy == "fixed":
        return base, current_step
    if policy == "step":
        if param.stepsize <= 0:
            raise MinicaffeError("lr_policy 'step' needs a positive stepsize")
        current_step = iteration // param.stepsize
        return base * math.pow(param.gamma, current_step), current_step
    if policy == "exp":
        return base * math.pow(param.gamma, iteration), current_step
    if policy == "inv":
        return base * math.pow(1.0 + param.gamma * iteration, -param.power), current_step
    if policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
        return base * math.pow(param.gamma, current_step), current_step
    if policy == "poly":
        if param.max_iter <= 0:
            raise MinicaffeError("lr_policy 'poly' needs a positive max_iter")
        return base * math.pow(1.0 - iteration / param.max_iter, param.power), current_step
    if policy == "sigmoid":
        return base / (1.0 + math.exp(-param.gamma * (iteration - param.stepsize))), current_step
    raise MinicaffeError(f"unknown lr_policy '{policy}' (known: {', '.join(POLICIES)})")
