"""Every numba.cuda kernel compiles to PTX for sm_80 and sm_90 with the argument types it is launched with.

numba's CUDA simulator (the GPU tests' device on CI) runs Python that NVVM refuses, so passing there proves
little about a real GPU. ``make test`` first runs the GPU tests under the simulator with
``MINICAFFE_KERNEL_SIGNATURES`` set: :class:`minicaffe.gpu.Kernel` records the argument types of every
launch and the GPU tests' conftest writes them to that file. This test (``-m ptx``, in a process without
the simulator) then compiles each kernel for each recorded signature with NVVM (``numba-cuda[cu12]``, no
GPU needed). A kernel no simulator test launched fails too: it would reach users untested.
``MINICAFFE_PTX_MODULES=minicaffe.layers.pooling,...`` limits the check to modules starting with those names.
"""

import importlib
import json
import os
import pathlib

import pytest

import minicaffe
from minicaffe import gpu

pytestmark = pytest.mark.ptx

COMPUTE_CAPABILITIES = [(8, 0), (9, 0)]


def load_every_kernel():
    root = pathlib.Path(minicaffe.__file__).parent
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if "caffe_alias" in parts or parts[-1] == "__main__":    # pycaffe's alias; the CLI's entry
            continue
        importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return dict(gpu.KERNELS)


def recorded_signatures():
    path = os.environ.get("MINICAFFE_KERNEL_SIGNATURES")
    if not path or not os.path.exists(path):
        pytest.fail("no recorded kernel signatures: run the GPU tests first with MINICAFFE_KERNEL_SIGNATURES=FILE "
                    "NUMBA_ENABLE_CUDASIM=1 pytest -m gpu, then this test with the same variable (make test does)")
    with open(path) as handle:
        return {key: [tuple(signature) for signature in value] for key, value in json.load(handle).items()}


class _CompileTarget:
    """What numba asks the current device for when a kernel calls a device function (with no GPU here)."""
    compute_capability = max(COMPUTE_CAPABILITIES)


def test_every_kernel_compiles_to_ptx_for_the_types_it_is_launched_with(monkeypatch):
    from numba import cuda
    from numba.cuda import dispatcher
    # A device function called by a kernel compiles for the current device's capability, which needs a
    # driver; without one, it is compiled for the newest capability here (its IR is linked into each
    # kernel, and NVVM then generates that kernel's PTX for the capability asked).
    monkeypatch.setattr(dispatcher, "get_current_device", lambda: _CompileTarget)
    if gpu.simulated():
        pytest.fail("run this test without NUMBA_ENABLE_CUDASIM: the simulator has no compiler")
    kernels = load_every_kernel()
    only = [prefix for prefix in os.environ.get("MINICAFFE_PTX_MODULES", "").split(",") if prefix]
    if only:        # while working on some modules: check only the kernels of modules starting with these
        kernels = {key: kernel for key, kernel in kernels.items() if key.startswith(tuple(only))}
    signatures = recorded_signatures()
    never_launched = sorted(set(kernels) - set(signatures))
    failures = []
    for key, kernel in sorted(kernels.items()):
        for signature in signatures.get(key, ()):
            types = tuple(gpu.numba_type(name) for name in signature)
            for capability in COMPUTE_CAPABILITIES:
                try:
                    cuda.compile_ptx(kernel.function, types, cc=capability)
                except Exception as exc:   # noqa: BLE001 - every failure is reported together below
                    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    failures.append(f"{key} {signature} sm_{capability[0]}{capability[1]}: {first_line}")
    assert not failures, "kernels that do not compile for a real GPU:\n" + "\n".join(failures)
    assert not never_launched, ("kernels no GPU test launched (untested, and never compiled here):\n"
                                + "\n".join(never_launched))
