"""Data-parallel training over MPI (minicaffe.distributed): real `mpiexec -n 2` runs against one process.

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


# ---------------------------------------------------------------- equivalence

def test_two_ranks_with_batch_b_equal_one_process_with_batch_2b_lmdb_cli(tmp_path, sources):
    one = write_solver(tmp_path, "one", write_net(tmp_path, "net6", "lmdb", sources["lmdb"], 6))
    two = write_solver(tmp_path, "two", write_net(tmp_path, "net3", "lmdb", sources["lmdb"], 3))
    expected_losses, expected = one_process(one)
    done = run(["-m", "minicaffe", "train", "--ranks", "2", two], ranks=None)   # the CLI starts mpiexec itself
    assert done.returncode == 0, done.stderr
    losses = logged_losses(done.stderr)
    assert len(losses) == ITERATIONS
    # The log prints 6 significant digits: the curve agrees to them (5e-6 of rounding, plus 1e-5).
    np.testing.assert_allclose(losses, expected_losses, rtol=1.5e-5)
    final = weights(tmp_path / f"two_iter_{ITERATIONS}.caffemodel", tmp_path / "net3.prototxt")
    for key, value in expected.items():
        assert_close(final[key], value, f"parameter {key}")
    # Rank 0 alone logs, tests and snapshots; the other logs nothing at INFO.
    lines = done.stderr.splitlines()
    assert "Data-parallel training on 2 ranks" in done.stderr
    assert sum("Creating training net" in line for line in lines) == 1
    assert sum("Creating test net" in line for line in lines) == 1
    assert sum("Testing net (#0)" in line for line in lines) == 3         # iterations 0, 10 and 20
    assert sum("Snapshotting to binary proto" in line for line in lines) == 2
    assert "rank 1:" not in done.stderr


def test_two_ranks_equal_one_process_hdf5_python_api_identical_weights_on_every_rank(tmp_path, sources):
    one = write_solver(tmp_path, "one", write_net(tmp_path, "net6", "hdf5", sources["hdf5"], 6))
    two = write_solver(tmp_path, "two", write_net(tmp_path, "net3", "hdf5", sources["hdf5"], 3))
    expected_losses, expected = one_process(one)
    done = run([os.path.join(FIXTURES, "driver.py"), two, str(tmp_path)])
    assert done.returncode == 0, done.stderr
    ranks = [np.load(tmp_path / f"rank{rank}.npz") for rank in range(2)]
    assert [int(r["rank"]) for r in ranks] == [0, 1] and [int(r["size"]) for r in ranks] == [2, 2]
    for result in ranks:       # every rank logs and acts on the same averaged loss
        assert_close(result["losses"], expected_losses, "the loss curve")
    for (name, index), value in expected.items():
        assert_close(ranks[0][f"final/{name}/{index}"], value, f"parameter {name}[{index}]")
        np.testing.assert_array_equal(ranks[1][f"final/{name}/{index}"], ranks[0][f"final/{name}/{index}"])
    assert [int(r["test_nets"]) for r in ranks] == [1, 0]       # rank 0 alone tests
    # The thread budget is divided among the ranks on this machine.
    assert [int(r["threads"]) for r in ranks] == [max(1, available_cores() // 2)] * 2


# ---------------------------------------------------------------- random streams, identical starts

def test_ranks_start_identical_and_draw_from_rank_different_streams(tmp_path, sources):
    dropout = 'layer { name: "drop" type: "Dropout" bottom: "ip1" top: "drop" }\n'
    net = write_net(tmp_path, "net", "hdf5", sources["hdf5"], 3, middle=dropout)
    net.write_text(net.read_text().replace('bottom: "ip1" top: "ip2"', 'bottom: "drop" top: "ip2"'))
    path = write_solver(tmp_path, "s", net, max_iter=3, snapshot=0, test_interval=None, test_iter=None)
    done = run([os.path.join(FIXTURES, "driver.py"), path, str(tmp_path)])
    assert done.returncode == 0, done.stderr
    ranks = [np.load(tmp_path / f"rank{rank}.npz") for rank in range(2)]
    reference = Solver(path)            # one process, random_seed 5: rank 0's stream
    for name, blobs in reference.net.params.items():
        for index, blob in enumerate(blobs):
            key = f"{name}/{index}"
            np.testing.assert_array_equal(ranks[0][f"initial/{key}"], blob.data)
            if name.startswith("ip") and index == 0:      # seeded with random_seed + rank: other weights drawn
                assert not np.array_equal(ranks[1][f"initial/{key}"], blob.data)
            # rank 0's weights were broadcast: both ranks train the same weights
            np.testing.assert_array_equal(ranks[1][f"final/{key}"], ranks[0][f"final/{key}"])
    masks = [r["masks"] for r in ranks]
    assert masks[0].shape == masks[1].shape == (3, 3, 10)
    assert not np.array_equal(masks[0], masks[1])         # each rank its own dropout masks


# ---------------------------------------------------------------- resume after a kill

def test_a_killed_two_rank_run_resumes_from_its_snapshot_to_the_uninterrupted_weights(tmp_path, sources,
                                                                                      monkeypatch):
    monkeypatch.syspath_prepend(FIXTURES)          # the fault layer's module, to read the weights back here
    fault = ('layer { name: "fault" type: "Python" bottom: "ip1" top: "f" include { phase: TRAIN } '
             'python_param { module: "fault" layer: "Fault" } }\n'
             'layer { name: "drop" type: "Dropout" bottom: "f" top: "drop" }\n')
    net = write_net(tmp_path, "net", "lmdb", sources["lmdb"], 3, middle=fault)
    net.write_text(net.read_text().replace('bottom: "ip1" top: "ip2"', 'bottom: "drop" top: "ip2"'))
    common = {"max_iter": 16, "snapshot": 8, "test_interval": None, "test_iter": None}
    whole = write_solver(tmp_path, "whole", net, **common)
    broken = write_solver(tmp_path, "broken", net, **common)

    done = run(["-m", "minicaffe", "train", whole])
    assert done.returncode == 0, done.stderr
    # Rank 1 is killed (SIGKILL) in its 12th Forward, iteration 11: after the snapshot of iteration 8.
    killed = run(["-m", "minicaffe", "train", broken], FAULT="kill", FAULT_AT="12")
    assert killed.returncode != 0 and killed.elapsed < 30     # the launcher stops rank 0 too
    assert "Killed (signal 9)" in killed.stdout + killed.stderr
    assert (tmp_path / "broken_iter_8.solverstate").exists()
    assert not (tmp_path / "broken_iter_16.caffemodel").exists()

    state = caffe_pb2.SolverState.FromString((tmp_path / "broken_iter_8.solverstate").read_bytes())
    assert len(json.loads(state.rng_state)["ranks"]) == 2          # every rank's generator
    resumed = run(["-m", "minicaffe", "train", broken, "--snapshot", str(tmp_path / "broken_iter_8.solverstate")])
    assert resumed.returncode == 0, resumed.stderr
    expected = weights(tmp_path / "whole_iter_16.caffemodel", net)
    final = weights(tmp_path / "broken_iter_16.caffemodel", net)
    for key, value in expected.items():
        np.testing.assert_array_equal(final[key], value, err_msg=f"parameter {key}")


def test_a_two_rank_hdf5_snapshot_resumes_in_one_process_with_a_warning(tmp_path, sources, caplog):
    net = write_net(tmp_path, "net", "lmdb", sources["lmdb"], 3)
    path = write_solver(tmp_path, "s", net, max_iter=4, snapshot=2, test_interval=None, test_iter=None,
                        snapshot_format="HDF5")
    done = run(["-m", "minicaffe", "train", path])
    assert done.returncode == 0, done.stderr
    solver = Solver(path)
    solver.restore(str(tmp_path / "s_iter_2.solverstate.h5"))
    assert "holds the random states of 2 rank(s) and training resumes on 1" in caplog.text
    solver.step(2)
    assert solver.iter == 4


# ---------------------------------------------------------------- failures stop every rank

def fault_solver(tmp_path, sources):
    middle = ('layer { name: "fault" type: "Python" bottom: "ip1" top: "f" include { phase: TRAIN } '
              'python_param { module: "fault" layer: "Fault" } }\n')
    net = write_net(tmp_path, "net", "lmdb", sources["lmdb"], 3, middle=middle)
    net.write_text(net.read_text().replace('bottom: "ip1" top: "ip2"', 'bottom: "f" top: "ip2"'))
    return write_solver(tmp_path, "s", net, max_iter=50, snapshot=0, test_interval=None, test_iter=None)


def test_a_hung_rank_stops_the_others_at_the_timeout_with_a_clear_error(tmp_path, sources):
    done = run(["-m", "minicaffe", "train", fault_solver(tmp_path, sources)], timeout=50,
               FAULT="hang", FAULT_AT="3", MINICAFFE_MPI_TIMEOUT="2")
    assert done.returncode != 0
    assert done.elapsed < 30            # the hung rank sleeps 60 s: the timeout stopped the run
    assert ("minicaffe: error: rank 0 of 2: no answer from the other ranks for 2 s while waiting in the "
            "gradient all-reduce of iteration 2") in done.stderr


def test_a_failing_rank_stops_the_others_at_once(tmp_path, sources):
    done = run(["-m", "minicaffe", "train", fault_solver(tmp_path, sources)], FAULT="raise", FAULT_AT="3")
    assert done.returncode != 0
    assert done.elapsed < 30            # well inside the 60 s timeout: rank 1 aborted the run
    assert "minicaffe: error: rank 1 of 2:" in done.stderr and "rank 1 broke at Forward 3" in done.stderr


def test_a_solver_state_rank_0_cannot_read_fails_every_rank_naming_the_file(tmp_path, sources):
    path = write_solver(tmp_path, "s", write_net(tmp_path, "net", "lmdb", sources["lmdb"], 3), max_iter=2)
    done = run(["-m", "minicaffe", "train", path, "--snapshot", str(tmp_path / "missing.solverstate")])
    assert done.returncode != 0 and done.elapsed < 30
    assert "minicaffe: error: rank 0 of 2:" in done.stderr and "missing.solverstate" in done.stderr


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
