"""``minicaffe forward``: Forward passes of a net, reported as Caffe reports test outputs.

:func:`run_forward` runs the net on what its data layers give (zeros for its
inputs); :func:`run_feed` feeds its inputs real data (images, ``.npy`` arrays,
folders: :mod:`minicaffe.feed`). Both can keep the blobs asked for and write
them (``.npz`` or a folder of ``.npy``), as Caffe's ``extract_features`` does.
"""

from __future__ import annotations

import warnings

import numpy as np

from .errors import MinicaffeWarning
from .net import Net


def output_line(name, value, loss_weight) -> str:
    """Caffe's form: ``NAME = V`` and, for a weighted output, `` (* W = W*V loss)``."""
    line = f"{name} = {value:.6g}"
    if loss_weight:
        line += f" (* {loss_weight:g} = {loss_weight * value:.6g} loss)"
    return line


def summary_line(name, array) -> str:
    shape = "x".join(str(d) for d in array.shape)
    if array.size == 0:
        return f"{name}: shape {shape}, empty"
    return (f"{name}: shape {shape}, mean {array.mean():.6g}, std {array.std():.6g}, "
            f"min {array.min():.6g}, max {array.max():.6g}")


def fillers_warning(net, weights):
    """The warning for a net with learnable parameters run without weights (None when there is nothing to say)."""
    if weights is not None or not net.learnable_params:
        return None
    count = len(net.learnable_params)
    return (f"no --weights: the net's {count} learnable parameter blob{'s' if count != 1 else ''} hold their "
            "fillers' values (random or constant), not trained weights")


def _warn(message):
    warnings.warn(message, MinicaffeWarning, stacklevel=3)


def _build(path, weights, phase, level, stages, end, warn):
    net = Net(path, phase, level=level, stages=stages, weights=weights, end=end)
    message = fillers_warning(net, weights)
    if message:
        (warn or _warn)(message)
    return net


def run_forward(path, weights=None, phase="TEST", iterations=1, level=0, stages=(), end=None, blobs=None,
                output=None, warn=None):
    """Yield the report lines of ``iterations`` Forward passes of the net at ``path``.

    ``end``: only the layers up to that one are built and run; what was left out is noted first.
    ``blobs``: blob names reported (and kept) besides the outputs; ``output``: a ``.npz`` path or a
    folder the kept blobs (default: the outputs) are written to, concatenated over the iterations
    (:func:`minicaffe.feed.write_outputs`). ``warn``: called with each warning (default: Python's
    warnings, as :class:`MinicaffeWarning`).
    """
    from .feed import Collector, check_blobs

    net = _build(path, weights, phase, level, stages, end, warn)
    for note in net.notes:
        yield "note: " + note
    chosen = check_blobs(net, blobs) if (blobs or output) else None
    collector = Collector(chosen) if output else None
    loss_weights = net.blob_loss_weights
    totals = {}
    total_loss = 0.0
    for iteration in range(iterations):
        outputs = net.forward(blobs=chosen)
        if collector is not None:
            collector.add(outputs, _items_per_pass(net))
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
    if collector is not None:
        yield from _write(output, collector.arrays(), None)


def _items_per_pass(net):
    # the data layer's batch: the first blob's first axis
    first = next(iter(net.blobs.values()), None)
    return first.shape[0] if first is not None and first.shape else 1


def _write(output, arrays, names):
    from .feed import write_outputs

    written = write_outputs(output, arrays, names)
    what = ", ".join(f"{name} ({'x'.join(map(str, array.shape)) or 'scalar'})" for name, array in arrays.items())
    where = output if len(written) == 1 else f"{output} ({len(written)} .npy files)"
    yield f"wrote {what}{' and the input names' if names is not None else ''} to {where}"


def run_feed(path, inputs, preprocessing=None, weights=None, phase="TEST", level=0, stages=(), end=None,
             blobs=None, batch_size=None, output=None, warn=None, progress=False):
    """Yield the report lines of Forward passes of the net at ``path`` over real data.

    ``inputs``: ``NAME=SOURCE`` strings (a bare SOURCE for a net with one
    input), each an image file, a ``.npy`` array or a folder of images
    (:func:`minicaffe.feed.open_source`); ``preprocessing``: a
    :class:`minicaffe.feed.Preprocessing` for the images. The chosen ``blobs``
    (default: the outputs) are collected over the batches, reported as shape and
    statistics, and written to ``output`` (``.npz`` or a folder) when given.
    """
    from .feed import FeedError, Preprocessing, open_source, run, split_input

    net = _build(path, weights, phase, level, stages, end, warn)
    for note in net.notes:
        yield "note: " + note
    preprocessing = preprocessing or Preprocessing()
    sources = {}
    for text in inputs:
        name, source = split_input(text, net.inputs)
        if name in sources:
            raise FeedError(f"input '{name}' is given twice")
        sources[name] = open_source(source, net.blobs[name].shape, preprocessing, name)
        if sources[name].skipped:
            (warn or _warn)(f"input '{name}': skipped {sources[name].skipped} file(s) in '{source}' that are not "
                            "images (by their extension)")
    result = run(net, sources, blobs=blobs, batch_size=batch_size, progress=progress)
    for note in preprocessing.notes:
        yield "note: " + note
    yield (f"Forward of {result.count} item{'s' if result.count != 1 else ''} in {result.batches} "
           f"batch{'es' if result.batches != 1 else ''}")
    for name, array in result.arrays.items():
        yield "    " + summary_line(name, np.asarray(array))
    if output:
        yield from _write(output, result.arrays, result.names)
