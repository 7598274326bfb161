"""A broken protocol never looks like a clean one: its own errors are their own outcome, with
the file and line, what was wrong, and the schedule that replays it."""

import pytest

from fuzzer.arch.x86_64 import NOP5
from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Call, Protocol, Site
from fuzzer.strategies import STRATEGIES


def _line(fn, marker: str) -> int:
    import inspect

    src, start = inspect.getsourcelines(fn)
    return start + next(i for i, ln in enumerate(src) if marker in ln)


class Broken(Protocol):
    name = "test/broken"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    params = dict(how="raise")
    variants = {"raise": {}, "not-an-op": dict(how="int"), "spin": dict(how="spin"),
                "handler": dict(how="handler"), "predicate": dict(how="predicate")}
    expect = dict.fromkeys(variants)

    def patcher(self, k):
        yield k.store("x", 1)
        if self.v.how == "raise":
            raise ValueError("boom")  # RAISE
        if self.v.how == "int":
            yield 42  # NOT AN OP
        if self.v.how == "spin":
            while True:  # SPIN
                pass
        if self.v.how == "predicate":
            yield k.wait_until("x", lambda v: 1 / 0)  # PREDICATE
        yield k.poke("fentry", b"\xcc")
        yield k.sync_cores()
        yield k.poke("fentry", k.site("fentry").new[1:], offset=1)

    def int3_handler(self, k, ip):
        if self.v.how == "handler":
            raise KeyError("no such probe")  # HANDLER
        return k.NOT_MINE
        yield  # pragma: no cover


@pytest.mark.parametrize(("variant", "marker", "what"), [
    ("raise", "# RAISE", "ValueError: boom"),
    ("not-an-op", "# NOT AN OP", "yielded 42 (int), which is not an op"),
    ("spin", "# SPIN", "without yielding an op"),
    ("handler", "# HANDLER", "KeyError: 'no such probe'"),
    ("predicate", "# PREDICATE", "ZeroDivisionError"),
])
def test_a_protocols_own_error_is_its_own_outcome(variant, marker, what):
    m = Machine(Broken, variant, Config(cpus=2, op_timeout=0.3))
    fn = Broken.int3_handler if variant == "handler" else Broken.patcher
    r = m.run(bytes(64), trace=True)
    assert r.verdict == "error" and r.finding is None, r.verdict
    e = r.error
    assert what in e.what
    path, line = e.where.rsplit(":", 1)
    assert path.endswith("test_protocol_errors.py") and int(line) == _line(fn, marker)
    assert r.trace[-1].split(None, 3)[-1].startswith("*** protocol error at")
    # the same schedule replays to the same error
    again = m.run(r.schedule)
    assert again.error.what == e.what and again.error.where == e.where


def test_the_watchdog_never_fires_on_the_shipped_protocols():
    from fuzzer.protocols import registry
    from fuzzer.strategies.random import RandomStrategy

    for cls in registry().values():
        for variant in cls.variants:
            m = Machine(cls, variant, Config(cpus=4, op_timeout=0.05))
            strat = RandomStrategy(seed=0)
            for _ in range(50):
                assert m.run(strat.next_schedule()).error is None, (cls.name, variant)


@pytest.mark.parametrize("strategy", ["random", "pct", "swarm", "exhaustive"])
def test_every_in_process_strategy_stops_at_a_protocol_error(strategy):
    m = Machine(Broken, "spin", Config(cpus=2, op_timeout=0.3))
    res = fuzz(m, STRATEGIES[strategy](seed=1), seconds=30)
    assert res.error is not None and "without yielding" in res.error.error.what
    assert res.seconds < 10 and res.schedules == res.error.at_schedule
    assert m.run(res.error.schedule).error is not None  # replayable


def _user_dir(tmp_path, body: str):
    d = tmp_path / "protocols"
    d.mkdir()
    (d / "mine.py").write_text(body)
    return d


USER_PROTOCOL = '''
from fuzzer.arch.x86_64 import NOP5
from fuzzer.protocol import Call, Protocol, Site


class Spins(Protocol):
    name = "mine/spins"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    params = dict(first=False)
    variants = {"late": {}, "first": dict(first=True)}
    expect = {"late": "torn-fetch", "first": None}

    def patcher(self, k):
        if self.v.first:
            yield k.atomic_inc("started")
            while True:  # THE LOOP
                pass
        yield k.poke("fentry", k.site("fentry").new)  # torn by NMIs: findings first
        if (yield k.load("nmis")) >= 2:
            while True:  # ONLY AFTER TWO NMIS
                pass

    def nmi_enter(self, k):
        yield k.atomic_inc("nmis")
'''


def _cli(d, *args, timeout=120):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, PATCHFUZZ_PROTOCOL_DIR=str(d))
    return subprocess.run([sys.executable, "-m", "fuzzer.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[1])


def test_run_reports_a_protocol_error_in_one_line_with_exit_3(tmp_path):
    d = _user_dir(tmp_path, USER_PROTOCOL)
    p = _cli(d, "run", "mine/spins:first", "--schedule", "00", "--op-timeout", "0.3")
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert "PROTOCOL ERROR at" in p.stdout and "mine.py:" in p.stdout and "without yielding" in p.stdout
    assert "Traceback" not in p.stderr
    bad = _cli(d, "run", "mine/spins:first", "--schedule", "00", "--op-timeout", "nan")
    assert bad.returncode == 2 and "--op-timeout" in bad.stderr


def test_fuzz_stops_at_a_protocol_error_keeps_what_it_found_and_closes_the_campaign(tmp_path):
    import json
    import sqlite3

    d = _user_dir(tmp_path, USER_PROTOCOL)
    db = tmp_path / "c.db"
    # random search finds the tear first, then a schedule with two NMIs before the check
    p = _cli(d, "fuzz", "mine/spins:late", "--strategy", "random", "--schedules", "3000",
             "--op-timeout", "0.3", "--db", f"sqlite:///{db}", "--json", "--minimize-runs", "100")
    assert p.returncode == 3, p.stderr
    out = json.loads(p.stdout)
    assert out["crashes"] and out["crashes"][0]["oracle"] == "torn-fetch"  # kept
    assert out["schedules"] < 3000 and "without yielding" in out["error"]["what"]
    minimized = sqlite3.connect(db).execute("select count(*) from crash_samples where minimized").fetchone()
    assert minimized[0] >= 1  # and minimized
    assert out["error"]["where"].split(":")[0].endswith("mine.py") and out["error"]["replay"].startswith("patchfuzz run")
    assert "Traceback" not in p.stderr and p.stderr.count("\n") <= 3
    status = sqlite3.connect(db).execute("select status from campaigns").fetchall()
    assert status == [("errored",)]
    # the replay command it prints reproduces the error
    schedule = out["error"]["schedule"]
    again = _cli(d, "run", "mine/spins:late", "--schedule", schedule or "00", "--op-timeout", "0.3")
    assert again.returncode == 3


def test_atheris_stops_at_a_protocol_error_and_keeps_its_schedule(tmp_path):
    import json

    d = _user_dir(tmp_path, USER_PROTOCOL)
    p = _cli(d, "fuzz", "mine/spins:late", "--seconds", "60", "--op-timeout", "0.3", "--no-db",
             "--corpus", str(tmp_path / "corpus"), "--json", timeout=200)
    assert p.returncode == 3, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert "without yielding" in out["error"]["what"] and out["error"]["schedule"]
    assert "Traceback" not in p.stderr
    again = _cli(d, "run", "mine/spins:late", "--schedule", out["error"]["schedule"], "--op-timeout", "0.3")
    assert again.returncode == 3


TEARS = '''
from fuzzer.arch.x86_64 import NOP5
from fuzzer.protocol import Call, Protocol, Site


class Tears(Protocol):
    name = "mine/tears"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    variants = {"bug": {}}
    expect = {"bug": "torn-fetch"}

    def patcher(self, k):
        yield k.poke("fentry", k.site("fentry").new)  # not atomic: torn by fetches
'''


def test_a_stored_finding_replayed_after_the_protocol_broke_is_a_protocol_error(tmp_path):
    """crashes repro and minimize replay a schedule too: a protocol edited into an error since the
    finding was stored is neither "clean" nor "does not reproduce"."""
    import json

    d = _user_dir(tmp_path, TEARS)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    found = _cli(d, "fuzz", "mine/tears:bug", "--strategy", "random", "--schedules", "300", "--db", url,
                 "--minimize-runs", "50", "--json")
    crash = json.loads(found.stdout)["crashes"][0]
    assert _cli(d, "crashes", "repro", "1", "--db", url).returncode == 0
    mine = d / "mine.py"
    mine.write_text(mine.read_text().replace("        yield k.poke(", "        1 / 0  # BROKEN\n        yield k.poke("))
    line = mine.read_text().splitlines().index("        1 / 0  # BROKEN") + 1
    for args in (["crashes", "repro", "1", "--db", url],
                 ["minimize", "mine/tears:bug", "--schedule", crash["schedule"]]):
        p = _cli(d, *args)
        assert p.returncode == 3, (args, p.stdout, p.stderr)
        assert f"PROTOCOL ERROR at {mine}:{line}: ZeroDivisionError" in p.stdout, p.stdout
        assert "clean" not in p.stdout and "Traceback" not in p.stderr
    p = _cli(d, "minimize", "mine/tears:bug", "--schedule", crash["schedule"], "--json")
    assert p.returncode == 3 and json.loads(p.stdout)["error"]["where"] == f"{mine}:{line}"


def test_fuzz_says_the_protocol_error_once_in_one_line(tmp_path):
    d = _user_dir(tmp_path, USER_PROTOCOL)
    p = _cli(d, "fuzz", "mine/spins:late", "--strategy", "random", "--schedules", "3000", "--op-timeout", "0.3",
             "--no-db")
    assert p.returncode == 3, p.stderr
    first = next(line for line in p.stderr.splitlines() if line.startswith("patchfuzz: protocol error"))
    assert first.startswith("patchfuzz: protocol error in mine/spins:late at ") and "mine.py:" in first
    assert "(after " in first and first.count("protocol error") == 1  # said once
    assert "  replay: patchfuzz run mine/spins:late" in p.stderr
