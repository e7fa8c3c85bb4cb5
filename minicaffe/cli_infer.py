"""``minicaffe classify`` and ``minicaffe detect``, and the body of ``forward --input``: real data through a net.

Click commands added to the ``main`` group of :mod:`minicaffe.cli` (imported at
its end, so they get the group's --threads, gflags spellings and one-line
errors). The work is done by :mod:`minicaffe.feed`, which notebooks can use too.
"""

from __future__ import annotations

import os

import click

from .cli import _GPUS, _preprocessing_options, _select_device, main
from .errors import MinicaffeError


def warn(message):
    click.echo(f"minicaffe: warning: {message}", err=True)


def _progress():
    """tqdm's bar on a terminal (None lets tqdm decide), never where minicaffe's logs say no bar."""
    from .logs import progress_wanted
    return None if progress_wanted() else False


def preprocessing_from_options(preprocess="pycaffe", raw_scale=None, channel_swap=None, mean=None,
                               input_scale=None):
    """A :class:`minicaffe.feed.Preprocessing` from the command-line options (--mean as a file or values)."""
    from .feed import CAFFE_CPP, Preprocessing, parse_channel_swap, read_mean

    if preprocess == CAFFE_CPP and raw_scale is not None:
        raise click.UsageError("--raw-scale belongs to --preprocess pycaffe (images in [0, 1]); caffe-cpp's "
                               "pixels are 0-255 already: leave it out, or use --input-scale")
    return Preprocessing(mode=preprocess, raw_scale=raw_scale,
                         channel_swap=None if channel_swap is None else parse_channel_swap(channel_swap),
                         mean=None if mean is None else read_mean(mean), input_scale=input_scale)


def forward_with_inputs(net, inputs, weights, phase, level, stages, end, blobs, batch_size, output, options):
    """``minicaffe forward NET --input ...``: echo the report of :func:`minicaffe.run.run_feed`."""
    from .run import run_feed

    preprocessing = preprocessing_from_options(**options)
    for line in run_feed(net, inputs, preprocessing, weights=weights, phase=phase, level=level, stages=stages,
                         end=end, blobs=blobs, batch_size=batch_size, output=output, warn=warn,
                         progress=_progress()):
        click.echo(line)


def _image_paths(images):
    """The IMAGE arguments, each folder replaced by its image files (sorted; other files counted and said)."""
    from .feed import FeedError, image_files

    paths = []
    for image in images:
        if os.path.isdir(image):
            found, _, skipped = image_files(image)
            if skipped:
                warn(f"skipped {skipped} file(s) in '{image}' that are not images (by their extension)")
            paths.extend(found)
        elif os.path.isfile(image):
            paths.append(image)
        else:
            raise FeedError(f"image '{image}' does not exist")
    return paths


@main.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True, type=click.Path())
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Class names, one per line (line i names class i), e.g. ImageNet's synset_words.txt; "
                   "without it the class numbers are printed.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many classes to print per image (at most the number of classes).")
@click.option("--oversample", is_flag=True,
              help="Average the predictions of ten crops (four corners, centre and their mirrors) of the image "
                   "resized to --image-dims, as pycaffe's Classifier.predict does by default; without it the "
                   "centre crop only.")
@click.option("--image-dims", metavar="H,W",
              help="Size the images are resized to before cropping (default: the net input's size, so the crop "
                   "is the whole image).")
@_preprocessing_options(with_mode=False)
def classify(net, weights, images, labels, top_k, oversample, image_dims, raw_scale, channel_swap, mean,
             input_scale):
    """Classify images with NET and WEIGHTS, as Caffe's classification.cpp example does.

    Runs pycaffe's caffe.Classifier (minicaffe.classifier) on each IMAGE (a
    folder stands for its image files) and prints, for each, its top-k
    classes as classification.cpp does: `---------- Prediction for IMAGE
    ----------`, then `0.9876 - "label"` lines. Images are read as pycaffe
    reads them (RGB in [0, 1]); classification.cpp's own input (BGR 0-255 minus
    the mean's per-channel values) is `--raw-scale 255 --channel-swap 2,1,0
    --mean MEAN`. The net's first output holds the class scores.
    """
    import numpy as np

    from .classifier import Classifier
    from .feed import FeedError, read_labels, top_k as best
    from .io_images import load_image

    preprocessing = preprocessing_from_options(raw_scale=raw_scale, channel_swap=channel_swap, mean=mean,
                                               input_scale=input_scale)
    dims = None
    if image_dims is not None:
        try:
            dims = tuple(int(d) for d in image_dims.split(","))
        except ValueError:
            dims = ()
        if len(dims) != 2 or min(dims) < 1:
            raise click.BadParameter(f"{image_dims!r}: give the height and width, e.g. 256,256",
                                     param_hint="'--image-dims'")
    paths = _image_paths(images)
    classifier = Classifier(net, weights, image_dims=dims, raw_scale=raw_scale, input_scale=input_scale,
                            channel_swap=preprocessing.channel_swap)
    in_ = classifier.inputs[0]
    input_shape = tuple(classifier.blobs[in_].data.shape[1:])
    preprocessing.check(input_shape)
    fitted = preprocessing.fitted_mean(input_shape)
    if fitted is not None:
        classifier.transformer.set_mean(in_, fitted.ravel() if fitted.shape[1:] == (1, 1) else fitted)
    for note in preprocessing.notes:
        click.echo(f"note: {note}", err=True)
    names = read_labels(labels) if labels else None
    color = input_shape[0] == 3
    chunk = 32
    for start in range(0, len(paths), chunk):
        batch = paths[start:start + chunk]
        scores = classifier.predict([load_image(path, color=color) for path in batch], oversample=oversample)
        scores = np.asarray(scores).reshape(len(batch), -1)
        if names is not None and len(names) != scores.shape[1]:
            raise FeedError(f"the labels file '{labels}' has {len(names)} labels but the net's output "
                            f"'{classifier.outputs[0]}' has {scores.shape[1]} classes")
        for path, row in zip(batch, scores):
            click.echo(f"---------- Prediction for {path} ----------")
            for score, label in best(row, top_k, names):
                click.echo(f'{score:.4f} - "{label}"')


_DRAW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _draw_targets(draw, paths):
    """Where each image's drawing goes: the file --draw names (one image), or FOLDER/<image name>.png."""
    if draw.lower().endswith(_DRAW_EXTENSIONS) and not os.path.isdir(draw):
        if len(paths) != 1:
            raise click.UsageError(f"--draw {draw} is one file, for one image; give a folder for {len(paths)} images")
        return [draw]
    targets = [os.path.join(draw, os.path.splitext(os.path.basename(path))[0] + ".png") for path in paths]
    if len(set(targets)) != len(targets):
        raise MinicaffeError("two images have the same name; --draw writes FOLDER/<name>.png for each: "
                             "detect them in separate runs")
    os.makedirs(draw, exist_ok=True)
    return targets


@main.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True, type=click.Path())
@click.option("--threshold", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Keep the detections that score at least this.")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Class names: one per line (line i names label i, the background's first), or an SSD "
                   "labelmap .prototxt (item { name label display_name }); without it the label numbers.")
@click.option("--json", "json_out", metavar="OUT.json", type=click.Path(dir_okay=False),
              help="Write the detections to this JSON file (and print a line per image) instead of printing "
                   "the JSON.")
@click.option("--draw", metavar="OUT.png|FOLDER",
              help="Also write each image, at its own size, with its boxes and labels drawn: to OUT.png for one "
                   "image, else to FOLDER/<image name>.png. Needs Pillow (pip install 'minicaffe[data]').")
@_preprocessing_options(with_mode=True)
@click.option("--gpu", type=_GPUS, help="Run in GPU mode on this device ('0'); several are refused (use mpiexec, one per "
                                         "process). Layers without GPU kernels run on the CPU.")
def detect(net, weights, images, threshold, labels, json_out, draw, preprocess, raw_scale, channel_swap, mean,
           input_scale, gpu):
    """Detect objects with an SSD-style NET (ending in DetectionOutput) and its WEIGHTS.

    Each IMAGE (a folder stands for its image files) is preprocessed for the
    net's first input, as --preprocess and its options say, and run alone.
    The detections, `[image, label, score, xmin, ymin, xmax, ymax]` rows with
    boxes in [0, 1], become boxes in pixels of the original image: printed as
    JSON, one `{"image", "width", "height", "detections"}` per image, each
    detection `{"label", "name", "score", "box": [xmin, ymin, xmax, ymax]}`.
    MobileNet-SSD's input (BGR, minus 127.5, times 0.007843) is
    `--preprocess caffe-cpp --mean 127.5 --input-scale 0.007843`, or in the
    pycaffe convention `--raw-scale 255 --channel-swap 2,1,0 --mean 127.5
    --input-scale 0.007843`.
    """
    from .feed import detect as run_detect, detections_json, draw_detections, read_labels
    from .graph import TEST
    from .net import Net
    from .run import fillers_warning

    preprocessing = preprocessing_from_options(preprocess, raw_scale, channel_swap, mean, input_scale)
    _select_device(gpu)
    paths = _image_paths(images)
    targets = _draw_targets(draw, paths) if draw else None
    if targets:
        from .data.common import optional_import
        optional_import("PIL.ImageDraw", "drawing detections (--draw)")
    names = read_labels(labels) if labels else None
    model = Net(net, TEST, weights=weights)
    message = fillers_warning(model, weights)
    if message:
        warn(message)
    results = run_detect(model, paths, preprocessing, threshold=threshold, labels=names, progress=_progress())
    for note in preprocessing.notes:
        click.echo(f"note: {note}", err=True)
    if json_out:
        with open(json_out, "w", encoding="utf-8") as handle:
            handle.write(detections_json(results) + "\n")
    else:
        click.echo(detections_json(results))
    for index, result in enumerate(results):
        if json_out:
            counts = {}
            for found in result["detections"]:
                counts[found["name"]] = counts.get(found["name"], 0) + 1
            summary = ", ".join(f"{name} {count}" for name, count in counts.items())
            click.echo(f"{result['image']}: {len(result['detections'])} detection"
                       f"{'s' if len(result['detections']) != 1 else ''}" + (f" ({summary})" if summary else ""))
        if targets:
            draw_detections(paths[index], result["detections"], targets[index])
    if json_out:
        click.echo(f"wrote {json_out}")
    if targets:
        click.echo(f"drew {len(targets)} image{'s' if len(targets) != 1 else ''}: "
                   + (targets[0] if len(targets) == 1 else os.path.dirname(targets[0])),
                   err=not json_out)


__all__ = ["classify", "detect", "forward_with_inputs", "preprocessing_from_options"]
