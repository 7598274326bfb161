"""The regression corpus replays clean on main and reports regressions both ways."""

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from fuzzer.cli import main
from fuzzer.protocols.x86.text_poke_bp import TextPokeBP

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def _replay(directory, *extra):
    r = CliRunner().invoke(main, ["replay", str(directory), "--json", *extra])
    return r, json.loads(r.stdout) if r.stdout.strip().startswith("{") else None


def test_corpus_passes_on_main(tmp_path):
    junit = tmp_path / "junit.xml"
    r, out = _replay(CORPUS, "--junit", str(junit))
    assert r.exit_code == 0, r.output
    assert out["cases"] == out["passed"] >= 20
    kinds = {o["message"].split()[0] for o in out["outcomes"]}
    assert kinds == {"clean", "reproduces"}  # both bug cases and controls are there
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == str(out["cases"]) and suite.get("failures") == "0"


def test_breaking_a_correct_protocol_is_a_regression(monkeypatch):
    monkeypatch.setitem(TextPokeBP.variants, "correct", {"final_sync": False})
    r, out = _replay(CORPUS)
    assert r.exit_code == 1
    broken = [o for o in out["outcomes"] if o["status"] == "regression"]
    assert broken and all(o["case"].startswith("x86_text_poke_bp/correct--control") for o in broken)
    assert all("control now crashes" in o["message"] for o in broken)


def test_removing_a_bug_is_a_lost_detection(monkeypatch):
    monkeypatch.setitem(TextPokeBP.variants, "no-final-sync", {})
    r, out = _replay(CORPUS)
    assert r.exit_code == 1
    lost = [o for o in out["outcomes"] if o["status"] == "regression"]
    assert [o["case"] for o in lost] == ["x86_text_poke_bp/no-final-sync.json"]
    assert "bug no longer detected" in lost[0]["message"]


def test_unreadable_cases_are_named_and_the_rest_still_run(tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(CORPUS, copy)
    (copy / "x86_text_poke_bp" / "no-final-sync.json").write_text("{ not json", encoding="utf-8")
    doc = json.loads((copy / "x86_text_poke_bp" / "early-free.json").read_text())
    doc["schedule_format"] = 99
    (copy / "x86_text_poke_bp" / "early-free.json").write_text(json.dumps(doc))
    doc = json.loads((copy / "x86_stop_machine_naive" / "naive.json").read_text())
    del doc["expect"]
    (copy / "x86_stop_machine_naive" / "naive.json").write_text(json.dumps(doc))
    doc = json.loads((copy / "x86_text_mutex_hotplug" / "abba.json").read_text())
    doc["protocol"] = "x86/gone"
    (copy / "x86_text_mutex_hotplug" / "abba.json").write_text(json.dumps(doc))
    r, out = _replay(copy)
    assert r.exit_code == 1
    errors = {o["case"]: o["message"] for o in out["outcomes"] if o["status"] == "error"}
    assert set(errors) == {"x86_text_poke_bp/no-final-sync.json", "x86_text_poke_bp/early-free.json",
                           "x86_stop_machine_naive/naive.json", "x86_text_mutex_hotplug/abba.json"}
    assert "not valid JSON" in errors["x86_text_poke_bp/no-final-sync.json"]
    assert "schedule format 99" in errors["x86_text_poke_bp/early-free.json"]
    assert "missing field" in errors["x86_stop_machine_naive/naive.json"]
    assert "unknown protocol" in errors["x86_text_mutex_hotplug/abba.json"]
    assert out["passed"] == out["cases"] - 4  # everything else still ran and passed


def test_missing_directory_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["replay", str(tmp_path / "nope")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "patchfuzz: error:" in r.stderr
