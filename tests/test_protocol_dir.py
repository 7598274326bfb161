"""Protocols from a configured directory ($PATCHFUZZ_PROTOCOL_DIR): how a kernel developer fuzzes
a new scheme, on the command line and on the farm, without touching the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .test_farm import farm  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]


def user_protocol(directory: Path, name: str = "mine/naive_copy") -> Path:
    """A copy of the naive stop_machine protocol under another name, importing the API by its
    absolute name as a file outside the package must."""
    src = (ROOT / "fuzzer/protocols/x86/stop_machine_naive.py").read_text()
    src = (src.replace("from ...arch.x86_64 import NOP5", "from fuzzer.arch.x86_64 import NOP5")
              .replace("from ...protocol import", "from fuzzer.protocol import")
              .replace('name = "x86/stop_machine_naive"', f'name = "{name}"'))
    directory.mkdir(exist_ok=True)
    path = directory / f"{name.replace('/', '_')}.py"
    path.write_text(src)
    return path


def cli(directory: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATCHFUZZ_PROTOCOL_DIR=str(directory))
    return subprocess.run([sys.executable, "-m", "fuzzer.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_protocol_file_in_the_directory_is_listed_and_fuzzed(tmp_path):
    d = tmp_path / "protocols"
    user_protocol(d)
    listed = json.loads(cli(d, "protocols", "--json").stdout)
    assert {"protocol": "mine/naive_copy", "variant": "naive"}.items() <= next(
        r for r in listed if r["protocol"] == "mine/naive_copy").items()
    out = cli(d, "fuzz", "mine/naive_copy", "--strategy", "random", "--schedules", "300", "--no-db", "--json")
    assert out.returncode == 0, out.stderr
    assert {c["oracle"] for c in json.loads(out.stdout)["crashes"]} == {"torn-fetch"}
    # without the setting it does not exist
    plain = subprocess.run([sys.executable, "-m", "fuzzer.cli", "run", "mine/naive_copy", "--schedule", "00"],
                           cwd=ROOT, capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "PATCHFUZZ_PROTOCOL_DIR"})
    assert plain.returncode == 2 and "unknown protocol 'mine/naive_copy'" in plain.stderr


def test_a_broken_or_clashing_protocol_file_is_one_line(tmp_path):
    d = tmp_path / "protocols"
    d.mkdir()
    (d / "broken.py").write_text("x = (\n")
    p = cli(d, "protocols")
    assert p.returncode == 2 and p.stderr.startswith("patchfuzz: error: cannot load protocol file")
    assert "broken.py" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    (d / "broken.py").unlink()
    user_protocol(d, name="x86/stop_machine_naive")
    p = cli(d, "run", "x86/stop_machine_naive", "--schedule", "00")
    assert p.returncode == 2 and "already defined" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = cli(tmp_path / "missing", "protocols")
    assert p.returncode == 2 and "not a directory" in p.stderr


def test_farm_workers_run_a_protocol_from_their_configured_directory(farm, tmp_path):  # noqa: F811
    d = tmp_path / "protocols"
    user_protocol(d)
    sub = cli(d, "farm", "submit", "mine/naive_copy", "--jobs", "1", "--job-seconds", "3",
              "--strategy", "random", "--minimize-runs", "0", "--json")
    assert sub.returncode == 0, sub.stderr
    work = cli(d, "worker", "--burst")
    assert work.returncode == 0, work.stderr[-2000:]
    st = json.loads(cli(d, "farm", "status", "--json").stdout)
    camp = st["campaigns"][0]
    assert (camp["protocol"], camp["status"], camp["jobs"]) == ("mine/naive_copy", "finished", {"finished": 1})
    assert camp["findings"] > 0


NEW_API_PROTOCOL = '''
from fuzzer.arch.x86_64 import NOP5
from fuzzer.protocol import Call, Protocol, Site


class OwnIrqFree(Protocol):
    """A free-to-migrate task that writes a call byte by byte with IRQs on, and an invariant."""

    name = "mine/own_irq_free"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    tasks = {"patcher": 0, "roamer": None}
    variants = {"v": {}}
    expect = {"v": "torn-fetch"}

    def invariants(self):
        return {"roamer runs at most once": lambda s: s.var("roamed") <= 1}

    def patcher(self, k):
        yield k.poke("fentry", k.site("fentry").new)

    def roamer(self, k):
        yield k.atomic_inc("roamed")
'''


def test_farm_jobs_run_protocols_with_tasks_irqs_and_invariants(farm, tmp_path):  # noqa: F811
    d = tmp_path / "protocols"
    d.mkdir()
    (d / "own_irq_free.py").write_text(NEW_API_PROTOCOL)
    sub = cli(d, "farm", "submit", "mine/own_irq_free", "--jobs", "1", "--job-seconds", "3",
              "--strategy", "swarm", "--minimize-runs", "200", "--json")
    assert sub.returncode == 0, sub.stderr
    work = cli(d, "worker", "--burst")
    assert work.returncode == 0, work.stderr[-2000:]
    listed = json.loads(cli(d, "crashes", "list", "--json").stdout)
    titles = {row["title"] for row in listed if row["protocol"] == "mine/own_irq_free"}
    assert "torn fetch at fentry in IRQ" in titles, titles


SPINS_AFTER_TWO_NMIS = '''
from fuzzer.arch.x86_64 import NOP5
from fuzzer.protocol import Call, Protocol, Site


class Spins(Protocol):
    name = "mine/farm_spins"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    variants = {"v": {}}
    expect = {"v": "torn-fetch"}

    def patcher(self, k):
        yield k.poke("fentry", k.site("fentry").new)
        if (yield k.load("nmis")) >= 2:
            while True:
                pass

    def nmi_enter(self, k):
        yield k.atomic_inc("nmis")
'''


def test_a_farm_job_that_hits_a_protocol_error_fails_with_the_error_and_its_replay(farm, tmp_path):  # noqa: F811
    d = tmp_path / "protocols"
    d.mkdir()
    (d / "farm_spins.py").write_text(SPINS_AFTER_TWO_NMIS)
    sub = cli(d, "farm", "submit", "mine/farm_spins", "--jobs", "1", "--job-seconds", "20",
              "--strategy", "random", "--minimize-runs", "50", "--json")
    assert sub.returncode == 0, sub.stderr
    env_timeout = dict(os.environ, PATCHFUZZ_PROTOCOL_DIR=str(d))
    work = subprocess.run([sys.executable, "-m", "fuzzer.cli", "worker", "--burst"], cwd=ROOT, env=env_timeout,
                          capture_output=True, text=True, timeout=300)
    assert work.returncode == 0, work.stderr[-2000:]
    camp = json.loads(cli(d, "farm", "status", "--json").stdout)["campaigns"][0]
    assert camp["status"] == "failed" and camp["findings"] > 0, camp
    detail = json.loads(cli(d, "farm", "status", str(camp["id"]), "--json").stdout)
    job = detail["campaigns"][0]["job_list"][0]
    assert "protocol error" in job["error"] and "farm_spins.py" in job["error"] and "replay: patchfuzz run" in job["error"]
