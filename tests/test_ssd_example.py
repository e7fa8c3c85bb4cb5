"""examples/ssd: a complete SSD-style detector, from its prototxt, against OpenCV dnn on the same weights and image."""

import importlib.util
import os

import numpy as np
from click.testing import CliRunner

from minicaffe.cli import main
from tests.conftest import EXAMPLES

SSD = os.path.join(EXAMPLES, "ssd")


def _example():
    spec = importlib.util.spec_from_file_location("ssd_detect", os.path.join(SSD, "detect.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_detections_are_opencvs(tmp_path):
    example = _example()
    ours, blob = example.detect()
    theirs = example.detect_with_opencv(blob)
    # weights and image are chosen so that both find plenty, of several classes
    assert len(ours) >= 10 and len(theirs) >= 10
    assert len(set(ours[:, 1].astype(int))) >= 3
    assert len(ours) == len(theirs)
    np.testing.assert_allclose(example.in_fork_order(ours), example.in_fork_order(theirs), atol=1e-4)
    # the fork's own order: by image, then label, then falling score
    np.testing.assert_array_equal(ours, example.in_fork_order(ours))
    # boxes are decoded from the priors: inside a small margin of the image, and not degenerate
    assert np.all(ours[:, 5] > ours[:, 3]) and np.all(ours[:, 6] > ours[:, 4])
    assert ours[:, 3:].min() > -0.5 and ours[:, 3:].max() < 1.5


def test_minicaffe_forward_runs_the_detector_end_to_end():
    result = CliRunner().invoke(main, ["forward", os.path.join(SSD, "ssd_tiny_deploy.prototxt"),
                                       "--weights", os.path.join(SSD, "ssd_tiny.caffemodel")])
    assert result.exit_code == 0, result.output
    assert "detection_out: shape 1x1x" in result.output and "x7," in result.output
