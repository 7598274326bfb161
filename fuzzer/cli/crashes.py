"""`patchfuzz crashes ...`: triage of the crash database (one bucket per signature)."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from ..choices import SCHEDULE_FORMAT
from ..console import UserError, stdout_console
from ..diagram_text import render_text
from .common import (
    build_machine,
    check_timeline,
    db_option,
    diagram_option,
    exit_protocol_error,
    focused_view,
    open_db,
    race_diagram,
    write_timeline,
)
from .group import main


@main.group()
def crashes() -> None:
    """Triage the crash database: one bucket per signature."""


def _bucket(database, bucket_id: int) -> dict:
    import db

    try:
        return db.get_bucket(database, bucket_id)
    except db.NotFound as e:
        raise UserError(str(e)) from None


@crashes.command("list")
@click.option("--protocol", default=None, metavar="PROTOCOL[:VARIANT]")
@click.option("--oracle", default=None, help="An oracle id (see `patchfuzz oracles`).")
@click.option("--status", default=None, type=click.Choice(["new", "fixed", "duplicate", "invalid"]))
@click.option("--since", default=None, metavar="YYYY-MM-DD", help="Last seen on or after this day (UTC).")
@click.option("--json", "as_json", is_flag=True)
@db_option
def crashes_list(protocol, oracle, status, since, as_json, db_url) -> None:
    """One row per bucket: id, title, oracle, protocol:variant, count, first and last seen, status."""
    import datetime as dt

    import db

    when = None
    if since:
        try:
            when = dt.datetime.fromisoformat(since).replace(tzinfo=dt.UTC)
        except ValueError:
            raise UserError(f"--since takes a date like 2026-11-21, got {since!r}") from None
    from ..oracles import ORACLES

    if oracle is not None and oracle not in ORACLES:
        raise UserError(f"unknown oracle {oracle!r}; known: {', '.join(ORACLES)}")
    variant = None
    if protocol is not None and ":" in protocol:  # the PROTOCOL:VARIANT every other command takes
        protocol, variant = protocol.split(":", 1)
    database = open_db(db_url, existing=True)
    rows = db.list_buckets(database, protocol=protocol, variant=variant, oracle=oracle, status=status,
                           since=when)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        given = [f"{k} {v}" for k, v in (("protocol", protocol), ("variant", variant), ("oracle", oracle),
                                         ("status", status), ("since", since)) if v is not None]
        click.echo(f"no crash buckets in {database.url}" + (f" match {', '.join(given)}" if given else ""))
        return
    table = Table()
    for col in ("id", "title", "oracle", "protocol:variant", "count", "first seen", "last seen", "status"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), r["title"], r["oracle"], f"{r['protocol']}:{r['variant']}",
                      str(r["count"]), f"{r['first_seen']:%Y-%m-%d %H:%M}", f"{r['last_seen']:%Y-%m-%d %H:%M}",
                      r["status"])
    stdout_console().print(table)


@crashes.command("show")
@click.argument("bucket_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@diagram_option
@db_option
def crashes_show(bucket_id, as_json, timeline, race_diagram_text, focus, db_url) -> None:
    """Everything about a bucket, with the trace of its shortest reproducer."""
    check_timeline(timeline)
    database = open_db(db_url, existing=True)
    b = _bucket(database, bucket_id)
    sample = b.get("best_sample") or {}
    trace: list[str] = []
    focused: list[str] = []
    detail = sample.get("detail") or ""
    diagram = None
    title = f"{b['protocol']}:{b['variant']} [{b['oracle']}] {b['title']}"
    drawing = timeline is not None or race_diagram_text
    if sample:
        try:
            machine = _sample_machine(b, sample)
            schedule = bytes(sample["schedule"])
            result = machine.run(schedule, trace=True)
            trace = result.trace
            if result.finding is not None:  # the detail of the run whose trace is shown
                detail = result.finding.detail
            if focus:
                focused = focused_view(machine, schedule, result)[0]
            if drawing:
                diagram = race_diagram(machine, schedule, result, title, focus is not False)
        except UserError:
            trace = ["(protocol no longer available: trace not replayed)"]
    if drawing and diagram is None:
        raise UserError(f"bucket {bucket_id} has no reproducer this engine can replay: nothing to draw")
    if timeline is not None:
        write_timeline(timeline, diagram, focused if focus and focused else trace)
    text = render_text(diagram) if race_diagram_text else []
    if as_json:
        out = {**b, "trace": trace}
        if focus:
            out["focus"] = focused
        if race_diagram_text:
            out["race_diagram"] = text
        if sample:
            out["best_sample"] = {**sample, "schedule": bytes(sample["schedule"]).hex(), "detail": detail}
        click.echo(json.dumps(out, indent=2, default=str))
        return
    click.echo(f"bucket {b['id']}: [{b['oracle']}] {b['title']}")
    click.echo(f"  {b['protocol']}:{b['variant']}  status {b['status']}  count {b['count']}  "
               f"first {b['first_seen']}  last {b['last_seen']}  signature {b['signature']}")
    if b.get("note"):
        click.echo(f"  note: {b['note']}")
    if sample:
        click.echo(f"  reproducer: {len(bytes(sample['schedule']))} bytes, format {sample['schedule_format']}, "
                   f"engine {sample['engine_version']}: {bytes(sample['schedule']).hex()}")
        click.echo(f"  {detail}")
    if race_diagram_text:
        click.echo("")
    for line in text or ((focused or trace) if focus else trace):
        click.echo(line)


@crashes.command("repro")
@click.argument("bucket_id", type=int)
@db_option
def crashes_repro(bucket_id, db_url) -> None:
    """Replay the stored reproducer; exit 0 if it still reproduces the bucket's signature."""
    database = open_db(db_url, existing=True)
    b = _bucket(database, bucket_id)
    sample = b.get("best_sample")
    if not sample:
        raise UserError(f"bucket {bucket_id} has no stored reproducer")
    if sample["schedule_format"] != SCHEDULE_FORMAT:
        raise UserError(f"bucket {bucket_id}'s reproducer uses schedule format {sample['schedule_format']}; "
                        f"this engine reads format {SCHEDULE_FORMAT}")
    machine = _sample_machine(b, sample)
    r = machine.run(bytes(sample["schedule"]))
    if r.error is not None:
        exit_protocol_error(r.error)
    f = r.finding
    if f is not None and f.signature == b["signature"]:
        click.echo(f"reproduces: [{f.oracle}] {f.title}")
        return
    got = f"[{f.oracle}] {f.title}" if f else "clean"
    click.echo(f"does not reproduce: expected [{b['oracle']}] {b['title']}, got {got}")
    sys.exit(1)


@crashes.command("mark")
@click.argument("bucket_id", type=int)
@click.option("--status", required=True, type=click.Choice(["new", "fixed", "duplicate", "invalid"]))
@click.option("--note", default=None)
@db_option
def crashes_mark(bucket_id, status, note, db_url) -> None:
    """Set a bucket's status (and note)."""
    import db

    database = open_db(db_url, existing=True)
    try:
        db.mark(database, bucket_id, status, note)
    except db.NotFound as e:
        raise UserError(str(e)) from None
    click.echo(f"bucket {bucket_id}: {status}")


def _sample_machine(bucket: dict, sample: dict):
    """The machine a stored reproducer ran on: its CPUs and its model settings."""
    config = sample.get("config") or {}
    return build_machine(f"{bucket['protocol']}:{bucket['variant']}", config.get("cpus", 4),
                         config.get("stop_machine_serializes"),
                         arch_opts=tuple(config.get("arch_options") or ()))
