"""Writes that are safe and honest, bad files that get one line, and `check` that runs no code (issue 23).

- Every command given a missing, empty, binary, folder or wrong-kind file exits
  non-zero with exactly one `minicaffe: error:` line and no traceback.
- Atomic writes (minicaffe.atomic, shared by io.atomic_write_bytes and the HDF5
  writer): fsync of the file and its folder around the rename, stale temporary
  files removed, device nodes, FIFOs and folders refused (through symlinks
  too), a full disk or a file-size limit a one-line error with the previous
  file whole; kill -9 inside a snapshot write, then a bit-exact resume.
- `train` refuses a snapshot folder it cannot write before the first iteration.
- Error messages quote at most about 200 characters of a file's line.
- `check` imports no Python layer module unless given --run-python-layers.
"""

import errno
import fcntl
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import minicaffe
from minicaffe import io
from minicaffe.atomic import WriteError
from minicaffe.cli import main
from minicaffe.errors import MinicaffeError
from minicaffe.proto import caffe_pb2

NET = '''name: "small"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 } }
'''

TRAIN_NET = '''name: "train"
layer { name: "data" type: "DummyData" top: "x" top: "t" dummy_data_param {
  shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } data_filler { type: "gaussian" } data_filler { type: "gaussian" } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2
  weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
'''


def solver_text(folder, **fields):
    values = {"net": f'"{folder}/train.prototxt"', "base_lr": 0.01, "lr_policy": '"fixed"', "momentum": 0.9,
              "max_iter": 2, "random_seed": 3, "snapshot_prefix": f'"{folder}/snap"'}
    values.update(fields)
    return "".join(f"{key}: {value}\n" for key, value in values.items())


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def assert_one_line_error(result):
    """Exit status non-zero, exactly one `minicaffe: error:` line (the last on stderr), no traceback."""
    assert result.exit_code != 0, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("minicaffe: error:")]
    assert len(errors) == 1, result.output
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output
    return errors[0]


# ---------------------------------------------------------------- every command x every bad file

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_input")
    (folder / "net.prototxt").write_text(NET)
    (folder / "train.prototxt").write_text(TRAIN_NET)
    (folder / "solver.prototxt").write_text(solver_text(folder))
    (folder / "empty").write_bytes(b"")
    (folder / "binary").write_bytes(bytes(range(256)) * 8)
    (folder / "folder").mkdir()
    net = minicaffe.Net(str(folder / "net.prototxt"), minicaffe.TEST)
    net.save(str(folder / "weights.caffemodel"))
    from PIL import Image
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "image.png")
    return folder


# Each command: how its file argument is given (BAD is replaced by the bad file), and which file of
# the wrong kind it is given (a solver as a net, a net as a solver, a text file as a database...).
COMMANDS = {
    "check": (["check", "BAD"], "solver.prototxt"),
    "forward": (["forward", "BAD"], "solver.prototxt"),
    "time": (["time", "BAD", "--iterations", "1"], "solver.prototxt"),
    "gradcheck": (["gradcheck", "BAD"], "solver.prototxt"),
    "train": (["train", "BAD"], "net.prototxt"),
    "test": (["test", "BAD", "--weights", "{weights}", "--iterations", "1"], "solver.prototxt"),
    "upgrade": (["upgrade", "BAD", "{out}/upgraded.prototxt"], None),   # wrong kind: --kind solver on a net
    "convert-imageset": (["convert-imageset", "{folder}/", "BAD", "{out}/db"], "net.prototxt"),
    "compute-mean": (["compute-mean", "BAD", "{out}/mean.binaryproto"], "net.prototxt"),
    "draw": (["draw", "BAD", "{out}/net.dot"], "solver.prototxt"),
    "parse-log": (["parse-log", "BAD", "{out}/logs"], "weights.caffemodel"),
    "plot": (["plot", "BAD", "--out", "{out}/loss.png"], "net.prototxt"),
    "classify": (["classify", "BAD", "{weights}", "{folder}/image.png"], "solver.prototxt"),
    "detect": (["detect", "BAD", "{weights}", "{folder}/image.png"], "net.prototxt"),
}
NO_FILES = {"device-query", "layers"}
KINDS = ["missing", "empty", "binary", "folder", "wrong kind"]


def test_every_command_that_reads_a_file_is_covered():
    known = set(main.list_commands(None))
    assert known - NO_FILES <= set(COMMANDS), f"add the new command(s) to COMMANDS: {known - NO_FILES - set(COMMANDS)}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_file_is_one_line_and_a_nonzero_exit(files, tmp_path, command, kind):
    if command not in main.list_commands(None):
        pytest.skip(f"no '{command}' command in this checkout")
    argv, wrong = COMMANDS[command]
    bad = {"missing": files / "absent.prototxt", "empty": files / "empty", "binary": files / "binary",
           "folder": files / "folder", "wrong kind": files / (wrong or "net.prototxt")}[kind]
    args = [arg.format(folder=files, out=tmp_path, weights=files / "weights.caffemodel") for arg in argv]
    args = [str(bad) if arg == "BAD" else arg for arg in args]
    if command == "upgrade" and kind == "wrong kind":
        args += ["--kind", "solver"]
    line = assert_one_line_error(invoke(*args))
    if kind in ("missing", "empty", "binary"):
        assert str(bad) in line, line
    if kind == "empty" and command in ("check", "forward", "time", "gradcheck", "test", "draw", "classify",
                                       "detect"):
        assert "defines no layers" in line


def test_the_installed_command_prints_one_line_too(files, tmp_path):
    """The real process: exit status 1, one line, for a missing upgrade input and a binary image list."""
    for args in (["upgrade", files / "absent.prototxt", tmp_path / "x.prototxt"],
                 ["convert-imageset", f"{files}/", files / "binary", tmp_path / "db"]):
        done = subprocess.run([sys.executable, "-m", "minicaffe"] + [str(arg) for arg in args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("minicaffe: error: "), done.stderr
    assert not (tmp_path / "db").exists()


def test_an_empty_net_is_an_error_for_the_api_too(write_file):
    path = write_file("empty.prototxt", 'name: "nothing"\n')
    with pytest.raises(MinicaffeError, match=r"empty.prototxt: defines no layers"):
        minicaffe.Net(path, minicaffe.TEST)


# ---------------------------------------------------------------- atomic writes

def test_stale_temporaries_of_the_same_target_are_removed(tmp_path):
    target = tmp_path / "snap_iter_4.caffemodel"
    stale = tmp_path / "snap_iter_4.caffemodel.k2x_9q0a.tmp"       # mkstemp's name, left by a crash
    live = tmp_path / "snap_iter_4.caffemodel.live0000.tmp"         # another writer holds it now
    other = tmp_path / "snap_iter_2.caffemodel.k2x_9q0a.tmp"        # another target's
    unlike = tmp_path / "snap_iter_4.caffemodel.user-file.tmp"      # not a name mkstemp makes
    for path in (stale, live, other, unlike):
        path.write_bytes(b"partial")
    holder = os.open(live, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        io.atomic_write_bytes(target, b"new")
    finally:
        os.close(holder)
    assert target.read_bytes() == b"new"
    assert not stale.exists()
    assert live.exists() and other.exists() and unlike.exists()


def test_the_file_and_its_folder_are_fsynced_around_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", os.fspath(target)))
        real_replace(source, target)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "model.caffemodel"
    io.atomic_write_bytes(target, b"weights")
    folder = str(tmp_path)
    assert [kind for kind, _ in events] == ["fsync", "fsync", "replace", "fsync"], events
    assert re.fullmatch(re.escape(str(target)) + r"\.\w{8}\.tmp", events[0][1]), events   # the file, by its tmp name
    assert events[1] == ("fsync", folder) and events[3] == ("fsync", folder)
    assert events[2] == ("replace", str(target))


def test_hdf5_snapshots_share_the_writer(tmp_path, monkeypatch):
    pytest.importorskip("h5py")
    from minicaffe.solvers.hdf5 import write_net_hdf5
    net = minicaffe.Net(str(write(tmp_path / "net.prototxt", NET)), minicaffe.TEST)
    (tmp_path / "w.caffemodel.h5.abcdefgh.tmp").write_bytes(b"stale")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    mask = os.umask(0o027)
    try:
        write_net_hdf5(net, tmp_path / "w.caffemodel.h5")
    finally:
        os.umask(mask)
    assert sorted(os.listdir(tmp_path)) == ["net.prototxt", "w.caffemodel.h5"]
    assert (tmp_path / "w.caffemodel.h5").stat().st_mode & 0o777 == 0o640     # the umask's mode
    assert synced.count(str(tmp_path)) == 2 and len(synced) == 3
    with pytest.raises(WriteError, match="character device"):
        write_net_hdf5(net, "/dev/null")


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("make, kind", [
    (lambda path: os.symlink("/dev/null", path), "a character device, not a regular file (the symlink leads to "
                                                 "'/dev/null')"),
    (lambda path: os.mkfifo(path), "a named pipe (FIFO)"),
    (lambda path: os.mkdir(path), "a folder"),
])
def test_devices_fifos_and_folders_are_refused_through_symlinks_too(tmp_path, make, kind):
    path = tmp_path / "snap.caffemodel"
    make(path)
    before = os.lstat(path)
    with pytest.raises(WriteError) as caught:
        io.atomic_write_bytes(path, b"weights")
    assert f"cannot write '{path}': it is {kind}" in str(caught.value)
    after = os.lstat(path)
    assert (before.st_mode, before.st_ino) == (after.st_mode, after.st_ino)     # not replaced
    assert sorted(os.listdir(tmp_path)) == ["snap.caffemodel"]


def test_dev_null_as_a_snapshot_target_names_the_path():
    before = os.stat("/dev/null")
    with pytest.raises(WriteError, match=r"^cannot write '/dev/null': it is a character device"):
        io.write_caffemodel(caffe_pb2.NetParameter(name="x"), "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and os.stat("/dev/null").st_ino == before.st_ino


def test_a_symlink_to_a_regular_file_is_written_through(tmp_path):
    real = tmp_path / "store" / "model.caffemodel"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "latest.caffemodel"
    link.symlink_to(real)
    io.atomic_write_bytes(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "the disk is full"), (errno.EFBIG, "file too large"),
                                         (errno.EIO, "input/output error")])
def test_a_failing_write_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch, code, words):
    target = tmp_path / "model.caffemodel"
    target.write_bytes(b"the previous weights")

    def full(fd, data):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(WriteError) as caught:
        io.atomic_write_bytes(target, b"x" * 100)
    monkeypatch.undo()
    message = str(caught.value)
    assert message == f"cannot write '{target}': {message.split(': ', 1)[1]}" and "\n" not in message
    assert words in message and message.endswith("; the previous file is unchanged")
    assert caught.value.errno == code and isinstance(caught.value, OSError)       # still an OSError
    assert target.read_bytes() == b"the previous weights"
    assert os.listdir(tmp_path) == ["model.caffemodel"]


def test_write_errors_of_the_commands_are_one_line(files, tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    cases = [
        ["upgrade", files / "net.prototxt", tmp_path / "missing" / "net.prototxt"],
        ["upgrade", files / "weights.caffemodel", tmp_path / "a_file" / "w.caffemodel"],
        ["upgrade", files / "net.prototxt", "/dev/null"],
        ["convert-imageset", f"{files}/", files / "list.txt", tmp_path / "missing" / "db"],
        ["convert-imageset", f"{files}/", files / "list.txt", tmp_path / "a_file" / "db"],
    ]
    (files / "list.txt").write_text("image.png 0\n")
    for args in cases:
        line = assert_one_line_error(invoke(*args))
        assert str(args[-1]) in line, line
    existing = tmp_path / "upgraded.prototxt"
    existing.write_text("previous")
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    line = assert_one_line_error(invoke("upgrade", files / "net.prototxt", existing))
    monkeypatch.undo()
    assert line == (f"minicaffe: error: cannot write '{existing}': no space left on the device (the disk is "
                    "full); the previous file is unchanged")
    assert existing.read_text() == "previous"


def test_compute_mean_write_errors_are_one_line(tmp_path):
    pytest.importorskip("lmdb")
    from minicaffe.data.db import Writer
    with Writer(tmp_path / "db") as writer:
        writer.put(b"0", caffe_pb2.Datum(channels=1, height=1, width=2, data=b"\x01\x03", label=0)
                   .SerializeToString())
    for target, words in ((tmp_path / "missing" / "mean.binaryproto", "does not exist"),
                          ("/dev/null", "character device")):
        line = assert_one_line_error(invoke("compute-mean", tmp_path / "db", target))
        assert f"cannot write '{target}'" in line and words in line


def test_a_database_write_that_fails_leaves_no_database(files, tmp_path, monkeypatch):
    pytest.importorskip("lmdb")
    from minicaffe.data import db
    (files / "list.txt").write_text("image.png 0\n")

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(db.Writer, "commit", full)
    line = assert_one_line_error(invoke("convert-imageset", f"{files}/", files / "list.txt", tmp_path / "db"))
    assert "the disk is full" in line or "No space left" in line, line
    assert not (tmp_path / "db").exists()


def test_a_file_size_limit_is_one_line_for_binary_and_hdf5_files(tmp_path):
    """EFBIG for real: a child process whose RLIMIT_FSIZE is smaller than the file (Python ignores SIGXFSZ)."""
    pytest.importorskip("h5py")
    script = textwrap.dedent(f"""
        import resource, sys, numpy as np
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        from minicaffe import io
        from minicaffe.solvers.hdf5 import _atomic_h5
        from minicaffe.errors import MinicaffeError
        for write in (lambda: io.write_binaryproto(np.ones(10000, np.float32), "{tmp_path}/mean.binaryproto"),
                      lambda: _atomic_h5("{tmp_path}/w.h5", lambda h5: h5.create_dataset("x", data=np.ones(10000)))):
            try:
                write()
            except MinicaffeError as exc:
                print(exc)
        """)
    (tmp_path / "mean.binaryproto").write_bytes(b"previous")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [f"cannot write '{tmp_path}/mean.binaryproto': file too large (over the file system's or the "
                     "process's file-size limit, ulimit -f); the previous file is unchanged",
                     f"cannot write '{tmp_path}/w.h5': file too large (over the file system's or the process's "
                     "file-size limit, ulimit -f)"], done.stdout + done.stderr
    assert (tmp_path / "mean.binaryproto").read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["mean.binaryproto"]


# ---------------------------------------------------------------- training and snapshots

@pytest.mark.parametrize("prefix, words", [("missing/snap", "the folder '{tmp}/missing' does not exist"),
                                           ("a_file/snap", "'{tmp}/a_file' is a file, not a folder")])
def test_train_refuses_an_unwritable_snapshot_folder_before_the_first_iteration(tmp_path, monkeypatch, prefix,
                                                                                words):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "train.prototxt").write_text(TRAIN_NET)
    solver = write(tmp_path / "solver.prototxt", solver_text(tmp_path, snapshot_prefix=f'"{tmp_path}/{prefix}"'))
    from minicaffe.solvers import Solver
    monkeypatch.setattr(Solver, "__init__", lambda *a, **k: pytest.fail("the solver was built before the check"))
    result = invoke("train", solver)
    line = assert_one_line_error(result)
    assert line.startswith(f"minicaffe: error: cannot write '{tmp_path}/{prefix}': " + words.format(tmp=tmp_path))
    assert "snapshot_prefix" in line and "Iteration" not in result.stderr


def test_a_solver_that_never_snapshots_is_not_refused(tmp_path):
    (tmp_path / "train.prototxt").write_text(TRAIN_NET)
    solver = write(tmp_path / "solver.prototxt", solver_text(tmp_path, snapshot_prefix=f'"{tmp_path}/no/snap"',
                                                            snapshot_after_train="false"))
    result = invoke("train", solver)
    assert result.exit_code == 0, result.output


def test_a_snapshot_that_cannot_be_written_is_a_minicaffe_error(tmp_path):
    (tmp_path / "train.prototxt").write_text(TRAIN_NET)
    (tmp_path / "out").mkdir()
    solver = minicaffe.Solver(str(write(tmp_path / "solver.prototxt",
                                        solver_text(tmp_path, snapshot_prefix=f'"{tmp_path}/out/snap"'))))
    solver.step(1)
    (tmp_path / "out").rmdir()                        # the folder went away during training
    with pytest.raises(WriteError, match=r"cannot write '.*/out/snap_iter_1.caffemodel': the folder .* does not exist"):
        solver.snapshot()


KILLED_RUN = """
import os, signal, sys
from minicaffe import atomic
import minicaffe

real_replace = os.replace
def replace(source, target):
    # kill -9 inside the second snapshot's write: its caffemodel renamed, its solverstate still a temporary
    if str(target).endswith("snap_iter_4.solverstate"):
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, target)
os.replace = replace
solver = minicaffe.Solver(sys.argv[1])
solver.solve()
"""


def test_kill_9_inside_a_snapshot_write_keeps_the_last_snapshot_and_resume_is_bit_exact(tmp_path):
    (tmp_path / "train.prototxt").write_text(TRAIN_NET)
    fields = dict(max_iter=6, snapshot=2, snapshot_after_train="false")
    solver = write(tmp_path / "solver.prototxt", solver_text(tmp_path, **fields))
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, str(solver)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr
    names = sorted(os.listdir(tmp_path))
    stale = [name for name in names if name.startswith("snap_iter_4.solverstate.")]
    assert len(stale) == 1 and stale[0].endswith(".tmp"), names                 # the write that was cut
    assert "snap_iter_4.solverstate" not in names and "snap_iter_2.solverstate" in names

    straight = minicaffe.Solver(str(write(tmp_path / "straight.prototxt",
                                          solver_text(tmp_path, **fields, snapshot_prefix=f'"{tmp_path}/s/snap"'))))
    (tmp_path / "s").mkdir()
    straight.solve()
    resumed = minicaffe.Solver(str(solver))
    resumed.solve(resume=str(tmp_path / "snap_iter_2.solverstate"))          # the newest whole snapshot
    for name, blobs in straight.net.params.items():
        for index, blob in enumerate(blobs):
            np.testing.assert_array_equal(resumed.net.params[name][index].data, blob.data)
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))     # the stale one was removed
    assert "snap_iter_4.solverstate" in os.listdir(tmp_path)


# ---------------------------------------------------------------- short messages

def test_a_megabyte_line_is_quoted_in_about_200_characters(write_file, tmp_path):
    long_line = 'name: "x" ' + "garbage " * 130_000
    path = write_file("long.prototxt", long_line + "\n")
    line = assert_one_line_error(invoke("check", path))
    assert len(line) < 700, len(line)
    assert "[1040009 characters]" in line and "(at: 'name: \"x\" garbage garbage" in line     # the line, stripped
    names = write_file("names.prototxt", NET.replace('name: "ip"', 'name: "' + "n" * 1_000_000 + '"')
                       .replace('bottom: "x"', 'bottom: "' + "b" * 1_000_000 + '"'))
    line = assert_one_line_error(invoke("check", names))
    assert len(line) < 900 and line.count("[1000000 characters]") == 3, line[:1000]   # a layer and a blob, twice
    image_list = write_file("list.txt", "image.png " + "z" * 1_000_000 + "\n")
    line = assert_one_line_error(invoke("convert-imageset", f"{tmp_path}/", image_list, tmp_path / "db"))
    assert len(line) < 700 and "characters]" in line, line[:1000]


def test_protobufs_own_message_is_capped_too(write_file):
    path = write_file("token.prototxt", "a" * 500_000 + ": 1\n")
    line = assert_one_line_error(invoke("check", path))
    assert len(line) < 900 and line.count("[500003 characters]") == 2, line[:1000]   # the token and the line


# ---------------------------------------------------------------- check runs no Python layer code

MARKER_MODULE = """
import os
open(os.environ["MC_MARKER"], "a").write("imported\\n")
import caffe


class Doubler(caffe.Layer):
    def setup(self, bottom, top):
        open(os.environ["MC_MARKER"], "a").write("setup\\n")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data
"""

PY_NET = NET + '''layer { name: "py" type: "Python" bottom: "y" top: "z"
  python_param { module: "mc_marker_layer" layer: "Doubler" } }
layer { name: "relu" type: "ReLU" bottom: "z" top: "r" }
'''


@pytest.fixture
def marker(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "caffe", raising=False)
    monkeypatch.delitem(sys.modules, "mc_marker_layer", raising=False)
    (tmp_path / "mc_marker_layer.py").write_text(MARKER_MODULE)
    path = tmp_path / "marker.txt"
    monkeypatch.setenv("MC_MARKER", str(path))
    yield path
    sys.modules.pop("mc_marker_layer", None)
    from minicaffe.layers import python_layer
    python_layer._file_modules.clear()


def test_check_does_not_import_a_python_layer_without_the_flag(tmp_path, marker):
    path = write(tmp_path / "py.prototxt", PY_NET)
    result = invoke("check", path)
    assert result.exit_code == 0, result.output
    assert not marker.exists() and "mc_marker_layer" not in sys.modules
    assert re.search(r"py\s+Python\s+y -> z \?", result.output)
    assert re.search(r"relu\s+ReLU\s+z -> r \?", result.output)
    assert re.search(r"ip\s+InnerProduct\s+x -> y \(2x2\)", result.output)          # the rest is checked
    assert ("note: shapes from layer 'py' on are unknown (?): a Python layer (module 'mc_marker_layer', class "
            "'Doubler') is code, not run here: `minicaffe check` imports no Python layer's module unless given "
            "--run-python-layers") in result.output
    assert result.output.rstrip().endswith("OK")

    flagged = invoke("check", path, "--run-python-layers")
    assert flagged.exit_code == 0, flagged.output
    assert marker.read_text() == "imported\nsetup\n"
    assert re.search(r"py\s+Python\s+y -> z \(2x2\)", flagged.output) and "?" not in flagged.output


def test_forward_and_the_api_run_python_layers_as_caffe_does(tmp_path, marker):
    path = write(tmp_path / "py.prototxt", PY_NET)
    result = invoke("forward", path)
    assert result.exit_code == 0, result.output
    assert marker.read_text().startswith("imported\nsetup\n")
    from minicaffe.check import check_net
    net = check_net(str(path), run_python_layers=True)
    assert net.blobs["z"].shape == (2, 2)
    assert check_net(str(path)).unknown_shapes >= {"z", "r"}


def test_check_does_not_import_a_caffeinit_layer_without_the_flag(tmp_path, marker):
    (tmp_path / ".caffeinit").write_text("python_layer doubler Doubler mc_marker_layer.py\n")
    path = write(tmp_path / "registered.prototxt",
                 NET + 'layer { name: "d" type: "doubler" bottom: "y" top: "z" }\n')
    result = invoke("check", path)
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    assert re.search(r"d\s+doubler\s+y -> z \?", result.output)
    assert f"a Python layer (type 'doubler' registered at {tmp_path / '.caffeinit'}:1) is code" in result.output
    flagged = invoke("check", path, "--run-python-layers")
    assert flagged.exit_code == 0 and marker.read_text() == "imported\nsetup\n", flagged.output
    assert re.search(r"d\s+doubler\s+y -> z \(2x2\)", flagged.output)


# ---------------------------------------------------------------- the command's last resort

def test_an_os_error_no_reader_named_is_still_one_line(files, monkeypatch):
    import minicaffe.run

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/blob.npy")
    monkeypatch.setattr(minicaffe.run, "run_forward", denied)
    line = assert_one_line_error(invoke("forward", files / "net.prototxt"))
    assert line == "minicaffe: error: /somewhere/blob.npy: permission denied"
    debug = CliRunner().invoke(main, ["--debug", "forward", str(files / "net.prototxt")])
    assert isinstance(debug.exception, PermissionError)             # --debug: the traceback
