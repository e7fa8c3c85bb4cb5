"""minicaffe: a Caffe-compatible deep-learning executor.

The surface follows pycaffe (``import minicaffe as caffe``); what exists so far:
reading nets and solvers (``minicaffe.proto.text``), Caffe's binary files
(``minicaffe.io``, pycaffe's ``caffe.io`` helpers), and the graph plan
(``minicaffe.graph``). The runtime (Net, layers, solvers) builds on these.
"""

from . import errors, io
from .blob import Blob
from .fillers import set_random_seed
from .graph import TEST, TRAIN, NetPlan, plan_net
from .layer import Layer
from .net import Net
from .proto import caffe_pb2
from .proto.text import parse_net, parse_solver, read_net, read_solver

__version__ = "0.1.0"

__all__ = [
    "TRAIN", "TEST", "Blob", "Layer", "Net", "NetPlan", "caffe_pb2", "errors", "io", "set_random_seed",
    "parse_net", "parse_solver", "plan_net", "read_net", "read_solver",
]
