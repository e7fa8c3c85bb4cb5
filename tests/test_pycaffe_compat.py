"""pycaffe code runs unchanged: `import caffe`, automatic loss tops, pycaffe's underscore bindings."""

import importlib
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from click.testing import CliRunner

import minicaffe
from minicaffe import Net, TEST, TRAIN
from minicaffe.cli import main
from minicaffe.errors import GraphError
from minicaffe.proto.text import parse_net

ROOT = pathlib.Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- import caffe

@pytest.mark.parametrize("name", ["caffe.io", "caffe.proto", "caffe.proto.caffe_pb2", "caffe.net_spec",
                                  "caffe.draw", "caffe.coord_map", "caffe.classifier", "caffe.detector"])
def test_every_caffe_submodule_is_minicaffes_own_module_object(name):
    import caffe
    aliased = importlib.import_module(name)
    assert aliased is importlib.import_module("minicaffe" + name[len("caffe"):])
    assert aliased.__spec__.name.startswith("minicaffe")     # minicaffe's modules keep their own spec
    assert caffe is minicaffe


def test_pycaffes_import_forms():
    import caffe
    from caffe import layers as L, params as P
    from caffe.proto import caffe_pb2
    from caffe.pycaffe import Net as PyNet
    import caffe.draw                                           # noqa: F401
    from caffe.coord_map import coord_map_from_to               # noqa: F401
    assert PyNet is minicaffe.Net and caffe.Net is minicaffe.Net
    assert caffe_pb2 is minicaffe.caffe_pb2
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert L is minicaffe.layers and L.Convolution.__name__ == "Convolution"
    assert caffe.Classifier is importlib.import_module("minicaffe.classifier").Classifier
    assert caffe.Detector is importlib.import_module("minicaffe.detector").Detector
    assert caffe.io.Transformer is minicaffe.io.Transformer
    assert caffe.has_nccl() is False
    caffe.set_random_seed(3)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("caffe.no_such_module")


def test_import_caffe_in_a_fresh_interpreter_from_another_folder(tmp_path):
    code = ("import caffe, minicaffe, caffe.io\n"
            "from caffe.proto import caffe_pb2\n"
            "print(caffe is minicaffe, caffe.io is minicaffe.io, caffe_pb2.__name__)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True", "minicaffe.proto.caffe_pb2"]


def test_a_real_caffe_first_on_pythonpath_wins(tmp_path):
    real = tmp_path / "real" / "caffe"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "real"))
    result = subprocess.run([sys.executable, "-c", "import caffe; print(getattr(caffe, 'REAL', False))"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


def test_pyproject_lists_every_package_folder():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "minicaffe").rglob("__init__.py")}
    found.discard("minicaffe.caffe_alias")          # installed as `caffe`, not as a subpackage
    assert found | {"caffe"} == listed


# ---------------------------------------------------------------- automatic loss tops

V0_LENET_TAIL = """
name: "v0"
input: "data"
input_dim: 2 input_dim: 1 input_dim: 4 input_dim: 4
input: "label"
input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1
layers {
  layer { name: "ip" type: "innerproduct" num_output: 3
          weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } }
  bottom: "data" top: "ip"
}
layers { layer { name: "loss" type: "softmax_loss" } bottom: "ip" bottom: "label" }
"""


def test_a_v0_loss_layer_without_top_gets_an_automatic_one_with_loss_weight_1(tmp_path):
    path = tmp_path / "v0.prototxt"
    path.write_text(V0_LENET_TAIL)
    net = Net(str(path), TRAIN)
    assert net.top_names["loss"] == ["(automatic)"]
    assert net.outputs == []                              # Caffe never makes it a net output
    assert net.blob_loss_weights["(automatic)"] == 1.0
    data = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    net.blobs["data"].data[...] = data
    net.blobs["label"].data[...] = np.array([0, 2]).reshape(2, 1, 1, 1)
    assert net.forward() == {}
    scores = data.reshape(2, -1) @ net.params["ip"][0].data.T + net.params["ip"][1].data
    log_prob = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    expected = -(log_prob[0, 0] + log_prob[1, 2]) / 2
    assert net.last_loss == pytest.approx(expected, rel=1e-5)
    assert float(net.blobs["(automatic)"].data) == pytest.approx(expected, rel=1e-5)
    net.backward()
    assert np.abs(net.params["ip"][0].diff).sum() > 0      # the automatic top drives Backward


def test_several_loss_layers_without_tops_and_an_explicit_weight(tmp_path):
    text = """
    layer { name: "x" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "a" type: "EuclideanLoss" bottom: "x" bottom: "t" }
    layer { name: "b" type: "EuclideanLoss" bottom: "x" bottom: "t" loss_weight: 0.5 }
    """
    net = Net(parse_net(text), TRAIN)
    x, t = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    net.blobs["x"].data[...], net.blobs["t"].data[...] = x, t
    net.forward()
    assert net.top_names["a"] == ["(automatic)"] and net.top_names["b"] == ["(automatic) 2"]
    assert net.last_loss == pytest.approx(1.5 + 0.5 * 1.5)
    saved = net.to_proto()                                # the file keeps the layers as written
    assert [list(layer.top) for layer in saved.layer if layer.name in ("a", "b")] == [[], []]


def test_an_automatic_top_cannot_feed_another_layer():
    text = """
    layer { name: "x" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "a" type: "EuclideanLoss" bottom: "x" bottom: "t" }
    layer { name: "r" type: "ReLU" bottom: "(automatic)" top: "r" }
    """
    with pytest.raises(GraphError, match=r"layer 'r'.*'\(automatic\)' is not produced"):
        Net(parse_net(text), TRAIN)


def test_layers_that_are_not_losses_get_no_automatic_top():
    text = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "r" type: "ReLU" bottom: "x" }
    """
    with pytest.raises(GraphError, match="ReLU takes 1 top"):
        Net(parse_net(text), TRAIN)


def test_check_shows_automatic_tops(tmp_path):
    path = tmp_path / "v0.prototxt"
    path.write_text(V0_LENET_TAIL)
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert re.search(r"loss\s+SoftmaxWithLoss\s+ip, label -> \(automatic\) \(scalar\)\s+\[backward; loss_weight 1\]",
                     result.output)


# ---------------------------------------------------------------- pycaffe's bindings

NET = """
layer { name: "x" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3
        weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" loss_weight: 2 }
"""


def test_underscore_bindings_index_blobs_as_pycaffe():
    net = Net(parse_net(NET), TRAIN)
    names = net._blob_names
    assert names == ["x", "t", "y", "loss"] and [blob.shape for blob in net._blobs] == [(2, 3), (2, 3), (2, 3), ()]
    assert net._blob_loss_weights == [0.0, 0.0, 0.0, 2.0]
    assert [names[i] for i in net._inputs] == ["x", "t"] and [names[i] for i in net._outputs] == ["loss"]
    assert [names[i] for i in net._bottom_ids(2)] == ["y", "t"] and [names[i] for i in net._top_ids(1)] == ["y"]
    net.blobs["x"].data[...] = 1.0
    loss = net._forward(0, 2)
    assert loss == pytest.approx(2 * float(net.blobs["loss"].data))
    net._backward(2, 0)
    assert np.abs(net.params["ip"][0].diff).sum() > 0


def test_forward_and_backward_callbacks_see_each_layer_in_order():
    net = Net(parse_net(NET), TRAIN)
    seen = []
    net.before_forward(lambda i: seen.append(("bf", i)))
    net.after_forward(lambda i: seen.append(("af", i)))
    net.before_backward(lambda i: seen.append(("bb", i)))
    net.after_backward(lambda i: seen.append(("ab", i)))
    net.forward()
    net.backward()
    assert seen == [("bf", 0), ("af", 0), ("bf", 1), ("af", 1), ("bf", 2), ("af", 2),
                    ("bb", 2), ("ab", 2), ("bb", 1), ("ab", 1), ("bb", 0), ("ab", 0)]


def test_save_hdf5_and_load_hdf5_whatever_the_file_name(tmp_path):
    net = Net(parse_net(NET), TRAIN)
    path = tmp_path / "weights_without_extension"
    net.save_hdf5(str(path))
    other = Net(parse_net(NET), TEST)
    assert not np.array_equal(other.params["ip"][0].data, net.params["ip"][0].data)
    other.load_hdf5(str(path))
    np.testing.assert_array_equal(other.params["ip"][0].data, net.params["ip"][0].data)
    np.testing.assert_array_equal(other.params["ip"][1].data, net.params["ip"][1].data)


def test_multi_gpu_bookkeeping_is_recorded():
    minicaffe.set_solver_count(2)
    minicaffe.set_solver_rank(1)
    try:
        assert minicaffe.solver_count() == 2 and minicaffe.solver_rank() == 1
    finally:
        minicaffe.set_solver_count(1)
        minicaffe.set_solver_rank(0)


def test_solver_lr_is_the_current_learning_rate(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(NET)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 2 max_iter: 10 '
                      'solver_mode: CPU snapshot_after_train: false')
    sgd = minicaffe.SGDSolver(str(solver))
    assert sgd.lr == pytest.approx(0.1)
    sgd.step(3)
    assert sgd.lr == pytest.approx(0.05)
