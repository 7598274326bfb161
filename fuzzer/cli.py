"""The `patchfuzz` command line.

User mistakes (unknown protocol, malformed schedule, missing file, bad CPU count) end in one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from . import ENGINE_VERSION, SCHEDULE_FORMAT
from .campaign import CampaignResult
from .campaign import fuzz as run_campaign
from .choices import ScheduleError, parse_schedule_hex
from .console import UserError, stdout_console
from .machine import MAX_CPUS, MIN_CPUS, Config, Machine
from .minimize import DEFAULT_ORDER, ORDERS
from .oracles import ORACLES
from .protocols import UnknownProtocol, registry, resolve
from .records import FindingRecords
from .strategies import DEFAULT_STRATEGY, STRATEGIES
from .strategies.atheris_worker import DEFAULT_MUTATOR, MUTATORS

err_console = Console(stderr=True)


def _machine(spec: str, cpus: int, stop_machine_serializes: bool | None) -> Machine:
    if not MIN_CPUS <= cpus <= MAX_CPUS:
        raise UserError(f"--cpus must be between {MIN_CPUS} and {MAX_CPUS}, got {cpus}")
    try:
        cls, variant = resolve(spec)
    except UnknownProtocol as e:
        raise UserError(str(e)) from None
    return Machine(cls, variant, Config(cpus=cpus, stop_machine_serializes=stop_machine_serializes))


def _read_schedule(text: str) -> bytes:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ENGINE_VERSION, prog_name="patchfuzz")
def main() -> None:
    """patchfuzz: fuzz live kernel text-patching protocols on emulated CPUs."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def protocols(as_json: bool) -> None:
    """List protocols and their variants, one line each."""
    rows = []
    try:
        known = registry()
    except UnknownProtocol as e:  # a broken file in $PATCHFUZZ_PROTOCOL_DIR
        raise UserError(str(e)) from None
    for name, cls in known.items():
        for variant in cls.variants:
            exp = cls.expect.get(variant)
            rows.append({"protocol": name, "variant": variant, "arch": cls.arch,
                         "expect": exp or "clean", "summary": cls.summary})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(f"{r['protocol']}:{r['variant']}") for r in rows)
    for r in rows:
        click.echo(f"{r['protocol'] + ':' + r['variant']:<{width}}  expect {r['expect']:<15} {r['summary']}")


@main.command()
@click.argument("spec", metavar="PROTOCOL[:VARIANT]")
@click.option("--schedule", "schedule", required=True, metavar="HEX|@FILE",
              help="Schedule bytes as hex, or @FILE holding the hex.")
@click.option("--cpus", default=4, show_default=True, type=int)
@click.option("--trace", is_flag=True, help="Print the event trace.")
@click.option("--focus", is_flag=True,
              help="Print the focused trace instead: the involved CPUs' steps that touch the patch site, "
                   "protocol variables, locks and handlers, and the decisions the finding needs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@smz_option
def run(spec: str, schedule: str, cpus: int, trace: bool, focus: bool, as_json: bool,
        stop_machine_serializes: bool | None) -> None:
    """Replay one schedule and report the verdict."""
    data = _read_schedule(schedule)
    machine = _machine(spec, cpus, stop_machine_serializes)
    result = machine.run(data, trace=True)
    lines = _focused(machine, data, result) if focus else result.trace
    f = result.finding
    out = {
        "protocol": machine.protocol_cls.name,
        "variant": machine.variant,
        "cpus": cpus,
        "verdict": result.verdict,
        "oracle": f.oracle if f else None,
        "title": f.title if f else None,
        "signature": f.signature if f else None,
        "detail": f.detail if f else None,
        "consequence": f.consequence if f else [],
        "steps": result.steps,
        "completed": result.completed,
        "schedule_bytes_used": result.schedule_used,
        "schedule_format": SCHEDULE_FORMAT,
        "engine_version": ENGINE_VERSION,
        "trace_sha256": result.trace_sha256,
    }
    if trace and as_json:
        out["trace"] = result.trace
    if focus and as_json:
        out["focus"] = lines
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        if trace or focus:
            for line in lines:
                click.echo(line)
            click.echo("")
        if f:
            click.echo(f"CRASH [{f.oracle}] {f.title}")
            click.echo(f"  {f.detail}")
            for line in f.consequence:
                click.echo(f"  consequence: {line}")
            click.echo(f"  signature {f.signature}, step {f.step} on cpu{f.cpu}")
        else:
            click.echo(f"clean ({result.steps} steps, protocol {'completed' if result.completed else 'did not complete'})")
        click.echo(f"trace sha256 {result.trace_sha256}")
    if f:
        sys.exit(1)


def _focused(machine: Machine, schedule: bytes, result) -> list[str]:
    from .focus import focus

    return focus(machine, schedule, result)


def _focused_view(machine: Machine, schedule: bytes, result) -> tuple[list[str], list]:
    from .focus import focus_view

    return focus_view(machine, schedule, result)


def _open_db(url: str | None):
    import db

    try:
        return db.open_db(url)
    except db.DatabaseError as e:
        raise UserError(str(e)) from None


class _CrashStore:
    """Writes a campaign and its findings to the crash database as they happen."""

    def __init__(self, url: str | None, machine: Machine, strategy: str, seed: int):
        import db

        self._db_mod = db
        self.db = _open_db(url)
        self.url = self.db.url
        self.machine = machine
        self.records = FindingRecords(machine)
        self.campaign = db.create_campaign(self.db, protocol=machine.protocol_cls.name,
                                           variant=machine.variant, strategy=strategy,
                                           config={**self.records.config, "seed": seed})
        self.new_buckets = 0
        self.new_bucket_ids: dict[int, bytes] = {}
        self.bucket_of: dict[str, int] = {}  # signature -> bucket id
        self.minimized: dict[str, bytes] = {}  # signature -> minimized reproducer (new buckets)

    def _store(self, rec, hits: int) -> None:
        bucket, new = self._db_mod.store_finding(self.db, **self.records.row(rec, hits),
                                                 campaign_id=self.campaign)
        self.new_buckets += new
        self.bucket_of[rec.finding.signature] = bucket
        if new:
            self.new_bucket_ids[bucket] = rec.schedule

    def found(self, rec) -> None:
        self._store(rec, 1)

    def finish(self, res: CampaignResult, minimize_runs: int) -> None:
        for rec in res.crashes.values():
            if rec.hits > 1:
                self._store(rec, rec.hits - 1)
        if minimize_runs:  # new buckets get their smallest reproducer right away
            sig_of = {b: sig for sig, b in self.bucket_of.items()}
            for bucket, schedule in self.new_bucket_ids.items():
                small, extra = self.records.minimized(schedule, minimize_runs)
                self.minimized[sig_of[bucket]] = small
                self._db_mod.set_minimized(self.db, bucket, small, **extra)
        self._db_mod.finish_campaign(
            self.db, self.campaign, schedules_run=res.schedules, seconds=res.seconds,
            findings=sum(r.hits for r in res.crashes.values()), unique_findings=len(res.crashes),
            new_buckets=self.new_buckets, stats=res.stats)


def _progress_table(spec: str, res: CampaignResult) -> Table:
    t = Table.grid(padding=(0, 2))
    extra = [f"{k.replace('_', ' ')} {v}" for k, v in res.stats.items()]
    t.add_row(f"[bold]{spec}[/]", f"{res.schedules} schedules", f"{res.rate:,.0f}/s",
              f"{res.seconds:.1f}s", *extra,
              f"[red]{len(res.crashes)} findings[/]" if res.crashes else "0 findings")
    return t


def _strategy_kwargs(strategy: str, depth: int, corpus: str | None, bounds: tuple[str, ...],
                     mutator: str | None = None) -> dict:
    kwargs: dict = {}
    if strategy == "pct":
        kwargs["depth"] = depth
    if strategy == "atheris" and corpus:
        kwargs["corpus_dir"] = corpus
    if mutator is not None:
        if strategy != "atheris":
            raise UserError(f"--mutator is for the atheris strategy, not {strategy}")
        kwargs["mutator"] = mutator
    for item in bounds:
        key, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise UserError(f"--bound takes NAME=NUMBER, got {item!r}")
        kwargs[key.replace("-", "_")] = int(value)
    return kwargs


@main.command()
@click.argument("spec", metavar="PROTOCOL[:VARIANT]")
@click.option("--seconds", type=float, default=None, help="Time budget (default 10 s).")
@click.option("--schedules", type=int, default=None, help="Schedule budget instead of time.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cpus", default=4, show_default=True, type=int)
@click.option("--strategy", default=DEFAULT_STRATEGY, show_default=True,
              help="Search strategy: " + ", ".join(STRATEGIES))
@click.option("--depth", type=int, default=3, show_default=True, help="PCT bug depth d.")
@click.option("--corpus", default=None, help="atheris corpus directory (default .patchfuzz/corpus/...).")
@click.option("--mutator", default=None,
              help="atheris mutator: " + ", ".join(MUTATORS) + f" (default {DEFAULT_MUTATOR}).")
@click.option("--bound", "bounds", multiple=True, metavar="NAME=N",
              help="exhaustive search bound, e.g. --bound context_switches=3 --bound nmis=1.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@click.option("--db", "db_url", default=None, metavar="URL",
              help="Crash database (default: $PATCHFUZZ_DB, else patchfuzz.db here).")
@click.option("--no-db", is_flag=True, help="Do not store findings.")
@click.option("--minimize-runs", type=int, default=2000, show_default=True,
              help="Runs spent minimizing each new bucket at the end (0: do not minimize).")
@smz_option
def fuzz(spec: str, seconds: float | None, schedules: int | None, seed: int, cpus: int,
         strategy: str, depth: int, corpus: str | None, mutator: str | None,
         bounds: tuple[str, ...], as_json: bool, db_url: str | None, no_db: bool,
         minimize_runs: int, stop_machine_serializes: bool | None) -> None:
    """Search schedules for violations; keeps going after a finding."""
    if seconds is not None and schedules is not None:
        raise UserError("give --seconds or --schedules, not both")
    if seconds is None and schedules is None:
        seconds = 10.0
    if (seconds is not None and seconds <= 0) or (schedules is not None and schedules <= 0):
        raise UserError("the budget must be positive")
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    machine = _machine(spec, cpus, stop_machine_serializes)
    try:
        strat = STRATEGIES[strategy](seed=seed, **_strategy_kwargs(strategy, depth, corpus, bounds,
                                                                   mutator))
    except (TypeError, ValueError) as e:
        raise UserError(f"bad option for strategy {strategy}: {e}") from None
    label = f"{machine.protocol_cls.name}:{machine.variant}"
    live_ok = not as_json and err_console.is_terminal
    store = None if no_db else _CrashStore(db_url, machine, strategy, seed)

    def on_crash(rec) -> None:
        if store:
            store.found(rec)  # stored the moment it is found: a killed campaign loses nothing
        if not as_json:
            err_console.print(f"[red]new finding[/] after {rec.first_schedule} schedules: "
                              + escape(f"[{rec.finding.oracle}] {rec.finding.title}"))

    if live_ok:
        with Live(_progress_table(label, CampaignResult()), console=err_console,
                  refresh_per_second=4, transient=True) as live:
            res = run_campaign(machine, strat, schedules=schedules, seconds=seconds,
                               on_progress=lambda r: live.update(_progress_table(label, r)),
                               on_crash=on_crash)
    else:
        res = run_campaign(machine, strat, schedules=schedules, seconds=seconds,
                           on_crash=on_crash)
    if store:
        store.finish(res, minimize_runs)
    if as_json:
        click.echo(json.dumps({
            "database": store.url if store else None,
            "protocol": machine.protocol_cls.name, "variant": machine.variant, "cpus": cpus,
            "strategy": strategy, "seed": seed, "schedules": res.schedules,
            "seconds": round(res.seconds, 3), "schedules_per_second": round(res.rate, 1),
            "schedule_format": SCHEDULE_FORMAT, "engine_version": ENGINE_VERSION,
            "exhausted": res.exhausted, "stats": res.stats,
            "crashes": [rec.to_dict() for rec in res.crashes.values()],
        }, indent=2))
        return
    out = stdout_console()
    out.print(f"[bold]{label}[/]: {res.schedules} schedules in {res.seconds:.1f}s "
              f"({res.rate:,.0f}/s, {cpus} CPUs, strategy {strategy}, seed {seed})"
              + "".join(f", {k.replace('_', ' ')} {v}" for k, v in res.stats.items()))
    if not res.crashes:
        if res.exhausted:
            out.print(f"all {res.schedules} schedules within these bounds explored, no violation")
        else:
            out.print("no findings")
        return
    table = Table(title=f"{len(res.crashes)} distinct findings")
    for col in ("oracle", "title", "signature", "first at", "hits"):
        table.add_column(col)
    for rec in res.crashes.values():
        table.add_row(rec.finding.oracle, rec.finding.title, rec.finding.signature,
                      f"#{rec.first_schedule} ({rec.first_seconds:.2f}s)", str(rec.hits))
    out.print(table)
    for rec in res.crashes.values():
        sig = rec.finding.signature
        small = store.minimized.get(sig) if store else None
        if store and sig in store.bucket_of:
            out.print(f"bucket {store.bucket_of[sig]}: patchfuzz crashes show {store.bucket_of[sig]} --focus"
                      + (" (minimized)" if small is not None else ""), highlight=False)
        schedule = small if small is not None else rec.schedule
        out.print(f"  replay: patchfuzz run {label} --cpus {cpus} --focus --schedule '{schedule.hex()}'",
                  soft_wrap=True, highlight=False)


@main.command()
@click.option("--strategies", default=",".join(STRATEGIES), show_default=True)
@click.option("--trials", type=int, default=5, show_default=True)
@click.option("--cap", type=float, default=60.0, show_default=True, help="Seconds per trial.")
@click.option("--cpus", type=int, default=4, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--variants", default=None, help="Comma-separated PROTOCOL:VARIANT list (default: every buggy variant).")
@click.option("--count", type=int, default=3000, show_default=True,
              help="Schedules per throughput pass on the reference scenario.")
@click.option("--throughput-only", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print a list of rows.")
def bench(strategies: str, trials: int, cap: float, cpus: int, seed: int, variants: str | None,
          count: int, throughput_only: bool, as_json: bool) -> None:
    """Measure throughput and time-to-first-finding per strategy (see BENCHMARKS.md)."""
    from . import bench as b

    names = [x for x in strategies.split(",") if x]
    unknown = [x for x in names if x not in STRATEGIES]
    if unknown:
        raise UserError(f"unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}")
    if not MIN_CPUS <= cpus <= MAX_CPUS:
        raise UserError(f"--cpus must be between {MIN_CPUS} and {MAX_CPUS}, got {cpus}")
    specs = variants.split(",") if variants else b.buggy_variants()
    for spec in specs:
        try:
            cls, variant = resolve(spec)
        except UnknownProtocol as e:
            raise UserError(str(e)) from None
        if not cls.expect.get(variant):
            raise UserError(f"{spec} is expected clean: bench measures time to a known bug")
    th = b.throughput(count=count)
    rows: list[dict] = [{"protocol": "x86/text_poke_bp", "variant": "correct", "strategy": "random",
                         "kind": "throughput", "trials": th["repeats"], "found": None,
                         "median_seconds": None, "median_schedules": None, **th}]
    if not as_json:
        click.echo(f"reference {th['scenario']} ({th['cpus']} CPUs): {th['schedules_per_second']} schedules/s "
                   f"(passes {th['all_schedules_per_second']}), {th['steps_per_schedule']} steps/schedule, "
                   f"{th['us_per_step']} us/step, emulator floor {th['emu_start_floor_us']} us")
        click.echo(b.HEADER)
    if not throughput_only:
        rows += b.search_rows(specs, names, trials, cap, cpus, seed, strategy_cpus={"exhaustive": 2},
                              progress=None if as_json else (lambda r: click.echo(b.format_row(r))))
    if as_json:
        click.echo(json.dumps(rows, indent=2))


@main.command("minimize")
@click.argument("spec", metavar="PROTOCOL[:VARIANT]")
@click.option("--schedule", "schedule", required=True, metavar="HEX|@FILE")
@click.option("--cpus", default=4, show_default=True, type=int)
@click.option("--max-runs", default=20000, show_default=True, type=int)
@click.option("--order", default=DEFAULT_ORDER, show_default=True, metavar="steps|bytes",
              help="What smaller means: steps = fewest scheduling steps, then fewest bytes (a short "
                   "trace); bytes = shortlex on the bytes (a short schedule, round robin after it).")
@click.option("--json", "as_json", is_flag=True)
@smz_option
def minimize_cmd(spec: str, schedule: str, cpus: int, max_runs: int, order: str, as_json: bool,
                 stop_machine_serializes: bool | None) -> None:
    """Shrink a finding's schedule while the same signature reproduces."""
    from .minimize import minimize

    if order not in ORDERS:
        raise UserError(f"--order takes {' or '.join(ORDERS)}, got {order!r}")
    if max_runs < 1:
        raise UserError(f"--max-runs must be positive, got {max_runs}")
    data = _read_schedule(schedule)
    machine = _machine(spec, cpus, stop_machine_serializes)
    f = machine.run(data).finding
    if f is None:
        raise UserError("that schedule runs clean on this protocol and configuration: nothing to minimize")
    small, before, after, runs = minimize(machine, data, max_runs=max_runs, order=order)
    if as_json:
        click.echo(json.dumps({"oracle": f.oracle, "title": f.title, "signature": f.signature,
                               "order": order, "schedule": small.hex(), "before": before.to_dict(),
                               "after": after.to_dict(), "runs": runs}, indent=2))
        return
    click.echo(f"[{f.oracle}] {f.title}  ({runs} runs, order {order})")
    for name, b, a in (("bytes", before.bytes, after.bytes), ("steps", before.steps, after.steps),
                       ("decisions", before.decisions, after.decisions), ("NMIs", before.nmis, after.nmis), ("preemptions", before.preemptions, after.preemptions),
                       ("foreign int3s", before.foreign_traps, after.foreign_traps)):
        click.echo(f"  {name:<14} {b:>5} -> {a}")
    click.echo(f"minimized schedule: {small.hex() or '(empty)'}")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path("corpus"))
@click.option("--junit", "junit", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a JUnit XML report here.")
@click.option("--json", "as_json", is_flag=True)
def replay(directory: Path, junit: Path | None, as_json: bool) -> None:
    """Replay the regression corpus; exit 1 on a regression either way or an unreadable case."""
    from .regress import junit_xml, replay_dir

    if not directory.is_dir():
        raise UserError(f"corpus directory not found: {directory}")
    outcomes = replay_dir(directory)
    if not outcomes:
        raise UserError(f"no cases (*.json) under {directory}")
    if junit:
        junit.write_text(junit_xml(outcomes), encoding="utf-8")
    bad = [o for o in outcomes if o.status != "pass"]
    if as_json:
        click.echo(json.dumps({"cases": len(outcomes), "passed": len(outcomes) - len(bad),
                               "regressions": sum(o.status == "regression" for o in bad),
                               "errors": sum(o.status == "error" for o in bad),
                               "outcomes": [o.to_dict() for o in outcomes]}, indent=2))
    else:
        for o in outcomes:
            click.echo(f"{o.status.upper():<10} {o.case}: {o.message}")
        click.echo(f"{len(outcomes) - len(bad)} passed, {len(bad)} failed")
    if bad:
        sys.exit(1)


db_option = click.option("--db", "db_url", default=None, metavar="URL",
                         help="Crash database (default: $PATCHFUZZ_DB, else patchfuzz.db here).")


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
@click.option("--protocol", default=None)
@click.option("--oracle", default=None)
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
    database = _open_db(db_url)
    rows = db.list_buckets(database, protocol=protocol, oracle=oracle, status=status, since=when)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
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
@click.option("--timeline", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the race, one lane per CPU: FILE.svg or FILE.html (with --focus: "
                   "the focused trace).")
@click.option("--focus", is_flag=True, help="Show the focused trace (see `run --focus`).")
@db_option
def crashes_show(bucket_id, as_json, timeline, focus, db_url) -> None:
    """Everything about a bucket, with the trace of its shortest reproducer."""
    if timeline is not None and timeline.suffix not in (".svg", ".html"):
        raise UserError(f"--timeline must name a .svg or .html file, got {timeline}")
    database = _open_db(db_url)
    b = _bucket(database, bucket_id)
    sample = b.get("best_sample") or {}
    trace: list[str] = []
    focused: list[str] = []
    rows: list = []  # the timeline's boxes
    cpus = (sample.get("config") or {}).get("cpus", 4)
    if sample:
        try:
            machine = _machine(f"{b['protocol']}:{b['variant']}", cpus, None)
            result = machine.run(bytes(sample["schedule"]), trace=True)
            trace = result.trace
            if focus:
                focused, rows = _focused_view(machine, bytes(sample["schedule"]), result)
            else:
                from .timeline import rows_of_events

                rows = rows_of_events(result.events, result.renderer)
        except UserError:
            trace = ["(protocol no longer available: trace not replayed)"]
    if timeline is not None:
        from .timeline import render_html, render_svg

        title = f"{b['protocol']}:{b['variant']} [{b['oracle']}] {b['title']}"
        lines = focused if focus and focused else trace
        try:
            if timeline.suffix == ".svg":
                picture = render_svg(rows, title, cpus)
            else:
                picture = render_html(rows, title, cpus, lines)
            timeline.write_text(picture, encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write {timeline}: {e.strerror}") from None
    if as_json:
        out = {**b, "trace": trace}
        if focus:
            out["focus"] = focused
        if sample:
            out["best_sample"] = {**sample, "schedule": bytes(sample["schedule"]).hex()}
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
        click.echo(f"  {sample.get('detail') or ''}")
    for line in (focused or trace) if focus else trace:
        click.echo(line)


@crashes.command("repro")
@click.argument("bucket_id", type=int)
@db_option
def crashes_repro(bucket_id, db_url) -> None:
    """Replay the stored reproducer; exit 0 if it still reproduces the bucket's signature."""
    database = _open_db(db_url)
    b = _bucket(database, bucket_id)
    sample = b.get("best_sample")
    if not sample:
        raise UserError(f"bucket {bucket_id} has no stored reproducer")
    if sample["schedule_format"] != SCHEDULE_FORMAT:
        raise UserError(f"bucket {bucket_id}'s reproducer uses schedule format {sample['schedule_format']}; "
                        f"this engine reads format {SCHEDULE_FORMAT}")
    machine = _machine(f"{b['protocol']}:{b['variant']}", (sample.get("config") or {}).get("cpus", 4), None)
    f = machine.run(bytes(sample["schedule"])).finding
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

    database = _open_db(db_url)
    try:
        db.mark(database, bucket_id, status, note)
    except db.NotFound as e:
        raise UserError(str(e)) from None
    click.echo(f"bucket {bucket_id}: {status}")


@main.command()
@click.argument("arch", default="x86_64")
def rules(arch: str) -> None:
    """Print an architecture model's rules and the source of each."""
    from .arch import ARCHES, get_arch

    if arch not in ARCHES:
        raise UserError(f"unknown architecture {arch!r}; known: {', '.join(ARCHES)}")
    model = get_arch(arch)
    click.echo(f"{arch}: fetch unit {model.fetch_unit} byte(s), atomic text store {model.atomic_store} "
               f"byte(s), store buffer {model.store_buffer}")
    for i, rule in enumerate(model.RULES, 1):
        click.echo(f"{i}. {rule.what}\n   source: {rule.source}")


@main.command()
def oracles() -> None:
    """List the oracle ids and what each detects."""
    for oid, what in ORACLES.items():
        click.echo(f"{oid:<22} {what}")


# The farm's commands live with the farm (workers/), which imports RQ only when one runs.
from workers.cli import farm, worker  # noqa: E402

main.add_command(farm)
main.add_command(worker)

if __name__ == "__main__":
    main()
