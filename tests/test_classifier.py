"""Classifier.predict against a hand computation: resize, crops, preprocessing, a numpy net."""

import gzip
import os

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import io
from minicaffe.classifier import Classifier
from minicaffe.errors import MinicaffeError, ShapeError
from minicaffe.proto import caffe_pb2
from minicaffe.proto.text import read_net, to_text

from tests.conftest import EXAMPLES, deploy_with_random_weights

# Batch 4 (not a divisor of 10) makes forward_all pad its last batch; a 6 x 5 crop
# tells height from width. An InnerProduct sees every pixel, so each crop and
# mirror gives its own prediction.
DEPLOY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 6 dim: 5 } } }
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.3 }
                              bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
"""
CROP = (6, 5)


@pytest.fixture
def tiny(tmp_path):
    """(deploy path, weights path, (W, b)) of the tiny net with random weights."""
    deploy, weights, net = deploy_with_random_weights(tmp_path, DEPLOY, seed=3)
    return deploy, weights, [blob.data.copy() for blob in net.params["score"]]


def softmax_net(params, crops_chw):
    """The tiny net in numpy: InnerProduct then Softmax, in float64."""
    weight, bias = params
    scores = crops_chw.reshape(len(crops_chw), -1).astype(np.float64) @ weight.T.astype(np.float64) + bias
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)


def ten_crops(image, crop):
    """Corners (top-left, top-right, bottom-left, bottom-right), centre, then the five mirrored."""
    height, width = image.shape[:2]
    h, w = crop
    corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w)]
    corners.append((int(height / 2 - h / 2), int(width / 2 - w / 2)))
    crops = [image[top:top + h, left:left + w] for top, left in corners]
    return crops + [c[:, ::-1] for c in crops]


def centre_crop(image, crop):
    height, width = image.shape[:2]
    top, left = int(height / 2 - crop[0] / 2), int(width / 2 - crop[1] / 2)
    return image[top:top + crop[0], left:left + crop[1]]


def preprocess(crop, mean=0.0, raw_scale=1.0, input_scale=1.0, channel_swap=(0, 1, 2)):
    """H x W x K -> K x H x W with pycaffe's order: swap, raw scale, mean, input scale."""
    swapped = crop[:, :, list(channel_swap)]
    mean = np.asarray(mean)
    if mean.ndim == 3:
        mean = mean.transpose(1, 2, 0)
    return ((swapped * raw_scale - mean) * input_scale).transpose(2, 0, 1)


def random_images(count, shape, seed=0):
    return [np.random.default_rng(seed + i).uniform(0, 1, shape).astype(np.float32) for i in range(count)]


SETTINGS = [
    {},
    {"mean": np.array([100.0, 120.0, 140.0]), "raw_scale": 255.0, "channel_swap": (2, 1, 0), "input_scale": 0.01},
    {"mean": np.random.default_rng(9).uniform(0, 1, (3,) + CROP), "channel_swap": (1, 2, 0), "input_scale": 2.0},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["plain", "mean-raw-swap-scale", "mean-image"])
def test_oversampled_predictions_average_ten_crops(tiny, settings):
    deploy, weights, params = tiny
    classifier = Classifier(deploy, weights, image_dims=(9, 8), **settings)
    images = random_images(3, (9, 8, 3))               # already image_dims: no resize
    predictions = classifier.predict(images)
    expected = [softmax_net(params, np.stack([preprocess(c, **settings) for c in ten_crops(im, CROP)])).mean(axis=0)
                for im in images]
    assert predictions.shape == (3, 4)
    np.testing.assert_allclose(predictions, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(predictions.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("settings", SETTINGS, ids=["plain", "mean-raw-swap-scale", "mean-image"])
def test_centre_crop_predictions(tiny, settings):
    deploy, weights, params = tiny
    classifier = Classifier(deploy, weights, image_dims=(9, 8), **settings)
    images = random_images(5, (9, 8, 3), seed=10)
    predictions = classifier.predict(images, oversample=False)
    expected = softmax_net(params, np.stack([preprocess(centre_crop(im, CROP), **settings) for im in images]))
    assert predictions.shape == (5, 4)
    np.testing.assert_allclose(predictions, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(predictions.sum(axis=1), 1, rtol=1e-5)


def test_images_are_resized_to_image_dims_first(tiny):
    deploy, weights, params = tiny
    classifier = Classifier(deploy, weights, image_dims=(8, 7))
    images = random_images(2, (13, 11, 3), seed=20) + random_images(1, (5, 4, 3), seed=30)
    resized = [io.resize_image(im, (8, 7)) for im in images]
    np.testing.assert_allclose(
        classifier.predict(images),
        [softmax_net(params, np.stack([preprocess(c) for c in ten_crops(im, CROP)])).mean(axis=0) for im in resized],
        rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        classifier.predict(images, oversample=False),
        softmax_net(params, np.stack([preprocess(centre_crop(im, CROP)) for im in resized])), rtol=1e-4, atol=1e-6)


def test_defaults_follow_the_input_blob(tiny):
    deploy, weights, params = tiny
    classifier = Classifier(deploy, weights)
    assert isinstance(classifier, caffe.Net) and classifier.phase == caffe.TEST
    np.testing.assert_array_equal(classifier.crop_dims, CROP)
    np.testing.assert_array_equal(classifier.image_dims, CROP)
    assert classifier.transformer.transpose == {"data": (2, 0, 1)}
    assert not classifier.transformer.mean and not classifier.transformer.raw_scale
    np.testing.assert_allclose(classifier.blobs["data"].data.shape, (4, 3) + CROP)
    # At the input's own size every oversampled crop is the whole image or its mirror.
    image = random_images(1, CROP + (3,), seed=40)[0]
    expected = softmax_net(params, np.stack([preprocess(image), preprocess(image[:, ::-1])])).mean(axis=0)
    np.testing.assert_allclose(classifier.predict([image])[0], expected, rtol=1e-4, atol=1e-6)


def test_errors_name_the_problem(tiny):
    deploy, weights, _ = tiny
    classifier = Classifier(deploy, weights, image_dims=(8, 8))
    with pytest.raises(MinicaffeError, match="at least one image"):
        classifier.predict([])
    with pytest.raises(ShapeError, match=r"image 1 has shape \(8, 8\), not H x W x K"):
        classifier.predict([np.zeros((8, 8, 3)), np.zeros((8, 8))])
    with pytest.raises(ShapeError, match="image 1 has 1 channels but image 0 has 3"):
        classifier.predict([np.zeros((8, 8, 3)), np.zeros((8, 8, 1))])
    with pytest.raises(ShapeError, match=r"image_dims \(5, 8\) is smaller than the crop \(6, 5\)"):
        Classifier(deploy, weights, image_dims=(5, 8))
    with pytest.raises(ShapeError, match="image_dims must be"):
        Classifier(deploy, weights, image_dims=(8, 8, 3))
    classifier.image_dims = (8, 4)
    with pytest.raises(ShapeError, match=r"image_dims \(8, 4\) is smaller than the crop \(6, 5\)"):
        classifier.predict([np.zeros((8, 8, 3))])
    with pytest.raises(ValueError, match="Mean channels incompatible"):
        Classifier(deploy, weights, mean=np.zeros(2))


def test_a_net_without_an_input_blob_is_refused(tmp_path):
    deploy = tmp_path / "data.prototxt"
    deploy.write_text('layer { name: "d" type: "DummyData" top: "data" dummy_data_param { shape { dim: 1 dim: 3 '
                      'dim: 4 dim: 4 } } }\n' + DEPLOY.split("\n", 3)[3])
    with pytest.raises(MinicaffeError, match="no input blob"):
        Classifier(str(deploy), None)


# ---------------------------------------------------------------- the digits example

def digits_deploy():
    """The digits example's net as a deploy net: an Input of 10 x 1 x 8 x 8 for the data
    layers, Softmax probabilities for the accuracy and loss layers."""
    train = read_net(os.path.join(EXAMPLES, "digits", "digits_net.prototxt"))
    deploy = caffe_pb2.NetParameter(name=train.name)
    data = deploy.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[10, 1, 8, 8])
    for layer in train.layer:
        if layer.type not in ("HDF5Data", "Accuracy", "SoftmaxWithLoss"):
            deploy.layer.add().CopyFrom(layer)
    deploy.layer.add(name="prob", type="Softmax", bottom=["ip2"], top=["prob"])
    return deploy


def test_classifier_on_the_digits_example(tmp_path):
    from PIL import Image

    deploy = tmp_path / "digits_deploy.prototxt"
    deploy.write_text(to_text(digits_deploy()))
    caffe.set_random_seed(5)
    net = caffe.Net(str(deploy), caffe.TEST)
    weights = tmp_path / "digits.caffemodel"
    net.save(str(weights))
    with gzip.open(os.path.join(EXAMPLES, "digits", "digits.csv.gz"), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", max_rows=12)
    images = []
    for index, row in enumerate(table):       # 12 digits: two batches, the second padded
        path = tmp_path / f"digit{index}.png"
        Image.fromarray(np.round(row[:64].reshape(8, 8) * 255 / 16).astype(np.uint8)).save(path)
        images.append(io.load_image(str(path), color=False))
    assert images[0].shape == (8, 8, 1)
    np.testing.assert_allclose(images[3][:, :, 0], table[3, :64].reshape(8, 8) / 16, atol=0.5 / 255)

    classifier = Classifier(str(deploy), str(weights))
    direct = np.concatenate([net.forward(data=np.stack([im.transpose(2, 0, 1) for im in batch]))["prob"].copy()
                             for batch in (images[:10], images[10:] + [np.zeros((8, 8, 1))] * 8)])[:12]
    centre = classifier.predict(images, oversample=False)
    assert centre.shape == (12, 10)
    np.testing.assert_allclose(centre, direct, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(centre.sum(axis=1), 1, rtol=1e-5)
    mirrored = net.forward(data=np.stack([im[:, ::-1].transpose(2, 0, 1) for im in images[:10]]))["prob"].copy()
    np.testing.assert_allclose(classifier.predict(images[:10]), (direct[:10] + mirrored) / 2, rtol=1e-4, atol=1e-6)


def test_the_shipped_digits_deploy_net_is_the_training_net_without_data_and_loss():
    shipped = read_net(os.path.join(EXAMPLES, "digits", "digits_deploy.prototxt"))
    built = digits_deploy()
    assert list(shipped.layer[0].input_param.shape[0].dim) == [1, 1, 8, 8]
    assert [layer.SerializeToString() for layer in shipped.layer[1:]] == \
        [layer.SerializeToString() for layer in built.layer[1:]]
