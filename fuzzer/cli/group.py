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


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ENGINE_VERSION, prog_name="patchfuzz")
def main() -> None:
    """patchfuzz: fuzz live kernel text-patching protocols on emulated CPUs."""
