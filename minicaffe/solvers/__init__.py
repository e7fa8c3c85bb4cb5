"""Caffe's solvers and the pycaffe Solver API.

``minicaffe.Solver(path)`` builds the type the solver file names;
``get_solver(path)`` is pycaffe's spelling. Each type's update rule is in
:mod:`.updates`, the learning-rate policies in :mod:`.lr_policy`, the loop,
tests and snapshots in :mod:`.solver`.
"""

from .lr_policy import POLICIES, learning_rate
from .solver import Solver
from .updates import (SOLVER_TYPES, AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver,
                      SGDSolver)


def get_solver(path):
    """pycaffe's ``caffe.get_solver``: the solver the file describes."""
    return Solver(path)


__all__ = ["Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
           "AdamSolver", "SOLVER_TYPES", "POLICIES", "get_solver", "learning_rate"]
