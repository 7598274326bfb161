"""Oracles are one file each, subscribe to check points, and every title goes through one
sanitizer."""

import importlib

import pytest

from fuzzer.arch.x86_64 import NOP5
from fuzzer.machine import Config, Machine
from fuzzer.oracles import ALL, CHECK_POINTS, ORACLES, Oracle
from fuzzer.oracles.titles import sanitize
from fuzzer.protocol import Call, Protocol, Site


def test_each_oracle_is_its_own_file_named_after_its_id():
    assert list(ORACLES) == [cls.id for cls in ALL]
    for cls in ALL:
        module = importlib.import_module(f"fuzzer.oracles.{cls.id.replace('-', '_')}")
        assert getattr(module, cls.__name__) is cls
        assert cls.subscriptions(), cls.id  # it looks at something
        assert cls.TITLES and cls.fires_when


def test_an_oracle_cannot_subscribe_to_a_point_that_does_not_exist():
    class Typo(Oracle):
        id = "typo"

        def on_fetch_tron(self, cpu):
            pass

    with pytest.raises(TypeError, match="fetch_tron"):
        Typo.subscriptions()
    assert set(CHECK_POINTS) >= {p for cls in ALL for p in cls.subscriptions()}


def test_the_sanitizer_keeps_names_and_drops_numbers():
    assert sanitize("torn fetch at fentry_b in NMI") == "torn fetch at fentry_b in NMI"
    assert sanitize("use after free of bp.vec in int3 handler") == "use after free of bp.vec in int3 handler"
    assert sanitize("bad value 0x1f00 at  cpu3, 12 times") == "bad value ADDR at cpuN, N times"
    assert sanitize("v2.6.28 site_2 x1") == "v2.6.28 site_2 x1"


class SaysBug(Protocol):
    """A protocol whose own assertion text carries a number that differs between runs."""

    name = "test/says_bug"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    variants = {"v": {}}
    expect = {"v": "protocol-assert"}

    def patcher(self, k):
        n = yield k.atomic_inc("counter")
        seen = yield k.load("other")
        yield k.bug(f"counter at {n + seen * 1000:#x} on cpu{k.cpu}")


def test_a_protocols_own_assertion_title_is_sanitized_so_it_deduplicates():
    m = Machine(SaysBug, "v", Config(cpus=2))
    titles = set()
    for other in (0, 1, 7):
        m.proto.initial_memory = lambda other=other: {"other": other}
        r = m.run(b"")
        assert r.finding.oracle == "protocol-assert"
        assert str(other * 1000 + 1) not in r.finding.detail or other == 0
        titles.add(r.finding.title)
    assert titles == {"protocol assertion: counter at ADDR on cpuN"}


def test_an_invariant_holds_on_the_correct_protocol_and_fails_on_its_mutant():
    from fuzzer.strategies.random import RandomStrategy

    from .oracle_protocols import StaticKey

    good = Machine(StaticKey, "correct", Config(cpus=4))
    bad = Machine(StaticKey, "unlock-early", Config(cpus=4))
    strat = RandomStrategy(seed=3)
    found = None
    for _ in range(300):
        s = strat.next_schedule()
        assert good.run(s).finding is None
        f = bad.run(s).finding
        if f is not None and found is None:
            found = f
    assert found is not None and found.oracle == "invariant"
    assert found.title == "invariant violated: key count matches its jump"
    assert "key.count = 1" in found.detail


def test_an_oracle_with_nothing_to_look_at_is_left_out_of_the_check_points():
    m = Machine(SaysBug, "v", Config(cpus=2))
    from fuzzer.machine.core import _nothing

    assert m.checks.shared_changed is _nothing
