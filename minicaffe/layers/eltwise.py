"""Eltwise: element-wise PROD, SUM (default) or MAX of two or more same-shaped blobs.

SUM takes an optional ``coeff`` per bottom (``y = sum_i c_i x_i``; none means
all 1; any other count is an error, and PROD refuses coefficients). MAX records
which bottom won each element: between bottoms 0 and 1 a tie goes to bottom 1,
and a later bottom wins only when strictly greater, as Caffe's loop does; the
gradient goes to the winner alone. PROD's gradient to bottom i is the product of
the other bottoms (``stable_prod_grad``, the default) or ``y / x_i`` (which
breaks where ``x_i`` is 0), times the top's diff.

CPU: numpy on chunks of the flattened blobs, run on minicaffe's threads
(:mod:`minicaffe.threads`; numpy releases the GIL in its loops, and a chunk's
temporaries stay in cache); a small blob stays on one thread.
"""

import numpy as np

from .. import threads
from ..errors import GraphError
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register

_PROD = caffe_pb2.EltwiseParameter.PROD
_SUM = caffe_pb2.EltwiseParameter.SUM
_MAX = caffe_pb2.EltwiseParameter.MAX


@register("Eltwise")
class EltwiseLayer(Layer):
    min_bottoms = 2
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.eltwise_param
        self.operation = param.operation
        coeffs = list(param.coeff)
        if coeffs and len(coeffs) != len(bottom):
            raise GraphError(f"eltwise_param gives {len(coeffs)} coeff(s) for {len(bottom)} bottoms: "
                             "give one coefficient per bottom, or none", layer=self.name)
        if coeffs and self.operation == _PROD:
            raise GraphError("eltwise_param: coeff is only for operation SUM, not PROD", layer=self.name)
        if self.operation not in (_PROD, _SUM, _MAX):
            raise GraphError(f"unknown eltwise operation {self.operation}", layer=self.name)
        self.coeffs = coeffs or [1.0] * len(bottom)
        self.stable_prod_grad = param.stable_prod_grad

    def reshape(self, bottom, top):
        for index, blob in enumerate(bottom[1:], start=1):
            if blob.shape != bottom[0].shape:
                raise self.shape_error(f"bottom {index} does not have bottom 0's shape",
                                       expected=bottom[0].shape, actual=blob.shape)
        top[0].reshape(bottom[0].shape)
        if self.operation == _MAX:
            self.max_index = np.zeros(bottom[0].shape, dtype=np.int32)

    def forward(self, bottom, top):
        out = top[0].data.reshape(-1)
        inputs = [blob.data.reshape(-1) for blob in bottom]
        max_index = self.max_index.reshape(-1) if self.operation == _MAX else None
        threads.parallel_for(out.size, lambda start, stop: self._forward_chunk(
            [x[start:stop] for x in inputs], out[start:stop], None if max_index is None else max_index[start:stop]))

    def _forward_chunk(self, inputs, out, max_index):
        if self.operation == _PROD:
            np.multiply(inputs[0], inputs[1], out=out)
            for data in inputs[2:]:
                out *= data
        elif self.operation == _SUM:
            if (self.coeffs[0] == 1.0 and self.coeffs[1] == 1.0
                    and not any(np.may_share_memory(out, data) for data in inputs)):
                np.add(inputs[0], inputs[1], out=out)     # one pass for the common two-term sum
                rest = zip(self.coeffs[2:], inputs[2:])
            else:
                out[...] = 0
                rest = zip(self.coeffs, inputs)
            for coeff, data in rest:
                if coeff == 1.0:
                    out += data
                else:
                    out += self.dtype.type(coeff) * data
        else:
            first, second = inputs[0], inputs[1]
            first_wins = first > second
            np.copyto(out, np.where(first_wins, first, second))
            max_index[...] = np.where(first_wins, 0, 1)
            for index, data in enumerate(inputs[2:], start=2):
                wins = data > out
                out[wins] = data[wins]
                max_index[wins] = index

    def backward(self, top, propagate_down, bottom):
        top_diff = top[0].diff.reshape(-1)
        top_data = top[0].data.reshape(-1)
        inputs = [blob.data.reshape(-1) for blob in bottom]
        diffs = [blob.diff.reshape(-1) if propagate_down[i] else None for i, blob in enumerate(bottom)]
        max_index = self.max_index.reshape(-1) if self.operation == _MAX else None
        threads.parallel_for(top_diff.size, lambda start, stop: self._backward_chunk(
            top_diff[start:stop], top_data[start:stop], [x[start:stop] for x in inputs],
            [None if d is None else d[start:stop] for d in diffs],
            None if max_index is None else max_index[start:stop]))

    def _backward_chunk(self, top_diff, top_data, inputs, diffs, max_index):
        for i, diff in enumerate(diffs):
            if diff is None:
                continue
            if self.operation == _PROD:
                if self.stable_prod_grad:
                    others = [data for j, data in enumerate(inputs) if j != i]
                    np.copyto(diff, others[0])
                    for data in others[1:]:
                        diff *= data
                else:
                    np.divide(top_data, inputs[i], out=diff)
                diff *= top_diff
            elif self.operation == _SUM:
                coeff = self.coeffs[i]
                if coeff == 1.0:
                    np.copyto(diff, top_diff)
                else:
                    np.multiply(top_diff, self.dtype.type(coeff), out=diff)
            else:
                np.copyto(diff, np.where(max_index == i, top_diff, 0))
