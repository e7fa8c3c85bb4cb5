"""Python layers: pycaffe's Layer API, the `caffe` alias, loss naming, blobs in .caffemodel, errors."""

import importlib.util
import logging
import os
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import minicaffe
from minicaffe import io
from minicaffe.cli import main
from minicaffe.errors import GraphError, MinicaffeError
from minicaffe.graph import default_loss_weights
from minicaffe.layers.python_layer import PythonLayerError
from minicaffe.proto import caffe_pb2
from minicaffe.proto.text import parse_text

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "python_layers")
SEED_NET = os.path.join(FIXTURES, "seed_loss_net.prototxt")
FIXTURE_MODULE = os.path.join(FIXTURES, "mc_fixture_layers.py")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No .caffeinit from the machine, and no `caffe` alias left over from another test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "caffe", raising=False)


@pytest.fixture
def fixture_layers(monkeypatch):
    """The fixture module importable from sys.path."""
    monkeypatch.syspath_prepend(FIXTURES)


def run(*args):
    return CliRunner().invoke(main, list(args))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


INPUT = 'layer {{ name: "input" type: "Input" top: "x" top: "t" input_param {{ shape {{ dim: {n} dim: {d} }} ' \
        'shape {{ dim: {n} dim: {d} }} }} }}\n'


def python_layer(name, cls, bottoms, tops, param_str=None, extra="", module="mc_fixture_layers"):
    wiring = "".join(f' bottom: "{b}"' for b in bottoms) + "".join(f' top: "{t}"' for t in tops)
    param = f" param_str: '{param_str}'" if param_str is not None else ""
    return (f'layer {{ name: "{name}" type: "Python"{wiring} {extra} '
            f'python_param {{ module: "{module}" layer: "{cls}"{param} }} }}\n')


# ---------------------------------------------------------------- the seed's layer

def test_seed_loss_layer_runs_unchanged_and_is_a_loss_without_loss_weight(caplog):
    caplog.set_level(logging.INFO, logger="minicaffe")
    import minicaffe as caffe

    net = caffe.Net(SEED_NET, caffe.TRAIN)          # the module sits beside the prototxt
    assert sys.modules["caffe"] is minicaffe          # `import caffe` in the module gave minicaffe
    layer = net.layer_dict["my_custom_loss"]
    assert type(layer).__name__ == "MyCustomLossLayer" and isinstance(layer, caffe.Layer)
    assert layer.type == "Python"
    assert net.blob_loss_weights["loss"] == 1.0
    assert net.layer_need_backward == [False, True, True]
    assert re.search(r"layer 'my_custom_loss': Python layer class MyCustomLossLayer .* implicit loss_weight 1",
                     caplog.text)

    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    out = net.forward(data=x, label=t)
    w, b = net.params["fc8"][0].data.astype(np.float64), net.params["fc8"][1].data.astype(np.float64)
    pred = x @ w.T + b
    expected = np.sum((pred - t) ** 2) / 4
    assert out["loss"].shape == (1,)                  # the seed reshapes its top to (1,)
    assert float(out["loss"][0]) == pytest.approx(expected, rel=1e-5)
    assert net.last_loss == pytest.approx(expected, rel=1e-5)
    net.backward()
    grad = 2 * (pred - t) / 4
    np.testing.assert_allclose(net.blobs["fc8"].diff, grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["fc8"][0].diff, grad.T @ x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["fc8"][1].diff, grad.sum(axis=0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("weight", [0.5, 0.0])
def test_an_explicit_loss_weight_overrides_the_implicit_one(tmp_path, monkeypatch, weight):
    monkeypatch.syspath_prepend(FIXTURES)            # found on sys.path this time
    text = open(SEED_NET).read().replace('top: "loss"', f'top: "loss"\n  loss_weight: {weight}')
    net = minicaffe.Net(write(tmp_path / "nets" / "weighted.prototxt", text), minicaffe.TRAIN, dtype=np.float64)
    assert net.blob_loss_weights["loss"] == weight
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    net.forward(data=x, label=t)
    pred = net.blobs["fc8"].data.copy()
    assert net.last_loss == pytest.approx(weight * np.sum((pred - t) ** 2) / 4)
    net.backward()
    if weight:
        np.testing.assert_allclose(net.blobs["fc8"].diff, weight * 2 * (pred - t) / 4, rtol=1e-10)
    else:
        assert net.layer_need_backward == [False, False, False]
        assert not net.params["fc8"][0].diff.any()


@pytest.mark.parametrize("cls, expected", [
    ("MyCustomLossLayer", [1.0, 0.0]), ("SquaredErrorLoss", [1.0, 0.0]),
    ("LossScale", [0.0, 0.0]), ("ScaleByParam", [0.0, 0.0]), ("MyLosses", [0.0, 0.0]),
])
def test_python_classes_named_loss_default_to_loss_weight_one(cls, expected):
    param = parse_text(f'name: "p" type: "Python" top: "a" top: "b" python_param {{ module: "m" layer: "{cls}" }}',
                       caffe_pb2.LayerParameter())
    assert default_loss_weights(param) == expected


# ---------------------------------------------------------------- pycaffe's contract

def test_param_str_phase_name_and_type_are_set_before_setup(tmp_path, fixture_layers):
    text = INPUT.format(n=2, d=3) + python_layer("scale", "ScaleByParam", ["x"], ["y"], '{"factor": 3}')
    path = write(tmp_path / "scale.prototxt", text)
    x = np.arange(6.0).reshape(2, 3)
    for phase, offset in ((minicaffe.TRAIN, 0.0), (minicaffe.TEST, 100.0)):
        net = minicaffe.Net(path, phase)
        layer = net.layer_dict["scale"]
        assert layer.seen_at_setup == {"param_str": '{"factor": 3}', "phase": phase, "name": "scale",
                                       "type": "Python"}
        assert layer.param_str == '{"factor": 3}' and layer.phase == phase
        out = net.forward(x=x, t=np.zeros((2, 3)))
        np.testing.assert_array_equal(out["y"], 3 * x + offset)
    assert minicaffe.TRAIN != minicaffe.TEST


def test_learnable_blobs_are_trained_saved_and_loaded(tmp_path, fixture_layers):
    text = (INPUT.format(n=4, d=3)
            + python_layer("affine", "Affine", ["x"], ["y"], '{"init": 2.0}', extra="param { lr_mult: 0 } param { }")
            + python_layer("loss", "SquaredErrorLoss", ["y", "t"], ["loss"]))
    path = write(tmp_path / "affine.prototxt", text)
    net = minicaffe.Net(path, minicaffe.TRAIN, dtype=np.float64)
    layer = net.layer_dict["affine"]
    assert [blob.shape for blob in net.params["affine"]] == [(3,), (3,)]
    np.testing.assert_array_equal(net.params["affine"][0].data, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(net.params["affine"][1].data, [0.0, 0.0, 0.0])
    assert layer.param_propagate_down == [False, True]      # lr_mult: 0 on the weight
    assert net.blob_loss_weights["loss"] == 1.0              # SquaredErrorLoss ends in Loss

    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    net.params["affine"][1].data[...] = [0.5, -1.0, 0.25]
    net.forward(x=x, t=t)
    y = 2.0 * x + np.array([0.5, -1.0, 0.25])
    assert net.last_loss == pytest.approx(0.5 * np.sum((y - t) ** 2) / 4)
    net.clear_param_diffs()
    net.backward()
    np.testing.assert_allclose(net.params["affine"][1].diff, ((y - t) / 4).sum(axis=0))
    np.testing.assert_allclose(net.blobs["x"].diff, 0.0)      # x is an input: no gradient asked

    model = str(tmp_path / "affine.caffemodel")
    net.save(model)
    saved = io.caffemodel_arrays(io.read_caffemodel(model))
    np.testing.assert_allclose(saved["affine"][0], [2.0, 2.0, 2.0])
    np.testing.assert_allclose(saved["affine"][1], [0.5, -1.0, 0.25])
    loaded = minicaffe.Net(path, minicaffe.TEST, weights=model)
    np.testing.assert_allclose(loaded.params["affine"][1].data, [0.5, -1.0, 0.25])
    np.testing.assert_allclose(loaded.params["affine"][0].data, [2.0, 2.0, 2.0])

    checked = run("check", path, "--run-python-layers")   # setup writes the blobs' values: fine under check too
    assert checked.exit_code == 0, checked.output
    assert re.search(r"affine\s+Python\s+x -> y \(4x3\)\s+\[params 6; backward\]", checked.output)


def test_python_data_layer_with_several_tops(tmp_path, fixture_layers):
    text = python_layer("data", "CountingData", [], ["data", "label", "index"], '{"batch": 3, "dim": 2}')
    text += python_layer("scale", "ScaleByParam", ["data"], ["scaled"], '{"factor": 2}')
    path = write(tmp_path / "data.prototxt", text)
    net = minicaffe.Net(path, minicaffe.TRAIN)
    first = {name: array.copy() for name, array in net.forward().items()}
    second = net.forward()
    np.testing.assert_allclose(first["label"], [0, 1, 0])
    np.testing.assert_allclose(first["index"], [0, 1, 2])
    np.testing.assert_allclose(second["index"], [3, 4, 5])
    np.testing.assert_allclose(second["label"], [1, 0, 1])
    np.testing.assert_allclose(second["scaled"], 2 * np.array([[3, 3.1], [4, 4.1], [5, 5.1]]), rtol=1e-6)
    test_net = minicaffe.Net(path, minicaffe.TEST)
    np.testing.assert_allclose(test_net.forward()["index"], [1000, 1001, 1002])

    checked = run("check", path, "--run-python-layers")
    assert checked.exit_code == 0, checked.output
    assert re.search(r"data\s+Python\s+-> data \(3x2\), label \(3\), index \(3\)", checked.output)
    # ScaleByParam's reshape reads bottom[0].data.shape: that works under check too.
    assert re.search(r"scale\s+Python\s+data -> scaled \(3x2\)", checked.output)
    assert "?" not in checked.output


def test_blobs_add_blob_takes_pycaffe_shapes(fixture_layers):
    param = parse_text('name: "a" type: "Python" top: "y" python_param { module: "mc_fixture_layers" '
                       'layer: "ScaleByParam" }', caffe_pb2.LayerParameter())
    from minicaffe.registry import create_layer
    layer = create_layer(param, phase=minicaffe.TRAIN, dtype=np.float64)
    layer.blobs.add_blob(2, 3)
    layer.blobs.add_blob(4)
    assert [b.shape for b in layer.blobs] == [(2, 3), (4,)]
    assert layer.blobs[0].dtype == np.float64 and not layer.blobs[0].data.any()


# ---------------------------------------------------------------- finding modules, `import caffe`

def test_module_is_imported_from_sys_path_before_the_prototxt_folder(tmp_path, monkeypatch):
    layer_code = ("import caffe\n\nclass Const(caffe.Layer):\n    def setup(self, bottom, top):\n        pass\n\n"
                  "    def reshape(self, bottom, top):\n        top[0].reshape(1)\n\n"
                  "    def forward(self, bottom, top):\n        top[0].data[...] = {value}\n")
    write(tmp_path / "nets" / "mc_where_module.py", layer_code.format(value=1))
    write(tmp_path / "lib" / "mc_where_module.py", layer_code.format(value=2))
    path = write(tmp_path / "nets" / "where.prototxt", python_layer("c", "Const", [], ["c"], module="mc_where_module"))
    monkeypatch.delitem(sys.modules, "mc_where_module", raising=False)
    assert minicaffe.Net(path, minicaffe.TEST).forward()["c"][0] == 1        # only the prototxt's folder has it
    assert str(tmp_path / "nets") not in sys.path                              # the folder was not left there
    monkeypatch.delitem(sys.modules, "mc_where_module")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    assert minicaffe.Net(path, minicaffe.TEST).forward()["c"][0] == 2        # sys.path first
    monkeypatch.delitem(sys.modules, "mc_where_module")


def test_a_net_built_from_a_message_finds_modules_in_the_folder_it_is_given(tmp_path):
    from minicaffe.layers.python_layer import model_folder
    from minicaffe.proto.text import read_net
    write(tmp_path / "nets" / "mc_folder_module.py", open(FIXTURE_MODULE).read())
    path = write(tmp_path / "nets" / "n.prototxt",
                 INPUT.format(n=1, d=2) + python_layer("s", "ScaleByParam", ["x"], ["y"], '{"factor": 5}',
                                                      module="mc_folder_module"))
    with pytest.raises(GraphError, match="not found; looked in sys.path, no .caffeinit entry"):
        minicaffe.Net(read_net(path), minicaffe.TEST)          # a message alone has no folder
    with model_folder(str(tmp_path / "nets")):                  # as a solver that read the file can say
        net = minicaffe.Net(read_net(path), minicaffe.TEST)
    np.testing.assert_allclose(net.forward(x=[[1.0, 2.0]], t=[[0.0, 0.0]])["y"], [[105.0, 110.0]])
    assert "Python" in minicaffe.layer_type_list()             # pycaffe's caffe.layer_type_list()
    sys.modules.pop("mc_folder_module", None)


def test_the_shipped_caffe_package_is_minicaffe_and_a_real_caffe_first_on_the_path_wins(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "caffe", raising=False)
    shipped = importlib.util.find_spec("caffe")
    assert os.path.dirname(shipped.origin) == os.path.join(os.path.dirname(minicaffe.__file__), "caffe_alias")
    write(tmp_path / "realcaffe" / "caffe" / "__init__.py", "REAL = True\n\nclass Layer:\n    pass\n")
    write(tmp_path / "nets" / "mc_real_caffe_module.py",
          "import caffe\n\nclass UsesCaffe(caffe.Layer):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "realcaffe"))
    path = write(tmp_path / "nets" / "real.prototxt",
                 INPUT.format(n=1, d=1) + python_layer("p", "UsesCaffe", ["x"], ["y"], module="mc_real_caffe_module"))
    monkeypatch.delitem(sys.modules, "mc_real_caffe_module", raising=False)
    with pytest.raises(GraphError, match=r"layer 'p': 'UsesCaffe' .* is not a subclass of minicaffe.Layer .*"
                                         r"real Caffe .*import minicaffe as caffe"):
        minicaffe.Net(path, minicaffe.TEST)
    assert getattr(sys.modules["caffe"], "REAL", False)  # the real one was imported, not replaced
    monkeypatch.delitem(sys.modules, "mc_real_caffe_module", raising=False)


def test_missing_module_check_shows_unknown_shapes_and_running_is_a_clear_error(tmp_path):
    text = (INPUT.format(n=2, d=3) + python_layer("py", "Missing", ["x"], ["y"], module="mc_no_such_module")
            + 'layer { name: "relu" type: "ReLU" bottom: "y" top: "z" }\n'
            + 'layer { name: "relu_t" type: "ReLU" bottom: "t" top: "u" }\n')
    path = write(tmp_path / "nets" / "missing.prototxt", text)
    folder = str(tmp_path / "nets")
    checked = run("check", path, "--run-python-layers")
    assert checked.exit_code == 0, checked.output
    assert re.search(r"py\s+Python\s+x -> y \?", checked.output)
    assert re.search(r"relu\s+ReLU\s+y -> z \?", checked.output)
    assert re.search(r"relu_t\s+ReLU\s+t -> u \(2x3\)", checked.output)        # the rest is still checked
    assert (f"note: shapes from layer 'py' on are unknown (?): Python module 'mc_no_such_module' (class 'Missing') "
            f"cannot be imported: not found; looked in sys.path, {folder} (the prototxt's folder)") in checked.output
    assert checked.output.rstrip().endswith("OK")

    forward = run("forward", path)
    assert forward.exit_code == 1
    assert forward.output.startswith("minicaffe: error: layer 'py': Python module 'mc_no_such_module'")
    assert f"{folder} (the prototxt's folder), no .caffeinit entry 'mc_no_such_module'" in forward.output
    assert "Traceback" not in forward.output


def test_check_still_fails_on_a_broken_rest_of_the_net(tmp_path):
    text = (INPUT.format(n=2, d=3) + python_layer("py", "Missing", ["x"], ["y"], module="mc_no_such_module")
            + 'layer { name: "relu" type: "ReLU" bottom: "nowhere" top: "z" }\n')
    checked = run("check", write(tmp_path / "broken.prototxt", text))
    assert checked.exit_code == 1 and "nowhere" in checked.output


def test_class_missing_from_the_module_is_an_error(tmp_path, fixture_layers):
    path = write(tmp_path / "n.prototxt", INPUT.format(n=1, d=1) + python_layer("p", "Afine", ["x"], ["y"]))
    with pytest.raises(GraphError, match=r"module 'mc_fixture_layers' \(.*mc_fixture_layers.py\) has no class "
                                         r"'Afine'; did you mean 'Affine'"):
        minicaffe.Net(path, minicaffe.TEST)


# ---------------------------------------------------------------- errors in user code

def test_an_exception_in_forward_reaches_the_caller_as_itself_naming_the_layer(tmp_path, fixture_layers):
    text = INPUT.format(n=2, d=3) + python_layer("boom", "FailsInForward", ["x"], ["y"])
    path = write(tmp_path / "boom.prototxt", text)
    net = minicaffe.Net(path, minicaffe.TEST)
    with pytest.raises(ValueError) as caught:     # pycaffe: the layer's own exception
        net.forward()
    assert type(caught.value) is ValueError and str(caught.value) == "bad value 42"
    assert any("layer 'boom'" in note and "forward" in note for note in caught.value.__notes__)
    assert caught.value.minicaffe_layer == "boom"
    message = caught.value.minicaffe_context
    assert message.startswith("layer 'boom' (type Python, class mc_fixture_layers.FailsInForward from "
                              f"{FIXTURE_MODULE}): forward raised ValueError: bad value 42\n")
    assert f'File "{FIXTURE_MODULE}", line' in message and "in forward" in message
    assert 'raise ValueError(f"bad value {value}")' in message
    assert message.rstrip().endswith("ValueError: bad value 42")
    assert "minicaffe" + os.sep + "net.py" not in message and "layer.py" not in message

    result = run("forward", path)
    assert result.exit_code == 1
    assert result.output.startswith("minicaffe: error: layer 'boom' (type Python, class "
                                    "mc_fixture_layers.FailsInForward")
    assert 'raise ValueError(f"bad value {value}")' in result.output


def test_the_seeds_own_setup_check_reports_through_the_layer(tmp_path):
    text = open(SEED_NET).read().replace('bottom: "label" # Ground truth', 'bottom: "label"\n  bottom: "data"')
    path = write(tmp_path / "three.prototxt", text)
    import shutil
    shutil.copy(os.path.join(FIXTURES, "my_custom_loss.py"), tmp_path / "my_custom_loss.py")
    with pytest.raises(Exception) as caught:
        minicaffe.Net(path, minicaffe.TRAIN)
    assert type(caught.value) is Exception and str(caught.value) == "Need two inputs (pred and label) for this layer."
    assert re.match(r"(?s)layer 'my_custom_loss' \(type Python, class my_custom_loss.MyCustomLossLayer .*\): "
                    r"setup raised Exception: Need two inputs \(pred and label\) for this layer.\n"
                    r".*in setup\n    raise Exception", caught.value.minicaffe_context)


@pytest.mark.parametrize("source, shown", [
    ("import caffe\nraise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here"),
    ("import caffe\nclass Broken(caffe.Layer)\n    pass\n", "SyntaxError"),
])
def test_a_module_that_fails_to_import(tmp_path, source, shown):
    name = "mc_fails_" + ("runtime" if "Runtime" in source else "syntax")
    write(tmp_path / "nets" / f"{name}.py", source)
    text = INPUT.format(n=2, d=3) + python_layer("bad", "Broken", ["x"], ["y"], module=name)
    path = write(tmp_path / "nets" / "bad.prototxt", text)
    module_file = str(tmp_path / "nets" / f"{name}.py")
    with pytest.raises(PythonLayerError) as caught:
        minicaffe.Net(path, minicaffe.TEST)
    message = str(caught.value)
    assert message.startswith(f"layer 'bad' (type Python, module '{name}'): import raised")
    assert shown in message and module_file in message
    assert "importlib" not in message
    checked = run("check", path, "--run-python-layers")
    assert checked.exit_code == 0, checked.output
    assert f"note: shapes from layer 'bad' on are unknown (?): Python module '{name}' failed to import: " \
           in checked.output
    assert shown in checked.output and module_file in checked.output
    assert name not in sys.modules


# ---------------------------------------------------------------- GPU mode

@pytest.mark.gpu
def test_python_layer_between_gpu_layers_works_on_host_arrays(tmp_path, fixture_layers):
    from minicaffe import gpu, mode
    if not gpu.available():
        pytest.fail("no CUDA device: run the GPU tests with NUMBA_ENABLE_CUDASIM=1 (make test does)")
    text = (INPUT.format(n=4, d=3) + python_layer("scale", "ScaleByParam", ["x"], ["y"], '{"factor": -2}')
            + 'layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }\n'
            + "force_backward: true\n")
    path = write(tmp_path / "gpu.prototxt", text)
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    results = []
    for use_gpu in (True, False):
        net = minicaffe.Net(path, minicaffe.TRAIN)
        (mode.set_mode_gpu if use_gpu else mode.set_mode_cpu)()
        try:
            out = net.forward(x=x, t=t)
            net.backward()
            results.append((float(out["loss"]), net.blobs["x"].diff.copy()))
        finally:
            mode.set_mode_cpu()
    (gpu_loss, gpu_diff), (cpu_loss, cpu_diff) = results
    assert gpu_loss == pytest.approx(0.5 * np.sum((-2 * x - t) ** 2) / 4, rel=1e-5)
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-6)
    np.testing.assert_allclose(gpu_diff, -2 * (-2 * x - t) / 4, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpu_diff, cpu_diff, rtol=1e-6)
