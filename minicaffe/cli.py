"""The ``minicaffe`` command: thin click commands over the library.

Errors on bad input print one line (``minicaffe: error: ...``) and exit 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from .errors import MinicaffeError

_PHASES = click.Choice(["TRAIN", "TEST"], case_sensitive=False)


class _Group(click.Group):
    """Turns MinicaffeError into one line on stderr unless --debug was given."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MinicaffeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"minicaffe: error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback when something fails.")
@click.version_option(package_name="minicaffe")
@click.pass_context
def main(ctx, debug):
    """minicaffe: run BVLC Caffe's .prototxt nets and solvers.

    Nets and solvers written for Caffe (current, V1 or V0 format) are read as
    they are; `.caffemodel` weights load and save in Caffe's binary format.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@main.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--phase", type=_PHASES, default="TRAIN", show_default=True,
              help="Phase the net is planned for (layers' include/exclude rules).")
@click.option("--level", type=int, default=0, show_default=True, help="NetState level.")
@click.option("--stage", "stages", multiple=True, help="NetState stage (repeat for several).")
def check(net, phase, level, stages):
    """Validate NET and print its planned graph.

    Prints each layer kept for the phase, level and stages, in run order, with
    its bottoms -> tops (including the Split layers Caffe inserts), loss
    weights and shared parameters. Exits 1 with one line naming the file,
    layer or blob when the net is invalid.
    """
    from .check import check_net, describe_plan

    plan = check_net(net, phase=phase.upper(), level=level, stages=stages)
    click.echo(describe_plan(plan))
    click.echo("OK")


@main.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--kind", type=click.Choice(["auto", "net", "solver"]), default="auto", show_default=True,
              help="What SOURCE holds; auto tells a net from a solver by its fields.")
def upgrade(source, target, kind):
    """Upgrade a legacy net or solver SOURCE to the current format in TARGET.

    Text nets (V0, V1 `layers {...}`, net-level `input:` fields) and solvers
    (`solver_type:`) are written back as prototxt, as Caffe's
    upgrade_net_proto_text and upgrade_solver_proto_text do; a binary
    `.caffemodel` is written back as a binary caffemodel
    (upgrade_net_proto_binary). TARGET is written atomically.
    """
    from .convert import upgrade_file

    applied, detected = upgrade_file(source, target, kind)
    if applied:
        click.echo(f"upgraded {detected} {source} -> {target}: " + "; ".join(applied))
    else:
        click.echo(f"{source} is already in the current {detected} format; copied to {target}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
