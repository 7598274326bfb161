"""Campaign and job bookkeeping: plain records, no queue knowledge (the farm drives them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, insert, select, update

from .coltypes import utcnow
from .engine import Database
from .errors import NotFound
from .models import Campaign, Job

campaigns: Table = Campaign.__table__  # type: ignore[assignment]
jobs: Table = Job.__table__  # type: ignore[assignment]


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


def start_job(db: Database, job_id: int, worker: str) -> None:
    _update_job(db, job_id, {"state": "running", "started": utcnow(), "worker": worker})


def finish_job(db: Database, job_id: int, *, state: str = "finished", schedules_run: int = 0,
               error: str | None = None) -> None:
    _update_job(db, job_id, {"state": state, "finished": utcnow(), "schedules_run": schedules_run,
                             "error": error})


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
