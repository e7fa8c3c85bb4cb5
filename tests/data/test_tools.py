"""convert-imageset and compute-mean through the CLI, read back by a net; check without a source."""

import re

import numpy as np
from click.testing import CliRunner

import minicaffe
from minicaffe.cli import main
from minicaffe.proto import caffe_pb2

from .helpers import bytes_pixels, caffe_transform, data_net, read_lmdb, rgb_to_bgr_chw, write_image, write_text

PICTURES = [bytes_pixels((5, 5, 3), 40 + i) for i in range(4)]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def image_folder(tmp_path):
    root = tmp_path / "pictures"
    root.mkdir()
    for i, pixels in enumerate(PICTURES):
        write_image(root / f"p{i}.png", pixels)
    write_text(tmp_path / "list.txt", "".join(f"p{i}.png {i * 2}\n" for i in range(4)) + "missing.png 9\n")
    return f"{root}/"


def test_convert_compute_mean_and_train_on_it(tmp_path):
    root = image_folder(tmp_path)
    converted = run("convert-imageset", root, tmp_path / "list.txt", tmp_path / "db")
    assert converted.exit_code == 0, converted.output
    assert "wrote 4 records" in converted.output
    assert re.search(r"warning: skipped 1 of the 5 images, which could not be read; the first: "
                     r"image '.*missing.png' does not exist", converted.output)
    records = read_lmdb(tmp_path / "db")
    assert [key for key, _ in records] == [f"{i:08d}_p{i}.png".encode() for i in range(4)]
    first = caffe_pb2.Datum.FromString(records[0][1])
    assert (first.channels, first.height, first.width, first.label, first.encoded) == (3, 5, 5, 0, False)
    assert first.data == rgb_to_bgr_chw(PICTURES[0]).tobytes()

    computed = run("compute-mean", tmp_path / "db", tmp_path / "mean.binaryproto")
    assert computed.exit_code == 0, computed.output
    bgr = np.stack([rgb_to_bgr_chw(p) for p in PICTURES]).astype(np.float64)
    expected_mean = (bgr.sum(axis=0).astype(np.float32) / np.float32(4))
    blob = caffe_pb2.BlobProto.FromString((tmp_path / "mean.binaryproto").read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 5, 5)        # Caffe's legacy fields
    np.testing.assert_array_equal(np.array(blob.data, dtype=np.float32).reshape(3, 5, 5), expected_mean)
    for channel in range(3):
        assert f"mean_value channel [{channel}]: {expected_mean[channel].mean(dtype=np.float64):g}" in computed.output

    net = minicaffe.Net(data_net(tmp_path, tmp_path / "db", "batch_size: 4 backend: LMDB",
                                 f'crop_size: 3 scale: 0.25 mean_file: "{tmp_path / "mean.binaryproto"}"'),
                        minicaffe.TEST)
    out = net.forward()
    np.testing.assert_array_equal(out["label"], [0, 2, 4, 6])
    for n in range(4):   # TEST crop: centred, (5 - 3) // 2 = 1
        np.testing.assert_array_equal(out["data"][n], caffe_transform(
            rgb_to_bgr_chw(PICTURES[n]), mean_image=expected_mean, scale=0.25, crop=3, h_off=1, w_off=1))


def test_convert_encoded_gray_resized_and_shuffled(tmp_path):
    root = image_folder(tmp_path)
    result = run("convert-imageset", root, tmp_path / "list.txt", tmp_path / "enc", "--encoded", "--shuffle")
    assert result.exit_code == 0, result.output
    records = read_lmdb(tmp_path / "enc")
    names = sorted(key.decode().split("_", 1)[1] for key, _ in records)
    assert names == [f"p{i}.png" for i in range(4)]
    for key, value in records:
        datum = caffe_pb2.Datum.FromString(value)
        index = int(key.decode().split("_p")[1][0])
        assert datum.encoded and datum.data == (tmp_path / "pictures" / f"p{index}.png").read_bytes()
    result = run("convert-imageset", root, tmp_path / "list.txt", tmp_path / "small", "--gray",
                 "--resize-height", 2, "--resize-width", 3, "--check-size")
    assert result.exit_code == 0, result.output
    datum = caffe_pb2.Datum.FromString(read_lmdb(tmp_path / "small")[0][1])
    assert (datum.channels, datum.height, datum.width) == (1, 2, 3)
    again = run("convert-imageset", root, tmp_path / "list.txt", tmp_path / "small")
    assert again.exit_code == 1 and "already exists" in again.output


def test_compute_mean_of_an_encoded_database_and_errors(tmp_path):
    root = image_folder(tmp_path)
    run("convert-imageset", root, tmp_path / "list.txt", tmp_path / "enc", "--encoded")
    result = run("compute-mean", tmp_path / "enc", tmp_path / "mean.binaryproto")
    assert result.exit_code == 0, result.output
    bgr = np.stack([rgb_to_bgr_chw(p) for p in PICTURES]).astype(np.float64)
    np.testing.assert_array_equal(minicaffe.io.read_binaryproto(tmp_path / "mean.binaryproto")[0],
                                  bgr.sum(axis=0).astype(np.float32) / np.float32(4))
    missing = run("compute-mean", tmp_path / "nothing", tmp_path / "m.binaryproto")
    assert missing.exit_code == 1 and re.search(r"error: database '.*nothing' does not exist", missing.output)


def test_check_without_the_source_prints_unknown_shapes(tmp_path):
    path = write_text(tmp_path / "net.prototxt", f'''
layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{tmp_path / 'absent_lmdb'}" batch_size: 8 backend: LMDB }}
  transform_param {{ crop_size: 3 mean_file: "{tmp_path / 'absent.binaryproto'}" }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
''')
    result = run("check", path)
    assert result.exit_code == 0, result.output
    assert re.search(r"data\s+Data\s+-> data \?, label \?", result.output)
    assert re.search(r"ip\s+InnerProduct\s+data -> ip \?", result.output)
    assert len(re.findall(r"does not exist", result.output)) == 1
    assert re.search(r"note: shapes from layer 'data' on are unknown \(\?\): source '.*absent_lmdb' "
                     r"\(data_param.source\) does not exist", result.output)
    assert result.output.rstrip().endswith("OK")


def test_check_reads_shapes_from_the_first_record(tmp_path):
    root = image_folder(tmp_path)
    run("convert-imageset", root, tmp_path / "list.txt", tmp_path / "db")
    path = data_net(tmp_path, tmp_path / "db", "batch_size: 8 backend: LMDB", "crop_size: 3")
    result = run("check", path, "--phase", "TEST")
    assert result.exit_code == 0, result.output
    assert re.search(r"data\s+Data\s+-> data \(8x3x3x3\), label \(8\)", result.output)
    hdf5 = write_text(tmp_path / "h.prototxt", f'layer {{ name: "h" type: "HDF5Data" top: "x" '
                      f'hdf5_data_param {{ source: "{tmp_path / "nolist.txt"}" batch_size: 2 }} }}\n')
    result = run("check", hdf5)
    assert result.exit_code == 0 and re.search(r"h\s+HDF5Data\s+-> x \?", result.output)
