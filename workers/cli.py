"""`patchfuzz farm ...` and `patchfuzz worker`: the farm's command line, added to `patchfuzz` through
the `patchfuzz.commands` entry points (pyproject.toml)."""

from __future__ import annotations

import json
import logging
import sys

import click
from rich.table import Table

from fuzzer.console import Seconds, UserError, stdout_console

from .settings import FarmSettings


def _settings() -> FarmSettings:
    try:
        return FarmSettings()
    except ValueError as e:
        raise UserError(str(e)) from None


def _call(fn, *args, **kwargs):
    from .coordinator import FarmError

    try:
        return fn(*args, **kwargs)
    except FarmError as e:
        raise UserError(str(e)) from None


@click.group()
def farm() -> None:
    """The fuzz farm: campaigns split into jobs on Redis/RQ workers, crashes in the database.

    Services come from the environment: PATCHFUZZ_REDIS (default redis://127.0.0.1:6379/0),
    PATCHFUZZ_DB (the farm's PostgreSQL, e.g. postgresql+psycopg://USER@HOST/DB)."""


@farm.command("submit")
@click.argument("spec", metavar="PROTOCOL[:VARIANT]")
@click.option("--strategy", default="atheris", show_default=True)
@click.option("--jobs", type=int, default=4, show_default=True, help="Time-boxed jobs to enqueue.")
@click.option("--job-seconds", type=Seconds(), default=60.0, show_default=True, help="Budget of each job.")
@click.option("--cpus", type=int, default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Job i fuzzes with seed SEED+i.")
@click.option("--depth", type=int, default=3, show_default=True, help="PCT bug depth d.")
@click.option("--minimize-runs", type=int, default=2000, show_default=True,
              help="Runs spent minimizing each new bucket at the end of the job that found it.")
@click.option("--json", "as_json", is_flag=True)
def farm_submit(spec, strategy, jobs, job_seconds, cpus, seed, depth, minimize_runs, as_json) -> None:
    """Create a campaign and enqueue its jobs."""
    from .coordinator import submit

    settings = _settings()
    if settings.db_url is None:
        click.echo("patchfuzz: warning: PATCHFUZZ_DB is not set, so this campaign and every job's "
                   "crashes go to the default SQLite file patchfuzz.db in each process's working "
                   "directory, not a database the farm shares; set PATCHFUZZ_DB to the farm's "
                   "PostgreSQL (postgresql+psycopg://USER@HOST/DB)", err=True)
    sub = _call(submit, spec, strategy=strategy, jobs=jobs, job_seconds=job_seconds, cpus=cpus,
                seed=seed, depth=depth, minimize_runs=minimize_runs, settings=settings)
    if as_json:
        click.echo(json.dumps({"campaign": sub.campaign, "jobs": sub.jobs, "queue": sub.queue}))
    else:
        click.echo(f"campaign {sub.campaign}: {len(sub.jobs)} jobs of {job_seconds:g} s queued on "
                   f"{sub.queue!r}; watch it with `patchfuzz farm status`")


@farm.command("status")
@click.argument("campaign", type=int, required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=int, default=10, show_default=True, help="Campaigns to show.")
def farm_status(campaign: int | None, as_json: bool, limit: int) -> None:
    """Queues, workers, campaigns and their progress, and the latest corpus replays; with a
    CAMPAIGN id, that campaign and each of its jobs."""
    from .coordinator import status

    st = _call(status, _settings(), limit=limit, campaign=campaign)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    out = stdout_console()
    q = next(iter(st["queues"].items()))
    out.print(f"Redis {st['redis']}, database {st['database']}")
    out.print(f"queue [bold]{q[0]}[/]: " + ", ".join(f"{v} {k}" for k, v in q[1].items()))
    out.print(f"{len(st['workers'])} workers: " + (", ".join(
        f"{w['name']} ({w['state']}{', ' + w['job'] if w['job'] else ''})" for w in st["workers"]) or "none"))
    table = Table(title="campaigns")
    for col in ("id", "protocol:variant", "strategy", "status", "jobs", "schedules", "coverage",
                "findings", "new buckets"):
        table.add_column(col)
    for c in st["campaigns"]:
        jobs = ", ".join(f"{n} {k}" for k, n in sorted(c["jobs"].items()))
        table.add_row(str(c["id"]), f"{c['protocol']}:{c['variant']}", c["strategy"], c["status"], jobs,
                      f"{c['schedules_run']:,}", str(c["coverage"] or "-"), str(c["findings"]),
                      str(c["new_buckets"]))
    out.print(table)
    if campaign is not None:
        jobs = Table(title=f"jobs of campaign {campaign}")
        for col in ("job", "state", "attempts", "worker", "schedules", "coverage", "corpus", "findings",
                    "new buckets", "error"):
            jobs.add_column(col)
        for j in st["campaigns"][0]["job_list"]:
            jobs.add_row(str(j["id"]), j["state"], str(j["attempts"]), j["worker"] or "-", f"{j['schedules_run']:,}",
                         str(j["coverage"] or "-"), str(j["corpus"]), str(j["findings"]), str(j["new_buckets"]),
                         (j["error"] or "")[:80])
        out.print(jobs)
    for r in st["regression_runs"][:1]:
        verdict = "[red]REGRESSION[/]" if r["regressions"] or r["errors"] else "[green]ok[/]"
        out.print(f"latest corpus replay ({r['source']}, {r['started']}): {verdict}: {r['passed']}/"
                  f"{r['total']} passed, {r['regressions']} regressions, {r['errors']} errors"
                  + (f"; failing: {', '.join(filter(None, r['failed']))}" if r["failed"] else ""))


@farm.command("cancel")
@click.argument("campaign", type=int)
def farm_cancel(campaign: int) -> None:
    """Cancel a campaign: queued jobs are dropped, running ones stop at their next checkpoint."""
    from .coordinator import cancel

    ids = _call(cancel, campaign, _settings())
    click.echo(f"campaign {campaign} cancelled ({len(ids)} unfinished jobs stopped)")


@farm.command("nightly")
@click.option("--now", "now", is_flag=True, required=True,
              help="Run the nightly corpus replay now, on a worker, and wait for it.")
@click.option("--wait", type=Seconds(zero_ok=True), default=900.0, show_default=True, help="Seconds to wait for a worker.")
@click.option("--json", "as_json", is_flag=True)
def farm_nightly(now: bool, wait: float, as_json: bool) -> None:  # noqa: ARG001 - --now is the verb
    """Replay the regression corpus on the farm now (the cron job does it every night);
    exit 1 if anything regressed."""
    from .coordinator import nightly_now

    res = _call(nightly_now, _settings(), wait=wait)
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(f"corpus replay {res['regression_run']} of {res['corpus']} (on the worker): "
                   f"{res['passed']}/{res['total']} passed, "
                   f"{res['regressions']} regressions, {res['errors']} errors")
    if res["regressions"] or res["errors"]:
        sys.exit(1)


@click.command("worker")
@click.option("--queues", default=None, help="Comma-separated queues (default $PATCHFUZZ_QUEUE or patchfuzz).")
@click.option("--burst", is_flag=True, help="Quit once the queues are empty.")
@click.option("--name", default=None, help="Worker name (default: random).")
def worker(queues: str | None, burst: bool, name: str | None) -> None:
    """Run a farm worker (RQ, JSON payloads only) until stopped."""
    from .coordinator import connect, open_database
    from .worker import run_worker

    settings = _settings()
    # one clear line if a service is not there at start (later outages are waited out); this
    # also brings the database's schema up to date before any job runs
    _call(connect, settings).close()
    _call(open_database, settings).close()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    names = [q.strip() for q in (queues or settings.queue).split(",") if q.strip()]
    run_worker(settings.redis_url, names, burst=burst, name=name)
