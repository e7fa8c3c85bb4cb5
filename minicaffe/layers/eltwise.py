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

GPU: a bottom at a time, as Caffe's ``eltwise_layer.cu``, with one thread per
element: PROD multiplies the bottoms into the top; SUM adds ``c_i x_i`` into it;
MAX compares bottoms 0 and 1, then each later bottom with the running top,
keeping the winner's index in a device array (the same tie rules as the CPU,
where Caffe's GPU kernel hands a tie to the later bottom). Backward builds PROD's
product of the others (or ``y / x_i``) the same way, then scales by the top's
diff; SUM scales the top's diff by ``c_i``; MAX routes it to the winner.
"""

import numpy as np

from .. import gpu, gpu_blas, threads
from ..errors import GraphError
from ..gpu import cuda  # the name kernels use: the simulator swaps it
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register

_PROD = caffe_pb2.EltwiseParameter.PROD
_SUM = caffe_pb2.EltwiseParameter.SUM
_MAX = caffe_pb2.EltwiseParameter.MAX


# ---------------------------------------------------------------- GPU kernels

@gpu.jit
def _multiply_gpu(a, b, out):
    """out = a * b (out may be a)."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] * b[i]


@gpu.jit
def _scaled_sum_gpu(x, coeff, out, accumulate):
    """out = coeff * x, or out += coeff * x with ``accumulate``."""
    i = cuda.grid(1)
    if i < out.size:
        if accumulate:
            out[i] = out[i] + coeff * x[i]
        else:
            out[i] = coeff * x[i]


@gpu.jit
def _max_gpu(a, b, index, out, max_index):
    """Bottom ``index`` (b) against a: with index 1, a is bottom 0 and a tie goes to b; later, a is the
    running top and b wins only when strictly greater (the CPU's rules)."""
    i = cuda.grid(1)
    if i < out.size:
        if index == 1:
            if a[i] > b[i]:
                out[i] = a[i]
                max_index[i] = 0
            else:
                out[i] = b[i]
                max_index[i] = 1
        elif b[i] > a[i]:
            out[i] = b[i]
            max_index[i] = index


@gpu.jit
def _divide_multiply_gpu(y, x, dy, dx):
    """dx = y / x * dy (PROD's gradient without stable_prod_grad)."""
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = y[i] / x[i] * dy[i]


@gpu.jit
def _max_backward_gpu(dy, max_index, index, dx):
    i = cuda.grid(1)
    if i < dx.size:
        dx[i] = dy[i] if max_index[i] == index else dy[i] * 0.0


def _launch(kernel, count, *arguments):
    kernel[gpu.blocks_for(count), gpu.THREADS](*arguments)


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

    def forward_gpu(self, bottom, top):
        inputs = [blob.gpu_data for blob in bottom]
        out = top[0].mutable_gpu_data
        count = out.size
        if self.operation == _PROD:
            _launch(_multiply_gpu, count, inputs[0], inputs[1], out)
            for data in inputs[2:]:
                _launch(_multiply_gpu, count, out, data, out)
        elif self.operation == _SUM:
            # A top computed in place is zeroed first, as on the CPU (and in Caffe): that bottom adds nothing.
            shared = any(data is out for data in inputs)
            if shared:
                gpu_blas.fill(out, 0)
            for index, (coeff, data) in enumerate(zip(self.coeffs, inputs)):
                _launch(_scaled_sum_gpu, count, data, self.dtype.type(coeff), out, shared or index > 0)
        else:
            max_index = getattr(self, "gpu_max_index", None)
            if max_index is None or max_index.size != count:
                max_index = self.gpu_max_index = gpu.device_empty(count, np.int32)
            for index, data in enumerate(inputs[1:], start=1):
                _launch(_max_gpu, count, inputs[0] if index == 1 else out, data, np.int32(index), out, max_index)

    def backward_gpu(self, top, propagate_down, bottom):
        top_diff = top[0].gpu_diff
        count = top_diff.size
        for i, blob in enumerate(bottom):
            if not propagate_down[i]:
                continue
            diff = blob.mutable_gpu_diff
            if self.operation == _PROD:
                if self.stable_prod_grad:
                    others = [other.gpu_data for j, other in enumerate(bottom) if j != i]
                    if len(others) == 1:
                        _launch(_multiply_gpu, count, others[0], top_diff, diff)
                        continue
                    _launch(_multiply_gpu, count, others[0], others[1], diff)
                    for data in others[2:]:
                        _launch(_multiply_gpu, count, diff, data, diff)
                    _launch(_multiply_gpu, count, diff, top_diff, diff)
                else:
                    _launch(_divide_multiply_gpu, count, top[0].gpu_data, blob.gpu_data, top_diff, diff)
            elif self.operation == _SUM:
                _launch(_scaled_sum_gpu, count, top_diff, self.dtype.type(self.coeffs[i]), diff, False)
            else:
                _launch(_max_backward_gpu, count, top_diff, self.gpu_max_index, np.int32(i), diff)

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
