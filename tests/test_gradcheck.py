"""`minicaffe gradcheck` and the checker's collecting mode: users' Python layers get their gradients checked."""

import os
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import minicaffe
from minicaffe.cli import main
from minicaffe.errors import MinicaffeError
from minicaffe.gradcheck import fill_inputs, gradcheck_net
from minicaffe.layer import Layer
from minicaffe.registry import register
from minicaffe.testing import GradientChecker, GradientMismatch, empty_blobs, layer_from_text, make_blobs

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "python_layers")
SEED_NET = os.path.join(FIXTURES, "seed_loss_net.prototxt")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "caffe", raising=False)
    monkeypatch.syspath_prepend(FIXTURES)


def run(*args):
    return CliRunner().invoke(main, list(args))


def affine_net(tmp_path, cls="Affine", init=1.0):
    text = ('layer { name: "input" type: "Input" top: "x" top: "t" '
            'input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "h" inner_product_param { num_output: 3 '
            'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }\n'
            f'layer {{ name: "affine" type: "Python" bottom: "h" top: "y" python_param {{ '
            f'module: "mc_fixture_layers" layer: "{cls}" param_str: \'{{"init": {init}}}\' }} }}\n'
            'layer { name: "ip2" type: "InnerProduct" bottom: "y" top: "p" inner_product_param { num_output: 2 '
            'weight_filler { type: "gaussian" std: 0.5 } } }\n'
            'layer { name: "loss" type: "Python" bottom: "p" bottom: "t" top: "loss" '
            'python_param { module: "mc_fixture_layers" layer: "SquaredErrorLoss" } }\n')
    path = tmp_path / f"{cls}.prototxt"
    path.write_text(text)
    return str(path)


def test_the_seeds_loss_layer_passes_gradcheck():
    result = run("gradcheck", SEED_NET)
    assert result.exit_code == 0, result.output
    assert re.search(r"my_custom_loss\s+Python \(MyCustomLossLayer\)\s+bottom 0 'fc8'\s+8\s+\S+\s+pass",
                     result.output)
    assert "bottom 1" not in result.output          # the label takes no gradient in this net
    assert re.search(r"fc8\s+InnerProduct\s+param 0 \(2x3\)\s+6\s+\S+\s+pass", result.output)
    assert re.search(r"fc8\s+InnerProduct\s+param 1 \(2\)\s+2\s+\S+\s+pass", result.output)
    assert re.search(r"input\s+Input\s+-- no Backward runs here", result.output)
    assert result.output.rstrip().endswith("3 blob(s) checked, 0 failed (threshold 1e-05)\nOK")
    errors = [float(m) for m in re.findall(r"\s(\S+)\s+pass", result.output)]
    assert len(errors) == 3 and max(errors) < 1e-8  # float64: central differences of smooth functions


def test_a_wrong_python_gradient_fails_with_its_error(tmp_path):
    path = affine_net(tmp_path, "AbsAffine", init=-1.0)     # input gradient uses |w| = 1 instead of w = -1
    result = run("gradcheck", path)
    assert result.exit_code == 1, result.output
    assert re.search(r"affine\s+Python \(AbsAffine\)\s+bottom 0 'h'\s+12\s+\S+\s+FAIL\s+\(worst: element",
                     result.output)
    assert re.search(r"affine\s+Python \(AbsAffine\)\s+param 0 \(3\)\s+3\s+\S+\s+pass", result.output)
    assert result.output.rstrip().endswith("FAILED")
    checks = {(r.name, c.part): c for r in gradcheck_net(path) for c in r.checks}
    wrong = checks[("affine", "bottom 0 'h'")]
    # analytic r|w| against numeric r w with w = -1: the error is 2|r| / max(|r|, 1), with |r| in [0.5, 1.5]
    assert not wrong.passed and 1.0 <= wrong.max_error <= 2.0
    assert all(c.passed for key, c in checks.items() if key != ("affine", "bottom 0 'h'"))
    assert len(checks) == 9     # fc: 2 params; affine: bottom and 2 params; ip2: the same; loss: bottom 0


def test_weights_are_loaded_before_checking(tmp_path):
    path = affine_net(tmp_path, "AbsAffine", init=1.0)      # |w| = w: right while the weights are positive
    assert run("gradcheck", path).exit_code == 0
    net = minicaffe.Net(path, minicaffe.TRAIN)
    net.params["affine"][0].data[...] = [0.5, -2.0, 1.0]
    model = str(tmp_path / "negative.caffemodel")
    net.save(model)
    result = run("gradcheck", path, "--weights", model, "--layer", "affine")
    assert result.exit_code == 1, result.output
    assert re.search(r"bottom 0 'h'\s+12\s+\S+\s+FAIL", result.output)


def test_layer_option_selects_layers(tmp_path):
    path = affine_net(tmp_path)
    result = run("gradcheck", path, "--layer", "affine", "--layer", "loss")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()[1:-2]
    assert [line.split()[0] for line in lines] == ["affine", "affine", "affine", "loss"]
    assert "4 blob(s) checked, 0 failed" in result.output
    missing = run("gradcheck", path, "--layer", "nope")
    assert missing.exit_code == 1
    assert "minicaffe: error: no layer named 'nope' in this net (layers: input, fc, affine, ip2, loss)" \
        in missing.output


def test_in_place_layers_are_checked_at_their_input_and_splits_are_skipped(tmp_path):
    text = ('layer { name: "input" type: "Input" top: "x" top: "t" '
            'input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 5 } } }\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "h" inner_product_param { num_output: 5 '
            'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "h" bottom: "t" top: "loss" }\n'
            'layer { name: "loss2" type: "EuclideanLoss" bottom: "h" bottom: "t" top: "loss2" }\n')
    path = tmp_path / "inplace.prototxt"
    path.write_text(text)
    results = {r.name: r for r in gradcheck_net(str(path))}
    assert "h_relu_0_split" not in results and list(results) == ["input", "fc", "relu", "loss", "loss2"]
    relu = results["relu"].checks
    # Before ReLU about half of h is negative; had the check seen ReLU's output, those would be
    # exactly 0, on the kink, and skipped.
    assert [c.part for c in relu] == ["bottom 0 'h'"] and relu[0].checked == 20 and relu[0].passed
    assert all(r.passed for r in results.values())
    # the loss reads a Split's copy of h; the report names h. t is an input: no gradient asked.
    assert [c.part for c in results["loss"].checks] == ["bottom 0 'h'"]


def test_inputs_read_as_labels_get_class_indices(tmp_path):
    text = ('layer { name: "input" type: "Input" top: "x" top: "label" '
            'input_param { shape { dim: 6 dim: 4 } shape { dim: 6 } } }\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "score" inner_product_param { num_output: 3 '
            'weight_filler { type: "gaussian" std: 1 } } }\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }\n'
            'layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" }\n')
    path = tmp_path / "softmax.prototxt"
    path.write_text(text)
    net = minicaffe.Net(str(path), minicaffe.TRAIN, dtype=np.float64)
    fill_inputs(net, np.random.default_rng(0))
    labels, x = net.blobs["label"].data, net.blobs["x"].data
    assert np.array_equal(labels, np.round(labels)) and labels.min() >= 0 and labels.max() <= 2
    assert len(set(labels.tolist())) > 1                  # not all one class
    assert not np.array_equal(x, np.round(x)) and abs(x.mean()) < 1 and 0.5 < x.std() < 1.5
    result = run("gradcheck", str(path))
    assert result.exit_code == 0, result.output
    assert re.search(r"loss\s+SoftmaxWithLoss\s+bottom 0 'score'\s+18\s+\S+\s+pass", result.output)


# ---------------------------------------------------------------- the checker's collecting mode

@register("MinicaffeTestGradcheckSquare")
class _Square(Layer):
    """y = x^2 with a Backward that is 5% too large when the layer is named "wrong", NaN when "nan"."""
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data ** 2

    def backward(self, top, propagate_down, bottom):
        factor = {"wrong": 2.1, "nan": np.nan}.get(self.name, 2.0)
        bottom[0].diff[...] = factor * bottom[0].data * top[0].diff


def test_collecting_mode_reports_the_largest_error_without_raising():
    x = np.random.default_rng(3).standard_normal((3, 4)) + 3        # |x| large: the relative error shows
    checker = GradientChecker(raise_on_mismatch=False)
    layer = layer_from_text('name: "wrong" type: "MinicaffeTestGradcheckSquare"')
    assert checker.check_layer(layer, make_blobs(x), empty_blobs(1)) == 12
    [result] = checker.results
    assert result.part == "bottom 0" and result.checked == 12 and not result.passed
    # analytic 2.1 x w vs numeric 2 x w: (0.1 |x w|) / (2.1 |x w|) where that is above 1
    assert result.max_error == pytest.approx(1 / 21, rel=1e-4)
    assert result.worst.startswith("element (") and "analytic" in result.worst

    right = layer_from_text('name: "right" type: "MinicaffeTestGradcheckSquare"')
    checker.check_layer(right, make_blobs(x), empty_blobs(1))
    assert len(checker.results) == 1 and checker.results[0].passed and checker.results[0].max_error < 1e-6
    with pytest.raises(GradientMismatch):                 # the default still raises at the first mismatch
        GradientChecker().check_layer(layer_from_text('name: "wrong" type: "MinicaffeTestGradcheckSquare"'),
                                      make_blobs(x), empty_blobs(1))


def test_a_nan_gradient_fails():
    x = np.ones((2, 2))
    with pytest.raises(GradientMismatch, match="analytic nan"):
        GradientChecker().check_layer(layer_from_text('name: "nan" type: "MinicaffeTestGradcheckSquare"'),
                                      make_blobs(x), empty_blobs(1))
    checker = GradientChecker(raise_on_mismatch=False)
    checker.check_layer(layer_from_text('name: "nan" type: "MinicaffeTestGradcheckSquare"'),
                        make_blobs(x), empty_blobs(1))
    assert not checker.results[0].passed and checker.results[0].max_error == float("inf")


def test_a_data_layer_has_nothing_to_check(tmp_path):
    text = ('layer { name: "data" type: "Python" top: "data" top: "label" top: "index" python_param { '
            'module: "mc_fixture_layers" layer: "CountingData" param_str: \'{"batch": 2, "dim": 3}\' } }\n'
            'layer { name: "loss" type: "Python" bottom: "data" bottom: "data" top: "loss" '
            'python_param { module: "mc_fixture_layers" layer: "SquaredErrorLoss" } }\n'
            'layer { name: "silence" type: "Silence" bottom: "label" bottom: "index" }\n')
    path = tmp_path / "data.prototxt"
    path.write_text(text)
    results = gradcheck_net(str(path))
    assert [(r.name, r.checks, r.note.split(" (")[0]) for r in results if r.name != "loss"] == [
        ("data", [], "no Backward runs here"), ("silence", [], "no Backward runs here")]
    with pytest.raises(MinicaffeError, match="no layer named 'x'"):
        gradcheck_net(str(path), layers=["x"])
