"""Fuzzed solver prototxts: parse and upgrade (``solver_type``), build the solver and its nets, one step (a
test pass first when asked), a snapshot, and a restore from it.

The fields that only make a valid run long (``test_iter``, ``iter_size``) are capped after parsing, so an
example stays fast; every other value goes through as mutated.
"""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from minicaffe.proto.text import read_solver
from minicaffe.solvers import Solver

from . import mutate
from .harness import accept, close_net, count, examples, fresh_path, layer_types, no_python_layers, read_seed, sandbox

SOLVER_SEEDS = {name: read_seed("tests", "fuzz", "seeds", name + ".prototxt")
                for name in ("sgd_solver", "adam_solver", "other_solvers", "legacy_solver")}
SOLVER_NET = read_seed("tests", "fuzz", "seeds", "solver_net.prototxt")


def build_solver(path):
    param = read_solver(path)
    for index, value in enumerate(param.test_iter):
        param.test_iter[index] = min(value, 2)
    param.iter_size = min(param.iter_size, 2)
    return Solver(param, source=path)


def run_solver(text):
    no_python_layers(text)
    with sandbox():
        path = fresh_path("solver.prototxt")
        with open(os.path.join(os.path.dirname(path), "solver_net.prototxt"), "w") as handle:
            handle.write(SOLVER_NET)
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(text)
        solver = accept(build_solver, path)
        if solver is None:
            count("solver refused")
            return
        try:
            if accept(solver.step, 1) is None and solver.iter == 1:
                count("stepped")
            files = accept(solver.snapshot)
            if files is not None:
                count("snapshot written")
                accept(solver.restore, files[1])
        finally:
            for net in [solver.net] + list(solver.test_nets):
                close_net(net)


def test_the_seeds_step():
    for text in SOLVER_SEEDS.values():
        with sandbox():
            path = fresh_path("solver.prototxt")
            with open(os.path.join(os.path.dirname(path), "solver_net.prototxt"), "w") as handle:
                handle.write(SOLVER_NET)
            with open(path, "w") as handle:
                handle.write(text)
            solver = build_solver(path)
            solver.step(1)
            solver.restore(solver.snapshot()[1])
            assert solver.iter == 1


@settings(max_examples=examples(1200))
@given(seed=st.sampled_from(sorted(SOLVER_SEEDS)), ops=mutate.edits())
def test_mutated_solvers(seed, ops):
    run_solver(mutate.mutate_text(SOLVER_SEEDS[seed], ops, layer_types(), names_extra=["solver_net.prototxt"]))
