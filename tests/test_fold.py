"""Inference folding: BatchNorm/Scale/Bias chains merged into the Convolution they follow (minicaffe.fold)."""

import numpy as np
import pytest

from minicaffe import TEST, TRAIN, Net
from minicaffe.proto.text import parse_net
from minicaffe.timing import report_lines, time_net

rng = np.random.default_rng(5)


def chain_net(conv="kernel_size: 3 pad: 1", channels=8, outputs=16, bias_term="true", batch_norm=True,
              scale='scale_param { bias_term: true }', bias=False, extra="", loss=False, bn_param=""):
    text = f"""
    {extra}
    layer {{ name: "in" type: "Input" top: "x" top: "t"
      input_param {{ shape {{ dim: 2 dim: {channels} dim: 5 dim: 5 }} shape {{ dim: 2 dim: {outputs} dim: 5 dim: 5 }} }} }}
    layer {{ name: "conv" type: "Convolution" bottom: "x" top: "y"
      convolution_param {{ num_output: {outputs} {conv} bias_term: {bias_term}
        weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.5 }} }} }}
    """
    if batch_norm:
        text += f'layer {{ name: "bn" type: "BatchNorm" bottom: "y" top: "y" {bn_param} }}\n'
    if scale is not None:
        text += f'layer {{ name: "scale" type: "Scale" bottom: "y" top: "y" {scale} }}\n'
    if bias:
        text += 'layer { name: "bias" type: "Bias" bottom: "y" top: "y" }\n'
    text += 'layer { name: "relu" type: "ReLU" bottom: "y" top: "z" }\n'
    if loss:
        text += 'layer { name: "loss" type: "EuclideanLoss" bottom: "z" bottom: "t" top: "loss" }\n'
    return parse_net(text)


def randomize(net):
    for name, blobs in net.params.items():
        for blob in blobs:
            blob.data[...] = rng.uniform(0.5, 1.5, blob.shape) if name == "bn" else rng.normal(size=blob.shape)
    if "bn" in net.params:
        net.params["bn"][2].data[...] = 3.0          # a scale factor other than 1
    net.blobs["x"].data[...] = rng.normal(size=net.blobs["x"].shape)
    net.blobs["t"].data[...] = rng.normal(size=net.blobs["t"].shape)


def twins(param, phase=TEST):
    folded, plain = Net(param, phase), Net(param, phase)
    randomize(folded)
    plain.share_with(folded)
    plain.blobs["x"].data[...] = folded.blobs["x"].data
    plain.blobs["t"].data[...] = folded.blobs["t"].data
    plain.fold_inference = False
    return folded, plain


@pytest.mark.parametrize("conv, channels, outputs, path", [
    ("kernel_size: 3 pad: 1", 8, 16, "im2row"),
    ("kernel_size: 1", 3, 4, "1x1"),
    ("kernel_size: 3 pad: 1 group: 4", 4, 4, "direct"),
])
def test_folded_forward_equals_the_layers_one_by_one_on_every_path(conv, channels, outputs, path):
    folded, plain = twins(chain_net(conv, channels, outputs))
    assert folded.layer_dict["conv"].conv_path == path
    assert list(folded.active_folds()) == [1] and folded.active_folds()[1].names == ["bn", "scale"]
    np.testing.assert_allclose(folded.forward()["z"], plain.forward()["z"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [
    dict(bias_term="false"), dict(scale=None), dict(batch_norm=False), dict(scale="", bias=True),
    dict(batch_norm=False, scale=None, bias=True),
])
def test_partial_chains_and_a_convolution_without_bias(options):
    folded, plain = twins(chain_net(**options))
    assert folded.active_folds()
    np.testing.assert_allclose(folded.forward()["z"], plain.forward()["z"], rtol=1e-5, atol=1e-5)


def test_parameters_changed_through_a_kept_array_are_seen():
    folded, plain = twins(chain_net())
    folded.forward()
    gamma = folded.params["scale"][0].data            # kept, then written through later (net surgery does this)
    weights = folded.params["conv"][0].data
    gamma *= -2.0
    weights[0] += 1.0
    np.testing.assert_allclose(folded.forward()["z"], plain.forward()["z"], rtol=1e-5, atol=1e-5)


def test_a_forward_ending_at_the_convolution_gives_its_own_output():
    folded, plain = twins(chain_net())
    np.testing.assert_allclose(folded.forward(end="conv")["y"], plain.forward(end="conv")["y"], rtol=1e-6)


def test_backward_after_a_folded_forward_has_caffes_gradients():
    folded, plain = twins(chain_net(loss=True))
    assert folded.active_folds()
    np.testing.assert_allclose(folded.forward()["loss"], plain.forward()["loss"], rtol=1e-5)
    folded.backward()
    plain.backward()
    for name in ("conv", "scale"):
        for mine, theirs in zip(folded.params[name], plain.params[name]):
            np.testing.assert_allclose(mine.diff, theirs.diff, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("param, phase", [
    (chain_net(), TRAIN),
    (chain_net(extra="force_backward: true"), TEST),
    (chain_net(batch_norm=False, scale='scale_param { axis: 0 num_axes: 1 }'), TEST),   # over the batch
    (chain_net(batch_norm=False, scale='scale_param { num_axes: 0 }'), TEST),            # one scalar
    (chain_net(scale=None, bn_param="batch_norm_param { use_global_stats: false }"), TEST),
])
def test_no_folding_where_it_could_show(param, phase):
    assert Net(param, phase).active_folds() == {}


def test_switches_turn_folding_off(monkeypatch):
    net = Net(chain_net(), TEST)
    assert net.active_folds()
    net.fold_inference = False
    assert net.active_folds() == {}
    net.fold_inference = True
    monkeypatch.setenv("MINICAFFE_FOLD", "0")
    assert net.active_folds() == {}


def test_callbacks_see_every_layer_and_time_shows_the_fold():
    net = Net(chain_net(), TEST)
    randomize(net)
    seen = []
    net.before_forward(lambda i: seen.append(("before", i)))
    net.after_forward(lambda i: seen.append(("after", i)))
    net.forward()
    assert seen == [(kind, i) for i in range(5) for kind in ("before", "after")]
    lines = list(report_lines(time_net(Net(chain_net(), TEST), iterations=1)))
    assert any("conv\tforward:" in line and "[im2row, with bn, scale folded in]" in line for line in lines)
    assert any("bn\tforward: 0 ms. [folded into conv]" in line for line in lines)
