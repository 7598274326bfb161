"""Acceptance: one fixed random search finds every buggy variant and nothing in the clean ones.

Every (protocol, variant) of the registry gets the same budget and seed; what each must show is
read from the protocol's own `expect` table, so this test follows the protocol files.
"""

import pytest

from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.oracles import ORACLES
from fuzzer.protocols import registry
from fuzzer.strategies.random import RandomStrategy

SCHEDULES = 1500
SEED = 0
CPUS = 4

CASES = [pytest.param(cls, variant, id=f"{name}:{variant}")
         for name, cls in registry().items() for variant in cls.variants]


def _summary(result):
    return {sig: (rec.finding.oracle, rec.finding.title, rec.first_schedule, rec.schedule.hex())
            for sig, rec in result.crashes.items()}


def test_every_variant_states_an_expectation():
    assert CASES, "the registry is empty"
    for name, cls in registry().items():
        assert set(cls.expect) == set(cls.variants), name
        for variant, oracle in cls.expect.items():
            assert oracle is None or oracle in ORACLES, f"{name}:{variant} expects unknown {oracle!r}"


@pytest.mark.parametrize(("cls", "variant"), CASES)
def test_random_search_meets_expectation(cls, variant):
    expected = cls.expect[variant]
    machine = Machine(cls, variant, Config(cpus=CPUS))
    result = fuzz(machine, RandomStrategy(seed=SEED), schedules=SCHEDULES)
    assert result.schedules == SCHEDULES
    summary = _summary(result)
    if expected is None:
        assert result.crashes == {}, f"clean variant crashed: {summary}"
    else:
        oracles = {rec.finding.oracle for rec in result.crashes.values()}
        assert expected in oracles, f"expected {expected} within {SCHEDULES} schedules, got {summary}"

    # every finding replays, on a machine that has never run anything, to the same signature
    fresh = Machine(cls, variant, Config(cpus=CPUS))
    for sig, rec in result.crashes.items():
        assert rec.finding.protocol == cls.name and rec.finding.variant == variant
        assert rec.finding.signature == sig
        assert 1 <= rec.first_schedule <= SCHEDULES and rec.hits >= 1
        again = fresh.run(rec.schedule)
        assert again.finding is not None, f"{rec.schedule.hex()} did not replay"
        assert again.finding.signature == sig, (rec.finding.title, again.finding.title)
