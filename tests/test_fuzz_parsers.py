"""A short atheris run of each of the project's parsers of user input (tests/fuzz_parsers.py):
whatever the bytes, each returns a value or raises the one error the command line turns into a
line and exit 2. The inputs those runs once found are replayed as regressions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz_parsers import SEEDS, TARGETS

ROOT = Path(__file__).resolve().parents[1]
# inputs that made a target fail before the parser was fixed
REGRESSIONS = {
    "database_url": [b"sqlite://t",  # the dialect's own URL check raised past make_engine
                     b"postg://u8p@\x00tg://u8p@x",  # a password that is also part of the user name
                     b"~\x00.db",  # a NUL byte reached os.path.expanduser
                     b"x" * 300 + b".db",  # a file name longer than the file system allows
                     # bytes that are not UTF-8 (argv keeps them as surrogates): the URL could not be
                     # rendered masked, and the fallback left its password in the message
                     b"po://?\xed\xb2\x98\x05@\xed\xb2\x98resql+://pwd1@1</x",
                     b"L://@\xff\xff\xffL://@\xff\xff\xff\xff\xff\xff'",  # a mask that does not parse
                     # the password "e://" is also in the message's "sqlite:///FILE": no leak (the target)
                     b"sqlIte://\xc2:e://@/",
                     b"pod://u:ter22@h:5432//od://u:ter22@h:5432//d"],  # and in its path: no leak either
    "bound": ["nmis=\u00b2".encode(), b"context_switchs=2"],  # int() refuses "²"; a typo'd bound name
}


def _fuzz(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # cwd: libFuzzer writes crash files to the working directory
    return subprocess.run([sys.executable, "-m", "tests.fuzz_parsers", name, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_short_fuzz_run_finds_nothing(name, tmp_path):
    r = _fuzz(tmp_path, name, "-seed=1", "-runs=4000", "-timeout=20", str(tmp_path / "corpus"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Done 4000 runs" in r.stderr, r.stderr[-2000:]
    assert not list(tmp_path.glob("crash-*"))


@pytest.mark.parametrize("name, data", [(n, d) for n, inputs in REGRESSIONS.items() for d in inputs])
def test_inputs_found_by_fuzzing_stay_fixed(name, data, tmp_path):
    case = tmp_path / "input"
    case.write_bytes(data)
    r = _fuzz(tmp_path, name, str(case))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Executed" in r.stderr, r.stderr[-2000:]


def test_a_target_lets_an_unexpected_error_through(monkeypatch):
    # without this, a target that caught everything would pass every run above: with the
    # dialect's URL check unguarded, as it was, the regression input must fail the target
    import sqlalchemy

    import db.engine

    monkeypatch.setattr(db.engine, "make_engine", sqlalchemy.create_engine)
    with pytest.raises(sqlalchemy.exc.ArgumentError):
        TARGETS["database_url"](b"sqlite://t")


def test_a_target_finds_a_password_a_message_shows(monkeypatch):
    # and the check that lets a password's text in a message's own words pass still sees a leak
    import db
    import db.engine

    def leaky(url):
        raise db.DatabaseError(f"cannot use {url}")

    monkeypatch.setattr(db.engine, "make_engine", leaky)
    with pytest.raises(AssertionError):
        TARGETS["database_url"](b"postgresql://u:hunter22@h/d")
    with pytest.raises(AssertionError):
        TARGETS["database_url"](b"sqlite://u:e://@/")


def test_every_target_has_seeds():
    assert set(SEEDS) == set(TARGETS) and all(SEEDS.values())
