"""arm64 findings go through the same service as x86 ones: stored and deduplicated, minimized,
shown with their race diagram, reproduced from the database with the model settings they were
found with (`--arch-opt`), and replayed from the regression corpus."""

from __future__ import annotations

import json

from click.testing import CliRunner

from fuzzer.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_an_arm64_finding_is_stored_minimized_drawn_and_reproduced(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    r = _invoke("fuzz", "arm64/jump_label:no-ic", "--strategy", "random", "--schedules", 400, "--seed", 1,
                "--minimize-runs", 300, "--db", url, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {c["oracle"] for c in out["crashes"]} == {"stale-after-complete"}
    rows = json.loads(_invoke("crashes", "list", "--db", url, "--json").stdout)
    bucket = rows[0]["id"]
    shown = _invoke("crashes", "show", bucket, "--db", url, "--race-diagram")
    assert shown.exit_code == 0, shown.output
    assert "ic ivau" not in shown.stdout  # the mutant never invalidates: the picture says so
    assert "dc cvau" in shown.stdout and "stale" in shown.stdout
    repro = _invoke("crashes", "repro", bucket, "--db", url)
    assert repro.exit_code == 0 and "reproduces" in repro.stdout, repro.output


def test_arch_options_reach_the_machine_and_the_stored_sample(tmp_path):
    """With DIC the mutant that skips IC IVAU is clean: the option changes the model, and a
    wrong option is one line."""
    r = _invoke("fuzz", "arm64/jump_label:no-ic", "--strategy", "random", "--schedules", 400, "--seed", 1,
                "--no-db", "--arch-opt", "dic", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["crashes"] == [], r.output
    bad = _invoke("run", "arm64/jump_label:correct", "--schedule", "00", "--arch-opt", "pic")
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "arm64 has no such option" in bad.output


def test_rules_list_the_options_and_the_cmodx_oracle_is_listed():
    r = _invoke("rules", "arm64")
    assert r.exit_code == 0 and "idc" in r.stdout and "dic" in r.stdout
    assert "cmodx-violation" in _invoke("oracles").stdout
