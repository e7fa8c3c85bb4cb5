"""Python: a layer written in Python, pycaffe's ``python_param { module layer param_str }``.

``type: "Python"`` imports ``python_param.module`` and instantiates its class
``python_param.layer``, a subclass of :class:`minicaffe.Layer` with pycaffe's
contract: ``setup(bottom, top)``, ``reshape(bottom, top)``, ``forward(bottom,
top)``, ``backward(top, propagate_down, bottom)``. Before ``setup`` the
instance has ``param_str`` (``python_param.param_str``), ``phase``
(``minicaffe.TRAIN``/``TEST``), ``layer_param``, ``name`` and ``type``.
Learnable parameters go in ``self.blobs`` (pycaffe's ``self.blobs.add_blob(*shape)``)
and are saved to and loaded from ``.caffemodel`` files like any layer's. The
layer runs on host (numpy) arrays, in GPU mode too.

Where the module is found, in order:
1. a ``.caffeinit`` entry ``python_layer NAME CLASS FILE`` whose NAME is the
   module (see :mod:`minicaffe.caffeinit`): the module is FILE;
2. ``sys.path`` (a normal import);
3. the folder of the ``.prototxt`` the net was read from.

Modules written for pycaffe say ``import caffe`` and subclass ``caffe.Layer``.
minicaffe installs a ``caffe`` package that is minicaffe itself (see
``minicaffe/caffe_alias``), so they run unchanged. Where that package is not
installed (a source checkout on ``sys.path``) and no real Caffe is importable,
importing a Python layer's module first makes ``caffe`` an alias of
``minicaffe`` in ``sys.modules`` (with ``caffe.io``, ``caffe.proto`` and
``caffe.proto.caffe_pb2``).

An exception raised by the user's class (``__init__``, ``setup``, ``reshape``,
``forward``, ``backward``) reaches the caller as itself, the same object and
type, as in pycaffe (whose own tests expect a layer's ``RuntimeError``): minicaffe
only adds a note naming the layer, its type and class and the method
(``exc.__notes__``, shown under the traceback), and keeps a short report with
the user's own frames in ``exc.minicaffe_context``, which the ``minicaffe``
command prints as its one-line error. A module that fails to import becomes a
:class:`PythonLayerError` with the same report. Under shape inference
(``minicaffe check``) a module that cannot be imported is reported as unknown
shapes (``?``) with the reason, instead of an error; ``setup`` and ``reshape``
run there as usual, on zero-filled memory (Python layers are written against
arrays: ``bottom[0].data.shape``), so the shapes they give are checked.

Importing a module runs its code, so ``minicaffe check`` (the command users
run on nets they were sent) imports none unless given ``--run-python-layers``:
the layer's tops show as ``?`` with a note saying why (see
:func:`python_code_not_run`). ``forward``, ``train`` and the API run them, as
Caffe does: a net with Python layers (or a ``.caffeinit``) should come from a
trusted source.

``python_param.share_in_parallel`` is read and ignored (there is no
multi-GPU training).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import threading
import traceback
from contextlib import contextmanager, nullcontext

import numpy as np

from ..blob import Blob
from ..caffeinit import caffeinit_paths, find_python_layer
from ..errors import GraphError, MinicaffeError
from ..graph import TRAIN
from ..layer import Layer
from ..memory import ShapeUnknown, memory_allowed, shape_inference_active
from ..registry import register

_MINICAFFE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ALIAS_DIR = os.path.join(_MINICAFFE_DIR, "caffe_alias")
_USER_METHODS = ("setup", "reshape", "forward", "backward", "forward_gpu", "backward_gpu")
_context = threading.local()
_file_modules = {}   # real path -> (mtime_ns, module) for modules loaded from .caffeinit FILEs


class PythonLayerError(MinicaffeError):
    """An exception raised by a Python layer's own code, with that code's traceback."""

    def __init__(self, message, layer=None, original=None):
        self.layer = layer
        self.original = original
        super().__init__(message)


# ---------------------------------------------------------------- the prototxt's folder

@contextmanager
def model_folder(folder):
    """Within this block, Python layers also look for their module in ``folder`` (the prototxt's).

    ``None`` (a net given as a NetParameter) keeps the folder of an enclosing
    block, so code that reads a prototxt and builds the Net from the message
    (a solver) can name the folder around it.
    """
    if not folder:
        yield
        return
    stack = getattr(_context, "folders", None)
    if stack is None:
        stack = _context.folders = []
    stack.append(os.path.abspath(folder))
    try:
        yield
    finally:
        stack.pop()


def _current_folder():
    stack = getattr(_context, "folders", None)
    return stack[-1] if stack else None


# ---------------------------------------------------------------- `import caffe`

def install_caffe_alias():
    """Make ``import caffe`` give minicaffe unless a real Caffe is importable; return what ``caffe`` is.

    Returns None when a real Caffe is importable but not yet imported (it is then
    left alone).
    """
    if "caffe" in sys.modules:
        return sys.modules["caffe"]
    try:
        spec = importlib.util.find_spec("caffe")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and os.path.dirname(os.path.abspath(spec.origin)) == _ALIAS_DIR:
        import caffe                     # minicaffe's own `caffe` package: it is minicaffe
        return caffe
    # A namespace package (a stray folder named caffe) has no origin: it is no Caffe.
    if spec is not None and spec.origin not in (None, "namespace"):
        return None
    import minicaffe
    sys.modules["caffe"] = minicaffe
    for sub in ("io", "proto", "proto.caffe_pb2"):
        module = sys.modules.get("minicaffe." + sub)
        if module is not None:
            sys.modules.setdefault("caffe." + sub, module)
    return minicaffe


# ---------------------------------------------------------------- self.blobs

class BlobVec(list):
    """pycaffe's ``BlobVec``: a Python layer's ``self.blobs``, a list of Blobs with ``add_blob``."""

    def __init__(self, layer, blobs=()):
        super().__init__(blobs)
        self._layer = layer

    def add_blob(self, *shape):
        """Append a zero-filled parameter blob of ``shape`` (pycaffe's ``self.blobs.add_blob(2, 3)``)."""
        if len(shape) == 1 and not np.isscalar(shape[0]):
            shape = tuple(shape[0])
        layer = self._layer
        self.append(Blob(shape, dtype=layer.dtype, name=f"{layer.name} param {len(self)}"))


# ---------------------------------------------------------------- the registered type

@register("Python")
class PythonLayer(Layer):
    """Creating a "Python" layer returns an instance of the user's class (see the module's doc)."""

    def __new__(cls, layer_param, phase=TRAIN, dtype=np.float32):
        return create_python_layer(layer_param, phase=phase, dtype=dtype)


# ---------------------------------------------------------------- not running code (`minicaffe check`)

@contextmanager
def python_code_not_run(reason):
    """Within this block, a Python layer's module is neither imported nor looked for: creating the layer
    raises ShapeUnknown (under shape inference, so its tops show as ``?`` with ``reason``; else a GraphError).

    ``minicaffe check`` builds nets in this block unless given ``--run-python-layers``: it is the command
    users run on nets they were sent, and importing a module runs its code.
    """
    previous = getattr(_context, "not_run", None)
    _context.not_run = reason
    try:
        yield
    finally:
        _context.not_run = previous


def _refuse_to_run(layer_param):
    reason = getattr(_context, "not_run", None)
    if reason is None:
        return
    if layer_param.type == "Python":
        what = (f"module '{layer_param.python_param.module or '?'}', "
                f"class '{layer_param.python_param.layer or '?'}'")
    else:
        entry = find_python_layer(layer_param.type)
        what = f"type '{layer_param.type}' registered at {entry.where}" if entry else f"type '{layer_param.type}'"
    message = f"a Python layer ({what}) is code, not run here: {reason}"
    if shape_inference_active():
        raise ShapeUnknown(message)
    raise GraphError(message, layer=layer_param.name)


def create_python_layer(layer_param, phase=TRAIN, dtype=np.float32):
    """Import the module, instantiate the class, set pycaffe's attributes, guard the user's methods."""
    _refuse_to_run(layer_param)
    user_class = load_layer_class(layer_param)
    origin = f"class {user_class.__module__}.{user_class.__qualname__}"
    where = getattr(sys.modules.get(user_class.__module__), "__file__", None)
    if where:
        origin += f" from {where}"
    try:
        layer = user_class(layer_param, phase=phase, dtype=dtype)
    except (PythonLayerError, ShapeUnknown):
        raise
    except Exception as exc:
        _attach_context(exc, layer_param.name, layer_param.type, origin, "__init__")
        raise
    layer.type = layer_param.type
    layer.param_str = layer_param.python_param.param_str
    layer.always_reshape = True     # as Caffe: the user's reshape runs before every Forward
    if not isinstance(layer.blobs, BlobVec):
        layer.blobs = BlobVec(layer, layer.blobs)
    for method_name in _USER_METHODS:
        implementation = getattr(user_class, method_name, None)
        if implementation is None or implementation is getattr(Layer, method_name, None):
            continue   # the base's own method (a clear MinicaffeError already), or none
        setattr(layer, method_name, _guarded(layer, method_name, getattr(layer, method_name), origin))
    return layer


def _guarded(layer, method_name, method, origin):
    # Under shape inference, setup and reshape see (zero-filled) memory: Python
    # layers are written against arrays (bottom[0].data.shape, np.zeros_like).
    shaping = method_name in ("setup", "reshape")

    def call(*args):
        try:
            with memory_allowed() if shaping and shape_inference_active() else nullcontext():
                return method(*args)
        except (PythonLayerError, ShapeUnknown):
            raise
        except Exception as exc:
            _attach_context(exc, layer.name, layer.type, origin, method_name)
            raise
    call.__name__ = method_name
    call.__doc__ = method.__doc__
    call.__wrapped__ = method
    return call


# ---------------------------------------------------------------- finding the class

def load_layer_class(layer_param):
    """The user's Layer subclass for ``layer_param`` (type Python, or a type a .caffeinit registers)."""
    name = layer_param.name
    if layer_param.type == "Python":
        module_name = layer_param.python_param.module
        class_name = layer_param.python_param.layer
        if not module_name:
            raise GraphError("a Python layer needs python_param { module: \"...\" layer: \"...\" }: "
                             "module is not set", layer=name)
        if not class_name:
            raise GraphError(f"python_param.layer (the class to load from module '{module_name}') is not set",
                             layer=name)
        entry = find_python_layer(module_name)
    else:
        entry = find_python_layer(layer_param.type)
        if entry is None:
            raise GraphError(f"layer type '{layer_param.type}' is neither built in nor registered in a "
                             f".caffeinit ({_caffeinit_where()})", layer=name)
        module_name = entry.name
        class_name = layer_param.python_param.layer or entry.class_name
    install_caffe_alias()
    module = _import_module(layer_param, module_name, class_name, entry)
    user_class = getattr(module, class_name, None)
    where = getattr(module, "__file__", None) or module_name
    if user_class is None:
        names = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, Layer)]
        close = difflib.get_close_matches(class_name, names, n=3, cutoff=0.5)
        hint = ("; did you mean " + " or ".join(f"'{n}'" for n in close) + "?") if close else ""
        raise GraphError(f"module '{module_name}' ({where}) has no class '{class_name}'{hint}", layer=name)
    if not (isinstance(user_class, type) and issubclass(user_class, Layer)):
        caffe = sys.modules.get("caffe")
        why = ""
        if caffe is not None and getattr(caffe, "__name__", "") != "minicaffe":
            why = (f"; 'import caffe' found a real Caffe ({getattr(caffe, '__file__', '?')}), so the class "
                   "derives from its caffe.Layer: write 'import minicaffe as caffe', or run without that "
                   "Caffe on sys.path")
        raise GraphError(f"'{class_name}' in module '{module_name}' ({where}) is not a subclass of "
                         f"minicaffe.Layer (caffe.Layer){why}", layer=name)
    return user_class


def _import_module(layer_param, module_name, class_name, entry):
    """Import the module from the .caffeinit FILE, sys.path, or the prototxt's folder."""
    looked = []
    try:
        if entry is not None:
            if os.path.isfile(entry.file):
                return _load_file(entry.name, entry.file)
            looked.append(f"{entry.file} (registered at {entry.where}; it does not exist)")
        else:
            if _find_spec(module_name) is not None:
                return importlib.import_module(module_name)
            looked.append("sys.path")
            folder = _current_folder()
            if folder is not None:
                with _on_sys_path(folder):
                    if _find_spec(module_name) is not None:
                        return importlib.import_module(module_name)
                looked.append(f"{folder} (the prototxt's folder)")
            looked.append(f"no .caffeinit entry '{module_name}' ({_caffeinit_where()})")
    except Exception as exc:
        # The module exists, and its own code failed.
        if shape_inference_active():
            raise ShapeUnknown(f"Python module '{module_name}' failed to import: "
                               f"{_one_line(exc)}") from exc
        raise _user_error(layer_param.name, layer_param.type, f"module '{module_name}'", "import", exc) from exc
    reason = (f"Python module '{module_name}' (class '{class_name}') cannot be imported: not found; looked in "
              + ", ".join(looked))
    if shape_inference_active():
        raise ShapeUnknown(reason)
    raise GraphError(reason, layer=layer_param.name)


def _find_spec(module_name):
    importlib.invalidate_caches()
    try:
        return importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        return None      # a parent package that does not exist


@contextmanager
def _on_sys_path(folder):
    added = folder not in sys.path
    if added:
        sys.path.append(folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _load_file(name, path):
    """The module in ``path``, loaded once (again when the file changes).

    It is ``sys.modules[name]`` unless that name is taken by another file; it is
    then ``name__caffeinit`` (with a number if that is taken too), so a
    registered FILE never replaces a module someone else imported.
    """
    real = os.path.realpath(path)
    mtime = os.stat(real).st_mtime_ns
    cached = _file_modules.get(real)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    module_name, counter = name, 0
    while module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) != real:
        counter += 1
        module_name = f"{name}__caffeinit" + (str(counter) if counter > 1 else "")
    previous = sys.modules.get(module_name)
    spec = importlib.util.spec_from_file_location(module_name, real)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with _on_sys_path(os.path.dirname(real)):
            spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise
    _file_modules[real] = (mtime, module)
    return module


def _caffeinit_where():
    paths = caffeinit_paths()
    if paths:
        return "read " + " and ".join(paths)
    return f"none in {os.getcwd()} or {os.path.expanduser('~')}"


# ---------------------------------------------------------------- reporting user errors

def _user_report(layer_name, layer_type, origin, stage, exc):
    header = (f"layer '{layer_name}' (type {layer_type}, {origin}): {stage} raised "
              f"{type(exc).__name__}: {exc}")
    frames = _user_frames(exc.__traceback__)
    text = header + "\nTraceback (most recent call last, in the layer's code):\n"
    text += "".join(traceback.format_list(frames))
    text += "".join(traceback.format_exception_only(type(exc), exc))
    return text.rstrip("\n")


def _user_error(layer_name, layer_type, origin, stage, exc):
    return PythonLayerError(_user_report(layer_name, layer_type, origin, stage, exc), layer=layer_name,
                            original=exc)


def _attach_context(exc, layer_name, layer_type, origin, stage):
    """Name the layer on the user's own exception (once: a layer inside a layer keeps the innermost)."""
    if getattr(exc, "minicaffe_context", None) is not None:
        return
    try:
        exc.minicaffe_context = _user_report(layer_name, layer_type, origin, stage, exc)
        exc.minicaffe_layer = layer_name
    except AttributeError:      # an exception type without __dict__: leave it as it is
        return
    if hasattr(exc, "add_note"):
        exc.add_note(f"(raised in {stage} of layer '{layer_name}', type {layer_type}, {origin})")


def _user_frames(tb):
    """The traceback's frames from the first one outside minicaffe and importlib on."""
    frames = [frame for frame in traceback.extract_tb(tb) if not frame.filename.startswith("<frozen")]
    start = 0
    while start < len(frames) and _is_ours(frames[start].filename):
        start += 1
    return traceback.StackSummary.from_list(frames[start:])


def _is_ours(filename):
    path = os.path.abspath(filename)
    return path.startswith(_MINICAFFE_DIR + os.sep) or "importlib" in path.split(os.sep)


def _one_line(exc):
    frames = _user_frames(exc.__traceback__)
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}:{exc.lineno})"
    elif frames:
        where = f" ({frames[-1].filename}:{frames[-1].lineno})"
    return f"{type(exc).__name__}: {exc}{where}"
