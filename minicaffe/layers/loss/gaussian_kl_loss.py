"""GaussianKLLoss (Mocha.jl): the KL divergence of N(mu, diag(sigma^2)) from N(0, I).

The VAE regulariser (Kingma & Welling 2013). Bottoms mu and sigma (a standard
deviation, positive) of the same shape; N = mu.shape[0], the batch::

    loss     = 1/2 sum(mu^2 + sigma^2 - 2 log sigma - 1) / N
    dmu      = w mu / N
    dsigma   = w (sigma - 1/sigma) / N

``w`` is the loss weight stored in ``top[0].diff``. Both bottoms take gradients.
The divisor is fixed (N).
"""

import math

import numpy as np

from ... import gpu, kernels
from ...gpu import cuda  # the name kernels use: the simulator swaps it
from ...layer import LossLayer
from ...registry import register


@kernels.cpu_kernel
def _kl_sum(mu, sigma):
    total = 0.0
    for i in range(mu.size):
        s = sigma[i]
        total += mu[i] * mu[i] + s * s - 2.0 * kernels.log(s) - 1.0
    return 0.5 * total


@kernels.cpu_kernel
def _kl_gradients(mu, sigma, scale, want_mu, want_sigma, mu_diff, sigma_diff):
    for i in range(mu.size):
        if want_mu:
            mu_diff[i] = scale * mu[i]
        if want_sigma:
            s = sigma[i]
            sigma_diff[i] = scale * (s - 1.0 / s)


@gpu.jit
def _kl_terms_gpu(mu, sigma, terms, ones):
    i = cuda.grid(1)
    if i < mu.size:
        s = sigma[i]
        terms[i] = 0.5 * (mu[i] * mu[i] + s * s - 2.0 * math.log(s) - 1.0)
        ones[i] = 1.0


@gpu.jit
def _kl_gradients_gpu(mu, sigma, top_diff, inverse_num, want_mu, want_sigma, mu_diff, sigma_diff):
    i = cuda.grid(1)
    if i < mu.size:
        scale = top_diff[0] * inverse_num
        if want_mu:
            mu_diff[i] = scale * mu[i]
        if want_sigma:
            s = sigma[i]
            sigma_diff[i] = scale * (s - 1.0 / s)


@register("GaussianKLLoss")
class GaussianKLLossLayer(LossLayer):
    never_backward_bottoms = ()

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].shape != bottom[1].shape:
            raise self.shape_error("mu and sigma must have the same shape",
                                   expected=bottom[0].shape, actual=bottom[1].shape)

    def forward(self, bottom, top):
        mu = bottom[0].data.reshape(-1)
        sigma = bottom[1].data.reshape(-1).astype(mu.dtype, copy=False)
        top[0].data[...] = _kl_sum(mu, sigma) / bottom[0].shape[0]

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        mu = bottom[0].data.reshape(-1)
        scale = mu.dtype.type(self.loss_weight_scale(top, bottom[0].shape[0]))
        _kl_gradients(mu, bottom[1].data.reshape(-1), scale, bool(propagate_down[0]), bool(propagate_down[1]),
                      bottom[0].diff.reshape(-1), bottom[1].diff.reshape(-1))

    def forward_gpu(self, bottom, top):
        count = bottom[0].count
        terms = gpu.scratch(self, "terms", count, np.float64)
        ones = gpu.scratch(self, "ones", count, np.float64)
        _kl_terms_gpu[gpu.blocks_for(count), gpu.THREADS](bottom[0].gpu_data, bottom[1].gpu_data, terms, ones)
        gpu.reduce_loss(self, terms, ones, gpu.FIXED_DIVISOR, bottom[0].shape[0], 1, top[0].mutable_gpu_data)

    def backward_gpu(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        count = bottom[0].count
        _kl_gradients_gpu[gpu.blocks_for(count), gpu.THREADS](
            bottom[0].gpu_data, bottom[1].gpu_data, top[0].gpu_diff, 1.0 / bottom[0].shape[0],
            bool(propagate_down[0]), bool(propagate_down[1]), bottom[0].mutable_gpu_diff, bottom[1].mutable_gpu_diff)
