"""PCT: priority scheduling with change points; its runs replay from the recorded bytes."""

import json

from click.testing import CliRunner

from fuzzer.campaign import fuzz
from fuzzer.cli import main
from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve
from fuzzer.strategies.pct import PctStrategy, _PctSource


def _machine(spec, cpus=4):
    cls, variant = resolve(spec)
    return Machine(cls, variant, Config(cpus=cpus))


def test_pct_finds_planted_bug_and_replays():
    m = _machine("x86/text_poke_bp:no-final-sync")
    res = fuzz(m, PctStrategy(seed=1, depth=2), schedules=400)
    hits = [c for c in res.crashes.values() if c.finding.oracle == "unhandled-trap"]
    assert hits, "PCT did not find the missing final sync in 400 schedules"
    fresh = _machine("x86/text_poke_bp:no-final-sync")
    for rec in res.crashes.values():
        assert fresh.run(rec.schedule).finding.signature == rec.finding.signature


def test_pct_is_clean_on_correct_variant_with_the_same_budget():
    res = fuzz(_machine("x86/text_poke_bp:correct"), PctStrategy(seed=1, depth=2), schedules=400)
    assert res.crashes == {}


def test_pct_campaign_is_a_function_of_the_seed():
    runs = []
    for _ in range(2):
        m = _machine("x86/ftrace_nmi_2008:no-wait")
        res = fuzz(m, PctStrategy(seed=5, depth=3), schedules=150)
        runs.append({sig: (c.first_schedule, c.schedule) for sig, c in res.crashes.items()})
    assert runs[0] == runs[1] and runs[0]


def test_pct_schedules_by_priority():
    """With no change point the highest-priority runnable CPU is always chosen."""
    import random

    src = _PctSource(random.Random(0), ncpus=4, depth=1, steps=10, max_len=100)
    top = max(range(4), key=lambda c: src.prio[c])
    others = tuple(c for c in range(4) if c != top)
    assert src.choose("cpu", 4, (0, 1, 2, 3)) == top
    pick = src.choose("cpu", 3, others)
    assert others[pick] == max(others, key=lambda c: src.prio[c])


def test_pct_change_point_demotes_the_running_cpu():
    import random

    src = _PctSource(random.Random(3), ncpus=2, depth=2, steps=1, max_len=100)
    assert src.change == {1}
    first = src.prio.index(max(src.prio))
    pick = src.choose("cpu", 2, (0, 1))  # step 1 is the change point: the leader is demoted
    assert pick != first


def test_pct_hands_over_to_defaults_after_max_len():
    import random

    src = _PctSource(random.Random(0), ncpus=2, depth=2, steps=5, max_len=3)
    answers = [src.choose("event", 256, None) for _ in range(4)]
    assert answers[3] is None and all(a is not None for a in answers[:3])


def test_fuzz_cli_pct_json_replays():
    r = CliRunner().invoke(main, ["fuzz", "x86/text_poke_bp:no-final-sync", "--no-db", "--strategy", "pct",
                                  "--depth", "2", "--schedules", "300", "--seed", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["strategy"] == "pct" and out["crashes"]
    crash = out["crashes"][0]
    again = CliRunner().invoke(main, ["run", "x86/text_poke_bp:no-final-sync", "--schedule",
                                      crash["schedule"], "--json"])
    assert json.loads(again.stdout)["signature"] == crash["signature"]


def test_bench_json_rows():
    r = CliRunner().invoke(main, ["bench", "--strategies", "random,pct", "--trials", "2", "--cap", "20",
                                  "--variants", "x86/text_poke_bp:no-final-sync", "--count", "30", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows[0]["kind"] == "throughput" and rows[0]["schedules_per_second"] > 0
    assert {r["scenario"] for r in rows if r.get("kind") == "throughput"} == {
        "x86/text_poke_bp:correct", "arm64/publish_brk:correct", "riscv64/ftrace_call_ops:correct",
        "arm/ftrace:correct", "arm/jump_label_thumb2:correct"}
    search = [r for r in rows if r.get("kind") != "throughput"]
    assert {row["strategy"] for row in search} == {"random", "pct"}
    for row in search:
        for key in ("protocol", "variant", "strategy", "trials", "found", "median_seconds",
                    "median_schedules", "schedules_per_second"):
            assert key in row
        assert row["trials"] == 2 and row["found"] == 2 and row["median_schedules"] >= 1


def test_bench_rejects_clean_variant():
    r = CliRunner().invoke(main, ["bench", "--variants", "x86/text_poke_bp:correct", "--count", "10"])
    assert r.exit_code == 2 and "expected clean" in r.stderr
