"""Loss layers: one module per loss, each with its formula, its CPU kernel
(numba ``@njit``) and its GPU kernel (``numba.cuda``) side by side.

Every loss follows :class:`minicaffe.layer.LossLayer`'s contract: prediction
first, label or target second, a scalar top, the gradient scaled by the loss
weight stored in ``top[0].diff``, and ``loss_param`` normalization for the
classification losses.
"""
