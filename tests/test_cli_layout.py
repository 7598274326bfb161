"""The command line is assembled from the engine and the farm without the engine importing the
service: the farm's commands come in through the `patchfuzz.commands` entry points."""

import subprocess
import sys
from importlib.metadata import entry_points

from click.testing import CliRunner

from fuzzer.cli import main


def _imported(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "; import sys; "
                          "print(sorted({m.split('.')[0] for m in sys.modules} & {'workers', 'rq', 'redis'}))"],
                         capture_output=True, text=True, check=True).stdout
    return eval(out)


def test_the_engine_and_its_command_line_import_no_service():
    assert _imported("import fuzzer, fuzzer.machine, fuzzer.campaign, fuzzer.strategies") == []
    assert _imported("import fuzzer.cli") == []
    # running an engine command loads the plugins (the group lists them), still without RQ
    assert "workers" in _imported("from click.testing import CliRunner; from fuzzer.cli import main; "
                                  "CliRunner().invoke(main, ['oracles'])")


def test_the_farm_registers_its_commands_as_plugins():
    names = {ep.name: ep.value for ep in entry_points(group="patchfuzz.commands")}
    assert names == {"farm": "workers.cli:farm", "worker": "workers.cli:worker"}
    out = CliRunner().invoke(main, ["--help"]).output
    assert "farm " in out and "worker " in out and "crashes " in out
    res = CliRunner().invoke(main, ["farm", "--help"])
    assert res.exit_code == 0 and "submit" in res.output
