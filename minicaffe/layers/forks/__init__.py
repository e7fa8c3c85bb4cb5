"""Layers from the Caffe forks people deploy (SSD, py-faster-rcnn, SegNet, DeepLab, ShuffleNet, ...).

Ordinary layer modules, registered like the rest; each class names the fork
its type comes from in ``fork`` (``minicaffe layers`` shows it) and its module
docstring gives the fork's formula. Their parameters are in ``caffe.proto``
under the forks' own field names and numbers (see its header).
"""
