"""``minicaffe forward``: Forward passes of a net, reported as Caffe reports test outputs."""

from __future__ import annotations

import numpy as np

from .net import Net


def output_line(name, value, loss_weight) -> str:
    """Caffe's form: ``NAME = V`` and, for a weighted output, `` (* W = W*V loss)``."""
    line = f"{name} = {value:.6g}"
    if loss_weight:
        line += f" (* {loss_weight:g} = {loss_weight * value:.6g} loss)"
    return line


def summary_line(name, array) -> str:
    shape = "x".join(str(d) for d in array.shape)
    return (f"{name}: shape {shape}, mean {array.mean():.6g}, std {array.std():.6g}, "
            f"min {array.min():.6g}, max {array.max():.6g}")


def run_forward(path, weights=None, phase="TEST", iterations=1, level=0, stages=(), end=None):
    """Yield the report lines of ``iterations`` Forward passes of the net at ``path``.

    ``end``: only the layers up to that one are built and run; what was left out is noted first.
    """
    net = Net(path, phase, level=level, stages=stages, weights=weights, end=end)
    for note in net.notes:
        yield "note: " + note
    loss_weights = net.blob_loss_weights
    totals = {}
    total_loss = 0.0
    for iteration in range(iterations):
        outputs = net.forward()
        total_loss += net.last_loss
        yield f"Iteration {iteration}, loss = {net.last_loss:.6g}"
        for name, array in outputs.items():
            if array.size == 1:
                value = float(array.reshape(-1)[0])
                totals[name] = totals.get(name, 0.0) + value
                yield "    " + output_line(name, value, loss_weights[name])
            else:
                weighted = f" (* {loss_weights[name]:g}: sum {array.sum():.6g})" if loss_weights[name] else ""
                yield "    " + summary_line(name, np.asarray(array)) + weighted
    if iterations > 1 and totals:
        yield f"Averages over {iterations} iterations:"
        for name, total in totals.items():
            yield "    " + output_line(name, total / iterations, loss_weights[name])
    yield f"Loss: {total_loss / iterations:.6g}"
