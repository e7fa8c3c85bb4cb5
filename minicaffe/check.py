"""``minicaffe check``: read a net, plan it for one NetState, describe the plan.

Kept apart from the CLI so notebooks and tests can call :func:`check_net` and
read the same text the command prints.
"""

from __future__ import annotations

from .graph import NetPlan, phase_name, plan_net
from .proto.text import read_net


def check_net(path, phase="TRAIN", level=0, stages=()) -> NetPlan:
    """Read, upgrade and plan the net at ``path``; raise a MinicaffeError if it is invalid."""
    return plan_net(read_net(path), phase=phase, level=level, stages=stages)


def describe_plan(plan: NetPlan) -> str:
    """The plan as text: one line per layer (bottoms -> tops), loss weights, sharing."""
    state = plan.state
    stages = ", ".join(state.stage) or "none"
    split_count = sum(layer.is_split for layer in plan.layers)
    lines = [
        f"net: {plan.name or '(unnamed)'}",
        f"state: phase {phase_name(state.phase)}, level {state.level}, stages: {stages}",
        f"layers: {len(plan.layers)} ({split_count} split{'s' if split_count != 1 else ''} inserted)",
    ]
    name_width = max([len(layer.name) for layer in plan.layers] + [4])
    type_width = max([len(layer.type) for layer in plan.layers] + [4])
    for layer in plan.layers:
        wiring = ", ".join(layer.bottoms)
        wiring = (wiring + " -> " if wiring else "-> ") + ", ".join(_top_label(layer, j) for j in range(len(layer.tops)))
        notes = []
        if layer.is_loss:
            notes.append("loss_weight " + " ".join(f"{w:g}" for w in layer.loss_weights))
        for share in layer.shared_params:
            notes.append(f"param {share.index} '{share.name}' shared with {share.owner_layer}[{share.owner_index}]")
        suffix = ("   [" + "; ".join(notes) + "]") if notes else ""
        lines.append(f"  {layer.index:3d}  {layer.name:<{name_width}}  {layer.type:<{type_width}}  {wiring}{suffix}")
    lines.append("inputs: " + (", ".join(plan.inputs) or "none"))
    lines.append("outputs: " + (", ".join(plan.outputs) or "none"))
    for warning in plan.warnings:
        lines.append("warning: " + warning)
    return "\n".join(lines)


def _top_label(layer, j):
    return layer.tops[j] + (" (in place)" if layer.in_place[j] else "")
