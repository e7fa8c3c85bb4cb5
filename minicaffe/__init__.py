"""minicaffe: a Caffe-compatible deep-learning executor.

The surface follows pycaffe, and the ``caffe`` package installed with
minicaffe is this very module, so pycaffe code (``import caffe``) runs
unchanged: ``Net``, ``TRAIN``/``TEST``, ``Layer`` (for Python layers),
``set_mode_cpu``, ``set_mode_gpu``, ``set_device``, ``set_random_seed``,
``has_nccl``, ``solver_count``/``solver_rank`` and their setters, ``io``
(pycaffe's ``caffe.io``), ``proto.caffe_pb2``, pycaffe's net-writing API
``NetSpec``, ``layers`` (``L``), ``params`` (``P``) and ``to_proto``,
``draw``, ``coord_map``, ``Classifier``, ``Detector``, the solvers, and
``init_log``/``log``. Beyond pycaffe: ``read_net``, ``plan_net`` (the graph
plan), ``set_num_threads``/``get_num_threads`` (the thread budget, see
:mod:`minicaffe.threads`) and ``minicaffe.testing`` (gradient checks).
"""

from . import errors, io
from .blob import Blob
from .fillers import set_random_seed
from .graph import TEST, TRAIN, NetPlan, plan_net
from .layer import Layer
from .logs import init_log, log, set_progress
from .mode import (has_nccl, set_device, set_mode_cpu, set_mode_gpu, set_multiprocess, set_solver_count,
                   set_solver_rank, solver_count, solver_rank)
from .net import Net
from .net_spec import NetSpec, to_proto
from .threads import get_num_threads, set_num_threads
from . import params
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver, Solver,
                      get_solver)
from .proto import caffe_pb2
from .proto.text import parse_net, parse_solver, read_net, read_solver
from .registry import known_types as layer_type_list  # pycaffe's caffe.layer_type_list()

__version__ = "0.1.0"


# Imported on first use: ``layers`` (the layer implementations, and pycaffe's
# ``caffe.layers`` NetSpec factory) because importing every layer module is slow;
# ``draw``, ``coord_map``, ``Classifier`` and ``Detector`` because few programs use them.
_LAZY_MODULES = ("layers", "draw", "coord_map", "classifier", "detector")
_LAZY_NAMES = {"Classifier": "classifier", "Detector": "detector"}


def __getattr__(name):
    import importlib
    if name in _LAZY_MODULES:
        return importlib.import_module("." + name, __name__)
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module("." + _LAZY_NAMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TRAIN", "TEST", "Blob", "Layer", "Net", "NetPlan", "caffe_pb2", "errors", "io", "set_random_seed",
    "parse_net", "parse_solver", "plan_net", "read_net", "read_solver",
    "set_device", "set_mode_cpu", "set_mode_gpu",
    "Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver",
    "get_solver", "layer_type_list", "NetSpec", "to_proto", "layers", "params",
    "has_nccl", "solver_count", "set_solver_count", "solver_rank", "set_solver_rank", "set_multiprocess",
    "draw", "coord_map", "Classifier", "Detector", "init_log", "log", "set_progress",
    "get_num_threads", "set_num_threads",
]
