"""`patchfuzz fuzz`: a campaign, its live progress, its findings stored as they are found."""

from __future__ import annotations

import json
import sys

import click
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from .. import ENGINE_VERSION, SCHEDULE_FORMAT, draws
from ..campaign import CampaignResult
from ..campaign import fuzz as run_campaign
from ..console import Seconds, UserError, stdout_console
from ..machine import Machine
from ..records import FindingRecords
from ..strategies import DEFAULT_STRATEGY, STRATEGIES, SetupError
from ..strategies.atheris_worker import DEFAULT_MUTATOR, MUTATORS
from .common import (
    EXIT_PROTOCOL_ERROR,
    arch_opt_option,
    build_machine,
    err_console,
    op_timeout_option,
    open_db,
    smz_option,
)
from .group import main
from .interrupts import Interrupts


class _CrashStore:
    """Writes a campaign and its findings to the crash database as they happen."""

    def __init__(self, url: str | None, machine: Machine, strategy: str, seed: int):
        import db

        self._db_mod = db
        self.db = open_db(url)
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

    def finish(self, res: CampaignResult, minimize_runs: int, interrupts: Interrupts) -> None:
        """Counts, minimized reproducers and the campaign's row. Runs inside `interrupts.quiet()`:
        only the minimization may be cut short (a second Ctrl-C after the first)."""
        for rec in res.crashes.values():
            if rec.hits > 1:
                self._store(rec, rec.hits - 1)
        if res.interrupted:  # the user is waiting: a short budget
            minimize_runs = min(minimize_runs, INTERRUPTED_MINIMIZE_RUNS)
        pending = self._pending() if minimize_runs else {}
        if pending:
            if interrupts.count > res.interrupted:  # another signal came while counts were stored
                self._skip_minimization(res)
            else:
                try:
                    with interrupts.stoppable():
                        self._minimize(pending, minimize_runs, interrupts)
                except KeyboardInterrupt:
                    self._skip_minimization(res)
        stats = dict(res.stats)
        if res.error is not None:  # the campaign stopped at the protocol's own error
            stats["protocol_error"] = {**res.error.error.to_dict(), "schedule": res.error.schedule.hex()}
        status = "errored" if res.error is not None else "interrupted" if res.interrupted else "finished"
        self._db_mod.finish_campaign(
            self.db, self.campaign, status=status,
            schedules_run=res.schedules, seconds=res.seconds,
            findings=sum(r.hits for r in res.crashes.values()), unique_findings=len(res.crashes),
            new_buckets=self.new_buckets, stats=stats)

    def _pending(self) -> dict[int, bytes]:
        """The buckets to minimize: the new ones, and those this campaign met again that an
        earlier campaign left unminimized (interrupted twice, or --minimize-runs 0), each with
        this campaign's own schedule for it (as a farm job does for a killed attempt's)."""
        return {**self._db_mod.unminimized_buckets(self.db, self.campaign), **self.new_bucket_ids}

    def _minimize(self, pending: dict[int, bytes], runs: int, interrupts: Interrupts) -> None:
        """Buckets get their smallest reproducer right away."""
        sig_of = {b: sig for sig, b in self.bucket_of.items()}
        for bucket, schedule in sorted(pending.items()):
            if interrupts.count > 1:  # its KeyboardInterrupt was lost in a __del__
                raise KeyboardInterrupt
            small, extra = self.records.minimized(schedule, runs)
            with interrupts.held():  # a write is never cut in half
                self._db_mod.set_minimized(self.db, bucket, small, **extra)
            self.minimized[sig_of[bucket]] = small

    @staticmethod
    def _skip_minimization(res: CampaignResult) -> None:
        res.interrupted = True
        err_console.print("minimization skipped (interrupted again); the next `patchfuzz fuzz` of this "
                          "protocol that meets these buckets minimizes them", highlight=False)


INTERRUPTED_MINIMIZE_RUNS = 300  # runs per new bucket after an interrupt
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by SIGINT


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
    if bounds and strategy != "exhaustive":
        raise UserError(f"--bound is for the exhaustive strategy, not {strategy}")
    kwargs.update(parse_bounds(bounds))
    return kwargs


BOUND_NAMES = (*draws.BUDGETS, "max_steps")


def parse_bounds(items: tuple[str, ...]) -> dict[str, int]:
    """`--bound NAME=N` values: a known bound and a whole number (a typo would otherwise leave the
    bound at its default and the verdict "explored within these bounds" about other bounds)."""
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name = key.strip().replace("-", "_")
        value = value.strip()
        # isdigit() alone admits "²" and other digits int() refuses
        if not sep or not (value.isascii() and value.isdigit()):
            raise UserError(f"--bound takes NAME=NUMBER, got {item!r}")
        if name not in BOUND_NAMES:
            raise UserError(f"--bound: unknown bound {name!r}; known: {', '.join(BOUND_NAMES)}")
        out[name] = int(value)
    return out


@main.command()
@click.argument("spec", metavar="PROTOCOL[:VARIANT]")
@click.option("--seconds", type=Seconds(), default=None, help="Time budget (default 10 s).")
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
@arch_opt_option
@op_timeout_option
def fuzz(spec: str, seconds: float | None, schedules: int | None, seed: int, cpus: int,
         strategy: str, depth: int, corpus: str | None, mutator: str | None,
         bounds: tuple[str, ...], as_json: bool, db_url: str | None, no_db: bool,
         minimize_runs: int, stop_machine_serializes: bool | None, arch_opts: tuple[str, ...],
         op_timeout: float) -> None:
    """Search schedules for violations; keeps going after a finding. Exits 0 when it ends (with
    or without findings), 3 when the protocol's own code went wrong (the campaign stops there;
    what it found before is kept)."""
    if seconds is not None and schedules is not None:
        raise UserError("give --seconds or --schedules, not both")
    if seconds is None and schedules is None:
        seconds = 10.0
    if (seconds is not None and seconds <= 0) or (schedules is not None and schedules <= 0):
        raise UserError("the budget must be positive")
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    machine = build_machine(spec, cpus, stop_machine_serializes, op_timeout, arch_opts)
    try:
        strat = STRATEGIES[strategy](seed=seed, **_strategy_kwargs(strategy, depth, corpus, bounds,
                                                                   mutator))
    except (TypeError, ValueError) as e:
        raise UserError(f"bad option for strategy {strategy}: {e}") from None
    label = f"{machine.protocol_cls.name}:{machine.variant}"
    try:
        strat.prepare(machine)  # before the campaign is recorded: a setup mistake leaves no trace
    except SetupError as e:
        raise UserError(str(e)) from None
    live_ok = not as_json and err_console.is_terminal
    store = None if no_db else _CrashStore(db_url, machine, strategy, seed)

    interrupts = Interrupts()

    def on_crash(rec) -> None:
        if store:
            with interrupts.held():  # stored the moment it is found: a killed campaign loses nothing
                store.found(rec)
        if not as_json:
            err_console.print(f"[red]new finding[/] after {rec.first_schedule} schedules: "
                              + escape(f"[{rec.finding.oracle}] {rec.finding.title}"))

    with interrupts.installed(), interrupts.quiet():  # from here on a signal never cuts a write or the report in half
        with interrupts.stoppable():
            if live_ok:
                with Live(_progress_table(label, CampaignResult()), console=err_console,
                          refresh_per_second=4, transient=True) as live:
                    res = run_campaign(machine, strat, schedules=schedules, seconds=seconds,
                                       on_progress=lambda r: live.update(_progress_table(label, r)),
                                       on_crash=on_crash, stop_requested=interrupts.requested)
            else:
                res = run_campaign(machine, strat, schedules=schedules, seconds=seconds,
                                   on_crash=on_crash, stop_requested=interrupts.requested)
        if store:
            store.finish(res, minimize_runs, interrupts)
        _report(res, store, label, cpus, strategy, seed, as_json, machine)


def _report(res: CampaignResult, store: _CrashStore | None, label: str, cpus: int, strategy: str,
            seed: int, as_json: bool, machine: Machine) -> None:
    if as_json:
        click.echo(json.dumps({
            "database": store.url if store else None,
            "protocol": machine.protocol_cls.name, "variant": machine.variant, "cpus": cpus,
            "strategy": strategy, "seed": seed, "schedules": res.schedules,
            "seconds": round(res.seconds, 3), "schedules_per_second": round(res.rate, 1),
            "schedule_format": SCHEDULE_FORMAT, "engine_version": ENGINE_VERSION,
            "exhausted": res.exhausted, "stats": res.stats,
            "crashes": [rec.to_dict() for rec in res.crashes.values()],
            "error": ({**res.error.error.to_dict(), "schedule": res.error.schedule.hex(),
                       "replay": res.error.replay(cpus)} if res.error else None),
            "interrupted": res.interrupted,
        }, indent=2))
        _exit_for(res)
        return
    out = stdout_console()
    if res.interrupted:
        out.print("interrupted: what was found so far is stored", highlight=False)
    out.print(f"[bold]{label}[/]: {res.schedules} schedules in {res.seconds:.1f}s "
              f"({res.rate:,.0f}/s, {cpus} CPUs, strategy {strategy}, seed {seed})"
              + "".join(f", {k.replace('_', ' ')} {v}" for k, v in res.stats.items()))
    if not res.crashes:
        if res.error:
            pass
        elif res.exhausted:
            out.print(f"all {res.schedules} schedules within these bounds explored, no violation")
        else:
            out.print("no findings")
        _report_error(res, cpus)
        _exit_for(res)
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
    _report_error(res, cpus)
    _exit_for(res)


def _report_error(res: CampaignResult, cpus: int) -> None:
    """The protocol's own code went wrong: one line saying where and what, the schedule that
    replays it, and exit 3 (neither clean nor a finding)."""
    if res.error is None:
        return
    e = res.error
    line = e.error.line().removeprefix("protocol error ")  # "in P:V at FILE:LINE: what", said once
    runs = f"{e.at_schedule} schedule{'s' if e.at_schedule != 1 else ''}"
    err_console.print(f"patchfuzz: protocol error {escape(line)} (after {runs})", soft_wrap=True, highlight=False)
    err_console.print(f"  replay: {e.replay(cpus)}", soft_wrap=True, highlight=False)
    _exit_for(res)


def _exit_for(res: CampaignResult) -> None:
    if res.error is not None:
        sys.exit(EXIT_PROTOCOL_ERROR)
    if res.interrupted:
        sys.exit(EXIT_INTERRUPTED)
