"""Coordinate maps over NetSpec tops (pycaffe's caffe.coord_map) and the Crop they define.

Maps are (axis, scale, shift): output coordinate x of a top lines up with
scale * x + shift of the other. Expected values are worked out by hand from
kernel, stride and pad; only one test builds a Net (shapes, no Forward).
"""

import importlib

import numpy as np
import pytest

import minicaffe as caffe
from minicaffe import coord_map as cm
from minicaffe import layers as L, params as P
from minicaffe.coord_map import (AxisMismatchException, CropError, UndefinedMapException, UnconnectedTopsError,
                                 coord_map_from_to, crop)
from minicaffe.errors import MinicaffeError
from minicaffe.proto import caffe_pb2


def conv_pool_deconv(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0, dim=12):
    """data -> conv -> max pool -> deconv (kernel twice its stride), plus an unrelated input `aux`."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, dim, dim]))
    n.aux = L.Input(shape=dict(dim=[1, 1, 6, 6]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    deconv_ks = [2 * s for s in dstride] if isinstance(dstride, list) else 2 * dstride
    n.deconv = L.Deconvolution(n.pool, num_output=2, kernel_size=deconv_ks, stride=dstride, pad=dpad)
    return n


def scalars(coord_map):
    """A map whose scale and shift have one value each, as plain floats."""
    axis, scale, shift = coord_map
    return axis, float(np.squeeze(scale)), float(np.squeeze(shift))


def test_single_layer_maps():
    n = conv_pool_deconv(ks=5, stride=2, pad=1)
    # a layer's own map: scale 1/stride, shift (pad - (kernel - 1) / 2) / stride; deconvolution the reverse
    assert scalars(cm.coord_map(n.conv.fn)) == (1, 0.5, (1 - 2) / 2)
    assert scalars(cm.coord_map(n.pool.fn)) == (1, 0.5, -0.25)
    assert scalars(cm.coord_map(n.deconv.fn)) == (1, 2, 1.5)
    assert cm.coord_map(L.ReLU(n.conv).fn) == (None, 1, 0)
    with pytest.raises(UndefinedMapException, match="InnerProduct"):
        cm.coord_map(L.InnerProduct(n.conv, num_output=1).fn)


def test_conv_pool_deconv_is_identity_or_shift():
    # 3x3 conv, 2x pool, 2x deconv: the upsampled top lines up with the input exactly
    n = conv_pool_deconv()
    assert scalars(coord_map_from_to(n.deconv, n.data)) == (1, 1, 0)
    # 4x pool with 4x deconv: off by one
    n = conv_pool_deconv(pool=4, dstride=4)
    assert scalars(coord_map_from_to(n.deconv, n.data)) == (1, 1, -1)


def test_pass_through_layers_and_1x1_conv_keep_the_map():
    n = conv_pool_deconv()
    expected = scalars(coord_map_from_to(n.deconv, n.data))
    n.relu = L.ReLU(n.deconv)
    n.drop = L.Dropout(n.relu, in_place=True)
    n.conv1x1 = L.Convolution(n.drop, num_output=2, kernel_size=1, stride=1, pad=0)
    for top in (n.relu, n.drop, n.conv1x1):
        assert scalars(coord_map_from_to(top, n.data)) == expected


@pytest.mark.parametrize("pad", [1, 4])
def test_conv_padding_adds_and_deconv_padding_subtracts_offset(pad):
    n = conv_pool_deconv()
    _, scale, shift = scalars(coord_map_from_to(n.deconv, n.data))
    n = conv_pool_deconv(pad=pad)
    assert scalars(coord_map_from_to(n.deconv, n.data)) == (1, scale, shift - pad)
    n = conv_pool_deconv(dpad=pad)
    assert scalars(coord_map_from_to(n.deconv, n.data)) == (1, scale, shift + pad)
    n = conv_pool_deconv(pad=pad, dpad=pad)
    assert scalars(coord_map_from_to(n.deconv, n.data)) == (1, scale, shift)


def test_every_bottom_and_top_of_a_layer_maps_alike():
    n = conv_pool_deconv()
    n.conv_data, n.conv_aux = L.Convolution(n.data, n.aux, ntop=2, num_output=2, kernel_size=5, stride=2)
    assert scalars(coord_map_from_to(n.conv_data, n.data)) == scalars(coord_map_from_to(n.conv_aux, n.aux))
    # the two tops of one layer meet at its first bottom: identity between them
    assert scalars(coord_map_from_to(n.conv_data, n.conv_aux)) == (1, 1, 0)


def test_anisotropic_maps_are_their_isotropic_parts():
    maps = {}
    for name, geometry in {"3x3": dict(ks=3, stride=1, pad=0), "5x5": dict(ks=5, stride=2, pad=3),
                           "3x5": dict(ks=[3, 5], stride=[1, 2], pad=[0, 3])}.items():
        n = conv_pool_deconv(**geometry)
        maps[name] = coord_map_from_to(n.deconv, n.data)
    assert maps["3x3"][0] == maps["5x5"][0] == maps["3x5"][0] == 1
    np.testing.assert_array_equal(maps["3x5"][1], [maps["3x3"][1][0], maps["5x5"][1][0]])
    np.testing.assert_array_equal(maps["3x5"][2], [maps["3x3"][2][0], maps["5x5"][2][0]])


def test_kernel_h_w_and_nested_or_message_params_read_like_keywords():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 9, 9]))
    keywords = coord_map_from_to(L.Convolution(n.data, num_output=1, kernel_size=[3, 5], stride=[1, 2],
                                               pad=[0, 3]), n.data)
    hw = coord_map_from_to(L.Convolution(n.data, num_output=1, kernel_h=3, kernel_w=5, stride_h=1, stride_w=2,
                                         pad_h=0, pad_w=3), n.data)
    nested = coord_map_from_to(L.Convolution(n.data, convolution_param=dict(num_output=1, kernel_size=[3, 5],
                                                                            stride=[1, 2], pad=[0, 3])), n.data)
    message = caffe_pb2.ConvolutionParameter(num_output=1, kernel_size=[3, 5], stride=[1, 2], pad=[0, 3])
    as_message = coord_map_from_to(L.Convolution(n.data, convolution_param=message), n.data)
    for other in (hw, nested, as_message):
        assert other[0] == keywords[0]
        np.testing.assert_array_equal(other[1], keywords[1])
        np.testing.assert_array_equal(other[2], keywords[2])
    pooled = coord_map_from_to(L.Pooling(n.data, pooling_param=dict(kernel_size=2, stride=2)), n.data)
    assert scalars(pooled) == (1, 2, 0.5)


def test_dilation_widens_the_kernel():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 9, 9]))
    dilated = coord_map_from_to(L.Convolution(n.data, num_output=1, kernel_size=3, dilation=2), n.data)
    wide = coord_map_from_to(L.Convolution(n.data, num_output=1, kernel_size=5), n.data)
    assert scalars(dilated) == scalars(wide) == (1, 1, 2)


def test_nd_conv_maps_each_spatial_axis():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 8, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=[3, 3, 3], stride=[1, 1, 1], pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.deconv = L.Deconvolution(n.pool, num_output=2, kernel_size=4, stride=2)
    axis, scale, shift = coord_map_from_to(n.deconv, n.data)
    assert axis == 1
    np.testing.assert_array_equal(scale, [1, 1, 1])
    np.testing.assert_array_equal(shift, [0, -1, -2])


def test_crop_of_crop_adds_its_offset():
    n = conv_pool_deconv()
    _, scale, shift = scalars(coord_map_from_to(n.deconv, n.data))
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=3)
    assert scalars(coord_map_from_to(n.crop, n.data)) == (1, scale, shift + 3)
    # only the first bottom of a Crop carries coordinates; the reference does not
    n.other = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.crop2 = L.Crop(n.deconv, n.other, crop_param=dict(axis=2, offset=[1, 2]))
    with pytest.raises(UnconnectedTopsError):
        coord_map_from_to(n.crop2, n.other)
    np.testing.assert_array_equal(coord_map_from_to(n.crop2, n.data)[2], [shift + 1, shift + 2])


def test_compose_and_inverse():
    assert cm.compose((None, 1, 0), (2, 0.5, 3)) == (2, 0.5, 3)
    assert cm.compose((1, 2, 1), (None, 1, 0)) == (1, 2, 1)
    assert cm.compose((1, 2, 1), (1, 0.5, 3)) == (1, 1.0, 7)
    assert cm.inverse((1, 2, 4)) == (1, 0.5, -2)
    with pytest.raises(AxisMismatchException):
        cm.compose((1, 1, 0), (2, 1, 0))


def test_crop_builds_the_layer_and_the_net_has_the_input_s_size():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 10, 10]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=3, pad=6)      # 20x20; pixel i centred on input i - 5
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)  # 10x10; j centred on input 2j - 4.5
    n.up = L.Deconvolution(n.pool, num_output=2, kernel_size=4, stride=2)   # 22x22; k centred on input k - 6
    n.score = crop(n.up, n.data)
    assert n.score.fn.type_name == "Crop" and n.score.fn.inputs == (n.up, n.data)
    layer = n.to_proto().layer[-1]
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [6]
    net = caffe.Net(n.to_proto(), caffe.TEST)
    assert net.blobs["up"].data.shape == (1, 2, 22, 22)
    assert net.blobs["score"].data.shape == (1, 2, 10, 10)


def test_crop_offset_of_a_padded_conv():
    # 3x3 conv with pad 2: output pixel i is centred on input pixel i - 1, so the crop starts at 1
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 6, 6]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, pad=2)
    assert list(n.to_proto().layer[-1].convolution_param.pad) == [2]
    n.crop = crop(n.conv, n.data)
    assert list(n.to_proto().layer[-1].crop_param.offset) == [1]


def test_crop_of_pass_through_only_starts_at_the_first_spatial_axis():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 6, 6]))
    n.relu = L.ReLU(n.data)
    n.crop = crop(n.relu, n.data)
    layer = n.to_proto().layer[-1]
    assert layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [0]


def test_unconnected_tops_are_an_error():
    n = conv_pool_deconv()
    n.ip = L.InnerProduct(n.deconv, num_output=2)
    with pytest.raises(UnconnectedTopsError) as caught:
        coord_map_from_to(n.ip, n.data)
    assert isinstance(caught.value, RuntimeError) and isinstance(caught.value, MinicaffeError)
    with pytest.raises(RuntimeError):
        coord_map_from_to(n.deconv, n.aux)
    with pytest.raises(TypeError):
        coord_map_from_to(n.deconv.fn, n.data)


@pytest.mark.parametrize("net, problem", [
    (dict(pool=3, dstride=2), "scales"),       # 3x down, 2x up
    (dict(dpad=5), "padding"),                  # deconv output smaller than the input
    (dict(ks=2), "whole"),                      # an even kernel: a half-pixel shift
])
def test_impossible_crops_are_an_error(net, problem):
    n = conv_pool_deconv(**net)
    with pytest.raises(CropError, match=problem) as caught:
        crop(n.deconv, n.data)
    assert isinstance(caught.value, AssertionError)  # what pycaffe's asserts raised


def test_layers_without_a_defined_map():
    n = conv_pool_deconv()
    with pytest.raises(UndefinedMapException, match="global_pooling"):
        cm.coord_map(L.Pooling(n.conv, global_pooling=True).fn)
    with pytest.raises(MinicaffeError, match="kernel_size"):
        cm.coord_map(L.Convolution(n.conv, num_output=1).fn)


def test_caffe_coord_map_is_this_module():
    assert importlib.import_module("caffe.coord_map") is cm
