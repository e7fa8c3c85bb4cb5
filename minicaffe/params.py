"""pycaffe's ``caffe.params`` (``P``): enum values of the layer parameter messages.

``P.<Name>.<VALUE>`` is ``caffe_pb2.<Name>Parameter.<VALUE>``, named as the
LayerParameter field's message type names it: ``P.Pooling.MAX``,
``P.Pooling.AVE``, ``P.Eltwise.SUM``, ``P.Convolution.CAFFE``,
``P.LRN.WITHIN_CHANNEL``, ``P.Loss.VALID``. Use with :mod:`minicaffe.net_spec`:
``L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2)``.
"""

from .net_spec import params as _params


def __getattr__(name):
    return getattr(_params, name)
