"""Writing nets in Python: pycaffe's ``NetSpec``, ``layers`` (``L``) and ``params`` (``P``).

As in pycaffe::

    import minicaffe as caffe
    from minicaffe import layers as L, params as P

    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[64, 1, 28, 28]), dict(dim=[64, 1])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.relu1 = L.ReLU(n.pool1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.relu1, n.label)
    print(n.to_proto())          # a caffe_pb2.NetParameter; str() is its prototxt

``L.<Type>(*bottoms, **fields)`` describes one layer of that type and returns
its top (a :class:`Top`), a tuple of tops when ``ntop`` > 1, or the layer itself
(a :class:`Function`) when ``ntop=0``. ``in_place=True`` writes the top over
the first bottom. Each keyword goes, as in pycaffe, to:

* the LayerParameter field of that name when it ends in ``param``
  (``param=[dict(lr_mult=1), dict(lr_mult=2)]``, ``transform_param=...``,
  ``convolution_param=...``);
* otherwise the type's own parameter message when it has that field
  (``Convolution`` -> ``convolution_param``, ``InnerProduct`` ->
  ``inner_product_param``, by the LayerParameter field's message type);
* otherwise the LayerParameter itself (``loss_weight``, ``include``,
  ``propagate_down``, ``name``...).

Values are assigned recursively: a dict fills a message, a list (or tuple)
fills a repeated field (a lone value becomes a one-element list), and enums
take their number (``P.Pooling.MAX``) or their name (``pool="MAX"``).

Beyond pycaffe (only where pycaffe raises): types whose parameters live in
another type's message find them there (``Deconvolution`` and ``Im2col`` ->
``convolution_param``, ``RNN`` and ``LSTM`` -> ``recurrent_param``); a
``*Loss`` type also looks in ``loss_param`` (``ignore_label=255``); tuples
count as lists; a message value is copied; an unknown keyword is an
AttributeError naming the layer type and the messages searched.

Names follow pycaffe: a layer is named after its first top; a top assigned to
the NetSpec takes that attribute's name; anonymous tops are named
``<Type><count>`` (``Convolution1``) in the order ``to_proto`` meets them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from google.protobuf.message import Message

from .proto import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "Layers", "Parameters", "layers", "params", "to_proto",
           "assign_proto", "param_name_dict"]


def param_name_dict() -> dict:
    """Layer type -> name of its LayerParameter field, without ``_param``.

    Found as pycaffe finds it, from the fields' message types:
    ``convolution_param`` is a ConvolutionParameter, so ``Convolution`` ->
    ``convolution``.
    """
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                names[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    return names


_PARAM_NAMES = param_name_dict()

# Types that read another type's parameter message (Caffe's own layer code does).
_SHARED_PARAMS = {"Deconvolution": "convolution", "Im2col": "convolution",
                  "RNN": "recurrent", "LSTM": "recurrent"}


def _type_param_field(type_name):
    """The LayerParameter field holding ``type_name``'s own parameters, or None."""
    name = _PARAM_NAMES.get(type_name) or _SHARED_PARAMS.get(type_name)
    return name + "_param" if name else None


def _has_field(message, name) -> bool:
    return name in message.DESCRIPTOR.fields_by_name


def assign_proto(proto, name, val):
    """Set field ``name`` of message ``proto`` from a Python value, recursively.

    Dicts fill (sub)messages, lists and tuples fill repeated fields (each dict
    in a list adds one message), a lone value for a repeated field is a
    one-element list, a protobuf message is copied, anything else is assigned.
    """
    field = proto.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise AttributeError(f"{proto.DESCRIPTOR.name} has no field named '{name}'")
    is_repeated = field.is_repeated
    is_message = field.message_type is not None
    if is_repeated:
        values = list(val) if isinstance(val, (list, tuple)) else [val]
        target = getattr(proto, name)
        for item in values:
            if is_message:
                element = target.add()
                if isinstance(item, Message):
                    element.CopyFrom(item)
                elif isinstance(item, dict):
                    for key, sub in item.items():
                        assign_proto(element, key, sub)
                else:
                    raise TypeError(f"{proto.DESCRIPTOR.name}.{name} takes dicts or "
                                    f"{field.message_type.name} messages, not {type(item).__name__}")
            else:
                target.append(item)
    elif is_message:
        target = getattr(proto, name)
        if isinstance(val, Message):
            target.CopyFrom(val)
        elif isinstance(val, dict):
            for key, sub in val.items():
                assign_proto(target, key, sub)
        else:
            raise TypeError(f"{proto.DESCRIPTOR.name}.{name} takes a dict or a "
                            f"{field.message_type.name} message, not {type(val).__name__}")
    else:
        setattr(proto, name, val)


def to_proto(*tops) -> "caffe_pb2.NetParameter":
    """A NetParameter with every layer needed to compute ``tops`` (names made up)."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Top:
    """One output blob of a layer (the ``n``-th top of the Function ``fn``)."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _update(self, params):
        self.fn._update(params)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)

    def __repr__(self):
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """One layer: its type, its bottoms (Tops of other layers) and its fields."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(bottom)})")
        self.inputs = tuple(inputs)
        self.params = dict(params)
        # ntop and in_place shape the layer; they are not fields of it.
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        if self.in_place and not self.inputs:
            raise ValueError(f"{type_name}: in_place needs a bottom to write over")
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _update(self, params):
        self.params.update(params)

    def _get_name(self, names, autonames):
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottom_names = []
        for bottom in self.inputs:
            bottom._to_proto(layers, names, autonames)
            bottom_names.append(layers[bottom.fn].top[bottom.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom[:self.ntop])
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for key, value in self.params.items():
            self._assign(layer, key, value)
        layers[self] = layer

    def _assign(self, layer, key, value):
        if key.endswith("param"):
            assign_proto(layer, key, value)
            return
        searched = []
        own = _type_param_field(self.type_name)
        if own is not None:
            searched.append(own)
        if self.type_name.endswith("Loss"):
            searched.append("loss_param")
        for field in searched:
            message = getattr(layer, field)
            if _has_field(message, key):
                assign_proto(message, key, value)
                return
        if _has_field(layer, key):
            assign_proto(layer, key, value)
            return
        where = ", ".join(searched + ["LayerParameter"])
        raise AttributeError(f"{self.type_name} layer '{layer.name}': no field named '{key}' "
                             f"(searched {where})")

    def __repr__(self):
        return f"<Function {self.type_name} with {self.ntop} top(s)>"


class NetSpec:
    """Named tops, assigned as attributes (``n.conv1 = L.Convolution(...)``) or items.

    :meth:`to_proto` gives a NetParameter with every layer needed for the
    assigned tops, in the order they were assigned, named after them.
    """

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        if isinstance(value, tuple):
            raise TypeError(f"NetSpec.{name}: a layer with {len(value)} tops gives a tuple; "
                            f"assign each top to a name (n.a, n.b = L.Type(..., ntop={len(value)}))")
        if not isinstance(value, (Top, Function)):
            raise TypeError(f"NetSpec.{name} must be a Top or a Function, not {type(value).__name__}")
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named '{name}'") from None

    def __setitem__(self, name, value):
        self.__setattr__(name, value)

    def __getitem__(self, name):
        return self.tops[name]

    def __delitem__(self, name):
        del self.tops[name]

    def __contains__(self, name):
        return name in self.tops

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def update(self, name, params):
        """Add or change fields of the layer that produces top ``name``."""
        self.tops[name]._update(params)

    def to_proto(self) -> "caffe_pb2.NetParameter":
        names = {value: name for name, value in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def _layer_function(type_name):
    def layer_fn(*bottoms, **fields):
        fn = Function(type_name, bottoms, fields)
        if fn.ntop == 0:
            return fn
        if fn.ntop == 1:
            return fn.tops[0]
        return fn.tops
    layer_fn.__name__ = layer_fn.__qualname__ = type_name
    layer_fn.__doc__ = (f"A {type_name} layer over the given bottom Tops; keywords are its fields "
                        "(see minicaffe.net_spec).")
    return layer_fn


class Layers:
    """pycaffe's ``caffe.layers``: ``Layers().Convolution(bottom, kernel_size=3)`` is a Top."""

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return _layer_function(name)


class _EnumValues:
    """The enum values of one ``<Name>Parameter`` message, as attributes (``P.Pooling.MAX``)."""

    def __init__(self, name, message):
        self._name = name
        self._message = message

    def __getattr__(self, value_name):
        if value_name.startswith("_"):
            raise AttributeError(value_name)
        try:
            return getattr(self._message, value_name)
        except AttributeError:
            values = [v.name for e in self._message.DESCRIPTOR.enum_types for v in e.values]
            raise AttributeError(f"{self._name}Parameter has no enum value '{value_name}' "
                                 f"(it has: {', '.join(values) or 'none'})") from None

    def __dir__(self):
        return [v.name for e in self._message.DESCRIPTOR.enum_types for v in e.values]


class Parameters:
    """pycaffe's ``caffe.params``: ``Parameters().Pooling.MAX`` is PoolingParameter.MAX."""

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        message = getattr(caffe_pb2, name + "Parameter", None)
        if message is None:
            raise AttributeError(f"caffe.proto has no message {name}Parameter")
        return _EnumValues(name, message)


layers = Layers()
params = Parameters()
