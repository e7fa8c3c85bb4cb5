""".caffeinit: `python_layer NAME CLASS FILE` lines register Python layers (seed 001)."""

import inspect
import os
import re
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import minicaffe
from minicaffe.caffeinit import CaffeinitError, find_python_layer, python_layers, read_caffeinit
from minicaffe.cli import main
from minicaffe.errors import GraphError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "python_layers")
SEED_LINE = "python_layer my_custom_loss MyCustomLossLayer my_custom_loss.py"   # as seed 001 gives it


@pytest.fixture(autouse=True)
def dirs(tmp_path, monkeypatch):
    """A home and a working directory of the test's own; no `caffe` alias left from another test."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    monkeypatch.delitem(sys.modules, "caffe", raising=False)
    return home, work


def run(*args):
    return CliRunner().invoke(main, list(args))


def seed_net(tmp_path, layer_text):
    """The seed's regression net with its loss layer replaced by ``layer_text``, in a folder of its own."""
    text = open(os.path.join(FIXTURES, "seed_loss_net.prototxt")).read()
    text = text[:text.index('layer {\n  name: "my_custom_loss"')] + layer_text
    folder = tmp_path / "nets"
    folder.mkdir(exist_ok=True)
    path = folder / "net.prototxt"
    path.write_text(text)
    return str(path)


SEED_LAYER = '''layer {
  name: "my_custom_loss"
  type: "Python"
  bottom: "fc8"
  bottom: "label"
  top: "loss"
  python_param { module: "my_custom_loss" layer: "MyCustomLossLayer" }
}
'''


def test_lines_comments_and_paths(dirs):
    home, _ = dirs
    (home / ".caffeinit").write_text(
        "# Python layers\n"
        "\n"
        f"{SEED_LINE}\n"
        "python_layer other Other /abs/path/other layer.py   # a path with a space, then a comment\n"
        "  python_layer nested Nested sub/dir/nested.py\n")
    entries = read_caffeinit(home / ".caffeinit")
    assert list(entries) == ["my_custom_loss", "other", "nested"]
    seed = entries["my_custom_loss"]
    assert (seed.class_name, seed.file, seed.line) == ("MyCustomLossLayer", str(home / "my_custom_loss.py"), 3)
    assert seed.where == f"{home / '.caffeinit'}:3"
    assert entries["other"].file == "/abs/path/other layer.py"
    assert entries["nested"].file == str(home / "sub" / "dir" / "nested.py")


@pytest.mark.parametrize("line, message", [
    ("python_layer my_custom_loss MyCustomLossLayer", r"'python_layer' takes NAME CLASS FILE, got 2 field\(s\)"),
    ("pythonlayer a B b.py", r"unknown directive 'pythonlayer'"),
    ("python_layer a 2B b.py", r"CLASS '2B' is not a Python class name"),
    ("python_layer a/b B b.py", r"NAME 'a/b' is not a layer type or module name"),
    (SEED_LINE, r"'my_custom_loss' is registered twice \(first on line 2\)"),
])
def test_a_malformed_line_is_an_error_naming_the_file_and_line(dirs, line, message):
    _, work = dirs
    path = work / ".caffeinit"
    path.write_text(f"# first\n{SEED_LINE}\n{line}\n")
    with pytest.raises(CaffeinitError, match=re.escape(f"{path}:3: ") + message):
        read_caffeinit(path)


def test_the_working_directory_wins_over_home(dirs):
    home, work = dirs
    (home / ".caffeinit").write_text("python_layer shared HomeClass home.py\npython_layer homeonly H h.py\n")
    (work / ".caffeinit").write_text("python_layer shared WorkClass work.py\n")
    assert find_python_layer("shared").class_name == "WorkClass"
    assert find_python_layer("shared").file == str(work / "work.py")
    assert find_python_layer("homeonly").file == str(home / "h.py")
    assert find_python_layer("nothing") is None
    assert sorted(python_layers()) == ["homeonly", "shared"]


def test_the_seeds_registration_line_loads_the_class_from_its_file(tmp_path, dirs, caplog):
    home, _ = dirs
    (home / ".caffeinit").write_text(SEED_LINE + "\n")
    shutil.copy(os.path.join(FIXTURES, "my_custom_loss.py"), home / "my_custom_loss.py")
    path = seed_net(tmp_path, SEED_LAYER)            # nothing named my_custom_loss beside the net
    net = minicaffe.Net(path, minicaffe.TRAIN)
    layer = net.layer_dict["my_custom_loss"]
    assert type(layer).__name__ == "MyCustomLossLayer"
    assert os.path.realpath(inspect.getfile(type(layer))) == os.path.realpath(home / "my_custom_loss.py")
    assert net.blob_loss_weights["loss"] == 1.0
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    out = net.forward(data=x, label=t)
    assert float(out["loss"][0]) == pytest.approx(np.sum((net.blobs["fc8"].data - t) ** 2) / 4, rel=1e-5)


def test_a_registered_name_is_a_layer_type(tmp_path, dirs):
    _, work = dirs
    (work / "layers").mkdir()
    shutil.copy(os.path.join(FIXTURES, "my_custom_loss.py"), work / "layers" / "my_custom_loss.py")
    (work / ".caffeinit").write_text("python_layer my_custom_loss MyCustomLossLayer layers/my_custom_loss.py\n")
    path = seed_net(tmp_path, SEED_LAYER.replace('type: "Python"', 'type: "my_custom_loss"')
                    .replace('  python_param { module: "my_custom_loss" layer: "MyCustomLossLayer" }\n', ""))
    net = minicaffe.Net(path, minicaffe.TRAIN, dtype=np.float64)
    layer = net.layer_dict["my_custom_loss"]
    assert type(layer).__name__ == "MyCustomLossLayer" and layer.type == "my_custom_loss"
    assert net.blob_loss_weights["loss"] == 1.0      # the registered class's name ends in LossLayer
    net.forward(data=np.ones((4, 3)), label=np.zeros((4, 2)))
    net.backward()
    np.testing.assert_allclose(net.blobs["fc8"].diff, 2 * net.blobs["fc8"].data / 4)

    checked = run("check", path, "--run-python-layers")
    assert checked.exit_code == 0, checked.output
    assert re.search(r"my_custom_loss\s+my_custom_loss\s+fc8, label -> loss \(1\)\s+\[backward; loss_weight 1\]",
                     checked.output)


def test_a_malformed_caffeinit_stops_a_net_that_needs_it(tmp_path, dirs):
    _, work = dirs
    (work / ".caffeinit").write_text(f"{SEED_LINE}\npython_layer broken\n")
    result = run("forward", seed_net(tmp_path, SEED_LAYER), "--phase", "TRAIN")
    assert result.exit_code == 1
    assert f"minicaffe: error: {work / '.caffeinit'}:2: 'python_layer' takes NAME CLASS FILE" in result.output


def test_a_registered_file_that_does_not_exist(tmp_path, dirs):
    home, _ = dirs
    (home / ".caffeinit").write_text("python_layer my_custom_loss MyCustomLossLayer gone/my_custom_loss.py\n")
    path = seed_net(tmp_path, SEED_LAYER)
    where = f"{home / 'gone' / 'my_custom_loss.py'} (registered at {home / '.caffeinit'}:1; it does not exist)"
    checked = run("check", path, "--run-python-layers")
    assert checked.exit_code == 0, checked.output
    assert re.search(r"my_custom_loss\s+Python\s+fc8, label -> loss \?", checked.output)
    assert where in checked.output
    with pytest.raises(GraphError, match=re.escape(where)):
        minicaffe.Net(path, minicaffe.TRAIN)


def test_built_in_types_win_and_unknown_types_stay_unknown(tmp_path, dirs):
    _, work = dirs
    (work / ".caffeinit").write_text("python_layer ReLU NotReLU relu.py\n")
    text = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
            'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n')
    (tmp_path / "relu.prototxt").write_text(text)
    net = minicaffe.Net(str(tmp_path / "relu.prototxt"), minicaffe.TEST)
    assert type(net.layer_dict["r"]).__name__ == "ReLULayer"
    (tmp_path / "odd.prototxt").write_text(text.replace('"ReLU"', '"NoSuchType"'))
    with pytest.raises(GraphError, match="unknown layer type 'NoSuchType'"):
        minicaffe.Net(str(tmp_path / "odd.prototxt"), minicaffe.TEST)
