"""Fillers: Caffe's formulas and defaults, and reproducibility under a seed."""

import math

import numpy as np
import pytest

from minicaffe.blob import Blob
from minicaffe.errors import MinicaffeError
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
