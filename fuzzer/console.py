"""Command-line plumbing shared by the engine's and the farm's commands: the one-line user
error and rich consoles."""

from __future__ import annotations

import sys

import click
from rich.console import Console


class UserError(click.ClickException):
    """A user mistake: one line `patchfuzz: error: ...` and exit 2, never a traceback."""

    exit_code = 2

    def show(self, file=None) -> None:  # noqa: ARG002 - click's signature
        click.echo(f"patchfuzz: error: {self.message}", err=True)

# Rich assumes 80 columns when stdout is not a terminal and would squeeze tables into
# unreadable wraps in logs, pipes and CI output.
PIPE_WIDTH = 200


def stdout_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
