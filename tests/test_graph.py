"""The graph plan: filtering, ordering, in-place, loss weights, splits, sharing."""

import pytest

from minicaffe.errors import GraphError
from minicaffe.graph import (TEST, TRAIN, insert_splits, plan_net, resolve_loss_weights,
                             split_blob_name, split_layer_name, state_meets_rule)
from minicaffe.proto import caffe_pb2
from minicaffe.proto.text import parse_net, parse_text


def layer_names(plan):
    return [layer.name for layer in plan.layers]


def user_layer_names(plan):
    return [layer.name for layer in plan.layers if not layer.is_split]


INPUT = 'layer { name: "in" type: "Input" top: "x" top: "label" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }\n'


# ---------------------------------------------------------------- NetState filtering

def rule(text):
    return parse_text(text, caffe_pb2.NetStateRule())


def state(text):
    return parse_text(text, caffe_pb2.NetState())


@pytest.mark.parametrize("state_text, rule_text, meets", [
    ("phase: TRAIN", "phase: TRAIN", True),
    ("phase: TEST", "phase: TRAIN", False),
    ("phase: TEST", "", True),                              # an empty rule is always met
    ("level: 2", "min_level: 2", True),
    ("level: 1", "min_level: 2", False),
    ("level: 3", "max_level: 2", False),
    ("level: 2", "min_level: 1 max_level: 2", True),
    ("stage: 'a' stage: 'b'", "stage: 'a' stage: 'b'", True),
    ("stage: 'a'", "stage: 'a' stage: 'b'", False),         # needs ALL of the rule's stages
    ("stage: 'a'", "not_stage: 'b'", True),
    ("stage: 'a' stage: 'b'", "not_stage: 'b'", False),     # NONE of the not_stages
    ("phase: TRAIN level: 5 stage: 's'", "phase: TRAIN min_level: 5 stage: 's' not_stage: 't'", True),
])
def test_state_meets_rule(state_text, rule_text, meets):
    assert state_meets_rule(state(state_text), rule(rule_text)) is meets


PHASED = INPUT + """
layer { name: "train_only" type: "ReLU" bottom: "x" top: "t" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "x" top: "t" include { phase: TEST } }
layer { name: "not_test" type: "TanH" bottom: "x" top: "u" exclude { phase: TEST } }
layer { name: "deep" type: "TanH" bottom: "x" top: "v" include { min_level: 1 } }
layer { name: "staged" type: "TanH" bottom: "x" top: "w" include { stage: "deploy" } }
layer { name: "either" type: "TanH" bottom: "x" top: "z" include { phase: TEST } include { stage: "deploy" } }
"""


def test_filtering_by_phase_level_stage():
    net = parse_net(PHASED)
    assert user_layer_names(plan_net(net, phase="TRAIN")) == ["in", "train_only", "not_test"]
    assert user_layer_names(plan_net(net, phase="TEST")) == ["in", "test_only", "either"]
    assert "deep" in user_layer_names(plan_net(net, phase=TRAIN, level=1))
    assert user_layer_names(plan_net(net, phase=TRAIN, stages=["deploy"]))[-2:] == ["staged", "either"]


def test_state_from_file_is_kept_and_extended():
    net = parse_net('state { phase: TEST level: 1 stage: "deploy" }\n' + PHASED)
    plan = plan_net(net)                       # nothing given: the file's own state
    assert plan.state.phase == TEST and plan.state.level == 1
    assert "deep" in user_layer_names(plan) and "staged" in user_layer_names(plan)
    plan = plan_net(net, phase="TRAIN", level=0, stages=["extra"])
    assert plan.state.phase == TRAIN and plan.state.level == 0
    assert list(plan.state.stage) == ["deploy", "extra"]


def test_include_and_exclude_together_is_an_error():
    net = parse_net(INPUT + 'layer { name: "bad" type: "ReLU" bottom: "x" top: "y" '
                    'include { phase: TRAIN } exclude { phase: TEST } }')
    with pytest.raises(GraphError, match="layer 'bad'.*either include rules or exclude rules"):
        plan_net(net, phase="TRAIN")


# ---------------------------------------------------------------- ordering and in-place

def test_unknown_bottom_names_layer_and_blob():
    net = parse_net(INPUT + 'layer { name: "ip" type: "InnerProduct" bottom: "nope" top: "y" }')
    with pytest.raises(GraphError) as info:
        plan_net(net, phase="TRAIN")
    assert info.value.layer == "ip" and info.value.blob == "nope"
    assert "layer 'ip', blob 'nope'" in str(info.value)


def test_bottom_produced_later_says_so():
    net = parse_net(INPUT + 'layer { name: "a" type: "ReLU" bottom: "y" top: "z" }\n'
                    'layer { name: "b" type: "ReLU" bottom: "x" top: "y" }')
    with pytest.raises(GraphError, match="layer 'b' produces it later"):
        plan_net(net, phase="TRAIN")


def test_bottom_from_filtered_layer_says_so():
    net = parse_net(INPUT + 'layer { name: "a" type: "ReLU" bottom: "x" top: "y" include { phase: TEST } }\n'
                    'layer { name: "b" type: "ReLU" bottom: "y" top: "z" }')
    with pytest.raises(GraphError, match="layer 'a' produces it but is left out in phase TRAIN"):
        plan_net(net, phase="TRAIN")
    assert user_layer_names(plan_net(net, phase="TEST")) == ["in", "a", "b"]


def test_misspelt_bottom_suggests_close_names():
    net = parse_net(INPUT + 'layer { name: "a" type: "ReLU" bottom: "lable" top: "y" }')
    with pytest.raises(GraphError, match="did you mean 'label'"):
        plan_net(net, phase="TRAIN")


def test_in_place_layers():
    net = parse_net(INPUT + 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h" }\n'
                    'layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }\n'
                    'layer { name: "drop" type: "Dropout" bottom: "h" top: "h" }\n'
                    'layer { name: "out" type: "TanH" bottom: "h" top: "o" }')
    plan = plan_net(net, phase="TRAIN")
    assert plan.layer("relu").in_place == (True,)
    assert plan.layer("ip").in_place == (False,)
    assert plan.blobs == ["x", "label", "h", "o"]          # in place makes no new blob
    assert plan.outputs == ["label", "o"]
    assert not any(layer.is_split for layer in plan.layers)


def test_top_produced_twice_is_an_error():
    net = parse_net(INPUT + 'layer { name: "a" type: "ReLU" bottom: "x" top: "y" }\n'
                    'layer { name: "b" type: "TanH" bottom: "x" top: "y" }')
    with pytest.raises(GraphError, match="layer 'b', blob 'y'.*already produced"):
        plan_net(net, phase="TRAIN")


def test_in_place_needs_same_index():
    # top 0 == bottom 1 is not in place in Caffe: it redefines an existing blob
    net = parse_net(INPUT + 'layer { name: "e" type: "Eltwise" bottom: "label" bottom: "x" top: "x" }')
    with pytest.raises(GraphError, match="blob 'x'"):
        plan_net(net, phase="TRAIN")


def test_inputs_and_outputs():
    net = parse_net(INPUT + 'layer { name: "a" type: "ReLU" bottom: "x" top: "zz" }\n'
                    'layer { name: "b" type: "ReLU" bottom: "x" top: "aa" }')
    plan = plan_net(net, phase="TRAIN")
    assert plan.inputs == ["x", "label"]
    assert plan.outputs == ["aa", "label", "zz"]            # sorted, as Caffe's std::set


def test_propagate_down_count_must_match():
    net = parse_net(INPUT + 'layer { name: "l" type: "EuclideanLoss" bottom: "x" bottom: "x" top: "loss" '
                    'propagate_down: true }')
    with pytest.raises(GraphError, match="layer 'l'.*propagate_down"):
        plan_net(net, phase="TRAIN")


def test_duplicate_layer_names_warn():
    net = parse_net(INPUT + 'layer { name: "a" type: "ReLU" bottom: "x" top: "y" }\n'
                    'layer { name: "a" type: "ReLU" bottom: "y" top: "z" }')
    plan = plan_net(net, phase="TRAIN")
    assert any("'a' is used more than once" in w for w in plan.warnings)


# ---------------------------------------------------------------- loss weights

def weights_of(net_text):
    resolved = resolve_loss_weights(parse_net(net_text))
    return {layer.name: list(layer.loss_weight) for layer in resolved.layer}


def test_loss_weight_defaults():
    weights = weights_of(INPUT + """
layer { name: "sm" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" top: "prob" }
layer { name: "eu" type: "EuclideanLoss" bottom: "x" bottom: "x" top: "e" }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h" }
layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "label" top: "acc" }
layer { name: "sil" type: "Silence" bottom: "h" }
""")
    assert weights == {"in": [0.0, 0.0], "sm": [1.0, 0.0], "eu": [1.0], "ip": [0.0], "acc": [0.0], "sil": []}


def test_explicit_loss_weights_override():
    weights = weights_of(INPUT + """
layer { name: "sm" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" loss_weight: 0.3 }
layer { name: "zero" type: "EuclideanLoss" bottom: "x" bottom: "x" top: "e" loss_weight: 0 }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h" loss_weight: 2 }
""")
    assert weights["sm"] == pytest.approx([0.3])
    assert weights["zero"] == [0.0]
    assert weights["ip"] == [2.0]


def test_loss_weight_count_mismatch_is_an_error():
    with pytest.raises(GraphError, match="layer 'sm'.*loss_weight is given 1 times but the layer has 2 tops"):
        weights_of(INPUT + 'layer { name: "sm" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" '
                   'top: "loss" top: "prob" loss_weight: 1 }')


# ---------------------------------------------------------------- splits

def test_split_names_follow_caffe():
    assert split_layer_name("ip", "score", 0) == "score_ip_0_split"
    assert split_blob_name("ip", "score", 1, 2) == "score_ip_1_split_2"


def test_top_consumed_twice_is_split():
    net = parse_net(INPUT + """
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h" }
layer { name: "a" type: "ReLU" bottom: "h" top: "ha" }
layer { name: "b" type: "TanH" bottom: "h" top: "hb" }
""")
    plan = plan_net(net, phase="TRAIN")
    assert layer_names(plan) == ["in", "ip", "h_ip_0_split", "a", "b"]
    split = plan.layer("h_ip_0_split")
    assert split.type == "Split" and split.is_split
    assert split.bottoms == ("h",)
    assert split.tops == ("h_ip_0_split_0", "h_ip_0_split_1")
    assert split.loss_weights == (0.0, 0.0)
    assert plan.layer("a").bottoms == ("h_ip_0_split_0",)
    assert plan.layer("b").bottoms == ("h_ip_0_split_1",)


def test_single_consumer_is_not_split():
    net = parse_net(INPUT + 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h" }')
    plan = plan_net(net, phase="TRAIN")
    assert layer_names(plan) == ["in", "ip"]


def test_consumed_once_with_loss_weight_is_split():
    # Caffe's lw_ip_top_and_swl: a non-loss top with loss_weight 0.5, also fed to a loss at 0.3.
    net = parse_net(INPUT + """
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "score" loss_weight: 0.5 }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" loss_weight: 0.3 }
""")
    plan = plan_net(net, phase="TRAIN")
    assert layer_names(plan) == ["in", "ip", "score_ip_0_split", "loss"]
    assert plan.layer("ip").loss_weights == (0.0,)           # moved to the split's first copy
    split = plan.layer("score_ip_0_split")
    assert split.tops == ("score_ip_0_split_0", "score_ip_0_split_1")
    assert split.loss_weights == (0.5, 0.0)
    assert plan.layer("loss").bottoms == ("score_ip_0_split_1", "label")
    assert plan.layer("loss").loss_weights == pytest.approx((0.3,))
    assert plan.outputs == ["loss", "score_ip_0_split_0"]


def test_implicit_loss_weight_counts_as_a_use():
    # A *Loss top that another layer also reads keeps its gradient: it is split
    # (Caffe inserts splits before the implicit weight exists, and loses it).
    net = parse_net(INPUT + """
layer { name: "eu" type: "EuclideanLoss" bottom: "x" bottom: "x" top: "e" }
layer { name: "watch" type: "Power" bottom: "e" top: "e2" }
""")
    plan = plan_net(net, phase="TRAIN")
    split = plan.layer("e_eu_0_split")
    assert split.loss_weights == (1.0, 0.0)
    assert plan.layer("eu").loss_weights == (0.0,)
    assert plan.layer("watch").bottoms == ("e_eu_0_split_1",)


def test_split_moves_only_the_split_tops_weight():
    net = parse_net(INPUT + """
layer { name: "two" type: "Slice" bottom: "x" top: "p" top: "q" loss_weight: 1 loss_weight: 2 }
layer { name: "use" type: "ReLU" bottom: "p" top: "r" }
""")
    plan = plan_net(net, phase="TRAIN")
    assert plan.layer("two").loss_weights == (0.0, 2.0)
    assert plan.layer("p_two_0_split").loss_weights == (1.0, 0.0)


def test_split_of_in_place_chain_follows_last_producer():
    net = parse_net(INPUT + """
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h" }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "a" type: "TanH" bottom: "h" top: "ha" }
layer { name: "b" type: "TanH" bottom: "h" top: "hb" }
""")
    plan = plan_net(net, phase="TRAIN")
    assert layer_names(plan) == ["in", "ip", "relu", "h_relu_0_split", "a", "b"]
    assert plan.layer("relu").bottoms == ("h",)


def test_loss_weight_zero_adds_no_split():
    net = parse_net(INPUT + """
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "score" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" loss_weight: 0 }
""")
    plan = plan_net(net, phase="TRAIN")
    assert layer_names(plan) == ["in", "ip", "loss"]
    assert not plan.layer("loss").is_loss


def test_insert_splits_is_pure():
    net = resolve_loss_weights(parse_net(INPUT + 'layer { name: "a" type: "ReLU" bottom: "x" top: "y" }\n'
                                         'layer { name: "b" type: "ReLU" bottom: "x" top: "z" }'))
    before = net.SerializeToString()
    insert_splits(net)
    assert net.SerializeToString() == before


# ---------------------------------------------------------------- parameter sharing

SHARED = INPUT + """
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" lr_mult: 1 } param { name: "b" } }
layer { name: "ip2" type: "InnerProduct" bottom: "x" top: "b" param { name: "w" } param { name: "b" lr_mult: 2 } }
layer { name: "ip3" type: "InnerProduct" bottom: "x" top: "c" param { lr_mult: 1 } param { name: "w2" } }
"""


def test_shared_params_resolve_to_owner():
    plan = plan_net(parse_net(SHARED), phase="TRAIN")
    assert plan.layer("ip1").shared_params == ()
    shares = plan.layer("ip2").shared_params
    assert [(s.name, s.index, s.owner_layer, s.owner_index) for s in shares] == [
        ("w", 0, "ip1", 0), ("b", 1, "ip1", 1)]
    assert plan.layer("ip3").shared_params == ()              # anonymous and first-named params are owned


def test_shared_param_mismatched_lr_mult_is_an_error():
    net = parse_net(SHARED + 'layer { name: "ip4" type: "InnerProduct" bottom: "x" top: "d" param { name: "w" lr_mult: 3 } }')
    with pytest.raises(GraphError, match="layer 'ip4'.*shared param 'w' has lr_mult 3"):
        plan_net(net, phase="TRAIN")
    # ip2 gave "b" its first lr_mult (2); a later user must agree with it
    net = parse_net(SHARED + 'layer { name: "ip5" type: "InnerProduct" bottom: "x" top: "d" param { name: "x" } param { name: "b" lr_mult: 1 } }')
    with pytest.raises(GraphError, match="shared param 'b' has lr_mult 1 here but 2"):
        plan_net(net, phase="TRAIN")


def test_a_layer_naming_one_shared_param_twice_is_an_error(write_file):
    # Net building used to raise a KeyError (sharing with a param not yet registered), also in `check`.
    net = parse_net(INPUT + 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
                            'param { name: "w" } param { name: "w" } inner_product_param { num_output: 3 } }')
    with pytest.raises(GraphError, match="layer 'ip': param 1 is named 'w', as param 0 of the same layer"):
        plan_net(net, phase="TRAIN")
    from click.testing import CliRunner
    from minicaffe.cli import main
    path = write_file("net.prototxt", str(net))
    result = CliRunner().invoke(main, ["check", path])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "layer 'ip': param 1 is named 'w'" in result.output
