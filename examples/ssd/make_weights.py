"""Write ssd_tiny.caffemodel and street.png, the weights and the image the SSD example runs on.

The weights are the net's own fillers drawn with a fixed seed (caffe.set_random_seed),
so they are random but the same everywhere; the confidence heads' spread makes
every class score above the threshold at some boxes, so the example has plenty
of detections to compare. The image is drawn here too (coloured rectangles on a
gradient, with noise), so nothing is downloaded. Run from anywhere:

    .venv/bin/python examples/ssd/make_weights.py
"""

import os

import numpy as np

import minicaffe

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.join(HERE, "ssd_tiny_deploy.prototxt")
WEIGHTS = os.path.join(HERE, "ssd_tiny.caffemodel")
IMAGE = os.path.join(HERE, "street.png")


def draw_image(height=96, width=96):
    """An RGB uint8 picture: a vertical gradient with three filled rectangles, and noise (flat
    regions would give neighbouring boxes exactly equal scores, and the order of equal scores
    is where detectors legitimately differ)."""
    rows = np.linspace(40, 200, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(rows, (height, width, 3)).copy()
    image[..., 2] = 255 - image[..., 2]
    for (top, left, bottom, right), colour in [((10, 8, 50, 40), (220, 40, 40)), ((30, 50, 90, 88), (30, 180, 60)),
                                               ((60, 12, 85, 45), (40, 60, 230))]:
        image[top:bottom, left:right] = colour
    image += np.random.default_rng(7).uniform(-25, 25, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def main():
    minicaffe.set_random_seed(20261207)
    net = minicaffe.Net(DEPLOY, minicaffe.TEST)
    net.save(WEIGHTS)
    from PIL import Image
    Image.fromarray(draw_image()).save(IMAGE)
    print(f"wrote {WEIGHTS} and {IMAGE}")


if __name__ == "__main__":
    main()
