"""Caffe's schema for Python: the generated ``caffe_pb2`` and the file readers.

``caffe_pb2.py`` is generated from the top-level ``caffe.proto`` by ``make proto``
and committed; never edit it by hand. ``caffe_proto.sha256`` records the hash of
the ``caffe.proto`` it was generated from, so a test notices a stale module.
"""

from . import caffe_pb2  # noqa: F401  (re-exported: minicaffe.proto.caffe_pb2)
