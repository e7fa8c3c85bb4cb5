"""Every built-in layer type; importing this package registers them all.

One module per layer (or small family), each registering its Caffe type name
with ``@register``. Modules are discovered, not listed, so adding a layer means
adding its module (and its tests) and nothing else. Subpackages (``loss/``)
are walked too.
"""

import importlib
import pkgutil


def _import_all(package_name, package_path):
    for module in pkgutil.iter_modules(package_path):
        imported = importlib.import_module(f"{package_name}.{module.name}")
        if module.ispkg:
            _import_all(imported.__name__, imported.__path__)


_import_all(__name__, __path__)
