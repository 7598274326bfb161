"""`make test` installs the project quietly: setuptools prints no warning on an editable install
(the licence is an SPDX expression, not the deprecated table; the checkout is the install's
path entry, so no editable-mode notice either)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_prints_no_setuptools_warning(tmp_path):
    # A copy, so the build never rewrites the C extension that the running tests have loaded.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("fuzzer", "workers", "db"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                        "--no-deps", "--quiet", "-e", str(src)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    # setuptools' warnings reach pip's output as "<file>: BuildBackendWarning: ..." framed by "!!"
    assert "BuildBackendWarning" not in out and "!!" not in out and "deprecated" not in out.lower(), out

    meta = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; "
                           "d = m.metadata('patchfuzz'); print(d['License-Expression'], d['License'])"],
                          capture_output=True, text=True, check=True)
    assert meta.stdout.split() == ["GPL-2.0-only", "None"]
