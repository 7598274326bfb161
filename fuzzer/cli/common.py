"""What the commands share: building a machine from a user's spec, reading a schedule, the
stop_machine option, the focused trace, the error console, the crash database."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import click

from ..arch.base import UnknownOption
from ..choices import ScheduleError, parse_schedule_hex
from ..console import Seconds, UserError, console
from ..machine import MAX_CPUS, MIN_CPUS, Config, Machine
from ..protocols import UnknownProtocol, resolve

err_console = console(stderr=True)


EXIT_PROTOCOL_ERROR = 3  # the protocol's own code went wrong: neither clean (0) nor a finding (1)


def exit_protocol_error(error, as_json: bool = False) -> NoReturn:
    """A replay ended in the protocol's own error (a ProtocolError): `run`'s report, exit 3, never
    a verdict (neither "clean" nor "does not reproduce")."""
    if as_json:
        click.echo(json.dumps({"verdict": "error", "error": error.to_dict()}, indent=2))
    else:
        click.echo(f"PROTOCOL ERROR at {error.where}: {error.what}")
        click.echo("  the protocol's own code went wrong (not a verdict about the scheme); fix it and "
                   "replay this schedule")
    sys.exit(EXIT_PROTOCOL_ERROR)


op_timeout_option = click.option(
    "--op-timeout", type=Seconds(zero_ok=True), default=Config.op_timeout, show_default=True,
    metavar="SECONDS", help="How long a protocol's code may run between two ops before the watchdog "
                            "stops it as a protocol error (0: never).")


arch_opt_option = click.option(
    "--arch-opt", "arch_opts", multiple=True, metavar="NAME",
    help="Switch on an option of the protocol's architecture model (`patchfuzz rules ARCH` lists "
         "them), e.g. --arch-opt dic.")


def build_machine(spec: str, cpus: int, stop_machine_serializes: bool | None,
                  op_timeout: float = Config.op_timeout, arch_opts: tuple[str, ...] = ()) -> Machine:
    if not MIN_CPUS <= cpus <= MAX_CPUS:
        raise UserError(f"--cpus must be between {MIN_CPUS} and {MAX_CPUS}, got {cpus}")
    try:
        cls, variant = resolve(spec)
    except UnknownProtocol as e:
        raise UserError(str(e)) from None
    try:
        return Machine(cls, variant, Config(cpus=cpus, stop_machine_serializes=stop_machine_serializes,
                                            op_timeout=op_timeout, arch_options=tuple(sorted(set(arch_opts)))))
    except UnknownOption as e:
        raise UserError(f"--arch-opt {e.option}: {e.arch} has no such option (known: "
                        f"{', '.join(e.known) or 'none'})") from None
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


def focused_view(machine: Machine, schedule: bytes, result) -> tuple[list[str], list, list[int]]:
    from ..focus import focus_view

    return focus_view(machine, schedule, result)


def race_diagram(machine: Machine, schedule: bytes, result, title: str, focus: bool):
    """The race diagram of `result` (a traced run of `schedule`): the focused one (the involved
    CPUs, the focused rows) or every CPU and every event."""
    from ..diagram import Diagram, rows_of_events

    if focus:
        _, rows, cpus = focused_view(machine, schedule, result)
        return Diagram(title, cpus, rows)
    return Diagram(title, list(range(len(machine.cpus))), rows_of_events(result.events or [], result.renderer))


def diagram_option(f):
    """--timeline FILE and --race-diagram, shared by `run` and `crashes show`."""
    f = click.option("--race-diagram", "race_diagram_text", is_flag=True,
                     help="Print the race as a plain-text diagram instead of the trace: one column per CPU "
                          "(CPU0 | CPU1 ...), time going down, skipped steps marked, the violation last; "
                          "the layout of a kernel changelog, ready for a commit message. Focused unless "
                          "--no-focus.")(f)
    f = click.option("--timeline", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     metavar="FILE.svg|FILE.html",
                     help="Also draw the race diagram: one column per CPU, time going down, the violation "
                          "at the bottom in red. Focused unless --no-focus.")(f)
    return click.option("--focus/--no-focus", default=None,
                        help="--focus: print the focused trace: the involved CPUs' steps that touch the patch "
                             "site, protocol variables, locks and handlers, and the decisions the finding needs. "
                             "--no-focus: draw diagrams with every CPU and every event.")(f)


def check_timeline(path: Path | None) -> None:
    if path is not None and path.suffix not in (".svg", ".html"):
        raise UserError(f"--timeline must name a .svg or .html file, got {path}")


def write_timeline(path: Path, diagram, lines: list[str]) -> None:
    """The diagram as SVG, or as HTML with `lines` (the trace shown) below it."""
    from ..diagram_svg import render_html, render_svg

    try:
        path.write_text(render_svg(diagram) if path.suffix == ".svg" else render_html(diagram, lines),
                        encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None


def open_db(url: str | None, *, existing: bool = False):
    """The crash database. `existing`: a command that only reads or triages refuses to create
    one (a mistyped path or the wrong directory would otherwise show an empty, new database)."""
    import db

    if existing:
        path = db.sqlite_path(db.resolve_url(url))
        try:
            missing = path is not None and not path.exists()
        except OSError:  # a name the file system refuses: db.open_db says so
            missing = False
        if missing:
            raise UserError(f"no crash database at {path} (nothing was fuzzed here?): run `patchfuzz "
                            f"fuzz` here first, or point --db or PATCHFUZZ_DB at the database")
    try:
        return db.open_db(url)
    except db.DatabaseError as e:
        raise UserError(str(e)) from None


db_option = click.option("--db", "db_url", default=None, metavar="URL",
                         help="Crash database (default: $PATCHFUZZ_DB, else patchfuzz.db here).")
