"""atheris targets for the project's own parsers of user input: schedule hex, regression corpus
files, protocol specs, `--bound` values and database URLs.

Each parser must, whatever its input, return a value or raise the one error it documents (the
command line turns that into one line and exit 2); anything else (a traceback, a hang, a leaked
password) is a finding. The suite runs each target briefly (tests/test_fuzz_parsers.py); a longer
run, e.g. two minutes each:

    python -m tests.fuzz_parsers database_url -max_total_time=120 /tmp/corpus-url
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

TARGETS: dict[str, Callable[[bytes], None]] = {}
SEEDS: dict[str, list[bytes]] = {}  # valid and near-valid inputs to start from


def target(*seeds: bytes):
    def register(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        TARGETS[fn.__name__] = fn
        SEEDS[fn.__name__] = list(seeds)
        return fn
    return register


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@target(b"00", b"0x0a0b 0c", b"  ff\n00\t", b"abc", b"0xg1")
def schedule_hex(data: bytes) -> None:
    from fuzzer.choices import ScheduleError, parse_schedule_hex

    try:
        out = parse_schedule_hex(_text(data))
    except ScheduleError:
        return
    assert isinstance(out, bytes)
    assert parse_schedule_hex(out.hex()) == out


_CASE = {"protocol": "x86/text_poke_bp", "variant": "correct", "cpus": 4, "schedule_format": 2,
         "schedule": "000102", "expect": {"verdict": "clean"}, "note": ""}
_CASE_FILE = Path(tempfile.mkdtemp(prefix="patchfuzz-parser-fuzz-")) / "case.json"


@target(json.dumps(_CASE).encode(),
        json.dumps({**_CASE, "expect": {"verdict": "crash", "signature": "ab"}}).encode(),
        json.dumps({**_CASE, "cpus": True}).encode(), b"[]", b"{", b"\xff\xfe")
def corpus_case(data: bytes) -> None:
    from fuzzer.machine import MAX_CPUS, MIN_CPUS
    from fuzzer.regress import CaseError, load_case

    _CASE_FILE.write_bytes(data)
    try:
        case = load_case(_CASE_FILE)
    except CaseError:
        return
    assert isinstance(case.schedule, bytes) and isinstance(case.protocol, str)
    assert type(case.cpus) is int and MIN_CPUS <= case.cpus <= MAX_CPUS
    assert case.expect["verdict"] in ("clean", "crash")


@target(b"x86/text_poke_bp", b"x86/text_poke_bp:correct", b"x86/text_poke_bp:", b":", b"x86/nope:x")
def protocol_spec(data: bytes) -> None:
    from fuzzer.protocols import UnknownProtocol, resolve

    try:
        cls, variant = resolve(_text(data))
    except UnknownProtocol:
        return
    assert variant in cls.variants


@target(b"context_switches=3", b"nmis=0", b"max_steps=100", b"nmis=\xc2\xb2", b"=3", b"nmis=-1", b"typo=1")
def bound(data: bytes) -> None:
    from fuzzer.cli.fuzz import _strategy_kwargs
    from fuzzer.console import UserError
    from fuzzer.strategies import ExhaustiveStrategy

    try:
        kwargs = _strategy_kwargs("exhaustive", 3, None, (_text(data),))
    except UserError:
        return
    ExhaustiveStrategy(**kwargs)  # an accepted bound builds the strategy


@target(b"sqlite:///x.db", b"x.db", b"postgresql://u:hunter22@h:5432/d", b"postgres://h/d?connect_timeout=3",
        b"mysql://u:pw@h/x", b":memory:", b"sqlite:///", b"postgresql+psycopg://u:p@[::1/x")
def database_url(data: bytes) -> None:
    from sqlalchemy.engine import make_url

    import db
    from db.engine import make_engine, mask_url

    text = _text(data)
    try:
        resolved = db.resolve_url(text)
    except db.DatabaseError:
        return
    masked = mask_url(resolved)  # never raises: it is used in every error message
    try:
        password = make_url(resolved).password
    except Exception:  # noqa: BLE001 - unparsable URLs have no password to hide
        password = None
    if password:
        # the password's own place holds the mask (a test on the text alone would also flag a
        # password that happens to be part of the scheme or the user name)
        try:
            shown = make_url(masked).password
        except Exception:  # noqa: BLE001 - a mask that no longer parses must still hide it
            shown = None
            assert f":{password}@" not in masked, (resolved, masked)
        assert shown in (None, "***"), (resolved, masked)
    try:
        engine = make_engine(resolved)
    except db.DatabaseError as e:
        if password and len(str(password)) >= 4:
            assert not _shows_password(str(e), resolved, masked, str(password)), (resolved, str(e))
        return
    engine.dispose()


def _shows_password(message: str, url: str, masked: str, password: str) -> bool:
    """Whether an error message about `url` shows its password: more often than the message
    about the same URL with another password does (a message's own words can hold a password's
    text by chance: "e://" is in "sqlite:///FILE", "base" in "database")."""
    from urllib.parse import quote

    import db
    from db.engine import make_engine

    typed = next((f for f in (password, quote(password, safe="", errors="surrogateescape"))
                  if f":{f}@" in url), None)
    if typed is None:  # not where a URL's password is typed: the message must not hold it at all
        return password in message.replace(masked, "<url>")
    try:
        make_engine(url.replace(f":{typed}@", ":x@", 1)).dispose()  # the first is the password's place
        twin = ""
    except db.DatabaseError as e:
        twin = str(e)
    return message.count(password) > twin.count(password)


# Coverage comes from the project's own modules; for database URLs from SQLAlchemy's URL parsing
# and dialects too (where `sqlite://t` broke). Instrumenting everything `db` imports (SQLAlchemy,
# Alembic, Mako, Pygments, asyncio, email, ...) took most of each run's time.
PROJECT = ("db", "fuzzer")
INSTRUMENT = {"database_url": (*PROJECT, "sqlalchemy")}


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz_parsers {{{','.join(TARGETS)}}} [libFuzzer flags] [CORPUS]")
    name = argv[1]
    fn = TARGETS[name]
    libfuzzer_args = [argv[0], *argv[2:]]
    corpus = next((a for a in argv[2:] if not a.startswith("-")), None)
    # a corpus directory gets the seeds; a file is one input to replay, as libFuzzer does
    if corpus and not Path(corpus).is_file():
        Path(corpus).mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(SEEDS[name]):
            (Path(corpus) / f"seed-{i}").write_bytes(seed)
    if corpus and Path(corpus).is_file():  # one input replayed: no coverage to collect
        import db  # noqa: F401
    else:
        with atheris.instrument_imports(include=INSTRUMENT.get(name, PROJECT)):
            import db  # noqa: F401 - instrumented for coverage
            import fuzzer.choices  # noqa: F401
            import fuzzer.cli.fuzz  # noqa: F401 - the --bound parser
            import fuzzer.regress  # noqa: F401
    atheris.Setup(libfuzzer_args, fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
