"""The README's protocol examples work as written: copied into a protocol directory, their
correct variants are clean and their buggy ones are found."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Writing a protocol"):]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _example() -> str:
    return _examples()[0]


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


def test_the_readmes_stop_machine_example_runs_as_written(tmp_path):
    # tasks (one free to migrate), cpus_read_lock and a mutex, local_irq_save, stop_machine's
    # callback on every CPU (the cpu_count rendezvous) and k.complete, in one protocol
    d = tmp_path / "protocols"
    d.mkdir()
    (d / "my_text_cb.py").write_text(next(e for e in _examples() if "x86/my_text_cb" in e))
    for variant, args, want in (
            ("no-notify", ("--strategy", "random", "--schedules", "2000"), '"oracle": "deadlock"'),
            ("correct", ("--strategy", "random", "--schedules", "2000"), '"crashes": []'),
            ("correct", ("--strategy", "exhaustive", "--cpus", "2", "--bound", "irqs=1",
                         "--schedules", "100000"), '"crashes": []')):
        out = _cli(d, "fuzz", f"x86/my_text_cb:{variant}", *args, "--no-db", "--json")
        assert out.returncode == 0, out.stderr
        assert want in out.stdout, (variant, args, out.stdout[-2000:])
    assert '"exhausted": true' in out.stdout, out.stdout[-2000:]


def test_the_readmes_programs_example_runs_as_written(tmp_path):
    """Copied into a protocol directory, the message-passing program is found in its plain
    variant and proved clean with the store barrier, by exhaustive search."""
    d = tmp_path / "protocols"
    d.mkdir()
    example = next(e for e in _examples() if "run_program" in e)
    (d / "mp_code.py").write_text("from fuzzer.protocol import Protocol\n\n" + example)
    bounds = ("--bound", "store_delays=4", "--bound", "store_reorders=2")  # a store stays buffered for
    # as many of its CPU's steps as the bound allows: the flag's store needs three
    bad = _cli(d, "fuzz", "mp-code:plain", "--strategy", "exhaustive", "--cpus", "2", *bounds, "--no-db", "--json")
    assert bad.returncode == 0, bad.stderr
    assert '"oracle": "protocol-assert"' in bad.stdout
    good = _cli(d, "fuzz", "mp-code:dmb-st", "--strategy", "exhaustive", "--cpus", "2", *bounds, "--no-db",
                "--json")
    assert good.returncode == 0, good.stderr
    assert '"crashes": []' in good.stdout and '"exhausted": true' in good.stdout, good.stdout[-2000:]
