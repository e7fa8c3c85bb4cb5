"""Bringing legacy Caffe nets and solvers up to the current schema.

Caffe's text and binary formats changed several times; Caffe still reads every
old form by rewriting the message right after parsing (``upgrade_proto.cpp``).
minicaffe does the same rewrites, in the same order and with the same results,
so that a net that loads in Caffe loads here identically. The difference is in
failure: where Caffe logs "had one or more problems upgrading ... continuing
anyway" (and quietly drops the setting it could not place), or aborts the
process, we raise :class:`~minicaffe.errors.UpgradeError` naming the file, the
layer and what is wrong.

The net upgrades, applied in this order by :func:`upgrade_net`:

1. **V0 -> V1** (:func:`upgrade_v0_to_v1`). The oldest nets wrote every layer as
   ``layers { layer { name type <all settings flat> } bottom top }`` with a
   lowercase type string ("conv", "innerproduct", ...), and padding was a
   layer of its own. First every ``padding`` layer is removed and its ``pad``
   moved into the convolution/pooling layer that reads its output
   (:func:`fold_v0_padding_layers`); then each flat V0 setting is moved into the
   typed sub-message that now owns it (``num_output`` -> ``convolution_param``
   or ``inner_product_param``, ``cropsize`` -> ``transform_param``, ...), and the
   type string becomes the V1 ``LayerType`` enum.
2. **Data transformation** (:func:`upgrade_data_transformation`). V1 data layers
   once carried ``scale``/``mean_file``/``crop_size``/``mirror`` in their own
   ``data_param``/``image_data_param``/``window_data_param``; these moved to the
   shared ``transform_param``.
3. **V1 -> current** (:func:`upgrade_v1_to_v2`). ``layers { type: CONVOLUTION
   blobs_lr: 1 weight_decay: 1 ... }`` becomes ``layer { type: "Convolution"
   param { lr_mult: 1 decay_mult: 1 } ... }``: the enum becomes a type string,
   the per-blob lists (``param`` names, ``blob_share_mode``, ``blobs_lr``,
   ``weight_decay``) are gathered into one ``ParamSpec`` per blob, and
   everything else (rules, loss weights, stored ``blobs``, every ``*_param``)
   is carried over. Old ``.caffemodel`` files are V1 nets too, holding just
   ``layers { name blobs }``; their weights travel with the layer.
4. **Net inputs** (:func:`upgrade_input_fields`). Net-level ``input`` plus
   ``input_dim`` (four numbers per input) or ``input_shape`` become a single
   ``Input`` layer named "input", placed first so that it precedes its
   consumers. An ``input`` with neither (as old caffemodels store it) carries
   no information and is simply removed.
5. **BatchNorm** (:func:`upgrade_batch_norm`). The first BatchNorm layers
   needed three hand-written ``param { lr_mult: 0 }`` entries to keep the solver
   off their statistics; the layer now enforces that itself and rejects a
   non-zero ``lr_mult``. A BatchNorm layer with three param specs gets their
   ``lr_mult``/``decay_mult`` set to 0 while their names (used for sharing
   statistics between layers) are kept.

The solver upgrade (:func:`upgrade_solver`) turns the deprecated ``solver_type``
enum into the ``type`` string that selects the solver class today.

Each public ``upgrade_*`` function changes its message in place; ``upgrade_net``
and ``upgrade_solver`` return short descriptions of what they changed, so a
caller can tell the user that a file uses a legacy format.
"""

from __future__ import annotations

from ..errors import UpgradeError
from . import caffe_pb2
from .fork_fields import NOTE_FORK_FIELDS, reread_fork_fields
from .upgrade_tables import (  # the tables: type names, enums, where each legacy field goes
    SOLVER_TYPES,
    V0_LAYER_TYPES,
    V1_LAYER_TYPES,
    _LEGACY_TRANSFORM_FIELDS,
    _V0_DIRECT_FIELDS,
    _V0_ENTRY_FIELDS,
    _V0_IGNORED_FIELDS,
    _V0_TRANSFORM_FIELDS,
    _V0_TYPED_FIELDS,
    _V1_DATA_PARAMS,
    _V1_DIRECT_FIELDS,
    _V1_SUB_PARAMS,
)

__all__ = [
    "upgrade_net",
    "upgrade_solver",
    "net_needs_upgrade",
    "solver_needs_upgrade",
    "net_needs_v0_upgrade",
    "net_needs_data_upgrade",
    "net_needs_v1_upgrade",
    "net_needs_input_upgrade",
    "net_needs_batch_norm_upgrade",
    "fold_v0_padding_layers",
    "upgrade_v0_to_v1",
    "upgrade_data_transformation",
    "upgrade_v1_to_v2",
    "upgrade_input_fields",
    "upgrade_batch_norm",
    "V0_LAYER_TYPES",
    "V1_LAYER_TYPES",
    "SOLVER_TYPES",
    "NOTE_V0",
    "NOTE_DATA",
    "NOTE_V1",
    "NOTE_INPUT",
    "NOTE_INPUT_DROPPED",
    "NOTE_BATCH_NORM",
    "NOTE_SOLVER_TYPE",
]

_V1Layer = caffe_pb2.V1LayerParameter

# Short descriptions returned by upgrade_net / upgrade_solver.
NOTE_V0 = "V0 layer definitions (layers { layer { ... } }) -> V1"
NOTE_DATA = "data-layer transformation fields -> transform_param"
NOTE_V1 = "V1 layers (layers { type: ENUM }) -> layer { type: \"Name\" }"
NOTE_INPUT = "net input fields (input/input_dim/input_shape) -> Input layer"
NOTE_INPUT_DROPPED = "net input names without shapes removed"
NOTE_BATCH_NORM = "BatchNorm param specs: lr_mult/decay_mult set to 0"
NOTE_SOLVER_TYPE = "solver_type enum -> type string"


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def _fail(source, layer_name, problem):
    if layer_name is None:
        raise UpgradeError(f"{source}: {problem}")
    raise UpgradeError(f"{source}: layer '{layer_name}': {problem}")


def _is_repeated(field):
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return flag
    return field.label == field.LABEL_REPEATED  # older protobuf runtimes


def _is_message(field):
    return field.type == field.TYPE_MESSAGE


def _store(message, field_name, value):
    """Set (or, for a repeated field, append) ``value`` as ``message.field_name``."""
    field = message.DESCRIPTOR.fields_by_name[field_name]
    if _is_repeated(field):
        getattr(message, field_name).append(value)
    elif _is_message(field):
        _copy_submessage(message, field_name, value)
    else:
        setattr(message, field_name, value)


def _copy_submessage(message, field_name, value):
    """``message.field_name = value`` for a singular message field (marks it present)."""
    target = getattr(message, field_name)
    target.Clear()
    target.SetInParent()
    target.MergeFrom(value)


def _store_at_path(message, path, value):
    """Store ``value`` at a dotted ``path`` such as "convolution_param.pad"."""
    *parents, leaf = path.split(".")
    for name in parents:
        message = getattr(message, name)
    _store(message, leaf, value)


def _set_fields(message):
    return [field.name for field, _ in message.ListFields()]


def _enum_by_name(value, source_enum, target_enum):
    """Translate an enum value between two enums that share value names."""
    return target_enum.Value(source_enum.Name(value))


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------

def net_needs_v0_upgrade(net) -> bool:
    """True if any V1 ``layers`` entry still nests a V0 ``layer``."""
    return any(entry.HasField("layer") for entry in net.layers)


def net_needs_data_upgrade(net) -> bool:
    """True if a V1 data layer keeps preprocessing fields in its own parameters."""
    for entry in net.layers:
        param_name = _v1_data_param_name(entry)
        if param_name is None:
            continue
        param = getattr(entry, param_name)
        if any(param.HasField(name) for name in _LEGACY_TRANSFORM_FIELDS):
            return True
    return False


def net_needs_v1_upgrade(net) -> bool:
    """True if the net has any V1 ``layers`` entries."""
    return len(net.layers) > 0


def net_needs_input_upgrade(net) -> bool:
    """True if the net declares inputs with the net-level ``input`` field."""
    return len(net.input) > 0


def net_needs_batch_norm_upgrade(net) -> bool:
    """True if a BatchNorm layer declares the three legacy param specs and they
    are not yet all frozen (``lr_mult: 0 decay_mult: 0``)."""
    return any(_needs_batch_norm_fix(layer) for layer in net.layer)


def net_needs_upgrade(net) -> bool:
    """True if :func:`upgrade_net` would change ``net``."""
    return (
        net_needs_v0_upgrade(net)
        or net_needs_data_upgrade(net)
        or net_needs_v1_upgrade(net)
        or net_needs_input_upgrade(net)
        or net_needs_batch_norm_upgrade(net)
    )


def solver_needs_upgrade(solver) -> bool:
    """True if the solver uses the deprecated ``solver_type`` enum."""
    return solver.HasField("solver_type")


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

def upgrade_net(net, source: str = "<net>") -> list[str]:
    """Upgrade ``net`` (a ``NetParameter``) in place to the current format.

    Applies, as needed and in Caffe's order, the V0 -> V1, data
    transformation, V1 -> current, net input and BatchNorm upgrades (see the
    module docstring). Works for prototxt nets and for binary caffemodels
    alike. Returns one short description per upgrade applied (empty if the net
    was already current). Raises :class:`UpgradeError`, naming ``source``,
    where Caffe's upgrade would fail or lose information; ``net`` may then be
    partly upgraded.
    """
    notes = []
    if net_needs_v0_upgrade(net):
        upgrade_v0_to_v1(net, source)
        notes.append(NOTE_V0)
    if net_needs_data_upgrade(net):
        upgrade_data_transformation(net)
        notes.append(NOTE_DATA)
    if net_needs_v1_upgrade(net):
        upgrade_v1_to_v2(net, source)
        notes.append(NOTE_V1)
    if net_needs_input_upgrade(net):
        made_layer = upgrade_input_fields(net, source)
        notes.append(NOTE_INPUT if made_layer else NOTE_INPUT_DROPPED)
    if net_needs_batch_norm_upgrade(net):
        upgrade_batch_norm(net)
        notes.append(NOTE_BATCH_NORM)
    if reread_fork_fields(net):
        notes.append(NOTE_FORK_FIELDS)
    return notes


def upgrade_solver(solver, source: str = "<solver>") -> list[str]:
    """Upgrade ``solver`` (a ``SolverParameter``) in place; see :func:`upgrade_net`.

    The deprecated ``solver_type`` enum becomes the ``type`` string. If both are
    given they must name the same solver.
    """
    if not solver_needs_upgrade(solver):
        return []
    enum_name = caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)
    type_name = SOLVER_TYPES[enum_name]
    if solver.HasField("type") and solver.type != type_name:
        raise UpgradeError(
            f"{source}: solver_type: {enum_name} (the deprecated enum, meaning "
            f"type: \"{type_name}\") contradicts type: \"{solver.type}\"; "
            "give only `type`"
        )
    solver.type = type_name
    solver.ClearField("solver_type")
    return [NOTE_SOLVER_TYPE]


# ---------------------------------------------------------------------------
# 1. V0 -> V1
# ---------------------------------------------------------------------------

def upgrade_v0_to_v1(net, source: str = "<net>") -> None:
    """Rewrite a V0 net (``layers { layer { ... } }``) as a V1 net, in place.

    Padding layers are folded first. As in Caffe, only the net's name, inputs
    (``input``/``input_dim``) and ``force_backward`` survive next to the layers.
    """
    for index, entry in enumerate(net.layers):
        _check_v0_entry(entry, index, source)
    fold_v0_padding_layers(net, source)
    upgraded = [_upgrade_v0_layer(entry, source) for entry in net.layers]
    kept = caffe_pb2.NetParameter()
    for name in ("name", "force_backward"):
        if net.HasField(name):
            setattr(kept, name, getattr(net, name))
    kept.input.extend(net.input)
    kept.input_dim.extend(net.input_dim)
    net.Clear()
    net.MergeFrom(kept)
    net.layers.extend(upgraded)


def _check_v0_entry(entry, index, source):
    # Caffe's V0 upgrade keeps only bottom/top of the outer entry and rebuilds
    # the rest from the nested V0 layer, so any V1 field written next to it
    # (or in an entry of a V0 net that has no nested layer) would vanish.
    extra = [name for name in _set_fields(entry) if name not in _V0_ENTRY_FIELDS]
    if not extra:
        return
    if entry.HasField("layer"):
        label = entry.layer.name or entry.name or f"#{index}"
        what = "mixes the V0 format (nested `layer { ... }`) with V1 fields"
    else:
        label = entry.name or f"#{index}"
        what = "is a V1 layer in a V0 net (other entries nest `layer { ... }`); its fields"
    _fail(source, label, f"{what} {', '.join(extra)} would be lost in the V0 upgrade; "
          "write every layer in one format")


def fold_v0_padding_layers(net, source: str = "<net>") -> bool:
    """Remove V0 ``padding`` layers, moving their ``pad`` into their consumer.

    A padding layer must have one bottom and one top, and whatever reads its
    top must be a single-input ``conv`` or ``pool`` layer; that layer gets the
    padding's ``pad`` and reads the padding's bottom instead. Works on the V0
    net in place; returns True if any padding layer was removed.
    """
    producer = {name: None for name in net.input}  # blob -> entry that wrote it last
    kept = []
    removed = False
    for entry in net.layers:
        v0 = entry.layer
        is_padding = v0.type == "padding"
        copy = None
        if is_padding:
            removed = True
        else:
            copy = _V1Layer()
            copy.CopyFrom(entry)
            kept.append(copy)
        for j, bottom in enumerate(entry.bottom):
            if bottom not in producer:
                _fail(source, v0.name or entry.name, f"bottom '{bottom}' is not produced by "
                      "any earlier layer nor declared as a net input")
            pad_entry = producer[bottom]
            if pad_entry is None or pad_entry.layer.type != "padding":
                continue
            _check_padding_consumer(entry, pad_entry, source)
            copy.layer.pad = pad_entry.layer.pad
            copy.bottom[j] = pad_entry.bottom[0]
        for top in entry.top:
            producer[top] = entry
    if removed:
        del net.layers[:]
        net.layers.extend(kept)
    return removed


def _check_padding_consumer(entry, pad_entry, source):
    name = entry.layer.name or entry.name
    pad_name = pad_entry.layer.name
    if entry.layer.type not in ("conv", "pool"):
        _fail(source, name, f"reads the output of padding layer '{pad_name}', but its type "
              f"'{entry.layer.type}' is neither 'conv' nor 'pool' (only those can absorb padding)")
    if len(entry.bottom) != 1:
        _fail(source, name, f"reads padding layer '{pad_name}' but has {len(entry.bottom)} "
              "bottoms; a padded conv/pool layer takes exactly one")
    if len(pad_entry.bottom) != 1 or len(pad_entry.top) != 1:
        _fail(source, pad_name, f"padding layer has {len(pad_entry.bottom)} bottoms and "
              f"{len(pad_entry.top)} tops; it must have exactly one of each")


def _upgrade_v0_layer(entry, source):
    """Translate one V0 ``layers`` entry into a fresh V1 layer."""
    out = _V1Layer()
    out.bottom.extend(entry.bottom)
    out.top.extend(entry.top)
    if not entry.HasField("layer"):
        return out
    v0 = entry.layer
    if v0.HasField("name"):
        out.name = v0.name
    if v0.HasField("type"):
        out.type = _v0_type_to_v1(v0, source)
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field_name in _set_fields(v0):
        _move_v0_field(v0, field_name, out, source)
    return out


def _v0_type_to_v1(v0, source):
    enum_name = V0_LAYER_TYPES.get(v0.type)
    if enum_name is None:
        known = ", ".join(sorted(V0_LAYER_TYPES))
        _fail(source, v0.name, f"unknown V0 layer type '{v0.type}' (known: {known})")
    return _V1Layer.LayerType.Value(enum_name)


def _move_v0_field(v0, field_name, out, source):
    if field_name in _V0_DIRECT_FIELDS or field_name in _V0_IGNORED_FIELDS:
        return
    value = getattr(v0, field_name)
    if field_name in _V0_TRANSFORM_FIELDS:
        _store(out.transform_param, _V0_TRANSFORM_FIELDS[field_name], value)
        return
    homes = _V0_TYPED_FIELDS.get(field_name)
    if homes is None:
        _fail(source, v0.name, f"V0 field '{field_name}' has no V1 equivalent")
    path = homes.get(v0.type)
    if path is None:
        allowed = " or ".join(f"'{t}'" for t in homes)
        _fail(source, v0.name, f"V0 parameter '{field_name}' does not apply to layer type "
              f"'{v0.type}' (only to {allowed}); Caffe would drop it")
    if field_name == "pool":
        value = _enum_by_name(value, caffe_pb2.V0LayerParameter.PoolMethod,
                              caffe_pb2.PoolingParameter.PoolMethod)
    _store_at_path(out, path, value)


# ---------------------------------------------------------------------------
# 2. Data transformation fields
# ---------------------------------------------------------------------------

def _v1_data_param_name(entry):
    if not entry.HasField("type"):
        return None
    return _V1_DATA_PARAMS.get(_V1Layer.LayerType.Name(entry.type))


def upgrade_data_transformation(net) -> None:
    """Move V1 data layers' ``scale``/``mean_file``/``crop_size``/``mirror`` into
    ``transform_param``, in place.

    Like Caffe, every V1 data layer visited ends up with its data sub-message
    and a ``transform_param`` present, even if they stay empty.
    """
    for entry in net.layers:
        param_name = _v1_data_param_name(entry)
        if param_name is None:
            continue
        param = getattr(entry, param_name)
        param.SetInParent()
        entry.transform_param.SetInParent()
        for name in _LEGACY_TRANSFORM_FIELDS:
            if param.HasField(name):
                setattr(entry.transform_param, name, getattr(param, name))
                param.ClearField(name)


# ---------------------------------------------------------------------------
# 3. V1 -> current
# ---------------------------------------------------------------------------

def upgrade_v1_to_v2(net, source: str = "<net>") -> None:
    """Replace the V1 ``layers`` entries by current ``layer`` entries, in place.

    A net that already has ``layer`` entries next to ``layers`` is refused
    (Caffe would discard the ``layer`` entries).
    """
    if len(net.layer) > 0:
        _fail(source, None, f"the net has both V1 `layers` ({len(net.layers)}) and current "
              f"`layer` ({len(net.layer)}) entries; write all layers in one format")
    upgraded = [_upgrade_v1_layer(entry, index, source) for index, entry in enumerate(net.layers)]
    del net.layers[:]
    net.layer.extend(upgraded)


def _upgrade_v1_layer(v1, index, source):
    """Translate one V1 layer into a fresh ``LayerParameter``."""
    label = v1.name or f"#{index}"
    if v1.HasField("layer"):
        _fail(source, label, "has a nested V0 `layer { ... }`; it cannot be upgraded "
              "together with V1 fields")
    unknown = [n for n in _set_fields(v1) if n not in _V1_DIRECT_FIELDS and n not in _V1_SUB_PARAMS]
    if unknown:
        _fail(source, label, "V1 field(s) with no current equivalent: " + ", ".join(unknown))
    out = caffe_pb2.LayerParameter()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        out.type = _v1_type_to_string(v1.type, label, source)
    out.blobs.extend(v1.blobs)
    _upgrade_param_specs(v1, out)
    out.loss_weight.extend(v1.loss_weight)
    for name in _V1_SUB_PARAMS:
        if v1.HasField(name):
            _copy_submessage(out, name, getattr(v1, name))
    return out


def _v1_type_to_string(value, label, source):
    enum_name = _V1Layer.LayerType.Name(value)
    if enum_name not in V1_LAYER_TYPES:
        _fail(source, label, f"V1 layer type {enum_name} has no current type name")
    return V1_LAYER_TYPES[enum_name]


def _param_spec(layer, index):
    """``layer.param[index]``, adding empty specs up to it as needed."""
    while len(layer.param) <= index:
        layer.param.add()
    return layer.param[index]


def _upgrade_param_specs(v1, out):
    # V1 kept one list per attribute; the current format keeps one ParamSpec
    # per parameter blob, as long as the longest of those lists.
    for i, name in enumerate(v1.param):
        _param_spec(out, i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        _param_spec(out, i).share_mode = _enum_by_name(
            mode, _V1Layer.DimCheckMode, caffe_pb2.ParamSpec.DimCheckMode)
    for i, lr in enumerate(v1.blobs_lr):
        _param_spec(out, i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        _param_spec(out, i).decay_mult = decay


# ---------------------------------------------------------------------------
# 4. Net input fields -> Input layer
# ---------------------------------------------------------------------------

def upgrade_input_fields(net, source: str = "<net>") -> bool:
    """Turn net-level ``input`` (+ ``input_shape`` or ``input_dim``) into a leading
    ``Input`` layer named "input", in place.

    ``input_shape`` wins over ``input_dim`` when both are given (as in Caffe).
    Inputs with neither are just removed. Returns True if a layer was made.
    """
    names = list(net.input)
    shapes = _input_shapes(net, names, source)
    if shapes is not None:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.top.extend(names)
        layer.input_param.shape.extend(shapes)
        net.layer.insert(0, layer)  # first, so it precedes every consumer
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")
    return shapes is not None


def _input_shapes(net, names, source):
    """One BlobShape per input name, or None when the net gives no shapes."""
    if len(net.input_shape) > 0:
        if len(net.input_shape) != len(names):
            _fail(source, None, f"{len(names)} net input(s) but {len(net.input_shape)} "
                  "input_shape entries; give exactly one input_shape per input")
        return list(net.input_shape)
    if len(net.input_dim) > 0:
        dims = list(net.input_dim)
        if len(dims) != 4 * len(names):
            _fail(source, None, f"{len(names)} net input(s) but {len(dims)} input_dim "
                  "values; give exactly four (N, C, H, W) per input")
        return [caffe_pb2.BlobShape(dim=dims[4 * i:4 * i + 4]) for i in range(len(names))]
    return None


# ---------------------------------------------------------------------------
# 5. BatchNorm param specs
# ---------------------------------------------------------------------------

def _is_legacy_batch_norm(layer):
    # Caffe recognises the old definition by its three param specs.
    return layer.type == "BatchNorm" and len(layer.param) == 3


def _is_frozen(spec):
    return (spec.HasField("lr_mult") and spec.lr_mult == 0
            and spec.HasField("decay_mult") and spec.decay_mult == 0)


def _needs_batch_norm_fix(layer):
    # Caffe re-applies this upgrade to every such layer on every load; we only
    # report it when it changes something, so an upgraded net reads as current.
    return _is_legacy_batch_norm(layer) and not all(_is_frozen(s) for s in layer.param)


def upgrade_batch_norm(net) -> None:
    """Zero ``lr_mult`` and ``decay_mult`` of the three legacy BatchNorm param
    specs, in place, keeping their names and share modes."""
    for layer in net.layer:
        if _is_legacy_batch_norm(layer):
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0
