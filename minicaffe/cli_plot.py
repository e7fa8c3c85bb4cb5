"""``minicaffe parse-log`` and ``minicaffe plot``: training logs as tables and as loss curves.

Commands of the ``minicaffe`` group (registered by importing this module at
the end of :mod:`minicaffe.cli`), over :mod:`minicaffe.training_log` and
:mod:`minicaffe.plot`. ``minicaffe train --plot`` (in :mod:`minicaffe.cli`)
uses :class:`minicaffe.plot.LivePlot`.
"""

from __future__ import annotations

import click

from .cli import main

_X_AXES = click.Choice(["iters", "seconds"], case_sensitive=False)


def _delimiter(ctx, param, value):
    value = {"\\t": "\t", "tab": "\t"}.get(value, value)
    if len(value) != 1:
        raise click.BadParameter(f"{value!r}: give one character (',' or '\\t' for a tab)")
    return value


@main.command(name="parse-log")
@click.argument("log", type=click.Path(dir_okay=False))
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--delimiter", default=",", show_default=True, callback=_delimiter, metavar="CHAR",
              help="Column delimiter of the CSV files ('\\t' for a tab).")
@click.option("--verbose", is_flag=True, hidden=True, help="Accepted as parse_log.py accepts it.")
def parse_log_command(log, outdir, delimiter, verbose):
    """Write LOG's training and test outputs to OUTDIR/LOG.train and OUTDIR/LOG.test (Caffe's parse_log.py).

    LOG is a training log of `minicaffe train` or of BVLC Caffe's `caffe train`
    (its stderr, or glog's caffe.INFO). The files are the ones
    tools/extra/parse_log.py writes, with its columns: NumIters, Seconds (since
    the Solving line), LearningRate, then one column per output (loss,
    accuracy, ...). A file with no rows is not written, as parse_log.py does.
    OUTDIR is created if missing.
    """
    from .training_log import parse_log, require_rows, save_csv_files

    parsed = require_rows(parse_log(log))
    written = save_csv_files(parsed, outdir, delimiter=delimiter)
    for kind, path in written.items():
        if path is None:
            click.echo(f"no {kind} outputs in {log}: {kind} file not written")
        else:
            rows = parsed.rows(kind)
            click.echo(f"wrote {path}: {len(rows)} rows ({', '.join(parsed.columns(kind))})")


@main.command(name="plot")
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="LOG...")
@click.option("--out", default="loss.png", show_default=True, type=click.Path(dir_okay=False),
              help="The picture to write (.png; .svg and .pdf by their extension).")
@click.option("--x", "x_axis", type=_X_AXES, default="iters", show_default=True,
              help="The x axis: iterations, or seconds since training started (from the log's timestamps).")
@click.option("--title", help="The plot's title (default: the logs' file names).")
def plot_command(logs, out, x_axis, title):
    """Draw the training loss, test loss and every test output of each LOG as curves in OUT.

    LOG is a training log of `minicaffe train` or of BVLC Caffe's `caffe train`
    (the rows `minicaffe parse-log` writes). The outputs with a loss weight
    share the top axes, the others (accuracy, ...) the axes below. Several
    logs overlay, one colour per log, labelled with its file name. Needs
    matplotlib: pip install 'minicaffe[plot]'.
    """
    from .plot import plot_to_file, require_matplotlib

    require_matplotlib()
    drawn = plot_to_file(list(logs), out, x=x_axis.lower(), title=title)
    click.echo(f"wrote {out}")
    for parsed in drawn:
        counts = [f"{kind} {name} ({len(parsed.series(kind, name)[0])} points)"
                  for kind in ("train", "test") for name in parsed.outputs(kind)]
        click.echo(f"  {parsed.path}: {', '.join(counts)}")
