"""Datasets as Caffe stores them, and the machinery behind the data layers.

- :mod:`.common`: errors, optional dependencies (the ``minicaffe[data]`` and
  ``minicaffe[leveldb]`` extras), source-path checks shared by the layers.
- :mod:`.images`: image decoding (Pillow) into Caffe's BGR, C x H x W layout,
  and OpenCV's ``INTER_LINEAR`` resize.
- :mod:`.db`: LMDB and LevelDB databases, read and written.
- :mod:`.sources`: the readers behind the layers (Datum databases, image lists,
  HDF5 file lists), each with wrap-around and a ``state()``/``restore()`` pair.
- :mod:`.transform`: ``transform_param`` (crop, mirror, mean, scale) as one
  kernel pass per batch.
- :mod:`.prefetch`: the background thread that reads batches ahead of Forward.
- :mod:`.layer_base`: the prefetching data layer the layer modules build on.
- :mod:`.tools`: ``convert_imageset`` and ``compute_image_mean``.

Nothing here imports lmdb, h5py or Pillow at import time.
"""
