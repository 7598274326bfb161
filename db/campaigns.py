"""Campaign and job bookkeeping: plain records, no queue knowledge (the farm drives them)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, func, insert, select, update

from .coltypes import utcnow
from .crashes import _greatest, _upsert_insert
from .engine import Database
from .errors import NotFound
from .models import Campaign, CrashSample, FarmIdentity, Job

campaigns: Table = Campaign.__table__  # type: ignore[assignment]
jobs: Table = Job.__table__  # type: ignore[assignment]
samples: Table = CrashSample.__table__  # type: ignore[assignment]
identity: Table = FarmIdentity.__table__  # type: ignore[assignment]


def farm_token(db: Database) -> str:
    """This database's farm identity, created on first use (concurrent first uses agree)."""
    with db.session() as s:
        token = s.execute(select(identity.c.token).where(identity.c.id == 1)).scalar_one_or_none()
        if token is not None:
            return token
        s.execute(_upsert_insert(db, identity).values(id=1, token=uuid.uuid4().hex, created=utcnow())
                  .on_conflict_do_nothing(index_elements=["id"]))
        return s.execute(select(identity.c.token).where(identity.c.id == 1)).scalar_one()


def create_campaign(db: Database, *, protocol: str, variant: str, strategy: str,
                    config: Mapping[str, Any] | None = None) -> int:
    """A campaign in state "running"; returns its id (for store_finding's campaign_id)."""
    row = {"protocol": protocol, "variant": variant, "strategy": strategy, "config": dict(config or {}),
           "status": "running", "created": utcnow(), "schedules_run": 0, "seconds": 0.0,
           "findings": 0, "unique_findings": 0, "new_buckets": 0, "stats": {}}
    with db.session() as s:
        return s.execute(insert(campaigns).values(row).returning(campaigns.c.id)).scalar_one()


def finish_campaign(db: Database, campaign_id: int, *, status: str = "finished", schedules_run: int,
                    seconds: float, coverage: int | None = None, findings: int = 0,
                    unique_findings: int = 0, new_buckets: int = 0,
                    stats: Mapping[str, Any] | None = None) -> None:
    values = {"status": status, "finished": utcnow(), "schedules_run": schedules_run, "seconds": seconds,
              "coverage": coverage, "findings": findings, "unique_findings": unique_findings,
              "new_buckets": new_buckets, "stats": dict(stats or {})}
    _update_one(db, campaigns, campaign_id, values, "campaign")


def get_campaign(db: Database, campaign_id: int) -> dict[str, Any]:
    return _get_one(db, campaigns, campaign_id, "campaign")


def create_job(db: Database, campaign_id: int, *, seed: int, budget: float) -> int:
    """A queued job of a campaign; `budget` is in seconds. Returns its id."""
    row = {"campaign_id": campaign_id, "state": "queued", "seed": seed, "budget": budget,
           "created": utcnow(), "schedules_run": 0}
    with db.session() as s:
        if s.execute(select(campaigns.c.id).where(campaigns.c.id == campaign_id)).first() is None:
            raise NotFound(f"no campaign with id {campaign_id}")
        return s.execute(insert(jobs).values(row).returning(jobs.c.id)).scalar_one()


def start_job(db: Database, job_id: int, worker: str) -> int:
    """Mark a job running on `worker`; returns which attempt this is (1 on first delivery)."""
    now = utcnow()
    with db.session() as s:
        n = s.execute(update(jobs).where(jobs.c.id == job_id)
                      .values(state="running", started=now, heartbeat=now, worker=worker,
                              attempts=jobs.c.attempts + 1, error=None)
                      .returning(jobs.c.attempts)).scalar_one_or_none()
    if n is None:
        raise NotFound(f"no job with id {job_id}")
    return n


def job_progress(db: Database, job_id: int, *, schedules_run: int, coverage: int | None = None,
                 corpus: int | None = None) -> None:
    """A running job's figures so far. Absolute values, kept at their maximum, so a retried or
    redelivered job does not add its runs twice."""
    values: dict[str, Any] = {"heartbeat": utcnow(),
                              "schedules_run": _greatest(db, jobs.c.schedules_run, schedules_run)}
    if coverage is not None:
        values["coverage"] = _greatest(db, func.coalesce(jobs.c.coverage, 0), coverage)
    if corpus is not None:
        values["corpus"] = corpus
    _update_job(db, job_id, values)


def finish_job(db: Database, job_id: int, *, state: str = "finished", schedules_run: int = 0,
               error: str | None = None) -> None:
    _update_job(db, job_id, {"state": state, "finished": utcnow(),
                             "schedules_run": _greatest(db, jobs.c.schedules_run, schedules_run),
                             "error": error})


def campaign_jobs(db: Database, campaign_id: int) -> list[dict[str, Any]]:
    with db.session() as s:
        q = select(jobs).where(jobs.c.campaign_id == campaign_id).order_by(jobs.c.id)
        return [dict(r) for r in s.execute(q).mappings()]


def list_campaigns(db: Database, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest campaigns, newest first."""
    with db.session() as s:
        q = select(campaigns).order_by(campaigns.c.id.desc()).limit(limit)
        return [dict(r) for r in s.execute(q).mappings()]


def campaign_totals(db: Database, campaign_id: int) -> dict[str, Any]:
    """What a campaign's jobs have done so far: schedules, coverage, hits, new buckets."""
    with db.session() as s:
        row = s.execute(select(
            func.coalesce(func.sum(jobs.c.schedules_run), 0), func.max(jobs.c.coverage),
            func.coalesce(func.sum(jobs.c.findings), 0), func.coalesce(func.sum(jobs.c.new_buckets), 0),
            func.coalesce(func.sum(jobs.c.budget), 0.0),
        ).where(jobs.c.campaign_id == campaign_id)).one()
    return {"schedules_run": int(row[0]), "coverage": row[1], "findings": int(row[2]),
            "new_buckets": int(row[3]), "seconds": float(row[4])}


def settle_campaign(db: Database, campaign_id: int) -> str:
    """Close a campaign once none of its jobs is queued or running; returns its status.
    Safe to call from every job's end at once: the totals are recomputed, not added."""
    with db.session() as s:
        open_jobs = s.execute(select(func.count()).where(
            jobs.c.campaign_id == campaign_id, jobs.c.state.in_(("queued", "running")))).scalar_one()
        status = s.execute(select(campaigns.c.status).where(campaigns.c.id == campaign_id)).scalar_one_or_none()
    if status is None:
        raise NotFound(f"no campaign with id {campaign_id}")
    if open_jobs or status not in ("running", "cancelled"):
        return status
    t = campaign_totals(db, campaign_id)
    with db.session() as s:
        unique = s.execute(select(func.count(func.distinct(samples.c.bucket_id)))
                           .where(samples.c.campaign_id == campaign_id)).scalar_one()
        failed = s.execute(select(func.count()).where(
            jobs.c.campaign_id == campaign_id, jobs.c.state == "failed")).scalar_one()
    final = "cancelled" if status == "cancelled" else ("failed" if failed else "finished")
    values = {"status": final, "schedules_run": t["schedules_run"], "coverage": t["coverage"],
              "findings": t["findings"], "unique_findings": unique, "new_buckets": t["new_buckets"],
              "seconds": t["seconds"]}
    with db.session() as s:
        # only the first caller stamps `finished`
        s.execute(update(campaigns).where(campaigns.c.id == campaign_id, campaigns.c.finished.is_(None))
                  .values(finished=utcnow()))
        s.execute(update(campaigns).where(campaigns.c.id == campaign_id).values(values))
    return final


def cancel_campaign(db: Database, campaign_id: int) -> list[int]:
    """Mark a running campaign cancelled and its queued or running jobs with it; returns those
    job ids (the caller stops them in the queue). A campaign that already ended is left as is."""
    with db.session() as s:
        status = s.execute(select(campaigns.c.status).where(campaigns.c.id == campaign_id)).scalar_one_or_none()
        if status is None:
            raise NotFound(f"no campaign with id {campaign_id}")
        if status != "running":
            return []  # finished, failed or already cancelled: its record stays as it is
        s.execute(update(campaigns).where(campaigns.c.id == campaign_id).values(status="cancelled"))
        ids = list(s.execute(update(jobs).where(jobs.c.campaign_id == campaign_id,
                                                jobs.c.state.in_(("queued", "running")))
                             .values(state="cancelled", finished=utcnow())
                             .returning(jobs.c.id)).scalars())
    settle_campaign(db, campaign_id)
    return sorted(ids)


def get_job(db: Database, job_id: int) -> dict[str, Any]:
    return _get_one(db, jobs, job_id, "job")


def _update_job(db: Database, job_id: int, values: dict[str, Any]) -> None:
    _update_one(db, jobs, job_id, values, "job")


def _get_one(db: Database, table, row_id: int, what: str) -> dict[str, Any]:
    with db.session() as s:
        row = s.execute(select(table).where(table.c.id == row_id)).mappings().first()
    if row is None:
        raise NotFound(f"no {what} with id {row_id}")
    return dict(row)


def _update_one(db: Database, table, row_id: int, values: dict[str, Any], what: str) -> None:
    with db.session() as s:
        if s.execute(update(table).where(table.c.id == row_id).values(values)).rowcount == 0:
            raise NotFound(f"no {what} with id {row_id}")
