"""pycaffe's import name: ``import caffe`` gives minicaffe itself.

Installed as the top-level package ``caffe`` (``pyproject.toml`` maps it from
this folder), so pycaffe code runs unchanged: ``import caffe``,
``from caffe import layers as L, params as P``, ``from caffe.proto import
caffe_pb2``, ``import caffe.draw``, ``caffe.io``, ``caffe.coord_map``.

``caffe`` and every ``caffe.X`` are the very module objects of ``minicaffe``
and ``minicaffe.X`` (not copies): a test that patches ``caffe.io`` patches
``minicaffe.io``, and ``isinstance`` checks agree. A real Caffe installed
earlier on ``sys.path`` (``PYTHONPATH``) is found first, and then this package
is never imported.
"""

import importlib
import importlib.abc
import importlib.util
import sys

import minicaffe

# pycaffe module names with no minicaffe module of the same name.
_RENAMED = {
    "caffe.pycaffe": "minicaffe",      # Net, SGDSolver ... live at the top level
    "caffe._caffe": "minicaffe",       # the C++ extension's names, too
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``caffe.X`` to the already-importable ``minicaffe.X``."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("caffe."):
            return None
        real_name = _RENAMED.get(fullname, "minicaffe." + fullname[len("caffe."):])
        if importlib.util.find_spec(real_name) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=False)

    def create_module(self, spec):
        real_name = _RENAMED.get(spec.name, "minicaffe." + spec.name[len("caffe."):])
        module = importlib.import_module(real_name)
        # The import system stamps the alias's spec on the module it is given;
        # keep the real one so minicaffe's own modules stay what they were.
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state if module.__spec__.loader_state else module.__spec__


if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
    # First, so that the path finder does not load minicaffe's files a second time as caffe.X.
    sys.meta_path.insert(0, _AliasFinder())
sys.modules[__name__] = minicaffe
