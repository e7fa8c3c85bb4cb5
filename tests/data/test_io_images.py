"""minicaffe.io as pycaffe's caffe.io: conversions round-trip, images load, the Transformer."""

import numpy as np
import pytest

from minicaffe import io
from minicaffe.errors import MinicaffeError

from .helpers import write_image


def test_datum_and_blobproto_round_trips():
    pixels = np.random.default_rng(0).integers(0, 256, (3, 2, 4), dtype=np.uint8)
    datum = io.array_to_datum(pixels, label=7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 2, 4, 7)
    assert datum.data == pixels.tobytes()
    back = io.datum_to_array(io.caffe_pb2.Datum.FromString(datum.SerializeToString()))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, pixels)
    values = np.linspace(-1, 1, 12, dtype=np.float32).reshape(1, 3, 2, 2)
    np.testing.assert_array_equal(io.datum_to_array(io.array_to_datum(values[0])), values[0])
    blob = io.array_to_blobproto(values)
    assert list(blob.shape.dim) == [1, 3, 2, 2]
    np.testing.assert_array_equal(io.blobproto_to_array(io.caffe_pb2.BlobProto.FromString(blob.SerializeToString())),
                                  values)
    arrays = [values, np.ones((2, 5), np.float32)]
    for original, parsed in zip(arrays, io.blobprotovector_str_to_arraylist(io.arraylist_to_blobprotovector_str(arrays))):
        np.testing.assert_array_equal(parsed, original)


def test_load_image_colour_and_grey(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [51, 102, 204]]], dtype=np.uint8)
    path = write_image(tmp_path / "c.png", rgb)
    colour = io.load_image(path)
    assert colour.dtype == np.float32 and colour.shape == (2, 2, 3)
    np.testing.assert_allclose(colour, rgb / 255.0, rtol=1e-6)        # RGB in [0, 1]
    grey = io.load_image(path, color=False)
    assert grey.shape == (2, 2, 1)
    np.testing.assert_allclose(grey[:, :, 0], (rgb / 255.0) @ [0.2125, 0.7154, 0.0721], rtol=1e-6)
    mono = write_image(tmp_path / "g.png", np.array([[0, 255]], dtype=np.uint8))
    np.testing.assert_allclose(io.load_image(mono), [[[0, 0, 0], [1, 1, 1]]])
    with pytest.raises(MinicaffeError, match="cannot read image"):
        io.load_image(tmp_path / "absent.png")


def test_resize_image():
    image = np.array([[[0.0], [1.0]]])
    np.testing.assert_allclose(io.resize_image(image, (1, 4))[0, :, 0], [0, 0.25, 0.75, 1])
    flat = io.resize_image(np.full((2, 2, 3), 0.5), (3, 5))
    assert flat.shape == (3, 5, 3) and flat.dtype == np.float32 and np.all(flat == 0.5)
    np.testing.assert_array_equal(io.resize_image(np.arange(4.0).reshape(1, 4, 1), (1, 2), interp_order=0)[0, :, 0],
                                  [1, 3])


def test_oversample_gives_corners_centre_and_mirrors():
    image = np.arange(4 * 4, dtype=np.float32).reshape(4, 4, 1)
    crops = io.oversample([image], (2, 2))
    assert crops.shape == (10, 2, 2, 1)
    np.testing.assert_array_equal(crops[0, :, :, 0], [[0, 1], [4, 5]])
    np.testing.assert_array_equal(crops[3, :, :, 0], [[10, 11], [14, 15]])
    np.testing.assert_array_equal(crops[4, :, :, 0], [[5, 6], [9, 10]])
    np.testing.assert_array_equal(crops[5], crops[0][:, ::-1])


def test_transformer_preprocess_and_deprocess():
    transformer = io.Transformer({"data": (1, 3, 2, 2)})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_channel_swap("data", (2, 1, 0))
    transformer.set_raw_scale("data", 255)
    transformer.set_mean("data", np.array([10.0, 20.0, 30.0]))
    transformer.set_input_scale("data", 0.5)
    image = np.random.default_rng(1).uniform(0, 1, (2, 2, 3)).astype(np.float32)
    kept = image.copy()
    out = transformer.preprocess("data", image)
    assert out.shape == (3, 2, 2) and out.dtype == np.float32
    for channel, (source, mean) in enumerate([(2, 10.0), (1, 20.0), (0, 30.0)]):
        np.testing.assert_allclose(out[channel], (image[:, :, source] * 255 - mean) * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(image, kept)                 # the caller's array is left alone
    np.testing.assert_allclose(transformer.deprocess("data", out[None]), image, rtol=1e-5, atol=1e-6)
    resized = transformer.preprocess("data", np.zeros((4, 6, 3), np.float32))
    assert resized.shape == (3, 2, 2)


def test_transformer_errors():
    transformer = io.Transformer({"data": (1, 3, 2, 2)})
    with pytest.raises(MinicaffeError, match="nope is not one of the net inputs"):
        transformer.set_raw_scale("nope", 1)
    with pytest.raises(ValueError, match="Transpose order needs to have the same number of dimensions"):
        transformer.set_transpose("data", (1, 0))
    with pytest.raises(ValueError, match="Channel swap needs"):
        transformer.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="Mean channels incompatible with input"):
        transformer.set_mean("data", np.zeros(2))
    with pytest.raises(ValueError, match="Mean shape incompatible with input shape"):
        transformer.set_mean("data", np.zeros((3, 4, 4)))
    transformer.set_mean("data", np.ones((3, 2, 2)))
    transformer.set_transpose("data", (2, 0, 1))
    np.testing.assert_array_equal(transformer.preprocess("data", np.ones((2, 2, 3), np.float32)), 0)
