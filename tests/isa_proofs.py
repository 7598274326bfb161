"""What every ISA's protocol tests check, once: the exhaustive verdict of a variant on 2 CPUs
(a clean one proved within the bounds, a mutant's expected oracle found under the same bounds)
and a long random run on 4 CPUs for a clean one. Each test_<isa>_protocols.py passes its bounds."""

from __future__ import annotations

import pytest

from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocols import registry
from fuzzer.strategies.exhaustive import ExhaustiveStrategy
from fuzzer.strategies.random import RandomStrategy

CEILING = 40_000


def variants_of(*arches: str) -> list:
    """pytest params (cls, variant) for every registered protocol of these architectures."""
    return [pytest.param(cls, v, id=f"{name}:{v}") for name, cls in registry().items()
            if cls.arch in arches for v in cls.variants]


def clean_only(params: list) -> list:
    return [p for p in params if p.values[0].expect[p.values[1]] is None]


def check_exhaustive_verdict(cls, variant: str, bounds: dict, ceiling: int = CEILING) -> None:
    res = fuzz(Machine(cls, variant, Config(cpus=2)), ExhaustiveStrategy(seed=1, **bounds), schedules=ceiling)
    oracles = {rec.finding.oracle for rec in res.crashes.values()}
    expected = cls.expect[variant]
    if expected is None:
        assert res.exhausted, f"not exhausted within {ceiling}: {res.stats}"
        assert res.crashes == {}, {r.finding.title for r in res.crashes.values()}
    else:
        assert expected in oracles, (expected, oracles, res.schedules, res.exhausted)


def check_long_random_run_clean(cls, variant: str) -> None:
    res = fuzz(Machine(cls, variant, Config(cpus=4)), RandomStrategy(seed=11), schedules=4000)
    assert res.crashes == {}, {r.finding.title for r in res.crashes.values()}
