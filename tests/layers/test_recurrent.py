"""RNN and LSTM: direct numpy implementations of Caffe's equations (forward and backward through
time), gradient checks, parameter layout, state carry, weights round trip, shape rules."""

import logging

import numpy as np
import pytest

from minicaffe.errors import GraphError, ShapeError
from minicaffe.graph import TEST, TRAIN
from minicaffe.net import Net
from minicaffe.proto.text import parse_net
from minicaffe.testing import GradientChecker, empty_blobs, layer_from_text, make_blobs

rng = np.random.default_rng(5)
T, N, K, KS, D = 3, 2, 3, 2, 2
# Stream 0 starts a new sequence at t = 2, stream 1 at t = 1: resets in the middle.
CONT = np.array([[0, 0], [1, 0], [0, 1]], dtype=float)
FILLERS = 'weight_filler { type: "uniform" min: -1 max: 1 } bias_filler { type: "uniform" min: -1 max: 1 }'


def text(kind, expose=False, num_output=D, name="rec"):
    return (f'name: "{name}" type: "{kind}" recurrent_param {{ num_output: {num_output} {FILLERS} '
            f'expose_hidden: {str(expose).lower()} }}')


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------- numpy references
def lstm_reference(x, cont, W_xc, b_c, W_hc, W_s=None, xs=None, h0=None, c0=None, dtop=None):
    """Caffe's LSTM: gates = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_s xs], rows i, f, o, g.

    Returns (h over time, h_T, c_T, grads) with grads of sum(dtop * h) when dtop is given.
    """
    steps, n = cont.shape
    d = W_hc.shape[1]
    h = np.zeros((n, d)) if h0 is None else h0.reshape(n, d)
    c = np.zeros((n, d)) if c0 is None else c0.reshape(n, d)
    xf = x.reshape(steps, n, -1)
    static = 0 if W_s is None else xs.reshape(n, -1) @ W_s.T
    out, cache = [], []
    for t in range(steps):
        k = cont[t][:, None]
        h_conted = k * h
        a = xf[t] @ W_xc.T + b_c + h_conted @ W_hc.T + static
        i, f, o, g = sigmoid(a[:, :d]), sigmoid(a[:, d:2 * d]), sigmoid(a[:, 2 * d:3 * d]), np.tanh(a[:, 3 * d:])
        c_prev = c
        c = k * f * c_prev + i * g
        h = o * np.tanh(c)
        cache.append((k, h_conted, c_prev, c, i, f, o, g))
        out.append(h)
    grads = None
    if dtop is not None:
        grads = {name: np.zeros_like(value) for name, value in
                 (("W_xc", W_xc), ("b_c", b_c), ("W_hc", W_hc), ("x", xf))}
        if W_s is not None:
            grads["W_s"], grads["xs"] = np.zeros_like(W_s), np.zeros((n, W_s.shape[1]))
        dh_next, dc_next = np.zeros((n, d)), np.zeros((n, d))
        for t in reversed(range(steps)):
            k, h_conted, c_prev, c_t, i, f, o, g = cache[t]
            dh = dtop[t] + dh_next
            dc = dc_next + dh * o * (1 - np.tanh(c_t) ** 2)
            da = np.concatenate([dc * g * i * (1 - i), dc * c_prev * k * f * (1 - f),
                                 dh * np.tanh(c_t) * o * (1 - o), dc * i * (1 - g * g)], axis=1)
            grads["x"][t] = da @ W_xc
            grads["W_xc"] += da.T @ xf[t]
            grads["b_c"] += da.sum(axis=0)
            grads["W_hc"] += da.T @ h_conted
            if W_s is not None:
                grads["W_s"] += da.T @ xs.reshape(n, -1)
                grads["xs"] += da @ W_s
            dh_next = k * (da @ W_hc)
            dc_next = dc * k * f
        grads["x"] = grads["x"].reshape(x.shape)
    return np.stack(out), h, c, grads


def rnn_reference(x, cont, W_xh, b_h, W_hh, W_ho, b_o, W_s=None, xs=None, h0=None, dtop=None):
    """Caffe's RNN: h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_s xs]); o_t = tanh(W_ho h_t + b_o)."""
    steps, n = cont.shape
    d = W_hh.shape[0]
    h = np.zeros((n, d)) if h0 is None else h0.reshape(n, d)
    xf = x.reshape(steps, n, -1)
    static = 0 if W_s is None else xs.reshape(n, -1) @ W_s.T
    out, cache = [], []
    for t in range(steps):
        k = cont[t][:, None]
        h_conted = k * h
        h = np.tanh(xf[t] @ W_xh.T + b_h + h_conted @ W_hh.T + static)
        o = np.tanh(h @ W_ho.T + b_o)
        cache.append((k, h_conted, h, o))
        out.append(o)
    grads = None
    if dtop is not None:
        grads = {name: np.zeros_like(value) for name, value in
                 (("W_xh", W_xh), ("b_h", b_h), ("W_hh", W_hh), ("W_ho", W_ho), ("b_o", b_o), ("x", xf))}
        if W_s is not None:
            grads["W_s"], grads["xs"] = np.zeros_like(W_s), np.zeros((n, W_s.shape[1]))
        dh_next = np.zeros((n, d))
        for t in reversed(range(steps)):
            k, h_conted, h_t, o = cache[t]
            dz_o = dtop[t] * (1 - o * o)
            grads["W_ho"] += dz_o.T @ h_t
            grads["b_o"] += dz_o.sum(axis=0)
            dz = (dz_o @ W_ho + dh_next) * (1 - h_t * h_t)
            grads["x"][t] = dz @ W_xh
            grads["W_xh"] += dz.T @ xf[t]
            grads["b_h"] += dz.sum(axis=0)
            grads["W_hh"] += dz.T @ h_conted
            if W_s is not None:
                grads["W_s"] += dz.T @ xs.reshape(n, -1)
                grads["xs"] += dz @ W_s
            dh_next = k * (dz @ W_hh)
        grads["x"] = grads["x"].reshape(x.shape)
    return np.stack(out), h, grads


# ---------------------------------------------------------------- against the references
@pytest.mark.parametrize("static", [False, True], ids=["plain", "static"])
def test_lstm_forward_and_backward_match_numpy(static):
    x, xs = rng.standard_normal((T, N, K)), rng.standard_normal((N, KS))
    layer = layer_from_text(text("LSTM"))
    bottom = make_blobs(x, CONT, *([xs] if static else []))
    top = empty_blobs(1)
    layer.set_up(bottom, top)
    shapes = [(4 * D, K), (4 * D,)] + ([(4 * D, KS)] if static else []) + [(4 * D, D)]
    assert [blob.shape for blob in layer.blobs] == shapes        # W_xc, b_c, [W_xc_static], W_hc
    params = [blob.data.copy() for blob in layer.blobs]
    W_xc, b_c, W_hc = params[0], params[1], params[-1]
    W_s = params[2] if static else None
    layer.run_forward(bottom, top)
    dtop = rng.standard_normal((T, N, D))
    expected, _, _, grads = lstm_reference(x, CONT, W_xc, b_c, W_hc, W_s, xs, dtop=dtop)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-10, atol=1e-12)
    top[0].diff[...] = dtop
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.run_backward(top, [True, False] + [True] * static, bottom)
    np.testing.assert_allclose(bottom[0].diff, grads["x"], rtol=1e-9, atol=1e-12)
    names = ["W_xc", "b_c"] + ["W_s"] * static + ["W_hc"]
    for name, blob in zip(names, layer.blobs):
        np.testing.assert_allclose(blob.diff, grads[name], rtol=1e-9, atol=1e-12, err_msg=name)
    if static:
        np.testing.assert_allclose(bottom[2].diff, grads["xs"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("static", [False, True], ids=["plain", "static"])
def test_rnn_forward_and_backward_match_numpy(static):
    x, xs = rng.standard_normal((T, N, K)), rng.standard_normal((N, KS))
    layer = layer_from_text(text("RNN"))
    bottom = make_blobs(x, CONT, *([xs] if static else []))
    top = empty_blobs(1)
    layer.set_up(bottom, top)
    shapes = [(D, K), (D,)] + ([(D, KS)] if static else []) + [(D, D), (D, D), (D,)]
    assert [blob.shape for blob in layer.blobs] == shapes        # W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o
    params = [blob.data.copy() for blob in layer.blobs]
    W_s = params.pop(2) if static else None
    layer.run_forward(bottom, top)
    dtop = rng.standard_normal((T, N, D))
    expected, _, grads = rnn_reference(x, CONT, *params, W_s=W_s, xs=xs, dtop=dtop)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-10, atol=1e-12)
    top[0].diff[...] = dtop
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.run_backward(top, [True, False] + [True] * static, bottom)
    np.testing.assert_allclose(bottom[0].diff, grads["x"], rtol=1e-9, atol=1e-12)
    names = ["W_xh", "b_h"] + ["W_s"] * static + ["W_hh", "W_ho", "b_o"]
    for name, blob in zip(names, layer.blobs):
        np.testing.assert_allclose(blob.diff, grads[name], rtol=1e-9, atol=1e-12, err_msg=name)
    if static:
        np.testing.assert_allclose(bottom[2].diff, grads["xs"], rtol=1e-9, atol=1e-12)


def test_parameter_diffs_accumulate():
    layer = layer_from_text(text("LSTM"))
    bottom, top = make_blobs(rng.standard_normal((T, N, K)), CONT), empty_blobs(1)
    layer.set_up(bottom, top)
    layer.run_forward(bottom, top)
    top[0].diff[...] = 1.0
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.run_backward(top, [True, False], bottom)
    once = [blob.diff.copy() for blob in layer.blobs]
    layer.run_backward(top, [True, False], bottom)
    for blob, first in zip(layer.blobs, once):
        np.testing.assert_allclose(blob.diff, 2 * first)


# ---------------------------------------------------------------- gradient checks (float64, through time)
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True], ids=["plain", "static"])
def test_gradient_through_time(kind, static):
    # Every stream starts afresh, so each Forward of the check gives the same result.
    arrays = [rng.standard_normal((T, N, K)), CONT] + ([rng.standard_normal((N, KS))] if static else [])
    layer = layer_from_text(text(kind))
    checked = GradientChecker(stepsize=1e-4, threshold=1e-6).check_layer(layer, make_blobs(*arrays), empty_blobs(1))
    inputs = sum(a.size for i, a in enumerate(arrays) if i != 1)
    assert checked == inputs + sum(blob.count for blob in layer.blobs)


class _OutputOnly:
    """An exposed-state layer as the gradient checker sees it: only the output top, so the
    checked loss does not use the final state (its tops get zero diffs at Backward)."""

    def __init__(self, layer, state_tops):
        self.layer, self.state_tops = layer, state_tops

    def __getattr__(self, name):
        return getattr(self.layer, name)

    def set_up(self, bottom, top):
        self.layer.set_up(bottom, top + self.state_tops)

    def run_forward(self, bottom, top):
        return self.layer.run_forward(bottom, top + self.state_tops)

    def run_backward(self, top, propagate_down, bottom):
        for blob in self.state_tops:
            blob.diff[...] = 0
        self.layer.run_backward(top + self.state_tops, propagate_down, bottom)


@pytest.mark.parametrize("kind, states", [("LSTM", 2), ("RNN", 1)])
def test_exposed_state_gradient_is_true_for_a_loss_on_the_output(kind, states):
    """Caffe's exposed-state gradient is the true one when the loss uses only the output
    (the final-state tops' diffs are zero), with the initial state held fixed."""
    cont = np.array([[0, 1], [1, 0], [0, 1]], dtype=float)   # stream 1 continues from the given state
    arrays = [rng.standard_normal((T, N, K)), cont, rng.standard_normal((N, KS))]
    arrays += [rng.standard_normal((1, N, 4)) for _ in range(states)]
    layer = layer_from_text(text(kind, expose=True, num_output=4))
    checker = GradientChecker(stepsize=1e-4, threshold=1e-6)
    checked = checker.check_layer(_OutputOnly(layer, empty_blobs(states)), make_blobs(*arrays), empty_blobs(1),
                                  check_bottom=[0, 2])
    assert checked == arrays[0].size + arrays[2].size + sum(blob.count for blob in layer.blobs)


def test_cont_takes_no_gradient():
    for kind in ("LSTM", "RNN"):
        layer = layer_from_text(text(kind))
        assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
        assert layer.allow_force_backward(2)


# ---------------------------------------------------------------- state: carried, exposed
def test_lstm_state_carries_between_forwards():
    """Without expose_hidden, a Forward starts where the last one ended (cont 1 keeps it)."""
    x = rng.standard_normal((2 * T, N, K))
    cont = np.ones((2 * T, N))
    cont[0] = 0
    layer = layer_from_text(text("LSTM"))
    bottom, top = make_blobs(x[:T], cont[:T]), empty_blobs(1)
    layer.set_up(bottom, top)
    layer.run_forward(bottom, top)
    first = top[0].data.copy()
    bottom[0].data[...] = x[T:]
    bottom[1].data[...] = cont[T:]
    layer.run_forward(bottom, top)
    params = [blob.data for blob in layer.blobs]
    expected, _, _, _ = lstm_reference(x, cont, *params)
    np.testing.assert_allclose(first, expected[:T], rtol=1e-10)
    np.testing.assert_allclose(top[0].data, expected[T:], rtol=1e-10)
    layer.reset()                                     # Caffe's Reset: forget the carried state
    layer.run_forward(bottom, top)
    restarted, _, _, _ = lstm_reference(x[T:], cont[T:], *params)
    np.testing.assert_allclose(top[0].data, restarted, rtol=1e-10)


def test_rnn_exposed_state_chains_two_chunks():
    x = rng.standard_normal((2 * T, N, K))
    cont = np.ones((2 * T, N))
    cont[0] = 0
    cont[4, 1] = 0
    layer = layer_from_text(text("RNN", expose=True))
    bottom = make_blobs(x[:T], cont[:T], np.zeros((1, N, D)))
    top = empty_blobs(2)
    layer.set_up(bottom, top)
    assert top[1].shape == (1, N, D)
    layer.run_forward(bottom, top)
    first, h_T = top[0].data.copy(), top[1].data.copy()
    params = [blob.data for blob in layer.blobs]
    expected, h_last, _ = rnn_reference(x, cont, *params)
    _, h_mid, _ = rnn_reference(x[:T], cont[:T], *params)
    np.testing.assert_allclose(h_T[0], h_mid, rtol=1e-10)
    second = make_blobs(x[T:], cont[T:], h_T)
    layer.reshape(second, top)                        # new bottom blobs: the layer views them
    layer.run_forward(second, top)
    np.testing.assert_allclose(first, expected[:T], rtol=1e-10)
    np.testing.assert_allclose(top[0].data, expected[T:], rtol=1e-10)
    np.testing.assert_allclose(top[1].data[0], h_last, rtol=1e-10)


@pytest.mark.parametrize("kind, states", [("LSTM", 2), ("RNN", 1)])
def test_exposed_state_gradients_are_caffes(kind, states):
    """Caffe's RecurrentLayer shares only the data of the state bottoms and tops with its
    unrolled net (recurrent_layer.cpp: Reshape's ``ShareData`` for ``h_0``/``c_0``, Forward's
    for ``h_T``/``c_T``; ``ShareDiff`` only for x, x_static and the output). Its Backward is
    then the plain one from the given initial state: the output's diff alone drives every
    gradient, the final-state diffs are ignored, and the initial state gets none."""
    hidden = 4
    x, xs = rng.standard_normal((T, N, K)), rng.standard_normal((N, KS))
    cont = np.array([[1, 0], [1, 1], [1, 0]], dtype=float)   # stream 0 continues from h_0 (and c_0)
    state = [rng.standard_normal((1, N, hidden)) for _ in range(states)]
    layer = layer_from_text(text(kind, expose=True, num_output=hidden))
    bottom, top = make_blobs(x, cont, xs, *state), empty_blobs(1 + states)
    layer.set_up(bottom, top)
    layer.run_forward(bottom, top)
    params = [blob.data.copy() for blob in layer.blobs]
    W_s = params.pop(2)
    dtop = rng.standard_normal((T, N, hidden))
    if kind == "LSTM":
        expected, h_T, c_T, grads = lstm_reference(x, cont, *params, W_s, xs, h0=state[0], c0=state[1], dtop=dtop)
        final, names = [h_T, c_T], ["W_xc", "b_c", "W_s", "W_hc"]
    else:
        expected, h_T, grads = rnn_reference(x, cont, *params, W_s=W_s, xs=xs, h0=state[0], dtop=dtop)
        final, names = [h_T], ["W_xh", "b_h", "W_s", "W_hh", "W_ho", "b_o"]
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-10)
    for blob, value in zip(top[1:], final):
        np.testing.assert_allclose(blob.data[0], value, rtol=1e-10)
    top[0].diff[...] = dtop
    for blob in top[1:]:
        blob.diff[...] = rng.standard_normal(blob.shape)   # ignored, as in Caffe
    for blob in layer.blobs + bottom:
        blob.diff[...] = 7.0                             # stale values: parameters accumulate, the rest is written
    layer.run_backward(top, [True, False] + [True] * (1 + states), bottom)
    np.testing.assert_allclose(bottom[0].diff, grads["x"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bottom[2].diff, grads["xs"], rtol=1e-9, atol=1e-12)
    for name, blob in zip(names, layer.blobs):
        np.testing.assert_allclose(blob.diff - 7.0, grads[name], rtol=1e-9, atol=1e-12, err_msg=name)
    for blob in bottom[3:]:
        np.testing.assert_array_equal(blob.diff, 0)       # Caffe writes none; a fresh diff holds 0


# ---------------------------------------------------------------- in a net: weights, sharing, shapes
NET = """
name: "seq"
layer { name: "in" type: "Input" top: "x" top: "cont" top: "target"
        input_param { shape { dim: 3 dim: 2 dim: 3 } shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 dim: 2 } } }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
        recurrent_param { num_output: 2 %s } }
layer { name: "rnn" type: "RNN" bottom: "h" bottom: "cont" top: "o"
        recurrent_param { num_output: 2 %s } }
layer { name: "loss" type: "EuclideanLoss" bottom: "o" bottom: "target" top: "loss" }
""" % (FILLERS, FILLERS)


def _feed(net, x, target):
    net.blobs["x"].data[...] = x
    net.blobs["cont"].data[...] = CONT
    net.blobs["target"].data[...] = target


def test_weights_saved_by_a_net_load_into_a_fresh_one(tmp_path):
    x, target = rng.standard_normal((T, N, K)), rng.standard_normal((T, N, D))
    first = Net(parse_net(NET), TRAIN, dtype=np.float64)
    _feed(first, x, target)
    first.forward()
    path = str(tmp_path / "seq.caffemodel")
    first.save(path)
    fresh = Net(parse_net(NET), TEST, dtype=np.float64, weights=path)
    _feed(fresh, x, target)
    fresh.forward()
    for name in ("h", "o"):
        np.testing.assert_array_equal(fresh.blobs[name].data, first.blobs[name].data)
    # The loss is a vectorized sum, whose order of additions may follow the buffers' alignment: equal
    # to the last bit or two.
    np.testing.assert_allclose(fresh.blobs["loss"].data, first.blobs["loss"].data, rtol=1e-14)
    assert [b.shape for b in fresh.params["lstm"]] == [(8, 3), (8,), (8, 2)]
    assert [b.shape for b in fresh.params["rnn"]] == [(2, 2), (2,), (2, 2), (2, 2), (2,)]
    # The file holds Caffe's blobs in Caffe's order.
    from minicaffe.io import read_caffemodel
    saved = {layer.name: layer for layer in read_caffemodel(path).layer}
    assert [tuple(b.shape.dim) for b in saved["lstm"].blobs] == [(8, 3), (8,), (8, 2)]
    np.testing.assert_allclose(np.asarray(saved["lstm"].blobs[2].double_data or saved["lstm"].blobs[2].data),
                               first.params["lstm"][2].data.ravel(), rtol=1e-6)


def test_net_gradient_and_solver_parameters():
    net = Net(parse_net(NET), TRAIN, dtype=np.float64)
    _feed(net, rng.standard_normal((T, N, K)), rng.standard_normal((T, N, D)))
    assert len(net.learnable_params) == 3 + 5
    assert GradientChecker(stepsize=1e-4, threshold=1e-6).check_net(net) == 8 * 3 + 8 + 8 * 2 + 4 + 2 + 4 + 4 + 2


def test_shared_parameters_between_recurrent_layers():
    """Two LSTMs naming the same params: the second runs on the first's blobs (Caffe's sharing)."""
    shared = 'param { name: "Wx" } param { name: "b" } param { name: "Wh" }'
    text_net = f"""
    layer {{ name: "in" type: "Input" top: "x" top: "cont" input_param {{ shape {{ dim: 3 dim: 2 dim: 3 }}
             shape {{ dim: 3 dim: 2 }} }} }}
    layer {{ name: "a" type: "LSTM" bottom: "x" bottom: "cont" top: "ha" {shared}
             recurrent_param {{ num_output: 2 {FILLERS} }} }}
    layer {{ name: "b" type: "LSTM" bottom: "x" bottom: "cont" top: "hb" {shared}
             recurrent_param {{ num_output: 2 {FILLERS} }} }}
    """
    net = Net(parse_net(text_net), TEST, dtype=np.float64)
    assert len(net.learnable_params) == 3
    net.blobs["x"].data[...] = rng.standard_normal((T, N, K))
    net.blobs["cont"].data[...] = CONT
    net.forward()
    np.testing.assert_array_equal(net.blobs["ha"].data, net.blobs["hb"].data)
    net.params["a"][2].data[...] *= 2                 # the owner changes; the sharer follows
    net.forward()
    np.testing.assert_array_equal(net.blobs["ha"].data, net.blobs["hb"].data)


def test_lr_mult_zero_leaves_that_parameter_alone():
    text_net = NET.replace('top: "h"\n', 'top: "h" param { lr_mult: 1 } param { lr_mult: 0 } param { lr_mult: 1 }\n')
    net = Net(parse_net(text_net), TRAIN, dtype=np.float64)
    _feed(net, rng.standard_normal((T, N, K)), rng.standard_normal((T, N, D)))
    net.clear_param_diffs()
    net.forward_backward()
    weights, bias, recurrent = net.params["lstm"]
    assert not bias.diff.any()
    assert weights.diff.any() and recurrent.diff.any()


def test_batch_size_may_change_time_steps_may_not():
    layer = layer_from_text(text("LSTM", expose=True))
    bottom = make_blobs(rng.standard_normal((T, N, K)), CONT, np.zeros((1, N, D)), np.zeros((1, N, D)))
    top = empty_blobs(3)
    layer.set_up(bottom, top)
    wider = make_blobs(rng.standard_normal((T, 4, K)), np.zeros((T, 4)), np.zeros((1, 4, D)), np.zeros((1, 4, D)))
    layer.reshape(wider, top)
    layer.run_forward(wider, top)
    assert [blob.shape for blob in top] == [(T, 4, D), (1, 4, D), (1, 4, D)]
    expected, _, _, _ = lstm_reference(wider[0].data, wider[1].data, *[b.data for b in layer.blobs])
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-10)
    longer = make_blobs(np.zeros((T + 1, 4, K)), np.zeros((T + 1, 4)), np.zeros((1, 4, D)), np.zeros((1, 4, D)))
    with pytest.raises(ShapeError, match="time steps"):
        layer.reshape(longer, top)


@pytest.mark.parametrize("arrays, message", [
    ([np.zeros((T, N)), np.zeros((T, N))], "at least 3 axes"),
    ([np.zeros((T, N, K)), np.zeros((T, N + 1))], "cont"),
    ([np.zeros((T, N, K)), np.zeros((T, N)), np.zeros((N + 1, KS))], "static input"),
])
def test_shape_errors(arrays, message):
    with pytest.raises(ShapeError, match=message):
        layer_from_text(text("LSTM")).set_up(make_blobs(*arrays), empty_blobs(1))


def test_exposed_state_shape_and_counts():
    bottom = make_blobs(np.zeros((T, N, K)), CONT, np.zeros((1, N, D + 1)), np.zeros((1, N, D)))
    with pytest.raises(ShapeError, match="initial state h_0"):
        layer_from_text(text("LSTM", expose=True)).set_up(bottom, empty_blobs(3))
    with pytest.raises(GraphError, match="takes 3 top"):
        layer_from_text(text("LSTM", expose=True)).set_up(bottom, empty_blobs(1))
    with pytest.raises(GraphError, match="at least 3 bottom"):
        layer_from_text(text("RNN", expose=True)).set_up(bottom[:2], empty_blobs(2))
    with pytest.raises(ShapeError, match="num_output must be positive"):
        layer_from_text(text("RNN", num_output=0)).set_up(bottom[:2], empty_blobs(1))


def test_check_infers_shapes_without_memory():
    net = Net(parse_net(NET), TRAIN, shape_inference=True)
    assert net.blobs["h"].shape == (T, N, D) and net.blobs["o"].shape == (T, N, D)
    assert [b.shape for b in net.params["lstm"]] == [(8, 3), (8,), (8, 2)]
    assert not any(blob.allocated for blob in net.blobs.values())
    assert not any(blob.allocated for layer in net.layers for blob in layer.blobs)
    assert not any(blob.allocated for blob in net.layer_dict["lstm"].unrolled.blobs.values())


def test_debug_info_logs_the_unrolled_net(caplog):
    layer = layer_from_text(text("LSTM").replace("expose_hidden", "debug_info: true expose_hidden"))
    bottom, top = make_blobs(rng.standard_normal((T, N, K)), CONT), empty_blobs(1)
    layer.set_up(bottom, top)
    with caplog.at_level(logging.INFO, logger="minicaffe"):
        layer.run_forward(bottom, top)
    assert "[Forward] Layer rec_unit_3, top blob h_3 data" in caplog.text
