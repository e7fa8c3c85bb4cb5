"""``minicaffe check``: read a net, build it for one NetState without allocating
blob memory, and describe it: wiring, shapes, parameters, need-backward.

Kept apart from the CLI so notebooks and tests can call :func:`check_net` and
read the same text the command prints.
"""

from __future__ import annotations

import numpy as np

from .graph import TRAIN, phase_name
from .net import Net


def check_net(path, phase="TRAIN", level=0, stages=(), input_shapes=None, end=None) -> Net:
    """A shapes-only Net for ``path``: every shape and rule checked, no blob memory allocated.

    ``end``: only the layers up to that one (see :class:`minicaffe.net.Net`).
    Raises a MinicaffeError naming the file, layer or blob if the net is invalid.
    """
    return Net(path, phase, level=level, stages=stages, input_shapes=input_shapes,
               shape_inference=True, end=end)


def format_shape(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def describe(net: Net, end=None) -> str:
    """The checked net as text: one line per layer, then inputs, outputs and totals.

    A net with no loss (no top with a nonzero loss_weight: Caffe computes the
    loss from those only) gets a last line: a warning in the TRAIN phase, where
    training it would compute no gradients; a note in the TEST phase, where a
    deploy net rightly has none. ``end``: the --end LAYER the net was cut at.
    """
    plan = net.plan
    state = plan.state
    split_count = sum(layer.is_split for layer in plan.layers)
    lines = [
        f"net: {plan.name or '(unnamed)'}",
        f"state: phase {phase_name(state.phase)}, level {state.level}, stages: {', '.join(state.stage) or 'none'}",
        f"layers: {len(plan.layers)} ({split_count} split{'s' if split_count != 1 else ''} inserted)",
    ]
    name_width = max([len(layer.name) for layer in plan.layers] + [4])
    type_width = max([len(layer.type) for layer in plan.layers] + [4])
    for planned, layer, need_backward in zip(plan.layers, net.layers, net.layer_need_backward):
        tops = ", ".join(f"{name}{' (in place)' if in_place else ''} {_blob_shape(net, name)}"
                         for name, in_place in zip(planned.tops, planned.in_place))
        wiring = (", ".join(planned.bottoms) + " -> " if planned.bottoms else "-> ") + tops
        notes = []
        if layer.blobs:
            notes.append(f"params {sum(blob.count for blob in layer.blobs)}")
        if need_backward:
            notes.append("backward")
        if planned.is_loss:
            notes.append("loss_weight " + " ".join(f"{w:g}" for w in planned.loss_weights))
        for share in planned.shared_params:
            notes.append(f"param {share.index} '{share.name}' shared with {share.owner_layer}[{share.owner_index}]")
        suffix = ("   [" + "; ".join(notes) + "]") if notes else ""
        lines.append(f"  {planned.index:3d}  {planned.name:<{name_width}}  {planned.type:<{type_width}}  {wiring}{suffix}")
    lines.append("inputs: " + (", ".join(f"{n} {_blob_shape(net, n)}" for n in plan.inputs) or "none"))
    lines.append("outputs: " + (", ".join(f"{n} {_blob_shape(net, n)}" for n in plan.outputs) or "none"))
    learnable = net.learnable_params
    total = sum(blob.count for blob in learnable)
    known = [blob for name, blob in net.blobs.items() if name not in net.unknown_shapes]
    data_bytes = sum(blob.count for blob in known) * net.dtype.itemsize
    lines.append(f"parameters: {total:,} in {len(learnable)} blobs"
                 + (" (not counting the layers with ? shapes)" if net.skipped_layers else ""))
    lines.append(f"blob data: {format_bytes(data_bytes)} as {np.dtype(net.dtype).name} "
                 "(twice that with diffs)")
    for layer_name, reason in net.unknown_reasons.items():
        lines.append(f"note: shapes from layer '{layer_name}' on are unknown (?): {reason}")
    for note in net.notes:
        lines.append("note: " + note)
    for warning in plan.warnings:
        lines.append("warning: " + warning)
    return "\n".join(lines + _no_loss_lines(net, end))


def _no_loss_lines(net, end=None) -> list:
    if any(planned.is_loss for planned in net.plan.layers):
        return []
    if end is not None:
        return [f"note: no loss among the layers up to '{end}' (--end)"]
    if net.phase == TRAIN:
        return ["warning: no loss: no top has a nonzero loss_weight, so training this net computes no "
                "gradients (add a loss layer, or a loss_weight on a top)"]
    return ["note: no loss (fine for a deploy net): no top has a nonzero loss_weight"]


def format_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024


def _blob_shape(net, name):
    if name in net.unknown_shapes:
        return "?"
    return "(" + format_shape(net.blobs[name].shape) + ")"
