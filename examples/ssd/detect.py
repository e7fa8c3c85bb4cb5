"""Detect objects in an image with the small SSD example, the way SSD's own Python demos do.

    .venv/bin/python examples/ssd/detect.py [IMAGE] [--opencv]

Loads ssd_tiny_deploy.prototxt with ssd_tiny.caffemodel through pycaffe's API
(`import caffe` is minicaffe), preprocesses the image as MobileNet-SSD does
(BGR, minus 127.5, times 0.007843, 96 x 96), runs Forward and prints one line
per detection: label, score and the box in pixels. With --opencv, OpenCV's dnn
module (`pip install 'opencv-python-headless<5'`) runs the same files on the
same input and the two lists are compared.
"""

import argparse
import os

import numpy as np

import caffe

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.join(HERE, "ssd_tiny_deploy.prototxt")
WEIGHTS = os.path.join(HERE, "ssd_tiny.caffemodel")
IMAGE = os.path.join(HERE, "street.png")
LABELS = ["background", "red thing", "green thing", "blue thing"]


def preprocess(net, image_path):
    """The image as the net's input blob (1 x 3 x H x W)."""
    transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))       # H x W x C -> C x H x W
    transformer.set_channel_swap("data", (2, 1, 0))    # RGB -> BGR, as Caffe's images are
    transformer.set_raw_scale("data", 255)             # load_image gives [0, 1]
    transformer.set_mean("data", np.array([127.5, 127.5, 127.5]))
    transformer.set_input_scale("data", 0.007843)
    image = caffe.io.load_image(image_path)
    return transformer.preprocess("data", image)[None]


def detect(image_path=IMAGE):
    """(rows, input blob): rows are SSD's [image, label, score, xmin, ymin, xmax, ymax], boxes in [0, 1]."""
    net = caffe.Net(DEPLOY, WEIGHTS, caffe.TEST)
    blob = preprocess(net, image_path)
    net.blobs["data"].data[...] = blob
    rows = net.forward()["detection_out"][0, 0]
    return rows[rows[:, 1] >= 0].copy(), blob


def detect_with_opencv(blob):
    """The same net and weights in OpenCV's dnn, on the same input blob: its rows with a score."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(DEPLOY, WEIGHTS)
    net.setInput(blob.astype(np.float32))
    rows = net.forward()[0, 0]
    return rows[rows[:, 2] > 0]           # OpenCV pads its output with zero rows


def in_fork_order(rows):
    """Rows by image, then label, then falling score: the SSD fork's order (OpenCV sorts by score)."""
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", default=IMAGE)
    parser.add_argument("--opencv", action="store_true", help="also run OpenCV dnn and compare")
    args = parser.parse_args()
    rows, blob = detect(args.image)
    height, width = blob.shape[2:]
    for _, label, score, xmin, ymin, xmax, ymax in rows:
        print(f"{LABELS[int(label)]:<12} {score:.3f}  box ({xmin * width:6.1f}, {ymin * height:6.1f}) - "
              f"({xmax * width:6.1f}, {ymax * height:6.1f})")
    print(f"{len(rows)} detections over {len(set(rows[:, 1].astype(int)))} classes")
    if args.opencv:
        theirs = detect_with_opencv(blob)
        same = len(theirs) == len(rows) and np.allclose(in_fork_order(rows), in_fork_order(theirs), atol=1e-4)
        print(f"OpenCV dnn: {len(theirs)} detections, {'the same' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
