"""``minicaffe check``: read a net, build it for one NetState without allocating
blob memory, and describe it: wiring, shapes, parameters, need-backward.

Kept apart from the CLI so notebooks and tests can call :func:`check_net` and
read the same text the command prints.
"""

from __future__ import annotations

from .display import layer_lines, net_facts, totals_lines
from .display import format_bytes, format_shape  # noqa: F401  (kept importable from here, where they were)
from .graph import TRAIN
from .net import Net


NOT_RUN_REASON = ("`minicaffe check` imports no Python layer's module unless given --run-python-layers "
                  "(importing runs its code)")


def check_net(path, phase="TRAIN", level=0, stages=(), input_shapes=None, end=None, max_memory=None,
              run_python_layers=False) -> Net:
    """A shapes-only Net for ``path``: every shape and rule checked, no blob memory allocated.

    ``end``: only the layers up to that one (see :class:`minicaffe.net.Net`).
    ``max_memory``: the limit :func:`describe`'s memory line compares the estimate with.
    ``run_python_layers``: import Python layers' modules (``.caffeinit`` ones too) and run their
    ``setup``/``reshape`` to know their shapes; by default their code is not run (a net one was sent
    may carry any code) and their tops are ``?``, with a note saying why.
    Raises a MinicaffeError naming the file, layer or blob if the net is invalid.
    """
    from contextlib import nullcontext

    from .layers.python_layer import python_code_not_run
    with nullcontext() if run_python_layers else python_code_not_run(NOT_RUN_REASON):
        return Net(path, phase, level=level, stages=stages, input_shapes=input_shapes,
                   shape_inference=True, end=end, max_memory=max_memory)


def describe(net: Net, end=None) -> str:
    """The checked net as text: one line per layer, then inputs, outputs and totals.

    A net with no loss (no top with a nonzero loss_weight: Caffe computes the
    loss from those only) gets a last line: a warning in the TRAIN phase, where
    training it would compute no gradients; a note in the TEST phase, where a
    deploy net rightly has none. ``end``: the --end LAYER the net was cut at.

    The facts come from :func:`minicaffe.display.net_facts`, which ``repr(net)``
    and the notebook table (``Net._repr_html_``) show too.
    """
    facts = net_facts(net)
    lines = [
        f"net: {facts.name or '(unnamed)'}",
        f"state: phase {facts.phase}, level {facts.level}, stages: {', '.join(facts.stages) or 'none'}",
        f"layers: {len(facts.layers)} ({facts.split_count} split{'s' if facts.split_count != 1 else ''} inserted)",
    ]
    return "\n".join(lines + layer_lines(facts) + totals_lines(facts) + [_memory_line(net)]
                     + _no_loss_lines(net, end))


def _memory_line(net) -> str:
    """``memory: ~X to run Forward (Y with Backward), limit Z (source)`` (minicaffe.memory_budget)."""
    from .memory_budget import summary_line
    return summary_line(net)


def _no_loss_lines(net, end=None) -> list:
    if any(planned.is_loss for planned in net.plan.layers):
        return []
    if end is not None:
        return [f"note: no loss among the layers up to '{end}' (--end)"]
    if net.phase == TRAIN:
        return ["warning: no loss: no top has a nonzero loss_weight, so training this net computes no "
                "gradients (add a loss layer, or a loss_weight on a top)"]
    return ["note: no loss (fine for a deploy net): no top has a nonzero loss_weight"]
