"""Drawing a net: pycaffe's ``caffe.draw``, over a ``caffe_pb2.NetParameter``.

Each layer is a box (coloured by type; an in-place layer such as a ReLU that
writes over its bottom is green), each blob an octagon, and arrows run from
bottoms to layers to tops. :func:`get_pydot_graph` builds the graph with
pydot, :func:`draw_net` renders it to bytes, :func:`draw_net_to_file` writes
it with the format named by the file's extension::

    from minicaffe import draw
    from minicaffe.proto.text import read_net

    draw.draw_net_to_file(read_net("lenet_train_test.prototxt"), "lenet.png")

In a notebook, :func:`draw_net_inline` (minicaffe) takes a Net, a
NetParameter or a prototxt path and returns a :class:`NetDrawing`, which
Jupyter shows as SVG::

    draw.draw_net_inline(net)          # the last line of a cell: the drawing, inline

pydot comes with the ``draw`` extra (``pip install 'minicaffe[draw]'``).
DOT text (``.dot``, ``.gv``, or pycaffe's ``.raw``) needs nothing more;
images (png, svg, pdf, jpg, ...) are laid out by Graphviz's ``dot`` program,
which must be on PATH (Debian/Ubuntu: ``apt-get install graphviz``).

Where this differs from pycaffe, it is where pycaffe fails or draws wrongly:

* legacy nets (V0/V1 ``layers {...}``, net-level ``input:``) are drawn from
  an upgraded copy, so they show their layers (pycaffe drew an empty graph);
* every layer is its own box: pycaffe merged layers sharing a name and type
  (the TRAIN and TEST data layers of most examples) into one;
* every blob has the blob style (pycaffe left net outputs unstyled), and the
  module's style dicts are never modified;
* kernel, stride and pad show both sides when they differ (``3x5``), from
  ``kernel_h``/``kernel_w`` too, and global pooling says so;
* with ``phase``, an include or exclude rule that sets no phase does not
  restrict the phase, as in Caffe (pycaffe read it as TRAIN); levels and
  stages are not considered, as in pycaffe;
* names are quoted and escaped for DOT, so any layer or blob name draws;
* rendering runs ``dot`` directly and raises a minicaffe error with its
  message instead of printing it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from .errors import GraphError, MinicaffeError
from .graph import phase_value
from .proto import caffe_pb2
from .proto.upgrade import net_needs_upgrade, upgrade_net

__all__ = ["get_pooling_types_dict", "get_edge_label", "get_layer_lr_mult", "get_layer_label",
           "choose_color_by_layertype", "get_pydot_graph", "draw_net", "draw_net_to_file",
           "draw_net_inline", "NetDrawing",
           "LAYER_STYLE_DEFAULT", "NEURON_LAYER_STYLE", "BLOB_STYLE", "RANKDIRS", "DOT_TEXT_FORMATS"]

# pycaffe's node styles (module constants there too; read, never modified here).
LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}

RANKDIRS = ("LR", "TB", "BT", "RL")
# Extensions written as DOT text, without Graphviz. pycaffe's docstring offers
# ".raw" for this (pydot's name for its own unrendered output).
DOT_TEXT_FORMATS = ("dot", "gv", "raw")

_SPATIAL_TYPES = ("Convolution", "Deconvolution", "Pooling")
_LEARNING_TYPES = ("Convolution", "Deconvolution", "InnerProduct")
# Characters a Graphviz record label treats as structure.
_RECORD_SPECIALS = str.maketrans({c: "\\" + c for c in "{}|<>"})


def _import_pydot():
    try:
        import pydot
    except ImportError:
        raise MinicaffeError("drawing nets needs the 'pydot' package, which is not installed: "
                             "pip install 'minicaffe[draw]'") from None
    return pydot


def _quote(text) -> str:
    """``text`` as a DOT double-quoted string (pydot passes such strings through as they are)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def get_pooling_types_dict() -> dict:
    """PoolingParameter's pool methods, number -> name (``{0: 'MAX', 1: 'AVE', 2: 'STOCHASTIC'}``)."""
    enum = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR
    return {value.number: name for name, value in enum.values_by_name.items()}


def get_edge_label(layer) -> str:
    """The label of the arrows from ``layer`` to its tops, as pycaffe gives it.

    ``Batch N`` for a Data layer, ``num_output`` for Convolution,
    Deconvolution and InnerProduct, and ``'""'`` (DOT's empty string) for
    every other type.
    """
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer) -> tuple:
    """The learning rate multipliers (weights, bias) of a Convolution, Deconvolution or InnerProduct layer.

    A missing ``param`` counts as 1.0, as in Caffe. Other layer types raise
    ValueError, as in pycaffe.
    """
    if layer.type not in _LEARNING_TYPES:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    mults = [spec.lr_mult for spec in layer.param[:2]]
    mults += [1.0] * (2 - len(mults))
    return tuple(mults)


def _dims_text(values) -> str:
    """``3`` for equal sizes on every axis, ``3x5`` otherwise."""
    values = [int(v) for v in values]
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def _conv_geometry(conv):
    """(kernel, stride, pad) texts of a ConvolutionParameter; unset sizes read as Caffe's defaults."""
    def pick(repeated, h_name, w_name, default):
        if conv.HasField(h_name) or conv.HasField(w_name):
            return _dims_text([getattr(conv, h_name), getattr(conv, w_name)])
        return _dims_text(repeated) if len(repeated) else str(default)
    # pycaffe shows 1 for a convolution with no kernel size at all.
    return (pick(conv.kernel_size, "kernel_h", "kernel_w", 1),
            pick(conv.stride, "stride_h", "stride_w", 1),
            pick(conv.pad, "pad_h", "pad_w", 0))


def _pool_geometry(pool):
    """(kernel, stride, pad) texts of a PoolingParameter."""
    def pick(single, h_name, w_name):
        if pool.HasField(h_name) or pool.HasField(w_name):
            return _dims_text([getattr(pool, h_name), getattr(pool, w_name)])
        return str(single)
    kernel = "global" if pool.global_pooling else pick(pool.kernel_size, "kernel_h", "kernel_w")
    return kernel, pick(pool.stride, "stride_h", "stride_w"), pick(pool.pad, "pad_h", "pad_w")


def get_layer_label(layer, rankdir, display_lrm=False) -> str:
    """The text in ``layer``'s box, as a DOT quoted string, outer double quotes included.

    Name, type (with the pool method for Pooling), kernel size, stride and pad
    for Convolution, Deconvolution and Pooling, and, with ``display_lrm``, the
    learning rate multipliers of learning layers when any is non-zero. The
    parts go on separate lines when ``rankdir`` lays the graph out
    horizontally (``LR``, ``RL``), and on one line for ``TB``/``BT``, where
    width is free.
    """
    # DOT's line-break escape, written into the label as backslash-n.
    separator = " " if str(rankdir).upper() in ("TB", "BT") else r"\n"
    if layer.type == "Pooling":
        pool_name = get_pooling_types_dict().get(layer.pooling_param.pool, str(layer.pooling_param.pool))
        parts = [layer.name, f"({layer.type} {pool_name})"]
    else:
        parts = [layer.name, f"({layer.type})"]
    if layer.type in _SPATIAL_TYPES:
        if layer.type == "Pooling":
            kernel, stride, pad = _pool_geometry(layer.pooling_param)
        else:
            kernel, stride, pad = _conv_geometry(layer.convolution_param)
        parts += [f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]
    if display_lrm and layer.type in _LEARNING_TYPES:
        weight_mult, bias_mult = get_layer_lr_mult(layer)
        if weight_mult or bias_mult:
            parts.append(f"lr mult: {weight_mult:.1f}, {bias_mult:.1f}")
    # Escaped part by part, so that the separator stays DOT's line break.
    escaped = [_quote(part)[1:-1].translate(_RECORD_SPECIALS) for part in parts]
    return '"' + separator.join(escaped) + '"'


def choose_color_by_layertype(layertype) -> str:
    """The fill colour of a layer box: red for (de)convolution, orange for pooling,
    purple for inner product, blue for the rest."""
    if layertype in ("Convolution", "Deconvolution"):
        return "#FF5050"
    if layertype == "Pooling":
        return "#FF9900"
    if layertype == "InnerProduct":
        return "#CC33FF"
    return "#6495ED"


def _current_format(caffe_net):
    """``caffe_net`` itself, or an upgraded copy when it is in a legacy format."""
    if not isinstance(caffe_net, caffe_pb2.NetParameter):
        raise TypeError(f"caffe_net must be a caffe_pb2.NetParameter, not {type(caffe_net).__name__} "
                        "(read a prototxt with minicaffe.proto.text.read_net)")
    if not net_needs_upgrade(caffe_net):
        return caffe_net
    upgraded = caffe_pb2.NetParameter()
    upgraded.CopyFrom(caffe_net)
    upgrade_net(upgraded, source=caffe_net.name or "<net>")
    return upgraded


def _in_phase(layer, phase) -> bool:
    """Whether ``layer``'s include/exclude rules keep it in ``phase`` (levels and stages not considered)."""
    if layer.include and layer.exclude:
        raise GraphError("specify either include rules or exclude rules, not both", layer=layer.name)
    if layer.include:
        return any(not rule.HasField("phase") or rule.phase == phase for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == phase for rule in layer.exclude)


def _unique(base, taken):
    name, count = base, 1
    while name in taken:
        count += 1
        name = f"{base}#{count}"
    taken.add(name)
    return name


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The ``pydot.Dot`` graph of ``caffe_net`` (a caffe_pb2.NetParameter, legacy formats too).

    ``rankdir`` is the layout direction: ``LR`` (left to right), ``TB`` (top
    to bottom), ``BT`` or ``RL``. ``label_edges`` labels the arrows out of
    data, convolution and inner product layers (batch size, num_output).
    ``phase`` (``caffe_pb2.TRAIN``/``TEST``, or ``"TRAIN"``/``"TEST"``) draws
    only the layers kept in that phase by their include/exclude rules; None
    draws every layer. ``display_lrm`` adds the learning rate multipliers to
    learning layers' labels. ``graph.to_string()`` is the DOT text.
    """
    pydot = _import_pydot()
    net = _current_format(caffe_net)
    direction = str(rankdir).upper()
    if direction not in RANKDIRS:
        raise MinicaffeError(f"unknown rankdir {rankdir!r}: use one of {', '.join(RANKDIRS)}")
    if phase is not None:
        phase = phase_value(phase)
    graph = pydot.Dot(_quote(net.name or "Net"), graph_type="digraph", rankdir=direction)
    taken = set()
    blob_nodes = {}
    edges = []

    def blob_node(blob):
        if blob not in blob_nodes:
            blob_nodes[blob] = pydot.Node(_quote(_unique(blob, taken)), label=_quote(blob), **BLOB_STYLE)
            graph.add_node(blob_nodes[blob])
        return blob_nodes[blob]

    for layer in net.layer:
        if phase is not None and not _in_phase(layer, phase):
            continue
        in_place = len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        style = dict(NEURON_LAYER_STYLE if in_place else LAYER_STYLE_DEFAULT)
        if not in_place:
            style["fillcolor"] = choose_color_by_layertype(layer.type)
        node = pydot.Node(_quote(_unique(f"{layer.name}_{layer.type}", taken)),
                          label=get_layer_label(layer, direction, display_lrm=display_lrm), **style)
        graph.add_node(node)
        for bottom in layer.bottom:
            edges.append((blob_node(bottom), node, None))
        top_label = get_edge_label(layer) if label_edges else '""'
        for top in layer.top:
            edges.append((node, blob_node(top), None if top_label == '""' else _quote(top_label)))
    for source, target, label in edges:
        attrs = {} if label is None else {"label": label}
        graph.add_edge(pydot.Edge(source, target, **attrs))
    return graph


def _render(dot_text: str, fmt: str) -> bytes:
    """Lay out ``dot_text`` with Graphviz's ``dot`` and return the ``fmt`` output."""
    program = shutil.which("dot")
    if program is None:
        raise MinicaffeError(f"drawing {fmt} needs Graphviz's 'dot' program, which is not on PATH: install "
                             "Graphviz (Debian/Ubuntu: apt-get install graphviz), or write DOT text "
                             "(.dot or .gv), which needs no Graphviz")
    try:
        done = subprocess.run([program, f"-T{fmt}"], input=dot_text.encode("utf-8"),
                              capture_output=True, check=False)
    except OSError as exc:
        raise MinicaffeError(f"cannot run Graphviz's 'dot' ({program}): {exc.strerror or exc}") from None
    if done.returncode != 0 or not done.stdout:
        message = " ".join(done.stderr.decode("utf-8", "replace").split())[:500]
        raise MinicaffeError(f"Graphviz's dot could not draw format {fmt!r}: "
                             f"{message or f'exit status {done.returncode}'}")
    return done.stdout


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False) -> bytes:
    """``caffe_net`` drawn in format ``ext`` (``png``, ``svg``, ``pdf``, ``jpg``, ... or ``dot``), as bytes.

    ``dot``, ``gv`` and ``raw`` give the DOT text (UTF-8) without running
    Graphviz; the other formats are rendered by Graphviz's ``dot`` program.
    The other arguments are :func:`get_pydot_graph`'s.
    """
    fmt = str(ext).lower().lstrip(".")
    text = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm).to_string()
    if fmt in DOT_TEXT_FORMATS:
        return text.encode("utf-8")
    return _render(text, fmt)


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Draw ``caffe_net`` into ``filename``, in the format its extension names.

    ``.png``, ``.svg``, ``.pdf``, ``.jpg`` ... need Graphviz's ``dot``;
    ``.dot``/``.gv`` (and pycaffe's ``.raw``) are DOT text, written without
    it. Nothing is written when drawing fails. See :func:`get_pydot_graph`
    for the other arguments.
    """
    filename = os.fspath(filename)
    ext = os.path.splitext(filename)[1][1:]
    if not ext:
        raise MinicaffeError(f"{filename}: no extension to tell the format from "
                             "(use .png, .svg, .pdf, .jpg, or .dot for DOT text)")
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    try:
        with open(filename, "wb") as out:
            out.write(data)
    except OSError as exc:
        raise MinicaffeError(f"{filename}: cannot write: {exc.strerror or exc}") from None


class NetDrawing:
    """A drawn net that a notebook shows inline (``_repr_svg_``); ``svg`` is the SVG text.

    Made by :func:`draw_net_inline`; ``save(path)`` writes the SVG to a file.
    """

    def __init__(self, svg: str, name: str = ""):
        # Graphviz writes an XML declaration and a DOCTYPE before <svg>; HTML pages want the element alone.
        start = svg.find("<svg")
        self.svg = svg[start:] if start >= 0 else svg
        self.name = name

    def _repr_svg_(self):
        return self.svg

    def save(self, filename):
        """Write the SVG to ``filename``."""
        with open(os.fspath(filename), "w", encoding="utf-8") as out:
            out.write(self.svg)

    def __repr__(self):
        return (f"<NetDrawing of net '{self.name}': {len(self.svg):,} characters of SVG; "
                "a notebook shows it inline, .save(path) writes it>")


def draw_net_inline(net, rankdir="LR", phase=None, display_lrm=False) -> NetDrawing:
    """``net`` drawn as SVG for a notebook: the last expression of a cell shows the drawing inline.

    ``net`` is a :class:`minicaffe.Net` (drawn with the layers of its phase,
    level and stages, without the Split layers Caffe inserts), a
    ``caffe_pb2.NetParameter`` or the path of a ``.prototxt``; the other
    arguments are :func:`get_pydot_graph`'s (``phase`` only for the last two).
    Rendering needs Graphviz's ``dot`` program: without it this raises a
    MinicaffeError that says so (``draw_net(..., ext="dot")`` needs no Graphviz).
    """
    if isinstance(net, (str, os.PathLike)):
        from .proto.text import read_net
        net = read_net(net)
    elif not isinstance(net, caffe_pb2.NetParameter):
        plan = getattr(net, "plan", None)
        if plan is None:
            raise TypeError(f"draw_net_inline needs a Net, a NetParameter or a .prototxt path, "
                            f"not {type(net).__name__}")
        net, phase = _without_inserted_splits(plan), None
    svg = draw_net(net, rankdir, ext="svg", phase=phase, display_lrm=display_lrm)
    return NetDrawing(svg.decode("utf-8"), net.name)


def _without_inserted_splits(plan) -> "caffe_pb2.NetParameter":
    """The layers a Net built (its phase, level and stages), less the Split layers Caffe inserted,
    with the bottoms those fed renamed back to the blobs they copied."""
    drawn = caffe_pb2.NetParameter(name=plan.name)
    original = {}       # split copy -> the blob it copies
    for planned in plan.layers:
        inserted = (planned.is_split and planned.name.endswith("_split") and len(planned.bottoms) == 1
                    and list(planned.tops) == [f"{planned.name}_{k}" for k in range(len(planned.tops))])
        if inserted:
            for top in planned.tops:
                original[top] = original.get(planned.bottoms[0], planned.bottoms[0])
            continue
        layer = drawn.layer.add()
        layer.CopyFrom(planned.param)
        layer.bottom[:] = [original.get(name, name) for name in layer.bottom]
    return drawn
