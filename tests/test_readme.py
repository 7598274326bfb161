"""The README's protocol example works as written: copied into a protocol directory, its
correct variant is clean and its buggy one is found."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Writing a protocol"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _cli(d: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATCHFUZZ_PROTOCOL_DIR=str(d))
    return subprocess.run([sys.executable, "-m", "fuzzer.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_readme_example_runs_as_written(tmp_path):
    d = tmp_path / "protocols"
    d.mkdir()
    (d / "my_patch.py").write_text(_example())
    bad = _cli(d, "fuzz", "x86/my_patch:no-final-sync", "--strategy", "random", "--schedules", "2000",
               "--no-db", "--json")
    assert bad.returncode == 0, bad.stderr
    assert '"oracle": "unhandled-trap"' in bad.stdout
    good = _cli(d, "fuzz", "x86/my_patch:correct", "--strategy", "random", "--schedules", "2000",
                "--no-db", "--json")
    assert good.returncode == 0, good.stderr
    assert '"crashes": []' in good.stdout, good.stdout[-2000:]
