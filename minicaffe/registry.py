"""Layer types by their Caffe name.

Each layer module registers its class with ``@register("TypeName")``; the Net
creates layers with :func:`create_layer`. An unknown type is an error naming the
layer and the closest known type names.
"""

from __future__ import annotations

import difflib

from .errors import GraphError

_LAYER_CLASSES: dict = {}


def register(type_name: str, *aliases: str):
    """Class decorator: make a Layer subclass the implementation of ``type_name``."""
    def decorate(cls):
        cls.type = type_name
        for name in (type_name,) + aliases:
            if name in _LAYER_CLASSES and _LAYER_CLASSES[name] is not cls:
                raise ValueError(f"layer type '{name}' is registered twice")
            _LAYER_CLASSES[name] = cls
        return cls
    return decorate


def known_types() -> list:
    _load_builtin_layers()
    return sorted(_LAYER_CLASSES)


def registered_types():
    """The type names registered so far (built-ins and plugins loaded up to now)."""
    return list(_LAYER_CLASSES)


def layer_class(type_name: str, layer_name=None):
    """The class registered for ``type_name``; a GraphError naming close matches if none is."""
    _load_builtin_layers()
    try:
        return _LAYER_CLASSES[type_name]
    except KeyError:
        pass
    # Fallback: a type registered in a .caffeinit (`python_layer NAME CLASS FILE`) is a
    # Python layer; the "Python" factory finds its module and class from the type name.
    from .caffeinit import find_python_layer
    if find_python_layer(type_name) is not None:
        return _LAYER_CLASSES["Python"]
    from .fork_names import FORK_OF_TYPE
    fork = FORK_OF_TYPE.get(type_name)
    if fork is not None:
        raise GraphError(f"layer type '{type_name}' comes from {fork}, a Caffe fork whose layer minicaffe does "
                         "not implement; run the net up to a layer before it (`--end LAYER`, "
                         "`Net(..., end=LAYER)`), or add the type from a plugin (docs/compatibility.md)",
                         layer=layer_name)
    close = difflib.get_close_matches(type_name, list(_LAYER_CLASSES), n=3, cutoff=0.5)
    hint = ("; did you mean " + " or ".join(f"'{name}'" for name in close) + "?") if close else ""
    raise GraphError(f"unknown layer type '{type_name}'{hint} "
                     f"(minicaffe knows {len(_LAYER_CLASSES)} types: see `minicaffe layers`; a type from a "
                     "Caffe fork can come from a plugin, or `--end LAYER` runs the net up to a layer before it)",
                     layer=layer_name)


def create_layer(layer_param, phase, dtype):
    """Instantiate the layer ``layer_param`` describes (not yet set up)."""
    return layer_class(layer_param.type, layer_param.name)(layer_param, phase=phase, dtype=dtype)


def _load_builtin_layers():
    # Importing the package runs every layer module's @register; plugins register theirs on loading.
    from . import layers  # noqa: F401
    from .plugins import load_plugins
    load_plugins()
