"""DummyData: tops of given shapes filled by fillers, for tests and benchmarks.

``dummy_data_param`` gives the shapes as ``shape`` (once for all tops, or once
per top) or the legacy 4-D ``num``/``channels``/``height``/``width`` (each once
or once per top; not mixed with ``shape``). ``data_filler`` is given 0 times
(constant 0), once (for every top) or once per top. As in Caffe, a top with a
constant filler is filled once at setup; a top with any other filler is refilled
on every Forward (and left unfilled until the first one).

GPU: a constant top was filled once at setup, so Forward has nothing to do for
it (on either device). A top with any other filler is drawn on the host at each
Forward, as on the CPU and from the same random stream (so both devices give
the same values), into a host buffer of the layer's, and copied to the top's
device memory: one host->device copy per refilled top and Forward, and none
back, however the layers after it wrote the top.
"""

from ..blob import Blob, check_shape
from ..errors import GraphError
from ..fillers import FILLER_TYPES, check_filler, fill
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register


@register("DummyData")
class DummyDataLayer(Layer):
    exact_bottoms = 0
    min_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.dummy_data_param
        count = len(top)
        if len(param.data_filler) not in (0, 1, count):
            raise GraphError(f"dummy_data_param gives {len(param.data_filler)} data_filler(s) for {count} tops: "
                             "give none, one, or one per top", layer=self.name)
        legacy = [("num", param.num), ("channels", param.channels),
                  ("height", param.height), ("width", param.width)]
        if any(len(values) for _, values in legacy):
            if len(param.shape):
                raise GraphError("dummy_data_param: give either shape or num/channels/height/width, not both",
                                 layer=self.name)
            for field, values in legacy:
                if len(values) not in (1, count):
                    raise GraphError(f"dummy_data_param gives {len(values)} '{field}' value(s) for {count} tops: "
                                     "give it once, or once per top", layer=self.name)
            shapes = [tuple(int(values[0] if len(values) == 1 else values[i]) for _, values in legacy)
                      for i in range(count)]
        else:
            if len(param.shape) not in (1, count):
                raise GraphError(f"dummy_data_param gives {len(param.shape)} shape(s) for {count} tops: "
                                 "give one shape, or one per top", layer=self.name)
            shapes = [tuple(param.shape[0 if len(param.shape) == 1 else i].dim) for i in range(count)]
        for index, (blob, shape) in enumerate(zip(top, shapes)):
            check_shape(shape, f"dummy_data_param shape of top {index}", self.name)
            blob.reshape(shape)

        if len(param.data_filler) == 0:
            default = caffe_pb2.FillerParameter()
            default.type = "constant"
            default.value = 0
            self.fillers = [default] * count
        elif len(param.data_filler) == 1:
            self.fillers = [param.data_filler[0]] * count
        else:
            self.fillers = list(param.data_filler)
        for filler in self.fillers:
            if filler.type not in FILLER_TYPES:
                raise GraphError(f"unknown data_filler type '{filler.type}' "
                                 f"(known: {', '.join(sorted(FILLER_TYPES))})", layer=self.name)
        self.refill = [filler.type != "constant" for filler in self.fillers]
        for index, (blob, filler, refill) in enumerate(zip(top, self.fillers, self.refill)):
            field = "dummy_data_param.data_filler" + (f"[{index}]" if len(param.data_filler) > 1 else "")
            if refill:
                check_filler(blob, filler, self.name, field)   # drawn at each Forward: check it now
            else:
                fill(blob, filler, self.name, field)

    def reshape(self, bottom, top):
        pass  # shapes are fixed at setup

    def forward(self, bottom, top):
        for blob, filler, refill in zip(top, self.fillers, self.refill):
            if refill:
                fill(blob, filler, self.name)

    def backward(self, top, propagate_down, bottom):
        pass  # no bottoms

    def forward_gpu(self, bottom, top):
        if not hasattr(self, "_drawn"):
            self._drawn = {}
        for index, (blob, filler, refill) in enumerate(zip(top, self.fillers, self.refill)):
            if not refill or not blob.count:
                continue
            drawn = self._drawn.get(index)
            if drawn is None or drawn.shape != blob.shape or drawn.dtype != blob.dtype:
                drawn = self._drawn[index] = Blob(blob.shape, dtype=blob.dtype)
            fill(drawn, filler, self.name)
            blob.upload_data(drawn.data)       # straight to the device: whatever the host copy held is stale
