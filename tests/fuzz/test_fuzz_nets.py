"""Fuzzed net prototxts: parse, upgrade, shape inference (``check``), build, Forward, Backward, second Forward.

Two generators: token-level edits of small real nets (:func:`mutate.mutate_text`), and nets drawn whole
from a structured strategy (a NetParameter-like dict of layers from a few types, wired to earlier tops,
with extreme field values), written as prototxt by minicaffe's own printer.
"""

from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from minicaffe.proto import caffe_pb2
from minicaffe.proto.text import to_text

from . import mutate
from .harness import (examples, exercise_net_file, fresh_path, layer_types, long_run, no_python_layers, read_seed,
                      sandbox)

NET_SEEDS = {
    "small_cnn": read_seed("tests", "fuzz", "seeds", "small_cnn.prototxt"),
    "branches": read_seed("tests", "fuzz", "seeds", "branches.prototxt"),
    "v0_net": read_seed("tests", "fuzz", "seeds", "v0_net.prototxt"),
    "mlp_v1": read_seed("examples", "legacy", "mlp_v1.prototxt"),
    "mlp_regression": read_seed("examples", "mlp", "mlp_regression.prototxt"),
    "digits_deploy": read_seed("examples", "digits", "digits_deploy.prototxt"),
}
if long_run():      # more layer types, so more kernels to compile: the long profile only
    NET_SEEDS.update({
        "zoo": read_seed("tests", "fuzz", "seeds", "zoo.prototxt"),
        "ssd_tiny_deploy": read_seed("examples", "ssd", "ssd_tiny_deploy.prototxt"),
        "char_lstm": read_seed("examples", "char_lstm", "char_lstm.prototxt"),
    })


def run_text(text, name="net.prototxt"):
    no_python_layers(text)
    with sandbox():
        path = fresh_path(name)
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(text)
        exercise_net_file(path)


def test_the_seeds_build_and_run():
    """The seeds themselves pass the whole path (so mutations start from nets that work)."""
    import minicaffe
    for name, seed in NET_SEEDS.items():
        with sandbox():
            path = fresh_path(name + ".prototxt")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(seed)
            for phase in ("TEST", "TRAIN"):
                net = minicaffe.Net(path, phase)
                net.forward()
                net.backward()


@settings(max_examples=examples(1400))
@given(seed=st.sampled_from(sorted(NET_SEEDS)), ops=mutate.edits())
def test_mutated_nets(seed, ops):
    run_text(mutate.mutate_text(NET_SEEDS[seed], ops, layer_types()))


# ---------------------------------------------------------------- structured nets

SMALL = st.sampled_from([0, 1, 2, 3, 4, 2 ** 31 - 1])
AXIS = st.sampled_from([-1, 0, 1, 1, 1, 2, -5, 4, 2 ** 31 - 1])
FLOATS = st.sampled_from([0.0, 0.5, 1.0, -1.0, 2.0, "Infinity", "NaN", 1e30])   # JSON spells inf and nan so


def filler():
    return st.fixed_dictionaries({"type": st.sampled_from(["constant", "gaussian", "uniform", "xavier", "msra",
                                                           "positive_unitball", "bilinear"])},
                                 optional={"std": FLOATS, "min": FLOATS, "max": FLOATS, "value": FLOATS,
                                           "sparse": st.sampled_from([-1, 0, 1, 3])})


def shape():
    return st.fixed_dictionaries({"dim": st.lists(st.sampled_from([0, 1, 2, 3, 4, -1]), min_size=0, max_size=5)})


#: Per type: the strategy of its parameter message (field name, dict).
PARAMS = {
    "Input": ("input_param", st.fixed_dictionaries({"shape": st.lists(shape(), min_size=1, max_size=2)})),
    "DummyData": ("dummy_data_param", st.fixed_dictionaries({"shape": st.lists(shape(), min_size=1, max_size=2)},
                                                            optional={"data_filler": st.lists(filler(), max_size=2)})),
    "Convolution": ("convolution_param", st.fixed_dictionaries(
        {"num_output": SMALL}, optional={"kernel_size": st.lists(SMALL, max_size=3), "pad": st.lists(SMALL, max_size=3),
                                         "stride": st.lists(SMALL, max_size=3), "dilation": st.lists(SMALL, max_size=3),
                                         "group": SMALL, "axis": AXIS, "bias_term": st.booleans(),
                                         "weight_filler": filler(), "force_nd_im2col": st.booleans()})),
    "Deconvolution": ("convolution_param", st.fixed_dictionaries(
        {"num_output": SMALL}, optional={"kernel_size": st.lists(SMALL, max_size=2), "stride": st.lists(SMALL, max_size=2),
                                         "group": SMALL, "weight_filler": filler()})),
    "Pooling": ("pooling_param", st.fixed_dictionaries(
        {}, optional={"pool": st.sampled_from(["MAX", "AVE", "STOCHASTIC"]), "kernel_size": SMALL, "stride": SMALL,
                      "pad": SMALL, "global_pooling": st.booleans(), "kernel_h": SMALL, "kernel_w": SMALL,
                      "round_mode": st.sampled_from(["CEIL", "FLOOR"])})),
    "InnerProduct": ("inner_product_param", st.fixed_dictionaries(
        {"num_output": SMALL}, optional={"axis": AXIS, "transpose": st.booleans(), "weight_filler": filler(),
                                         "bias_filler": filler()})),
    "Concat": ("concat_param", st.fixed_dictionaries({}, optional={"axis": AXIS})),
    "Slice": ("slice_param", st.fixed_dictionaries({}, optional={"axis": AXIS, "slice_point": st.lists(SMALL, max_size=3)})),
    "Eltwise": ("eltwise_param", st.fixed_dictionaries({}, optional={
        "operation": st.sampled_from(["PROD", "SUM", "MAX"]), "coeff": st.lists(FLOATS, max_size=3)})),
    "Reshape": ("reshape_param", st.fixed_dictionaries({"shape": shape()}, optional={"axis": AXIS,
                                                                                     "num_axes": st.sampled_from([-2, -1, 0, 1, 5])})),
    "Flatten": ("flatten_param", st.fixed_dictionaries({}, optional={"axis": AXIS, "end_axis": AXIS})),
    "Softmax": ("softmax_param", st.fixed_dictionaries({}, optional={"axis": AXIS})),
    "SoftmaxWithLoss": ("softmax_param", st.fixed_dictionaries({}, optional={"axis": AXIS})),
    "BatchNorm": ("batch_norm_param", st.fixed_dictionaries({}, optional={"eps": FLOATS, "moving_average_fraction": FLOATS,
                                                                          "use_global_stats": st.booleans()})),
    "Scale": ("scale_param", st.fixed_dictionaries({}, optional={"axis": AXIS, "num_axes": st.sampled_from([-2, -1, 0, 1, 3]),
                                                                 "bias_term": st.booleans(), "filler": filler()})),
    "Tile": ("tile_param", st.fixed_dictionaries({}, optional={"axis": AXIS, "tiles": SMALL})),
    "Crop": ("crop_param", st.fixed_dictionaries({}, optional={"axis": AXIS, "offset": st.lists(SMALL, max_size=3)})),
    "Reduction": ("reduction_param", st.fixed_dictionaries({}, optional={
        "operation": st.sampled_from(["SUM", "ASUM", "SUMSQ", "MEAN"]), "axis": AXIS, "coeff": FLOATS})),
    "ArgMax": ("argmax_param", st.fixed_dictionaries({}, optional={"top_k": SMALL, "axis": AXIS, "out_max_val": st.booleans()})),
    "Power": ("power_param", st.fixed_dictionaries({}, optional={"power": FLOATS, "scale": FLOATS, "shift": FLOATS})),
    "ReLU": ("relu_param", st.fixed_dictionaries({}, optional={"negative_slope": FLOATS})),
    "Dropout": ("dropout_param", st.fixed_dictionaries({}, optional={"dropout_ratio": FLOATS})),
    "Accuracy": ("accuracy_param", st.fixed_dictionaries({}, optional={"top_k": SMALL, "axis": AXIS,
                                                                       "ignore_label": st.sampled_from([-1, 0, 1])})),
    "EuclideanLoss": (None, None),
    "Sigmoid": (None, None),
    "Split": (None, None),
    "Silence": (None, None),
    "Bias": ("bias_param", st.fixed_dictionaries({}, optional={"axis": AXIS, "num_axes": st.sampled_from([-1, 0, 1, 2])})),
    "LRN": ("lrn_param", st.fixed_dictionaries({}, optional={"local_size": SMALL, "alpha": FLOATS, "beta": FLOATS,
                                                             "norm_region": st.sampled_from(["ACROSS_CHANNELS", "WITHIN_CHANNEL"])})),
}


#: Bottoms each type takes (min, max); others take one. Drawn otherwise one time in ten.
BOTTOMS = {"Input": (0, 0), "DummyData": (0, 0), "Concat": (1, 3), "Eltwise": (2, 3), "EuclideanLoss": (2, 2),
           "SoftmaxWithLoss": (2, 2), "Accuracy": (2, 2), "Crop": (2, 2), "Silence": (1, 2), "Scale": (1, 2),
           "Bias": (1, 2)}


WITH_PARAMS = {"Convolution", "Deconvolution", "InnerProduct", "BatchNorm", "Scale", "Bias"}


@st.composite
def structured_net(draw):
    """A NetParameter drawn whole: a data layer, then layers whose bottoms are earlier tops (or not)."""
    layers = [{"name": "data", "type": "DummyData", "top": ["data", "label"],
               "dummy_data_param": {"shape": [{"dim": draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=1,
                                                                    max_size=4))},
                                              {"dim": [draw(st.sampled_from([1, 2]))]}]}}]
    tops = ["data", "label"]
    for index in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(sorted(PARAMS)))
        field, params = PARAMS[kind]
        low, high = BOTTOMS.get(kind, (1, 1))
        count = draw(st.integers(low, high)) if draw(st.integers(0, 9)) else draw(st.integers(0, 3))
        pool = tops if draw(st.integers(0, 19)) else tops + ["nowhere"]
        bottoms = [draw(st.sampled_from(pool)) for _ in range(count)]
        layer = {"name": f"l{index}", "type": kind, "bottom": bottoms}
        if kind != "Silence":
            in_place = bottoms and draw(st.integers(0, 3)) == 0
            two = kind == "Slice" and draw(st.booleans()) or draw(st.integers(0, 19)) == 0
            layer["top"] = [bottoms[0]] if in_place else [f"t{index}"] + ([f"t{index}b"] if two else [])
            tops.extend(name for name in layer["top"] if name not in tops)
        if field is not None:
            layer[field] = draw(params)
        if draw(st.integers(0, 5)) == 0:
            layer["loss_weight"] = [draw(FLOATS) for _ in layer.get("top", [])]
        if kind in WITH_PARAMS and draw(st.integers(0, 4)) == 0:
            layer["param"] = [{"name": draw(st.sampled_from(["p", "q"])), "lr_mult": draw(FLOATS)}]
        if draw(st.integers(0, 8)) == 0:
            layer["propagate_down"] = [draw(st.booleans()) for _ in bottoms]
        layers.append(layer)
    message = caffe_pb2.NetParameter()
    json_format.ParseDict({"name": "drawn", "layer": layers, "force_backward": draw(st.booleans())}, message)
    return to_text(message)


@settings(max_examples=examples(900))
@given(text=structured_net())
def test_structured_nets(text):
    run_text(text)
