"""Data-parallel training over MPI (minicaffe.distributed): sharding reader by reader, and one process without MPI.

Two ranks with batch B must follow the loss curve and reach the weights of one process with batch 2B: the
data is sharded so that, together, the two ranks read the 2B records the one process reads (rank r takes
records r, r + 2, ... of the stream; the one process's batch holds the same records, interleaved), so the
averaged gradient is the same sum in another order. The checks run over LMDB (rand_skip: the ranks must
take rank 0's draw) and HDF5 (two files, shuffle: the ranks must take rank 0's seed), with --ranks through
the CLI and with the Python API under mpiexec. Then: an exact resume after a rank is killed, identical
starts and rank-different random streams, rank 0 alone logging, testing and snapshotting, a dead, hung or
failing rank stopping the run, and sharding checked reader by reader in this process (no MPI).
"""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import minicaffe
from minicaffe import distributed
from minicaffe.data.sources import DatumSource, HDF5Source, ImageListSource
from minicaffe.graph import TEST, TRAIN
from minicaffe.proto import caffe_pb2
from minicaffe.solvers import Solver
from minicaffe.threads import available_cores
from minicaffe.train import train

from .data.helpers import datum, write_image, write_lmdb

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "distributed")
MPIEXEC = distributed.find_mpiexec()
RECORDS = 40            # not a multiple of the 2B = 6 records an iteration reads: passes wrap mid-batch
ITERATIONS = 20


def dataset():
    rng = np.random.default_rng(24)
    return rng.integers(0, 256, size=(RECORDS, 3, 4, 4), dtype=np.uint8), rng.integers(0, 4, size=RECORDS)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    images, labels = dataset()
    lmdb_path = write_lmdb(folder / "db", [(f"{i:04d}", datum(x, y)) for i, (x, y) in enumerate(zip(images, labels))])
    import h5py
    names = []
    for index, rows in enumerate((slice(0, 25), slice(25, RECORDS))):      # two files of unequal length
        name = folder / f"part{index}.h5"
        with h5py.File(name, "w") as handle:
            handle["data"] = images[rows].astype(np.float32) / 255
            handle["label"] = labels[rows].astype(np.float32)
        names.append(str(name))
    (folder / "files.txt").write_text("\n".join(names) + "\n")
    return {"lmdb": lmdb_path, "hdf5": str(folder / "files.txt")}


def data_layer(kind, source, batch):
    if kind == "lmdb":
        return (f'layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }} '
                f'transform_param {{ scale: 0.00390625 }} data_param {{ source: "{source}" backend: LMDB '
                f'batch_size: {batch} rand_skip: 7 }} }}\n')
    return (f'layer {{ name: "data" type: "HDF5Data" top: "data" top: "label" include {{ phase: TRAIN }} '
            f'hdf5_data_param {{ source: "{source}" batch_size: {batch} shuffle: true }} }}\n')


def write_net(folder, name, kind, source, batch, middle=""):
    """A small classifier over a TRAIN data layer of ``kind``; a TEST net reads the LMDB-free DummyData."""
    text = (f'name: "tiny"\n{data_layer(kind, source, batch)}'
            'layer { name: "data" type: "DummyData" top: "data" top: "label" include { phase: TEST } '
            'dummy_data_param { shape { dim: 5 dim: 3 dim: 4 dim: 4 } shape { dim: 5 } '
            'data_filler { type: "uniform" } data_filler { type: "constant" value: 1 } } }\n'
            'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { '
            'num_output: 10 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }\n'
            f'{middle}'
            'layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { '
            'num_output: 4 weight_filler { type: "xavier" } } }\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }\n')
    path = folder / f"{name}.prototxt"
    path.write_text(text)
    return path


def write_solver(folder, name, net, **fields):
    values = {"net": f'"{net}"', "base_lr": 0.1, "momentum": 0.9, "weight_decay": 0.001, "lr_policy": '"fixed"',
              "display": 1, "max_iter": ITERATIONS, "random_seed": 5, "snapshot_prefix": f'"{folder / name}"',
              "test_iter": 1, "test_interval": 10, "snapshot": 10}
    values.update(fields)
    path = folder / f"{name}_solver.prototxt"
    path.write_text("".join(f"{key}: {value}\n" for key, value in values.items() if value is not None))
    return str(path)


def run(arguments, ranks=2, timeout=90, **env):
    """`mpiexec -n ranks` on a Python command line (or the minicaffe CLI's own --ranks when ranks is None)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PMI_", "OMPI_"))}
    environment.update({"PYTHONPATH": os.pathsep.join([FIXTURES, os.path.dirname(HERE)]),
                        "MINICAFFE_MPI_TIMEOUT": "60", "GLOG_minloglevel": "0"}, **env)
    command = [sys.executable, *arguments]
    if ranks is not None:
        command = [MPIEXEC, "-n", str(ranks), *command]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
    done.elapsed = time.monotonic() - started
    return done


def weights(path, net):
    loaded = minicaffe.Net(str(net), minicaffe.TRAIN, weights=str(path))
    return {(name, i): blob.data.copy() for name, blobs in loaded.params.items() for i, blob in enumerate(blobs)}


def one_process(solver_path):
    """Train in this process (no MPI): per-iteration losses and the final weights."""
    losses = []
    solver = train(solver_path, setup=lambda s: s.add_callback(
        on_gradients_ready=lambda: losses.append(s.smoothed_loss)))
    final = {(name, i): blob.data.copy() for name, blobs in solver.net.params.items() for i, blob in enumerate(blobs)}
    return np.array(losses), final


def assert_close(actual, expected, what):
    """Within 1e-5 relative: elementwise, with the blob's scale as the floor near zero."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()),
                               err_msg=what)


def logged_losses(stderr):
    return np.array([float(value) for value in re.findall(r"\] Iteration \d+ \(.*\), loss = (\S+)", stderr)])


# ---------------------------------------------------------------- without MPI

def test_without_a_launcher_minicaffe_is_one_process_and_never_imports_mpi4py(tmp_path, sources):
    path = write_solver(tmp_path, "s", write_net(tmp_path, "net", "lmdb", sources["lmdb"], 3), max_iter=2)
    solver = Solver(path)
    solver.step(2)
    assert (distributed.world().rank, distributed.world().size) == (0, 1)
    assert type(distributed.world()) is distributed.World
    assert "mpi4py" not in sys.modules
    assert solver.progress_bar and len(solver.test_nets) == 1


def test_ranks_option_under_a_launcher_must_match_it(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "4")
    with pytest.raises(minicaffe.errors.MinicaffeError, match="--ranks 2, but the MPI launcher started 4"):
        distributed.launch_self(2)
    monkeypatch.delenv("PMI_SIZE")
    distributed.launch_self(1)          # one rank: nothing to start
    assert distributed._without_option(["train", "--ranks", "2", "-ranks=3", "--ranks=4", "s.prototxt"],
                                       "--ranks") == ["train", "s.prototxt"]


def test_timeout_variable_is_checked(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "soon")
    with pytest.raises(minicaffe.errors.MinicaffeError, match="MINICAFFE_MPI_TIMEOUT='soon'"):
        distributed.timeout()
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "2.5")
    assert distributed.timeout() == 2.5


# ---------------------------------------------------------------- sharding, reader by reader

def interleaved(read, batch, batches):
    """What two ranks read with batch ``batch``: the items of iteration i, rank 0's then rank 1's interleaved
    as one process's batch 2 x ``batch`` holds them."""
    rank_reads = [[read(rank, batch) for _ in range(batches)] for rank in range(2)]
    merged = []
    for first, second in zip(*rank_reads):
        items = np.empty((2 * len(first),) + np.shape(first)[1:], dtype=np.asarray(first).dtype)
        items[0::2], items[1::2] = first, second
        merged.append(items)
    return merged


def test_datum_source_shards_record_i_to_rank_i_mod_k(sources):
    def reader(rank, size):
        return DatumSource(sources["lmdb"], "lmdb", shard=(rank, size), skip=3)
    readers = {rank: reader(rank, 2) for rank in range(2)}
    whole = reader(0, 1)
    for _ in range(15):                                 # 90 records: two wraps, mid-batch
        expected = whole.read_batch(6)
        batches = [readers[rank].read_batch(3) for rank in range(2)]
        np.testing.assert_array_equal(np.stack(batches[0].items), np.stack(expected.items[0::2]))
        np.testing.assert_array_equal(batches[1].labels, expected.labels[1::2])
        assert batches[0].state == batches[1].state == expected.state       # one cursor for every rank


def test_hdf5_source_shards_across_files_and_shuffles_with_one_seed(sources):
    def reader(rank, size):
        return HDF5Source(sources["hdf5"], ["data", "label"], seed=99, shard=(rank, size))
    readers = [reader(rank, 2) for rank in range(2)]
    whole = reader(0, 1)
    for _ in range(15):
        expected = whole.read_batch(6)
        batches = [reader_.read_batch(3) for reader_ in readers]
        for top in range(2):
            np.testing.assert_array_equal(batches[0].tops[top], expected.tops[top][0::2])
            np.testing.assert_array_equal(batches[1].tops[top], expected.tops[top][1::2])
        assert batches[0].state == batches[1].state == expected.state


def test_image_list_source_shards(tmp_path):
    lines = []
    for index in range(5):
        write_image(tmp_path / f"{index}.png", np.full((2, 2, 3), index * 40, dtype=np.uint8))
        lines.append(f"{index}.png {index}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")

    def reader(rank, size):
        return ImageListSource(tmp_path / "list.txt", root_folder=f"{tmp_path}/", seed=7, shard=(rank, size))
    readers = [reader(rank, 2) for rank in range(2)]
    whole = reader(0, 1)
    for _ in range(6):
        expected = whole.read_batch(4)
        batches = [reader_.read_batch(2) for reader_ in readers]
        np.testing.assert_array_equal(batches[0].labels, expected.labels[0::2])
        np.testing.assert_array_equal(batches[1].labels, expected.labels[1::2])
        assert batches[0].state == batches[1].state == expected.state


class FakeWorld(distributed.World):
    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def test_memory_data_shards_train_nets_only(monkeypatch, tmp_path):
    text = ('layer { name: "m" type: "MemoryData" top: "data" top: "label" memory_data_param { batch_size: 2 '
            'channels: 1 height: 1 width: 1 } }\n')
    (tmp_path / "net.prototxt").write_text(text)
    data = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    seen = {}
    for rank in range(2):
        monkeypatch.setattr(distributed, "_world", FakeWorld(rank, 2))
        for phase in (TRAIN, TEST):
            net = minicaffe.Net(str(tmp_path / "net.prototxt"), phase)
            net.set_input_arrays(data, data.reshape(-1))
            seen[rank, phase] = [net.forward()["data"].reshape(-1).tolist() for _ in range(3)]
    # Rank r takes rows r, r + 2 of each 4 (wrapping at 10); TEST data is not sharded.
    assert seen[0, TRAIN] == [[0, 2], [4, 6], [8, 0]] and seen[1, TRAIN] == [[1, 3], [5, 7], [9, 1]]
    assert seen[0, TEST] == seen[1, TEST] == [[0, 1], [2, 3], [4, 5]]
    assert distributed.shard(TEST) == (0, 1)
