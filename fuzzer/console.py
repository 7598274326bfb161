"""Command-line plumbing shared by the engine's and the farm's commands: the one-line user
error and rich consoles."""

from __future__ import annotations

import math
import sys

import click
from rich.console import Console


class UserError(click.ClickException):
    """A user mistake: one line `patchfuzz: error: ...` and exit 2, never a traceback."""

    exit_code = 2

    def show(self, file=None) -> None:  # noqa: ARG002 - click's signature
        click.echo(f"patchfuzz: error: {self.message}", err=True)

class Seconds(click.ParamType):
    """A duration: a finite number of seconds, > 0 (or >= 0 with `zero_ok`). `nan` and `inf`
    parse as floats and then break every budget computed from them."""

    name = "seconds"

    def __init__(self, zero_ok: bool = False) -> None:
        self.zero_ok = zero_ok

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, float):
            seconds = value
        else:
            try:
                seconds = float(value)
            except ValueError:
                self.fail(f"expected a number of seconds, got {value!r}", param, ctx)
        if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not self.zero_ok):
            self.fail(f"must be a finite number of seconds {'>= 0' if self.zero_ok else '> 0'}, "
                      f"got {value!r}", param, ctx)
        return seconds


# Rich assumes 80 columns when its stream is not a terminal and would wrap or cut titles in
# logs, pipes and CI output, where grep must find them whole: there a line is as long as it is.
PIPE_WIDTH = 1_000_000


def console(stderr: bool = False) -> Console:
    """A rich console for stdout (or stderr): the terminal's width, unbounded elsewhere."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)


def stdout_console() -> Console:
    return console()
