"""Data layers in GPU mode: the prefetch thread puts each batch on the device, Forward hands it to the tops.

Every data layer type runs the same batches in CPU mode and in GPU mode (same seed): the tops must agree,
end up current on the device only (head "device"), and each Forward must move nothing to the host and
count exactly one host-to-device copy per top (the batch crossing).
"""

import time

import numpy as np
import pytest

import minicaffe
from minicaffe.blob import SyncedArray
from minicaffe.data.layer_base import upload_batch
from minicaffe.data.sources import Batch
from minicaffe.io import write_binaryproto

from ..data.helpers import bytes_pixels, data_net, datum, write_image, write_lmdb, write_text


def run(path, use_gpu, passes=3, phase=minicaffe.TRAIN, seed=5, dtype=np.float32, switch_after_build=False,
        prepare=None, taken=None):
    """The tops of ``passes`` Forwards of the one-layer net at ``path``; in GPU mode also checks the copies
    (and appends the batches the layer took from its prefetch thread to ``taken``)."""
    taken = [] if taken is None else taken
    minicaffe.set_random_seed(seed)
    if use_gpu and not switch_after_build:
        minicaffe.set_mode_gpu()            # before the net: its prefetch thread uploads from the start
    try:
        net = minicaffe.Net(path, phase, dtype=dtype)
        if prepare is not None:
            prepare(net)
        prefetcher = getattr(net.layers[0], "_prefetcher", None)
        if use_gpu and switch_after_build:          # the read-ahead queue full of batches read in CPU mode
            deadline = time.monotonic() + 10
            while prefetcher.ready < prefetcher.depth and time.monotonic() < deadline:
                time.sleep(0.01)
        if use_gpu:
            minicaffe.set_mode_gpu()
        if use_gpu and prefetcher is not None:         # see which batches the prefetch thread put on the device
            get = prefetcher.get
            prefetcher.get = lambda: taken.append(get()) or taken[-1]
        outputs = []
        for _ in range(passes):
            before = dict(SyncedArray.copies)
            net.forward_from_to(0, len(net.layers) - 1)
            tops = [net.blobs[name] for name in net.outputs]
            if use_gpu:
                assert SyncedArray.copies["to_host"] == before["to_host"], "a data layer's Forward read the host"
                assert SyncedArray.copies["to_device"] - before["to_device"] == len(tops)
                assert all(blob._synced("data").head == "device" for blob in tops)
            outputs.append([blob.data.copy() for blob in tops])
        layer = net.layers[0]
        if hasattr(layer, "close"):
            layer.close()
        return outputs
    finally:
        minicaffe.set_mode_cpu()


def compare(path, prefetched=None, **options):
    """CPU and GPU tops agree; ``prefetched``: per pass, whether the prefetch thread had put the batch on the
    device (default: every batch), or a check of that list."""
    cpu = run(path, False, **options)
    taken = []
    gpu = run(path, True, taken=taken, **options)
    flags = [batch.device is not None for batch in taken]
    if callable(prefetched):
        assert prefetched(flags), flags
    else:
        assert flags == ([True] * len(taken) if prefetched is None else prefetched)
    for cpu_tops, gpu_tops in zip(cpu, gpu):
        for cpu_top, gpu_top in zip(cpu_tops, gpu_tops):
            assert cpu_top.shape == gpu_top.shape
            np.testing.assert_array_equal(gpu_top, cpu_top)
    return gpu


# ---------------------------------------------------------------- Data (LMDB)

ITEMS = [bytes_pixels((2, 4, 5), seed) for seed in range(5)]


@pytest.fixture
def lmdb_path(tmp_path):
    return write_lmdb(tmp_path / "db", [(f"{i:03d}", datum(a, i)) for i, a in enumerate(ITEMS)])


def test_data_crop_mirror_mean_file_train(tmp_path, lmdb_path):
    mean = np.random.default_rng(1).uniform(0, 255, (1, 2, 4, 5)).astype(np.float32)
    write_binaryproto(mean, tmp_path / "mean.binaryproto")
    transform = f'crop_size: 3 mirror: true scale: 0.5 mean_file: "{tmp_path / "mean.binaryproto"}"'
    path = data_net(tmp_path, lmdb_path, "batch_size: 3 backend: LMDB", transform)
    outputs = compare(path)
    assert outputs[0][0].shape == (3, 2, 3, 3) and list(outputs[1][1]) == [3, 4, 0]


def test_data_mean_values_test_phase_double_net_and_a_switch_after_prefetching(tmp_path, lmdb_path):
    path = data_net(tmp_path, lmdb_path, "batch_size: 2 backend: LMDB", "mean_value: 100 mean_value: 50 scale: 0.1")
    compare(path, phase=minicaffe.TEST, dtype=np.float64, passes=2)
    # batches read ahead in CPU mode cross when Forward takes them
    # (the fifth may have been read either way: the thread waits to queue it)
    compare(path, phase=minicaffe.TEST, passes=7, switch_after_build=True,
            prefetched=lambda flags: flags[:4] == [False] * 4 and flags[5:] == [True, True])
    centred = data_net(tmp_path, lmdb_path, "batch_size: 2 backend: LMDB", "crop_size: 2", name="centred.prototxt")
    compare(centred, phase=minicaffe.TEST, passes=1)


def test_data_float_records(tmp_path):
    values = [np.random.default_rng(i).standard_normal((1, 3, 3)).astype(np.float32) for i in range(3)]
    source = write_lmdb(tmp_path / "floats", [(f"{i}", datum(v, i)) for i, v in enumerate(values)])
    compare(data_net(tmp_path, source, "batch_size: 2 backend: LMDB", "mirror: true scale: 2"), passes=2)


# ---------------------------------------------------------------- ImageData

def test_image_data_same_and_different_sizes(tmp_path):
    sizes = [(4, 5), (4, 5), (5, 4)]
    lines = []
    for index, (height, width) in enumerate(sizes):
        write_image(tmp_path / f"im{index}.png", bytes_pixels((height, width, 3), index))
        lines.append(f"im{index}.png {index}")
    write_text(tmp_path / "list.txt", "\n".join(lines) + "\n")
    param = f'batch_size: 2 root_folder: "{tmp_path}/"'
    path = data_net(tmp_path, tmp_path / "list.txt", param, "crop_size: 3 mirror: true mean_value: 9",
                    layer_type="ImageData", param_name="image_data_param")
    compare(path, passes=2, prefetched=[True, False])   # the second batch's images differ in size: on the host
    resized = data_net(tmp_path, tmp_path / "list.txt", param + " new_height: 3 new_width: 3 is_color: false",
                       "scale: 0.25", layer_type="ImageData", param_name="image_data_param", name="r.prototxt")
    compare(resized, passes=2)


# ---------------------------------------------------------------- HDF5Data, MemoryData, WindowData

def test_hdf5_data(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(2)
    with h5py.File(tmp_path / "a.h5", "w") as handle:
        handle["data"] = rng.standard_normal((5, 2, 3))
        handle["label"] = np.arange(5, dtype=np.float32)
    write_text(tmp_path / "list.txt", f"{tmp_path / 'a.h5'}\n")
    path = data_net(tmp_path, tmp_path / "list.txt", "batch_size: 2 shuffle: true", layer_type="HDF5Data",
                    param_name="hdf5_data_param")
    outputs = compare(path)
    assert outputs[0][0].shape == (2, 2, 3) and outputs[0][1].shape == (2,)
    # a restored cursor drops the batches read ahead onto the device, and reads on from there
    minicaffe.set_random_seed(5)
    minicaffe.set_mode_gpu()
    try:
        net = minicaffe.Net(path, minicaffe.TRAIN)
        net.forward()
        state = net.layers[0].state()
        after = [net.forward()["data"].copy() for _ in range(2)]
        net.layers[0].restore(state)
        again = [net.forward()["data"].copy() for _ in range(2)]
        net.layers[0].close()
    finally:
        minicaffe.set_mode_cpu()
    np.testing.assert_array_equal(np.stack(again), np.stack(after))
    np.testing.assert_array_equal(after[0], outputs[1][0])


def test_memory_data(tmp_path):
    path = write_text(tmp_path / "net.prototxt", 'layer { name: "mem" type: "MemoryData" top: "data" '
                      'top: "label" memory_data_param { batch_size: 2 channels: 1 height: 2 width: 1 } }\n')
    data = np.arange(8, dtype=np.float32).reshape(4, 1, 2, 1)
    outputs = compare(path, prepare=lambda net: net.set_input_arrays(data, np.arange(4.0)))
    np.testing.assert_array_equal(outputs[2][0], data[:2])
    assert outputs[2][1].shape == (2, 1, 1, 1)


def test_window_data(tmp_path):
    image = bytes_pixels((10, 12, 3), 30)
    write_image(tmp_path / "scene.png", image)
    windows = [(3, 0.9, 2, 3, 5, 6), (1, 0.1, 6, 1, 9, 4)]
    lines = ["# 0", "scene.png", "3", "10", "12", str(len(windows))] + [" ".join(map(str, w)) for w in windows]
    write_text(tmp_path / "windows.txt", "\n".join(lines) + "\n")
    path = write_text(tmp_path / "net.prototxt", f'''
layer {{ name: "windows" type: "WindowData" top: "data" top: "label"
  window_data_param {{ source: "{tmp_path / 'windows.txt'}" root_folder: "{tmp_path}/" batch_size: 2 }}
  transform_param {{ crop_size: 3 mirror: true mean_value: 3 }} }}
''')
    compare(path, passes=2)


def test_upload_batch_puts_each_top_on_the_device_through_one_stream():
    minicaffe.set_mode_gpu()
    try:
        staging = {}
        batch = Batch(tops=[np.ones((2, 3)), np.arange(2)])
        upload_batch(batch, np.dtype(np.float32), staging)
        assert [array.copy_to_host().tolist() for array in batch.device] == [[1.0] * 6, [0.0, 1.0]]
        assert all(array.dtype == np.float32 for array in batch.device)
        stream = staging["stream"]
        upload_batch(Batch(tops=[np.zeros((2, 3)), np.arange(2)]), np.dtype(np.float32), staging)
        assert staging["stream"] is stream      # the thread's stream and pinned buffers are reused
        unstacked = Batch(items=[np.zeros((1, 2, 2)), np.zeros((1, 3, 3))], labels=np.zeros(2))
        upload_batch(unstacked, np.dtype(np.float32), staging)
        assert unstacked.device is None         # items of different sizes stay on the host
    finally:
        minicaffe.set_mode_cpu()
