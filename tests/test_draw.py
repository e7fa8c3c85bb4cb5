"""Drawing nets (pycaffe's caffe.draw) and the `minicaffe draw` command.

The DOT text is checked everywhere; rendered images only where Graphviz's
`dot` program is installed.
"""

import importlib
import shutil
import sys

import pytest
from click.testing import CliRunner
from google.protobuf import text_format

from minicaffe import draw
from minicaffe.cli import main
from minicaffe.errors import GraphError, MinicaffeError
from minicaffe.proto import caffe_pb2

pydot = pytest.importorskip("pydot")

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot program is not installed (apt-get install graphviz)")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# A small classifier: an in-place ReLU, TRAIN/TEST data layers, a TEST-only accuracy.
SMALL_NET = """
name: "small"
layer { name: "train_data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 4 dim: 1 dim: 8 dim: 8 } shape { dim: 4 } }
        include { phase: TRAIN } }
layer { name: "test_data" type: "Data" top: "data" top: "label"
        data_param { source: "nowhere" batch_size: 2 } include { phase: TEST } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 3 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss"
        exclude { phase: TEST } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
        include { phase: TEST } }
"""

# Caffe's V1 format: `layers` with enum types, net-level inputs.
V1_NET = """
name: "legacy"
input: "data"
input_dim: 1 input_dim: 1 input_dim: 6 input_dim: 6
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
         blobs_lr: 1 blobs_lr: 2 convolution_param { num_output: 2 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "prob" type: SOFTMAX bottom: "conv" top: "prob" }
"""


def net_from_text(text):
    """As pycaffe's test reads nets: merged raw, not upgraded."""
    net = caffe_pb2.NetParameter()
    text_format.Merge(text, net)
    return net


def unquote(value):
    return value[1:-1] if value and value.startswith('"') else value


def node_labels(graph):
    """Node label texts by node name (DOT quoting removed)."""
    return {node.get_name(): unquote(node.get("label")) for node in graph.get_nodes()}


def edges_by_label(graph):
    """The graph's arrows as (source label, target label) pairs, names as drawn."""
    labels = node_labels(graph)
    return {(labels[edge.get_source()], labels[edge.get_destination()]) for edge in graph.get_edges()}


def layer_names(graph):
    """The layer names drawn: the first line of each box's label."""
    return {label.split("\\n")[0] for node, label in node_labels(graph).items()
            if "\\n(" in label}


def test_dot_text_names_every_layer_and_blob_with_in_place_relu():
    net = net_from_text(SMALL_NET)
    graph = draw.get_pydot_graph(net, "LR")
    text = graph.to_string()
    assert text.startswith('digraph "small" {')
    for layer in net.layer:
        assert f'label="{layer.name}\\n({layer.type}' in text
    blobs = {name for layer in net.layer for name in [*layer.bottom, *layer.top]}
    for blob in blobs:
        assert f'label="{blob}", shape=octagon' in text
    # Each blob is one node, shared by its writers and readers; the in-place ReLU reads and writes conv1.
    edges = edges_by_label(graph)
    relu = "relu1\\n(ReLU)"
    assert ("conv1", relu) in edges and (relu, "conv1") in edges
    assert ("conv1", "pool1\\n(Pooling AVE)\\nkernel size: 2\\nstride: 2\\npad: 0") in edges
    assert len(graph.get_edges()) == sum(len(layer.bottom) + len(layer.top) for layer in net.layer)
    relu_node = next(node for node in graph.get_nodes() if node_labels(graph)[node.get_name()] == relu)
    assert unquote(relu_node.get("fillcolor")) == draw.NEURON_LAYER_STYLE["fillcolor"]
    # The module's styles stay as they are (pycaffe recoloured its default style in place).
    assert draw.LAYER_STYLE_DEFAULT["fillcolor"] == "#6495ED"


def test_edge_labels_give_batch_size_and_num_output():
    graph = draw.get_pydot_graph(net_from_text(SMALL_NET), "LR")
    labels = {unquote(edge.get("label")) for edge in graph.get_edges() if edge.get("label")}
    assert labels == {"Batch 2", "3", "5"}
    unlabelled = draw.get_pydot_graph(net_from_text(SMALL_NET), "LR", label_edges=False)
    assert not any(edge.get("label") for edge in unlabelled.get_edges())


def test_phase_draws_only_the_layers_of_that_phase():
    net = net_from_text(SMALL_NET)
    every = {layer.name for layer in net.layer}
    assert layer_names(draw.get_pydot_graph(net, "LR")) == every
    assert layer_names(draw.get_pydot_graph(net, "LR", phase=caffe_pb2.TRAIN)) == every - {"test_data", "accuracy"}
    assert layer_names(draw.get_pydot_graph(net, "LR", phase=caffe_pb2.TEST)) == every - {"train_data", "loss"}
    assert layer_names(draw.get_pydot_graph(net, "LR", phase="TEST")) == every - {"train_data", "loss"}


def test_a_rule_without_phase_does_not_restrict_the_phase():
    net = net_from_text("""
        layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } include { stage: "s" } }
        layer { name: "b" type: "ReLU" bottom: "x" top: "y" exclude { stage: "s" } }
    """)
    for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        assert layer_names(draw.get_pydot_graph(net, "LR", phase=phase)) == {"a", "b"}


def test_include_and_exclude_together_is_an_error_when_filtering():
    net = net_from_text('layer { name: "both" type: "ReLU" bottom: "x" top: "x" '
                        'include { phase: TRAIN } exclude { phase: TEST } }')
    draw.get_pydot_graph(net, "LR")  # no filtering, no complaint
    with pytest.raises(GraphError, match="both"):
        draw.get_pydot_graph(net, "LR", phase=caffe_pb2.TRAIN)


def test_v1_net_is_drawn_from_an_upgraded_copy():
    net = net_from_text(V1_NET)
    graph = draw.get_pydot_graph(net, "LR")
    assert layer_names(graph) == {"input", "conv", "relu", "prob"}
    edges = edges_by_label(graph)
    assert ("data", "conv\\n(Convolution)\\nkernel size: 3\\nstride: 1\\npad: 0") in edges
    assert ("conv", "relu\\n(ReLU)") in edges and ("relu\\n(ReLU)", "conv") in edges
    assert len(net.layers) == 3 and len(net.layer) == 0  # the caller's message is left as it was
    assert "lr mult: 1.0, 2.0" in draw.get_pydot_graph(net, "LR", display_lrm=True).to_string()


def test_layers_without_parameters_and_empty_nets_draw():
    net = net_from_text('layer { name: "lonely" type: "Silence" bottom: "x" }')
    assert layer_names(draw.get_pydot_graph(net, "LR")) == {"lonely"}
    assert 'label="lonely (Silence)"' in draw.get_pydot_graph(net, "TB").to_string()
    empty = draw.get_pydot_graph(caffe_pb2.NetParameter(), "LR")
    assert empty.to_string().startswith('digraph "Net" {')


# pydot's DOT parser uses pyparsing names that newer pyparsing deprecates.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_names_that_need_quoting_round_trip_through_dot_text():
    net = net_from_text(r"""
        layer { name: "in{put}" type: "Input" top: "graph" input_param { shape { dim: 1 } } }
        layer { name: "a \"b\" | <c>" type: "Convolution" bottom: "graph" top: "conv1/7x7:s2"
                convolution_param { num_output: 1 kernel_h: 3 kernel_w: 5 stride_h: 1 stride_w: 2 } }
        layer { name: "x" type: "ReLU" bottom: "conv1/7x7:s2" top: "node" }
    """)
    text = draw.get_pydot_graph(net, "LR").to_string()
    parsed = pydot.graph_from_dot_data(text)[0]
    labels = set(node_labels(parsed).values())
    assert {"graph", "conv1/7x7:s2", "node"} <= labels
    assert r'a \"b\" \| \<c\>\n(Convolution)\nkernel size: 3x5\nstride: 1x2\npad: 0' in labels
    assert r"in\{put\}\n(Input)" in labels
    assert len(parsed.get_edges()) == 5


def test_layer_labels():
    conv = caffe_pb2.LayerParameter(name="c", type="Deconvolution")
    conv.convolution_param.kernel_size.append(4)
    conv.convolution_param.stride.append(2)
    assert draw.get_layer_label(conv, "LR") == r'"c\n(Deconvolution)\nkernel size: 4\nstride: 2\npad: 0"'
    assert draw.get_layer_label(conv, "TB") == '"c (Deconvolution) kernel size: 4 stride: 2 pad: 0"'
    conv.param.add(lr_mult=0)
    assert draw.get_layer_label(conv, "BT", display_lrm=True).endswith('lr mult: 0.0, 1.0"')
    conv.param.add(lr_mult=0)
    assert "lr mult" not in draw.get_layer_label(conv, "BT", display_lrm=True)
    pool = caffe_pb2.LayerParameter(name="p", type="Pooling")
    pool.pooling_param.global_pooling = True
    assert draw.get_layer_label(pool, "TB") == '"p (Pooling MAX) kernel size: global stride: 1 pad: 0"'
    assert draw.get_layer_label(caffe_pb2.LayerParameter(name="r", type="ReLU"), "LR") == r'"r\n(ReLU)"'


def test_pycaffe_helpers():
    assert draw.get_pooling_types_dict() == {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
    assert draw.choose_color_by_layertype("Deconvolution") == "#FF5050"
    assert draw.choose_color_by_layertype("Pooling") == "#FF9900"
    assert draw.choose_color_by_layertype("InnerProduct") == "#CC33FF"
    assert draw.choose_color_by_layertype("Sigmoid") == "#6495ED"
    data = caffe_pb2.LayerParameter(type="Data")
    data.data_param.batch_size = 64
    assert draw.get_edge_label(data) == "Batch 64"
    assert draw.get_edge_label(caffe_pb2.LayerParameter(type="ReLU")) == '""'
    assert draw.get_layer_lr_mult(caffe_pb2.LayerParameter(type="InnerProduct")) == (1.0, 1.0)
    with pytest.raises(ValueError):
        draw.get_layer_lr_mult(caffe_pb2.LayerParameter(type="ReLU"))


def test_unknown_rankdir_is_an_error():
    with pytest.raises(MinicaffeError, match="rankdir"):
        draw.get_pydot_graph(net_from_text(SMALL_NET), "diagonal")


def test_caffe_draw_is_this_module():
    assert importlib.import_module("caffe.draw") is draw


# ---------------------------------------------------------------- rendering

def test_dot_output_needs_no_graphviz(monkeypatch, tmp_path):
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    net = net_from_text(SMALL_NET)
    dot_bytes = draw.draw_net(net, "LR", ext="dot")
    assert dot_bytes == draw.get_pydot_graph(net, "LR").to_string().encode()
    assert draw.draw_net(net, "LR", ext="gv") == dot_bytes
    draw.draw_net_to_file(net, tmp_path / "small.dot", phase=caffe_pb2.TEST)
    assert (tmp_path / "small.dot").read_bytes() == draw.draw_net(net, "LR", "dot", phase=caffe_pb2.TEST)


def test_missing_graphviz_names_the_package_and_dot_output(monkeypatch, tmp_path):
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    with pytest.raises(MinicaffeError, match=r"apt-get install graphviz.*\.dot"):
        draw.draw_net(net_from_text(SMALL_NET), "LR")
    with pytest.raises(MinicaffeError, match="dot"):
        draw.draw_net_to_file(net_from_text(SMALL_NET), tmp_path / "small.png")
    assert not (tmp_path / "small.png").exists()


def test_missing_pydot_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydot", None)  # makes `import pydot` raise ImportError
    with pytest.raises(MinicaffeError, match=r"pip install 'minicaffe\[draw\]'"):
        draw.get_pydot_graph(net_from_text(SMALL_NET), "LR")
    with pytest.raises(MinicaffeError, match="pydot"):
        draw.draw_net(net_from_text(SMALL_NET), "LR", ext="dot")


def test_file_without_extension_is_an_error(tmp_path):
    with pytest.raises(MinicaffeError, match="extension"):
        draw.draw_net_to_file(net_from_text(SMALL_NET), tmp_path / "small")


@needs_dot
def test_draw_net_renders_png_and_svg():
    for text in (SMALL_NET, V1_NET, 'layer { name: "s" type: "Silence" bottom: "x" }'):
        net = net_from_text(text)
        assert draw.draw_net(net, "LR").startswith(PNG_MAGIC)
        svg = draw.draw_net(net, "TB", ext="svg", phase=caffe_pb2.TRAIN, display_lrm=True)
        assert b"<svg" in svg


@needs_dot
def test_unknown_format_is_graphviz_s_message(tmp_path):
    with pytest.raises(MinicaffeError, match="not recognized"):
        draw.draw_net_to_file(net_from_text(SMALL_NET), tmp_path / "small.nosuchformat")
    assert not (tmp_path / "small.nosuchformat").exists()


# ---------------------------------------------------------------- the command

def test_cli_draw_writes_dot(write_file, tmp_path):
    net = write_file("small.prototxt", SMALL_NET)
    out = tmp_path / "small.dot"
    result = CliRunner().invoke(main, ["draw", net, str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out}"
    assert out.read_bytes() == draw.draw_net(net_from_text(SMALL_NET), "LR", "dot")
    result = CliRunner().invoke(main, ["draw", net, str(out), "--phase", "test", "--rankdir", "TB",
                                       "--display-lrm"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "rankdir=TB" in text and "lr mult: 1.0, 2.0" in text
    assert "train_data" not in text and "accuracy (Accuracy)" in text


def test_cli_draw_takes_draw_net_py_spellings(write_file, tmp_path):
    out = tmp_path / "small.dot"
    net = write_file("small.prototxt", SMALL_NET)
    result = CliRunner().invoke(main, ["draw", net, str(out), "--rankdir", "BT", "--phase", "TRAIN",
                                       "--display_lrm"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == draw.draw_net(net_from_text(SMALL_NET), "BT", "dot", phase=caffe_pb2.TRAIN,
                                             display_lrm=True)


def test_cli_draw_reads_v1_nets(write_file, tmp_path):
    out = tmp_path / "legacy.gv"
    result = CliRunner().invoke(main, ["draw", write_file("legacy.prototxt", V1_NET), str(out)])
    assert result.exit_code == 0, result.output
    assert r'label="prob\n(Softmax)"' in out.read_text()


def test_cli_draw_errors_are_one_line(write_file, tmp_path):
    result = CliRunner().invoke(main, ["draw", str(tmp_path / "absent.prototxt"), str(tmp_path / "x.dot")])
    assert result.exit_code == 1
    assert result.output.startswith("minicaffe: error: ") and result.output.count("\n") == 1
    net = write_file("small.prototxt", SMALL_NET)
    result = CliRunner().invoke(main, ["draw", net, str(tmp_path / "no_extension")])
    assert result.exit_code == 1 and "extension" in result.output
    result = CliRunner().invoke(main, ["draw", net, str(tmp_path / "x.dot"), "--phase", "VALIDATE"])
    assert result.exit_code == 2


@needs_dot
@pytest.mark.parametrize("ext, magic", [("png", PNG_MAGIC), ("svg", b"<?xml")])
def test_cli_draw_renders_images(write_file, tmp_path, ext, magic):
    out = tmp_path / f"small.{ext}"
    result = CliRunner().invoke(main, ["draw", write_file("small.prototxt", SMALL_NET), str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(magic)
