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
