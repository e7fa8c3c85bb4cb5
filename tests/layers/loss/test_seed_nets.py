"""The seeds' loss-layer blocks (000: Caffe's loss tutorial, 001: the Python how-to), run as written.

Each block is pasted as the seed shows it, after Input layers that produce its bottoms.
"""

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe.proto.text import parse_net

from .reference import euclidean, sigmoid_cross_entropy, softmax_with_loss

rng = np.random.default_rng(0)

SEED_000_SOFTMAX = '''
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "pred"
  bottom: "label"
  top: "loss"
}
'''

SEED_000_SOFTMAX_WEIGHTED = SEED_000_SOFTMAX.replace('top: "loss"\n', 'top: "loss"\n  loss_weight: 1\n')

SEED_001_SOFTMAX = '''
layer {
name: "loss"
type: "SoftmaxWithLoss"
bottom: "fc8" # The output of your final fully-connected layer (predictions)
bottom: "label" # The name of your data layer that provides labels
top: "loss"
# Optional: you can set a 'weight' for this loss term if you have multiple losses
# loss_weight: 1.0
}
'''

SEED_001_SIGMOID = '''
layer {
name: "loss"
type: "SigmoidCrossEntropyLoss"
bottom: "fc8" # Raw scores, not passed through sigmoid
bottom: "label" # Multi-label targets (e.g., [0, 1, 1, 0])
top: "loss"
}
'''

SEED_001_EUCLIDEAN = '''
layer {
name: "loss"
type: "EuclideanLoss"
bottom: "fc8" # Your network's predicted values
bottom: "label" # The ground truth continuous values
top: "loss"
}
'''


def inputs(prediction, pred_shape, label_shape):
    dims = lambda shape: " ".join(f"dim: {d}" for d in shape)  # noqa: E731
    return (f'layer {{ name: "in_pred" type: "Input" top: "{prediction}" input_param {{ shape {{ {dims(pred_shape)} }} }} }}\n'
            f'layer {{ name: "in_label" type: "Input" top: "label" input_param {{ shape {{ {dims(label_shape)} }} }} }}\n')


def run(text, prediction, values, labels):
    net = caffe.Net(parse_net(text), caffe.TRAIN)
    net.blobs[prediction].data[...] = values
    net.blobs["label"].data[...] = labels
    return float(net.forward()["loss"]), net


@pytest.mark.parametrize("block", [SEED_000_SOFTMAX, SEED_000_SOFTMAX_WEIGHTED])
def test_seed_000_softmax_with_loss(block):
    scores = rng.standard_normal((8, 10))
    labels = rng.integers(0, 10, 8)
    loss, net = run(inputs("pred", (8, 10), (8,)) + block, "pred", scores, labels)
    assert loss == pytest.approx(softmax_with_loss(scores, labels)[0], rel=1e-5)
    assert net.blob_loss_weights["loss"] == 1.0


def test_seed_001_softmax_with_loss():
    scores = rng.standard_normal((4, 1000))
    labels = rng.integers(0, 1000, 4)
    loss, _ = run(inputs("fc8", (4, 1000), (4,)) + SEED_001_SOFTMAX, "fc8", scores, labels)
    assert loss == pytest.approx(softmax_with_loss(scores, labels)[0], rel=1e-5)


def test_seed_001_sigmoid_cross_entropy():
    scores = rng.standard_normal((4, 4))
    targets = np.array([[0, 1, 1, 0]] * 4, dtype=np.float64)
    loss, _ = run(inputs("fc8", (4, 4), (4, 4)) + SEED_001_SIGMOID, "fc8", scores, targets)
    assert loss == pytest.approx(sigmoid_cross_entropy(scores, targets)[0], rel=1e-5)


def test_seed_001_euclidean():
    values, targets = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    loss, _ = run(inputs("fc8", (5, 2), (5, 2)) + SEED_001_EUCLIDEAN, "fc8", values, targets)
    assert loss == pytest.approx(euclidean(values, targets)[0], rel=1e-5)


def test_several_losses_sum_with_their_weights():
    # GoogLeNet's pattern: auxiliary classifiers at 0.3 beside the main loss
    text = inputs("pred", (6, 5), (6,)) + '''
layer { name: "loss1" type: "SoftmaxWithLoss" bottom: "pred" bottom: "label" top: "loss1" loss_weight: 0.3 }
layer { name: "loss2" type: "SoftmaxWithLoss" bottom: "pred" bottom: "label" top: "loss2" loss_weight: 0.3 }
layer { name: "loss3" type: "SoftmaxWithLoss" bottom: "pred" bottom: "label" top: "loss3" }
'''
    scores = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6)
    net = caffe.Net(parse_net("force_backward: true\n" + text), caffe.TRAIN)
    net.blobs["pred"].data[...] = scores
    net.blobs["label"].data[...] = labels
    net.forward()
    single, grad, _ = softmax_with_loss(scores, labels)
    assert net.last_loss == pytest.approx(1.6 * single, rel=1e-5)
    net.backward()
    np.testing.assert_allclose(net.blobs["pred"].diff, 1.6 * grad, rtol=1e-4, atol=1e-7)
