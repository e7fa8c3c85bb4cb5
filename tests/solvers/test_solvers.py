"""Solvers: each update rule and lr policy against its formula, iter_size, decay, clipping, the API."""

import math

import numpy as np
import pytest
from google.protobuf import text_format

import minicaffe as caffe
import minicaffe.mode
from minicaffe.errors import MinicaffeError, MinicaffeWarning
from minicaffe.layer import Layer
from minicaffe.proto import caffe_pb2
from minicaffe.proto.text import parse_solver, parse_text
from minicaffe.registry import register
from minicaffe.solvers import learning_rate

rng = np.random.default_rng(17)
X = rng.standard_normal((4, 3))
T = rng.standard_normal((4, 2))

REGRESSION = '''name: "regression"
layer { name: "x" type: "Input" top: "x" top: "t" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" PARAMS
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
'''


def with_overrides(defaults, extra):
    """A SolverParameter from `defaults`, with the fields in `extra` replacing theirs."""
    param = parse_solver(defaults)
    text_format.Merge(extra, param)
    return param


def solver_param(extra, params=""):
    param = with_overrides('base_lr: 0.1 lr_policy: "fixed" display: 0 max_iter: 10 snapshot_after_train: false '
                           'random_seed: 3', extra)
    parse_text(REGRESSION.replace("PARAMS", params), param.net_param)
    return param


def make(extra, params=""):
    solver = caffe.Solver(solver_param(extra, params))
    solver.net.blobs["x"].data[...] = X
    solver.net.blobs["t"].data[...] = T
    return solver


def gradients(weight, bias):
    """dLoss/dW and dLoss/db of EuclideanLoss(x W^T + b, t) = sum((y - t)^2) / (2N)."""
    residual = (X @ weight.T + bias - T) / len(X)
    return residual.T @ X, residual.sum(axis=0)


# ------------------------------------------------------------------ lr policies

@pytest.mark.parametrize("policy, fields, formula", [
    ("fixed", "", lambda it: 0.1),
    ("step", "gamma: 0.5 stepsize: 3", lambda it: 0.1 * 0.5 ** (it // 3)),
    ("exp", "gamma: 0.9", lambda it: 0.1 * 0.9 ** it),
    ("inv", "gamma: 0.01 power: 0.75", lambda it: 0.1 * (1 + 0.01 * it) ** -0.75),
    ("poly", "power: 2 max_iter: 20", lambda it: 0.1 * (1 - it / 20) ** 2),
    ("sigmoid", "gamma: -0.5 stepsize: 5", lambda it: 0.1 / (1 + math.exp(0.5 * (it - 5)))),
])
def test_lr_policies(policy, fields, formula):
    param = parse_solver(f'base_lr: 0.1 lr_policy: "{policy}" {fields}')
    for iteration in range(12):
        rate, _ = learning_rate(param, iteration, 0)
        assert rate == pytest.approx(formula(iteration), rel=1e-6)     # base_lr, gamma are float32 fields


def test_multistep_advances_one_step_per_call():
    param = parse_solver('base_lr: 1 lr_policy: "multistep" gamma: 0.1 stepvalue: 2 stepvalue: 5')
    step, rates = 0, []
    for iteration in range(7):
        rate, step = learning_rate(param, iteration, step)
        rates.append(rate)
    assert rates == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    assert step == 2


def test_unknown_policy():
    with pytest.raises(MinicaffeError, match="unknown lr_policy 'cosine'"):
        learning_rate(parse_solver('lr_policy: "cosine"'), 0, 0)


# ------------------------------------------------------------------ update rules

def reference_updates(kind, weight, bias, steps, momentum=0.9, momentum2=0.999, delta=1e-8, rms_decay=0.98,
                      lr=0.1, decay=0.0):
    """numpy versions of Caffe's update formulas, run for `steps` iterations from (weight, bias)."""
    params = [weight.astype(np.float64), bias.astype(np.float64)]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    for iteration in range(steps):
        grads = list(gradients(*params))
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g + decay * p
            if kind == "SGD":
                first[i] = lr * g + momentum * first[i]
                step = first[i]
            elif kind == "Nesterov":
                previous = first[i]
                first[i] = lr * g + momentum * first[i]
                step = (1 + momentum) * first[i] - momentum * previous
            elif kind == "AdaGrad":
                first[i] = first[i] + g * g
                step = lr * g / (np.sqrt(first[i]) + delta)
            elif kind == "RMSProp":
                first[i] = rms_decay * first[i] + (1 - rms_decay) * g * g
                step = lr * g / (np.sqrt(first[i]) + delta)
            elif kind == "AdaDelta":
                first[i] = momentum * first[i] + (1 - momentum) * g * g
                update = g * np.sqrt((second[i] + delta) / (first[i] + delta))
                second[i] = momentum * second[i] + (1 - momentum) * update * update
                step = lr * update
            elif kind == "Adam":
                t = iteration + 1
                first[i] = momentum * first[i] + (1 - momentum) * g
                second[i] = momentum2 * second[i] + (1 - momentum2) * g * g
                step = lr * math.sqrt(1 - momentum2 ** t) / (1 - momentum ** t) * first[i] / (np.sqrt(second[i]) + delta)
            params[i] = p - step
    return params


@pytest.mark.parametrize("kind, fields, options", [
    ("SGD", "momentum: 0.9", {}),
    ("SGD", "momentum: 0.9 weight_decay: 0.05", {"decay": 0.05}),
    ("Nesterov", "momentum: 0.9", {}),
    ("AdaGrad", "delta: 1e-8", {"delta": 1e-8}),
    ("RMSProp", "rms_decay: 0.98 delta: 1e-8", {}),
    ("AdaDelta", "momentum: 0.95 delta: 1e-6 base_lr: 1.0", {"momentum": 0.95, "delta": 1e-6, "lr": 1.0}),
    ("Adam", "momentum: 0.9 momentum2: 0.999 delta: 1e-8 base_lr: 0.01", {"lr": 0.01}),
])
def test_update_rules_match_their_formulas(kind, fields, options):
    solver = make(f'type: "{kind}" {fields}')
    assert type(solver).__name__ == f"{kind}Solver"
    weight, bias = (blob.data.astype(np.float64) for blob in solver.net.params["ip"])
    solver.step(3)
    expected = reference_updates(kind, weight, bias, 3, **options)
    np.testing.assert_allclose(solver.net.params["ip"][0].data, expected[0], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(solver.net.params["ip"][1].data, expected[1], rtol=2e-5, atol=1e-6)
    assert solver.iter == 3


def test_legacy_solver_type_enum_and_subclass_constructors():
    param = solver_param('solver_type: NESTEROV momentum: 0.5')
    assert isinstance(caffe.Solver(param), caffe.NesterovSolver)
    assert isinstance(caffe.AdamSolver(solver_param('type: "Adam"')), caffe.AdamSolver)


def test_lr_mult_and_decay_mult():
    # bias frozen (lr_mult 0); weight at lr_mult 2 with decay_mult 0 despite weight_decay
    solver = make('type: "SGD" weight_decay: 0.5', params='param { lr_mult: 2 decay_mult: 0 } param { lr_mult: 0 }')
    weight, bias = (blob.data.copy() for blob in solver.net.params["ip"])
    solver.step(1)
    grad_w, _ = gradients(weight.astype(np.float64), bias.astype(np.float64))
    np.testing.assert_allclose(solver.net.params["ip"][0].data, weight - 0.2 * grad_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(solver.net.params["ip"][1].data, bias)


def test_l1_regularization():
    solver = make('type: "SGD" weight_decay: 0.3 regularization_type: "L1"')
    weight, bias = (blob.data.astype(np.float64) for blob in solver.net.params["ip"])
    solver.step(1)
    grad_w, grad_b = gradients(weight, bias)
    np.testing.assert_allclose(solver.net.params["ip"][0].data, weight - 0.1 * (grad_w + 0.3 * np.sign(weight)),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(MinicaffeError, match="unknown regularization_type 'L3'"):
        make('type: "SGD" weight_decay: 0.3 regularization_type: "L3"').step(1)


def test_gradient_clipping_by_global_norm():
    solver = make('type: "SGD" clip_gradients: 0.01')
    weight, bias = (blob.data.astype(np.float64) for blob in solver.net.params["ip"])
    solver.step(1)
    grad_w, grad_b = gradients(weight, bias)
    norm = math.sqrt(np.sum(grad_w ** 2) + np.sum(grad_b ** 2))
    assert norm > 0.01
    np.testing.assert_allclose(solver.net.params["ip"][0].data, weight - 0.1 * grad_w * 0.01 / norm,
                               rtol=1e-5, atol=1e-7)


@register("MinicaffeTestCycle")
class _Cycle(Layer):
    """Feeds consecutive slices of a fixed dataset, wrapping around: a deterministic data layer."""
    exact_bottoms = 0
    exact_tops = 2
    data = rng.standard_normal((8, 3))
    targets = rng.standard_normal((8, 2))

    def setup(self, bottom, top):
        self.batch = int(self.layer_param.dummy_data_param.num[0])
        self.position = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.batch, 3)
        top[1].reshape(self.batch, 2)

    def forward(self, bottom, top):
        rows = [(self.position + i) % len(self.data) for i in range(self.batch)]
        top[0].data[...] = self.data[rows]
        top[1].data[...] = self.targets[rows]
        self.position = (self.position + self.batch) % len(self.data)

    def backward(self, top, propagate_down, bottom):
        pass

    def cursor_state(self):
        return {"position": self.position}

    def restore_cursor(self, state):
        self.position = state["position"]


def cycle_param(batch, extra, dropout=True):
    param = with_overrides('base_lr: 0.05 lr_policy: "fixed" display: 0 momentum: 0.9 snapshot_after_train: false '
                           'random_seed: 1', extra)
    parse_text(f'''layer {{ name: "data" type: "MinicaffeTestCycle" top: "x" top: "t" dummy_data_param {{ num: {batch} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "h" inner_product_param {{ num_output: 4
  weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
{'layer { name: "drop" type: "Dropout" bottom: "h" top: "h" dropout_param { dropout_ratio: 0.3 } }' if dropout else ''}
layer {{ name: "ip2" type: "InnerProduct" bottom: "h" top: "y" inner_product_param {{ num_output: 2
  weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }}
''', param.net_param)
    return param


def test_iter_size_equals_the_doubled_batch():
    big = caffe.Solver(cycle_param(8, 'type: "SGD"', dropout=False))
    small = caffe.Solver(cycle_param(4, 'type: "SGD" iter_size: 2', dropout=False))
    for name in ("ip", "ip2"):
        for index in range(2):
            small.net.params[name][index].data[...] = big.net.params[name][index].data
    big.step(3)
    small.step(3)
    for name in ("ip", "ip2"):
        for index in range(2):
            np.testing.assert_allclose(small.net.params[name][index].data, big.net.params[name][index].data,
                                       rtol=1e-5, atol=1e-7)


def test_same_seed_same_losses():
    def losses():
        solver = caffe.Solver(cycle_param(4, 'type: "Adam" base_lr: 0.01'))
        result = []
        for _ in range(4):
            solver.step(1)
            result.append(float(solver.net.blobs["loss"].data))
        return result
    first, second = losses(), losses()
    assert first == second and len(set(first)) == 4


def test_averaged_test_outputs_and_test_nets(caplog):
    param = cycle_param(4, 'type: "SGD" test_iter: 2 test_interval: 2 test_initialization: true max_iter: 4 display: 1')
    solver = caffe.Solver(param)
    assert len(solver.test_nets) == 1 and solver.test_nets[0].phase == caffe.TEST
    scores = solver.test_all()[0]
    # two batches of 4 from the cycle, through the trained net's weights (shared)
    net = solver.test_nets[0]
    assert set(scores) == {"loss"} and scores["loss"] > 0
    with caplog.at_level("INFO", logger="minicaffe"):
        solver.solve()
    text = caplog.text
    assert "Iteration 0, Testing net (#0)" in text and "Test net output #0: loss = " in text
    assert "Train net output #0: loss = " in text and "(* 1 = " in text
    assert "Iteration 0, lr = 0.05" in text and "Optimization Done." in text
    assert solver.iter == 4


def test_callbacks_and_apply_update():
    solver = make('type: "SGD"')
    events = []
    solver.add_callback(lambda: events.append("start"), lambda: events.append("gradients"))
    solver.step(2)
    assert events == ["start", "gradients", "start", "gradients"]
    before = solver.net.params["ip"][0].data.copy()
    solver.net.clear_param_diffs()
    solver.net.forward_backward()
    solver.apply_update()
    assert not np.array_equal(before, solver.net.params["ip"][0].data)


def test_solver_file_and_seed_001_snippet(tmp_path):
    (tmp_path / "net.prototxt").write_text(REGRESSION.replace("PARAMS", "").replace(
        'layer { name: "x" type: "Input" top: "x" top: "t" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }',
        'layer { name: "x" type: "DummyData" top: "x" top: "t" dummy_data_param { shape { dim: 4 dim: 3 } '
        'shape { dim: 4 dim: 2 } data_filler { type: "gaussian" } } }'))
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                                              'type: "Nesterov"\nmomentum: 0.9\nmax_iter: 2\n')
    solver = caffe.Solver(str(tmp_path / "solver.prototxt"))     # seed 001 writes caffe.Solver(...)
    assert isinstance(solver, caffe.NesterovSolver)
    solver.step(1)
    assert solver.net.blobs["loss"].data.shape == () and float(solver.net.blobs["loss"].data) > 0
    assert isinstance(caffe.get_solver(str(tmp_path / "solver.prototxt")), caffe.NesterovSolver)
    # no snapshot_prefix: the solver file's name, as Caffe
    assert solver.param.snapshot_prefix == str(tmp_path / "solver")


def test_solver_errors():
    with pytest.raises(MinicaffeError, match="unknown solver type 'Adagrad'"):
        caffe.Solver(solver_param('type: "Adagrad"'))
    with pytest.raises(MinicaffeError, match="AdaGrad does not use momentum"):
        caffe.Solver(solver_param('type: "AdaGrad" momentum: 0.9'))
    param = solver_param('type: "SGD"')
    param.net = "also.prototxt"
    with pytest.raises(MinicaffeError, match="exactly one of net, net_param"):
        caffe.Solver(param)


def test_solver_mode_gpu_without_a_device_falls_back_with_a_warning():
    from minicaffe import gpu
    if gpu.available():
        return      # a GPU (or the simulator) is there: this fallback cannot happen
    with pytest.warns(MinicaffeWarning, match="no CUDA device is usable: training on the CPU"):
        solver = caffe.Solver(solver_param('type: "SGD" solver_mode: GPU'))
    assert caffe.mode.mode() == "cpu"
    solver.step(1)


def test_shared_parameters_update_once_with_the_summed_gradient():
    text = REGRESSION.replace("PARAMS", 'param { name: "w" } param { name: "b" }') + '''
layer { name: "ip_twin" type: "InnerProduct" bottom: "x" top: "y2" param { name: "w" } param { name: "b" }
  inner_product_param { num_output: 2 } }
layer { name: "loss2" type: "EuclideanLoss" bottom: "y2" bottom: "t" top: "loss2" }
'''
    param = with_overrides('base_lr: 0.1 lr_policy: "fixed" display: 0 type: "SGD"', "")
    parse_text(text, param.net_param)
    solver = caffe.Solver(param)
    solver.net.blobs["x"].data[...] = X
    solver.net.blobs["t"].data[...] = T
    assert len(solver.learnable) == 2                     # the twin's blobs are the owner's
    weight, bias = (blob.data.astype(np.float64) for blob in solver.net.params["ip"])
    solver.step(1)
    grad_w, grad_b = gradients(weight, bias)
    np.testing.assert_allclose(solver.net.params["ip"][0].data, weight - 0.1 * 2 * grad_w, rtol=1e-5, atol=1e-7)
    assert solver.net.params["ip_twin"][0] is solver.net.params["ip"][0]


# ------------------------------------------------------------------ values outside their domain (issue 23)

@pytest.mark.parametrize("extra, message", [
    ('type: "Adam" momentum: 1', r"Adam needs momentum in \[0, 1\), got momentum: 1"),
    ('type: "Adam" momentum: 0.9 momentum2: 2', r"Adam needs momentum2 in \[0, 1\), got momentum2: 2"),
    ('type: "Adam" momentum: 0.9 momentum2: 1', r"Adam needs momentum2 in \[0, 1\), got momentum2: 1"),
    ('type: "Adam" momentum: -0.5', r"Adam needs momentum in \[0, 1\), got momentum: -0.5"),
    ('lr_policy: "inv" gamma: -1 power: 0.5', "lr_policy 'inv' needs gamma >= 0, got gamma: -1"),
    ('lr_policy: "exp" gamma: -0.5', "lr_policy 'exp' needs gamma >= 0, got gamma: -0.5"),
    ('lr_policy: "step" gamma: 0.1 stepsize: 0', "lr_policy 'step' needs a positive stepsize, got stepsize: 0"),
    ('lr_policy: "step" gamma: -0.1 stepsize: 2', "lr_policy 'step' needs gamma >= 0, got gamma: -0.1"),
    ('lr_policy: "multistep" gamma: 0.1 stepvalue: 5 stepvalue: 2',
     "lr_policy 'multistep' needs increasing stepvalues, got stepvalue 2 after 5"),
    ('lr_policy: "poly" power: -1', "lr_policy 'poly' needs power >= 0, got power: -1"),
    ('lr_policy: "poly" power: 1 max_iter: 0', "lr_policy 'poly' needs a positive max_iter, got max_iter: 0"),
    ('lr_policy: "sigmoid" gamma: 0.1 stepsize: -3', "lr_policy 'sigmoid' needs a positive stepsize, got stepsize: -3"),
    ('lr_policy: "inv" gamma: 0.1 power: nan', "lr_policy 'inv' needs a finite power, got power: nan"),
    ('base_lr: inf', "base_lr is inf; it must be finite"),
])
def test_solver_values_outside_their_domain_are_refused_when_built(extra, message):
    with pytest.raises(MinicaffeError, match=message):
        make(extra)


def test_lr_policies_never_overflow_into_python_errors():
    # Caffe's pow and exp give inf or 0 here; math.pow and math.exp raise OverflowError.
    assert learning_rate(parse_solver('base_lr: 0.1 lr_policy: "exp" gamma: 10'), 400, 0)[0] == math.inf
    assert learning_rate(parse_solver('base_lr: 0.1 lr_policy: "step" gamma: 10 stepsize: 1'), 400, 0)[0] == math.inf
    sigmoid = parse_solver('base_lr: 0.1 lr_policy: "sigmoid" gamma: -1000 stepsize: 5')
    assert learning_rate(sigmoid, 6, 0)[0] == 0.0 and learning_rate(sigmoid, 4, 0)[0] == pytest.approx(0.1)
    with pytest.raises(MinicaffeError, match=r"lr_policy 'poly' is defined up to max_iter \(10\); iteration 11"):
        learning_rate(parse_solver('base_lr: 0.1 lr_policy: "poly" power: 0.5 max_iter: 10'), 11, 0)
    with pytest.raises(MinicaffeError, match="lr_policy 'inv' needs gamma >= 0"):     # a param changed later
        learning_rate(parse_solver('base_lr: 0.1 lr_policy: "inv" gamma: -1 power: 1'), 3, 0)


@pytest.mark.parametrize("field", ["net", "snapshot_prefix", "test_net"])
def test_a_nul_byte_in_a_solver_path_names_the_field(tmp_path, field):
    (tmp_path / "net.prototxt").write_text(REGRESSION.replace("PARAMS", ""))
    lines = {"net": 'net: "net.prototxt"', "snapshot_prefix": 'snapshot_prefix: "snap"', "test_net": ""}
    lines[field] = f'{field}: "a\\000b"' + ('\ntrain_net: "net.prototxt"\ntest_iter: 1\ntest_interval: 1'
                                            if field == "test_net" else "")
    if field == "test_net":
        del lines["net"]
    (tmp_path / "solver.prototxt").write_text("base_lr: 0.1\nlr_policy: \"fixed\"\n" + "\n".join(lines.values()))
    name = "test_net\\[0\\]" if field == "test_net" else field
    with pytest.raises(MinicaffeError, match=rf"solver.prototxt: {name} 'a\\x00b' contains a NUL byte"):
        caffe.Solver(str(tmp_path / "solver.prototxt"))
