"""minicaffe: a Caffe-compatible deep-learning executor.

The surface follows pycaffe (``import minicaffe as caffe``); what exists so far:
reading nets and solvers (``minicaffe.proto.text``), Caffe's binary files
(``minicaffe.io``, pycaffe's ``caffe.io`` helpers), and the graph plan
(``minicaffe.graph``). The runtime (Net, layers, solvers) builds on these.
"""

from . import errors, io
from .graph import TEST, TRAIN, NetPlan, plan_net
from .proto import caffe_pb2
from .proto.text import parse_net, parse_solver, read_net, read_solver

__version__ = "0.1.0"

__all__ = [
    "TRAIN", "TEST", "NetPlan", "caffe_pb2", "errors", "io",
    "parse_net", "parse_solver", "plan_net", "read_net", "read_solver",
]
