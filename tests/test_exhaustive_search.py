"""Exhaustive bounded search: a proof up to a bound on the correct variant, and the bug in each
buggy variant under the SAME bounds (2 CPUs, the strategy's default bounds)."""

import json

import pytest
from click.testing import CliRunner

from fuzzer.campaign import fuzz
from fuzzer.cli import main
from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve
from fuzzer.strategies.exhaustive import ExhaustiveStrategy

CPUS = 2
BUGGY = ["x86/text_poke_bp:no-sync-after-int3", "x86/text_poke_bp:no-final-sync",
         "x86/text_poke_bp:publish-after-int3", "x86/text_poke_bp:early-free",
         "x86/stop_machine_naive:naive", "x86/text_mutex_hotplug:abba"]


def _machine(spec):
    cls, variant = resolve(spec)
    return Machine(cls, variant, Config(cpus=CPUS)), cls.expect[variant]


def test_correct_variant_is_explored_completely_without_violation():
    m, _ = _machine("x86/text_poke_bp:correct")
    res = fuzz(m, ExhaustiveStrategy(), schedules=200_000)
    assert res.exhausted, f"bounds not covered within {res.schedules} schedules"
    assert res.crashes == {}
    assert res.stats["explored"] == res.schedules > 1000
    assert res.stats["pruned"] > 0  # state caching did cut equivalent schedules


@pytest.mark.parametrize("spec", BUGGY)
def test_buggy_variant_found_under_the_same_bounds(spec):
    m, want = _machine(spec)
    res = fuzz(m, ExhaustiveStrategy(), schedules=200_000, stop_on={want})
    hits = [c for c in res.crashes.values() if c.finding.oracle == want]
    assert hits, f"{spec}: {want} not found in {res.schedules} schedules (exhausted={res.exhausted})"
    fresh, _ = _machine(spec)
    for rec in hits:
        assert fresh.run(rec.schedule).finding.signature == rec.finding.signature


def test_pruning_does_not_lose_the_bug():
    m, want = _machine("x86/text_poke_bp:publish-after-int3")
    pruned = fuzz(m, ExhaustiveStrategy(), schedules=200_000, stop_on={want})
    unpruned = fuzz(m, ExhaustiveStrategy(prune=False), schedules=200_000, stop_on={want})
    assert any(c.finding.oracle == want for c in pruned.crashes.values())
    assert any(c.finding.oracle == want for c in unpruned.crashes.values())


def test_cli_reports_the_proof():
    r = CliRunner().invoke(main, ["fuzz", "x86/text_poke_bp:correct", "--strategy", "exhaustive",
                                  "--cpus", "2", "--schedules", "200000", "--no-db"])
    assert r.exit_code == 0, r.output
    assert "within these bounds explored, no violation" in r.stdout


def test_cli_bounds_are_passed_and_checked():
    r = CliRunner().invoke(main, ["fuzz", "x86/text_poke_bp:correct", "--strategy", "exhaustive",
                                  "--cpus", "2", "--bound", "context_switches=0", "--bound", "nmis=0",
                                  "--schedules", "200000", "--no-db", "--json"])
    out = json.loads(r.stdout)
    assert out["exhausted"] and out["crashes"] == []
    small = out["schedules"]
    big = json.loads(CliRunner().invoke(main, ["fuzz", "x86/text_poke_bp:correct", "--strategy", "exhaustive",
                                               "--cpus", "2", "--schedules", "200000", "--no-db",
                                               "--json"]).stdout)["schedules"]
    assert small < big  # a tighter bound explores fewer schedules
