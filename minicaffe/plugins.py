"""Plugins: layer types and their parameter fields from other packages.

A package that brings the layers of an in-house (or any other) Caffe fork
declares an entry point in the group ``minicaffe.layers``::

    [project.entry-points."minicaffe.layers"]
    my_fork = "my_fork_layers"          # a module, or "module:function"

minicaffe loads every such entry point before it looks up a layer type or
parses a net (once per process; ``MINICAFFE_PLUGINS=0`` turns loading off).
Loading the module (or calling the function) registers the layers with
``@minicaffe.registry.register("Type")`` and their parameter fields with
:func:`add_layer_field`, which makes ``LayerParameter`` know the field at the
fork's own number: binary ``.caffemodel`` files keep it, and text files name
it plainly (``my_param { alpha: 2 }``), as the fork's files do. The field is
a proto2 extension underneath (``caffe.proto`` leaves every unused number of
``LayerParameter`` open for them); a layer reads it with :func:`layer_field`.
``minicaffe layers`` shows each plugin type with the package it came from.
``examples/plugin/`` is a complete, installable example.

A plugin that fails to load is reported as a warning naming it, and the
rest of minicaffe goes on working.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import warnings

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .errors import MinicaffeError, MinicaffeWarning

ENTRY_POINT_GROUP = "minicaffe.layers"
# The package every plugin field is declared in: text output writes a plugin field as
# "[minicaffe_plugins.NAME]" (protobuf's extension syntax) before to_text strips it.
_EXTENSION_PACKAGE = "minicaffe_plugins"

_fields = {}            # field name -> extension FieldDescriptor
_loaded = False
_loading = False
_plugin_of_type = {}    # layer type -> "distribution (entry point)" that registered it


def add_layer_field(name: str, number: int, message_class):
    """Make ``LayerParameter`` carry ``name`` (a ``message_class`` message) at field ``number``.

    ``message_class`` is a protobuf message class (e.g. from the plugin's own
    ``_pb2`` module, compiled by ``protoc``). ``number`` is the fork's own field
    number, so its binary files read back; it must be one minicaffe's schema
    leaves open. Returns the field's descriptor (pass it to
    ``layer_param.Extensions[...]``, or use :func:`layer_field`).
    """
    from .proto import caffe_pb2

    layer_descriptor = caffe_pb2.LayerParameter.DESCRIPTOR
    if name in layer_descriptor.fields_by_name:
        raise MinicaffeError(f"plugin field '{name}': LayerParameter already has a field of that name")
    if name in _fields:
        if _fields[name].number == number and _fields[name].message_type is message_class.DESCRIPTOR:
            return _fields[name]
        raise MinicaffeError(f"plugin field '{name}' is added twice, with different numbers or types")
    taken = layer_descriptor.fields_by_number.get(number)
    if taken is not None:
        raise MinicaffeError(f"plugin field '{name}': number {number} is LayerParameter's '{taken.name}'")
    other = next((field for field in _fields.values() if field.number == number), None)
    if other is not None:
        raise MinicaffeError(f"plugin field '{name}': number {number} is already plugin field '{other.name}'")
    if not any(start <= number < end for start, end in layer_descriptor.extension_ranges):
        raise MinicaffeError(f"plugin field '{name}': number {number} is reserved by minicaffe (5000-5101)")

    pool = descriptor_pool.Default()
    declaring_file = descriptor_pb2.FileDescriptorProto(
        name=f"{_EXTENSION_PACKAGE}/{name}.proto", package=_EXTENSION_PACKAGE, syntax="proto2",
        dependency=sorted({"caffe.proto", message_class.DESCRIPTOR.file.name}))
    declaring_file.extension.add(
        name=name, number=number, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name="." + message_class.DESCRIPTOR.full_name, extendee=".caffe.LayerParameter")
    pool.Add(declaring_file)
    message_factory.GetMessageClassesForFiles([declaring_file.name], pool)
    field = pool.FindExtensionByName(f"{_EXTENSION_PACKAGE}.{name}")
    _fields[name] = field
    return field


def layer_field(layer_param, name: str):
    """The plugin field ``name`` of ``layer_param`` (its defaults when the file does not set it)."""
    load_plugins()
    try:
        field = _fields[name]
    except KeyError:
        raise MinicaffeError(f"no plugin added a LayerParameter field named '{name}' "
                             f"(plugin fields: {', '.join(sorted(_fields)) or 'none'})") from None
    return layer_param.Extensions[field]


def plugin_field_names() -> frozenset:
    return frozenset(_fields)


def extension_text_name(name: str) -> str:
    """How protobuf's text format spells plugin field ``name``."""
    return f"[{_EXTENSION_PACKAGE}.{name}]"


_EXTENSION_IN_TEXT = re.compile(r"\[" + _EXTENSION_PACKAGE + r"\.(\w+)\]")


def plain_field_names(text: str) -> str:
    """Text output with plugin fields under their plain names, as the fork's own files write them."""
    return _EXTENSION_IN_TEXT.sub(r"\1", text) if _fields else text


def plugin_of(type_name: str):
    """``"distribution (entry point)"`` for a type a plugin registered, else None."""
    return _plugin_of_type.get(type_name)


def load_plugins():
    """Load every ``minicaffe.layers`` entry point once (a no-op after the first call)."""
    global _loaded, _loading
    if _loaded or _loading:
        return
    _loading = True
    try:
        if os.environ.get("MINICAFFE_PLUGINS", "1").strip().lower() in ("0", "false", "no", "off"):
            return
        from .registry import registered_types
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution = entry_point.dist.name if entry_point.dist is not None else "?"
            origin = f"{distribution} ({entry_point.name})"
            before = set(registered_types())
            try:
                loaded = entry_point.load()
                if callable(loaded) and not isinstance(loaded, type):
                    loaded()
            except Exception as exc:  # a broken plugin must not take minicaffe down with it
                warnings.warn(MinicaffeWarning(
                    f"plugin {origin} ({entry_point.value}) failed to load and is skipped: "
                    f"{type(exc).__name__}: {exc}"), stacklevel=2)
                continue
            for type_name in set(registered_types()) - before:
                _plugin_of_type[type_name] = origin
    finally:
        _loading = False
        _loaded = True
