"""Fuzzed binary files: ``.caffemodel`` and ``.caffemodel.h5`` (Net.copy_from, then Forward; ``upgrade``),
``.solverstate`` and ``.solverstate.h5`` (Solver.restore, then a step), ``.binaryproto`` mean files
(io.read_binaryproto and a data layer's ``transform_param.mean_file``) and LMDB Datum records (the Data
layer's decoding, through two Forward passes, and ``compute-mean``).

Seeds are real files minicaffe wrote for small nets; mutations are byte edits (flips, truncations,
insertions), field edits through protobuf reflection (:func:`mutate.mutate_message`) and, for HDF5,
structural edits (:func:`mutate.mutate_h5`).
"""

import functools
import os
import shutil

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minicaffe
from minicaffe import io
from minicaffe.proto import caffe_pb2

from . import mutate
from .harness import accept, close_net, count, examples, fresh_path, read_seed, sandbox, work_folder

MODEL_NET = read_seed("tests", "fuzz", "seeds", "small_cnn.prototxt")

DATA_NET = """
name: "DataNet"
layer {{
  name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{source}" backend: LMDB batch_size: 2 }}
  transform_param {{ {transform} }}
}}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""

SOLVER = """
type: "Adam"
base_lr: 0.01
lr_policy: "step"
stepsize: 2
gamma: 0.5
max_iter: 10
test_iter: 1
test_interval: 100
random_seed: 3
snapshot_prefix: "{prefix}"
net_param {{ {net} }}
"""

TRANSFORMS = ["", "scale: 0.5", "mirror: true crop_size: 2", "mean_value: 10", "mean_value: 1 mean_value: 2 "
              "mean_value: 3", "force_color: true", "force_gray: true", "crop_size: 4 scale: 0.1"]


def datum_records():
    """A raw uint8 Datum, a float one, and two PNG-encoded ones (grey and colour)."""
    from minicaffe.data.images import encode
    rng = np.random.default_rng(0)
    raw = caffe_pb2.Datum(channels=1, height=4, width=4, label=1, data=rng.integers(0, 255, 16, np.uint8).tobytes())
    floats = caffe_pb2.Datum(channels=1, height=4, width=4, label=0)
    floats.float_data.extend(rng.random(16).tolist())
    gray = caffe_pb2.Datum(label=2, encoded=True, data=encode(rng.integers(0, 255, (1, 4, 4), np.uint8), "png"))
    color = caffe_pb2.Datum(label=1, encoded=True, data=encode(rng.integers(0, 255, (3, 4, 4), np.uint8), "png"))
    return [raw, floats, gray, color]


def write_lmdb(path, values):
    import lmdb
    env = lmdb.open(path, map_size=1 << 22)
    with env.begin(write=True) as txn:
        for index, value in enumerate(values):
            txn.put(f"{index:08d}".encode(), value)
    env.close()
    return path


@functools.lru_cache(maxsize=None)
def seeds():
    """The seed files, written once per process: weights, solver states, a mean file, an LMDB, and the
    net and solver the weights and states are loaded into."""
    with sandbox():
        folder = os.path.join(work_folder(), "seeds")
        os.makedirs(folder, exist_ok=True)
        net_path = os.path.join(folder, "model.prototxt")
        with open(net_path, "w") as handle:
            handle.write(MODEL_NET)
        minicaffe.set_random_seed(5)
        net = minicaffe.Net(net_path, minicaffe.TRAIN)
        net.save(os.path.join(folder, "model.caffemodel"))
        net.save_hdf5(os.path.join(folder, "model.caffemodel.h5"))
        records = [d.SerializeToString() for d in datum_records()[:2]]    # raw: same shape for every record
        lmdb_path = write_lmdb(os.path.join(folder, "lmdb"), records)
        mean = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        io.write_binaryproto(mean, os.path.join(folder, "mean.binaryproto"))
        states = {}
        solvers = {}
        for fmt in ("BINARYPROTO", "HDF5"):
            # a relative prefix (the sandbox's working folder is the work folder): the states' learned_net
            # and so their bytes do not depend on the temporary folder's name, and the examples replay alike
            text = SOLVER.format(prefix=os.path.join("seeds", fmt.lower()),
                                 net=DATA_NET.format(source=lmdb_path, transform=""))
            solver_path = os.path.join(folder, f"solver_{fmt}.prototxt")
            with open(solver_path, "w") as handle:
                handle.write(text + f"snapshot_format: {fmt}\n")
            solver = minicaffe.get_solver(solver_path)
            solver.step(2)
            states[fmt] = os.path.join(work_folder(), solver.snapshot()[1])
            solvers[fmt] = solver
    return {"folder": folder, "net": net, "lmdb": lmdb_path, "states": states, "solvers": solvers,
            "model": os.path.join(folder, "model.caffemodel"), "model_h5": os.path.join(folder, "model.caffemodel.h5"),
            "mean": os.path.join(folder, "mean.binaryproto")}


def binary_variant(original: bytes, message_type, ops, by_fields: bool) -> bytes:
    if by_fields:
        message = message_type()
        message.ParseFromString(original)
        return mutate.mutate_message(message, ops).SerializePartialToString()
    return mutate.mutate_bytes(original, ops)


def read(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def write(path, payload) -> str:
    with open(path, "wb") as handle:
        handle.write(payload)
    return path


# ---------------------------------------------------------------- .caffemodel

def load_weights(path):
    net = seeds()["net"]
    if accept(net.copy_from, path) is None:
        count("weights refused")
    accept(net.forward)
    if not path.endswith(".h5"):
        from minicaffe.convert import upgrade_file
        accept(upgrade_file, path, os.path.join(os.path.dirname(path), "upgraded.caffemodel"))


@settings(max_examples=examples(1300))
@given(ops=mutate.edits(), by_fields=st.booleans())
def test_mutated_caffemodels(ops, by_fields):
    with sandbox():
        payload = binary_variant(read(seeds()["model"]), caffe_pb2.NetParameter, ops, by_fields)
        load_weights(write(fresh_path("model.caffemodel"), payload))


@settings(max_examples=examples(450))
@given(ops=mutate.edits(), structural=st.booleans())
def test_mutated_hdf5_caffemodels(ops, structural):
    with sandbox():
        path = fresh_path("model.caffemodel.h5")
        shutil.copyfile(seeds()["model_h5"], path)
        if structural:
            mutate.mutate_h5(path, ops)
        else:
            write(path, mutate.mutate_bytes(read(path), ops))
        load_weights(path)
        accept(seeds()["net"].load_hdf5, path)


# Byte-level damage to an HDF5 container can make the HDF5 C library loop forever or segfault inside a
# read (a fresh clone's `make test` once hung in h5py reading a damaged .solverstate.h5's learned_net).
# minicaffe now reads HDF5 weights and states in a child process (minicaffe.solvers.hdf5.read_isolated),
# which turns both into a WeightsError, and the seeds are byte-identical from run to run, so both
# profiles damage the raw bytes as well as the structure.

# ---------------------------------------------------------------- .solverstate

def restore(fmt, path):
    solver = seeds()["solvers"][fmt]
    if accept(solver.restore, path) is None:
        count("state refused")
    accept(solver.step, 1)


@settings(max_examples=examples(1300))
@given(ops=mutate.edits(), by_fields=st.booleans())
def test_mutated_solverstates(ops, by_fields):
    with sandbox():
        payload = binary_variant(read(seeds()["states"]["BINARYPROTO"]), caffe_pb2.SolverState, ops, by_fields)
        restore("BINARYPROTO", write(fresh_path("snap.solverstate"), payload))


@settings(max_examples=examples(500))
@given(ops=mutate.edits(), structural=st.booleans())
def test_mutated_hdf5_solverstates(ops, structural):
    with sandbox():
        path = fresh_path("snap.solverstate.h5")
        shutil.copyfile(seeds()["states"]["HDF5"], path)
        if structural:
            mutate.mutate_h5(path, ops)
        else:
            write(path, mutate.mutate_bytes(read(path), ops))
        restore("HDF5", path)


# ---------------------------------------------------------------- .binaryproto and Datum records

def run_data_net(source, transform):
    path = fresh_path("data.prototxt")
    with open(path, "w") as handle:
        handle.write(DATA_NET.format(source=source, transform=transform))
    for phase in ("TRAIN", "TEST"):
        net = accept(minicaffe.Net, path, phase)
        if net is None:
            continue
        try:
            if accept(net.forward) is not None:
                count("data forward ran")
                accept(net.forward)
        finally:
            close_net(net)


@settings(max_examples=examples(700))
@given(ops=mutate.edits(), by_fields=st.booleans())
def test_mutated_mean_files(ops, by_fields):
    with sandbox():
        payload = binary_variant(read(seeds()["mean"]), caffe_pb2.BlobProto, ops, by_fields)
        path = write(fresh_path("mean.binaryproto"), payload)
        accept(io.read_binaryproto, path)
        run_data_net(seeds()["lmdb"], f'mean_file: "{path}"')


@settings(max_examples=examples(700))
@given(records=st.lists(st.tuples(st.integers(0, 3), mutate.edits(3), st.integers(0, 2)), min_size=1, max_size=4),
       transform=st.sampled_from(TRANSFORMS))
def test_mutated_datum_records(records, transform):
    """LMDB databases of mutated Datums (by field, by byte, or left whole) behind a Data layer."""
    originals = datum_records()
    values = []
    for which, ops, how in records:
        datum = originals[which]
        if how == 0:
            values.append(mutate.mutate_message(_copy(datum), ops).SerializePartialToString())
        elif how == 1:
            values.append(mutate.mutate_bytes(datum.SerializeToString(), ops))
        else:
            values.append(datum.SerializeToString())
    with sandbox():
        source = write_lmdb(fresh_path("db"), values)
        run_data_net(source, transform)
        from minicaffe.data.tools import compute_image_mean
        mean_path = os.path.join(os.path.dirname(source), "mean.binaryproto")
        if accept(compute_image_mean, source, mean_path) is not None:
            io.read_binaryproto(mean_path)      # what compute-mean writes must read back


def _copy(message):
    copy = type(message)()
    copy.CopyFrom(message)
    return copy
