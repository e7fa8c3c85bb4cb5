"""The pycaffe-compatible API: `import minicaffe as caffe` runs pycaffe code."""

import types

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import mode
from minicaffe.errors import MinicaffeError, ShapeError, WeightsError
from minicaffe.proto import caffe_pb2

rng = np.random.default_rng(11)

NET = """name: "api"
layer { name: "data" type: "Input" top: "data" top: "target" input_param { shape { dim: 4 dim: 6 } shape { dim: 4 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip2" bottom: "target" top: "loss" loss_weight: 0.5 }
layer { name: "train_only" type: "TanH" bottom: "ip2" top: "t" include { phase: TRAIN } }
"""


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return str(path)


def test_constructor_forms_and_phase(net_file, tmp_path):
    train = caffe.Net(net_file, caffe.TRAIN)
    assert "train_only" in train.layer_dict
    test = caffe.Net(net_file, phase=caffe.TEST)
    assert "train_only" not in test.layer_dict
    weights = tmp_path / "w.caffemodel"
    train.save(str(weights))
    legacy = caffe.Net(net_file, str(weights), caffe.TEST)          # Net(model, weights, phase)
    modern = caffe.Net(net_file, caffe.TEST, weights=str(weights))  # Net(model, phase, weights=...)
    for name in ("ip1", "ip2"):
        for index in range(len(train.params[name])):
            np.testing.assert_array_equal(legacy.params[name][index].data, train.params[name][index].data)
            np.testing.assert_array_equal(modern.params[name][index].data, train.params[name][index].data)
    staged = caffe.Net(net_file, caffe.TEST, level=2, stages=["deploy"])
    assert staged.plan.state.level == 2 and list(staged.plan.state.stage) == ["deploy"]


def test_members(net_file):
    net = caffe.Net(net_file, caffe.TRAIN)
    assert list(net.blobs) == ["data", "target", "ip1", "ip2", "ip2_ip2_0_split_0", "ip2_ip2_0_split_1",
                               "loss", "t"]
    assert net.blobs["data"].data.shape == (4, 6) and net.blobs["data"].shape == (4, 6)
    assert list(net.params) == ["ip1", "ip2"]
    assert [blob.shape for blob in net.params["ip1"]] == [(3, 6), (3,)]
    assert [layer.type for layer in net.layers] == ["Input", "InnerProduct", "ReLU", "InnerProduct", "Split",
                                                     "EuclideanLoss", "TanH"]
    assert net.layer_dict["ip1"].blobs[0] is net.params["ip1"][0]
    assert net.inputs == ["data", "target"] and net.outputs == ["loss", "t"]
    assert net.blob_loss_weights["loss"] == 0.5 and net.blob_loss_weights["ip1"] == 0.0
    assert net.top_names["data"] == ["data", "target"] and net.bottom_names["loss"] == ["ip2_ip2_0_split_0", "target"]
    assert net._layer_names[1] == "ip1" and net._blob_names[0] == "data"


def test_forward_and_backward_with_arguments(net_file):
    net = caffe.Net(net_file, caffe.TRAIN)
    data, target = rng.standard_normal((4, 6)), rng.standard_normal((4, 2))
    out = net.forward(data=data, target=target)
    assert set(out) == {"loss", "t"}
    np.testing.assert_allclose(net.blobs["data"].data, data, rtol=1e-6)
    hidden = np.maximum(data @ net.params["ip1"][0].data.T + net.params["ip1"][1].data, 0)
    prediction = hidden @ net.params["ip2"][0].data.T + net.params["ip2"][1].data
    assert out["loss"] == pytest.approx(np.sum((prediction - target) ** 2) / 8, rel=1e-5)
    assert net.last_loss == pytest.approx(0.5 * out["loss"], rel=1e-6)
    # start/end: run part of the net, return that layer's tops and requested blobs
    partial = net.forward(end="ip1", blobs=["data"])
    assert set(partial) == {"ip1", "data"}
    diffs = net.backward()
    assert set(diffs) == {"data", "target"}
    top_diff = rng.standard_normal((4, 2))
    net.blobs["ip2"].diff[...] = top_diff
    result = net.backward(start="ip2", end="ip2")
    assert set(result) == {"ip1"}
    np.testing.assert_allclose(result["ip1"], top_diff @ net.params["ip2"][0].data, rtol=1e-5)


def test_forward_argument_errors(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    with pytest.raises(MinicaffeError, match="'ip1' is not an input"):
        net.forward(ip1=np.zeros((4, 3)))
    with pytest.raises(ShapeError, match="'data' is not batch sized"):
        net.forward(data=np.zeros((3, 6)))
    with pytest.raises(ShapeError, match=r"cannot copy into data of 'data'.*expected \(4, 6\), got \(4, 5\)"):
        net.forward(data=np.zeros((4, 5)))
    with pytest.raises(MinicaffeError, match="no layer named 'nope'"):
        net.forward(end="nope")


def test_reshape_propagates_new_input_shapes(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    net.blobs["data"].reshape(7, 6)
    net.blobs["target"].reshape(7, 2)
    net.reshape()
    assert net.blobs["ip2"].shape == (7, 2)
    out = net.forward(data=np.ones((7, 6)), target=np.zeros((7, 2)))
    assert out["loss"].shape == ()


def test_forward_all_batches_and_drops_padding(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    data, target = rng.standard_normal((10, 6)), rng.standard_normal((10, 2))
    outputs = net.forward_all(data=data, target=target, blobs=["ip2"])
    assert outputs["ip2"].shape == (10, 2)
    hidden = np.maximum(data @ net.params["ip1"][0].data.T + net.params["ip1"][1].data, 0)
    np.testing.assert_allclose(outputs["ip2"], hidden @ net.params["ip2"][0].data.T + net.params["ip2"][1].data,
                               rtol=1e-5, atol=1e-6)
    assert outputs["loss"].shape == (3,)                     # one scalar per batch (4 + 4 + 2 padded)


def test_forward_backward_all(tmp_path):
    path = tmp_path / "forced.prototxt"
    path.write_text("force_backward: true\n" + NET)        # input diffs need force_backward, as in Caffe
    net = caffe.Net(str(path), caffe.TEST)
    data, target = rng.standard_normal((6, 6)), rng.standard_normal((6, 2))
    outputs, diffs = net.forward_backward_all(data=data, target=target)
    assert set(outputs) == {"loss"} and set(diffs) == {"data", "target"}
    assert diffs["target"].shape == (6, 2)
    # the target diff of EuclideanLoss at weight 0.5: -0.5 * (prediction - target) / batch
    hidden = np.maximum(data @ net.params["ip1"][0].data.T + net.params["ip1"][1].data, 0)
    prediction = hidden @ net.params["ip2"][0].data.T + net.params["ip2"][1].data
    np.testing.assert_allclose(diffs["target"], -0.5 * (prediction - target) / 4, rtol=1e-4, atol=1e-6)
    with pytest.raises(MinicaffeError, match="neither an input nor an output"):
        net.forward_backward_all(bogus=data)


def test_copy_from_skips_unknown_layers_and_checks_shapes(net_file, tmp_path):
    net = caffe.Net(net_file, caffe.TEST)
    model = net.to_proto()
    extra = model.layer.add(name="not_in_net", type="InnerProduct")
    extra.blobs.append(caffe.io.array_to_blobproto(np.ones((2, 2), dtype=np.float32)))
    for blob_proto in model.layer[1].blobs:
        del blob_proto.data[:]
        blob_proto.data.extend([0.25] * int(np.prod(blob_proto.shape.dim)))
    path = tmp_path / "w.caffemodel"
    caffe.io.write_caffemodel(model, path)
    net.copy_from(str(path))
    assert (net.params["ip1"][0].data == 0.25).all()

    model.layer[3].blobs[0].shape.dim[1] = 4
    del model.layer[3].blobs[0].data[:]
    model.layer[3].blobs[0].data.extend([0.0] * 8)
    caffe.io.write_caffemodel(model, path)
    with pytest.raises(WeightsError, match=r"w.caffemodel: layer 'ip2' param 0: shape mismatch, file has \(2, 4\) "
                                           r"and the net has \(2, 3\)"):
        net.copy_from(str(path))


def test_copy_from_reads_legacy_4d_blobs(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    model = caffe_pb2.NetParameter()
    layer = model.layer.add(name="ip2", type="InnerProduct")
    layer.blobs.add(num=1, channels=1, height=2, width=3, data=[1, 2, 3, 4, 5, 6])   # weight 2x3 as Caffe once wrote it
    layer.blobs.add(num=1, channels=1, height=1, width=2, data=[7, 8])               # bias 2
    net.copy_from(model)
    assert net.params["ip2"][0].data.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert net.params["ip2"][1].data.tolist() == [7, 8]


def test_share_with(net_file):
    train = caffe.Net(net_file, caffe.TRAIN)
    test = caffe.Net(net_file, caffe.TEST)
    test.share_with(train)
    train.params["ip1"][0].data[...] = 3.0
    assert (test.params["ip1"][0].data == 3.0).all()


def test_save_and_clear_param_diffs(net_file, tmp_path):
    net = caffe.Net(net_file, caffe.TRAIN)
    net.forward(data=rng.standard_normal((4, 6)), target=rng.standard_normal((4, 2)))
    net.backward()
    assert net.params["ip2"][0].diff.any()
    net.clear_param_diffs()
    assert not any(blob.diff.any() for blob in net.learnable_params)
    path = tmp_path / "saved.caffemodel"
    net.save(str(path))
    saved = caffe.io.caffemodel_arrays(caffe.io.read_caffemodel(path))
    np.testing.assert_array_equal(saved["ip1"][0], net.params["ip1"][0].data)


def test_float64_net(net_file):
    net = caffe.Net(net_file, caffe.TEST, dtype=np.float64)
    assert net.blobs["data"].data.dtype == np.float64 and net.params["ip1"][0].data.dtype == np.float64


def test_random_seed_makes_nets_reproducible(net_file):
    caffe.set_random_seed(5)
    first = caffe.Net(net_file, caffe.TEST).params["ip1"][0].data.copy()
    caffe.set_random_seed(5)
    np.testing.assert_array_equal(caffe.Net(net_file, caffe.TEST).params["ip1"][0].data, first)


def test_modes(monkeypatch):
    caffe.set_mode_cpu()
    assert mode.mode() == "cpu"
    no_gpu = types.SimpleNamespace(is_available=lambda: False, gpus=[])
    monkeypatch.setattr(mode, "_cuda", lambda: no_gpu)
    with pytest.raises(MinicaffeError, match=r"GPU mode needs a usable CUDA device.*minicaffe\[gpu\].*NUMBA_ENABLE_CUDASIM"):
        caffe.set_mode_gpu()
    assert mode.mode() == "cpu"
    one_gpu = types.SimpleNamespace(is_available=lambda: True, gpus=[object()], select_device=lambda device: None)
    monkeypatch.setattr(mode, "_cuda", lambda: one_gpu)
    caffe.set_mode_gpu()
    assert mode.mode() == "gpu"
    with pytest.raises(MinicaffeError, match="device 1 does not exist"):
        caffe.set_device(1)
    caffe.set_device(0)
    caffe.set_mode_cpu()
    with pytest.raises(MinicaffeError, match=">= 0"):
        caffe.set_device(-1)


def test_pycaffe_module_layout():
    from minicaffe.proto import caffe_pb2 as pb
    assert pb.NetParameter and caffe.io.blobproto_to_array and caffe.Layer


def test_gpu_mode_runs_gpu_methods_and_falls_back_to_cpu(monkeypatch):
    from minicaffe.layer import Layer
    from minicaffe.testing import empty_blobs, layer_from_text, make_blobs
    calls = []

    class Both(Layer):
        exact_bottoms = 1
        exact_tops = 1

        def reshape(self, bottom, top):
            top[0].reshape(bottom[0].shape)

        def forward(self, bottom, top):
            calls.append("cpu")

        def forward_gpu(self, bottom, top):
            calls.append("gpu")

    class CpuOnly(Both):
        forward_gpu = None

        def forward(self, bottom, top):
            calls.append("cpu only")
            top[0].data[...] = bottom[0].data

    layer = Both(layer_from_text('name: "both" type: "ReLU"').layer_param)
    bottom, top = make_blobs(np.ones(2)), empty_blobs(1)
    layer.set_up(bottom, top)
    monkeypatch.setitem(mode._state, "mode", "gpu")
    layer.run_forward(bottom, top)
    cpu_only = CpuOnly(layer_from_text('name: "cpu_only" type: "ReLU"').layer_param)
    cpu_top = empty_blobs(1)
    cpu_only.set_up(bottom, cpu_top)
    cpu_only.run_forward(bottom, cpu_top)                      # no GPU kernel: the CPU one runs
    assert cpu_top[0].data.tolist() == [1.0, 1.0]
    monkeypatch.setitem(mode._state, "mode", "cpu")
    layer.run_forward(bottom, top)
    assert calls == ["gpu", "cpu only", "cpu"]


def test_gpu_mode_without_a_device_fails_clearly():
    """Runs without NUMBA_ENABLE_CUDASIM: on a machine with no GPU, GPU mode must refuse."""
    from minicaffe import gpu
    from click.testing import CliRunner
    from minicaffe.cli import main
    if gpu.available():           # a real GPU (or the simulator) is there: GPU mode must work instead
        caffe.set_mode_gpu()
        caffe.set_mode_cpu()
        return
    with pytest.raises(MinicaffeError, match="GPU mode needs a usable CUDA device"):
        caffe.set_mode_gpu()
    result = CliRunner().invoke(main, ["device-query"])
    assert result.exit_code == 1 and "NUMBA_ENABLE_CUDASIM=1" in result.output
    result = CliRunner().invoke(main, ["forward", "examples/legacy/mlp_v1.prototxt", "--gpu", "0"])
    assert result.exit_code == 1 and "GPU mode needs a usable CUDA device" in result.output


def test_weights_that_match_no_layer_warn_and_a_partial_match_does_not(tmp_path):
    import warnings

    from minicaffe.errors import MinicaffeWarning
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }\n')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    other = tmp_path / "other.prototxt"
    other.write_text(text.replace('"ip"', '"fc"').replace('top: "ip"', 'top: "fc"'))
    caffe.Net(str(other), caffe.TEST).save(str(tmp_path / "other.caffemodel"))
    with pytest.warns(MinicaffeWarning, match=r"none of its 1 layers with weights \('fc'\) is a layer of the net"):
        caffe.Net(str(path), caffe.TEST, weights=str(tmp_path / "other.caffemodel"))
    caffe.Net(str(path), caffe.TEST).save(str(tmp_path / "same.caffemodel"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MinicaffeWarning)
        caffe.Net(str(path), caffe.TEST, weights=str(tmp_path / "same.caffemodel"))
