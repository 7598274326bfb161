"""Farm scaling benchmark: the same campaign on 1 and on 2 worker processes, measured in one run.

    python -m workers.bench [--protocol P:V] [--jobs 4] [--job-seconds 20] [--workers 1,2] [--json]

For each worker count it empties a Redis database, creates a fresh PostgreSQL database, starts
that many `patchfuzz worker` processes, submits one campaign of JOBS jobs x JOB_SECONDS and
waits for it to finish. It reports the aggregate schedules per second (all jobs' schedules over
the campaign's wall time, start-up and minimization included), the speed-up against one worker,
and what the farm cost the services: Redis commands (INFO commandstats) and PostgreSQL
transactions and row writes (pg_stat_database), per worker per minute.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

import db

ROOT = Path(__file__).resolve().parents[1]
ADMIN = os.environ.get("PATCHFUZZ_BENCH_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("PATCHFUZZ_BENCH_REDIS", "redis://127.0.0.1:6379/12")
POLL = 2.0  # seconds between this harness's own looks at the campaign (subtracted from PG counts)


def _redis_commands(conn: redis.Redis) -> int:
    return int(conn.info("stats")["total_commands_processed"])


def _pg_counters(admin, name: str) -> dict[str, int]:
    with admin.connect() as c:
        row = c.execute(text("SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, tup_fetched "
                             "FROM pg_stat_database WHERE datname = :n"), {"n": name}).one()
    return {"transactions": row[0], "inserted": row[1], "updated": row[2], "deleted": row[3],
            "fetched": row[4]}


def run_once(n_workers: int, protocol: str, jobs: int, job_seconds: float, cpus: int) -> dict:
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    name = f"patchfuzz_bench_{os.getpid()}_{n_workers}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    conn = redis.Redis.from_url(REDIS)
    conn.flushdb()
    # a queue of its own: a worker left over from an interrupted run must not take these jobs
    env = dict(os.environ, PATCHFUZZ_REDIS=REDIS, PATCHFUZZ_DB=url, PATCHFUZZ_QUEUE=f"bench-{name}")
    db.open_db(url).close()  # migrate before counting
    procs = [subprocess.Popen([sys.executable, "-m", "fuzzer.cli", "worker", "--name", f"bench-{i}"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True) for i in range(n_workers)]
    try:
        time.sleep(2)  # workers registered and idle
        r0, p0 = _redis_commands(conn), _pg_counters(admin, name)
        start = time.monotonic()
        sub = subprocess.run([sys.executable, "-m", "fuzzer.cli", "farm", "submit", protocol, "--jobs", str(jobs),
                              "--job-seconds", str(job_seconds), "--cpus", str(cpus), "--json"],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        cid = json.loads(sub.stdout)["campaign"]
        database = db.open_db(url)
        try:
            polls = 0
            while db.get_campaign(database, cid)["status"] == "running":
                polls += 1
                time.sleep(POLL)
            wall = time.monotonic() - start
            r1, p1 = _redis_commands(conn), _pg_counters(admin, name)
            totals = db.campaign_totals(database, cid)
        finally:
            database.close()
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        conn.flushdb()
    minutes = wall / 60
    per_worker_min = n_workers * minutes
    pg = {k: p1[k] - p0[k] for k in p0}
    pg["transactions"] -= polls + 1  # the harness's own reads: one transaction each
    return {"workers": n_workers, "protocol": protocol, "jobs": jobs, "job_seconds": job_seconds,
            "wall_seconds": round(wall, 1), "schedules": totals["schedules_run"],
            "schedules_per_second": round(totals["schedules_run"] / wall, 1),
            "findings": totals["findings"],
            "redis_commands_per_worker_minute": round((r1 - r0) / per_worker_min, 1),
            "pg_transactions_per_worker_minute": round(pg["transactions"] / per_worker_min, 1),
            "pg_row_writes_per_worker_minute": round((pg["inserted"] + pg["updated"] + pg["deleted"])
                                                     / per_worker_min, 1)}


def standalone(n: int, protocol: str, seconds: float, cpus: int, tmp: Path) -> float:
    """Aggregate schedules/s of `n` independent `patchfuzz fuzz` processes (atheris, no database,
    own corpus each) running at once: what this machine allows without any farm."""
    procs = [subprocess.Popen([sys.executable, "-m", "fuzzer.cli", "fuzz", protocol, "--seconds", str(seconds),
                               "--cpus", str(cpus), "--seed", str(i), "--no-db", "--json",
                               "--corpus", str(tmp / f"corpus-{n}-{i}")],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for i in range(n)]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    return sum(o["schedules"] for o in outs) / max(o["seconds"] for o in outs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m workers.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", default="x86/text_poke_bp:correct")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--job-seconds", type=float, default=20.0)
    ap.add_argument("--cpus", type=int, default=4)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    # so that `timeout` or Ctrl+C still stops the worker processes (the finally blocks run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = [int(n) for n in args.workers.split(",")]
    rows = [run_once(n, args.protocol, args.jobs, args.job_seconds, args.cpus) for n in counts]
    with tempfile.TemporaryDirectory(prefix="patchfuzz-bench-") as tmp:
        alone = {n: standalone(n, args.protocol, args.job_seconds, args.cpus, Path(tmp)) for n in counts}
    base = rows[0]["schedules_per_second"]
    for r in rows:
        r["speedup"] = round(r["schedules_per_second"] / base, 2) if base else None
        # the same number of plain `patchfuzz fuzz` processes side by side: the machine's ceiling
        r["standalone_schedules_per_second"] = round(alone[r["workers"]], 1)
        r["standalone_speedup"] = round(alone[r["workers"]] / alone[counts[0]], 2)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['workers']} worker(s): {r['schedules']} schedules in {r['wall_seconds']} s = "
              f"{r['schedules_per_second']}/s (x{r['speedup']}; {r['workers']} standalone processes: "
              f"{r['standalone_schedules_per_second']}/s, x{r['standalone_speedup']}); per worker-minute: "
              f"{r['redis_commands_per_worker_minute']} Redis commands, "
              f"{r['pg_transactions_per_worker_minute']} PG transactions, "
              f"{r['pg_row_writes_per_worker_minute']} PG row writes")


if __name__ == "__main__":
    main()
