"""Layer types and LayerParameter fields of Caffe forks that minicaffe does not implement.

Used only to word errors: a net that uses one of these is told which fork it
comes from, instead of being offered the nearest BVLC name ("did you mean
transform_param?"). The forks minicaffe does implement are in
``minicaffe/layers/forks/`` and their fields in ``caffe.proto``.
"""

SSD = "SSD (weiliu89/caffe, branch ssd)"
DEEPLAB = "DeepLab-v2 (deeplab-public-ver2)"
SEGNET = "SegNet (alexgkendall/caffe-segnet)"
FASTER_RCNN = "py-faster-rcnn (rbgirshick/caffe-fast-rcnn)"
RFCN = "R-FCN (YuwenXiong/py-R-FCN's caffe)"
YOLO = "a YOLO port of Caffe"
OPENPOSE = "OpenPose's caffe_train"
MTCNN_TRAIN = "an MTCNN training fork"

FORK_OF_TYPE = {
    "AnnotatedData": SSD, "MultiBoxLoss": SSD, "DetectionEvaluate": SSD, "VideoData": SSD,
    "SmoothL1LossOHEM": SSD,
    "BN": SEGNET, "DenseImageData": SEGNET,
    "SegAccuracy": DEEPLAB, "DenseCRF": DEEPLAB, "DomainTransform": DEEPLAB, "MatRead": DEEPLAB,
    "MatWrite": DEEPLAB, "UniqueLabel": DEEPLAB, "AdaptiveBiasChannel": DEEPLAB, "BiasChannel": DEEPLAB,
    "PSROIPooling": RFCN, "BoxAnnotatorOHEM": RFCN,
    "Reorg": YOLO, "Region": YOLO, "Yolo": YOLO, "YoloV3": YOLO,
}

FORK_OF_FIELD = {
    "seg_accuracy_param": DEEPLAB, "dense_crf_param": DEEPLAB, "domain_transform_param": DEEPLAB,
    "mat_read_param": DEEPLAB, "mat_write_param": DEEPLAB, "unique_label_param": DEEPLAB,
    "adaptive_bias_channel_param": DEEPLAB, "bias_channel_param": DEEPLAB,
    "dense_image_data_param": SEGNET,
    "psroi_pooling_param": RFCN, "box_annotator_ohem_param": RFCN,
    "reorg_param": YOLO, "region_param": YOLO, "yolo_param": YOLO,
}
