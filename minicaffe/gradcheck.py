"""``minicaffe gradcheck``: finite-difference checks of each layer of a net, Python layers included.

Caffe checks its own layers' gradients in its test suite; users' layers never
got that. Here a whole net is checked layer by layer, in float64:

1. The net is built with ``dtype=numpy.float64`` (fillers seeded), and the
   ``--weights`` loaded if given. Its inputs (the tops of Input layers) are
   filled with seeded standard normal values; an input some layer reads as a
   label (a bottom that never takes a gradient, such as SoftmaxWithLoss's
   second) gets small non-negative integers instead: below the first two
   dimensions of that layer's first bottom, so they are valid class indices.
2. Forward runs layer by layer, and each checked layer's bottoms are copied
   just before it runs (so in-place layers are checked at their true input).
3. Each checked layer is then run on its own on those copies (fresh tops, its
   ``reshape`` called again) by :class:`minicaffe.testing.GradientChecker`:
   every bottom the net backpropagates to (``net.bottom_need_backward``) and
   every parameter that learns (``lr_mult`` not 0), against the central
   difference of a random linear function of its tops.

The error of an element is ``|analytic - numeric| / max(|analytic|, |numeric|,
1)`` (relative for large gradients, absolute for small ones); a blob passes
when its largest error is at most ``threshold``. Inserted Split layers are
skipped unless named; a bottom that is a Split's copy is shown by the name
of the blob it copies. ReLU, PReLU and AbsVal skip elements within two step
sizes of their kink at 0 (where a step would cross it), as Caffe's own tests
skip kinks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .blob import Blob
from .errors import MinicaffeError
from .fillers import set_random_seed
from .net import Net
from .testing.gradient_check import GradientChecker

# Layer types with a kink at 0: elements that close to it are skipped.
KINKED_TYPES = ("ReLU", "PReLU", "AbsVal")


@dataclass
class LayerCheck:
    """One layer's outcome: a BlobCheck per bottom and parameter checked, or a note why none was."""

    name: str
    type: str
    checks: list = field(default_factory=list)    # minicaffe.testing.gradient_check.BlobCheck
    note: str = ""

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def gradcheck_net(model, layers=(), weights=None, phase="TRAIN", level=0, stages=(), stepsize=1e-4,
                  threshold=1e-5, seed=1701) -> list:
    """Check the layers of the net ``model`` (path or NetParameter); a LayerCheck per layer checked.

    ``layers``: names of the layers to check (default: all but inserted splits).
    """
    set_random_seed(seed)
    net = Net(model, phase, level=level, stages=stages, weights=weights, dtype=np.float64)
    names = [planned.name for planned in net.plan.layers]
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise MinicaffeError(f"no layer named {', '.join(repr(n) for n in unknown)} in this net "
                             f"(layers: {', '.join(names)})")
    if layers:
        targets = [i for i, name in enumerate(names) if name in layers]
    else:
        targets = [i for i, planned in enumerate(net.plan.layers) if not planned.is_split]
    fill_inputs(net, np.random.default_rng(seed))
    snapshots = {}
    for i in range(len(names)):
        if i in targets:
            snapshots[i] = [blob.data.copy() for blob in net._bottom_vecs[i]]
        set_random_seed(seed)
        net.forward_from_to(i, i)
    return [_check_layer(net, i, snapshots[i], stepsize, threshold, seed) for i in targets]


def _check_layer(net, index, bottom_values, stepsize, threshold, seed) -> LayerCheck:
    planned = net.plan.layers[index]
    layer = net.layers[index]
    kind = planned.type
    if hasattr(layer, "param_str"):          # a Python layer: name its class too
        kind += f" ({type(layer).__name__})"
    result = LayerCheck(planned.name, kind)
    if not net.layer_need_backward[index]:
        result.note = "no Backward runs here (it feeds no loss, or nothing below it learns)"
        return result
    check_bottom = [j for j, need in enumerate(net.bottom_need_backward[index]) if need]
    learning = [k for k, flag in enumerate(layer.param_propagate_down[:len(layer.blobs)]) if flag]
    if not check_bottom and not learning:
        result.note = "nothing to check (no bottom takes a gradient, no parameter learns)"
        return result
    bottoms = []
    for values in bottom_values:
        blob = Blob(values.shape, dtype=np.float64)
        blob.data[...] = values
        bottoms.append(blob)
    tops = [Blob(blob.shape, dtype=np.float64, name=blob.name) for blob in net._top_vecs[index]]
    layer.reshape(bottoms, tops)
    kink_range = 2 * stepsize if planned.type in KINKED_TYPES else -1.0
    checker = GradientChecker(stepsize=stepsize, threshold=threshold, seed=seed, kink=0.0,
                              kink_range=kink_range, raise_on_mismatch=False)
    checker.check_layer(layer, bottoms, tops, check_bottom=check_bottom, check_params=True, set_up=False)
    for check in checker.results:
        kind, _, position = check.part.partition(" ")
        if kind == "bottom":
            check.part = f"bottom {position} '{_source_blob(net, planned.bottoms[int(position)])}'"
        elif kind == "param":
            shape = "x".join(str(d) for d in layer.blobs[int(position)].shape) or "scalar"
            check.part = f"param {position} ({shape})"
    result.checks = list(checker.results)
    return result


def _source_blob(net, name):
    """The blob a Split's copy copies (the name the user wrote), else ``name``."""
    for planned in net.plan.layers:
        if planned.is_split and name in planned.tops:
            return _source_blob(net, planned.bottoms[0])
    return name


def fill_inputs(net, rng):
    """Seeded normal values in the net's inputs; small integers in inputs read as labels."""
    bounds = _label_bounds(net)
    for name in net.inputs:
        blob = net.blobs[name]
        if name in bounds:
            blob.data[...] = rng.integers(0, bounds[name], size=blob.shape) if bounds[name] > 0 else 0
        else:
            blob.data[...] = rng.standard_normal(blob.shape)


def _label_bounds(net) -> dict:
    """Inputs some layer reads at a bottom that never takes a gradient: {name: exclusive bound}."""
    consumers = {}
    for planned, layer in zip(net.plan.layers, net.layers):
        for j, name in enumerate(planned.bottoms):
            consumers.setdefault(name, []).append((planned, layer, j))

    def bound(name, seen):
        result = None
        for planned, layer, j in consumers.get(name, ()):
            if planned.is_split:
                for top in planned.tops:
                    if top not in seen:
                        seen.add(top)
                        inner = bound(top, seen)
                        if inner is not None:
                            result = inner if result is None else min(result, inner)
            elif not layer.allow_force_backward(j):
                first = net.blobs[planned.bottoms[0]].shape if j > 0 else ()
                limit = min(first[:2]) if first else 0
                result = limit if result is None else min(result, limit)
        return result

    bounds = {}
    for name in net.inputs:
        value = bound(name, {name})
        if value is not None:
            bounds[name] = value
    return bounds


def report_lines(results, threshold) -> list:
    """The text ``minicaffe gradcheck`` prints: a line per layer and blob, then a summary."""
    lines = []
    name_width = max([len(r.name) for r in results] + [5])
    type_width = max([len(r.type) for r in results] + [4])
    part_width = max([len(c.part) for r in results for c in r.checks] + [4])
    lines.append(f"{'layer':<{name_width}}  {'type':<{type_width}}  {'blob':<{part_width}}  "
                 f"{'elements':>8}  {'max error':>10}  result")
    failed = checked = 0
    for result in results:
        if not result.checks:
            lines.append(f"{result.name:<{name_width}}  {result.type:<{type_width}}  -- {result.note}")
            continue
        for check in result.checks:
            checked += 1
            status = "pass" if check.passed else "FAIL"
            if not check.passed:
                failed += 1
            line = (f"{result.name:<{name_width}}  {result.type:<{type_width}}  {check.part:<{part_width}}  "
                    f"{check.checked:>8}  {check.max_error:>10.3g}  {status}")
            if not check.passed:
                line += f"  (worst: {check.worst})"
            lines.append(line)
    lines.append(f"{checked} blob(s) checked, {failed} failed (threshold {threshold:g})")
    lines.append("FAILED" if failed else "OK")
    return lines
