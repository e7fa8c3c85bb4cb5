"""InnerProduct (fully connected): ``y = x W^T + b`` over the axes from ``axis`` on.

The bottom is viewed as M x K with M the product of the axes before ``axis`` and
K the product of the rest; the weight is N x K (``transpose: true`` stores K x N,
as Caffe). Gradients: ``dW += dy^T x`` (or ``x^T dy`` transposed), ``db += sum dy``,
``dx = dy W``. Parameter diffs accumulate, as all of Caffe's.

The products run on minicaffe's threads (:func:`minicaffe.threads.matmul`).

GPU: the same products as device GEMMs on the blobs' device arrays (cuBLAS,
:mod:`minicaffe.gpu_blas`), as Caffe's ``inner_product_layer.cu``: the bias
is a rank-1 GEMM update with a vector of ones, its gradient a GEMV with
ones; the weight and bias gradients accumulate (beta 1).
"""

from .. import gpu, gpu_blas, threads
from ..fillers import fill
from ..layer import Layer
from ..registry import register


@register("InnerProduct")
class InnerProductLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        param = self.layer_param.inner_product_param
        self.num_output = param.num_output
        self.bias_term = param.bias_term
        self.transpose = param.transpose
        self.axis = bottom[0].canonical_axis(param.axis, layer=self.name)
        self.k = bottom[0].count_axes(self.axis)
        if self.num_output <= 0:
            raise self.shape_error("inner_product_param.num_output must be positive")
        weight_shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        self.blobs = [self.new_param_blob(weight_shape)]
        fill(self.blobs[0], param.weight_filler, self.name, "inner_product_param.weight_filler")
        if self.bias_term:
            self.blobs.append(self.new_param_blob((self.num_output,)))
            fill(self.blobs[1], param.bias_filler, self.name, "inner_product_param.bias_filler")

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.layer_param.inner_product_param.axis, layer=self.name)
        k = bottom[0].count_axes(axis)
        if k != self.k:
            raise self.shape_error("input size incompatible with inner product parameters",
                                   expected=(self.k,), actual=(k,))
        self.m = bottom[0].count_axes(0, axis)
        top[0].reshape(bottom[0].shape[:axis] + (self.num_output,))

    def _weight_nk(self):
        weight = self.blobs[0].data
        return weight.T if self.transpose else weight

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.m, self.k)
        y = top[0].data.reshape(self.m, self.num_output)
        threads.matmul(x, self._weight_nk().T, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.m, self.num_output)
        x = bottom[0].data.reshape(self.m, self.k)
        if self.param_propagate_down[0]:
            if self.transpose:
                self.blobs[0].diff += threads.matmul(x.T, dy)
            else:
                self.blobs[0].diff += threads.matmul(dy.T, x)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)
        if propagate_down[0]:
            threads.matmul(dy, self._weight_nk(), out=bottom[0].diff.reshape(self.m, self.k))

    # ---------------------------------------------------------------- GPU
    def _gpu_ones(self):
        """m ones on the device (the bias's GEMM and GEMV), kept while m stays."""
        ones = getattr(self, "_ones_gpu", None)
        if ones is None or ones.size != self.m or ones.dtype != self.dtype:
            ones = gpu.device_empty(self.m, self.dtype)
            gpu_blas.fill(ones, 1)
            self._ones_gpu = ones
        return ones

    def forward_gpu(self, bottom, top):
        x = bottom[0].gpu_data.reshape(self.m, self.k)
        y = top[0].mutable_gpu_data.reshape(self.m, self.num_output)
        gpu_blas.gemm(x, self.blobs[0].gpu_data.reshape(self.blobs[0].shape), y, trans_b=not self.transpose)
        if self.bias_term:
            gpu_blas.gemm(self._gpu_ones().reshape(self.m, 1), self.blobs[1].gpu_data.reshape(1, self.num_output),
                          y, beta=1.0)

    def backward_gpu(self, top, propagate_down, bottom):
        dy = top[0].gpu_diff.reshape(self.m, self.num_output)
        if self.param_propagate_down[0]:
            x = bottom[0].gpu_data.reshape(self.m, self.k)
            weight_diff = self.blobs[0].mutable_gpu_diff.reshape(self.blobs[0].shape)
            if self.transpose:
                gpu_blas.gemm(x, dy, weight_diff, trans_a=True, beta=1.0)
            else:
                gpu_blas.gemm(dy, x, weight_diff, trans_a=True, beta=1.0)
        if self.bias_term and self.param_propagate_down[1]:
            gpu_blas.gemv(dy, self._gpu_ones(), self.blobs[1].mutable_gpu_diff, trans_a=True, beta=1.0)
        if propagate_down[0]:
            gpu_blas.gemm(dy, self.blobs[0].gpu_data.reshape(self.blobs[0].shape),
                          bottom[0].mutable_gpu_diff.reshape(self.m, self.k), trans_b=self.transpose)
