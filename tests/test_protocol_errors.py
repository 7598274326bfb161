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
