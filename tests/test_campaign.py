"""One strategy shape: every strategy searches through the same campaign interface."""

import subprocess
import sys

from fuzzer.campaign import Campaign, fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve
from fuzzer.strategies import STRATEGIES, RandomStrategy, Stepwise
from fuzzer.strategies.swarm import SwarmStrategy


def _machine(spec, cpus=4):
    cls, variant = resolve(spec)
    return Machine(cls, variant, Config(cpus=cpus))


class ReplayList:
    """A strategy that searches on its own terms (no next_run), as atheris does, and reports
    through the campaign: the interface is all `fuzz` needs."""

    name = "replay-list"
    wants_coverage = False

    def __init__(self, schedules):
        self.schedules = schedules
        self.searched = False

    def search(self, machine, campaign: Campaign):
        self.searched = True
        for s in self.schedules:
            if campaign.should_stop():
                return
            r = machine.run(s)
            campaign.ran()
            if r.finding:
                campaign.found(r.finding, r.schedule)

    def stats(self):
        return {"replayed": len(self.schedules)}


def test_any_object_with_search_and_stats_is_a_strategy():
    m = _machine("x86/text_poke_bp:no-final-sync")
    gen = RandomStrategy(seed=2)
    scheds = [gen.next_schedule() for _ in range(300)]
    strat = ReplayList(scheds)
    res = fuzz(m, strat, schedules=200)
    assert strat.searched and res.schedules == 200 and res.stats == {"replayed": 300}
    ref = fuzz(m, _Fixed(scheds), schedules=200)
    assert {s: (r.schedule, r.first_schedule, r.hits) for s, r in res.crashes.items()} == \
        {s: (r.schedule, r.first_schedule, r.hits) for s, r in ref.crashes.items()}
    assert res.crashes


class _Fixed(Stepwise):
    name = "fixed"

    def __init__(self, schedules):
        from fuzzer.strategies.base import Run

        self.runs = iter([Run(s) for s in schedules])

    def next_run(self):
        return next(self.runs, None)


def test_stop_on_ends_the_campaign_at_the_first_such_finding():
    m = _machine("x86/text_poke_bp:no-final-sync")
    res = fuzz(m, RandomStrategy(seed=1), schedules=5000, stop_on={"unhandled-trap"})
    assert len(res.crashes) == 1 and res.schedules < 5000
    rec = next(iter(res.crashes.values()))
    assert rec.first_schedule == res.schedules


def test_a_stepwise_strategy_that_runs_out_marks_the_campaign_exhausted():
    m = _machine("x86/text_poke_bp:correct")
    res = fuzz(m, _Fixed([b"", bytes(10)]), schedules=50)
    assert res.exhausted and res.schedules == 2


def test_swarm_is_a_strategy_of_its_own_that_finds_bugs_deterministically():
    assert STRATEGIES["swarm"] is SwarmStrategy
    m = _machine("x86/text_poke_bp:no-final-sync")
    first = fuzz(m, SwarmStrategy(seed=4), schedules=300)
    again = fuzz(m, SwarmStrategy(seed=4), schedules=300)
    other = fuzz(m, SwarmStrategy(seed=5), schedules=300)
    assert first.crashes, "swarm found nothing in 300 schedules"
    key = lambda res: {s: (r.schedule, r.first_schedule, r.hits) for s, r in res.crashes.items()}  # noqa: E731
    assert key(first) == key(again) and key(first) != key(other)
    # every schedule it reports replays to its finding
    for rec in first.crashes.values():
        assert m.run(rec.schedule).finding.signature == rec.finding.signature


def test_the_campaign_module_imports_no_strategy():
    code = ("import sys, fuzzer.campaign; "
            "print(sorted(m for m in sys.modules if m.startswith('fuzzer.strategies')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
