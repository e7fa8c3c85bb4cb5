"""DetectionOutput (SSD fork) against OpenCV dnn's implementation and a plain numpy reference.

OpenCV (``cv2.dnn.readNetFromCaffe``) is the independent oracle where it
follows the fork. Where it does not, the reference below (a line-by-line
transcription of the fork's CPU Forward, bbox_util.cpp's DecodeBBox,
GetMaxScoreIndex, ApplyNMSFast and JaccardOverlap, sharing no code with the
layer) is. Differences found in OpenCV 4.x, and why some cases use only the
reference:

- rows: OpenCV orders each image's rows by descending score over all labels
  and pads the top to N * keep_top_k rows with zeros; the fork orders them by
  label, then score, with exactly the kept rows. Comparisons with OpenCV sort
  both and drop the padding; the order is checked against the reference.
- keep_top_k: OpenCV sizes its output from it, and -1 (the fork's default:
  keep everything) corrupts its heap, so OpenCV runs always set a large one.
- share_location, background_label_id, keep_top_k and nms_threshold must be
  written out for OpenCV (it has no defaults for them).
- nothing kept: OpenCV gives zero rows, the fork one [i, -1, ..., -1] row per image.
- CORNER_SIZE is unknown to OpenCV's caffe.proto, and it never reads nms_param.eta
  (eta < 1 gives what eta 1 gives).
- an unset confidence_threshold is 0 in OpenCV, -FLT_MAX in the fork (the same
  for softmax scores, which are > 0).
- variance_encoded_in_target: OpenCV wants a 1 x 1 x 4P prior (no variances).
- share_location with background_label_id -1: OpenCV, like the fork's CPU
  Forward, aborts; minicaffe does what the fork's GPU Forward does.
"""

import numpy as np
import pytest

import minicaffe
from minicaffe.errors import GraphError, ShapeError

cv2 = pytest.importorskip("cv2")

CODE = {"CORNER": 1, "CENTER_SIZE": 2, "CORNER_SIZE": 3}
f32 = np.float32


# ---------------------------------------------------------------- nets and data
def net_text(num, priors, classes, params, loc_classes=1, prior_rows=2, extra_bottom=False):
    image = ('layer { name: "image" type: "Input" top: "image" input_param { shape { dim: 1 dim: 3 dim: 4 '
             'dim: 4 } } }\n') if extra_bottom else ""
    return f"""name: "det"
layer {{ name: "loc" type: "Input" top: "loc"
  input_param {{ shape {{ dim: {num} dim: {priors * loc_classes * 4} }} }} }}
layer {{ name: "conf" type: "Input" top: "conf" input_param {{ shape {{ dim: {num} dim: {priors * classes} }} }} }}
layer {{ name: "prior" type: "Input" top: "prior"
  input_param {{ shape {{ dim: 1 dim: {prior_rows} dim: {priors * 4} }} }} }}
{image}layer {{ name: "detection_out" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior"
  {'bottom: "image" ' if extra_bottom else ''}top: "detection_out"
  detection_output_param {{ num_classes: {classes} {params} }} }}
"""


def params_text(share=True, background=0, nms=0.45, top_k=None, eta=None, keep_top_k=None, threshold=None,
                code="CENTER_SIZE", in_target=False):
    nms_param = f"nms_threshold: {nms}"
    if top_k is not None:
        nms_param += f" top_k: {top_k}"
    if eta is not None:
        nms_param += f" eta: {eta}"
    text = (f"share_location: {'true' if share else 'false'} background_label_id: {background} "
            f"nms_param {{ {nms_param} }} code_type: {code}")
    if keep_top_k is not None:
        text += f" keep_top_k: {keep_top_k}"
    if threshold is not None:
        text += f" confidence_threshold: {threshold}"
    if in_target:
        text += " variance_encoded_in_target: true"
    return text


def make_inputs(seed, num=2, priors=120, classes=5, loc_classes=1, in_target=False, ties=False):
    """Spread-out priors (overlapping enough for NMS to bite), softmax scores, small offsets."""
    rng = np.random.default_rng(seed)
    # half spread out, half around a few spots (where NMS suppresses)
    spots = rng.uniform(0.2, 0.8, (6, 2))
    centers = np.concatenate([rng.uniform(0.05, 0.95, (priors - priors // 2, 2)),
                              spots[rng.integers(0, 6, priors // 2)] + rng.normal(0, 0.03, (priors // 2, 2))])
    sizes = rng.uniform(0.06, 0.35, (priors, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    variances = np.tile([0.1, 0.1, 0.2, 0.2], (priors, 1))
    prior = np.stack([boxes.ravel(), variances.ravel()])[None].astype(f32)
    loc = rng.normal(0, 1, (num, priors, loc_classes, 4))
    if in_target:
        loc *= [0.1, 0.1, 0.2, 0.2]
    logits = rng.normal(0, 1.8, (num, priors, classes))
    conf = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    if ties:                        # a few distinct values: many exactly equal scores
        conf = np.round(conf * 8) / 8
    return loc.reshape(num, -1).astype(f32), conf.reshape(num, -1).astype(f32), prior


def run_minicaffe(tmp_path, text, arrays, dtype=np.float32, extra=None):
    path = tmp_path / "det.prototxt"
    path.write_text(text)
    net = minicaffe.Net(str(path), minicaffe.TEST, dtype=dtype)
    for name, array in zip(("loc", "conf", "prior", "image"), list(arrays) + ([extra] if extra is not None else [])):
        net.blobs[name].data[...] = array
    net.forward()
    return net.blobs["detection_out"].data.copy()


def run_opencv(tmp_path, text, arrays):
    path = tmp_path / "det_cv.prototxt"
    path.write_text(text)
    net = cv2.dnn.readNetFromCaffe(str(path))
    for name, array in zip(("loc", "conf", "prior"), arrays):
        net.setInput(np.ascontiguousarray(array), name)
    return net.forward()


def canonical(out):
    """Rows without OpenCV's zero padding, sorted by every column (for order-free comparison)."""
    rows = np.asarray(out, dtype=np.float64).reshape(-1, 7)
    rows = rows[~np.all(rows == 0, axis=1)]
    return rows[np.lexsort(rows.T[::-1])]


# ---------------------------------------------------------------- the fork, transcribed
def reference(loc, conf, prior, num_classes, share=True, background=0, nms=0.45, top_k=-1, eta=1.0,
              keep_top_k=-1, threshold=None, code="CENTER_SIZE", in_target=False):
    """The fork's CPU Forward, box by box in float32 (plus its GPU Forward's decoding of shared
    boxes when background_label_id is -1). Returns (rows, number of boxes NMS suppressed)."""
    num = loc.shape[0]
    priors = prior.shape[2] // 4
    loc_classes = 1 if share else num_classes
    loc = loc.reshape(num, priors, loc_classes, 4)
    conf = conf.reshape(num, priors, num_classes)
    prior_boxes = prior[0, 0].reshape(priors, 4)
    variances = prior[0, 1].reshape(priors, 4) if prior.shape[1] > 1 else np.ones((priors, 4), f32)
    threshold = f32(threshold) if threshold is not None else -np.finfo(f32).max
    suppressed = 0
    rows = []
    for i in range(num):
        decoded = {}
        for c in range(loc_classes):
            label = -1 if share else c
            if label == background and not share:
                continue
            decoded[label] = [decode(prior_boxes[p], variances[p], loc[i, p, c], code, in_target)
                              for p in range(priors)]
        indices = {}
        for c in range(num_classes):
            if c == background:
                continue
            scores = [f32(s) for s in conf[i, :, c]]
            boxes = decoded[-1 if share else c]
            pairs = sorted([(s, p) for p, s in enumerate(scores) if s > threshold], key=lambda pair: -pair[0])
            if top_k > -1:
                pairs = pairs[:top_k]
            kept, adaptive = [], f32(nms)
            for _, p in pairs:
                keep = all(jaccard(boxes[p], boxes[k]) <= adaptive for k in kept)
                if keep:
                    kept.append(p)
                    if eta < 1 and adaptive > 0.5:
                        adaptive = f32(adaptive * f32(eta))
                else:
                    suppressed += 1
            indices[c] = kept
        if keep_top_k > -1 and sum(len(v) for v in indices.values()) > keep_top_k:
            pairs = [(conf[i, p, c], c, p) for c in sorted(indices) for p in indices[c]]
            best = sorted(pairs, key=lambda pair: -pair[0])[:keep_top_k]      # stable: ties keep (label, NMS) order
            indices = {}
            for _, c, p in best:
                indices.setdefault(c, []).append(p)
        for c in sorted(indices):
            boxes = decoded[-1 if share else c]
            for p in indices[c]:
                box = boxes[p][:4]
                rows.append([i, c, conf[i, p, c], *box])
    if not rows:
        rows = [[i] + [-1] * 6 for i in range(num)]
    return np.array(rows, dtype=np.float64).reshape(1, 1, -1, 7), suppressed


def decode(prior, var, loc, code, in_target):
    """DecodeBBox: (xmin, ymin, xmax, ymax, size), float32 fields as the fork's NormalizedBBox."""
    px0, py0, px1, py1 = (f32(v) for v in prior)
    v = [f32(1)] * 4 if in_target else [f32(x) for x in var]
    l0, l1, l2, l3 = (f32(x) for x in loc)
    if code == "CORNER":
        box = [px0 + v[0] * l0, py0 + v[1] * l1, px1 + v[2] * l2, py1 + v[3] * l3]
    elif code == "CENTER_SIZE":
        pw, ph = px1 - px0, py1 - py0
        cx, cy = f32((np.float64(px0 + px1)) / 2.), f32((np.float64(py0 + py1)) / 2.)
        dcx, dcy = v[0] * l0 * pw + cx, v[1] * l1 * ph + cy
        # the fork's exp is ::exp(double); the product is rounded when stored in a float
        dw = f32(np.exp(np.float64(v[2] * l2)) * np.float64(pw))
        dh = f32(np.exp(np.float64(v[3] * l3)) * np.float64(ph))
        box = [f32(np.float64(dcx) - np.float64(dw) / 2.), f32(np.float64(dcy) - np.float64(dh) / 2.),
               f32(np.float64(dcx) + np.float64(dw) / 2.), f32(np.float64(dcy) + np.float64(dh) / 2.)]
    else:  # CORNER_SIZE
        pw, ph = px1 - px0, py1 - py0
        box = [px0 + v[0] * l0 * pw, py0 + v[1] * l1 * ph, px1 + v[2] * l2 * pw, py1 + v[3] * l3 * ph]
    box = [f32(x) for x in box]
    size = f32(0) if box[2] < box[0] or box[3] < box[1] else f32((box[2] - box[0]) * (box[3] - box[1]))
    return box + [size]


def jaccard(b1, b2):
    """JaccardOverlap(bbox1, bbox2, normalized) with IntersectBBox, on the stored sizes."""
    if b2[0] > b1[2] or b2[2] < b1[0] or b2[1] > b1[3] or b2[3] < b1[1]:
        return f32(0)
    width = min(b1[2], b2[2]) - max(b1[0], b2[0])
    height = min(b1[3], b2[3]) - max(b1[1], b2[1])
    if width > 0 and height > 0:
        inter = f32(width * height)
        return f32(inter / (b1[4] + b2[4] - inter))
    return f32(0)


def check_against_reference(out, expected, minimum):
    """Same rows in the same order (the fork's), bit for bit, and enough of them to mean something."""
    assert out.shape == expected.shape
    assert out.shape[2] >= minimum
    np.testing.assert_array_equal(out.astype(np.float64), expected)


def check_against_opencv(out, cv_out, minimum):
    mine, theirs = canonical(out), canonical(cv_out)
    assert mine.shape == theirs.shape
    assert len(mine) >= minimum
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def fork_order(out):
    """The fork's row order: by image, then label, then descending score."""
    rows = out.reshape(-1, 7)
    keys = np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))
    return np.array_equal(keys, np.arange(len(rows)))


# ---------------------------------------------------------------- against OpenCV and the reference
OPENCV_CASES = {
    "center_size": dict(code="CENTER_SIZE", threshold=0.3),
    "corner": dict(code="CORNER", threshold=0.3),
    "center_size_in_target": dict(code="CENTER_SIZE", in_target=True, threshold=0.25),
    "corner_in_target": dict(code="CORNER", in_target=True, threshold=0.25, nms=0.3),
    "per_class_boxes_background_2": dict(share=False, background=2, code="CENTER_SIZE", threshold=0.25),
    "per_class_boxes_no_background": dict(share=False, background=-1, code="CORNER", threshold=0.3),
    "top_k_keep_top_k": dict(code="CENTER_SIZE", threshold=0.1, nms=0.45, top_k=20, keep_top_k=25),
    "no_threshold_keep_top_k": dict(code="CENTER_SIZE", keep_top_k=30),
}


@pytest.mark.parametrize("case", sorted(OPENCV_CASES))
def test_matches_opencv_and_reference(tmp_path, case):
    options = OPENCV_CASES[case]
    classes = 5
    loc_classes = 1 if options.get("share", True) else classes
    in_target = options.get("in_target", False)
    loc, conf, prior = make_inputs(seed=len(case), classes=classes, loc_classes=loc_classes, in_target=in_target)
    if in_target:
        prior = prior[:, :1]                                  # OpenCV's layout; the fork never reads variances
    text = net_text(2, 120, classes, params_text(**options), loc_classes, prior_rows=prior.shape[1])
    out = run_minicaffe(tmp_path, text, (loc, conf, prior))
    expected, suppressed = reference(loc, conf, prior, classes, **options)
    check_against_reference(out, expected, minimum=40)
    assert suppressed > 0                                     # NMS had something to do
    assert fork_order(out)
    assert set(out[0, 0, :, 0]) == {0, 1}                     # both images contribute
    if "keep_top_k" in options:
        assert out.shape[2] == 2 * options["keep_top_k"]
    background = options.get("background", 0)
    assert background not in out[0, 0, :, 1]
    # OpenCV: a keep_top_k always (see the module docstring), large enough to keep everything
    cv_options = dict(options, keep_top_k=options.get("keep_top_k", 10000))
    cv_text = net_text(2, 120, classes, params_text(**cv_options), loc_classes, prior_rows=prior.shape[1])
    check_against_opencv(out, run_opencv(tmp_path, cv_text, (loc, conf, prior)), minimum=40)


def test_options_change_the_result(tmp_path):
    """top_k, eta and keep_top_k each change what is kept (eta against the reference only: OpenCV ignores it)."""
    loc, conf, prior = make_inputs(seed=3)
    base = dict(code="CENTER_SIZE", threshold=0.1, nms=0.7)

    def count(**extra):
        text = net_text(2, 120, 5, params_text(**base, **extra))
        out = run_minicaffe(tmp_path, text, (loc, conf, prior))
        expected, _ = reference(loc, conf, prior, 5, **base, **extra)
        check_against_reference(out, expected, minimum=20)
        return out.shape[2]

    plain = count()
    assert count(eta=0.8) < plain
    assert count(top_k=12) < plain
    assert count(keep_top_k=20) == 40 < plain


@pytest.mark.parametrize("in_target", [False, True])
def test_corner_size_against_reference(tmp_path, in_target):
    """CORNER_SIZE is not in OpenCV's caffe.proto: the reference alone."""
    loc, conf, prior = make_inputs(seed=11, in_target=in_target)
    options = dict(code="CORNER_SIZE", in_target=in_target, threshold=0.3, keep_top_k=60)
    out = run_minicaffe(tmp_path, net_text(2, 120, 5, params_text(**options)), (loc, conf, prior))
    expected, suppressed = reference(loc, conf, prior, 5, **options)
    check_against_reference(out, expected, minimum=100)
    assert suppressed > 0


def test_shared_boxes_without_background(tmp_path):
    """share_location + background -1: every class is scored (the fork's GPU Forward; its CPU
    Forward and OpenCV abort)."""
    loc, conf, prior = make_inputs(seed=5)
    options = dict(share=True, background=-1, code="CENTER_SIZE", threshold=0.3)
    out = run_minicaffe(tmp_path, net_text(2, 120, 5, params_text(**options)), (loc, conf, prior))
    expected, _ = reference(loc, conf, prior, 5, **options)
    check_against_reference(out, expected, minimum=60)
    assert set(out[0, 0, :, 1]) == {0, 1, 2, 3, 4}


def test_equal_scores_keep_prior_order(tmp_path):
    """Ties: the stable sort keeps prior order in top_k and NMS; keep_top_k cuts ties by label, then NMS order."""
    loc, conf, prior = make_inputs(seed=8, ties=True)
    options = dict(code="CORNER", threshold=0.2, top_k=15, keep_top_k=33)
    out = run_minicaffe(tmp_path, net_text(2, 120, 5, params_text(**options)), (loc, conf, prior))
    expected, _ = reference(loc, conf, prior, 5, **options)
    check_against_reference(out, expected, minimum=60)
    rows = out.reshape(-1, 7)
    assert len(np.unique(rows[:, 2])) < len(rows) // 4           # many equal scores among the kept


def test_nothing_kept_gives_the_fork_fake_rows(tmp_path):
    loc, conf, prior = make_inputs(seed=2)
    out = run_minicaffe(tmp_path, net_text(2, 120, 5, params_text(threshold=1.0)), (loc, conf, prior))
    expected = np.array([[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]], dtype=np.float32)
    np.testing.assert_array_equal(out, expected[None, None])
    np.testing.assert_array_equal(out, reference(loc, conf, prior, 5, threshold=1.0)[0])
    # keep_top_k: 0 keeps nothing either
    out = run_minicaffe(tmp_path, net_text(2, 120, 5, params_text(threshold=0.3, keep_top_k=0)), (loc, conf, prior))
    np.testing.assert_array_equal(out, expected[None, None])


def test_one_image_empty_the_other_not(tmp_path):
    """Rows come only from the image that keeps something: no fake row for the other."""
    loc, conf, prior = make_inputs(seed=4)
    conf[1] = 0.0
    out = run_minicaffe(tmp_path, net_text(2, 120, 5, params_text(threshold=0.3)), (loc, conf, prior))
    check_against_reference(out, reference(loc, conf, prior, 5, threshold=0.3)[0], minimum=20)
    assert set(out[0, 0, :, 0]) == {0}


def test_top_shape_follows_the_data_and_check_works(tmp_path):
    from minicaffe.check import check_net
    text = net_text(2, 120, 5, params_text(threshold=0.3))
    path = tmp_path / "det.prototxt"
    path.write_text(text)
    assert check_net(str(path), "TEST").blobs["detection_out"].shape == (1, 1, 1, 7)
    net = minicaffe.Net(str(path), minicaffe.TEST)
    assert net.blobs["detection_out"].shape == (1, 1, 1, 7)          # the fork's Reshape
    shapes = []
    for seed in (1, 2):
        for name, array in zip(("loc", "conf", "prior"), make_inputs(seed=seed)):
            net.blobs[name].data[...] = array
        net.forward()
        shapes.append(net.blobs["detection_out"].shape)
    assert shapes[0] != shapes[1] and all(s[:2] == (1, 1) and s[3] == 7 for s in shapes)


def test_double_net_and_fourth_bottom(tmp_path):
    """A float64 net gives the float32 net's rows (the fork keeps boxes and scores in float);
    the optional image bottom is accepted and ignored."""
    arrays = make_inputs(seed=6)
    text = net_text(2, 120, 5, params_text(threshold=0.3))
    out32 = run_minicaffe(tmp_path, text, arrays)
    out64 = run_minicaffe(tmp_path, text, arrays, dtype=np.float64)
    assert out64.dtype == np.float64
    np.testing.assert_array_equal(out64, out32.astype(np.float64))
    with_image = run_minicaffe(tmp_path, net_text(2, 120, 5, params_text(threshold=0.3), extra_bottom=True),
                               arrays, extra=np.ones((1, 3, 4, 4)))
    np.testing.assert_array_equal(with_image, out32)
    # a variance-encoded net reads only the boxes of a 1 x 2 x 4P prior
    loc, conf, prior = make_inputs(seed=7, in_target=True)
    options = dict(in_target=True, threshold=0.3)
    both = run_minicaffe(tmp_path, net_text(2, 120, 5, params_text(**options)), (loc, conf, prior))
    boxes_only = run_minicaffe(tmp_path, net_text(2, 120, 5, params_text(**options), prior_rows=1),
                               (loc, conf, prior[:, :1]))
    np.testing.assert_array_equal(both, boxes_only)


def test_no_backward(tmp_path):
    path = tmp_path / "det.prototxt"
    path.write_text("force_backward: true\n" + net_text(1, 10, 3, params_text()))
    net = minicaffe.Net(str(path), minicaffe.TEST)
    loc, conf, prior = make_inputs(seed=1, num=1, priors=10, classes=3)
    for name, array in zip(("loc", "conf", "prior"), (loc, conf, prior)):
        net.blobs[name].data[...] = array
    net.forward()
    with pytest.raises(GraphError, match="layer 'detection_out'.*no Backward"):
        net.backward()
    from minicaffe.registry import layer_class
    cls = layer_class("DetectionOutput")
    assert not cls.has_backward and cls.fork.startswith("SSD")


# ---------------------------------------------------------------- errors
def build(tmp_path, text):
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    return minicaffe.Net(str(path), minicaffe.TEST)


@pytest.mark.parametrize("params, message", [
    ("", "num_classes must be given"),
    ("nms_param { nms_threshold: -0.1 }", "nms_threshold must be non-negative"),
    ("nms_param { eta: 0 }", r"eta must be in \(0, 1\]"),
    ("nms_param { eta: 1.5 }", r"eta must be in \(0, 1\]"),
    ('save_output_param { output_directory: "out" }', "writing detection result files is not supported"),
    ("visualize: true", "drawing detections"),
])
def test_bad_parameters(tmp_path, params, message):
    text = net_text(1, 10, 3, params)
    if not params:
        text = text.replace("num_classes: 3", "")
    with pytest.raises(GraphError, match=f"layer 'detection_out'.*{message}"):
        build(tmp_path, text)


def test_label_map_only_is_accepted(tmp_path):
    """SSD deploy files name a label map in save_output_param; the fork writes nothing then."""
    text = net_text(1, 10, 3, 'save_output_param { label_map_file: "labelmap_voc.prototxt" }')
    assert build(tmp_path, text).blobs["detection_out"].shape == (1, 1, 1, 7)


def test_prior_count_mismatches(tmp_path):
    text = net_text(2, 10, 3, "")
    with pytest.raises(ShapeError, match=r"layer 'detection_out'.*loc must hold 10 priors.*"
                                         r"loc \(2, 44\), conf \(2, 30\), prior \(1, 2, 40\).*"
                                         r"expected \(2, 40\), got \(2, 44\)"):
        build(tmp_path, text.replace("dim: 40 }", "dim: 44 }", 1))
    with pytest.raises(ShapeError, match=r"layer 'detection_out'.*conf must hold 10 priors x 3 classes.*"
                                         r"expected \(2, 30\), got \(2, 33\)"):
        build(tmp_path, text.replace("dim: 30 }", "dim: 33 }"))
    with pytest.raises(ShapeError, match=r"layer 'detection_out'.*loc must hold.*got \(2, 10, 4\)"):
        build(tmp_path, text.replace("dim: 2 dim: 40 }", "dim: 2 dim: 10 dim: 4 }", 1))
    with pytest.raises(ShapeError, match=r"layer 'detection_out'.*prior must hold 10 boxes and their variances"):
        build(tmp_path, text.replace("dim: 1 dim: 2 dim: 40", "dim: 1 dim: 1 dim: 40"))
    with pytest.raises(ShapeError, match=r"layer 'detection_out'.*same number of images"):
        build(tmp_path, text.replace("dim: 2 dim: 30", "dim: 3 dim: 30"))
    # per-class boxes need num_classes times the offsets
    with pytest.raises(ShapeError, match=r"loc must hold 10 priors x 3 loc class\(es\) x 4 = 120"):
        build(tmp_path, text.replace("num_classes: 3", "num_classes: 3 share_location: false"))


def test_degenerate_prior_refused_for_size_codes(tmp_path):
    loc, conf, prior = make_inputs(seed=1, num=1, priors=10, classes=3)
    prior[0, 0, 4 * 3 + 2] = prior[0, 0, 4 * 3]                       # prior 3: zero width
    with pytest.raises(GraphError, match="layer 'detection_out'.*prior box 3 .*CENTER_SIZE"):
        run_minicaffe(tmp_path, net_text(1, 10, 3, params_text()), (loc, conf, prior))
    # CORNER does not need the prior's size
    run_minicaffe(tmp_path, net_text(1, 10, 3, params_text(code="CORNER")), (loc, conf, prior))
