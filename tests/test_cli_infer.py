"""Real data through a net on the command line: forward --input/--output, classify, detect (minicaffe.feed).

Expected inputs are computed here from the documented formulas (pycaffe's
Transformer order; classification.cpp's, with OpenCV itself for the resize),
not with minicaffe.feed, and the expected outputs by running the Net in Python.
"""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from minicaffe import TEST, Net, io
from minicaffe.cli import main
from tests.conftest import EXAMPLES

Image = pytest.importorskip("PIL.Image")

TINY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
H, W = 4, 5
MEAN = np.array([10.0, 20.0, 30.0])


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def tiny(tmp_path):
    """(net path, weights path): the tiny net with seeded weights saved as a caffemodel."""
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    net = Net(str(path), TEST)
    rng = np.random.RandomState(0)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.normal(0, 0.3, blob.shape)
    weights = tmp_path / "tiny.caffemodel"
    net.save(str(weights))
    return str(path), str(weights)


def python_forward(tiny, items, blobs=("prob", "conv")):
    net = Net(tiny[0], TEST, weights=tiny[1])
    net.blobs["data"].reshape(items.shape)
    net.blobs["data"].data[...] = items
    out = net.forward(blobs=list(blobs))
    return {name: out[name].copy() for name in blobs}


def save_rgb(path, rgb):
    Image.fromarray(rgb, "RGB").save(path)
    return str(path)


def random_rgb(seed, height=H, width=W):
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)


def pycaffe_item(rgb, raw_scale=255.0, swap=(2, 1, 0), mean=MEAN, input_scale=0.5):
    """caffe.io.Transformer.preprocess, written out: [0,1] RGB, transpose, channel swap, *raw, -mean, *scale."""
    x = (rgb.astype(np.float64) / 255.0).transpose(2, 0, 1)[list(swap)]
    return ((x * raw_scale - np.asarray(mean)[:, None, None]) * input_scale).astype(np.float32)


PYCAFFE_OPTIONS = ("--raw-scale", "255", "--channel-swap", "2,1,0", "--mean", "10,20,30", "--input-scale", "0.5")


def test_forward_an_image_to_npz_matches_the_net_in_python(tiny, tmp_path):
    rgb = random_rgb(1)
    image = save_rgb(tmp_path / "a.png", rgb)
    out = tmp_path / "out.npz"
    result = run("forward", tiny[0], "--weights", tiny[1], "--input", f"data={image}", "--blobs", "prob,conv",
                 "--blobs", "data", "--output", out, *PYCAFFE_OPTIONS)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert "Forward of 1 item in 1 batch" in result.stdout
    assert f"to {out}" in result.stdout
    saved = np.load(out, allow_pickle=False)
    assert sorted(saved.files) == ["conv", "data", "names", "prob"]
    expected_input = pycaffe_item(rgb)[None]
    np.testing.assert_allclose(saved["data"], expected_input, atol=1e-4)
    expected = python_forward(tiny, expected_input)
    np.testing.assert_allclose(saved["prob"], expected["prob"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(saved["conv"], expected["conv"], rtol=1e-5, atol=1e-5)
    assert saved["prob"].shape == (1, 4) and list(saved["names"]) == ["a.png"]


def test_forward_npy_one_item_and_many_to_a_folder(tiny, tmp_path):
    rng = np.random.RandomState(2)
    one = rng.normal(size=(3, H, W)).astype(np.float32)
    np.save(tmp_path / "one.npy", one)
    result = run("forward", tiny[0], "--weights", tiny[1], "--input", tmp_path / "one.npy",
                 "--output", tmp_path / "one.npz")
    assert result.exit_code == 0, result.output
    saved = np.load(tmp_path / "one.npz")
    assert saved.files == ["prob"]                   # default: the outputs; no names for arrays
    np.testing.assert_allclose(saved["prob"], python_forward(tiny, one[None])["prob"], rtol=1e-5, atol=1e-6)

    many = rng.normal(size=(5, 3, H, W)).astype(np.float64)
    np.save(tmp_path / "many.npy", many)
    folder = tmp_path / "feats"
    result = run("forward", tiny[0], "--weights", tiny[1], "--input", f"data={tmp_path / 'many.npy'}",
                 "--blobs", "prob,conv", "--output", folder)
    assert result.exit_code == 0, result.output
    assert "Forward of 5 items in 3 batches" in result.stdout      # the blob's batch of 2: 2, 2, 1
    assert sorted(os.listdir(folder)) == ["conv.npy", "prob.npy"]
    expected = python_forward(tiny, many.astype(np.float32))
    for name in ("prob", "conv"):
        np.testing.assert_allclose(np.load(folder / f"{name}.npy"), expected[name], rtol=1e-5, atol=1e-5)


def test_forward_to_extract_features_databases_and_hdf5(tiny, tmp_path):
    """--output X.lmdb: Caffe's extract_features layout, one float Datum per item keyed by its index; X.h5."""
    import h5py
    import lmdb

    from minicaffe.proto import caffe_pb2
    many = np.random.RandomState(5).normal(size=(3, 3, H, W)).astype(np.float32)
    np.save(tmp_path / "many.npy", many)
    expected = python_forward(tiny, many)
    result = run("forward", tiny[0], "--weights", tiny[1], "--input", tmp_path / "many.npy",
                 "--blobs", "prob,conv", "--output", tmp_path / "feats.lmdb")
    assert result.exit_code == 0, result.output
    for name, shape in (("prob", (4, 1, 1)), ("conv", (2, H, W))):
        env = lmdb.open(str(tmp_path / f"feats_{name}.lmdb"), readonly=True, lock=False)
        with env.begin() as txn:
            records = list(txn.cursor())
        env.close()
        assert [key for key, _ in records] == [b"0000000000", b"0000000001", b"0000000002"]
        for index, (_, value) in enumerate(records):
            datum = caffe_pb2.Datum.FromString(value)
            assert (datum.channels, datum.height, datum.width) == shape and not datum.data
            np.testing.assert_allclose(np.array(datum.float_data).reshape(shape),
                                       expected[name][index].reshape(shape), rtol=1e-5, atol=1e-5)
    result = run("forward", tiny[0], "--weights", tiny[1], "--input", tmp_path / "many.npy",
                 "--blobs", "prob", "--output", tmp_path / "prob.lmdb")
    assert result.exit_code == 0 and os.path.isdir(tmp_path / "prob.lmdb")      # one blob: the path itself
    result = run("forward", tiny[0], "--weights", tiny[1], "--input", tmp_path / "many.npy",
                 "--blobs", "prob", "--output", tmp_path / "prob.lmdb")
    assert result.exit_code == 1 and "already exists" in result.output           # as Caffe: never overwritten
    result = run("forward", tiny[0], "--weights", tiny[1], "--input", tmp_path / "many.npy",
                 "--blobs", "prob,conv", "--output", tmp_path / "feats.h5")
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "feats.h5", "r") as h5:
        assert sorted(h5) == ["conv", "prob"]
        np.testing.assert_allclose(h5["prob"][...], expected["prob"], rtol=1e-5, atol=1e-6)


def test_forward_a_folder_in_batches_keeps_input_order_and_names(tiny, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rgbs = {f"img{i}.png": random_rgb(10 + i) for i in (3, 0, 4, 1, 2)}
    for name, rgb in rgbs.items():
        save_rgb(folder / name, rgb)
    (folder / "notes.txt").write_text("not an image")
    names = sorted(rgbs)
    expected = python_forward(tiny, np.stack([pycaffe_item(rgbs[name]) for name in names]))
    for extra, batches in (((), 3), (("--batch-size", "4"), 2)):
        out = tmp_path / f"out{len(extra)}"
        result = run("forward", tiny[0], "--weights", tiny[1], "--input", f"data={folder}", "--blobs", "prob",
                     "--blobs", "conv", "--output", out, *PYCAFFE_OPTIONS, *extra)
        assert result.exit_code == 0, result.output
        assert f"Forward of 5 items in {batches} batches" in result.stdout
        assert "skipped 1 file(s)" in result.stderr
        assert sorted(os.listdir(out)) == ["conv.npy", "names.npy", "prob.npy"]
        assert list(np.load(out / "names.npy")) == names
        np.testing.assert_allclose(np.load(out / "prob.npy"), expected["prob"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.load(out / "conv.npy"), expected["conv"], rtol=1e-5, atol=1e-5)


def test_caffe_cpp_preprocessing_is_classification_cpps(tiny, tmp_path):
    cv2 = pytest.importorskip("cv2")
    rgb = random_rgb(5, height=9, width=7)                 # resized to 4 x 5 on its 8-bit pixels
    image = save_rgb(tmp_path / "big.png", rgb)
    mean_image = np.random.RandomState(6).uniform(0, 255, (1, 3, 6, 6)).astype(np.float32)
    io.write_binaryproto(mean_image, tmp_path / "mean.binaryproto")
    out = tmp_path / "cpp.npz"
    result = run("forward", tiny[0], "--weights", tiny[1], "--input", image, "--preprocess", "caffe-cpp",
                 "--mean", tmp_path / "mean.binaryproto", "--blobs", "data,prob", "--output", out)
    assert result.exit_code == 0, result.output
    # classification.cpp: cv::imread(-1) (BGR), cv::resize to the input, float, minus the mean file's channel means
    bgr = cv2.imread(image, cv2.IMREAD_UNCHANGED)
    resized = cv2.resize(bgr, (W, H), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected = (resized - mean_image[0].mean(axis=(1, 2))).transpose(2, 0, 1)[None]
    saved = np.load(out)
    np.testing.assert_allclose(saved["data"], expected, atol=1.0 + 1e-4)   # OpenCV builds differ by one level
    assert np.mean(np.abs(saved["data"] - expected) < 1e-4) > 0.9
    np.testing.assert_allclose(saved["prob"], python_forward(tiny, saved["data"], ("prob",))["prob"], rtol=1e-5)

    # a grey image for a 3-channel input is replicated (GRAY2BGR); --input-scale applies last
    grey = np.random.RandomState(7).randint(0, 256, (H, W)).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    result = run("forward", tiny[0], "--weights", tiny[1], "--input", tmp_path / "grey.png", "--preprocess",
                 "caffe-cpp", "--mean", "100", "--input-scale", "0.25", "--blobs", "data", "--output", out)
    assert result.exit_code == 0, result.output
    expected = np.repeat((grey.astype(np.float32)[None] - 100) * 0.25, 3, axis=0)[None]
    np.testing.assert_allclose(np.load(out)["data"], expected, atol=1e-5)


def test_shape_mismatch_and_bad_sources_are_one_line_errors(tiny, tmp_path, write_file):
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5, 4), np.float32))
    result = run("forward", tiny[0], "--weights", tiny[1], "--input", tmp_path / "wrong.npy")
    assert result.exit_code == 1
    assert "minicaffe: error: input 'data'" in result.output
    assert "(expected (2, 3, 4, 5), got (3, 5, 4))" in result.output
    assert len(result.output.strip().splitlines()) == 1

    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    not_image = write_file("notes.png", "this is text")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (tmp_path / "objects.npy", "cannot be loaded without pickle"),
        (tmp_path / "missing.png", "does not exist"),
        (not_image, "is not a readable image"),
        (empty, "holds no images"),
        (f"label={tmp_path / 'one.npy'}", "give NAME=SOURCE"),     # not an input name: the whole text is a path
    ]
    for source, message in cases:
        result = run("forward", tiny[0], "--weights", tiny[1], "--input", source)
        assert result.exit_code == 1, (source, result.output)
        assert message in result.output, (source, result.output)
        assert "Traceback" not in result.output

    image = save_rgb(tmp_path / "a.png", random_rgb(0))
    for args, message in [
        (("--blobs", "nope"), "no blob named 'nope'"),
        (("--iterations", "2"), "--iterations does not apply with --input"),
        (("--preprocess", "caffe-cpp", "--raw-scale", "255"), "--raw-scale belongs to --preprocess pycaffe"),
        (("--mean", "1,2"), "the mean has 2 values but the input has 3 channels"),
        (("--channel-swap", "0,0,1"), "give an order of the channels"),
    ]:
        result = run("forward", tiny[0], "--weights", tiny[1], "--input", image, *args)
        assert result.exit_code != 0, (args, result.output)
        assert message in result.output, (args, result.output)


def test_forward_without_weights_warns_that_the_weights_are_the_fillers(tiny, tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((3, H, W), np.float32))
    result = run("forward", tiny[0], "--input", tmp_path / "one.npy")
    assert result.exit_code == 0, result.output
    assert "minicaffe: warning: no --weights" in result.stderr and "fillers' values" in result.stderr
    assert run("forward", tiny[0]).stderr.count("no --weights") == 1          # without --input too
    assert "warning" not in run("forward", tiny[0], "--weights", tiny[1]).stderr


CLASSES = """
name: "colours"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
"""


def test_classify_prints_classification_cpps_top_k(tmp_path):
    path = tmp_path / "colours.prototxt"
    path.write_text(CLASSES)
    net = Net(str(path), TEST)
    weights = np.zeros((3, 3, 4, 4), np.float32)
    for k in range(3):
        weights[k, k] = 0.25                       # class k sums channel k: a pure colour scores 4 for its class
    net.params["score"][0].data[...] = weights.reshape(3, -1)
    net.params["score"][1].data[...] = 0
    net.save(str(tmp_path / "colours.caffemodel"))
    green = np.zeros((6, 6, 3), np.uint8)
    green[..., 1] = 255
    save_rgb(tmp_path / "green.png", green)
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    result = run("classify", path, tmp_path / "colours.caffemodel", tmp_path / "green.png",
                 "--labels", tmp_path / "labels.txt", "--top-k", "2")
    assert result.exit_code == 0, result.output
    top = np.exp(4) / (np.exp(4) + 2)
    assert result.stdout.splitlines() == [
        f"---------- Prediction for {tmp_path / 'green.png'} ----------",
        f'{top:.4f} - "dog"',
        f'{(1 - top) / 2:.4f} - "cat"',            # a tie with bird: the lower class first
    ]
    (tmp_path / "two.txt").write_text("a\nb\n")
    result = run("classify", path, tmp_path / "colours.caffemodel", tmp_path / "green.png",
                 "--labels", tmp_path / "two.txt")
    assert result.exit_code == 1 and "has 2 labels but the net's output 'prob' has 3 classes" in result.output


def test_detect_writes_boxes_in_pixels_and_draws_them(tmp_path):
    import caffe

    ssd = os.path.join(EXAMPLES, "ssd")
    deploy, weights = os.path.join(ssd, "ssd_tiny_deploy.prototxt"), os.path.join(ssd, "ssd_tiny.caffemodel")
    big = tmp_path / "street_big.png"
    with Image.open(os.path.join(ssd, "street.png")) as street:
        street.resize((192, 144)).save(big)
    threshold = 0.3
    result = run("detect", deploy, weights, big, "--threshold", threshold, "--labels",
                 os.path.join(ssd, "labels.txt"), "--json", tmp_path / "boxes.json", "--draw", tmp_path / "drawn.png",
                 "--raw-scale", "255", "--channel-swap", "2,1,0", "--mean", "127.5", "--input-scale", "0.007843")
    assert result.exit_code == 0, result.output
    # examples/ssd/detect.py's preprocessing with caffe.io, then the rows scaled to the 192 x 144 original
    net = caffe.Net(deploy, weights, caffe.TEST)
    transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_channel_swap("data", (2, 1, 0))
    transformer.set_raw_scale("data", 255)
    transformer.set_mean("data", np.array([127.5, 127.5, 127.5]))
    transformer.set_input_scale("data", 0.007843)
    net.blobs["data"].data[...] = transformer.preprocess("data", caffe.io.load_image(str(big)))
    rows = net.forward()["detection_out"][0, 0]
    rows = rows[(rows[:, 1] >= 0) & (rows[:, 2] >= threshold)]
    assert len(rows) >= 10

    [image] = json.loads((tmp_path / "boxes.json").read_text())
    assert (image["image"], image["width"], image["height"]) == (str(big), 192, 144)
    found = image["detections"]
    assert [d["label"] for d in found] == rows[:, 1].astype(int).tolist()
    names = ["background", "red thing", "green thing", "blue thing"]
    assert [d["name"] for d in found] == [names[int(label)] for label in rows[:, 1]]
    np.testing.assert_allclose([d["score"] for d in found], rows[:, 2], atol=1e-5)
    np.testing.assert_allclose([d["box"] for d in found], rows[:, 3:] * [192, 144, 192, 144], atol=2e-3)
    assert f"{big}: {len(rows)} detections" in result.stdout
    with Image.open(tmp_path / "drawn.png") as drawn:
        assert drawn.format == "PNG" and drawn.size == (192, 144)
        assert not np.array_equal(np.asarray(drawn.convert("RGB")), np.asarray(Image.open(big).convert("RGB")))

    # without --json the JSON is the whole stdout; a net without DetectionOutput is refused
    printed = run("detect", deploy, weights, big, "--threshold", "0.99")
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout)[0]["width"] == 192
    refused = run("detect", os.path.join(EXAMPLES, "legacy", "mlp_v1.prototxt"), weights, big)
    assert refused.exit_code == 1 and "no DetectionOutput layer" in refused.output


def test_labels_files_plain_and_ssd_labelmap(tmp_path):
    from minicaffe.feed import read_labels
    (tmp_path / "plain.txt").write_text("n01 tench\nn02 goldfish\n")
    assert read_labels(tmp_path / "plain.txt") == {0: "n01 tench", 1: "n02 goldfish"}
    (tmp_path / "labelmap.prototxt").write_text(
        'item { name: "none_of_the_above" label: 0 display_name: "background" }\n'
        'item { name: "aeroplane" label: 1 }\n')
    assert read_labels(tmp_path / "labelmap.prototxt") == {0: "background", 1: "aeroplane"}
