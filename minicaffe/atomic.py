"""Writing files so that a crash, a power loss or a full disk never leaves a half-written one.

Every file minicaffe writes for keeps (``.caffemodel``, ``.solverstate``, their
``.h5`` forms, ``.binaryproto`` means, upgraded nets, pictures) goes through
:func:`atomic_write`:

1. the target is checked: a path that is (or is a symlink to) something other
   than a regular file, such as ``/dev/null`` or a folder, is refused, since
   renaming over it would replace the node and writing through it would not
   be a file; a symlink to a regular file is written through (its target is
   replaced, the link stays);
2. temporary files of the same target left by an earlier crash
   (``<name>.<random>.tmp`` in its folder) are removed, unless a live writer
   holds them (a lock);
3. the content goes to a new ``<name>.<random>.tmp`` in the same folder, which
   is fsynced, given the mode ``open(path, "w")`` would give (the umask's), and
   the folder is fsynced;
4. the temporary file is renamed over the target (atomic on POSIX), and the
   folder is fsynced again, so the rename itself survives a power loss.

Any ``OSError`` on the way (a missing folder, a file where a folder should be,
permission, a full disk, a file-size limit) removes the temporary file and
raises :class:`WriteError`: a one-line :class:`~minicaffe.errors.MinicaffeError`
naming the path and the cause, that is also an ``OSError`` (with ``errno``),
so code that catches ``OSError`` still does. The previous file, if any, is
untouched.
"""

from __future__ import annotations

import errno as errno_codes
import os
import re
import stat
import tempfile

from .errors import MinicaffeError

try:
    import fcntl
except ImportError:        # pragma: no cover - Windows: no locks, stale files are removed all the same
    fcntl = None

_REASONS = {
    errno_codes.ENOSPC: "no space left on the device (the disk is full)",
    errno_codes.EFBIG: "file too large (over the file system's or the process's file-size limit, ulimit -f)",
    errno_codes.EDQUOT: "disk quota exceeded",
    errno_codes.EROFS: "the file system is read-only",
    errno_codes.EACCES: "permission denied",
    errno_codes.EPERM: "operation not permitted",
    errno_codes.EIO: "input/output error (a failing disk or network file system?)",
}


class WriteError(MinicaffeError, OSError):
    """A file that could not be written: names the path and why; the previous file is unchanged.

    Also an ``OSError`` whose ``errno`` and ``filename`` are the failure's.
    """

    def __init__(self, path, reason, errno=None):
        self.path = os.fspath(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
        self.reason = reason
        text = f"cannot write '{self.path}': {reason}"
        super().__init__(text)
        self.errno = errno
        self.strerror = reason
        self.filename = self.path

    def __str__(self):
        return self.args[0]


def os_error_reason(exc) -> str:
    """A short reason for an OSError: a plain-words version of its errno, else its strerror."""
    reason = _REASONS.get(exc.errno)
    if reason is None:
        reason = exc.strerror or str(exc) or type(exc).__name__
        reason = reason[:1].lower() + reason[1:]
    return reason


def give_default_mode(path) -> None:
    """The permissions ``open(path, "w")`` would have given (mkstemp makes files owner-only, 0600),
    so a snapshot or a saved caffemodel is as readable as the files Caffe writes: 0666 less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


# ---------------------------------------------------------------- the one writer

def atomic_write(path, fill, lock=True) -> None:
    """Write ``path`` through a temporary file, fsyncs and a rename (see the module's doc).

    ``fill(fd, tmp_path)`` writes the content: to the open descriptor ``fd``, or
    by opening ``tmp_path`` itself (h5py does; pass ``lock=False`` then, since
    HDF5 takes its own lock on the file it writes and would find ours).
    Raises :class:`WriteError` for any OSError, with the previous file intact.
    """
    shown = _printable(path)
    target = _target(path, shown)
    folder = os.path.dirname(os.path.abspath(target)) or os.curdir
    existed = os.path.exists(target)
    _remove_stale(folder, os.path.basename(target))
    tmp_path, replaced = None, False
    try:
        handle, tmp_path = tempfile.mkstemp(prefix=os.path.basename(target) + ".", suffix=".tmp", dir=folder)
        try:
            if lock and fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)      # a live write: not stale to another writer
            fill(handle, tmp_path)
            os.fsync(handle)                             # the content, before the name points at it
            give_default_mode(tmp_path)
            fsync_folder(folder)                         # the temporary entry
            os.replace(tmp_path, target)
            tmp_path, replaced = None, True
            fsync_folder(folder)                         # the rename
        finally:
            os.close(handle)
    except OSError as exc:
        if isinstance(exc, WriteError):
            raise
        reason = _reason(exc, folder, existed and not replaced)
        if replaced:
            reason = f"the file was written, but making the rename durable failed: {reason}"
        raise WriteError(shown, reason, exc.errno) from None
    finally:
        if tmp_path is not None:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass


def atomic_write_bytes(path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (:func:`atomic_write`)."""
    def fill(handle, tmp_path):
        view = memoryview(payload)
        while view:
            written = os.write(handle, view)
            view = view[written:]
    atomic_write(path, fill)


def check_folder_writable(path, what) -> None:
    """Refuse early a ``path`` whose folder cannot take new files (Caffe's CheckSnapshotWritePermissions):
    creates and removes a temporary file there. ``what`` names the path in the error (``snapshot_prefix``)."""
    shown = _printable(path)
    folder = os.path.dirname(os.path.abspath(shown)) or os.curdir
    try:
        handle, probe = tempfile.mkstemp(prefix=os.path.basename(shown) + ".", suffix=".tmp", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise WriteError(shown, f"{_reason(exc, folder, False)} ({what}, checked before starting, "
                         "as Caffe does)", exc.errno) from None


def fsync_folder(folder) -> None:
    """fsync a folder, so the names created or renamed in it are on disk (a no-op where folders cannot be
    opened, as on Windows, or where the file system does not support it)."""
    if os.name == "nt":       # pragma: no cover
        return
    handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(handle)
    except OSError as exc:
        if exc.errno not in (errno_codes.EINVAL, errno_codes.ENOTSUP, errno_codes.EBADF):
            raise
    finally:
        os.close(handle)


# ---------------------------------------------------------------- helpers

def _printable(path) -> str:
    try:
        text = os.fspath(path)
    except TypeError:
        raise WriteError(repr(path)[:200], "not a file path") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "\0" in text:
        raise WriteError(repr(text)[:200], "the path contains a NUL byte")
    return text


def _target(path, shown):
    """The regular file to replace: ``path``, or the file its symlink leads to. Anything else is refused."""
    final = os.path.realpath(path) if os.path.islink(path) else path
    via = f" (the symlink leads to '{final}')" if final != path else ""
    try:
        info = os.stat(final)
    except FileNotFoundError:
        return final          # a new file (a missing folder is reported when the file is created)
    except OSError:
        return final          # an unreadable path: creating the temporary file says why
    if not stat.S_ISREG(info.st_mode):
        raise WriteError(shown, f"it is {_kind(info.st_mode)}, not a regular file{via}; minicaffe writes "
                         "regular files only (give a file path)", errno_codes.EISDIR
                         if stat.S_ISDIR(info.st_mode) else errno_codes.EINVAL)
    return final


def _kind(mode) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _reason(exc, folder, existed) -> str:
    if isinstance(exc, FileNotFoundError) and not os.path.isdir(folder):
        reason = f"the folder '{folder}' does not exist"
    elif isinstance(exc, NotADirectoryError) or (exc.errno == errno_codes.ENOTDIR):
        reason = f"'{_first_non_folder(folder)}' is a file, not a folder"
    elif isinstance(exc, PermissionError):
        reason = f"permission denied (in the folder '{folder}')"
    else:
        reason = os_error_reason(exc)
    if existed:
        reason += "; the previous file is unchanged"
    return reason


def _first_non_folder(folder) -> str:
    """The first component of ``folder`` that exists and is not a folder (what ENOTDIR is about)."""
    parts = os.path.abspath(folder).split(os.sep)
    for end in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:end]) or os.sep
        if os.path.exists(prefix) and not os.path.isdir(prefix):
            return prefix
    return folder


def _remove_stale(folder, name) -> None:
    """Remove ``name.<random>.tmp`` files in ``folder`` (mkstemp's names) that no live writer holds."""
    pattern = re.compile(re.escape(name) + r"\.[a-z0-9_]{8}\.tmp\Z")
    try:
        entries = os.listdir(folder)
    except OSError:
        return                 # a missing folder: reported when the file is created
    for entry in entries:
        if not pattern.match(entry):
            continue
        stale = os.path.join(folder, entry)
        try:
            handle = os.open(stale, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue           # a symlink, gone already, or not ours to read
        try:
            if not stat.S_ISREG(os.fstat(handle).st_mode):
                continue
            if fcntl is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue   # another writer is filling it now
            try:
                os.unlink(stale)
            except OSError:
                pass
        finally:
            os.close(handle)
