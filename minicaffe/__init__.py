"""minicaffe: a Caffe-compatible deep-learning executor.

The surface follows pycaffe, so ``import minicaffe as caffe`` runs pycaffe code:
``Net``, ``TRAIN``/``TEST``, ``Layer`` (for Python layers), ``set_mode_cpu``,
``set_mode_gpu``, ``set_device``, ``set_random_seed``, ``io`` (pycaffe's
``caffe.io`` helpers), ``proto.caffe_pb2``, and pycaffe's net-writing API
``NetSpec``, ``layers`` (``L``), ``params`` (``P``) and ``to_proto``. Beyond pycaffe: ``read_net``,
``plan_net`` (the graph plan) and ``minicaffe.testing`` (gradient checks).
"""

from . import errors, io
from .blob import Blob
from .fillers import set_random_seed
from .graph import TEST, TRAIN, NetPlan, plan_net
from .layer import Layer
from .mode import set_device, set_mode_cpu, set_mode_gpu
from .net import Net
from .net_spec import NetSpec, to_proto
from . import params
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver, Solver,
                      get_solver)
from .proto import caffe_pb2
from .proto.text import parse_net, parse_solver, read_net, read_solver
from .registry import known_types as layer_type_list  # pycaffe's caffe.layer_type_list()

__version__ = "0.1.0"


def __getattr__(name):
    # ``minicaffe.layers`` (the layer implementations, and pycaffe's ``caffe.layers``
    # NetSpec factory) is imported on first use: importing every layer module is slow.
    if name == "layers":
        import importlib
        return importlib.import_module(".layers", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TRAIN", "TEST", "Blob", "Layer", "Net", "NetPlan", "caffe_pb2", "errors", "io", "set_random_seed",
    "parse_net", "parse_solver", "plan_net", "read_net", "read_solver",
    "set_device", "set_mode_cpu", "set_mode_gpu",
    "Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver",
    "get_solver", "layer_type_list", "NetSpec", "to_proto", "layers", "params",
]
