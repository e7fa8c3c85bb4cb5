"""CPU/GPU mode and device selection (pycaffe's ``set_mode_cpu``/``set_mode_gpu``/``set_device``).

GPU mode needs a usable CUDA device through numba.cuda (or numba's CUDA
simulator, ``NUMBA_ENABLE_CUDASIM=1``). In GPU mode, layers that have
``numba.cuda`` kernels (``forward_gpu``/``backward_gpu``) run them on blobs
that stay on the device, and the others run their CPU kernel, their blobs
copied across as they are read (Caffe's SyncedMemory: see :mod:`minicaffe.blob`).
Data layers read ahead into device memory, and the net clears and updates its
parameters on the device.
"""

from __future__ import annotations

from .errors import MinicaffeError

_state = {"mode": "cpu", "device": 0, "solver_count": 1, "solver_rank": 0, "multiprocess": False}


def set_mode_cpu() -> None:
    _state["mode"] = "cpu"


def set_mode_gpu() -> None:
    """Switch to GPU mode; a clear error if no CUDA device can be used."""
    cuda = _cuda()
    if not cuda.is_available():
        raise MinicaffeError(
            "GPU mode needs a usable CUDA device, and numba finds none. Install the NVIDIA driver and "
            "minicaffe's GPU extra (pip install 'minicaffe[gpu]'), or set NUMBA_ENABLE_CUDASIM=1 to run "
            "the GPU kernels in numba's simulator")
    _check_device(cuda, _state["device"])
    _select(cuda, _state["device"])
    _state["mode"] = "gpu"


def set_device(device_id: int) -> None:
    """Choose the GPU used in GPU mode (Caffe's ``--gpu N``)."""
    device_id = int(device_id)
    if device_id < 0:
        raise MinicaffeError(f"device id must be >= 0, got {device_id}")
    if _state["mode"] == "gpu":
        cuda = _cuda()
        _check_device(cuda, device_id)
        _select(cuda, device_id)
    _state["device"] = device_id


def mode() -> str:
    return _state["mode"]


def device() -> int:
    return _state["device"]


def _cuda():
    from . import gpu
    return gpu.require()


def _select(cuda, device_id):
    """Make the device current on this thread (Caffe's cudaSetDevice): numba would otherwise run this thread's
    kernels on device 0 whatever ``--gpu`` said, while the data layers' prefetch threads use ``device()``."""
    from . import gpu
    if gpu.simulated():
        return
    try:
        cuda.select_device(device_id)
    except RuntimeError as exc:     # numba keeps one device per thread once it has worked on one
        raise MinicaffeError(f"cannot use device {device_id}: this thread already works on another CUDA device "
                             f"({exc}); choose the device before the first GPU work") from None


def _check_device(cuda, device_id):
    count = len(cuda.gpus)
    if device_id >= count:
        raise MinicaffeError(f"device {device_id} does not exist: numba sees {count} CUDA device(s)")


# pycaffe's multi-GPU bookkeeping. There is no NCCL: these record what pycaffe
# code sets (its scripts set them before building solvers), and under MPI
# (minicaffe.distributed) they hold this process's rank and the number of ranks,
# so Python layers can read them as pycaffe's do.

def has_nccl() -> bool:
    """pycaffe's ``caffe.has_nccl()``: False, minicaffe has no NCCL multi-GPU training."""
    return False


def solver_count() -> int:
    return _state["solver_count"]


def set_solver_count(count: int) -> None:
    _state["solver_count"] = int(count)


def solver_rank() -> int:
    return _state["solver_rank"]


def set_solver_rank(rank: int) -> None:
    _state["solver_rank"] = int(rank)


def set_multiprocess(multiprocess: bool) -> None:
    _state["multiprocess"] = bool(multiprocess)
