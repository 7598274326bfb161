"""Site-hold schedules (fuzzer/strategies/swarm.py): drawn while the machine runs them,
passing over CPUs that stand in front of a patch site."""

from random import Random

import pytest

from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve
from fuzzer.strategies import atheris_worker as w
from fuzzer.strategies.swarm import SiteHoldSource, site_hold_run


def _machine(spec: str, cpus: int = 4) -> Machine:
    cls, variant = resolve(spec)
    return Machine(cls, variant, Config(cpus=cpus))


class _Watching(SiteHoldSource):
    """Notes, for every CPU pick, which options stood at a site and which one was picked."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.picks: list[tuple[list[bool], int]] = []

    def choose(self, what, n, options):
        waiting = [self.machine.waiting_at_site(c) for c in options] if what == "cpu" else None
        v = super().choose(what, n, options)
        if waiting is not None and v is not None:
            self.picks.append((waiting, v % n))
        return v


@pytest.mark.parametrize("spec", ["x86/ftrace_nmi_2008:correct", "x86/text_poke_bp:correct"])
def test_hold_passes_over_cpus_at_a_site_whenever_another_can_run(spec):
    machine = _machine(spec)
    held = passed = 0
    for seed in range(40):
        src = _Watching(machine, Random(seed), b"", 256, hold=1.0)
        machine.run(b"", source=src)
        for waiting, pick in src.picks:
            if any(waiting) and not all(waiting):
                assert not waiting[pick], (seed, waiting, pick)
                held += 1
            elif all(waiting):
                passed += 1  # nobody else can run: the fetch goes ahead
    # without the hold a CPU at a site is picked at about one step in n
    unheld = 0
    for seed in range(40):
        src = _Watching(machine, Random(seed), b"", 256, hold=0.0)
        machine.run(b"", source=src)
        unheld += sum(waiting[pick] for waiting, pick in src.picks
                      if any(waiting) and not all(waiting))
    assert held > 200 and passed > 0 and unheld > 50, (held, passed, unheld)


def test_a_site_hold_schedule_replays_its_run_and_keeps_its_prefix():
    machine = _machine("x86/ftrace_nmi_2008:correct")
    prefix = bytes(range(30))
    crashes = 0
    for seed in range(60):
        result, src = site_hold_run(machine, Random(seed), prefix if seed % 2 else b"", 256)
        sched = result.schedule
        assert len(sched) == len(src.whats) <= 256
        if seed % 2:
            assert sched[:30] == prefix
        again = machine.run(sched, coverage=True)
        assert (again.features, again.feature_at, again.near, again.steps) == \
            (result.features, result.feature_at, result.near, result.steps)
        assert again.verdict == result.verdict
        if result.finding:
            crashes += 1
            assert again.finding.signature == result.finding.signature
    assert crashes > 0  # the crashing runs replay too, not only the clean ones


def test_holding_finds_the_ftrace_nmi_race_far_more_often():
    """The race of ftrace_nmi_2008:correct needs an NMI to wait at fentry while another NMI
    writes it: with the same seeds, holding CPUs at sites finds it at least 3x as often."""
    machine = _machine("x86/ftrace_nmi_2008:correct")

    def hits(hold: float) -> int:
        return sum(site_hold_run(machine, Random(s), b"", 256, hold, coverage=False)[0].verdict
                   == "crash" for s in range(600))

    held, unheld = hits(1.0), hits(0.0)
    assert held >= 20 and held >= 3 * unheld, (held, unheld)


def test_live_runs_hand_the_run_to_the_harness_only_for_the_same_bytes():
    machine = _machine("x86/text_poke_bp:correct")
    live = w.LiveRuns()
    with pytest.raises(RuntimeError, match="machine is not set"):
        live.extend(b"", Random(0), 64)
    live.machine = machine
    data = live.extend(b"", Random(0), 64)
    got = live.take(data)
    assert got is not None and got[0].schedule == data and len(got[1]) == len(data)
    assert live.take(data) is None  # taken once
    live.extend(b"", Random(1), 64)
    assert live.take(data + b"\x00") is None  # other bytes: the harness runs them itself


def test_site_hold_mutator_spends_its_runs_on_a_queued_near_miss(monkeypatch):
    machine = _machine("x86/ftrace_nmi_2008:correct")
    live = w.LiveRuns()
    live.machine = machine
    monkeypatch.setattr(w, "LIVE", live)
    base = bytes(range(100, 200))
    shapes = w.Shapes()
    shapes.near.append([base, (40,), 5])
    monkeypatch.setattr(w, "SHAPES", shapes)
    outs = [w.site_hold_mutator(b"ignored", 128, seed) for seed in range(40)]
    assert all(0 < len(o) <= 128 for o in outs)
    near = [i for i, o in enumerate(outs) if o[:40] == base[:40]]
    assert len(near) == 5 and near[-1] < 12 and not shapes.near
    assert len(set(outs)) == len(outs)
