"""caffe.proto and its generated module: fresh, and numbered as BVLC Caffe's."""

import hashlib
import os

from minicaffe.proto import caffe_pb2

from tests.conftest import ROOT


def test_generated_module_matches_caffe_proto():
    """Fails when caffe.proto changed without `make proto`."""
    with open(os.path.join(ROOT, "caffe.proto"), "rb") as handle:
        current = hashlib.sha256(handle.read()).hexdigest()
    with open(os.path.join(ROOT, "minicaffe", "proto", "caffe_proto.sha256")) as handle:
        recorded = handle.read().strip()
    assert current == recorded, "caffe.proto changed: run `make proto` and commit the result"


def field_numbers(message):
    return {field.name: field.number for field in message.DESCRIPTOR.fields}


def test_bvlc_field_numbers():
    # A sample of BVLC Caffe's numbers that real .caffemodel files depend on.
    assert field_numbers(caffe_pb2.NetParameter)["layer"] == 100
    assert field_numbers(caffe_pb2.NetParameter)["layers"] == 2
    blob = field_numbers(caffe_pb2.BlobProto)
    assert (blob["num"], blob["data"], blob["shape"], blob["double_data"]) == (1, 5, 7, 8)
    layer = field_numbers(caffe_pb2.LayerParameter)
    assert (layer["loss_weight"], layer["param"], layer["blobs"], layer["propagate_down"]) == (5, 6, 7, 11)
    assert (layer["convolution_param"], layer["input_param"], layer["clip_param"]) == (106, 143, 148)
    assert field_numbers(caffe_pb2.V1LayerParameter)["blobs_lr"] == 7
    assert field_numbers(caffe_pb2.SolverParameter)["type"] == 40
    assert field_numbers(caffe_pb2.SolverState)["history"] == 3


def test_bvlc_defaults():
    assert caffe_pb2.SoftmaxParameter().axis == 1
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    assert caffe_pb2.ConvolutionParameter().bias_term is True
    assert caffe_pb2.FillerParameter().type == "constant"
    assert caffe_pb2.FillerParameter().std == 1.0
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    assert caffe_pb2.SolverParameter().type == "SGD"
    assert caffe_pb2.ParamSpec().lr_mult == 1.0


def test_minicaffe_additions_stay_above_5000():
    """BVLC's numbers are small; ours start at 5000 so they never collide with it or its forks."""
    def walk(descriptor):
        yield descriptor
        for nested in descriptor.nested_types:
            yield from walk(nested)

    for message in caffe_pb2.DESCRIPTOR.message_types_by_name.values():
        for descriptor in walk(message):
            for field in descriptor.fields:
                # V1LayerParameter's param (1001) and blob_share_mode (1002) are BVLC's own.
                assert field.number < 1100 or field.number >= 5000, (descriptor.full_name, field.name)
    assert field_numbers(caffe_pb2.HingeLossParameter)["margin"] == 5000
    assert caffe_pb2.HingeLossParameter().margin == 1.0
