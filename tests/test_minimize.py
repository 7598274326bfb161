"""Minimization: smaller, same signature, deterministic; new buckets are minimized when stored."""

import json

from click.testing import CliRunner

from fuzzer.campaign import fuzz
from fuzzer.cli import main
from fuzzer.machine import Config, Machine
from fuzzer.minimize import minimize
from fuzzer.protocols import resolve
from fuzzer.strategies import RandomStrategy

SEED_BUGS = ["x86/text_poke_bp:no-final-sync", "x86/text_poke_bp:no-sync-after-int3",
             "x86/ftrace_nmi_2008:no-nmi-write", "x86/stop_machine_naive:naive"]


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
    m, rec = _finding("x86/text_poke_bp:no-final-sync")
    _, _, by_bytes, _ = minimize(m, rec.schedule, max_runs=3000, decisions=False)
    small, _, after, _ = minimize(m, rec.schedule, max_runs=3000)
    assert by_bytes.bytes >= 40 and by_bytes.steps >= 80  # 55 bytes, 86 steps when measured
    assert after.bytes <= 20 and after.decisions <= 6 and after.steps < by_bytes.steps
    assert m.run(small).finding.signature == rec.finding.signature

    m, rec = _finding("x86/ftrace_nmi_2008:correct")
    _, _, by_bytes, _ = minimize(m, rec.schedule, max_runs=3000, decisions=False)
    small, _, after, _ = minimize(m, rec.schedule, max_runs=3000)
    assert by_bytes.nmis == 3 and by_bytes.steps >= 30  # the race needs only two NMIs
    assert after.nmis == 2 and after.steps <= 26 and after.bytes < by_bytes.bytes
    assert m.run(small).finding.signature == rec.finding.signature
