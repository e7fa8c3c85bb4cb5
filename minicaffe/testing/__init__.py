"""Testing tools for layer writers: a finite-difference gradient checker.

``GradientChecker`` (in the spirit of Caffe's) checks a single layer or a whole
net; it works on any minicaffe layer, Python layers included.
"""

from .gradient_check import GradientChecker, GradientMismatch, check_layer_gradient, check_net_gradient
from .layers import empty_blobs, layer_from_text, make_blobs, run_layer

__all__ = ["GradientChecker", "GradientMismatch", "check_layer_gradient", "check_net_gradient",
           "empty_blobs", "layer_from_text", "make_blobs", "run_layer"]
