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


# What a real numba DeviceNDArray offers (its class's public methods and the attributes its constructor sets).
# The simulator's FakeCUDAArray hands every other attribute to the numpy array it wraps, so code calling
# numpy methods on device arrays (.fill, .sum, .astype, ...) would pass here and fail on a GPU.
REAL_DEVICE_ARRAY_ATTRIBUTES = {
    "T", "bind", "copy_to_device", "copy_to_host", "device_ctypes_pointer", "flags", "get_ipc_handle", "getitem",
    "is_c_contiguous", "is_f_contiguous", "nbytes", "ravel", "reshape", "setitem", "split", "squeeze",
    "transpose", "view", "shape", "strides", "ndim", "size", "dtype", "stream", "gpu_data", "alloc_size",
    "_numba_type_", "__cuda_array_interface__", "__cuda_memory__", "__cuda_ndarray__", "__array__", "__len__",
}


@pytest.fixture(autouse=True, scope="session")
def _device_arrays_as_strict_as_on_a_gpu():
    if not gpu.simulated():
        yield
        return
    from numba.cuda.simulator.cudadrv import devicearray
    original = devicearray.FakeCUDAArray.__getattr__

    def strict(self, name):
        if name not in REAL_DEVICE_ARRAY_ATTRIBUTES:
            raise AttributeError(f"a device array has no attribute '{name}' on a real GPU (only the simulator's "
                                 "numpy stand-in has it)")
        return original(self, name)
    devicearray.FakeCUDAArray.__getattr__ = strict
    yield
    devicearray.FakeCUDAArray.__getattr__ = original


@pytest.fixture(autouse=True)
def _kernels_get_device_arrays():
    """A kernel launched with a numpy array would copy it to the GPU and back at every launch, unseen by the
    blobs' copy counters: every kernel argument must already be on the device."""
    gpu.host_array_launches.clear()
    yield
    assert not gpu.host_array_launches, f"kernels launched with host arrays: {sorted(gpu.host_array_launches)}"
