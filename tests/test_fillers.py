"""Fillers: Caffe's formulas and defaults, and reproducibility under a seed."""

import math

import numpy as np
import pytest

from minicaffe.blob import Blob
from minicaffe.errors import GraphError, MinicaffeError
from minicaffe.fillers import fill, set_random_seed
from minicaffe.proto import caffe_pb2
from minicaffe.proto.text import parse_text


def filled(shape, text, seed=5):
    set_random_seed(seed)
    blob = Blob(shape, dtype=np.float64)
    fill(blob, parse_text(text, caffe_pb2.FillerParameter()), "layer")
    return blob.data


def test_default_is_constant_zero():
    blob = Blob((3,))
    blob.data[...] = 9
    fill(blob)
    assert blob.data.tolist() == [0, 0, 0]
    assert filled((2,), 'type: "constant" value: 2.5').tolist() == [2.5, 2.5]


def test_uniform_and_gaussian_statistics():
    values = filled((200, 100), 'type: "uniform" min: -2 max: 3')
    assert values.min() >= -2 and values.max() <= 3 and abs(values.mean() - 0.5) < 0.05
    values = filled((200, 100), 'type: "gaussian" mean: 1 std: 0.5')
    assert abs(values.mean() - 1) < 0.02 and abs(values.std() - 0.5) < 0.02


def test_sparse_gaussian_keeps_sparse_over_num_outputs():
    values = filled((50, 400), 'type: "gaussian" sparse: 10')
    # each weight survives with probability 10 / 50
    assert abs(np.mean(values != 0) - 0.2) < 0.02


def test_positive_unitball_rows_sum_to_one():
    values = filled((4, 3, 2), 'type: "positive_unitball"')
    assert (values >= 0).all()
    np.testing.assert_allclose(values.reshape(4, -1).sum(axis=1), 1.0)


@pytest.mark.parametrize("norm, fan", [("FAN_IN", 3 * 5 * 5), ("FAN_OUT", 20 * 5 * 5), ("AVERAGE", (75 + 500) / 2)])
def test_xavier_and_msra_scale_with_fans(norm, fan):
    values = filled((20, 3, 5, 5), f'type: "xavier" variance_norm: {norm}')
    bound = math.sqrt(3.0 / fan)
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound
    values = filled((200, 30, 5, 5), f'type: "msra" variance_norm: {norm}')
    fan = {"FAN_IN": 750, "FAN_OUT": 5000, "AVERAGE": 2875}[norm]
    assert abs(values.std() - math.sqrt(2.0 / fan)) < 0.02 * math.sqrt(2.0 / fan) * 5


def test_bilinear_matches_caffes_formula():
    values = filled((2, 1, 4, 4), 'type: "bilinear"')
    f = math.ceil(4 / 2)
    c = (4 - 1) / (2 * f)
    for y in range(4):
        for x in range(4):
            expected = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
            assert values[1, 0, y, x] == pytest.approx(expected)
    with pytest.raises(MinicaffeError, match="square"):
        filled((1, 1, 3, 4), 'type: "bilinear"')


def test_seed_makes_fills_reproducible():
    first = filled((3, 3), 'type: "gaussian"', seed=11)
    again = filled((3, 3), 'type: "gaussian"', seed=11)
    other = filled((3, 3), 'type: "gaussian"', seed=12)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_errors_name_the_layer():
    with pytest.raises(MinicaffeError, match="layer 'layer': unknown filler type 'gausian'"):
        filled((2,), 'type: "gausian"')
    with pytest.raises(MinicaffeError, match="does not support sparse"):
        filled((2, 2), 'type: "uniform" sparse: 3')


# ---------------------------------------------------------------- parameters out of their domain (issue 23)

def net_with_filler(write_file, filler, input_dims="dim: 2 dim: 3", num_output=3, name="net.prototxt"):
    import minicaffe
    path = write_file(name, f'''name: "f"
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {input_dims} }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param {{ num_output: {num_output} weight_filler {{ {filler} }} }} }}
''')
    return minicaffe.Net(path, minicaffe.TEST)


@pytest.mark.parametrize("filler, message", [
    ('type: "gaussian" std: -1', "gaussian filler's std is -1; it must be positive"),
    ('type: "gaussian" std: 0', "gaussian filler's std is 0; it must be positive"),
    ('type: "gaussian" mean: nan', "gaussian filler's mean is nan, which is not a finite float32"),
    ('type: "gaussian" sparse: -2', "gaussian filler's sparse is -2"),
    ('type: "gaussian" sparse: 4', "gaussian filler's sparse is 4, more than the blob's 3 outputs"),
    ('type: "uniform" min: 2 max: 1', r"uniform filler's min \(2\) is greater than its max \(1\)"),
    ('type: "uniform" max: inf', "uniform filler's max is inf, which is not a finite float32"),
    ('type: "uniform" min: -1e39', "uniform filler's min is -inf, which is not a finite float32"),  # a float field
    ('type: "uniform" min: -3e38 max: 3e38', "uniform filler's range max - min = 3e\\+38 - -3e\\+38 overflows float32"),
    ('type: "constant" value: inf', "constant filler's value is inf"),
    ('type: "xavier" sparse: 2', r"the xavier filler does not support sparse \(sparse: 2\)"),
])
def test_bad_filler_parameters_name_the_layer_the_field_and_the_value(write_file, filler, message):
    with pytest.raises(GraphError, match="layer 'ip': inner_product_param.weight_filler: " + message):
        net_with_filler(write_file, filler)


@pytest.mark.parametrize("kind", ["xavier", "msra"])
@pytest.mark.parametrize("norm", ["FAN_IN", "FAN_OUT", "AVERAGE"])
def test_xavier_and_msra_refuse_a_zero_fan(write_file, kind, norm):
    # A zero dimension upstream makes the weight (3, 0): Caffe's fan computation divides by zero.
    with pytest.raises(GraphError, match=rf"layer 'ip': inner_product_param.weight_filler: the {kind} filler's "
                                         rf"fan \({norm}\) is 0 for the blob of shape \(3, 0\)"):
        net_with_filler(write_file, f'type: "{kind}" variance_norm: {norm}', input_dims="dim: 2 dim: 0")


def test_empty_blobs_fill_without_dividing_by_zero():
    for text in ('type: "positive_unitball"', 'type: "gaussian" sparse: 1', 'type: "bilinear"', 'type: "uniform"'):
        for shape in ((0, 3), (3, 0), (0, 1, 2, 2), (1, 1, 0, 0)):
            if "bilinear" in text and len(shape) != 4:
                continue
            assert filled(shape, text).shape == shape


def test_check_refuses_a_bad_filler_without_drawing(write_file):
    from click.testing import CliRunner
    from minicaffe.cli import main
    path = write_file("net.prototxt", '''name: "f"
layer { name: "d" type: "DummyData" top: "x"
  dummy_data_param { shape { dim: 2 } data_filler { type: "gaussian" std: -1 } } }
''')
    result = CliRunner().invoke(main, ["check", path])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "layer 'd': dummy_data_param.data_filler: gaussian filler's std is -1" in result.output


def test_dummy_data_checks_fillers_it_draws_at_each_forward_when_it_is_built(write_file):
    import minicaffe
    path = write_file("net.prototxt", '''name: "f"
layer { name: "d" type: "DummyData" top: "x" top: "y" dummy_data_param { shape { dim: 2 }
  data_filler { type: "constant" } data_filler { type: "uniform" min: 1 max: 0 } } }
''')
    with pytest.raises(GraphError, match=r"layer 'd': dummy_data_param.data_filler\[1\]: uniform filler's min \(1\)"):
        minicaffe.Net(path, minicaffe.TEST)


# ---------------------------------------------------------------- no float64 temporaries for float32 nets

@pytest.mark.parametrize("text", ['type: "gaussian" std: 2', 'type: "uniform" min: -1 max: 3', 'type: "xavier"',
                                  'type: "msra"', 'type: "positive_unitball"', 'type: "gaussian" sparse: 10',
                                  'type: "constant" value: 2'])
def test_float32_blobs_are_filled_in_place_without_float64_temporaries(text):
    import tracemalloc
    blob = Blob((256, 1024))            # 1 MiB of float32; a float64 draw would need 2 MiB more
    data = blob.data
    set_random_seed(3)
    tracemalloc.start()
    try:
        fill(blob, parse_text(text, caffe_pb2.FillerParameter()), "layer")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 512 * 1024, f"{text}: {peak} bytes of temporaries"
    assert np.shares_memory(blob.data, data) and data.dtype == np.float32 and np.isfinite(data).all()


def test_float32_draws_keep_caffes_distributions_and_float64_ones_equal_numpys():
    set_random_seed(9)
    blob = Blob((400, 500))
    fill(blob, parse_text('type: "gaussian" mean: 1 std: 0.5', caffe_pb2.FillerParameter()), "layer")
    assert abs(blob.data.mean() - 1) < 0.01 and abs(blob.data.std() - 0.5) < 0.01
    fill(blob, parse_text('type: "uniform" min: -2 max: 3', caffe_pb2.FillerParameter()), "layer")
    assert blob.data.min() >= -2 and blob.data.max() <= 3 and abs(blob.data.mean() - 0.5) < 0.02
    # float64 blobs draw exactly numpy's normal()/uniform() stream for the seed
    values = filled((5, 7), 'type: "gaussian" mean: 1 std: 0.5', seed=4)
    np.testing.assert_array_equal(values, np.random.default_rng(4).normal(1, 0.5, size=(5, 7)))
    values = filled((5, 7), 'type: "uniform" min: -2 max: 3', seed=4)
    np.testing.assert_array_equal(values, np.random.default_rng(4).uniform(-2, 3, size=(5, 7)))
