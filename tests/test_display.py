"""How a Net, a Blob and a Solver show themselves (repr and a notebook's HTML), and caffe.draw's inline SVG."""

import re
import shutil

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import draw
from minicaffe.blob import Blob, SyncedArray
from minicaffe.check import describe
from minicaffe.errors import MinicaffeError
from minicaffe.proto.text import parse_net, parse_solver

# `a<b>&c` must come out escaped; `ip` feeds two layers (a Split is inserted); `acc` runs in TEST only.
NET = """
name: "tiny<net>"
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "a<b>&c" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" loss_weight: 2 }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
layer { name: "acc" type: "Accuracy" bottom: "prob" bottom: "label" top: "acc" include { phase: TEST } }
"""


@pytest.fixture
def net():
    caffe.set_random_seed(3)
    return caffe.Net(parse_net(NET), caffe.TRAIN)


def test_net_repr_lists_the_layers_with_shapes_and_totals(net):
    text = repr(net)
    lines = text.splitlines()
    assert lines[0] == "<Net 'tiny<net>' phase=TRAIN layers=6 parameters=16>"
    assert re.match(r"\s+1\s+a<b>&c\s+InnerProduct\s+data -> ip \(2x4\)\s+\[params 16; backward\]$", lines[2])
    assert re.match(r"\s+2\s+relu\s+ReLU\s+ip -> ip \(in place\) \(2x4\)\s+\[backward\]$", lines[3])
    assert re.match(r"\s+3\s+ip_relu_0_split\s+Split\s+ip -> ip_relu_0_split_0 \(2x4\), ip_relu_0_split_1 \(2x4\)",
                    lines[4])
    assert lines[5].endswith("ip_relu_0_split_0, label -> loss (scalar)   [backward; loss_weight 2]")
    assert lines[6].endswith("ip_relu_0_split_1 -> prob (2x4)")          # no parameters, no backward
    assert "inputs: data (2x3), label (2)" in lines
    assert "outputs: loss (scalar), prob (2x4)" in lines
    assert "parameters: 16 in 2 blobs" in lines
    assert "blob data: 164 bytes as float32 (twice that with diffs)" in lines    # 41 values
    # The same facts as `minicaffe check` prints: its layer and total lines, word for word.
    checked = describe(check_net_from(NET)).splitlines()
    assert checked[3:3 + len(lines) - 1] == lines[1:]


def check_net_from(text):
    return caffe.Net(parse_net(text), caffe.TRAIN, shape_inference=True)


def test_net_html_is_a_table_of_layers_with_escaped_names(net):
    page = net._repr_html_()
    assert "a<b>&c" not in page and "tiny<net>" not in page
    assert "<b>a&lt;b&gt;&amp;c</b>" in page and "tiny&lt;net&gt;" in page
    body = page.split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body)
    assert len(rows) == 6
    cells = [re.sub(r"<[^>]+>", " ", cell).split() for cell in re.findall(r"<td[^>]*>(.*?)</td>", rows[1])]
    # index, name, type, bottoms, tops with shape, params, loss weight, need-backward
    assert cells == [["1"], ["a&lt;b&gt;&amp;c"], ["InnerProduct"], ["data"], ["ip", "(2x4)"], ["16"], [], ["yes"]]
    loss = [re.sub(r"<[^>]+>", " ", cell).split() for cell in re.findall(r"<td[^>]*>(.*?)</td>", rows[4])]
    assert loss[2] == ["SoftmaxWithLoss"] and loss[6] == ["2"] and loss[4] == ["loss", "(scalar)"]
    assert loss[3] == ["ip_relu_0_split_0", "label"]
    assert body.count('<tr style="color:#888">') == 1 and "Split" in body    # the inserted Split, greyed
    assert "relu" in rows[2] and "(in place)" in rows[2]
    assert "16 in 2 blobs" in page and "1 split inserted" in page
    assert "data (2x3), label (2)" in page and "loss (scalar), prob (2x4)" in page


def test_shape_only_net_shows_without_allocating():
    checked = check_net_from(NET)
    assert "parameters=16" in repr(checked)
    assert "<table" in checked._repr_html_()
    assert not any(blob.allocated for blob in checked.blobs.values())
    assert repr(checked.blobs["data"]) == "<Blob 'data' shape=(2, 3) dtype=float32 data: not allocated>"


def test_blob_repr_shows_statistics():
    blob = Blob((2, 2), name="w")
    assert repr(blob) == "<Blob 'w' shape=(2, 2) dtype=float32 data: not allocated>"
    blob.data[...] = [[1, 2], [3, 4]]
    assert repr(blob) == "<Blob 'w' shape=(2, 2) dtype=float32 data: mean 2.5, std 1.118, min 1, max 4>"
    blob.diff[...] = 0.5
    assert repr(blob).endswith("; diff: mean 0.5, std 0, min 0.5, max 0.5>")
    blob.data[0, 0] = np.nan
    blob.data[0, 1] = np.inf
    assert "data: mean 3.5, std 0.5, min 3, max 4 (1 NaN, 1 inf not counted)" in repr(blob)
    page = blob._repr_html_()
    assert "<code>w</code>" in page and "2x2 (4 values)" in page and "float32" in page
    assert "mean 3.5" in page and "diff" in page
    view = Blob((4,), name="a<b")
    view.share_data(blob)
    assert "min 3, max 4" in repr(view)                     # a view shows its source's data
    assert "a&lt;b" in view._repr_html_() and "a<b" not in view._repr_html_()
    assert repr(Blob((0, 3))) == "<Blob shape=(0, 3) dtype=float32 data: not allocated>"
    empty = Blob((0, 3))
    empty.data
    assert repr(empty).endswith("data: empty>")


class _DeviceOnly:
    """A device array that must not be copied to the host."""

    def copy_to_host(self, host):
        raise AssertionError("a repr copied device data to the host")


def test_blob_on_the_gpu_is_not_copied_for_display():
    blob = Blob((3,), name="g")
    buffer = blob._synced("data")
    buffer._device, buffer.head = _DeviceOnly(), "device"
    before = dict(SyncedArray.copies)
    assert "data: on the GPU (not copied to the host for display" in repr(blob)
    assert "on the GPU" in blob._repr_html_()
    assert SyncedArray.copies == before and buffer.head == "device"


@pytest.mark.gpu
def test_blob_on_the_gpu_is_not_copied_for_display_under_cuda():
    from minicaffe import gpu
    if not gpu.available():
        pytest.fail("no CUDA device: run the GPU tests with NUMBA_ENABLE_CUDASIM=1 (make test does)")
    blob = Blob((3,), name="g")
    blob.data[...] = [1, 2, 3]
    blob.mutable_gpu_data                     # the device copy is now the one to trust
    before = SyncedArray.copies["to_host"]
    assert "on the GPU" in repr(blob) and "on the GPU" in blob._repr_html_()
    assert SyncedArray.copies["to_host"] == before
    blob.read_data()
    assert "mean 2, std 0.8165, min 1, max 3" in repr(blob)


SOLVER = """
base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 2 max_iter: 10 display: 0 random_seed: 1
snapshot_after_train: false
"""


def test_solver_repr_and_html(tmp_path):
    param = parse_solver(SOLVER)
    param.net_param.CopyFrom(parse_net(NET.replace("Input", "DummyData").replace(
        "input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } }",
        'dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 } data_filler { type: "gaussian" } data_filler { value: 1 } }')))
    param.snapshot_prefix = str(tmp_path / "s")
    solver = caffe.SGDSolver(param)
    assert repr(solver) == "<SGDSolver net='tiny<net>' iter=0 lr=0.1 smoothed_loss=none yet>"
    solver.step(3)
    assert repr(solver) == f"<SGDSolver net='tiny<net>' iter=3 lr=0.05 smoothed_loss={solver.smoothed_loss:.6g}>"
    assert solver.smoothed_loss > 0
    page = solver._repr_html_()
    assert page.startswith('<div class="minicaffe-solver"><b>SGDSolver</b>')
    assert "tiny&lt;net&gt;" in page and "tiny<net>" not in page
    assert "3 of max_iter 10" in page and "0.05 (step policy, base_lr 0.1)" in page
    assert f"{solver.smoothed_loss:.6g}" in page


def test_draw_net_inline_is_svg_for_a_notebook(net, tmp_path):
    assert shutil.which("dot"), "Graphviz's dot must be installed for the suite (apt-get install graphviz)"
    drawing = draw.draw_net_inline(net)
    svg = drawing._repr_svg_()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "a&lt;b&gt;&amp;c" in svg and "a<b>&c" not in svg
    # A Net is drawn with its phase's layers and without the Split it inserted.
    assert "(SoftmaxWithLoss)" in svg and "(Accuracy)" not in svg and "split" not in svg
    assert "(Accuracy)" in draw.draw_net_inline(caffe.Net(parse_net(NET), caffe.TEST))._repr_svg_()
    # A NetParameter or a path draws every layer unless a phase is given.
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    assert "(Accuracy)" in draw.draw_net_inline(str(path)).svg
    assert draw.draw_net_inline(parse_net(NET), phase="TRAIN").svg == svg
    assert "tiny<net>" in repr(drawing) and "SVG" in repr(drawing)
    drawing.save(tmp_path / "net.svg")
    assert (tmp_path / "net.svg").read_text() == svg
    with pytest.raises(TypeError, match="Net, a NetParameter or a .prototxt path"):
        draw.draw_net_inline(42)


def test_draw_net_inline_without_dot_says_so(net, monkeypatch):
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    with pytest.raises(MinicaffeError, match=r"needs Graphviz's 'dot' program, which is not on PATH.*apt-get "
                                             r"install graphviz"):
        draw.draw_net_inline(net)


def test_caffe_draw_is_the_same_module():
    import caffe as pycaffe_name
    assert pycaffe_name.draw.draw_net_inline is draw.draw_net_inline
    assert isinstance(draw.NetDrawing("<svg/>"), draw.NetDrawing)


def test_a_long_net_repr_shows_its_first_and_last_layers_and_html_shows_all():
    chain = 'layer { name: "input" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n' + "".join(
        f'layer {{ name: "r{k}" type: "ReLU" bottom: "x" top: "x" }}\n' for k in range(1, 60))
    long_net = caffe.Net(parse_net(chain), caffe.TEST)
    lines = repr(long_net).splitlines()
    assert lines[0].startswith("<Net '' phase=TEST layers=60")
    assert re.match(r"\s+39\s+r39\s", lines[40]) and re.match(r"\s+50\s+r50\s", lines[42])
    assert lines[41] == "  ... 10 more layers (minicaffe.check.describe(net) or `minicaffe check` lists them all) ..."
    assert lines[51].startswith("  ") and "r59" in lines[51] and lines[52] == "inputs: x (1)"
    assert long_net._repr_html_().count("<tr><td") == 60
