import pytest

from minicaffe import gpu, mode


def pytest_collection_modifyitems(items):
    for item in items:
        if "/gpu/" in str(item.fspath):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture
def gpu_mode():
    """GPU mode for one test (the simulator's device without a GPU), CPU mode after it."""
    if not gpu.available():
        pytest.fail("no CUDA device: run the GPU tests with NUMBA_ENABLE_CUDASIM=1 (make test does)")
    mode.set_mode_gpu()
    yield
    mode.set_mode_cpu()


def pytest_sessionfinish(session):
    """Write the argument types every kernel was launched with (minicaffe.gpu.launched_signatures) to
    $MINICAFFE_KERNEL_SIGNATURES, for tests/test_ptx.py to compile each kernel with (make test does)."""
    import json
    import os
    path = os.environ.get("MINICAFFE_KERNEL_SIGNATURES")
    if path and gpu.launched_signatures:
        recorded = {}
        if os.path.exists(path):            # several simulator runs add up (e.g. one file at a time)
            with open(path) as handle:
                recorded = {key: {tuple(s) for s in value} for key, value in json.load(handle).items()}
        for key, signatures in gpu.launched_signatures.items():
            recorded.setdefault(key, set()).update(signatures)
        with open(path, "w") as handle:
            json.dump({key: sorted(value) for key, value in sorted(recorded.items())}, handle, indent=0)
