"""ImageData: list files of images, root_folder, resize, colour/grey, shuffle, transforms, errors."""

import numpy as np
import pytest

import minicaffe
from minicaffe.data import images
from minicaffe.data.common import DataError
from minicaffe.errors import MinicaffeError

from .helpers import bytes_pixels, caffe_transform, data_net, rgb_to_bgr_chw, write_image, write_text

PIXELS = [bytes_pixels((4, 4, 3), 20 + i) for i in range(5)]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    (root / "sub dir").mkdir(parents=True)
    lines = []
    for i, pixels in enumerate(PIXELS):
        name = f"sub dir/im {i}.png"        # spaces: the label is what follows the last one
        write_image(root / name, pixels)
        lines.append(f"{name} {i + 1}")
    write_text(tmp_path / "list.txt", "\n".join(lines) + "\n\n")
    return tmp_path


def image_net(tmp_path, batch=2, extra="", transform="", root=None):
    root = f'root_folder: "{root if root is not None else str(tmp_path / "images") + "/"}"'
    return data_net(tmp_path, tmp_path / "list.txt", f"batch_size: {batch} {root} {extra}", transform,
                    layer_type="ImageData", param_name="image_data_param")


def test_images_in_list_order_bgr_with_labels_wrapping(folder):
    net = minicaffe.Net(image_net(folder, batch=3), minicaffe.TEST)
    assert net.blobs["data"].shape == (3, 3, 4, 4)
    labels = []
    for _ in range(2):
        out = net.forward()
        for item, label in zip(out["data"], out["label"]):
            np.testing.assert_array_equal(item, rgb_to_bgr_chw(PIXELS[int(label) - 1]))
            labels.append(int(label))
    assert labels == [1, 2, 3, 4, 5, 1]


def test_grey_resize_and_transform(folder):
    net = minicaffe.Net(image_net(folder, batch=1, extra="is_color: false new_height: 2 new_width: 2",
                                  transform="scale: 0.5 mean_value: 10"), minicaffe.TEST)
    assert net.blobs["data"].shape == (1, 1, 2, 2)
    r, g, b = (PIXELS[0][:, :, i].astype(np.int64) for i in range(3))
    grey = ((9797 * r + 19234 * g + 3737 * b) >> 15)
    # OpenCV's 2x INTER_LINEAR shrink is the rounded average of each 2 x 2 block.
    shrunk = (grey[0::2, 0::2] + grey[0::2, 1::2] + grey[1::2, 0::2] + grey[1::2, 1::2] + 2) >> 2
    np.testing.assert_array_equal(net.forward()["data"][0],
                                  caffe_transform(shrunk[None].astype(np.uint8), mean_values=[10], scale=0.5))


def test_opencv_linear_resize_values():
    row = np.array([[[0, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(images.resize(row, 1, 4), [[[0, 64, 191, 255]]])
    column = np.array([[[0], [100]]], dtype=np.uint8)
    np.testing.assert_array_equal(images.resize(column, 4, 1)[0, :, 0], [0, 25, 75, 100])
    block = np.array([[[10, 20], [30, 41]]], dtype=np.uint8)
    np.testing.assert_array_equal(images.resize(block, 1, 1), [[[25]]])


def test_shuffle_gives_each_image_once_per_pass_and_restores(folder):
    minicaffe.set_random_seed(1)
    net = minicaffe.Net(image_net(folder, batch=5, extra="shuffle: true"), minicaffe.TRAIN)
    passes = [tuple(int(v) for v in net.forward()["label"]) for _ in range(3)]
    assert all(sorted(order) == [1, 2, 3, 4, 5] for order in passes)
    assert len(set(passes)) > 1                         # reshuffled at each pass
    layer = net.layers[0]
    saved = layer.state()
    assert saved["epoch"] == 3 and saved["position"] == 0
    following = [net.forward()["label"].copy() for _ in range(2)]
    minicaffe.set_random_seed(99)
    other = minicaffe.Net(image_net(folder, batch=5, extra="shuffle: true"), minicaffe.TRAIN)
    other.layers[0].restore(saved)
    for labels in following:
        np.testing.assert_array_equal(other.forward()["label"], labels)


def test_crop_and_mirror_in_train(folder):
    minicaffe.set_random_seed(5)
    net = minicaffe.Net(image_net(folder, batch=5, transform="crop_size: 3 mirror: true"), minicaffe.TRAIN)
    out = net.forward()["data"]
    for n in range(5):
        values = rgb_to_bgr_chw(PIXELS[n])
        options = [caffe_transform(values, crop=3, h_off=h, w_off=w, mirror=m)
                   for h in range(2) for w in range(2) for m in (False, True)]
        assert sum(np.array_equal(out[n], option) for option in options) == 1


def test_missing_list_and_missing_image(folder, tmp_path):
    with pytest.raises(DataError, match=r"layer 'data': image list '.*absent.txt' \(image_data_param.source\) "
                                        "does not exist"):
        minicaffe.Net(data_net(tmp_path, tmp_path / "absent.txt", "batch_size: 1", layer_type="ImageData",
                               param_name="image_data_param", name="a.prototxt"), minicaffe.TEST)
    with pytest.raises(DataError, match=r"layer 'data': image '/elsewhere/sub dir/im 0.png'"):
        minicaffe.Net(image_net(folder, root="/elsewhere/"), minicaffe.TEST)
    (folder / "images" / "sub dir" / "im 1.png").unlink()
    net = minicaffe.Net(image_net(folder, batch=2), minicaffe.TEST)
    with pytest.raises(DataError, match=r"image '.*im 1.png' \(from .*list.txt\) does not exist"):
        net.forward()


def test_list_file_errors(folder, tmp_path):
    write_text(tmp_path / "list.txt", "just-a-name\n")
    with pytest.raises(DataError, match=r"list.txt:1: expected 'path label'"):
        minicaffe.Net(image_net(folder), minicaffe.TEST)
    write_text(tmp_path / "list.txt", "\n")
    with pytest.raises(DataError, match="is empty"):
        minicaffe.Net(image_net(folder), minicaffe.TEST)
    with pytest.raises(MinicaffeError, match="set new_height and new_width together"):
        minicaffe.Net(image_net(folder, extra="new_height: 3"), minicaffe.TEST)


def test_undecodable_image_names_its_path(folder):
    (folder / "images" / "sub dir" / "im 2.png").write_bytes(b"not an image at all")
    net = minicaffe.Net(image_net(folder, batch=3), minicaffe.TEST)
    with pytest.raises(DataError, match=r"image '.*im 2.png' \(from .*\) is not a readable image"):
        net.forward()
