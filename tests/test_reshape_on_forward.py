"""Every Forward reshapes first, as Caffe's Layer::Forward: pycaffe code never calls net.reshape() itself."""

import numpy as np
import pytest

import minicaffe
from minicaffe import Net, TRAIN
from minicaffe.errors import ShapeError
from minicaffe.proto.text import parse_net

rng = np.random.default_rng(11)

# Convolution, pooling, an inner product and a loss: layers whose kernels
# read buffers sized at reshape time, so a stale shape would read past them.
NET = """
force_backward: true
layer {{ name: "in" type: "Input" top: "data" top: "target"
  input_param {{ shape {{ dim: {n} dim: 2 dim: 6 dim: 6 }} shape {{ dim: {n} dim: 3 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 3 kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 0.3 }}
                      bias_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }}
"""


def net_at(batch, weights_from=None):
    net = Net(parse_net(NET.format(n=batch)), TRAIN)
    if weights_from is not None:
        net.share_with(weights_from)
    return net


def run(net, data, target):
    net.blobs["data"].data[...] = data
    net.blobs["target"].data[...] = target
    loss = net.forward()["loss"].copy()
    net.clear_param_diffs()
    net.backward()
    return (loss, net.blobs["ip"].data.copy(), net.blobs["data"].diff.copy(),
            [blob.diff.copy() for blob in net.params["conv"]])


@pytest.mark.parametrize("new_batch", [5, 1])
def test_blob_reshape_then_forward_equals_a_net_built_at_that_batch(new_batch):
    net = net_at(2)
    run(net, rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((2, 3)))
    data = rng.standard_normal((new_batch, 2, 6, 6)).astype(np.float32)
    target = rng.standard_normal((new_batch, 3)).astype(np.float32)
    net.blobs["data"].reshape(new_batch, 2, 6, 6)          # no net.reshape(): forward does it
    net.blobs["target"].reshape(new_batch, 3)
    got = run(net, data, target)
    want = run(net_at(new_batch, weights_from=net), data, target)
    assert net.blobs["ip"].shape == (new_batch, 3) and net.blobs["pool"].shape == (new_batch, 3, 3, 3)
    for mine, theirs in zip(got[:3], want[:3]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(got[3], want[3]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_forward_start_end_reshapes_only_the_layers_it_runs():
    net = net_at(2)
    net.blobs["data"].reshape(3, 2, 6, 6)
    net.forward(end="relu")
    assert net.blobs["conv"].shape == (3, 3, 6, 6)
    assert net.blobs["pool"].shape == (2, 3, 3, 3)          # not run yet: as Caffe, not reshaped
    net.forward(start="pool", end="ip")
    assert net.blobs["ip"].shape == (3, 3)


def test_an_unchanged_net_does_not_reshape_again(monkeypatch):
    net = net_at(2)
    calls = []
    layer = net.layer_dict["conv"]
    original = layer.reshape
    monkeypatch.setattr(layer, "reshape", lambda bottom, top: (calls.append(1), original(bottom, top)))
    net.forward()
    net.forward()
    assert calls == []
    net.blobs["data"].reshape(1, 2, 6, 6)
    net.blobs["target"].reshape(1, 3)
    net.forward()
    assert calls == [1]


def test_backward_after_an_unforwarded_reshape_is_a_shape_error_naming_the_layer():
    net = net_at(2)
    net.forward()
    net.blobs["ip"].reshape(4, 3)            # the user reshapes a blob and skips Forward
    with pytest.raises(ShapeError, match=r"layer 'loss'.*'ip' was reshaped after this layer's last Forward") as caught:
        net.backward()
    assert "(4, 3)" in str(caught.value) and "(2, 3)" in str(caught.value)


def test_net_reshape_still_shapes_every_blob_before_forward():
    net = net_at(2)
    net.blobs["data"].reshape(4, 2, 6, 6)
    net.blobs["target"].reshape(4, 3)
    net.reshape()
    assert net.blobs["ip"].shape == (4, 3) and net.blobs["loss"].diff == pytest.approx(1.0)


def test_loss_weight_on_a_resized_non_scalar_top_is_seeded_again():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "abs" type: "AbsVal" bottom: "x" top: "y" loss_weight: 0.5 }
    """
    net = Net(parse_net(text), TRAIN)
    net.blobs["x"].reshape(4, 3)
    net.blobs["x"].data[...] = -1.0
    net.forward()
    assert net.last_loss == pytest.approx(0.5 * 12)
    np.testing.assert_array_equal(net.blobs["y"].diff, np.full((4, 3), 0.5, np.float32))


def test_python_layer_reshape_runs_before_every_forward(tmp_path, monkeypatch):
    module = tmp_path / "mc_reshape_counter.py"
    module.write_text(
        "import caffe\n"
        "CALLS = []\n"
        "class Copy(caffe.Layer):\n"
        "    def setup(self, bottom, top):\n        pass\n"
        "    def reshape(self, bottom, top):\n"
        "        CALLS.append(bottom[0].data.shape)\n        top[0].reshape(*bottom[0].data.shape)\n"
        "    def forward(self, bottom, top):\n        top[0].data[...] = bottom[0].data\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "py" type: "Python" bottom: "x" top: "y" python_param { module: "mc_reshape_counter" layer: "Copy" } }
    layer { name: "relu" type: "ReLU" bottom: "y" top: "z" }
    """
    net = Net(parse_net(text), TRAIN)
    import mc_reshape_counter
    net.forward()
    net.forward()
    assert mc_reshape_counter.CALLS == [(2, 3)] * 3      # set-up, then each Forward, as Caffe
    net.blobs["x"].reshape(5, 3)
    assert net.forward()["z"].shape == (5, 3)


def test_memory_data_label_is_n_then_n_1_1_1():
    text = """
    layer { name: "mem" type: "MemoryData" top: "data" top: "label"
      memory_data_param { batch_size: 2 channels: 1 height: 1 width: 2 } }
    """
    net = Net(parse_net(text), TRAIN)
    assert net.blobs["label"].shape == (2,)
    net.set_input_arrays(np.zeros((2, 1, 1, 2), np.float32), np.array([3, 4], np.float32))
    net.forward()
    assert net.blobs["label"].shape == (2, 1, 1, 1)
    assert net.blobs["label"].data.ravel().tolist() == [3.0, 4.0]


def test_caffe_is_minicaffe():
    import caffe
    assert caffe is minicaffe


def test_a_parameter_reshaped_after_set_up_is_refused_before_any_kernel_runs():
    net = net_at(2)
    net.params["ip"][0].reshape(3, 3)            # was 3 x 27: the kernel would read past it
    with pytest.raises(ShapeError, match=r"layer 'ip'.*parameter blob 0 was reshaped after set-up") as caught:
        net.forward()
    assert "(3, 27)" in str(caught.value) and "(3, 3)" in str(caught.value)
