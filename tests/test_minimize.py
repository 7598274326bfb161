"""Minimization: smaller, same signature, deterministic; new buckets are minimized when stored."""

import json

import pytest
from click.testing import CliRunner

from fuzzer.campaign import fuzz
from fuzzer.cli import main
from fuzzer.machine import Config, Machine
from fuzzer.minimize import minimize
from fuzzer.protocols import resolve
from fuzzer.strategies import RandomStrategy

SEED_BUGS = ["x86/text_poke_bp:no-final-sync", "x86/text_poke_bp:no-sync-after-int3",
             "x86/ftrace_nmi_2008:no-nmi-write", "x86/stop_machine_naive:naive"]


# random search's first no-final-sync finding in thread context (with seed 1 it is the IRQ one,
# "unhandled int3 at fentry in IRQ", since schedule format 2 has IRQs)
NO_FINAL_SYNC_SEED = 4


def _finding(spec, seed=1):
    cls, variant = resolve(spec)
    m = Machine(cls, variant, Config(cpus=4))
    want = cls.expect[variant]
    res = fuzz(m, RandomStrategy(seed=seed), schedules=3000, stop_on={want})
    return m, next(c for c in res.crashes.values() if c.finding.oracle == want)


def test_minimized_reproducers_are_smaller_and_keep_the_signature():
    for spec in SEED_BUGS:
        m, rec = _finding(spec)
        small, before, after, _ = minimize(m, rec.schedule, max_runs=3000)
        assert len(small) < len(rec.schedule), spec
        assert after.bytes == len(small) and before.bytes == len(rec.schedule)
        assert m.run(small).finding.signature == rec.finding.signature, spec
        assert minimize(m, rec.schedule, max_runs=3000)[0] == small  # deterministic


def test_no_final_sync_minimized_trace_shows_the_stale_trap():
    m, rec = _finding("x86/text_poke_bp:no-final-sync")
    small, before, after, _ = minimize(m, rec.schedule, max_runs=3000)
    assert after.steps <= before.steps and after.nmis <= before.nmis
    trace = m.run(small, trace=True).trace
    assert any("atomic_dec_and_test(bp.refs): 1 -> 0" in t for t in trace)
    assert any("atomic_inc_not_zero(bp.refs): 0 -> 0" in t for t in trace)  # the late handler fails


def test_cli_minimize_and_bad_input(tmp_path):
    _, rec = _finding("x86/text_poke_bp:no-final-sync")
    r = CliRunner().invoke(main, ["minimize", "x86/text_poke_bp:no-final-sync", "--schedule",
                                  rec.schedule.hex(), "--max-runs", "2000", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["signature"] == rec.finding.signature
    assert out["after"]["bytes"] < out["before"]["bytes"]
    clean = CliRunner().invoke(main, ["minimize", "x86/text_poke_bp:correct", "--schedule", "00"])
    assert clean.exit_code == 2 and clean.stderr.startswith("patchfuzz: error:")


def test_fuzz_minimizes_new_buckets(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    r = CliRunner().invoke(main, ["fuzz", "x86/text_poke_bp:no-final-sync", "--strategy", "random",
                                  "--schedules", "300", "--seed", "1", "--db", url, "--minimize-runs", "1500",
                                  "--json"])
    assert r.exit_code == 0, r.output
    found = {c["signature"]: len(c["schedule"]) // 2 for c in json.loads(r.stdout)["crashes"]}
    rows = json.loads(CliRunner().invoke(main, ["crashes", "list", "--db", url, "--json"]).stdout)
    assert rows and all(row["minimized"] for row in rows)
    for row in rows:
        shown = json.loads(CliRunner().invoke(main, ["crashes", "show", str(row["id"]), "--db", url,
                                                     "--json"]).stdout)
        assert len(bytes.fromhex(shown["best_sample"]["schedule"])) < found[row["signature"]]
        assert CliRunner().invoke(main, ["crashes", "repro", str(row["id"]), "--db", url]).exit_code == 0


def test_decision_passes_shrink_what_byte_passes_cannot():
    """Deleting a byte re-targets every later CPU choice, so the byte passes stall where whole
    decisions still come out: measured in bytes, steps, NMIs and non-default decisions."""
    m, rec = _finding("x86/text_poke_bp:no-final-sync", NO_FINAL_SYNC_SEED)
    _, _, by_bytes, _ = minimize(m, rec.schedule, max_runs=3000, decisions=False, order="bytes")
    small, _, after, _ = minimize(m, rec.schedule, max_runs=3000, order="bytes")
    assert by_bytes.bytes >= 40 and by_bytes.steps >= 80  # 42 bytes, 85 steps when measured
    assert after.bytes <= 25 and after.decisions <= 6 and after.steps < by_bytes.steps  # 23, 5, 79
    assert m.run(small).finding.signature == rec.finding.signature

    m, rec = _finding("x86/ftrace_nmi_2008:correct")
    _, _, by_bytes, _ = minimize(m, rec.schedule, max_runs=3000, decisions=False, order="bytes")
    small, _, after, _ = minimize(m, rec.schedule, max_runs=3000, order="bytes")
    assert by_bytes.nmis >= 3 and by_bytes.steps >= 30  # 7 NMIs and 91 steps; the race needs two
    assert after.nmis == 2 and after.steps < by_bytes.steps and after.bytes < by_bytes.bytes  # 43, 86
    assert m.run(small).finding.signature == rec.finding.signature


def test_steps_order_cuts_the_trace_to_the_race():
    """Bytes order leaves round robin to play out the run after a short prefix (77 steps for
    no-final-sync); steps order names the CPUs that make progress and skips the idle ones."""
    m, rec = _finding("x86/text_poke_bp:no-final-sync", NO_FINAL_SYNC_SEED)
    small_b, _, by_bytes, _ = minimize(m, rec.schedule, max_runs=3000, order="bytes")
    small, _, after, _ = minimize(m, rec.schedule, max_runs=3000, order="steps")
    assert by_bytes.steps >= 70 and after.steps <= 25  # 79 and 23 when measured
    assert after.bytes > by_bytes.bytes  # the explicit choices cost bytes
    assert m.run(small).finding.signature == rec.finding.signature
    assert minimize(m, rec.schedule, max_runs=3000, order="steps")[0] == small  # deterministic
    full = minimize(m, rec.schedule, order="steps")[0]  # with the budget to reach a fixed point
    assert minimize(m, full, order="steps")[0] == full
    trace = m.run(small, trace=True).trace
    race = [t for t in trace if "(trap)" in t or "bp.refs): 1 -> 0" in t or "bp.refs): 0 -> 0" in t]
    assert [t.split()[0] for t in race][-3:] == [str(after.steps - 3), str(after.steps - 1), str(after.steps)]


def test_minimize_default_order_is_steps():
    m, rec = _finding("x86/text_poke_bp:no-final-sync")
    assert minimize(m, rec.schedule, max_runs=3000)[0] == minimize(m, rec.schedule, max_runs=3000,
                                                                    order="steps")[0]
    with pytest.raises(ValueError):
        minimize(m, rec.schedule, order="length")


def test_focused_trace_shows_the_race_in_a_few_lines():
    from fuzzer.focus import focus

    m, rec = _finding("x86/text_poke_bp:no-final-sync", NO_FINAL_SYNC_SEED)
    small = minimize(m, rec.schedule, max_runs=3000, order="steps")[0]
    r = m.run(small, trace=True)
    lines = focus(m, small, r)
    assert len(lines) <= 18 < len(r.trace)  # 17 when measured, of 33 trace lines
    text = "\n".join(lines)
    for what in ("(trap)", "atomic_dec_and_test(bp.refs): 1 -> 0", "atomic_inc_not_zero(bp.refs): 0 -> 0",
                 "*** unhandled-trap", "sync_cores(): IPI to cpu1,cpu2,cpu3", "sync_cores() done"):
        assert what in text, what
    trap_cpu = r.finding.cpu
    # the serializing IPIs the trapping CPU took are part of the race: each keeps its own line
    assert sum(f"cpu{trap_cpu} thread takes IPI" in line for line in lines) == 2
    assert f"involved: cpu0,cpu{trap_cpu}" in lines[-1]
    assert "runs caller loop" not in text
    omitted = int(lines[-1].split()[0].lstrip("("))
    assert 0 < omitted < r.steps
    # the bytes-order reproducer of the same race: the focused view still shows it, in fewer
    # lines than its trace (the harmless trap episodes folded)
    small_b = minimize(m, rec.schedule, max_runs=3000, order="bytes")[0]
    rb = m.run(small_b, trace=True)
    lines_b = focus(m, small_b, rb)
    assert len(lines_b) < len(rb.trace) // 3 and "[schedule: nmi" in "\n".join(lines_b)
    assert "atomic_inc_not_zero(bp.refs): 0 -> 0" in "\n".join(lines_b)


def test_focused_decisions_are_the_ones_the_finding_needs():
    """A deviating answer is noted only if putting it back to its default loses the finding."""
    from fuzzer.focus import focus

    cls, variant = resolve("x86/text_poke_bp:no-sync-after-int3")
    m = Machine(cls, variant, Config(cpus=4))
    small = bytes.fromhex("0000000100000101000300030000030000030b000182")  # the corpus reproducer
    lines = focus(m, small)
    noted = [ln for ln in lines if "[schedule:" in ln]
    assert len(noted) == 1 and "refresh=" in noted[0] and "TORN" in noted[0]
