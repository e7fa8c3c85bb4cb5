"""Caffe's (gflags) spellings of the ``minicaffe`` command's options.

Caffe's tools read their flags with gflags: ``-flag`` or ``--flag``,
``-flag=value`` or ``-flag value``, underscores in names, booleans as
``-flag``, ``-noflag`` or ``-flag=true|false``. click reads only
``--flag-name``, so each command rewrites the spellings of its own options
before click parses them (:class:`GflagsCommand`), and Caffe's scripts run
with ``minicaffe`` in place of ``caffe``. Positional arguments, option values
and unknown tokens are left for click to read or report.
"""

from __future__ import annotations

import difflib
import itertools
import re

import click

_GFLAGS_TOKEN = re.compile(r"(--?)([A-Za-z][\w-]*)(?:=(.*))?\Z", re.S)
_GFLAGS_BOOLEANS = {"1": True, "t": True, "true": True, "y": True, "yes": True,
                    "0": False, "f": False, "false": False, "n": False, "no": False}
_GFLAGS_HELP = ("Caffe's (gflags) spellings work too: -option_name VALUE, -option_name=VALUE, "
                "--option_name=VALUE; on/off options as -flag, -noflag, -flag=true|false.")


def _gflags_spellings(params):
    """Option names (hyphenated) -> click's option, for options taking a value; and for on/off
    options, name -> (click arguments for true, for false)."""
    valued, switches = {}, {}
    for param in params:
        if not isinstance(param, click.Option):
            continue
        ons = [opt for opt in param.opts if opt.startswith("--")]
        if not param.is_flag:
            valued.update((opt[2:], opt) for opt in ons)
            continue
        offs = [opt for opt in param.secondary_opts if opt.startswith("--")]
        switches.update((opt[2:], ([opt], offs[:1])) for opt in ons)
        switches.update((opt[2:], ([opt], ons[:1])) for opt in offs)
    for name, (on, off) in list(switches.items()):
        # click's --no-nan-check is gflags' boolean nan_check: -nonan_check, -nan_check=false
        if name.startswith("no-"):
            switches.setdefault(name[3:], (off, on))
    return valued, switches


def gflags_to_click(ctx, args, params):
    """``args`` with gflags spellings of these options in click's; positionals and the rest as they were."""
    valued, switches = _gflags_spellings(params)
    shorts = {opt for param in params for opt in getattr(param, "opts", ()) if len(opt) == 2}
    rewritten, tokens = [], iter(args)
    for token in tokens:
        if token == "--":
            rewritten += [token, *tokens]
            break
        match = _GFLAGS_TOKEN.match(token)
        if not match:
            rewritten.append(token)
            continue
        dashes, name, value = match.groups()
        name = name.replace("_", "-")
        if name in valued:
            rewritten.append(valued[name] if value is None else f"{valued[name]}={value}")
            if value is None:
                rewritten.extend(itertools.islice(tokens, 1))  # its value, never rewritten
        elif name in switches or (value is None and name.startswith("no") and name[2:] in switches):
            on, off = switches[name] if name in switches else switches[name[2:]][::-1]
            state = True if value is None else _GFLAGS_BOOLEANS.get(value.lower())
            if state is None:
                raise click.BadOptionUsage(token, f"{token}: a boolean option takes true or false", ctx)
            rewritten += on if state else off
        elif dashes == "-" and len(name) > 1 and token[:2] not in shorts:
            # click would read -foo as -f -o -o and name -f; name what was typed
            known = [opt for param in params for opt in (*param.opts, *param.secondary_opts) if opt[:2] == "--"]
            near = difflib.get_close_matches(f"--{name}", known)
            raise click.NoSuchOption(token.partition("=")[0], possibilities=near, ctx=ctx)
        else:
            rewritten.append(token)
    return rewritten


class GflagsCommand(click.Command):
    """A command that also takes its options in Caffe's gflags spellings (see gflags_to_click)."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, gflags_to_click(ctx, args, self.get_params(ctx)))

    def format_epilog(self, ctx, formatter):
        super().format_epilog(ctx, formatter)
        if any(isinstance(param, click.Option) for param in self.params):
            formatter.write_paragraph()
            formatter.write_text(_GFLAGS_HELP)
