"""Eltwise: element-wise PROD, SUM (default) or MAX of two or more same-shaped blobs.

SUM takes an optional ``coeff`` per bottom (``y = sum_i c_i x_i``; none means
all 1; any other count is an error, and PROD refuses coefficients). MAX records
which bottom won each element: between bottoms 0 and 1 a tie goes to bottom 1,
and a later bottom wins only when strictly greater, as Caffe's loop does; the
gradient goes to the winner alone. PROD's gradient to bottom i is the product of
the other bottoms (``stable_prod_grad``, the default) or ``y / x_i`` (which
breaks where ``x_i`` is 0), times the top's diff.
"""

import numpy as np

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
        out = top[0].data
        if self.operation == _PROD:
            np.multiply(bottom[0].data, bottom[1].data, out=out)
            for blob in bottom[2:]:
                out *= blob.data
        elif self.operation == _SUM:
            out[...] = 0
            for coeff, blob in zip(self.coeffs, bottom):
                if coeff == 1.0:
                    out += blob.data
                else:
                    out += self.dtype.type(coeff) * blob.data
        else:
            first, second = bottom[0].data, bottom[1].data
            first_wins = first > second
            np.copyto(out, np.where(first_wins, first, second))
            self.max_index[...] = np.where(first_wins, 0, 1)
            for index, blob in enumerate(bottom[2:], start=2):
                wins = blob.data > out
                out[wins] = blob.data[wins]
                self.max_index[wins] = index

    def backward(self, top, propagate_down, bottom):
        top_diff = top[0].diff
        for i, blob in enumerate(bottom):
            if not propagate_down[i]:
                continue
            diff = blob.diff
            if self.operation == _PROD:
                if self.stable_prod_grad:
                    others = [other.data for j, other in enumerate(bottom) if j != i]
                    np.copyto(diff, others[0])
                    for data in others[1:]:
                        diff *= data
                else:
                    np.divide(top[0].data, blob.data, out=diff)
                diff *= top_diff
            elif self.operation == _SUM:
                coeff = self.coeffs[i]
                if coeff == 1.0:
                    np.copyto(diff, top_diff)
                else:
                    np.multiply(top_diff, self.dtype.type(coeff), out=diff)
            else:
                np.copyto(diff, np.where(self.max_index == i, top_diff, 0))
