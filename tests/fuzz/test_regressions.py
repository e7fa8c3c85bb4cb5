"""The crashes the fuzz harness (tests/fuzz) found, each as the smallest input that escaped as a raw Python
exception, now a minicaffe error that names the file, the field and the bad value."""

import numpy as np
import pytest

import minicaffe
from minicaffe import io
from minicaffe.check import check_net, describe
from minicaffe.errors import GraphError, MemoryLimitError, MinicaffeError, ShapeError, WeightsError
from minicaffe.memory_budget import max_memory
from minicaffe.proto import caffe_pb2
from minicaffe.solvers.state import read_state

h5py = pytest.importorskip("h5py")

NET = '''name: "small"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 4
  weight_filler { type: "gaussian" std: 0.1 } } }
'''


@pytest.fixture
def net(write_file):
    return minicaffe.Net(write_file("net.prototxt", NET), minicaffe.TEST)


# ---------------------------------------------------------------- strings that are not UTF-8
# protobuf's parser hands a proto2 string field whose bytes are not UTF-8 back as bytes (no error), so a
# learned_net of b'a\xff' met `"\0" in state.learned_net` as bytes: TypeError.

def not_utf8(message, text):
    """``message`` serialized, with the string ``text`` in it made invalid UTF-8 (its last byte 0xFF)."""
    payload = message.SerializeToString()
    encoded = text.encode()
    assert payload.count(encoded) == 1
    return payload.replace(encoded, encoded[:-1] + b"\xff")


def test_a_solverstate_string_that_is_not_utf8_names_the_field(tmp_path):
    state = caffe_pb2.SolverState(iter=1, learned_net="model.caffemodel")
    path = tmp_path / "bad.solverstate"
    path.write_bytes(not_utf8(state, "model.caffemodel"))
    with pytest.raises(WeightsError, match=rf"^{path}: not a valid SolverState \(\.solverstate\): 'learned_net' is "
                                           r"not UTF-8 text: b'model\.caffemode\\xff'"):
        read_state(path)


def test_a_data_cursor_that_is_not_utf8_names_the_field(tmp_path):
    state = caffe_pb2.SolverState(iter=1)
    state.data_cursor.add(net="train", layer="data", state='{"epoch": 0}')
    path = tmp_path / "bad.solverstate"
    path.write_bytes(not_utf8(state, '{"epoch": 0}'))
    with pytest.raises(WeightsError, match=r"'data_cursor\[0\]\.state' is not UTF-8 text: b'\{\"epoch\": 0\\xff'"):
        read_state(path)


def test_a_caffemodel_layer_field_that_is_not_utf8_names_the_field(tmp_path, net):
    proto = net.to_proto()
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(not_utf8(proto, "ip"))      # layer 1's name
    message = rf"^{path}: not a valid binary NetParameter \(\.caffemodel\): 'layer\[1\]\.name' is not UTF-8 " \
              r"text: b'i\\xff'"
    with pytest.raises(WeightsError, match=message):
        net.copy_from(str(path))
    with pytest.raises(WeightsError, match=message):
        io.read_caffemodel(path)


# ---------------------------------------------------------------- HDF5

def test_an_empty_hdf5_dataset_is_a_weights_error_naming_it(tmp_path, net):
    # h5py reads a dataset with no dataspace as h5py.Empty; array_to_blobproto then met float(Empty): TypeError.
    state = tmp_path / "bad.solverstate.h5"
    with h5py.File(state, "w") as h5:
        h5.create_dataset("iter", data=np.int32(1))
        h5.create_dataset("learned_net", data="")
        h5.create_dataset("history/0", data=h5py.Empty("f4"))
    with pytest.raises(WeightsError, match=rf"^{state}: 'history/0' is an empty dataset \(no shape, no values\)"):
        read_state(state)
    model = tmp_path / "bad.caffemodel.h5"
    with h5py.File(model, "w") as h5:
        h5.create_dataset("data/ip/0", data=h5py.Empty("f4"))
    with pytest.raises(WeightsError, match=rf"^{model}: 'data/ip/0' is an empty dataset"):
        net.copy_from(str(model))


# The datatype message of a float32 dataset as HDF5 writes it: version 1 class 1 (float), byte order and
# sign bits, size 4, offset 0, precision 32, exponent at bit 23 (8 bits), mantissa at 0 (23 bits), bias 127.
FLOAT32_TYPE = bytes.fromhex("11201f000400000000002000170800177f")


def damage(payload: bytes, how: str) -> bytes:
    damaged = bytearray(payload)
    if how in ("TREE", "HEAP", "SNOD"):           # every B-tree, local heap or symbol table node signature
        for offset in range(len(payload)):
            if payload.startswith(how.encode(), offset):
                damaged[offset] ^= 1
    else:
        at = payload.index(FLOAT32_TYPE)
        if how == "string type":            # class 1 (float) to class 3 (string) with charset 2: no such charset
            damaged[at] = 0x13
        else:                               # the mantissa's position moved into the exponent's
            damaged[at + 12] ^= 1
    return bytes(damaged)


@pytest.mark.parametrize("how, where, error", [
    ("TREE", "data", r"Unable to synchronously check link existence \(wrong B-tree signature\)"),
    ("HEAP", "data", r"Unable to synchronously check link existence \(bad local heap signature\)"),
    ("SNOD", "data", r"Unable to synchronously check link existence \(bad symbol table node signature\)"),
    ("string type", "data/ip/0", r"Unknown string encoding \(value 2\)"),
    ("overlap", "data/ip/0", r"'Unable to synchronously open object \(mantissa and exponent positions overlap\)'"),
])
def test_a_damaged_hdf5_file_names_the_file_and_the_object(tmp_path, net, how, where, error):
    # A damaged B-tree, local heap, symbol table node or datatype message made h5py raise RuntimeError,
    # KeyError, ValueError or TypeError from whichever access met it (found by flipping single bits).
    good = tmp_path / "good.caffemodel.h5"
    net.save_hdf5(str(good))
    bad = tmp_path / "bad.caffemodel.h5"
    bad.write_bytes(damage(good.read_bytes(), how))
    with pytest.raises(WeightsError, match=rf"^{bad}: '{where}' cannot be read \({error}\): the HDF5 file is "
                                           "damaged, or holds what h5py cannot read$"):
        net.copy_from(str(bad))


def test_a_damaged_hdf5_solverstate_names_the_file_and_the_object(tmp_path):
    path = tmp_path / "state.solverstate.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("iter", data=np.int32(1))
        h5.create_dataset("learned_net", data="")
        h5.create_dataset("history/0", data=np.zeros(3, np.float32))
    path.write_bytes(damage(path.read_bytes(), "string type"))
    with pytest.raises(WeightsError, match=rf"^{path}: 'history/0' cannot be read \(Unknown string encoding"):
        read_state(path)


DAMAGE_CHILD = r"""
import sys
import h5py
import numpy as np
import minicaffe.solvers.hdf5 as hdf5
from minicaffe.errors import WeightsError
from minicaffe.solvers.state import read_state
hdf5.READ_TIMEOUT = 3
path, how = sys.argv[1], sys.argv[2]
with h5py.File(path, "w") as h5:
    h5.create_dataset("iter", data=np.int32(1))
    h5.create_dataset("learned_net", data="model.caffemodel.h5")        # a variable-length string
payload = bytearray(open(path, "rb").read())
if how == "vlen type":      # the string's datatype message: class 9 (VLEN) of type 1 (string) -> type 3
    at = payload.index(bytes.fromhex("1901010010000000"))
    payload[at + 1] = 0x03
else:                       # the global heap's first object: a size past the end of its collection
    at = payload.index(b"GCOL")
    payload[at + 25] ^= 0x02
open(path, "wb").write(bytes(payload))
try:
    read_state(path)
    print("read")
except WeightsError as exc:
    print(exc)
"""


@pytest.mark.parametrize("how", ["vlen type", "heap object size"])
def test_a_file_that_crashes_or_hangs_the_hdf5_library_is_a_weights_error(tmp_path, how):
    # One flipped bit in a .solverstate.h5 made the HDF5 C library segfault (the learned_net string's
    # datatype) or loop forever (its global heap object's size): the process died, or hung, in h5py.
    # The file is now read in a child process; the parent reports the crash or the hang.
    import subprocess
    import sys
    path = tmp_path / "damaged.solverstate.h5"
    child = subprocess.run([sys.executable, "-c", DAMAGE_CHILD, str(path), how], capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == 0, child.stderr
    line = child.stdout.strip()
    assert line.startswith(f"{path}: "), line
    if how == "vlen type":
        assert line == f"{path}: the HDF5 library crashed reading it (SIGSEGV): the file is damaged"
    else:
        assert line == (f"{path}: the HDF5 library did not finish reading it in 3 s, and was stopped: a damaged "
                        "file can make it loop")


def test_the_hdf5_reading_process_reports_a_crash_a_hang_and_errors(tmp_path, monkeypatch):
    import os
    import signal
    import time
    from minicaffe.solvers import hdf5
    path = str(tmp_path / "x.h5")
    with h5py.File(path, "w"):
        pass

    def crash(path):
        os.kill(os.getpid(), signal.SIGSEGV)

    def loop(path):
        time.sleep(60)

    def refuse(path):
        raise WeightsError(path, "'data' is a dataset, not a group")

    def bug(path):
        return {}["missing"]
    with pytest.raises(WeightsError, match=rf"^{path}: the HDF5 library crashed reading it \(SIGSEGV\): the file is "
                                           "damaged$"):
        hdf5.read_isolated(path, crash, caffe_pb2.NetParameter)
    monkeypatch.setattr(hdf5, "READ_TIMEOUT", 0.5)
    with pytest.raises(WeightsError, match=rf"^{path}: the HDF5 library did not finish reading it in \d+ s, "
                                           "and was stopped"):
        hdf5.read_isolated(path, loop, caffe_pb2.NetParameter)
    with pytest.raises(WeightsError, match=rf"^{path}: 'data' is a dataset, not a group$"):
        hdf5.read_isolated(path, refuse, caffe_pb2.NetParameter)
    with pytest.raises(RuntimeError, match=r"(?s)in a child process failed:.*KeyError: 'missing'"):
        hdf5.read_isolated(path, bug, caffe_pb2.NetParameter)
    net = hdf5.read_isolated(path, lambda p: caffe_pb2.NetParameter(name="read"), caffe_pb2.NetParameter)
    assert net.name == "read"


def test_layer_names_hdf5_cannot_hold_are_refused_before_writing(tmp_path, write_file):
    # A layer named "" stopped an HDF5 snapshot with h5py's ValueError ("name parameter cannot be an empty
    # string"); "a/b" would have nested groups that read back as another net; two layers of one name with
    # parameters collided ("name already exists").
    for name, problem in [("", r"layer name '' cannot name a group in an HDF5 file"),
                          ("a/b", r"layer name 'a/b' cannot name a group in an HDF5 file"),
                          ("ip", r"two layers are named 'ip' and both have parameters")]:
        first = "ip" if name == "ip" else "ip0"
        path = write_file("net.prototxt", f'''
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
layer {{ name: "{first}" type: "InnerProduct" bottom: "x" top: "y" inner_product_param {{ num_output: 2 }} }}
layer {{ name: "{name}" type: "InnerProduct" bottom: "y" top: "z" inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "z" bottom: "z" top: "loss" }}
''')
        net = minicaffe.Net(path, minicaffe.TRAIN)
        target = tmp_path / "w.caffemodel.h5"
        with pytest.raises(MinicaffeError, match=rf"^cannot write HDF5 weights to {target}: {problem}"):
            net.save_hdf5(str(target))
        assert not target.exists()
        net.save(str(tmp_path / "w.caffemodel"))          # a binary caffemodel holds any name


def test_a_solver_with_hdf5_snapshots_refuses_those_names_before_training(write_file):
    path = write_file("net.prototxt", '''
layer { name: "in" type: "DummyData" top: "x" dummy_data_param { shape { dim: 2 dim: 3 } } }
layer { name: "" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "y" top: "loss" }
''')
    solver = write_file("solver.prototxt", f'net: "{path}" base_lr: 0.1 lr_policy: "fixed" snapshot_format: HDF5')
    with pytest.raises(MinicaffeError, match=rf"^{solver}: snapshot_format: HDF5, but layer name '' cannot name a "
                                             "group in an HDF5 file"):
        minicaffe.get_solver(solver)
    binary = write_file("binary.prototxt", f'net: "{path}" base_lr: 0.1 lr_policy: "fixed"')
    minicaffe.get_solver(binary).step(1)


def test_layers_without_parameters_may_share_a_name_in_hdf5(tmp_path, write_file):
    path = write_file("net.prototxt", '''
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "act" type: "ReLU" bottom: "x" top: "y" }
layer { name: "act" type: "Sigmoid" bottom: "y" top: "z" }
layer { name: "ip" type: "InnerProduct" bottom: "z" top: "w" inner_product_param { num_output: 2 } }
''')
    net = minicaffe.Net(path, minicaffe.TEST)
    net.save_hdf5(str(tmp_path / "w.caffemodel.h5"))
    net.copy_from(str(tmp_path / "w.caffemodel.h5"))


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("layer, shapes", [
    ('type: "ArgMax"', r"\(expected \(1, 2\), got \(1, 1, 1\)\)"),
    ('type: "Reduction"', r"\(expected \(1, 2\), got \(\)\)"),
    ('type: "InnerProduct" inner_product_param { num_output: 3 }', r"\(expected \(1, 2\), got \(1, 3\)\)"),
])
def test_a_top_computed_in_place_must_keep_the_bottoms_shape(write_file, layer, shapes):
    # ArgMax or Reduction in place reshaped the shared blob under its own input: numpy's ValueError
    # ("cannot reshape array of size 1 into shape (1,2,1)") in Forward.
    path = write_file("net.prototxt", f'''
layer {{ name: "data" type: "DummyData" top: "data" dummy_data_param {{ shape {{ dim: 1 dim: 2 }} }} }}
layer {{ name: "l0" {layer} bottom: "data" top: "data" }}
''')
    message = (r"^layer 'l0': \w+ cannot compute top 0 'data' in place: its shape would differ from the bottom's; "
               r"give the top a name of its own " + shapes)
    with pytest.raises(ShapeError, match=message):
        minicaffe.Net(path, minicaffe.TEST)
    with pytest.raises(ShapeError, match=message):
        check_net(path, "TEST")


def test_in_place_layers_that_keep_the_shape_still_run(write_file):
    path = write_file("net.prototxt", '''
layer { name: "data" type: "DummyData" top: "data" dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: "constant" value: -1 } } }
layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
layer { name: "scale" type: "Scale" bottom: "data" top: "data" }
''')
    net = minicaffe.Net(path, minicaffe.TEST)
    net.forward()
    assert net.blobs["data"].shape == (2, 3)
    net.blobs["data"].reshape(4, 3)
    net.forward()


@pytest.mark.parametrize("loss", ["EuclideanLoss", "SoftmaxWithLoss", "SigmoidCrossEntropyLoss"])
def test_a_loss_of_scalar_bottoms_names_the_layer_and_the_bottom(write_file, loss):
    # An Input with an empty shape {} is a scalar (shape ()); EuclideanLoss read bottom[0].shape[0]:
    # IndexError in Forward. Caffe's LossLayer::Reshape reads shape(0) of both bottoms and stops too.
    path = write_file("net.prototxt", f'''
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ }} }} }}
layer {{ name: "loss" type: "{loss}" bottom: "x" bottom: "x" top: "loss" }}
''')
    message = (r"^layer 'loss': bottom 0 has shape \(\) \(a scalar\); a loss needs the prediction and the label to "
               r"have a first \(batch\) axis$")
    with pytest.raises(ShapeError, match=message):
        minicaffe.Net(path, minicaffe.TEST)
    with pytest.raises(ShapeError, match=message):
        check_net(path, "TEST")


@pytest.mark.parametrize("kind, per_step", [("LSTM", 4), ("RNN", 6)])
def test_a_recurrent_layer_unrolling_past_the_memory_limit_is_refused_before_it_builds(write_file, kind, per_step):
    # T = 2^31 - 1 time steps: the unrolled net (a few layers per step) was built, as Python objects and
    # protobuf messages, before any estimate could count it; the fuzz run grew to 24 GB and the OOM killer
    # ended it (under an address-space limit, protobuf's allocator segfaulted).
    path = write_file("net.prototxt", f'''
layer {{ name: "data" type: "Input" top: "x" top: "cont"
  input_param {{ shape {{ dim: 2147483647 dim: 1 dim: 2 }} shape {{ dim: 2147483647 dim: 1 }} }} }}
layer {{ name: "rec" type: "{kind}" bottom: "x" bottom: "cont" top: "h" recurrent_param {{ num_output: 2 }} }}
''')
    layers = 2147483647 * per_step
    message = (rf"^layer 'rec': {kind} unrolls its T = 2147483647 time steps \(bottom 0's first axis\) into about "
               rf"{layers} layers, which need about [\d.]+ TiB before their blobs, more than the 256\.0 MiB "
               r"\(--max-memory\) this process may use\. Nothing was built")
    with max_memory("256M"):
        with pytest.raises(MemoryLimitError, match=message):
            check_net(path, "TEST")
        with pytest.raises(MemoryLimitError, match=message):
            minicaffe.Net(path, minicaffe.TEST)


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution", "Im2col"])
@pytest.mark.parametrize("field", ["stride", "pad", "kernel_size", "dilation"])
def test_convolution_fields_past_caffes_int_range_name_the_field_and_the_value(write_file, kind, field):
    # stride: 4294967295 (a uint32 that Caffe reads as an int: -1) passed every check; the direct kernels'
    # stride_h * stride_w wrapped past int64, so the memory estimate was small and Forward died in numba
    # with "ValueError: negative dimensions not allowed".
    values = {"stride": 1, "pad": 1, "kernel_size": 3, "dilation": 1, field: 4294967295}
    param = " ".join(f"{name}: {value}" for name, value in values.items())
    path = write_file("net.prototxt", f'''
layer {{ name: "d" type: "DummyData" top: "x" dummy_data_param {{ shape {{ dim: 2 dim: 2 dim: 6 dim: 6 }} }} }}
layer {{ name: "c" type: "{kind}" bottom: "x" top: "y" convolution_param {{ num_output: 4 {param} }} }}
''')
    name = "kernel" if field == "kernel_size" else field
    message = (rf"^layer 'c': convolution_param: {name} \[4294967295, 4294967295\] is past 2147483647 \(2\^31 - 1\): "
               "the field is a uint32, but Caffe reads it as an int, where it would be negative$")
    with pytest.raises(ShapeError, match=message):
        minicaffe.Net(path, minicaffe.TRAIN)
    with pytest.raises(ShapeError, match=message):
        check_net(path, "TRAIN")


def test_the_memory_estimate_of_a_huge_batch_is_counted_not_listed(write_file):
    # The im2row estimate listed every chunk of images ([chunk] * (num // chunk)): for the SSD example's
    # input with a batch of 2^31 - 1 (chunks of one 96 x 96 image), `check` and the build died in the
    # estimate itself with MemoryError instead of refusing the net.
    path = write_file("net.prototxt", '''
name: "huge_batch"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1099511627776 dim: 3 dim: 96 dim: 96 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 16 kernel_size: 3 } }
''')
    with max_memory("256M"):
        assert describe(check_net(path, "TEST")).splitlines()[-2].endswith("limit 256.0 MiB (--max-memory) -- over "
                                                                           "the limit")
        with pytest.raises(MemoryLimitError, match=r"^net 'huge_batch' needs about [\d.]+ PiB to build and run "
                                                    r"Forward, more than the 256\.0 MiB this process may use"):
            minicaffe.Net(path, minicaffe.TEST)


@pytest.mark.parametrize("layer, message", [
    # math.exp(log(base) * shift) raised OverflowError ("math range error") in set-up
    ('type: "Exp" exp_param { shift: 1e38 }', r"exp_param: base\^shift = 2\.71828\^1e\+38 overflows a float, so every "
                                              r"output would be infinite"),
    ('type: "Exp" exp_param { base: 10 shift: 400 }', r"exp_param: base\^shift = 10\^400 overflows a float"),
    # shift ** power: OverflowError, ZeroDivisionError, or a complex number np.full refused (TypeError)
    ('type: "Power" power_param { power: 20 scale: 0 shift: 1e30 }',
     r"power_param: with scale 0 every output is shift\^power = 1e\+30\^20, which is not a finite real number"),
    ('type: "Power" power_param { power: 2 scale: 0 shift: inf }', r"power_param: .* = inf\^2, which is not a finite"),
    ('type: "Power" power_param { power: 0.5 scale: 0 shift: -1 }', r"power_param: .* = -1\^0\.5, which is not a finite"),
    ('type: "Power" power_param { power: -1 scale: 0 shift: 0 }', r"power_param: .* = 0\^-1, which is not a finite"),
])
def test_neuron_parameters_whose_constant_is_not_a_float_name_the_fields(write_file, layer, message):
    path = write_file("net.prototxt", f'''
layer {{ name: "d" type: "DummyData" top: "x" dummy_data_param {{ shape {{ dim: 2 dim: 3 }} }} }}
layer {{ name: "n" {layer} bottom: "x" top: "y" }}
''')
    with pytest.raises(GraphError, match=rf"^layer 'n': {message}"):
        minicaffe.Net(path, minicaffe.TEST)
    with pytest.raises(GraphError, match=rf"^layer 'n': {message}"):
        check_net(path, "TEST")


def test_an_empty_shape_too_large_for_numpy_names_the_file_and_the_shape(tmp_path):
    # (2^31-1, 2^31-1, 0, 0) holds 0 elements, so the count check passed, but numpy refuses even an empty
    # array whose other dimensions multiply past 2^60: "ValueError: array is too big".
    blob = caffe_pb2.BlobProto(num=2 ** 31 - 1, channels=2 ** 31 - 1, height=0, width=0)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(WeightsError, match=rf"^{path}: blob: shape \(2147483647, 2147483647, 0, 0\) is empty \(a zero "
                                           r"dimension\), but its other dimensions multiply to 4611686014132420609"):
        io.read_binaryproto(path)


def test_an_empty_input_shape_too_large_for_numpy_names_the_field(write_file):
    path = write_file("net.prototxt", 'layer { name: "in" type: "Input" top: "x" '
                                      'input_param { shape { dim: 4294967296 dim: 4294967296 dim: 0 } } }')
    message = (r"^layer 'in': input_param\.shape \(4294967296, 4294967296, 0\) is empty \(a zero dimension\), but its "
               r"other dimensions multiply to 18446744073709551616")
    with pytest.raises(ShapeError, match=message):
        check_net(path, "TEST")
    with pytest.raises(ShapeError, match=message):
        minicaffe.Net(path, minicaffe.TEST)

