"""What the commands share: building a machine from a user's spec, reading a schedule, the
stop_machine option, the focused trace, the error console, the crash database."""

from __future__ import annotations

from pathlib import Path

import click

from ..choices import ScheduleError, parse_schedule_hex
from ..console import Seconds, UserError, console
from ..machine import MAX_CPUS, MIN_CPUS, Config, Machine
from ..protocols import UnknownProtocol, resolve

err_console = console(stderr=True)


EXIT_PROTOCOL_ERROR = 3  # the protocol's own code went wrong: neither clean (0) nor a finding (1)


op_timeout_option = click.option(
    "--op-timeout", type=Seconds(zero_ok=True), default=Config.op_timeout, show_default=True,
    metavar="SECONDS", help="How long a protocol's code may run between two ops before the watchdog "
                            "stops it as a protocol error (0: never).")


def build_machine(spec: str, cpus: int, stop_machine_serializes: bool | None,
                  op_timeout: float = Config.op_timeout) -> Machine:
    if not MIN_CPUS <= cpus <= MAX_CPUS:
        raise UserError(f"--cpus must be between {MIN_CPUS} and {MAX_CPUS}, got {cpus}")
    try:
        cls, variant = resolve(spec)
    except UnknownProtocol as e:
        raise UserError(str(e)) from None
    try:
        return Machine(cls, variant, Config(cpus=cpus, stop_machine_serializes=stop_machine_serializes,
                                            op_timeout=op_timeout))
    except (ValueError, KeyError) as e:  # the protocol's declarations (sites, symbols, tasks)
        raise UserError(f"protocol {cls.name}: {e.args[0] if e.args else e}") from None


def read_schedule(text: str) -> bytes:
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"schedule file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read schedule file {path}: {e}") from None
        text = raw
        where = f" in {path}"
    else:
        where = ""
    try:
        return parse_schedule_hex(text)
    except ScheduleError as e:
        raise UserError(f"{e}{where}; give the schedule as hex digits, e.g. --schedule 00ff10") from None


smz_option = click.option(
    "--stop-machine-serializes/--no-stop-machine-serializes", default=None,
    help="Override the architecture's assumption that leaving stop_machine serializes.")


def focused(machine: Machine, schedule: bytes, result) -> list[str]:
    from ..focus import focus

    return focus(machine, schedule, result)


def focused_view(machine: Machine, schedule: bytes, result) -> tuple[list[str], list]:
    from ..focus import focus_view

    return focus_view(machine, schedule, result)


def open_db(url: str | None, *, existing: bool = False):
    """The crash database. `existing`: a command that only reads or triages refuses to create
    one (a mistyped path or the wrong directory would otherwise show an empty, new database)."""
    import db

    if existing:
        path = db.sqlite_path(db.resolve_url(url))
        if path is not None and not path.exists():
            raise UserError(f"no crash database at {path} (nothing was fuzzed here?): run `patchfuzz "
                            f"fuzz` here first, or point --db or PATCHFUZZ_DB at the database")
    try:
        return db.open_db(url)
    except db.DatabaseError as e:
        raise UserError(str(e)) from None


db_option = click.option("--db", "db_url", default=None, metavar="URL",
                         help="Crash database (default: $PATCHFUZZ_DB, else patchfuzz.db here).")
