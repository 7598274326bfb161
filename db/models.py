"""Tables of the crash database.

Plain records only: the engine's findings arrive as arguments (see db.crashes), never as
engine objects, so this package imports nothing from `fuzzer`. The schema itself is created by
the Alembic migrations in db/migrations/, which must be kept in step with these classes (a test
compares them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .coltypes import Id, Json, UTCDateTime, utcnow

# Named constraints, so migrations can drop or alter them by name on both dialects.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BUCKET_STATUSES = ("new", "fixed", "duplicate", "invalid")
VIEWS = ("crashes_per_protocol_per_day", "new_buckets_this_week", "buckets_still_reproducing")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Campaign(Base):
    """One `patchfuzz fuzz` run, embedded or split into farm jobs."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    protocol: Mapped[str] = mapped_column(String(128))
    variant: Mapped[str] = mapped_column(String(128))
    strategy: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    status: Mapped[str] = mapped_column(String(32), default="running")  # running|finished|cancelled|failed
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)
    schedules_run: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    coverage: Mapped[int | None] = mapped_column(BigInteger)  # interleaving features, if tracked
    findings: Mapped[int] = mapped_column(Integer, default=0)  # crashing runs (hits)
    unique_findings: Mapped[int] = mapped_column(Integer, default=0)  # distinct signatures
    new_buckets: Mapped[int] = mapped_column(Integer, default=0)  # signatures never seen before
    stats: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # other strategy figures


class Job(Base):
    """A time-boxed slice of a campaign run by one farm worker."""

    __tablename__ = "jobs"
    __table_args__ = (Index(None, "campaign_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(32), default="queued")  # queued|running|finished|failed|cancelled
    seed: Mapped[int] = mapped_column(BigInteger)
    budget: Mapped[float] = mapped_column(Float)  # seconds
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)
    schedules_run: Mapped[int] = mapped_column(BigInteger, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    # Farm progress, written as absolute values so a redelivered job overwrites, never adds.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    coverage: Mapped[int | None] = mapped_column(BigInteger)
    corpus: Mapped[int] = mapped_column(Integer, default=0)
    findings: Mapped[int] = mapped_column(BigInteger, default=0)
    new_buckets: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobFinding(Base):
    """How many crashing runs of one signature a farm job has reported so far.

    Bucket counts grow by the difference to this row, so a job delivered twice (a retry after
    its worker died, or a duplicate delivery) never counts the same hits twice."""

    __tablename__ = "job_findings"
    __table_args__ = (UniqueConstraint("job_id", "signature"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    signature: Mapped[str] = mapped_column(String(64))
    hits: Mapped[int] = mapped_column(BigInteger, default=0)


class FarmIdentity(Base):
    """One row: a random token naming this database to the farm's jobs (see db.farm_token)."""

    __tablename__ = "farm_identity"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(32))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CrashBucket(Base):
    """All findings with one signature (protocol, variant, oracle, title)."""

    __tablename__ = "crash_buckets"
    __table_args__ = (
        CheckConstraint("status IN ('new', 'fixed', 'duplicate', 'invalid')", name="status"),
        Index(None, "protocol", "variant"),
        Index(None, "last_seen"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    signature: Mapped[str] = mapped_column(String(64), unique=True)
    protocol: Mapped[str] = mapped_column(String(128))
    variant: Mapped[str] = mapped_column(String(128))
    oracle: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="new")
    note: Mapped[str | None] = mapped_column(Text)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    # The two tables point at each other; use_alter lets Postgres add this key after both exist.
    best_sample_id: Mapped[int | None] = mapped_column(
        ForeignKey("crash_samples.id", ondelete="SET NULL", use_alter=True))
    # True while the best sample is the output of the minimizer.
    minimized: Mapped[bool] = mapped_column(Boolean, default=False)


class CrashSample(Base):
    """One reproducer of a bucket: everything needed to replay it later."""

    __tablename__ = "crash_samples"
    __table_args__ = (Index(None, "bucket_id"), Index(None, "created"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    bucket_id: Mapped[int] = mapped_column(ForeignKey("crash_buckets.id", ondelete="CASCADE"))
    schedule: Mapped[bytes] = mapped_column(LargeBinary)
    schedule_len: Mapped[int] = mapped_column(Integer)
    schedule_format: Mapped[int] = mapped_column(Integer)
    engine_version: Mapped[str] = mapped_column(String(32))
    protocol: Mapped[str] = mapped_column(String(128))
    variant: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # cpus etc.
    trace_sha256: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    consequence: Mapped[list[str]] = mapped_column(Json, default=list)
    minimized: Mapped[bool] = mapped_column(Boolean, default=False)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CorpusEntry(Base):
    """A schedule worth keeping as a seed for later runs of one protocol variant."""

    __tablename__ = "corpus_entries"
    __table_args__ = (UniqueConstraint("protocol", "variant", "sha1"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    protocol: Mapped[str] = mapped_column(String(128))
    variant: Mapped[str] = mapped_column(String(128))
    sha1: Mapped[str] = mapped_column(String(40))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))


class RegressionRun(Base):
    """One replay of the known crashes and corpus, e.g. the nightly one."""

    __tablename__ = "regression_runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    started: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(32))  # "nightly", "cli", ...
    total: Mapped[int] = mapped_column(Integer, default=0)
    passed: Mapped[int] = mapped_column(Integer, default=0)
    regressions: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    details: Mapped[dict[str, Any] | list[Any]] = mapped_column(Json, default=dict)
