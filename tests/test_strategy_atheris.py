"""The atheris strategy: libFuzzer in a subprocess, steered by interleaving coverage.

Budgets are schedule counts (libFuzzer's -atheris_runs), so the outcomes do not depend on the
speed of the machine running the tests.
"""

import os
import subprocess
import sys

import pytest

from fuzzer.campaign import fuzz
from fuzzer.decisions import STAY_BYTES, record
from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve
from fuzzer.strategies.atheris import AtherisStrategy, default_corpus_dir

BUDGET = 3000
CPUS = 4


def _machine(spec: str, cpus: int = CPUS) -> Machine:
    cls, variant = resolve(spec)
    return Machine(cls, variant, Config(cpus=cpus))


def _strategy(tmp_path, seed: int = 1, **kw) -> AtherisStrategy:
    return AtherisStrategy(seed=seed, corpus_dir=tmp_path / "corpus", **kw)


def test_finds_missing_final_sync_and_the_schedule_replays(tmp_path):
    machine = _machine("x86/text_poke_bp:no-final-sync")
    progress = []
    res = fuzz(machine, _strategy(tmp_path), schedules=BUDGET,
               on_progress=lambda r: progress.append(r.schedules))
    assert res.schedules == BUDGET
    assert res.stats["coverage_features"] > 0 and res.stats["corpus"] > 0
    assert res.stats["near_misses"] > 0  # int3 goes into sites that other CPUs are fetching
    assert progress == sorted(progress)
    hits = [rec for rec in res.crashes.values() if rec.finding.oracle == "unhandled-trap"]
    assert hits, {rec.finding.oracle: rec.finding.title for rec in res.crashes.values()}

    fresh = _machine("x86/text_poke_bp:no-final-sync")
    for sig, rec in res.crashes.items():
        assert rec.finding.signature == sig
        assert rec.finding.protocol == "x86/text_poke_bp" and rec.finding.variant == "no-final-sync"
        assert 1 <= rec.first_schedule <= BUDGET and rec.hits >= 1
        again = fresh.run(rec.schedule)
        assert again.finding is not None, f"{rec.schedule.hex()} did not replay"
        assert again.finding.signature == sig, (rec.finding.title, again.finding.title)


def test_correct_variant_stays_clean(tmp_path):
    res = fuzz(_machine("x86/text_poke_bp:correct"), _strategy(tmp_path), schedules=BUDGET)
    assert res.schedules == BUDGET
    assert res.crashes == {}
    # clean although the search came within one step of a torn fetch, more than once
    assert res.stats["near_misses"] > 1


def test_corpus_persists_and_a_second_campaign_resumes_from_it(tmp_path):
    machine = _machine("x86/ftrace_nmi_2010:correct")
    first = fuzz(machine, _strategy(tmp_path, seed=3), schedules=400)
    stored = sorted(p.name for p in (tmp_path / "corpus").iterdir())
    assert stored and first.stats["corpus_at_start"] == 0

    second = fuzz(machine, _strategy(tmp_path, seed=4), schedules=len(stored) + 50)
    assert second.stats["corpus_at_start"] == len(stored)
    # replaying the stored corpus restores (nearly) all the coverage of the first campaign;
    # a fresh start would have seen only the empty schedule's handful of features
    assert second.stats["initial_coverage"] >= 0.8 * first.stats["coverage_features"]
    assert set(stored) <= {p.name for p in (tmp_path / "corpus").iterdir()}


def test_default_corpus_lives_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    machine = _machine("x86/text_poke_bp:correct")
    res = fuzz(machine, AtherisStrategy(seed=2), schedules=50)
    assert res.schedules == 50
    corpus = tmp_path / ".patchfuzz" / "corpus" / "x86_text_poke_bp" / "correct"
    assert default_corpus_dir(machine) == corpus
    assert any(corpus.iterdir())
    assert any((tmp_path / ".patchfuzz" / "logs").glob("*.log"))


def test_schedule_budget_terminates_the_child(tmp_path):
    strat = _strategy(tmp_path)
    res = fuzz(_machine("x86/text_poke_bp:correct"), strat, schedules=1)
    assert res.schedules == 1 and res.crashes == {}
    # the worker has exited, so no other process holds its log open
    log = strat.last_logs[0]
    assert log.exists() and "Done 1 in" in log.read_text(errors="replace")


def test_stop_on_ends_the_campaign_at_the_first_such_finding(tmp_path):
    res = fuzz(_machine("x86/text_poke_bp:no-sync-after-int3"), _strategy(tmp_path),
               schedules=100_000, stop_on={"torn-fetch"})
    hits = [rec for rec in res.crashes.values() if rec.finding.oracle == "torn-fetch"]
    assert hits and res.schedules < 100_000


def test_jobs_share_the_corpus_and_split_the_budget(tmp_path):
    strat = _strategy(tmp_path, jobs=2)
    res = fuzz(_machine("x86/text_poke_bp:correct"), strat, schedules=301)
    assert res.schedules == 301 and res.stats["jobs"] == 2
    assert len(strat.last_logs) == 2 and all(log.exists() for log in strat.last_logs)


def test_an_interrupted_campaign_leaves_no_worker_behind(tmp_path):
    class Stop(Exception):
        pass

    def on_crash(rec):
        raise Stop(rec.finding.oracle)

    strat = _strategy(tmp_path)
    with pytest.raises(Stop):
        fuzz(_machine("x86/text_poke_bp:no-final-sync"), strat, schedules=100_000, on_crash=on_crash)
    for pid in strat.last_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # terminated and reaped


def test_time_budget_exits_without_finally_yet_counts_runs(tmp_path):
    # -max_total_time ends the worker without running its `finally`: the count must come from
    # the lines written on the way and libFuzzer's closing line, not a final report
    res = fuzz(_machine("x86/text_poke_bp:correct"), _strategy(tmp_path), seconds=1)
    assert res.schedules > 0 and res.seconds > 0


def test_a_dying_worker_raises_with_its_last_output(tmp_path, monkeypatch):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Traceback: the engine exploded' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(RuntimeError, match=r"(?s)status 3.*the engine exploded"):
        fuzz(_machine("x86/text_poke_bp:correct"), _strategy(tmp_path), schedules=10)


def test_unregistered_protocols_are_refused(tmp_path):
    # the worker can only rebuild a protocol from the registry, never from the caller's class
    from tests.oracle_protocols import StaleAfterComplete

    machine = Machine(StaleAfterComplete, "no-sync", Config(cpus=2))
    with pytest.raises(ValueError, match="registered protocols only"):
        fuzz(machine, _strategy(tmp_path), schedules=10)


def test_worker_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "fuzzer.strategies.atheris_worker", "--help"],
                         capture_output=True, text=True, check=True)
    assert "--corpus" in out.stdout


def test_decision_mutation_edits_whole_decisions():
    """The worker's decision mutator inserts, moves and deletes whole steps: the parse of its
    output shows the inserted NMI as a decision of its own and the decisions before it as they
    were."""
    import random

    from fuzzer import decisions as dec
    from fuzzer.strategies import RandomStrategy
    from fuzzer.strategies.atheris_worker import OP_WEIGHTS, _Recorder, decision_mutation

    machine = _machine("x86/ftrace_nmi_2008:correct")
    data = RandomStrategy(seed=2).next_schedule()
    rec = _Recorder(data)
    machine.run(b"", source=rec)
    before = dec.steps_of(machine, data)
    assert [st.start for st in before] == [i for i, w in enumerate(rec.whats) if w == "event"]
    rng = random.Random(7)
    kinds = set()
    for _ in range(60):
        out = decision_mutation(data, tuple(rec.whats), tuple(rec.ns), 256, rng)
        assert out != data or len(out) == len(data)
        after = dec.steps_of(machine, out)
        # the steps before the first changed byte are untouched
        first = next((i for i, (a, b) in enumerate(zip(data, out)) if a != b), min(len(data), len(out)))
        whole = [st for st in before[:-1] if st.end <= first]  # the last may be cut short
        assert [st.draws for st in after[:len(whole)]] == [st.draws for st in whole]
        kinds.add(len(out) - len(data))
    assert len(kinds) > 2 and len(OP_WEIGHTS) == 6  # grows, shrinks and keeps its length


def test_a_parent_holding_much_memory_does_not_make_the_child_run_out(tmp_path):
    # the child starts with its parent's RSS as its peak (fork copies it, exec keeps it), and
    # libFuzzer's guard reads that peak: run the campaign from a process holding 2.5 GB (in a
    # subprocess, to keep this one small)
    script = f"""
import sys
hog = bytearray(2_500 * 1024 * 1024)
for i in range(0, len(hog), 4096):
    hog[i] = 1
from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve
from fuzzer.strategies.atheris import AtherisStrategy
cls, variant = resolve("x86/text_poke_bp:correct")
# libFuzzer checks its RSS about once a second: long enough for several checks
res = fuzz(Machine(cls, variant, Config(cpus=2)), AtherisStrategy(seed=1, corpus_dir={str(tmp_path / "c")!r}),
           seconds=4)
print("ran", res.schedules > 0)
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.returncode == 0 and p.stdout.strip() == "ran True", p.stderr[-2000:]


def test_feature_positions_name_the_prefix_that_reaches_each_feature():
    """`feature_at[i]` decisions of a schedule lead to the state that produced feature i: a run
    of just that prefix produces the same features up to i."""
    from fuzzer.strategies import RandomStrategy

    machine = _machine("x86/ftrace_nmi_2008:correct")
    strat = RandomStrategy(seed=4)
    checked = 0
    for _ in range(20):
        full = machine.run(strat.next_schedule(), coverage=True)
        at = full.feature_at
        assert len(at) == len(full.features) and at == sorted(at)
        assert all(0 <= a <= len(full.schedule) for a in at)
        for i in range(0, len(at), 7):
            part = machine.run(full.schedule[:at[i]], coverage=True)
            assert part.features[:i + 1] == full.features[:i + 1]
            checked += 1
    assert checked > 50


def _near_misses(spec: str, want: int, seed: int = 0) -> tuple[Machine, list[bytes]]:
    """Prefixes of swarm schedules that end where the run came near a violation."""
    from random import Random

    from fuzzer.strategies.swarm import swarm_schedule

    machine = _machine(spec)
    rng = Random(seed)
    out = []
    for _ in range(5000):
        r = machine.run(swarm_schedule(rng, 256), coverage=True)
        if r.near and r.finding is None:
            out.append(r.schedule[:r.feature_at[r.near[0]]])
            if len(out) == want:
                return machine, out
    raise AssertionError(f"{len(out)} near misses in 5000 runs")


def test_a_near_miss_is_a_state_from_which_the_violation_is_likely():
    """RunResult.near marks states one step from a violation: random continuations of such a
    state find the torn fetch of ftrace_nmi_2008:correct far more often than fresh runs do."""
    from random import Random

    from fuzzer.strategies.swarm import swarm_schedule

    machine, prefixes = _near_misses("x86/ftrace_nmi_2008:correct", 6)
    rng = Random(1)
    tries = 20 * len(prefixes)
    continued = sum(machine.run(p + swarm_schedule(rng, 256 - len(p))).verdict == "crash"
                    for p in prefixes for _ in range(20))
    fresh = sum(machine.run(swarm_schedule(rng, 256)).verdict == "crash" for _ in range(tries))
    assert continued >= tries // 8 and fresh <= tries // 40, (continued, fresh, tries)


def test_near_misses_point_into_the_features():
    machine = _machine("x86/text_poke_bp:correct")
    r = machine.run(b"\x00" * 256, coverage=True)  # int3 goes in under running CPUs
    assert r.near and all(0 <= i < len(r.features) for i in r.near)
    assert machine.run(b"\x00" * 256).near is None  # only with coverage


def test_swarm_schedules_vary_the_density_of_each_event_kind():
    from random import Random

    from fuzzer.draws import EVENT_RANGES
    from fuzzer.strategies.swarm import swarm_schedule

    scheds = [swarm_schedule(Random(seed), 256) for seed in range(200)]
    assert scheds == [swarm_schedule(Random(seed), 256) for seed in range(200)]
    assert all(len(s) == 256 for s in scheds) and len(swarm_schedule(Random(0), 7)) == 7
    lo, hi = EVENT_RANGES["nmi"]
    nmi = sorted(sum(lo <= b < hi for b in s) / 256 for s in scheds)
    # uniform bytes ask for an NMI at 3/64 of the steps; a swarm schedule at its own random
    # share of up to SWARM_DENSITY, plus 1/16 of the bytes that are neither events nor stay
    # bytes: some at half the uniform rate, some at three times it
    assert nmi[10] < 0.04 and nmi[-10] > 0.15 and 0.06 < nmi[100] < 0.13, nmi[::20]
    # and its own share of "stay" bytes (1/16 of uniform bytes), up to SWARM_STAY of the rest
    stay = sorted(sum(b in STAY_BYTES for b in s) / 256 for s in scheds)
    assert stay[10] < 0.12 and stay[-10] > 0.45 and 0.2 < stay[100] < 0.4, stay[::20]


def test_stay_bytes_keep_the_cpu_that_ran_last():
    """decisions.STAY_BYTES, read as the CPU pick, choose the CPU that ran last whenever it can
    run: checked on every pick of stay-byte and swarm schedules (4 CPUs, and 3)."""
    from random import Random

    from fuzzer.strategies.swarm import swarm_schedule

    checked = 0
    for cpus in (4, 3):
        machine = _machine("x86/text_poke_bp:correct", cpus=cpus)
        rng = Random(cpus)
        schedules = [bytes(rng.choice(STAY_BYTES) for _ in range(200))]
        schedules += [swarm_schedule(rng, 256) for _ in range(30)]
        for sched in schedules:
            last = None
            for d in record(machine, sched)[0]:
                if d.what != "cpu":
                    continue
                if d.value in STAY_BYTES and last in d.options:
                    assert d.cpu == last, (cpus, d)
                    checked += 1
                last = d.cpu
    assert checked > 500, checked


@pytest.mark.parametrize("name", ["near", "frontier"])
def test_the_mutators_spend_their_runs_on_a_queued_near_miss(monkeypatch, name):
    from fuzzer.strategies import atheris_worker as w

    base = bytes(range(100, 200))
    shapes = w.Shapes()
    shapes.frontier.append((base, (70,)))
    shapes.near.append([base, (40,), 5])
    monkeypatch.setattr(w, "SHAPES", shapes)
    outs = [w.MUTATORS[name](b"ignored", 128, seed) for seed in range(60)]
    assert all(len(o) == 128 for o in outs)
    near = [i for i, o in enumerate(outs) if o[:40] == base[:40] and o[40] != base[40]]
    # the first mutations continue from the near miss until its runs are used up, then it
    # leaves the queue and fresh schedules (and, for `frontier`, continuations) take over
    assert len(near) == 5 and near[-1] < 12 and not shapes.near
    continued = [o for o in outs if o[:70] == base[:70]]
    assert (len(continued) > 0) == (name == "frontier"), len(continued)


def test_frontier_mutator_continues_from_where_an_input_found_something_new(monkeypatch):
    from fuzzer.strategies import atheris_worker as w

    base = bytes(range(100, 200))
    shapes = w.Shapes()
    shapes.frontier.append((base, (30, 70)))
    monkeypatch.setattr(w, "SHAPES", shapes)
    fresh = continued = 0
    for seed in range(400):
        out = w.frontier_mutator(b"ignored", 128, seed)
        assert len(out) == 128  # full length either way
        cut = next((i for i, (a, b) in enumerate(zip(base, out)) if a != b), len(base))
        if any(p <= cut <= p + w.FRONTIER_JITTER + 1 for p in (30, 70)) and out[:30] == base[:30]:
            continued += 1
        else:
            fresh += 1
    # a fifth continue (a fresh schedule shares a prefix with `base` only by chance)
    assert 40 < continued < 130 and fresh > 270, (continued, fresh)
    # with nothing on the frontier every mutation is a fresh schedule
    monkeypatch.setattr(w, "SHAPES", w.Shapes())
    outs = {w.frontier_mutator(base, 64, seed) for seed in range(20)}
    assert len(outs) == 20 and all(len(o) == 64 and not o.startswith(base[:8]) for o in outs)
