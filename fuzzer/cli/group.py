"""The `patchfuzz` command group.

Other installed packages add commands through the `patchfuzz.commands` entry points (the farm's
`farm` and `worker`, from workers/; see pyproject.toml), loaded the first time the group lists
or looks up a command: the engine imports nothing of theirs, and a package that is not
installed adds nothing.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import click

from .. import ENGINE_VERSION
from ..console import UserError

PLUGIN_GROUP = "patchfuzz.commands"


class _Commands(click.Group):
    _plugins_loaded = False

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
            if ep.name not in self.commands:
                self.add_command(ep.load(), ep.name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._load_plugins()
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        # Errors of the layers below that are about the user's setup (an unreachable or corrupt
        # database, ...) say so by a `user_facing` class attribute: one line, exit 2, whichever
        # command met them and wherever. The engine imports none of those layers.
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a bad option or argument: the same one line as every error
            raise UserError(f"{e.format_message()} (see {_command_path(e.ctx)} --help)") from None
        except Exception as e:
            if getattr(type(e), "user_facing", False):
                raise UserError(str(e)) from None
            raise


def _command_path(ctx: click.Context | None) -> str:
    """`patchfuzz crashes list`, however the program was started (`python -m fuzzer.cli`, ...)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["patchfuzz", *reversed(names)])


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ENGINE_VERSION, prog_name="patchfuzz")
def main() -> None:
    """patchfuzz: fuzz live kernel text-patching protocols on emulated CPUs."""
