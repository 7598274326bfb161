"""Rich consoles for the command line."""

from __future__ import annotations

import sys

from rich.console import Console

# Rich assumes 80 columns when stdout is not a terminal and would squeeze tables into
# unreadable wraps in logs, pipes and CI output.
PIPE_WIDTH = 200


def stdout_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
