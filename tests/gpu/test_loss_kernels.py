"""The losses' numba.cuda kernels against the same numpy references as the CPU kernels.

Small float32 inputs (the simulator runs a few thousand threads a second).
"""

import numpy as np
import pytest

from minicaffe.blob import SyncedArray

from ..layers.loss.helpers import loss_param_text, run_loss
from ..layers.loss.reference import NORMALIZATIONS, euclidean, sigmoid_cross_entropy, softmax_with_loss

rng = np.random.default_rng(21)


def softmax_case(shape, axis, ignore_label=None):
    x = rng.standard_normal(shape)
    axis_index = axis % len(shape)
    label_shape = shape[:axis_index] + shape[axis_index + 1:]
    labels = rng.integers(0, shape[axis_index], size=label_shape).astype(np.float64)
    if ignore_label is not None:
        labels.reshape(-1)[::3] = ignore_label
    return x, labels


@pytest.mark.parametrize("shape, axis", [((4, 5), 1), ((2, 3, 4), -1), ((2, 3, 2, 3), 1), ((2, 3, 2, 3), 2)])
@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_softmax_with_loss(gpu_mode, shape, axis, weight):
    x, labels = softmax_case(shape, axis)
    text = f'name: "swl" type: "SoftmaxWithLoss" softmax_param {{ axis: {axis} }}'
    loss, bottom, _ = run_loss(text, [x, labels], weight=weight)
    expected, grad, _ = softmax_with_loss(x, labels, axis=axis, weight=weight)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [False, True])
def test_softmax_normalization_and_ignore(gpu_mode, normalization, ignore):
    x, labels = softmax_case((2, 3, 2, 2), 1, ignore_label=255 if ignore else None)
    options = {"normalization": normalization, **({"ignore_label": 255} if ignore else {})}
    text = f'name: "swl" type: "SoftmaxWithLoss" {loss_param_text(**options)}'
    loss, bottom, _ = run_loss(text, [x, labels], weight=0.5)
    expected, grad, _ = softmax_with_loss(x, labels, ignore_label=255 if ignore else None,
                                          normalization=normalization, weight=0.5)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-6)


def test_softmax_legacy_normalize_all_ignored_and_probabilities(gpu_mode):
    x, labels = softmax_case((3, 4), 1)
    loss, _, _ = run_loss('name: "s" type: "SoftmaxWithLoss" loss_param { normalize: false }', [x, labels])
    assert loss == pytest.approx(softmax_with_loss(x, labels, normalization="BATCH_SIZE")[0], rel=1e-5)
    labels[:] = 7
    loss, bottom, _ = run_loss('name: "s" type: "SoftmaxWithLoss" loss_param { ignore_label: 7 }', [x, labels])
    assert loss == 0.0 and not bottom[0].diff.any()
    x, labels = softmax_case((3, 4), 1)
    _, _, top = run_loss('name: "s" type: "SoftmaxWithLoss"', [x, labels], num_tops=2)
    np.testing.assert_allclose(top[1].data, softmax_with_loss(x, labels)[2], rtol=1e-5, atol=1e-7)


def test_softmax_bad_label(gpu_mode):
    from minicaffe.errors import MinicaffeError
    with pytest.raises(MinicaffeError, match="label 9 at position 1 is outside"):
        run_loss('name: "s" type: "SoftmaxWithLoss"', [np.zeros((2, 3)), np.array([0.0, 9.0])])


@pytest.mark.parametrize("normalization", NORMALIZATIONS + (None,))
@pytest.mark.parametrize("ignore", [False, True])
def test_sigmoid_cross_entropy(gpu_mode, normalization, ignore):
    x = rng.standard_normal((3, 8)) * 3
    t = rng.random((3, 8))
    if ignore:
        t.reshape(-1)[::4] = -1
    options = {**({"normalization": normalization} if normalization else {}), **({"ignore_label": -1} if ignore else {})}
    text = f'name: "sce" type: "SigmoidCrossEntropyLoss" {loss_param_text(**options)}'
    loss, bottom, _ = run_loss(text, [x, t], weight=0.8)
    expected, grad = sigmoid_cross_entropy(x, t, ignore_label=-1 if ignore else None,
                                           normalization=normalization or "BATCH_SIZE", weight=0.8)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(bottom[0].diff, grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("propagate", [[True, True], [True, False], [False, True]])
@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_euclidean(gpu_mode, propagate, weight):
    a, b = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    loss, bottom, _ = run_loss('name: "e" type: "EuclideanLoss"', [a, b], weight=weight, propagate=propagate)
    expected, grad = euclidean(a, b, weight=weight)
    assert loss == pytest.approx(expected, rel=1e-5)
    for index, sign in ((0, 1), (1, -1)):
        if propagate[index]:
            np.testing.assert_allclose(bottom[index].diff, sign * grad, rtol=1e-5, atol=1e-7)
        else:
            assert not bottom[index].diff.any()


def test_consecutive_passes_copy_only_the_loss(gpu_mode):
    """Forward+Backward twice on the GPU: the second pass moves nothing but the scalar loss."""
    import minicaffe as caffe
    from minicaffe.proto.text import parse_net
    net = caffe.Net(parse_net('''
layer { name: "x" type: "Input" top: "x" top: "label" input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" }
'''), caffe.TRAIN)
    net.blobs["x"].data[...] = rng.standard_normal((4, 5))
    net.blobs["label"].data[...] = [0, 1, 2, 3]
    net.forward_backward()
    before = dict(SyncedArray.copies)
    loss = net.forward_backward()
    moved = {key: SyncedArray.copies[key] - before[key] for key in before}
    assert moved == {"to_device": 0, "to_host": 1}             # the loss scalar, read for the net's total
    assert loss == pytest.approx(softmax_with_loss(net.blobs["x"].data, [0, 1, 2, 3])[0], rel=1e-5)
    # reading a diff on the host brings it back once; reading it again copies nothing
    grad = net.blobs["x"].diff.copy()
    after_read = dict(SyncedArray.copies)
    np.testing.assert_array_equal(net.blobs["x"].diff, grad)
    assert SyncedArray.copies == after_read


@pytest.mark.parametrize("text", ['name: "swl" type: "SoftmaxWithLoss"',
                                  'name: "mll" type: "MultinomialLogisticLoss"',
                                  'name: "hinge" type: "HingeLoss"'])
def test_the_first_bad_label_is_named_as_on_the_cpu(gpu_mode, text):
    from minicaffe.errors import MinicaffeError
    x = np.full((5, 3), 1 / 3)
    labels = np.array([0, 7, 1, 9, 2], dtype=np.float64)        # bad at rows 1 and 3: row 1 is reported
    with pytest.raises(MinicaffeError, match=r"\b7\b"):
        run_loss(text, [x, labels])
