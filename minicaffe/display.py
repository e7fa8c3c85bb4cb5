"""How nets, blobs and solvers show themselves: ``repr()`` text and Jupyter's HTML.

:func:`net_facts` gathers what ``minicaffe check`` prints about a net (layers
in run order with their wiring and shapes, parameter counts, loss weights,
need-backward, totals); :func:`minicaffe.check.describe` formats it as the
command's text, :func:`net_text` as ``repr(net)`` and :func:`net_html` as the
table a notebook shows (``Net._repr_html_``). :func:`blob_text`/:func:`blob_html`
and :func:`solver_text`/:func:`solver_html` do the same for a Blob and a Solver.

Nothing here allocates blob memory or moves data: a blob whose current data
is on the GPU says so instead of copying it to the host for its statistics.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from .graph import phase_name


@dataclass
class LayerFacts:
    """One layer of a net, in run order."""
    index: int
    name: str
    type: str
    bottoms: tuple
    tops: tuple                  # (name, in place?, shape text) per top
    params: int | None           # parameter count; None for a layer without parameter blobs
    need_backward: bool
    loss_weights: tuple          # one per top for a loss layer, else ()
    shared: tuple                # "param 0 'w' shared with ip1[0]" per shared parameter
    is_split: bool


@dataclass
class NetFacts:
    """A net's layers and totals, as ``minicaffe check`` reports them."""
    name: str
    phase: str
    level: int
    stages: tuple
    layers: list
    split_count: int
    inputs: list                 # (name, shape text)
    outputs: list
    param_count: int
    param_blobs: int
    partial_params: bool         # layers with unknown shapes were not counted
    data_bytes: int
    dtype: str
    notes: list                  # sentences, without the "note: " prefix
    warnings: list


def format_shape(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def format_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024


def blob_shape_text(net, name) -> str:
    """``(64x1x8x8)``, or ``?`` for a blob whose shape shape inference could not know."""
    if name in net.unknown_shapes:
        return "?"
    return "(" + format_shape(net.blobs[name].shape) + ")"


def net_facts(net) -> NetFacts:
    """Everything :func:`minicaffe.check.describe` and the Net's reprs show; reads no blob data."""
    plan = net.plan
    state = plan.state
    layers = []
    for planned, layer, need_backward in zip(plan.layers, net.layers, net.layer_need_backward):
        layers.append(LayerFacts(
            index=planned.index, name=planned.name, type=planned.type, bottoms=tuple(planned.bottoms),
            tops=tuple((name, in_place, blob_shape_text(net, name))
                       for name, in_place in zip(planned.tops, planned.in_place)),
            params=sum(blob.count for blob in layer.blobs) if layer.blobs else None,
            need_backward=bool(need_backward),
            loss_weights=tuple(planned.loss_weights) if planned.is_loss else (),
            shared=tuple(f"param {share.index} '{share.name}' shared with {share.owner_layer}[{share.owner_index}]"
                         for share in planned.shared_params),
            is_split=planned.is_split))
    learnable = net.learnable_params
    known = [blob for name, blob in net.blobs.items() if name not in net.unknown_shapes]
    notes = [f"shapes from layer '{layer_name}' on are unknown (?): {reason}"
             for layer_name, reason in net.unknown_reasons.items()]
    return NetFacts(
        name=plan.name, phase=phase_name(state.phase), level=state.level, stages=tuple(state.stage),
        layers=layers, split_count=sum(layer.is_split for layer in layers),
        inputs=[(name, blob_shape_text(net, name)) for name in plan.inputs],
        outputs=[(name, blob_shape_text(net, name)) for name in plan.outputs],
        param_count=sum(blob.count for blob in learnable), param_blobs=len(learnable),
        partial_params=bool(net.skipped_layers),
        data_bytes=sum(blob.count for blob in known) * net.dtype.itemsize,
        dtype=np.dtype(net.dtype).name, notes=notes + list(net.notes), warnings=list(plan.warnings))


def wiring_text(layer: LayerFacts) -> str:
    """``pool1 -> conv2 (64x32x4x4)``: bottoms, then tops with their shapes."""
    tops = ", ".join(f"{name}{' (in place)' if in_place else ''} {shape}" for name, in_place, shape in layer.tops)
    return (", ".join(layer.bottoms) + " -> " if layer.bottoms else "-> ") + tops


def layer_notes(layer: LayerFacts) -> list:
    notes = []
    if layer.params is not None:
        notes.append(f"params {layer.params}")
    if layer.need_backward:
        notes.append("backward")
    if layer.loss_weights:
        notes.append("loss_weight " + " ".join(f"{w:g}" for w in layer.loss_weights))
    notes.extend(layer.shared)
    return notes


def layer_lines(facts: NetFacts) -> list:
    """One text line per layer: index, name, type, wiring, then ``[params N; backward; ...]``."""
    name_width = max([len(layer.name) for layer in facts.layers] + [4])
    type_width = max([len(layer.type) for layer in facts.layers] + [4])
    lines = []
    for layer in facts.layers:
        notes = layer_notes(layer)
        suffix = ("   [" + "; ".join(notes) + "]") if notes else ""
        lines.append(f"  {layer.index:3d}  {layer.name:<{name_width}}  {layer.type:<{type_width}}  "
                     f"{wiring_text(layer)}{suffix}")
    return lines


def _blobs_text(blobs) -> str:
    return ", ".join(f"{name} {shape}" for name, shape in blobs) or "none"


def totals_lines(facts: NetFacts) -> list:
    """inputs, outputs, parameters, blob data, then notes and warnings."""
    lines = ["inputs: " + _blobs_text(facts.inputs), "outputs: " + _blobs_text(facts.outputs),
             f"parameters: {facts.param_count:,} in {facts.param_blobs} blobs"
             + (" (not counting the layers with ? shapes)" if facts.partial_params else ""),
             f"blob data: {format_bytes(facts.data_bytes)} as {facts.dtype} (twice that with diffs)"]
    lines += ["note: " + note for note in facts.notes]
    lines += ["warning: " + warning for warning in facts.warnings]
    return lines


# ---------------------------------------------------------------- Net
# repr() of a longer net shows its first and last layers only (the HTML table scrolls instead).
TEXT_LAYERS_SHOWN = (40, 10)


def net_text(net) -> str:
    """``repr(net)``: a header line, one line per layer (the first 40 and last 10 of a long net), the totals."""
    facts = net_facts(net)
    header = (f"<Net '{facts.name}' phase={facts.phase} layers={len(facts.layers)} "
              f"parameters={facts.param_count:,}>")
    lines = layer_lines(facts)
    first, last = TEXT_LAYERS_SHOWN
    if len(lines) > first + last + 1:
        lines = lines[:first] + [f"  ... {len(lines) - first - last} more layers (minicaffe.check.describe(net) "
                                 "or `minicaffe check` lists them all) ..."] + lines[-last:]
    return "\n".join([header] + lines + totals_lines(facts))


_TABLE_STYLE = "border-collapse:collapse;font-size:90%"
_CELL = "padding:1px 8px;text-align:left;vertical-align:top"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def net_html(net) -> str:
    """The Net in a notebook: a table of its layers in run order, then its totals."""
    facts = net_facts(net)
    stages = ", ".join(facts.stages)
    state = f"phase {facts.phase}" + (f", level {facts.level}" if facts.level else "") + \
        (f", stages {stages}" if stages else "")
    head = "".join(f'<th style="{_CELL}">{title}</th>' for title in
                   ("#", "layer", "type", "bottoms", "tops", "params", "loss weight", "backward"))
    rows = []
    for layer in facts.layers:
        tops = "<br>".join(f"{_e(name)} <code>{_e(shape)}</code>" + (" <i>(in place)</i>" if in_place else "")
                           for name, in_place, shape in layer.tops)
        params = "" if layer.params is None else f"{layer.params:,}"
        if layer.shared:
            params += "".join(f"<br><small>{_e(text)}</small>" for text in layer.shared)
        loss = " ".join(f"{w:g}" for w in layer.loss_weights)
        style = ' style="color:#888"' if layer.is_split else ""
        cells = [str(layer.index), f"<b>{_e(layer.name)}</b>", _e(layer.type),
                 "<br>".join(_e(name) for name in layer.bottoms), tops, params, loss,
                 "yes" if layer.need_backward else ""]
        rows.append(f"<tr{style}>" + "".join(f'<td style="{_CELL}">{cell}</td>' for cell in cells) + "</tr>")
    totals = [("parameters", f"{facts.param_count:,} in {facts.param_blobs} blobs"
               + (" (not counting the layers with ? shapes)" if facts.partial_params else "")),
              ("blob data", f"{format_bytes(facts.data_bytes)} as {facts.dtype} (twice that with diffs)"),
              ("inputs", _blobs_text(facts.inputs)), ("outputs", _blobs_text(facts.outputs))]
    totals += [("note", note) for note in facts.notes]
    totals += [("warning", warning) for warning in facts.warnings]
    summary = "".join(f'<tr><th style="{_CELL}">{_e(key)}</th><td style="{_CELL}">{_e(value)}</td></tr>'
                      for key, value in totals)
    splits = f", {facts.split_count} split{'s' if facts.split_count != 1 else ''} inserted" if facts.split_count else ""
    return (f'<div class="minicaffe-net"><p><b>Net</b> <code>{_e(facts.name or "(unnamed)")}</code>, {_e(state)}: '
            f"{len(facts.layers)} layers{splits}</p>"
            f'<div style="max-height:36em;overflow:auto"><table style="{_TABLE_STYLE}">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            f'<table style="{_TABLE_STYLE};margin-top:4px">{summary}</table></div>')


# ---------------------------------------------------------------- Blob
@dataclass
class ArrayStats:
    """Where a blob's data or diff is, and its statistics when they were cheap to compute."""
    where: str                   # "none" (not allocated), "host" or "device"
    mean: float = float("nan")
    std: float = float("nan")
    min: float = float("nan")
    max: float = float("nan")
    nan: int = 0
    inf: int = 0

    def text(self) -> str:
        if self.where == "none":
            return "not allocated"
        if self.where == "device":
            return "on the GPU (not copied to the host for display; read .data to see it)"
        if self.where == "empty":
            return "empty"
        text = f"mean {self.mean:.4g}, std {self.std:.4g}, min {self.min:.4g}, max {self.max:.4g}"
        bad = [f"{count} {what}" for count, what in ((self.nan, "NaN"), (self.inf, "inf")) if count]
        return text + (f" ({', '.join(bad)} not counted)" if bad else "")


def array_stats(blob, which="data") -> ArrayStats:
    """Statistics of ``blob``'s data (or diff) on the host; never allocates, never copies from the GPU."""
    owner = (blob._data_source if which == "data" else blob._diff_source) or blob
    buffer = getattr(owner, "_" + which)
    if buffer is None or buffer.head == "none":
        return ArrayStats("none")
    if buffer.head == "device":
        return ArrayStats("device")
    values = buffer._host
    if values.size == 0:
        return ArrayStats("empty")
    finite = np.isfinite(values)
    nan = int(np.isnan(values).sum()) if not finite.all() else 0
    inf = int(values.size - finite.sum() - nan)
    values = values[finite] if nan or inf else values
    if values.size == 0:
        return ArrayStats("host", nan=nan, inf=inf)
    values64 = values.astype(np.float64, copy=False)
    return ArrayStats("host", float(values64.mean()), float(values64.std()), float(values.min()),
                      float(values.max()), nan, inf)


def blob_text(blob) -> str:
    """``repr(blob)``: name, shape, dtype and the data's statistics (the diff's too where it has one)."""
    name = f" '{blob.name}'" if blob.name else ""
    text = f"<Blob{name} shape={blob.shape} dtype={blob.dtype.name} data: {array_stats(blob).text()}"
    diff = array_stats(blob, "diff")
    if diff.where != "none":
        text += f"; diff: {diff.text()}"
    return text + ">"


def blob_html(blob) -> str:
    rows = [("shape", f"{format_shape(blob.shape)} ({blob.count:,} values)"), ("dtype", blob.dtype.name),
            ("data", array_stats(blob).text())]
    diff = array_stats(blob, "diff")
    if diff.where != "none":
        rows.append(("diff", diff.text()))
    body = "".join(f'<tr><th style="{_CELL}">{key}</th><td style="{_CELL}">{_e(value)}</td></tr>'
                   for key, value in rows)
    title = f" <code>{_e(blob.name)}</code>" if blob.name else ""
    return f'<div class="minicaffe-blob"><b>Blob</b>{title}<table style="{_TABLE_STYLE}">{body}</table></div>'


# ---------------------------------------------------------------- Solver
def _solver_state(solver) -> dict:
    param = solver.param
    try:
        rate = f"{solver.lr:.6g}"
    except Exception as exc:  # a policy that cannot be evaluated still lets the solver show itself
        rate = f"unknown ({exc})"
    if solver.losses or solver.iter:
        loss = f"{solver.smoothed_loss:.6g}"
    else:
        loss = "none yet"
    return {"type": type(solver).__name__, "net": solver.net.plan.name, "rate": rate, "loss": loss,
            "policy": param.lr_policy or "fixed", "average": max(1, param.average_loss)}


def solver_text(solver) -> str:
    """``repr(solver)``: type, net, iteration, learning rate and the last smoothed loss."""
    state = _solver_state(solver)
    return (f"<{state['type']} net='{state['net']}' iter={solver.iter} lr={state['rate']} "
            f"smoothed_loss={state['loss']}>")


def solver_html(solver) -> str:
    state = _solver_state(solver)
    param = solver.param
    loss = state["loss"] + (f" (average of the last {state['average']} iterations)"
                            if state["average"] > 1 and state["loss"] != "none yet" else "")
    rows = [("net", f"'{state['net']}'"),
            ("test nets", ", ".join(f"'{net.plan.name}'" for net in solver.test_nets) or "none"),
            ("iteration", f"{solver.iter} of max_iter {param.max_iter}"),
            ("learning rate", f"{state['rate']} ({state['policy']} policy, base_lr {param.base_lr:g})"),
            ("smoothed loss", loss)]
    body = "".join(f'<tr><th style="{_CELL}">{_e(key)}</th><td style="{_CELL}">{_e(value)}</td></tr>'
                   for key, value in rows)
    return (f'<div class="minicaffe-solver"><b>{_e(state["type"])}</b>'
            f'<table style="{_TABLE_STYLE}">{body}</table></div>')
