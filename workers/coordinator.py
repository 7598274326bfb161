"""The coordinator: submit a campaign as N time-boxed jobs, report the farm's state, cancel.

The database holds what a campaign is and what its jobs did; Redis holds only the queue. Each
RQ job is `workers.jobs.run_job(<job id>)`, JSON-serialized, with RQ id `patchfuzz-job-<id>`,
so a job can be found from either side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue, Retry, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import JobStatus

import db
from fuzzer.machine import MAX_CPUS, MIN_CPUS, Config
from fuzzer.protocols import UnknownProtocol, resolve
from fuzzer.strategies import STRATEGIES

from .security import SERIALIZER, FarmJob
from .settings import FarmSettings, masked_redis
from .worker import queue as farm_queue

RETRIES = 2  # a job whose worker dies is run again up to this many times
JOB_OVERHEAD = 600  # seconds on top of a job's budget before RQ kills it (start-up, minimizing)
RESULT_TTL = 7 * 86400
FAILURE_TTL = 30 * 86400


class FarmError(Exception):
    """A user-facing problem (bad spec, unreachable service): one line, no traceback."""


def rq_id(farm: str, job_id: int) -> str:
    """RQ's id of a farm job: named by its database's farm token too, so farms that share a
    Redis never collide on ids."""
    return f"patchfuzz-{farm[:12]}-job-{job_id}"


def connect(settings: FarmSettings) -> redis.Redis:
    conn = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    try:
        conn.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        raise FarmError(f"cannot reach Redis at {masked_redis(settings.redis_url)} ({e}); start it or set "
                        f"PATCHFUZZ_REDIS=redis://HOST:PORT/DB") from None
    except redis.exceptions.ResponseError as e:
        raise FarmError(f"Redis at {masked_redis(settings.redis_url)} refused us ({e}); check "
                        f"PATCHFUZZ_REDIS (password, database)") from None
    return conn


def open_database(settings: FarmSettings) -> db.Database:
    try:
        return db.open_db(settings.db_url)
    except db.DatabaseError as e:
        # the farm's commands take the database from the environment only
        raise FarmError(str(e).replace("set --db or PATCHFUZZ_DB", "set PATCHFUZZ_DB")) from None


@dataclass
class Submission:
    campaign: int
    jobs: list[int]
    queue: str


def submit(spec: str, *, strategy: str = "atheris", jobs: int = 4, job_seconds: float = 60.0,
           cpus: int = 4, seed: int = 0, depth: int = 3, minimize_runs: int = 2000,
           settings: FarmSettings | None = None) -> Submission:
    """Create a campaign with `jobs` jobs of `job_seconds` each and enqueue them."""
    settings = settings or FarmSettings()
    try:
        cls, variant = resolve(spec)
    except UnknownProtocol as e:
        raise FarmError(str(e)) from None
    if strategy not in STRATEGIES:
        raise FarmError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if strategy == "exhaustive" and jobs != 1:
        raise FarmError("exhaustive search is one systematic enumeration: submit it with --jobs 1")
    if jobs < 1 or job_seconds <= 0:
        raise FarmError("--jobs and --job-seconds must be positive")
    if not MIN_CPUS <= cpus <= MAX_CPUS:
        raise FarmError(f"--cpus must be between {MIN_CPUS} and {MAX_CPUS}, got {cpus}")
    if minimize_runs < 0:
        raise FarmError("--minimize-runs must not be negative")
    # both services first: a failure leaves no half-made campaign behind
    conn = connect(settings)
    database = open_database(settings)
    options = {"depth": depth} if strategy == "pct" else {}
    config = {"machine": Config(cpus=cpus).to_dict(), "strategy_options": options, "jobs": jobs,
              "job_seconds": job_seconds, "seed": seed, "minimize_runs": minimize_runs}
    try:
        farm = db.farm_token(database)
        cid = db.create_campaign(database, protocol=cls.name, variant=variant, strategy=strategy,
                                 config=config)
        ids = [db.create_job(database, cid, seed=seed + i, budget=job_seconds) for i in range(jobs)]
        q = farm_queue(settings.queue, conn)
        specs = [_job_spec(farm, f"{cls.name}:{variant}", cid, jid, job_seconds) for jid in ids]
        try:
            with conn.pipeline() as pipe:
                q.enqueue_many(specs, pipeline=pipe)
                pipe.execute()
        except redis.exceptions.RedisError as e:
            db.cancel_campaign(database, cid)
            raise FarmError(f"could not enqueue campaign {cid} ({e}); it was marked cancelled") from None
    except db.DatabaseError as e:
        raise FarmError(str(e)) from None
    finally:
        database.close()
        conn.close()
    return Submission(cid, ids, settings.queue)


def _job_spec(farm: str, label: str, campaign_id: int, job_id: int, budget: float):
    # the farm token rides along: a worker on another database refuses the job untouched
    return Queue.prepare_data("workers.jobs.run_job", args=(job_id, farm), job_id=rq_id(farm, job_id),
                              timeout=int(budget) + JOB_OVERHEAD, retry=Retry(max=RETRIES),
                              result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
                              description=f"{label} campaign {campaign_id} job {job_id}")


def _rq_state(conn: redis.Redis, farm: str, job_id: int) -> tuple[str | None, str | None]:
    """(RQ status, last line of its failure) of a farm job, (None, None) if RQ forgot it."""
    try:
        job = FarmJob.fetch(rq_id(farm, job_id), connection=conn, serializer=SERIALIZER)
    except NoSuchJobError:
        return None, None
    status = job.get_status(refresh=False)
    reason = None
    if status == JobStatus.FAILED:
        result = job.latest_result()
        text = (result.exc_string if result is not None else None) or ""
        reason = text.strip().splitlines()[-1] if text.strip() else "failed in RQ"
    return (status.value if status is not None else None), reason


def reconcile(database: db.Database, conn: redis.Redis, campaign: dict[str, Any],
              jobs: list[dict[str, Any]], queue_name: str) -> bool:
    """Bring the database in line with RQ for the campaign's `jobs` it thinks are queued or
    running; returns whether any job row changed:
    * RQ gave up on the job (retries spent, stopped): the job failed, say why;
    * RQ forgot the job (Redis restarted without persistence): enqueue it again, as long as it
      has attempts left; its stored findings stay and the ledger keeps counts exact."""
    changed = False
    label = f"{campaign['protocol']}:{campaign['variant']}"
    farm = db.farm_token(database)
    for job in jobs:
        if job["state"] not in ("queued", "running"):
            continue
        status, reason = _rq_state(conn, farm, job["id"])
        if status is None and campaign["status"] == "running" and job["attempts"] <= RETRIES:
            farm_queue(queue_name, conn).enqueue_many(
                [_job_spec(farm, label, campaign["id"], job["id"], job["budget"])])
        elif status is None or status in ("failed", "stopped", "canceled"):
            db.finish_job(database, job["id"], state="failed",
                          error=reason or f"RQ reports the job {status or 'gone'}")
            changed = True
    if changed:
        db.settle_campaign(database, campaign["id"])
    return changed


def status(settings: FarmSettings | None = None, *, limit: int = 10,
           campaign: int | None = None) -> dict[str, Any]:
    """The farm's state; with `campaign`, that campaign only (NotFound -> FarmError)."""
    settings = settings or FarmSettings()
    conn = connect(settings)
    database = open_database(settings)
    try:
        q = farm_queue(settings.queue, conn)
        queues = {settings.queue: {
            "queued": q.count, "running": q.started_job_registry.count,
            "finished": q.finished_job_registry.count, "failed": q.failed_job_registry.count,
            "scheduled": q.scheduled_job_registry.count}}
        workers = []
        for w in Worker.all(connection=conn, serializer=SERIALIZER):
            current = w.get_current_job_id()
            workers.append({"name": w.name, "state": w.get_state(), "job": current,
                            "queues": w.queue_names(), "last_heartbeat":
                                w.last_heartbeat.isoformat() if w.last_heartbeat else None})
        campaigns = []
        if campaign is None:
            listed = db.list_campaigns(database, limit=limit)
        else:
            try:
                listed = [db.get_campaign(database, campaign)]
            except db.NotFound:
                raise FarmError(f"no campaign with id {campaign}; see `patchfuzz farm status`") from None
        for c in listed:
            jobs = db.campaign_jobs(database, c["id"])
            if (c["status"] in ("running", "cancelled") and any(j["state"] in ("queued", "running") for j in jobs)
                    and reconcile(database, conn, c, jobs, settings.queue)):
                c, jobs = db.get_campaign(database, c["id"]), db.campaign_jobs(database, c["id"])
            counts = _job_counts(jobs)
            totals = db.campaign_totals(database, c["id"])
            campaigns.append({
                "id": c["id"], "protocol": c["protocol"], "variant": c["variant"],
                "strategy": c["strategy"], "status": c["status"], "jobs": counts, "jobs_total": len(jobs),
                "created": c["created"].isoformat(), "finished": c["finished"].isoformat() if c["finished"] else None,
                "schedules_run": totals["schedules_run"], "coverage": totals["coverage"],
                "findings": totals["findings"], "new_buckets": totals["new_buckets"],
                "job_list": [{
                    "id": j["id"], "state": j["state"], "attempts": j["attempts"], "worker": j["worker"],
                    "schedules_run": j["schedules_run"], "coverage": j["coverage"], "corpus": j["corpus"],
                    "findings": j["findings"], "new_buckets": j["new_buckets"], "error": j["error"],
                    "heartbeat": j["heartbeat"].isoformat() if j["heartbeat"] else None,
                } for j in jobs]})
        runs = db.list_regression_runs(database, limit=3)
        regression = [{"id": r["id"], "source": r["source"], "started": r["started"].isoformat(),
                       "total": r["total"], "passed": r["passed"], "regressions": r["regressions"],
                       "errors": r["errors"],
                       "failed": [f.get("case") for f in (r["details"] or {}).get("failed", [])]
                       if isinstance(r["details"], dict) else []}
                      for r in runs]
        return {"redis": masked_redis(settings.redis_url), "database": database.url, "queues": queues,
                "workers": workers, "campaigns": campaigns, "regression_runs": regression}
    except db.DatabaseError as e:
        raise FarmError(str(e)) from None
    finally:
        database.close()
        conn.close()


def _job_counts(jobs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["state"]] = counts.get(j["state"], 0) + 1
    return counts


def cancel(campaign_id: int, settings: FarmSettings | None = None) -> list[int]:
    """Cancel a campaign: queued jobs leave the queue, running ones are told to stop."""
    settings = settings or FarmSettings()
    conn = connect(settings)
    database = open_database(settings)
    try:
        try:
            before = db.get_campaign(database, campaign_id)["status"]
            ids = db.cancel_campaign(database, campaign_id)
        except db.NotFound as e:
            raise FarmError(f"{e}; see `patchfuzz farm status`") from None
        if before != "running":
            raise FarmError(f"campaign {campaign_id} is already {before}: nothing to cancel")
        farm = db.farm_token(database)
        for jid in ids:
            try:
                job = FarmJob.fetch(rq_id(farm, jid), connection=conn, serializer=SERIALIZER)
            except NoSuchJobError:
                continue
            state = job.get_status()
            if state == JobStatus.STARTED:
                try:
                    send_stop_job_command(conn, job.id, serializer=SERIALIZER)
                except InvalidJobOperation:
                    pass  # finished meanwhile
            elif state in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
                job.cancel()
        return ids
    except db.DatabaseError as e:
        raise FarmError(str(e)) from None
    finally:
        database.close()
        conn.close()


def nightly_now(settings: FarmSettings | None = None, *, wait: float = 900.0) -> dict[str, Any]:
    """Enqueue the nightly corpus replay now and wait for a worker to run it."""
    settings = settings or FarmSettings()
    conn = connect(settings)
    try:
        job = farm_queue(settings.queue, conn).enqueue(
            "workers.jobs.nightly_replay", kwargs={"source": "on-demand"}, job_timeout=3600,
            result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL, description="nightly corpus replay (on demand)")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            state = job.get_status()
            if state == JobStatus.FINISHED:
                return job.return_value()
            if state in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                result = job.latest_result()
                text = (result.exc_string or "").strip() if result is not None else ""
                raise FarmError(f"the replay job {job.id} {state.value}: "
                                f"{text.splitlines()[-1] if text else 'no reason recorded'}")
            time.sleep(0.5)
        raise FarmError(f"no worker ran the replay job {job.id} within {wait:.0f} s; is a worker "
                        f"running on queue {settings.queue!r}? (`patchfuzz worker`)")
    finally:
        conn.close()
