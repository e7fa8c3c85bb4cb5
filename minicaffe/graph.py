"""The graph plan: pure passes that turn a NetParameter into the net Caffe would build.

Each pass takes a ``NetParameter`` and returns a new one (or a plan), touching no
layer code, so every rule is testable on its own:

1. :func:`filter_layers` keeps the layers whose include/exclude rules the
   :class:`NetState` (phase, level, stages) meets, as Caffe's ``Net::FilterNet``.
2. :func:`add_automatic_tops` gives a loss layer written without ``top:`` the
   anonymous top Caffe's ``Net::Init`` appends (``Layer::AutoTopBlobs``): named
   ``(automatic)``, loss weight 1, never a bottom of another layer nor a net output.
   :func:`resolve_loss_weights` makes every layer's ``loss_weight`` explicit, one
   per top: types ending in ``Loss`` default to 1 on their first top and 0 on the
   others, every other layer to 0 (the seeds' rule).
3. :func:`insert_splits` gives each consumer of a shared top its own copy through
   a ``Split`` layer, as Caffe's ``InsertSplits``, so that Backward sums the diffs.
4. :func:`plan_net` checks the wiring in file order (unknown bottoms, tops produced
   twice, in-place use), resolves ``param { name }`` sharing to owners, and returns
   a :class:`NetPlan`.

Deviations from Caffe, each fixing a Caffe defect (see docs/compatibility.md):
- Caffe inserts splits before a loss layer's implicit weight of 1 exists, so a
  ``*Loss`` top that another layer also consumes loses its loss gradient; here the
  implicit weight counts, and such a top is split like an explicit one.
- When a split takes over a top's loss weight, Caffe clears *all* of the layer's
  loss weights; here only that top's weight moves to the split.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from .errors import GraphError
from .proto import caffe_pb2

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST
_PHASE_BY_NAME = {"TRAIN": TRAIN, "TEST": TEST}


def phase_value(phase) -> int:
    """``TRAIN``/``TEST`` as the enum value, from a name (any case) or a value."""
    if isinstance(phase, str):
        try:
            return _PHASE_BY_NAME[phase.upper()]
        except KeyError:
            raise ValueError(f"unknown phase {phase!r}: use TRAIN or TEST") from None
    if phase not in (TRAIN, TEST):
        raise ValueError(f"unknown phase {phase!r}: use TRAIN or TEST")
    return int(phase)


def phase_name(phase) -> str:
    return caffe_pb2.Phase.Name(phase_value(phase))


# ---------------------------------------------------------------- 1. NetState filtering

def make_state(net: "caffe_pb2.NetParameter", phase=None, level=None, stages=()) -> "caffe_pb2.NetState":
    """The NetState a net is built in, as Caffe's ``Net(file, phase, level, stages)``.

    The file's own ``state`` is the start; ``phase`` and ``level`` replace its
    values when given, and ``stages`` are added to its stages.
    """
    state = caffe_pb2.NetState()
    state.CopyFrom(net.state)
    if phase is not None:
        state.phase = phase_value(phase)
    if level is not None:
        state.level = int(level)
    state.stage.extend(stages or ())
    return state


def state_meets_rule(state: "caffe_pb2.NetState", rule: "caffe_pb2.NetStateRule") -> bool:
    """Whether ``state`` meets every condition ``rule`` sets (Caffe's ``StateMeetsRule``)."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    state_stages = set(state.stage)
    if any(stage not in state_stages for stage in rule.stage):
        return False
    if any(stage in state_stages for stage in rule.not_stage):
        return False
    return True


def layer_included(layer: "caffe_pb2.LayerParameter", state: "caffe_pb2.NetState") -> bool:
    """Caffe's rule: with include rules, kept if any is met; else dropped if any exclude rule is met."""
    if layer.include and layer.exclude:
        raise GraphError("specify either include rules or exclude rules, not both", layer=layer.name)
    if layer.include:
        return any(state_meets_rule(state, rule) for rule in layer.include)
    return not any(state_meets_rule(state, rule) for rule in layer.exclude)


def filter_layers(net: "caffe_pb2.NetParameter", state: "caffe_pb2.NetState") -> "caffe_pb2.NetParameter":
    """A copy of ``net`` holding only the layers kept in ``state``, with ``state`` recorded."""
    kept = caffe_pb2.NetParameter()
    kept.CopyFrom(net)
    del kept.layer[:]
    kept.state.CopyFrom(state)
    for layer in net.layer:
        if layer_included(layer, state):
            kept.layer.add().CopyFrom(layer)
    return kept


# ---------------------------------------------------------------- 2. loss weights

def is_loss_type(layer_type: str) -> bool:
    """Caffe's convention: types whose name ends in ``Loss`` are loss layers."""
    return layer_type.endswith("Loss")


def default_loss_weights(layer: "caffe_pb2.LayerParameter") -> list:
    """Loss weight per top when none is given: 1 on a loss layer's first top, else 0.

    Loss layers are the ``*Loss`` types and the Python layers whose class name
    ends in ``Loss`` or ``LossLayer`` (``python_param.layer``, or the CLASS a
    ``.caffeinit`` registers for the type); BVLC Caffe gives the latter 0. That
    implicit weight is logged (logger ``minicaffe``, INFO).
    """
    weights = [0.0] * len(layer.top)
    if weights and is_loss_type(layer.type):
        weights[0] = 1.0
    elif weights:
        from .caffeinit import is_python_loss_class, python_class_name
        class_name = python_class_name(layer)
        if is_python_loss_class(class_name):
            weights[0] = 1.0
            import logging
            logging.getLogger("minicaffe").info(
                "layer '%s': Python layer class %s ends in Loss/LossLayer, so its first top '%s' gets the "
                "implicit loss_weight 1 (BVLC Caffe gives 0; set loss_weight to choose)",
                layer.name, class_name, layer.top[0])
    return weights


def resolve_loss_weights(net: "caffe_pb2.NetParameter") -> "caffe_pb2.NetParameter":
    """A copy of ``net`` where each layer lists exactly one ``loss_weight`` per top."""
    resolved = caffe_pb2.NetParameter()
    resolved.CopyFrom(net)
    for layer in resolved.layer:
        if layer.loss_weight:
            if len(layer.loss_weight) != len(layer.top):
                raise GraphError(
                    f"loss_weight is given {len(layer.loss_weight)} times but the layer has "
                    f"{len(layer.top)} tops: give none, or one per top", layer=layer.name)
            continue
        layer.loss_weight.extend(default_loss_weights(layer))
    return resolved


AUTOMATIC_TOP = "(automatic)"


def add_automatic_tops(net: "caffe_pb2.NetParameter") -> tuple:
    """A copy of ``net`` where layers with automatic tops have all they need, and those tops' names.

    Caffe appends anonymous tops to a layer whose class says ``AutoTopBlobs``
    (every loss layer) until it has ``max(MinTopBlobs, ExactNumTopBlobs)``, all
    named ``(automatic)``. minicaffe's blobs are keyed by name, so the second
    and later ones are ``(automatic) 2``, ``(automatic) 3``...
    """
    from .registry import layer_class
    completed = caffe_pb2.NetParameter()
    completed.CopyFrom(net)
    automatic = []
    for layer in completed.layer:
        try:
            cls = layer_class(layer.type, layer.name)
        except GraphError:
            continue        # an unknown type: reported when the layer is created
        if not getattr(cls, "auto_top_blobs", False):
            continue
        needed = max(cls.min_tops or 0, cls.exact_tops or 0)
        while len(layer.top) < needed:
            name = AUTOMATIC_TOP if not automatic else f"{AUTOMATIC_TOP} {len(automatic) + 1}"
            automatic.append(name)
            layer.top.append(name)
    return completed, frozenset(automatic)


# ---------------------------------------------------------------- 3. splits

def split_layer_name(producer: str, blob: str, top_index: int) -> str:
    """Caffe's name for the Split layer of ``blob``, top ``top_index`` of layer ``producer``."""
    return f"{blob}_{producer}_{top_index}_split"


def split_blob_name(producer: str, blob: str, top_index: int, copy_index: int) -> str:
    """Caffe's name for copy ``copy_index`` of a split blob."""
    return f"{blob}_{producer}_{top_index}_split_{copy_index}"


def insert_splits(net: "caffe_pb2.NetParameter") -> "caffe_pb2.NetParameter":
    """A copy of ``net`` with a ``Split`` layer after every top that needs one.

    A top needs a split when it has more than one use, a use being a later
    layer's bottom or the top's own non-zero loss weight. The split's first copy
    carries the loss weight (the producer's weight for that top becomes 0), the
    others feed the consumers in order. Loss weights must be explicit
    (:func:`resolve_loss_weights`); bottoms no earlier layer produced are left as
    they are, for :func:`plan_net` to report.
    """
    last_producer = {}   # blob name -> (layer index, top index) of its latest producer
    source_of = {}       # (layer index, bottom index) -> (layer index, top index)
    use_count = {}       # (layer index, top index) -> number of uses
    for i, layer in enumerate(net.layer):
        for j, blob in enumerate(layer.bottom):
            if blob in last_producer:
                source = last_producer[blob]
                source_of[(i, j)] = source
                use_count[source] = use_count.get(source, 0) + 1
        for j, blob in enumerate(layer.top):
            last_producer[blob] = (i, j)
        for j, weight in enumerate(layer.loss_weight[: len(layer.top)]):
            if weight:
                top_key = last_producer[layer.top[j]]
                use_count[top_key] = use_count.get(top_key, 0) + 1

    split = caffe_pb2.NetParameter()
    split.CopyFrom(net)
    del split.layer[:]
    copies_handed_out = {}
    for i, original in enumerate(net.layer):
        layer = split.layer.add()
        layer.CopyFrom(original)
        for j in range(len(layer.bottom)):
            source = source_of.get((i, j))
            if source is None or use_count[source] <= 1:
                continue
            producer = net.layer[source[0]].name
            copy_index = copies_handed_out.get(source, 0)
            copies_handed_out[source] = copy_index + 1
            layer.bottom[j] = split_blob_name(producer, layer.bottom[j], source[1], copy_index)
        for j, blob in enumerate(layer.top):
            uses = use_count.get((i, j), 0)
            if uses <= 1:
                continue
            weight = layer.loss_weight[j] if j < len(layer.loss_weight) else 0.0
            split_layer = split.layer.add()
            split_layer.name = split_layer_name(layer.name, blob, j)
            split_layer.type = "Split"
            split_layer.bottom.append(blob)
            split_layer.top.extend(split_blob_name(layer.name, blob, j, k) for k in range(uses))
            split_layer.loss_weight.extend([weight] + [0.0] * (uses - 1))
            if weight:
                # The split's first copy stands for the loss use; consumers get the rest.
                layer.loss_weight[j] = 0.0
                copies_handed_out[(i, j)] = 1
    return split


# ---------------------------------------------------------------- 4. the plan

@dataclass(frozen=True)
class SharedParam:
    """Parameter ``index`` of a layer shares the blob owned by ``owner_layer``'s ``owner_index``."""
    name: str
    index: int
    owner_layer: str
    owner_index: int


@dataclass(frozen=True)
class PlannedLayer:
    """One layer of the plan, in run order, with its wiring resolved."""
    index: int
    name: str
    type: str
    bottoms: tuple
    tops: tuple
    loss_weights: tuple          # one per top
    in_place: tuple              # per top: True if it overwrites the bottom at the same index
    shared_params: tuple         # SharedParam for each param this layer does not own
    param: "caffe_pb2.LayerParameter" = field(repr=False, compare=False)
    automatic_tops: tuple = ()   # tops Caffe adds to a loss layer written without them

    @property
    def is_split(self) -> bool:
        return self.type == "Split"

    @property
    def is_loss(self) -> bool:
        return any(self.loss_weights)


@dataclass
class NetPlan:
    """What a Net builds: its layers in run order and its blobs, for one NetState."""
    name: str
    state: "caffe_pb2.NetState"
    layers: list
    blobs: list                  # every blob name, in creation order (split copies included)
    inputs: list                 # tops of Input layers, in order
    outputs: list                # blobs no layer consumes, sorted by name as Caffe's std::set
    force_backward: bool
    net_param: "caffe_pb2.NetParameter" = field(repr=False)
    warnings: list = field(default_factory=list)

    def layer(self, name: str) -> PlannedLayer:
        for planned in self.layers:
            if planned.name == name:
                return planned
        raise KeyError(name)


def plan_net(net: "caffe_pb2.NetParameter", phase=None, level=None, stages=()) -> NetPlan:
    """Plan ``net`` (already upgraded) for a phase, level and stages, as Caffe's ``Net::Init``.

    Raises :class:`GraphError` naming the layer and blob for wiring mistakes.
    """
    state = make_state(net, phase, level, stages)
    filtered = filter_layers(net, state)
    _check_layer_fields(filtered)
    _check_bottoms_known(filtered, net, state)
    completed, automatic_tops = add_automatic_tops(filtered)
    weighted = resolve_loss_weights(completed)
    planned_param = insert_splits(weighted)

    layers, blobs, inputs, available = [], [], [], set()
    known_blobs = set()
    owners = {}  # param name -> (layer name, index, lr_mult or None, decay_mult or None)
    warnings = []
    seen_names = set()
    for index, layer in enumerate(planned_param.layer):
        if layer.name in seen_names:
            warnings.append(f"layer name '{layer.name}' is used more than once; "
                            "weights are matched by name, so the later one wins")
        seen_names.add(layer.name)
        for blob in layer.bottom:
            available.discard(blob)
        in_place = []
        for j, blob in enumerate(layer.top):
            same_as_bottom = j < len(layer.bottom) and layer.bottom[j] == blob
            if blob in known_blobs and not same_as_bottom:
                raise GraphError(
                    f"top '{blob}' is already produced by an earlier layer; a layer may reuse "
                    "a blob name only in place (top j == bottom j)", layer=layer.name, blob=blob)
            in_place.append(same_as_bottom)
            if blob not in known_blobs:
                known_blobs.add(blob)
                blobs.append(blob)
            if blob not in automatic_tops:      # Caffe never counts them as net outputs
                available.add(blob)
            if layer.type == "Input":
                inputs.append(blob)
        shared = _resolve_shared_params(layer, owners)
        layers.append(PlannedLayer(
            index=index, name=layer.name, type=layer.type, bottoms=tuple(layer.bottom),
            tops=tuple(layer.top), loss_weights=tuple(layer.loss_weight), in_place=tuple(in_place),
            shared_params=tuple(shared), param=layer,
            automatic_tops=tuple(name for name in layer.top if name in automatic_tops)))
    return NetPlan(name=net.name, state=state, layers=layers, blobs=blobs, inputs=inputs,
                   outputs=sorted(available), force_backward=net.force_backward,
                   net_param=planned_param, warnings=warnings)


def _check_layer_fields(net):
    for layer in net.layer:
        if not layer.type:
            raise GraphError("has no type", layer=layer.name)
        if layer.propagate_down and len(layer.propagate_down) != len(layer.bottom):
            raise GraphError(
                f"propagate_down is given {len(layer.propagate_down)} times but the layer has "
                f"{len(layer.bottom)} bottoms: give none, or one per bottom", layer=layer.name)


def _check_bottoms_known(net, unfiltered, state):
    """Every bottom must be a top of an earlier layer; say why it is not, when we can tell."""
    produced = set()
    for position, layer in enumerate(net.layer):
        for j, blob in enumerate(layer.bottom):
            if blob not in produced:
                raise GraphError(
                    f"bottom {j} '{blob}' is not produced by any earlier layer"
                    + _why_unknown(blob, position, net, unfiltered, state, produced),
                    layer=layer.name, blob=blob)
        produced.update(layer.top)


def _why_unknown(blob, position, net, unfiltered, state, produced):
    for later in list(net.layer)[position + 1:]:
        if blob in later.top:
            return f" (layer '{later.name}' produces it later; layers run in file order)"
    for layer in unfiltered.layer:
        if blob in layer.top and not layer_included(layer, state):
            return (f" (layer '{layer.name}' produces it but is left out in phase "
                    f"{phase_name(state.phase)}, level {state.level}, stages {list(state.stage)})")
    close = difflib.get_close_matches(blob, sorted(produced), n=3)
    if close:
        return " (did you mean " + ", ".join(f"'{name}'" for name in close) + "?)"
    return ""


def _resolve_shared_params(layer, owners):
    """Caffe's rule: the first layer to name a param owns it; later users share it."""
    shared = []
    named_here = {}
    for index, spec in enumerate(layer.param):
        if not spec.name:
            continue
        if spec.name in named_here:
            raise GraphError(f"param {index} is named '{spec.name}', as param {named_here[spec.name]} of the "
                             "same layer: a layer cannot share a parameter with itself; give each param "
                             "{ name } once per layer", layer=layer.name)
        named_here[spec.name] = index
        lr = spec.lr_mult if spec.HasField("lr_mult") else None
        decay = spec.decay_mult if spec.HasField("decay_mult") else None
        if spec.name not in owners:
            owners[spec.name] = [layer.name, index, lr, decay]
            continue
        owner = owners[spec.name]
        for position, value, label in ((2, lr, "lr_mult"), (3, decay, "decay_mult")):
            if value is None:
                continue
            if owner[position] is None:
                owner[position] = value
            elif owner[position] != value:
                raise GraphError(
                    f"shared param '{spec.name}' has {label} {value:g} here but {owner[position]:g} "
                    f"where layer '{owner[0]}' owns it", layer=layer.name)
        shared.append(SharedParam(spec.name, index, owner[0], owner[1]))
    return shared
