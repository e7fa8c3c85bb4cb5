"""The tables behind the legacy upgrades (:mod:`minicaffe.proto.upgrade`).

Facts read off BVLC Caffe's upgrade_proto.cpp: the V0 layer-type names, the
V1 LayerType enum, the old solver_type enum, and where each V0 field goes.
"""

from . import caffe_pb2

_V1Layer = caffe_pb2.V1LayerParameter


# V0 lowercase type string -> V1 LayerType enum name. "padding" is absent on
# purpose: padding layers are folded away before types are translated.
V0_LAYER_TYPES = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

# V1 LayerType enum name -> current layer type string. NONE (an unset type)
# becomes the empty string, as in Caffe.
V1_LAYER_TYPES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

# SolverParameter.SolverType enum name -> SolverParameter.type string.
SOLVER_TYPES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

# Where each type-specific V0 setting lives in a V1 layer: V0 field ->
# {V0 layer type: "sub_message.field"}. A path without a dot names a field of
# the V1 layer itself. A V0 setting on a layer type not listed has no home.
_CONV = "convolution_param"
_IP = "inner_product_param"
_POOL = "pooling_param"
_DATA = "data_param"
_IMAGES = "image_data_param"
_WINDOW = "window_data_param"
_HDF5 = "hdf5_data_param"
_LRN = "lrn_param"

_V0_TYPED_FIELDS = {
    "num_output": {"conv": f"{_CONV}.num_output", "innerproduct": f"{_IP}.num_output"},
    "biasterm": {"conv": f"{_CONV}.bias_term", "innerproduct": f"{_IP}.bias_term"},
    "weight_filler": {"conv": f"{_CONV}.weight_filler", "innerproduct": f"{_IP}.weight_filler"},
    "bias_filler": {"conv": f"{_CONV}.bias_filler", "innerproduct": f"{_IP}.bias_filler"},
    "pad": {"conv": f"{_CONV}.pad", "pool": f"{_POOL}.pad"},
    "kernelsize": {"conv": f"{_CONV}.kernel_size", "pool": f"{_POOL}.kernel_size"},
    "group": {"conv": f"{_CONV}.group"},
    "stride": {"conv": f"{_CONV}.stride", "pool": f"{_POOL}.stride"},
    "pool": {"pool": f"{_POOL}.pool"},
    "dropout_ratio": {"dropout": "dropout_param.dropout_ratio"},
    "local_size": {"lrn": f"{_LRN}.local_size"},
    "alpha": {"lrn": f"{_LRN}.alpha"},
    "beta": {"lrn": f"{_LRN}.beta"},
    "k": {"lrn": f"{_LRN}.k"},
    "source": {
        "data": f"{_DATA}.source",
        "hdf5_data": f"{_HDF5}.source",
        "images": f"{_IMAGES}.source",
        "window_data": f"{_WINDOW}.source",
        "infogain_loss": "infogain_loss_param.source",
    },
    "batchsize": {
        "data": f"{_DATA}.batch_size",
        "hdf5_data": f"{_HDF5}.batch_size",
        "images": f"{_IMAGES}.batch_size",
        "window_data": f"{_WINDOW}.batch_size",
    },
    "rand_skip": {"data": f"{_DATA}.rand_skip", "images": f"{_IMAGES}.rand_skip"},
    "shuffle_images": {"images": f"{_IMAGES}.shuffle"},
    "new_height": {"images": f"{_IMAGES}.new_height"},
    "new_width": {"images": f"{_IMAGES}.new_width"},
    "concat_dim": {"concat": "concat_param.concat_dim"},
    "det_fg_threshold": {"window_data": f"{_WINDOW}.fg_threshold"},
    "det_bg_threshold": {"window_data": f"{_WINDOW}.bg_threshold"},
    "det_fg_fraction": {"window_data": f"{_WINDOW}.fg_fraction"},
    "det_context_pad": {"window_data": f"{_WINDOW}.context_pad"},
    "det_crop_mode": {"window_data": f"{_WINDOW}.crop_mode"},
    "hdf5_output_param": {"hdf5_output": "hdf5_output_param"},
}

# V0 preprocessing settings: they go to transform_param whatever the layer type.
_V0_TRANSFORM_FIELDS = {
    "scale": "scale",
    "meanfile": "mean_file",
    "cropsize": "crop_size",
    "mirror": "mirror",
}

# V0 fields handled outside the tables above.
_V0_DIRECT_FIELDS = {"name", "type", "blobs", "blobs_lr", "weight_decay"}

# V0 fields of a reshape layer that never existed in V1; Caffe drops them
# without a word, and so do we.
_V0_IGNORED_FIELDS = {"new_num", "new_channels"}

# A V0 `layers` entry may hold only these besides its nested `layer`.
_V0_ENTRY_FIELDS = {"layer", "bottom", "top"}

# V1 data layer type -> its sub-message that once held preprocessing fields.
_V1_DATA_PARAMS = {
    "DATA": "data_param",
    "IMAGE_DATA": "image_data_param",
    "WINDOW_DATA": "window_data_param",
}
_LEGACY_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

# Every typed sub-message of a V1 layer; each is copied unchanged.
_V1_SUB_PARAMS = tuple(
    field.name for field in _V1Layer.DESCRIPTOR.fields if field.name.endswith("_param")
)

# V1 fields with a dedicated translation (the rest are _V1_SUB_PARAMS).
_V1_DIRECT_FIELDS = {
    "bottom", "top", "name", "include", "exclude", "type", "blobs",
    "param", "blob_share_mode", "blobs_lr", "weight_decay", "loss_weight", "layer",
}
