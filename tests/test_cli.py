"""The `patchfuzz` command line: JSON outputs, replay of fuzz findings, one-line user errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fuzzer.cli import main
from fuzzer.protocols import registry

PATCHFUZZ = Path(sys.executable).with_name("patchfuzz")
SHIPPED = {"x86/text_poke_bp", "x86/text_mutex_hotplug", "x86/stop_machine_naive",
           "x86/ftrace_nmi_2008", "x86/ftrace_nmi_2010"}


def _invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _json(result):
    return json.loads(result.stdout)


def test_protocols_json_lists_every_variant():
    result = _invoke("protocols", "--json")
    assert result.exit_code == 0, result.output
    rows = _json(result)
    listed = {(r["protocol"], r["variant"]) for r in rows}
    assert len(listed) == len(rows)
    assert SHIPPED <= {r["protocol"] for r in rows}
    assert listed == {(name, v) for name, cls in registry().items() for v in cls.variants}
    for r in rows:
        cls = registry()[r["protocol"]]
        assert r["arch"] == cls.arch
        assert r["expect"] == (cls.expect[r["variant"]] or "clean")


def test_run_empty_schedule_json_is_clean():
    result = _invoke("run", "x86/text_poke_bp:correct", "--schedule", "", "--json")
    assert result.exit_code == 0, result.output
    out = _json(result)
    assert {"verdict", "oracle", "title", "signature", "trace_sha256"} <= set(out)
    assert out["verdict"] == "clean"
    assert out["oracle"] is None and out["title"] is None and out["signature"] is None
    assert out["completed"] is True
    assert len(out["trace_sha256"]) == 64 and int(out["trace_sha256"], 16) >= 0


def test_fuzz_findings_replay_through_run(tmp_path):
    spec = "x86/text_poke_bp:no-final-sync"
    result = _invoke("fuzz", spec, "--strategy", "random", "--schedules", "300", "--seed", "0", "--no-db", "--json")
    assert result.exit_code == 0, result.output
    out = _json(result)
    assert {"schedules", "seconds", "crashes"} <= set(out)
    assert out["schedules"] == 300
    assert out["seconds"] >= 0
    assert out["crashes"], "no finding in 300 schedules"
    assert "unhandled-trap" in {c["oracle"] for c in out["crashes"]}
    for crash in out["crashes"]:
        assert {"oracle", "title", "signature", "schedule"} <= set(crash)
        bytes.fromhex(crash["schedule"])  # plain hex

        replay = _invoke("run", spec, "--schedule", crash["schedule"], "--json")
        assert replay.exit_code == 1, replay.output  # a crash verdict exits 1
        got = _json(replay)
        assert got["verdict"] == "crash"
        assert (got["oracle"], got["title"], got["signature"]) == (
            crash["oracle"], crash["title"], crash["signature"])

        path = tmp_path / f"{crash['signature']}.hex"
        path.write_text(crash["schedule"] + "\n")
        from_file = _invoke("run", spec, "--schedule", f"@{path}", "--json")
        assert from_file.exit_code == 1, from_file.output
        assert _json(from_file)["signature"] == crash["signature"]
        assert _json(from_file)["trace_sha256"] == got["trace_sha256"]

    # the same seed and budget give the same findings
    again = _json(_invoke("fuzz", spec, "--strategy", "random", "--schedules", "300", "--seed", "0", "--no-db", "--json"))
    strip = [{k: v for k, v in c.items() if k != "first_seconds"} for c in out["crashes"]]
    assert [{k: v for k, v in c.items() if k != "first_seconds"} for c in again["crashes"]] == strip


def test_installed_script_runs(tmp_path):
    assert PATCHFUZZ.exists(), PATCHFUZZ
    clean = subprocess.run([str(PATCHFUZZ), "run", "x86/text_poke_bp:correct", "--schedule", "", "--json"],
                           capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["verdict"] == "clean"
    bad = subprocess.run([str(PATCHFUZZ), "run", "x86/nope", "--schedule", "00"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stdout == ""
    lines = bad.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("patchfuzz: error: "), bad.stderr


BAD_INPUTS = {
    "unknown-protocol": ["run", "x86/no_such_protocol", "--schedule", "00"],
    "unknown-variant": ["run", "x86/text_poke_bp:no-such-variant", "--schedule", "00"],
    "odd-length-hex": ["run", "x86/text_poke_bp:correct", "--schedule", "abc"],
    "non-hex-character": ["run", "x86/text_poke_bp:correct", "--schedule", "00zz"],
    "missing-file": ["run", "x86/text_poke_bp:correct", "--schedule", "@{missing}"],
    "cpus-1": ["run", "x86/text_poke_bp:correct", "--schedule", "00", "--cpus", "1"],
    "cpus-9": ["run", "x86/text_poke_bp:correct", "--schedule", "00", "--cpus", "9"],
    "fuzz-cpus-9": ["fuzz", "x86/text_poke_bp:correct", "--schedules", "5", "--cpus", "9"],
    "fuzz-unknown-protocol": ["fuzz", "x86/no_such_protocol", "--schedules", "5"],
    "seconds-and-schedules": ["fuzz", "x86/text_poke_bp:correct", "--seconds", "1", "--schedules", "5"],
    "unknown-strategy": ["fuzz", "x86/text_poke_bp:correct", "--schedules", "5", "--strategy", "nope"],
    "unknown-mutator": ["fuzz", "x86/text_poke_bp:correct", "--schedules", "5", "--mutator", "nope"],
    "mutator-not-atheris": ["fuzz", "x86/text_poke_bp:correct", "--schedules", "5", "--strategy", "pct",
                            "--mutator", "near"],
    "minimize-unknown-order": ["minimize", "x86/text_poke_bp:no-final-sync", "--schedule", "00",
                               "--order", "length"],
}


@pytest.mark.parametrize("args", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_user_errors_are_one_line(args, tmp_path):
    args = [a.replace("{missing}", str(tmp_path / "missing.hex")) for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("patchfuzz: error: ") and lines[0][len("patchfuzz: error: "):].strip()
    assert result.stdout == ""


def test_default_strategy_is_atheris_and_keeps_its_corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["fuzz", "x86/text_poke_bp:no-final-sync", "--schedules", "400",
                                  "--seed", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["strategy"] == "atheris" and out["crashes"]
    corpus = tmp_path / ".patchfuzz" / "corpus" / "x86_text_poke_bp" / "no-final-sync"
    assert corpus.is_dir() and any(corpus.iterdir())
    # the main job leaves a database to triage, in the working directory by default
    assert (tmp_path / "patchfuzz.db").is_file()
    listed = CliRunner().invoke(main, ["crashes", "list", "--json"])
    assert {row["signature"] for row in json.loads(listed.stdout)} == {c["signature"] for c in out["crashes"]}


def test_fuzz_passes_the_mutator_to_atheris(tmp_path, monkeypatch):
    from fuzzer import cli

    seen = []
    real = cli.STRATEGIES["atheris"]

    def spy(**kwargs):
        strat = real(**kwargs)
        seen.append(strat.mutator)
        return strat

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(cli.STRATEGIES, "atheris", spy)
    for mutator in ("near", None):
        extra = ["--mutator", mutator] if mutator else []
        r = CliRunner().invoke(main, ["fuzz", "x86/text_poke_bp:no-final-sync", "--schedules", "300",
                                      "--seed", "1", "--no-db", "--json", *extra])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["crashes"]
    assert seen == ["near", "site-hold"]


# the corpus's no-final-sync race, minimized in steps order (23 steps; bytes order gives 77)
NO_FINAL_SYNC_STEPS = ("0000000200000001000300030000030000000000000000000000000003000300000300000300000300"
                       "000000000000000000000000020000000003000002")


def test_minimize_order_and_focused_trace(tmp_path):
    spec = "x86/text_poke_bp:no-final-sync"
    by = {order: _json(_invoke("minimize", spec, "--schedule", NO_FINAL_SYNC_STEPS, "--order", order,
                               "--max-runs", "400", "--json")) for order in ("steps", "bytes")}
    assert by["steps"]["order"] == "steps" and by["bytes"]["order"] == "bytes"
    assert by["steps"]["after"]["steps"] <= 23 < by["bytes"]["after"]["steps"]
    assert by["bytes"]["after"]["bytes"] < by["steps"]["after"]["bytes"]
    plain = _invoke("run", spec, "--schedule", NO_FINAL_SYNC_STEPS, "--trace")
    focused = _invoke("run", spec, "--schedule", NO_FINAL_SYNC_STEPS, "--focus")
    assert plain.exit_code == focused.exit_code == 1
    lines = focused.stdout.split("\n\n")[0].splitlines()
    # 18: the IPIs the trapping CPU took for each sync_cores() keep their own lines
    assert len(lines) <= 18 < len(plain.stdout.split("\n\n")[0].splitlines())
    assert lines[-1].startswith("(") and "steps not shown" in lines[-1] and "involved: cpu0,cpu3" in lines[-1]
    assert "CRASH [unhandled-trap]" in focused.stdout
    out = _json(_invoke("run", spec, "--schedule", NO_FINAL_SYNC_STEPS, "--focus", "--json"))
    assert out["focus"] == lines and "trace" not in out
    # and on a stored bucket
    url = f"sqlite:///{tmp_path / 'c.db'}"
    r = _invoke("fuzz", spec, "--strategy", "random", "--schedules", "300", "--seed", "1", "--db", url,
                "--minimize-runs", "0", "--json")
    assert r.exit_code == 0, r.output
    bucket = str(_json(_invoke("crashes", "list", "--db", url, "--json"))[0]["id"])
    shown = _invoke("crashes", "show", bucket, "--db", url, "--focus")
    full = _invoke("crashes", "show", bucket, "--db", url)
    assert shown.exit_code == 0 and "steps not shown" in shown.stdout
    assert len(shown.stdout.splitlines()) < len(full.stdout.splitlines())
    assert "focus" in _json(_invoke("crashes", "show", bucket, "--db", url, "--focus", "--json"))
