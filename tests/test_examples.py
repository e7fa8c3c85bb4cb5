"""Every example net and solver reads and plans as it is."""

import glob
import os

import pytest

from minicaffe.graph import plan_net
from minicaffe.proto.text import read_net, read_solver

from tests.conftest import EXAMPLES

# examples/plugin's net needs its plugin installed: tests/test_plugins.py runs it.
NETS = sorted(p for p in glob.glob(os.path.join(EXAMPLES, "**", "*.prototxt"), recursive=True)
              if "solver" not in os.path.basename(p) and os.sep + "plugin" + os.sep not in p)
SOLVERS = sorted(glob.glob(os.path.join(EXAMPLES, "**", "*solver*.prototxt"), recursive=True))


@pytest.mark.parametrize("path", NETS, ids=lambda p: os.path.relpath(p, EXAMPLES))
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_example_net_plans(path, phase):
    plan = plan_net(read_net(path), phase=phase)
    assert plan.layers and plan.outputs


@pytest.mark.parametrize("path", SOLVERS, ids=lambda p: os.path.relpath(p, EXAMPLES))
def test_example_solver_reads_and_names_an_existing_net(path):
    solver = read_solver(path)
    root = os.path.dirname(EXAMPLES)
    assert os.path.exists(os.path.join(root, solver.net)), solver.net


def test_examples_exist():
    assert NETS and SOLVERS
