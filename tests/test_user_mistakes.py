"""A user's mistake gets one line saying what is wrong and what to do, exit 2, and loses
nothing: budgets that are not numbers, a corrupt database, a corpus path that is a file, a
read-only working directory, a filter that matches nothing, a listing with no database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fuzzer.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPEC = "x86/text_poke_bp:no-final-sync"


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def _one_error_line(r, *needles: str) -> str:
    assert r.exit_code == 2, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("patchfuzz: error:"), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory) -> Path:
    """A database with this bug's buckets: copied by the tests that damage it."""
    path = tmp_path_factory.mktemp("db") / "patchfuzz.db"
    r = _invoke("fuzz", SPEC, "--strategy", "random", "--schedules", "300", "--minimize-runs", "0",
                "--db", str(path))
    assert r.exit_code == 0, r.output
    import sqlite3

    conn = sqlite3.connect(path)  # everything into the main file: the tests copy that file alone
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "ten"])
def test_a_budget_that_is_not_a_finite_positive_number(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_error_line(_invoke("fuzz", SPEC, "--seconds", value), "--seconds", value)
    assert list(tmp_path.iterdir()) == []  # no database, no corpus directory


def test_other_durations_are_checked_alike():
    _one_error_line(_invoke("run", SPEC, "--schedule", "00", "--op-timeout", "nan"), "--op-timeout")
    _one_error_line(_invoke("bench", "--cap", "inf"), "--cap")


def test_a_bad_option_is_one_line_with_where_to_look():
    _one_error_line(_invoke("crashes", "list", "--status", "bogus"), "--status",
                    "patchfuzz crashes list --help")
    _one_error_line(_invoke("fuzz"), "PROTOCOL[:VARIANT]")


def _corrupt_page(path: Path, page: int) -> None:
    with path.open("r+b") as f:
        f.seek((page - 1) * 4096)
        f.write(b"\xff" * 4096)


@pytest.mark.parametrize("table", ["crash_buckets", "crash_samples", "campaigns"])
def test_a_database_with_one_corrupt_page_is_refused_and_kept(filled_db, tmp_path, table):
    import sqlite3

    path = tmp_path / "patchfuzz.db"
    shutil.copy(filled_db, path)
    with sqlite3.connect(path) as conn:
        (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    conn.close()
    _corrupt_page(path, page)
    before = path.read_bytes()
    for args in (["crashes", "list"], ["crashes", "show", "1"],
                 ["fuzz", SPEC, "--strategy", "random", "--schedules", "50"]):
        _one_error_line(_invoke(*args, "--db", str(path)), "corrupt", "left untouched")
        assert path.read_bytes() == before


def test_crashes_list_without_a_database_creates_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PATCHFUZZ_DB", raising=False)
    for args in (["crashes", "list"], ["crashes", "show", "1"], ["crashes", "repro", "1"]):
        _one_error_line(_invoke(*args), "no crash database at patchfuzz.db", "patchfuzz fuzz")
    assert list(tmp_path.iterdir()) == []


def test_filters_say_when_nothing_matches(filled_db):
    db = str(filled_db)
    _one_error_line(_invoke("crashes", "list", "--oracle", "no-such-oracle", "--db", db),
                    "unknown oracle 'no-such-oracle'", "torn-fetch")
    r = _invoke("crashes", "list", "--oracle", "deadlock", "--db", db)
    assert r.exit_code == 0 and "no crash buckets" in r.stdout and "oracle deadlock" in r.stdout
    # PROTOCOL:VARIANT, as every other command takes it
    rows = json.loads(_invoke("crashes", "list", "--protocol", SPEC, "--db", db, "--json").stdout)
    assert rows and {f"{r['protocol']}:{r['variant']}" for r in rows} == {SPEC}
    r = _invoke("crashes", "list", "--protocol", "x86/text_poke_bp:correct", "--db", db)
    assert r.exit_code == 0 and "match protocol x86/text_poke_bp, variant correct" in r.stdout


def test_a_corpus_option_naming_a_file(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("not a directory")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    _one_error_line(_invoke("fuzz", SPEC, "--seconds", "2", "--corpus", str(f), "--db", url),
                    str(f), "is a file", "--corpus")
    assert f.read_text() == "not a directory"
    assert not (tmp_path / "c.db").exists()  # refused before a campaign was recorded


def _in_read_only_dir(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`patchfuzz ARGS` with a read-only working directory. root ignores mode bits, so as root
    the directory is a read-only bind mount in a private mount namespace."""
    ro = tmp_path / "ro"
    ro.mkdir()
    cmd = [sys.executable, "-m", "fuzzer.cli", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PATCHFUZZ_DB", None)
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.fail("as root this test needs unshare (util-linux) for a read-only mount")
        script = (f'mount --bind "{ro}" "{ro}" && mount -o remount,bind,ro "{ro}" && cd "{ro}" && '
                  f'exec "$@"')
        cmd = ["unshare", "-m", "sh", "-c", script, "sh", *cmd]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    ro.chmod(0o555)
    try:
        return subprocess.run(cmd, env=env, cwd=ro, capture_output=True, text=True, timeout=120)
    finally:
        ro.chmod(0o755)


def test_fuzz_no_db_in_a_read_only_directory(tmp_path):
    p = _in_read_only_dir(tmp_path, "fuzz", SPEC, "--seconds", "2", "--no-db")
    assert p.returncode == 2, (p.stdout, p.stderr)
    (line,) = [x for x in p.stderr.splitlines() if x.strip()]
    assert line.startswith("patchfuzz: error: cannot use ") and "--corpus" in line, line
    assert list((tmp_path / "ro").iterdir()) == []


def test_replay_without_argument_reads_patchfuzz_corpus(tmp_path, monkeypatch):
    corpus = tmp_path / "mine"
    corpus.mkdir()
    case = next(p for p in sorted((ROOT / "corpus").rglob("*.json")))
    shutil.copy(case, corpus)
    monkeypatch.chdir(tmp_path)  # no ./corpus here
    monkeypatch.setenv("PATCHFUZZ_CORPUS", str(corpus))
    r = _invoke("replay", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["corpus"] == str(corpus.resolve()) and out["cases"] == 1
    monkeypatch.delenv("PATCHFUZZ_CORPUS")
    _one_error_line(_invoke("replay"), "PATCHFUZZ_CORPUS")


def test_output_to_a_pipe_is_not_wrapped(filled_db):
    """grep must find whole titles and replay commands in logs, whatever the table's width."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("COLUMNS", None)
    listing = subprocess.run([sys.executable, "-m", "fuzzer.cli", "crashes", "list", "--db", str(filled_db)],
                             env=env, capture_output=True, text=True, timeout=120)
    rows = json.loads(_invoke("crashes", "list", "--db", str(filled_db), "--json").stdout)
    lines = listing.stdout.splitlines()
    for row in rows:
        line = next(x for x in lines if row["title"] in x)
        assert f"{row['protocol']}:{row['variant']}" in line  # one row, one line
    fuzz = subprocess.run([sys.executable, "-m", "fuzzer.cli", "fuzz", SPEC, "--strategy", "random",
                           "--schedules", "300", "--no-db"], env=env, capture_output=True, text=True,
                          timeout=120)
    replays = [x for x in fuzz.stdout.splitlines() if "replay: patchfuzz run" in x]
    assert replays and all(x.rstrip().endswith("'") for x in replays)
    assert max(len(x) for x in fuzz.stdout.splitlines()) > 80


@pytest.mark.parametrize("args, needles", [
    (("--bound", "context_switchs=2"), ("unknown bound 'context_switchs'", "context_switches")),
    (("--bound", "nmis=\u00b2"), ("NAME=NUMBER",)),
    (("--bound", "nmis"), ("NAME=NUMBER",)),
    (("--strategy", "random", "--bound", "nmis=1"), ("--bound is for the exhaustive strategy",)),
])
def test_a_bound_that_would_not_bound_anything(args, needles, tmp_path):
    # a typo'd bound would leave the real one at its default, and "explored within these bounds"
    # would be about other bounds than the user asked for
    r = _invoke("fuzz", SPEC, "--no-db", "--strategy", "exhaustive", "--seconds", "5", *args)
    _one_error_line(r, *needles)


@pytest.mark.parametrize("command", [("crashes", "list"), ("fuzz", SPEC, "--schedules", "5")])
def test_a_database_name_the_file_system_refuses(command, tmp_path, monkeypatch):
    # found by tests/fuzz_parsers.py: stat() raised "File name too long" past the checks
    monkeypatch.chdir(tmp_path)
    r = _invoke(*command, "--db", "x" * 300 + ".db")
    _one_error_line(r, "File name too long")
    assert not list(tmp_path.rglob("*.db"))
