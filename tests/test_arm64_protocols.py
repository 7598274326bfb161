"""The arm64 protocols: every `correct` variant proved clean by exhaustive search on 2 CPUs
within the bounds below, every mutant found under the same bounds with its expected oracle, and
a long random run on 4 CPUs clean for every variant expected clean. The bounds are large enough:
each mutant shows up within them (the same test)."""

from __future__ import annotations

import pytest

from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocols import registry
from fuzzer.strategies.exhaustive import ExhaustiveStrategy
from fuzzer.strategies.random import RandomStrategy

# The default bounds, plus what the weak model needs: two store delays (keeping two stores
# buffered across the second one's step), a reordered drain and a stale fetch.
BOUNDS = dict(store_delays=2, store_reorders=1, stale_fetches=1)
CEILING = 40_000
ARM64 = {name: cls for name, cls in registry().items() if cls.arch == "arm64"}
VARIANTS = [pytest.param(cls, v, id=f"{name}:{v}") for name, cls in ARM64.items() for v in cls.variants]


def test_every_arm64_protocol_is_registered():
    assert set(ARM64) == {"arm64/ftrace", "arm64/patch_text", "arm64/jump_label", "arm64/publish_brk"}
    for cls in ARM64.values():
        assert cls.expect.get("correct", "missing") is None, cls.name
        assert sum(e is not None for e in cls.expect.values()) >= 2, f"{cls.name}: fewer than two mutants"
        doc = cls.__module__ and __import__(cls.__module__, fromlist=["_"]).__doc__
        assert "commit" in doc or "v6." in doc, cls.name  # the kernel code it models


@pytest.mark.parametrize(("cls", "variant"), VARIANTS)
def test_exhaustive_verdict_on_two_cpus(cls, variant):
    machine = Machine(cls, variant, Config(cpus=2))
    res = fuzz(machine, ExhaustiveStrategy(seed=1, **BOUNDS), schedules=CEILING)
    oracles = {rec.finding.oracle for rec in res.crashes.values()}
    expected = cls.expect[variant]
    if expected is None:
        assert res.exhausted, f"not exhausted within {CEILING}: {res.stats}"
        assert res.crashes == {}, {r.finding.title for r in res.crashes.values()}
    else:
        assert expected in oracles, (expected, oracles, res.schedules, res.exhausted)


@pytest.mark.parametrize(("cls", "variant"), [p for p in VARIANTS if p.values[0].expect[p.values[1]] is None])
def test_clean_variants_stay_clean_under_a_long_random_run(cls, variant):
    res = fuzz(Machine(cls, variant, Config(cpus=4)), RandomStrategy(seed=11), schedules=4000)
    assert res.crashes == {}, {r.finding.title for r in res.crashes.values()}
