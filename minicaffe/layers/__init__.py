"""Every built-in layer type; importing this package registers them all.

One module per layer (or small family), each registering its Caffe type name
with ``@register``. Modules are discovered, not listed, so adding a layer means
adding its module (and its tests) and nothing else. Subpackages (``loss/``)
are walked too.

The package doubles as pycaffe's ``caffe.layers``: ``from minicaffe import
layers as L; L.Convolution(...)`` (see ``__getattr__`` below and
:mod:`minicaffe.net_spec`).
"""

import importlib
import pkgutil


def _import_all(package_name, package_path):
    for module in pkgutil.iter_modules(package_path):
        imported = importlib.import_module(f"{package_name}.{module.name}")
        if module.ispkg:
            _import_all(imported.__name__, imported.__path__)


_import_all(__name__, __path__)


def __getattr__(name):
    """``minicaffe.layers`` is also pycaffe's ``caffe.layers`` (``L``), NetSpec's layer factory.

    A capitalised name that is not a module here is a layer type:
    ``L.Convolution(bottom, num_output=20, kernel_size=5)`` gives a
    :class:`minicaffe.net_spec.Top` (see :mod:`minicaffe.net_spec`). The
    implementation modules (lower-case names) import as before.
    """
    if name[:1].isupper():
        from ..net_spec import layers
        return getattr(layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
