"""The example notebook (examples/notebook/digits.ipynb) executes, and shows what it is there to show.

It runs as `make notebook` runs it (examples/notebook/render.py's execute: nbclient,
the ipykernel of this Python, the notebook's folder as working directory).
"""

import os
import re
import runpy

from tests.conftest import EXAMPLES

NOTEBOOK = os.path.join(EXAMPLES, "notebook", "digits.ipynb")


def outputs(cell, kind):
    """The texts of ``cell``'s outputs of MIME type ``kind`` (``stream`` for printed text)."""
    found = []
    for output in cell.get("outputs", []):
        if kind == "stream" and output.output_type == "stream" and output.name == "stdout":
            found.append(output.text)
        elif kind != "stream" and kind in output.get("data", {}):
            found.append(output["data"][kind])
    return found


def test_the_digits_notebook_executes_and_shows_the_net_training_and_predictions():
    import nbformat

    source = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in source.cells if cell.cell_type == "code"), \
        "commit the notebook without outputs (docs/digits_notebook.html is the executed render)"

    execute = runpy.run_path(os.path.join(EXAMPLES, "notebook", "render.py"), run_name="render")["execute"]
    notebook, seconds = execute(NOTEBOOK)          # raises CellExecutionError on any cell's error
    assert seconds < 60, f"the notebook took {seconds:.1f} s; keep it short (a few seconds)"
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not [output for cell in cells for output in cell.outputs if output.output_type == "error"]

    def cell_with(text):
        return next(cell for cell in cells if text in cell.source)

    # The Net as a table (and as text), the Solver before and after training.
    net_html = outputs(cell_with("net = caffe.Net(net_param, caffe.TRAIN)"), "text/html")
    assert len(net_html) == 1 and 'class="minicaffe-net"' in net_html[0]
    assert "<b>conv1</b>" in net_html[0] and "64x16x8x8" in net_html[0] and "13,706 in 8 blobs" in net_html[0]
    assert outputs(cell_with("net = caffe.Net"), "text/plain")[0].startswith(
        "<Net 'DigitsLeNet' phase=TRAIN layers=11 parameters=13,706>")
    assert "smoothed_loss=none yet" in outputs(cell_with("solver = caffe.get_solver"), "text/plain")[0]
    trained = cell_with("solver.step(1)")
    assert "120 of max_iter 120" in outputs(trained, "text/html")[0]
    printed = "".join(outputs(trained, "stream"))
    first, last = map(float, re.search(r"first 10 iterations ([\d.]+), last 10 ([\d.]+)", printed).groups())
    assert last < first / 4, printed
    assert float(re.search(r"test accuracy: ([\d.]+)%", printed).group(1)) > 85, printed

    # The loss curve, a blob, the drawing (SVG), the classified digits.
    assert "<polyline" in outputs(cell_with("loss_curve(losses)"), "image/svg+xml")[0]
    blob_html = outputs(cell_with('solver.net.blobs["conv1"]'), "text/html")[0]
    assert 'class="minicaffe-blob"' in blob_html and "64x16x8x8" in blob_html and "mean" in blob_html
    drawing = outputs(cell_with("draw_net_inline"), "image/svg+xml")[0]
    assert drawing.startswith("<svg") and "conv1 (Convolution)" in drawing and "(Accuracy)" in drawing
    predictions = "".join(outputs(cell_with("caffe.Classifier"), "stream"))
    assert len(re.findall(r"true \d  predicted \d", predictions)) == 8
    assert int(re.search(r"(\d) of 8 right", predictions).group(1)) >= 6, predictions
    assert "<path" in outputs(cell_with("digits_svg(images"), "image/svg+xml")[0]
