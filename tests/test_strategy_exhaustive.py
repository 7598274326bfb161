"""Exhaustive search: a proof up to the bounds on the correct protocol, and the same bounds find
every known bug. Everything is checked by counts (schedules explored), never by time."""

import pytest

from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve
from fuzzer.strategies.exhaustive import ExhaustiveStrategy

CPUS = 2
# The default bounds (context_switches=3, nmis=1, store_delays=1, partial_refresh=1,
# ipi_defers=1). The proof of text_poke_bp:correct explores 8,966 schedules today; the ceiling
# leaves room for engine changes but would catch a reduction that stopped working.
PROOF_CEILING = 20_000
FIND_CEILING = PROOF_CEILING  # a bug within the bounds must show up before the proof would end


def _machine(spec: str, cpus: int = CPUS) -> Machine:
    cls, variant = resolve(spec)
    return Machine(cls, variant, Config(cpus=cpus))


def _explore(machine: Machine, strategy: ExhaustiveStrategy, limit: int, stop_oracle: str | None = None):
    """Drive the strategy by hand (the campaign loop has no stop-at-first-finding); returns
    (runs, {signature: (oracle, schedule)}, first result with `stop_oracle` or None)."""
    strategy.bind(machine)
    findings = {}
    for runs in range(1, limit + 1):
        run = strategy.next_run()
        if run is None:
            return runs - 1, findings, None
        result = machine.run(run.schedule, source=run.source)
        strategy.observe(run, result)
        f = result.finding
        if f is not None and not result.abandoned:
            findings.setdefault(f.signature, (f.oracle, result.schedule))
            if f.oracle == stop_oracle:
                return runs, findings, result
    return limit, findings, None


def test_correct_variant_is_proved_within_bounds():
    machine = _machine("x86/text_poke_bp:correct")
    strategy = ExhaustiveStrategy(seed=123)
    res = fuzz(machine, strategy, schedules=PROOF_CEILING)
    stats = res.stats
    print(f"\nproof: {res.schedules} schedules, {stats}, {res.seconds:.1f}s")
    assert res.exhausted, f"not exhausted within {PROOF_CEILING} schedules: {stats}"
    assert res.crashes == {}
    assert stats["explored"] == res.schedules
    # the tree really branched, and state caching did the work
    assert res.schedules > 1_000 and stats["choice_points"] > 1_000 and stats["states"] > 1_000
    assert stats["pruned"] > res.schedules // 2
    assert stats["uncached"] == 0
    assert strategy.next_run() is None and strategy.done


@pytest.mark.parametrize(("spec", "oracle"), [
    ("x86/text_poke_bp:no-sync-after-int3", "torn-fetch"),
    ("x86/text_poke_bp:no-final-sync", "unhandled-trap"),
    ("x86/text_poke_bp:publish-after-int3", "unhandled-trap"),
    ("x86/text_poke_bp:early-free", "use-after-free"),
    ("x86/text_mutex_hotplug:abba", "deadlock"),  # the hotplug task runs on the last CPU
    ("x86/stop_machine_naive:naive", "torn-fetch"),  # needs the one NMI
])
def test_same_bounds_find_each_bug_and_it_replays(spec, oracle):
    runs, _, result = _explore(_machine(spec), ExhaustiveStrategy(), FIND_CEILING, stop_oracle=oracle)
    assert result is not None, f"{spec}: no {oracle} within {runs} schedules"
    print(f"\n{spec}: {oracle} after {runs} schedules: {result.finding.title}")
    # the recorded choices are an ordinary schedule: a fresh machine replays it exactly
    again = _machine(spec).run(result.schedule)
    assert again.finding is not None, f"{result.schedule.hex()} did not replay"
    assert again.finding.signature == result.finding.signature
    assert again.steps == result.steps


def test_campaign_records_replayable_findings():
    machine = _machine("x86/text_poke_bp:no-final-sync")
    res = fuzz(machine, ExhaustiveStrategy(), schedules=400)
    assert not res.exhausted and res.schedules == 400
    assert {rec.finding.oracle for rec in res.crashes.values()} == {"unhandled-trap"}
    fresh = _machine("x86/text_poke_bp:no-final-sync")
    for sig, rec in res.crashes.items():
        assert fresh.run(rec.schedule).finding.signature == sig


class _RecordingStrategy(ExhaustiveStrategy):
    """Computes every state key but never prunes: the whole tree, and every state in it."""

    def _visit(self, key, budget):
        self._seen.setdefault(key, []).append(budget)
        return False


# Small bounds, so that the unpruned tree can be walked in full. `max_steps` keeps the NMI's
# placement finite without pruning.
SMALL = [
    pytest.param("x86/stop_machine_naive:naive",
                 dict(context_switches=0, nmis=1, store_delays=0, ipi_defers=0, partial_refresh=0,
                      max_steps=30), id="stop_machine_naive-nmi"),
    pytest.param("x86/text_poke_bp:no-final-sync",
                 dict(context_switches=1, nmis=0, store_delays=0, ipi_defers=0, partial_refresh=0),
                 id="no-final-sync-cs1"),
]


@pytest.mark.parametrize(("spec", "bounds"), SMALL)
def test_pruning_prunes_and_loses_nothing(spec, bounds):
    pruned = ExhaustiveStrategy(**bounds)
    runs, found, _ = _explore(_machine(spec), pruned, 100_000)
    full = _RecordingStrategy(**bounds)
    full_runs, full_found, _ = _explore(_machine(spec), full, 100_000)
    assert pruned.done and full.done
    print(f"\n{spec}: {runs} schedules with pruning, {full_runs} without; {len(full._seen)} states")
    assert pruned.pruned > 0 and runs < full_runs / 2
    # every state of the whole tree is reached, and every bug in it is found
    assert set(pruned._seen) == set(full._seen)
    assert set(found) == set(full_found) and found


def test_search_orders_reach_the_same_states():
    bounds = dict(context_switches=1, nmis=1, store_delays=1, ipi_defers=1, partial_refresh=1)
    bounded = ExhaustiveStrategy(order="bounded", **bounds)
    dfs = ExhaustiveStrategy(order="dfs", **bounds)
    _explore(_machine("x86/text_poke_bp:correct"), bounded, PROOF_CEILING)
    _explore(_machine("x86/text_poke_bp:correct"), dfs, PROOF_CEILING)
    assert bounded.done and dfs.done
    assert set(bounded._seen) == set(dfs._seen)


def test_replayed_prefixes_recompute_to_the_same_alternatives():
    # verify_replay recomputes each replayed draw's alternatives and fails on any difference:
    # the runs are deterministic and the alternatives depend only on recorded state
    strategy = ExhaustiveStrategy(verify_replay=True)
    runs, _, _ = _explore(_machine("x86/text_poke_bp:early-free"), strategy, 600)
    assert runs == 600


def test_bounds_and_constructor():
    s = ExhaustiveStrategy(seed=5, nmis=2, partial_refresh=False, unknown_option="ignored")
    assert s.bounds() == {"context_switches": 3, "nmis": 2, "irqs": 0, "foreign_traps": 0, "preemptions": 0,
                          "migrations": 1,
                          "store_delays": 1, "partial_refresh": 0, "ipi_defers": 1, "short_slices": 0,
                          "store_reorders": 1, "stale_fetches": 1, "max_steps": 300}
    assert s.name == "exhaustive" and not s.wants_coverage
    with pytest.raises(ValueError):
        ExhaustiveStrategy(context_switches=-1)
    with pytest.raises(ValueError):
        ExhaustiveStrategy(order="bfs")


@pytest.mark.parametrize("owner", ["machine", "memory", "views", "sync"])
def test_unclassified_machine_state_is_refused(owner):
    # pruning on state the key does not cover would be unsound: the search must refuse it,
    # whether the machine itself or one of its parts grew the field
    machine = _machine("x86/text_poke_bp:correct")
    strategy = ExhaustiveStrategy()
    strategy.bind(machine)
    machine.run()
    target = machine if owner == "machine" else getattr(machine, owner)
    target.new_engine_state = 1
    run = strategy.next_run()
    with pytest.raises(RuntimeError, match="new_engine_state"):
        machine.run(run.schedule, source=run.source)


def test_every_record_field_is_state_unless_it_says_why_not():
    # the records' state views take every slot by default: a new field is keyed, not lost
    from fuzzer.machine.state import Cpu, Frame, _state_slots

    machine = _machine("x86/text_poke_bp:correct")
    machine.run(bytes(64))
    cpu = machine.cpus[1]
    slots = {s for klass in Cpu.__mro__ for s in getattr(klass, "__slots__", ())}
    assert set(cpu.state(machine.step)) == slots - set(Cpu.NOT_STATE)
    assert set(_state_slots(Cpu)) == slots - set(Cpu.NOT_STATE)
    frame = cpu.frames[0]
    assert set(frame.state()) == {f for f in Frame.__dataclass_fields__} - set(Frame.NOT_STATE)
