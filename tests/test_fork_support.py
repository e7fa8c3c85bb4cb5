"""Caffe forks beyond the layers: their schema, errors that name the fork, --end, binary fork fields."""

import numpy as np
import pytest
from click.testing import CliRunner

import minicaffe
from minicaffe.cli import main
from minicaffe.errors import GraphError, MinicaffeError, PrototxtError
from minicaffe.proto import caffe_pb2
from minicaffe.proto.layer_blocks import blank_out, layer_blocks
from minicaffe.proto.text import parse_net, read_net, read_net_until

HEAD = '''name: "t"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" } } }
'''
# R-FCN's position-sensitive ROI pooling: a fork minicaffe names but does not implement.
PSROI = '''layer {
  name: "ps"   # a comment with a { brace
  type: "PSROIPooling"
  bottom: "conv" top: "ps"
  psroi_pooling_param { spatial_scale: 0.0625 output_dim: 21 group_size: 7 }
}
'''
TAIL = '''layer { name: "relu" type: "ReLU" bottom: "ps" top: "ps" }
layer { name: "loss" type: "MultiBoxLoss" bottom: "ps" bottom: "conv" top: "loss" }
'''


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_forks_fields_have_the_forks_numbers():
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    expected = {"annotated_data_param": 200, "multibox_loss_param": 201, "permute_param": 202,
                "prior_box_param": 203, "detection_output_param": 204, "detection_evaluate_param": 205,
                "norm_param": 206, "video_data_param": 207, "roi_pooling_param": 8266711,
                "smooth_l1_loss_param": 8266712, "bn_param": 45, "shuffle_channel_param": 164,
                "relu6_param": 100000,
                # BVLC's numbers win: input_param is 143, embed_param 137 (caffe.proto's header)
                "input_param": 143, "embed_param": 137, "interp_param": 5100, "upsample_param": 5101}
    assert {name: fields[name].number for name in expected} == expected


def test_an_ssd_deploy_fragment_parses_by_the_forks_field_names():
    net = parse_net('''
        layer { name: "n" type: "Normalize" bottom: "a" top: "n"
                norm_param { across_spatial: false scale_filler { type: "constant" value: 20 } channel_shared: false } }
        layer { name: "p" type: "PriorBox" bottom: "n" bottom: "data" top: "p"
                prior_box_param { min_size: 30 max_size: 60 aspect_ratio: 2 flip: true clip: false
                                  variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 8 offset: 0.5 } }
        layer { name: "d" type: "DetectionOutput" bottom: "l" bottom: "c" bottom: "p" top: "d"
                include { phase: TEST }
                detection_output_param { num_classes: 21 share_location: true background_label_id: 0
                  nms_param { nms_threshold: 0.45 top_k: 400 } code_type: CENTER_SIZE keep_top_k: 200
                  confidence_threshold: 0.01 } }
        ''')
    assert net.layer[0].norm_param.scale_filler.value == 20
    assert list(net.layer[1].prior_box_param.variance) == pytest.approx([0.1, 0.1, 0.2, 0.2])
    assert net.layer[2].detection_output_param.code_type == caffe_pb2.PriorBoxParameter.CENTER_SIZE
    # and binary round trip at the fork's numbers
    assert caffe_pb2.NetParameter.FromString(net.SerializeToString()) == net


def test_an_unknown_fork_field_names_the_layer_its_type_and_the_fork(tmp_path):
    path = write(tmp_path, HEAD + PSROI + TAIL)
    with pytest.raises(PrototxtError) as info:
        read_net(path)
    message = str(info.value)
    assert message.startswith(f"{path}:9:3: ")
    assert 'layer "ps" (type "PSROIPooling")' in message
    assert 'field "psroi_pooling_param"' in message and "R-FCN" in message
    assert "--end LAYER" in message and "plugin" in message
    assert "Did you mean" not in message


def test_an_unknown_field_of_an_unknown_fork_says_so_and_a_typo_still_gets_its_suggestion():
    with pytest.raises(PrototxtError) as info:
        parse_net('layer { name: "x" type: "Whatever" whatever_param { a: 1 } }')
    assert "a Caffe fork minicaffe does not know" in str(info.value)
    assert 'layer "x" (type "Whatever")' in str(info.value)
    with pytest.raises(PrototxtError) as info:
        parse_net('layer { name: "c" type: "Convolution" convolution_parm { num_output: 1 } }')
    assert 'Did you mean "convolution_param"?' in str(info.value)
    with pytest.raises(PrototxtError) as info:
        parse_net('layer { name: "c" type: "Convolution" convolution_param { num_outptu: 1 } }')
    assert 'layer "c" (type "Convolution")' in str(info.value) and '"num_output"' in str(info.value)


def test_an_unknown_fork_type_names_the_fork():
    net = parse_net(HEAD + 'layer { name: "ann" type: "AnnotatedData" top: "x" }')
    with pytest.raises(GraphError) as info:
        minicaffe.Net(net, minicaffe.TEST)
    assert "'ann'" in str(info.value) and "SSD" in str(info.value) and "--end" in str(info.value)


def test_end_leaves_out_the_layers_after_it_unparsed_and_says_what_it_skipped(tmp_path):
    path = write(tmp_path, HEAD + PSROI + TAIL)
    net_param, notes = read_net_until(path, "conv")
    assert [layer.name for layer in net_param.layer] == ["data", "conv"]
    assert notes[0].startswith("--end conv: 3 layers after it left out")
    assert any("'ps'" in note and "psroi_pooling_param" in note for note in notes)
    assert any("'loss'" in note and "MultiBoxLoss" in note and "SSD" in note for note in notes)
    assert not any("'relu'" in note and "unknown" in note for note in notes)
    net = minicaffe.Net(path, minicaffe.TEST, end="conv")
    assert list(net.outputs) == ["conv"] and net.notes == notes
    assert net.forward()["conv"].shape == (1, 3, 3, 3)


def test_end_before_a_bad_layer_still_reports_errors_before_it(tmp_path):
    path = write(tmp_path, HEAD.replace("kernel_size: 3", "kernel_size: 3 bogus: 1") + PSROI)
    with pytest.raises(PrototxtError) as info:
        read_net_until(path, "conv")
    assert ":4:" in str(info.value) and '"bogus"' in str(info.value)


def test_end_names_a_layer_that_exists(tmp_path):
    path = write(tmp_path, HEAD + PSROI)
    with pytest.raises(GraphError) as info:
        read_net_until(path, "nope")
    assert "'nope'" in str(info.value) and "'conv'" in str(info.value)
    with pytest.raises(GraphError):
        minicaffe.Net(parse_net(HEAD), minicaffe.TEST, end="nope")


def test_end_on_a_net_parameter_drops_the_later_layers():
    net = minicaffe.Net(parse_net(HEAD + 'layer { name: "r" type: "ReLU" bottom: "conv" top: "r" }'),
                        minicaffe.TEST, end="conv")
    assert [layer.name for layer in net.plan.layers] == ["data", "conv"] and net.notes


def test_check_and_forward_take_end(tmp_path):
    path = write(tmp_path, HEAD + PSROI + TAIL)
    failed = CliRunner().invoke(main, ["check", path])
    assert failed.exit_code == 1 and "PSROIPooling" in failed.output and "Traceback" not in failed.output
    checked = CliRunner().invoke(main, ["check", path, "--end", "conv"])
    assert checked.exit_code == 0, checked.output
    assert "outputs: conv (1x3x3x3)" in checked.output and "note: skipped layer 'ps'" in checked.output
    ran = CliRunner().invoke(main, ["forward", path, "--end", "conv"])
    assert ran.exit_code == 0, ran.output
    assert ran.stdout.startswith("note: --end conv") and "conv: shape 1x3x3x3" in ran.stdout
    assert "no --weights" in ran.stderr              # a net with parameters run on its fillers


def test_layer_blocks_skip_comments_and_strings_and_know_v1_layers():
    text = ('name: "x # not a comment {"\n# layer { name: "commented" }\n'
            'layer { name: "a}" type: \'T{\' }\nlayers < name: "b" type: RELU >\nlayer: { name: "c" }\n')
    blocks = layer_blocks(text)
    assert [(block.keyword, text[block.start:block.end].split("name: ")[1][:4]) for block in blocks] == \
        [("layer", '"a}"'), ("layers", '"b" '), ("layer", '"c" ')]
    blanked = blank_out(text, blocks[1].start, blocks[1].end)
    assert blanked.count("\n") == text.count("\n") and "layers" not in blanked


def test_interp_and_upsample_written_under_bvlc_numbers_read_back():
    from google.protobuf.internal import encoder

    def with_field(layer, number, payload):
        return layer.SerializeToString() + encoder.TagBytes(number, 2) + encoder._VarintBytes(len(payload)) + payload

    interp = caffe_pb2.InterpParameter(height=9, width=7, pad_beg=-1).SerializeToString()
    upsample = caffe_pb2.UpsampleParameter(scale=2, upsample_h=11).SerializeToString()
    layers = [with_field(caffe_pb2.LayerParameter(name="i", type="Interp"), 143, interp),
              with_field(caffe_pb2.LayerParameter(name="u", type="Upsample"), 137, upsample)]
    raw = b"".join(encoder.TagBytes(100, 2) + encoder._VarintBytes(len(layer)) + layer for layer in layers)
    net = caffe_pb2.NetParameter.FromString(raw)
    from minicaffe.proto.upgrade import upgrade_net
    notes = upgrade_net(net)
    assert any("interp_param" in note for note in notes)
    assert (net.layer[0].interp_param.height, net.layer[0].interp_param.pad_beg) == (9, -1)
    assert not net.layer[0].HasField("input_param")
    assert net.layer[1].upsample_param.upsample_h == 11 and not net.layer[1].HasField("embed_param")


def test_ssd_augmentation_and_solver_fields_are_refused_not_ignored(tmp_path):
    from minicaffe.data.transform import DataTransformer
    param = caffe_pb2.TransformationParameter(mirror=True)
    param.distort_param.brightness_prob = 0.5
    with pytest.raises(MinicaffeError) as info:
        DataTransformer(param)
    assert "distort_param" in str(info.value) and "SSD" in str(info.value)
    net = write(tmp_path, HEAD)
    solver = write(tmp_path, f'net: "{net}"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n'
                             'eval_type: "detection"\nap_version: "11point"\n', "solver.prototxt")
    with pytest.raises(MinicaffeError) as info:
        minicaffe.SGDSolver(solver)
    assert "eval_type" in str(info.value) and "SSD" in str(info.value)
