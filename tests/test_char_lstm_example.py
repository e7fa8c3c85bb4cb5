"""The char_lstm example: its net builds, runs forward and backward, learns a little and writes."""

import os
import runpy

import numpy as np

import minicaffe
from minicaffe.check import check_net
from minicaffe.net import Net

from tests.conftest import EXAMPLES

HERE = os.path.join(EXAMPLES, "char_lstm")
script = runpy.run_path(os.path.join(HERE, "train_char_lstm.py"), run_name="char_lstm")


def test_batches_follow_the_text():
    codes = script["read_corpus"]()
    batches = script["Batches"](codes, steps=4, streams=3)
    data, cont, target = batches.next()
    assert data.shape == cont.shape == target.shape == (4, 3)
    np.testing.assert_array_equal(data[:, 0], codes[:4])
    np.testing.assert_array_equal(target[:, 1], codes[batches.span + 1:batches.span + 5])
    np.testing.assert_array_equal(cont[0], 0)
    np.testing.assert_array_equal(cont[1:], 1)
    for _ in range(batches.span // 4):
        data, cont, target = batches.next()
    wrap = (batches.span - (batches.offset - 4)) % batches.span   # the step where each stream starts again
    assert (cont[wrap] == 0).all() and cont.sum() == 3 * 3
    np.testing.assert_array_equal(data[wrap, 2], codes[2 * batches.span])


def test_net_runs_forward_and_backward():
    net = Net(os.path.join(HERE, "char_lstm.prototxt"), minicaffe.TRAIN)
    steps, streams = net.blobs["data"].shape
    script["feed"](net, script["Batches"](script["read_corpus"](), steps, streams).next())
    net.clear_param_diffs()
    loss = net.forward_backward()
    assert abs(loss - np.log(128)) < 0.1                 # small weights: about uniform over 128 codes
    assert net.blobs["lstm"].shape == (16, 8, 64)
    assert [blob.shape for blob in net.params["lstm"]] == [(256, 16), (256,), (256, 64)]
    for name in ("embed", "lstm", "predict"):
        assert all(np.abs(blob.diff).sum() > 0 for blob in net.params[name]), name
    shapes = check_net(os.path.join(HERE, "char_lstm.prototxt"))
    assert shapes.blobs["predict"].shape == (16, 8, 128)


def test_brief_training_learns_and_writes():
    solver = script["train"](iterations=20, report_every=10, report=None)
    assert solver.smoothed_loss < np.log(128) - 0.8
    text = script["write"](solver.net, prime="A net", length=20)
    assert text.startswith("A net") and len(text) == 25 and text.isascii()
