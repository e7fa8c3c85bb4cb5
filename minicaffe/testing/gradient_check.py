"""Central-difference gradient checks for layers and nets (Caffe's GradientChecker).

For a layer, the checked objective is a fixed random linear function of its
tops, ``f = sum_k <w_k, top_k>``: Backward is run with ``top_k.diff = w_k`` and
compared with ``(f(x + h) - f(x - h)) / 2h`` for each element of each checked
bottom and parameter blob. For a loss layer ``w`` is a random loss weight, so
the check also covers the scaling of the gradient by ``top[0].diff[0]``.

An element passes when ``|analytic - numeric| <= threshold * max(|analytic|,
|numeric|, 1)``. Elements within ``kink_range`` of ``kink`` (e.g. ReLU at 0)
are skipped, as Caffe does. The random generator is reseeded before every
Forward, so random layers (Dropout) draw the same mask each time.

By default the first mismatch raises :class:`GradientMismatch`. With
``raise_on_mismatch=False`` every element is compared and nothing raises;
either way ``checker.results`` lists, per blob compared by the last
``check_layer``/``check_net`` call, a :class:`BlobCheck` with the largest
error (``minicaffe gradcheck`` reports those).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..fillers import set_random_seed


class GradientMismatch(AssertionError):
    """An analytic gradient that disagrees with the numeric one."""


@dataclass
class BlobCheck:
    """One blob's comparison: ``max_error`` is the largest ``|analytic - numeric| / max(|a|, |n|, 1)``."""

    label: str           # e.g. "layer 'ip' bottom 0"
    part: str            # e.g. "bottom 0", "param 1", "blob 'data'"
    checked: int         # elements compared (kinks skipped)
    max_error: float
    worst: str           # the element with the largest error, as the mismatch message gives it
    passed: bool


class GradientChecker:
    def __init__(self, stepsize=1e-3, threshold=1e-6, seed=1701, kink=0.0, kink_range=-1.0,
                 raise_on_mismatch=True):
        self.stepsize = stepsize
        self.threshold = threshold
        self.seed = seed
        self.kink = kink
        self.kink_range = kink_range
        self.raise_on_mismatch = raise_on_mismatch
        self.results = []

    # ---------------------------------------------------------------- layers
    def check_layer(self, layer, bottom, top, check_bottom=None, check_params=True, set_up=True):
        """Check ``layer``'s Backward against finite differences.

        ``check_bottom``: indices of bottoms to check (default: every bottom the
        layer allows a gradient for). Returns the number of elements checked.
        """
        self.results = []
        if set_up:
            layer.set_up(bottom, top)
        if check_bottom is None:
            check_bottom = [i for i in range(len(bottom)) if layer.allow_force_backward(i)]
        rng = np.random.default_rng(self.seed)
        self._forward(layer, bottom, top)
        # Magnitudes in [0.5, 1.5] with random signs: never so small that an error hides.
        top_weights = [(rng.uniform(0.5, 1.5, size=blob.shape) * rng.choice([-1.0, 1.0], size=blob.shape))
                       .astype(blob.dtype) for blob in top]

        def objective():
            self._forward(layer, bottom, top)
            return sum(float(np.sum(w.astype(np.float64) * blob.data)) for w, blob in zip(top_weights, top))

        # analytic
        self._forward(layer, bottom, top)
        # Zero first: a top may share its diff with a bottom (Flatten, Reshape).
        for blob in bottom:
            blob.diff[...] = 0
        for blob in layer.blobs:
            blob.diff[...] = 0
        for w, blob in zip(top_weights, top):
            blob.diff[...] = w
        propagate_down = [i in check_bottom for i in range(len(bottom))]
        layer.run_backward(top, propagate_down, bottom)
        checked = [(f"bottom {i}", bottom[i], bottom[i].diff.copy()) for i in check_bottom]
        if check_params:
            checked += [(f"param {i}", blob, blob.diff.copy()) for i, blob in enumerate(layer.blobs)
                        if layer.param_propagate_down[i]]
        count = 0
        for label, blob, analytic in checked:
            count += self._compare(f"layer '{layer.name}' {label}", blob, analytic, objective, part=label)
        return count

    # ---------------------------------------------------------------- nets
    def check_net(self, net, blobs=None, check_params=True):
        """Check a whole net's gradients of its loss w.r.t. input blobs and parameters.

        ``blobs``: names of blobs to perturb (default: the net's inputs that need
        backward). Parameter diffs are cleared first, since Backward accumulates them.
        """
        self.results = []

        def objective():
            set_random_seed(self.seed)
            return net.forward_from_to(0, len(net.layers) - 1)

        objective()
        net.clear_param_diffs()
        net.backward_from_to(len(net.layers) - 1, 0)
        if blobs is None:
            blobs = [name for name in net.inputs if net._blob_need_backward.get(name)]
        checked = [(f"blob '{name}'", net.blobs[name], net.blobs[name].diff.copy()) for name in blobs]
        if check_params:
            for blob in net.learnable_params:
                checked.append((f"param {blob.name}", blob, blob.diff.copy()))
        count = 0
        for label, blob, analytic in checked:
            count += self._compare(f"net: {label}", blob, analytic, objective, part=label)
        return count

    # ---------------------------------------------------------------- internals
    def _forward(self, layer, bottom, top):
        set_random_seed(self.seed)
        layer.run_forward(bottom, top)

    def _compare(self, label, blob, analytic, objective, part=None):
        data = blob.data
        flat = data.reshape(-1)
        analytic = analytic.reshape(-1)
        checked = 0
        result = BlobCheck(label, part or label, 0, 0.0, "", True)
        self.results.append(result)
        for index in range(flat.size):
            feature = float(flat[index])
            if self.kink_range >= 0 and abs(feature - self.kink) <= self.kink_range:
                continue
            # blob.data again before each write, as Caffe's checker calls mutable_cpu_data(): in GPU mode a
            # Forward leaves the device copy current, and only a fresh host access marks a write as newer.
            blob.data.reshape(-1)[index] = feature + self.stepsize
            positive = objective()
            blob.data.reshape(-1)[index] = feature - self.stepsize
            negative = objective()
            blob.data.reshape(-1)[index] = feature
            numeric = (positive - negative) / (2.0 * self.stepsize)
            computed = float(analytic[index])
            scale = max(abs(computed), abs(numeric), 1.0)
            error = abs(computed - numeric) / scale
            # Written so that a NaN gradient (analytic or numeric) fails too.
            failed = not abs(computed - numeric) <= self.threshold * scale
            if error != error:
                error = float("inf")
            if failed or error > result.max_error or not result.worst:
                where = (f"element {tuple(int(i) for i in np.unravel_index(index, data.shape))}: analytic "
                         f"{computed:.8g} vs numeric {numeric:.8g} (value {feature:.6g})")
                if failed and self.raise_on_mismatch:
                    result.passed = False
                    raise GradientMismatch(f"{label}, {where}")
                if error > result.max_error or not result.worst:
                    result.max_error, result.worst = error, where
            result.passed = result.passed and not failed
            checked += 1
            result.checked = checked
        objective()  # leave the tops as they were at the unperturbed point
        return checked


def check_layer_gradient(layer, bottom, top, **kwargs):
    """Shorthand: ``GradientChecker(**options).check_layer(layer, bottom, top)``."""
    options = {k: kwargs.pop(k) for k in ("stepsize", "threshold", "seed", "kink", "kink_range", "raise_on_mismatch")
               if k in kwargs}
    return GradientChecker(**options).check_layer(layer, bottom, top, **kwargs)


def check_net_gradient(net, **kwargs):
    options = {k: kwargs.pop(k) for k in ("stepsize", "threshold", "seed", "kink", "kink_range", "raise_on_mismatch")
               if k in kwargs}
    return GradientChecker(**options).check_net(net, **kwargs)
