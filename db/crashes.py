"""Storing and triaging crashes, the corpus, and regression runs.

Plain values in, plain dicts out: callers turn the engine's findings into keyword arguments,
e.g. `store_finding(db, signature=f.signature, protocol=f.protocol, ..., detail=f.detail,
consequence=f.consequence, schedule=rec.schedule, ...)`.

Concurrency: every call is one transaction. A finding is one INSERT .. ON CONFLICT DO UPDATE
on its bucket, which on Postgres also locks that bucket's row until commit; the sample insert
and the best-sample update that follow in the same transaction are therefore serialized per
bucket, however many workers store the same signature at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .coltypes import utcnow
from .engine import Database
from .errors import NotFound
from .models import BUCKET_STATUSES, CorpusEntry, CrashBucket, CrashSample, Job, JobFinding, RegressionRun

buckets: Table = CrashBucket.__table__  # type: ignore[assignment]
samples: Table = CrashSample.__table__  # type: ignore[assignment]
corpus: Table = CorpusEntry.__table__  # type: ignore[assignment]
runs: Table = RegressionRun.__table__  # type: ignore[assignment]
job_hits: Table = JobFinding.__table__  # type: ignore[assignment]
jobs_table: Table = Job.__table__  # type: ignore[assignment]

# Rows per multi-row statement: well under SQLite's bound-parameter limit for every table here.
CHUNK = 200

_REQUIRED = ("signature", "protocol", "variant", "oracle", "title", "schedule", "schedule_format",
             "engine_version")
_OPTIONAL = {"config": None, "trace_sha256": None, "detail": "", "consequence": None, "hits": 1,
             "campaign_id": None, "job_id": None, "seen": None}


def _upsert_insert(db: Database, table: Table):
    # There is no dialect-neutral INSERT .. ON CONFLICT in SQLAlchemy.
    if db.dialect == "postgresql":
        return postgresql.insert(table)
    if db.dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for dialect {db.dialect}")


def _greatest(db: Database, a, b):
    # SQLite's two-argument max() is its scalar GREATEST.
    return func.max(a, b) if db.dialect == "sqlite" else func.greatest(a, b)


def _least(db: Database, a, b):
    return func.min(a, b) if db.dialect == "sqlite" else func.least(a, b)


# ---------------------------------------------------------------------------------------------
# Findings


def store_finding(
    db: Database,
    *,
    signature: str,
    protocol: str,
    variant: str,
    oracle: str,
    title: str,
    schedule: bytes,
    schedule_format: int,
    engine_version: str,
    config: Mapping[str, Any] | None,
    trace_sha256: str | None,
    detail: str,
    consequence: Sequence[str] | None,
    campaign_id: int | None = None,
    job_id: int | None = None,
    hits: int = 1,
    seen: datetime | None = None,
) -> tuple[int, bool]:
    """Record one finding: bump its bucket (created if new) and keep the schedule as a sample.

    `hits` is how many crashing runs this stands for (a campaign that deduplicated its own
    findings); `seen` defaults to now. Returns (bucket id, whether the bucket is new). The
    bucket's best sample becomes this one if it is strictly shorter than the current best."""
    finding = dict(signature=signature, protocol=protocol, variant=variant, oracle=oracle, title=title,
                   schedule=schedule, schedule_format=schedule_format, engine_version=engine_version,
                   config=config, trace_sha256=trace_sha256, detail=detail, consequence=consequence,
                   campaign_id=campaign_id, job_id=job_id, hits=hits, seen=seen)
    return store_findings_batch(db, [finding])[signature]


def store_findings_batch(
    db: Database,
    findings: Iterable[Mapping[str, Any]],
    *,
    campaign_id: int | None = None,
    job_id: int | None = None,
) -> dict[str, tuple[int, bool]]:
    """Record many findings in one transaction; keys as store_finding's arguments.

    Every finding keeps its sample; each distinct signature costs one upserted bucket row
    (count += its hits in the batch). Returns {signature: (bucket id, whether new)}."""
    rows = [_normalize(f, campaign_id, job_id) for f in findings]
    if not rows:
        return {}
    with db.session() as s:
        return _store_rows(db, s, rows)


def _store_rows(db: Database, s, rows: list[dict[str, Any]]) -> dict[str, tuple[int, bool]]:
    """Upsert the buckets of normalized rows and insert a sample for each row whose `_sample`
    is not False, in the caller's transaction."""
    now = utcnow()
    # Postgres rejects a statement that hits the same conflict key twice, so one row per
    # signature; sorted, so concurrent batches lock bucket rows in the same order (no deadlock).
    per_sig: dict[str, dict[str, Any]] = {}
    for r in rows:
        b = per_sig.get(r["signature"])
        seen = r["seen"] or now
        if b is None:
            per_sig[r["signature"]] = {
                "signature": r["signature"], "protocol": r["protocol"], "variant": r["variant"],
                "oracle": r["oracle"], "title": r["title"], "status": "new", "note": None,
                "count": r["hits"], "first_seen": seen, "last_seen": seen, "best_sample_id": None,
                "minimized": False}
        else:
            b["count"] += r["hits"]
            b["first_seen"] = min(b["first_seen"], seen)
            b["last_seen"] = max(b["last_seen"], seen)
    ordered = [per_sig[s] for s in sorted(per_sig)]

    result: dict[str, tuple[int, bool]] = {}
    for i in range(0, len(ordered), CHUNK):
        chunk = ordered[i:i + CHUNK]
        ins = _upsert_insert(db, buckets).values(chunk)
        stmt = ins.on_conflict_do_update(
            index_elements=[buckets.c.signature],
            set_={
                "count": buckets.c.count + ins.excluded.count,
                "first_seen": _least(db, buckets.c.first_seen, ins.excluded.first_seen),
                "last_seen": _greatest(db, buckets.c.last_seen, ins.excluded.last_seen),
            },
        ).returning(buckets.c.id, buckets.c.signature, buckets.c.count.label("n"))
        for bid, sig, n in s.execute(stmt):
            # A bucket that existed had count >= 1 before, so only a new one ends at exactly
            # the batch's hits. (Postgres's xmax trick has no SQLite equivalent.)
            result[sig] = (bid, n == per_sig[sig]["count"])

    sample_rows = [{
        "bucket_id": result[r["signature"]][0], "schedule": r["schedule"],
        "schedule_len": len(r["schedule"]), "schedule_format": r["schedule_format"],
        "engine_version": r["engine_version"], "protocol": r["protocol"], "variant": r["variant"],
        "config": r["config"], "trace_sha256": r["trace_sha256"], "detail": r["detail"],
        "consequence": r["consequence"], "minimized": False, "campaign_id": r["campaign_id"],
        "job_id": r["job_id"], "created": r["seen"] or now,
    } for r in rows if r.get("_sample", True)]
    if not sample_rows:
        return result
    ids = s.execute(insert(samples).returning(samples.c.id, sort_by_parameter_order=True),
                    sample_rows).scalars().all()

    # Shortest sample of the batch per bucket; on equal lengths the earlier one (lower id).
    best: dict[int, tuple[int, int]] = {}
    for sid, row in zip(ids, sample_rows, strict=True):
        cand = (row["schedule_len"], sid)
        cur = best.get(row["bucket_id"])
        if cur is None or cand < cur:
            best[row["bucket_id"]] = cand
    for bid in sorted(best):
        length, sid = best[bid]
        _offer_best(s, bid, sid, length)
    return result


def store_job_findings(db: Database, job_id: int, findings: Iterable[Mapping[str, Any]],
                       *, campaign_id: int | None = None) -> dict[str, tuple[int, bool]]:
    """Record what a farm job has found so far, idempotently.

    Each finding's `hits` is the job's running total for that signature, not an increment:
    the bucket count grows only by the part not reported before (a per-job ledger,
    `job_findings`), and the job's first report of a signature keeps its schedule as a sample.
    So reporting the same totals again, or a second delivery of the same job finding the same
    things, changes nothing. Returns {signature: (bucket id, whether new)} for the signatures
    that grew."""
    rows = sorted((_normalize(f, campaign_id, job_id) for f in findings), key=lambda r: r["signature"])
    if not rows:
        return {}
    rows = list({r["signature"]: r for r in rows}.values())  # one total per signature
    ledger_ins = _upsert_insert(db, job_hits)
    with db.session() as s:
        grown = []
        for r in rows:
            # Creates the ledger row if missing, then locks it (Postgres; SQLite's IMMEDIATE
            # transaction already holds the write lock), so two deliveries cannot both add.
            s.execute(ledger_ins.values(job_id=job_id, signature=r["signature"], hits=0)
                      .on_conflict_do_nothing(index_elements=["job_id", "signature"]))
            q = select(job_hits.c.hits).where(job_hits.c.job_id == job_id,
                                               job_hits.c.signature == r["signature"])
            if db.dialect == "postgresql":
                q = q.with_for_update()
            old = s.execute(q).scalar_one()
            if r["hits"] <= old:
                continue
            s.execute(update(job_hits).where(job_hits.c.job_id == job_id,
                                              job_hits.c.signature == r["signature"])
                      .values(hits=r["hits"]))
            grown.append({**r, "hits": r["hits"] - old, "_sample": old == 0})
        if not grown:
            return {}
        result = _store_rows(db, s, grown)
        total = s.execute(select(func.coalesce(func.sum(job_hits.c.hits), 0))
                          .where(job_hits.c.job_id == job_id)).scalar_one()
        s.execute(update(jobs_table).where(jobs_table.c.id == job_id).values(findings=total))
        new = sum(is_new for _, is_new in result.values())
        if new:
            s.execute(update(jobs_table).where(jobs_table.c.id == job_id)
                      .values(new_buckets=jobs_table.c.new_buckets + new))
        return result


def _offer_best(s, bucket_id: int, sample_id: int, length: int) -> None:
    """Make the sample the bucket's best if it is strictly shorter (ties keep the older), unless
    the best is the minimizer's output: that one is shrunk for reading (fewest steps first), and
    a raw finding with fewer bytes would usually be a longer story."""
    current_len = (select(samples.c.schedule_len)
                   .where(samples.c.id == buckets.c.best_sample_id)
                   .scalar_subquery())
    s.execute(update(buckets)
              .where(buckets.c.id == bucket_id,
                     or_(buckets.c.best_sample_id.is_(None),
                         and_(buckets.c.minimized.is_(False), current_len > length)))
              .values(best_sample_id=sample_id, minimized=False))


def _normalize(f: Mapping[str, Any], campaign_id: int | None, job_id: int | None) -> dict[str, Any]:
    missing = [k for k in _REQUIRED if f.get(k) is None]
    unknown = sorted(set(f) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise TypeError(f"finding {f.get('signature', '?')}: "
                        + "; ".join(filter(None, [missing and f"missing {', '.join(missing)}",
                                                   unknown and f"unknown {', '.join(unknown)}"])))
    r = {**_OPTIONAL, **f}
    if not isinstance(r["schedule"], bytes | bytearray | memoryview):
        raise TypeError(f"schedule must be bytes, not {type(r['schedule']).__name__}")
    if int(r["hits"]) < 1:
        raise ValueError("hits must be at least 1")
    r["schedule"] = bytes(r["schedule"])
    r["config"] = dict(r["config"] or {})
    r["consequence"] = list(r["consequence"] or [])
    r["detail"] = r["detail"] or ""
    r["hits"] = int(r["hits"])
    r["campaign_id"] = r["campaign_id"] if r["campaign_id"] is not None else campaign_id
    r["job_id"] = r["job_id"] if r["job_id"] is not None else job_id
    return r


# ---------------------------------------------------------------------------------------------
# Triage


def mark(db: Database, bucket_id: int, status: str, note: str | None = None) -> None:
    """Set a bucket's status (new|fixed|duplicate|invalid); a note of None keeps the old one."""
    if status not in BUCKET_STATUSES:
        raise ValueError(f"unknown status {status!r}: use one of {', '.join(BUCKET_STATUSES)}")
    values: dict[str, Any] = {"status": status}
    if note is not None:
        values["note"] = note
    with db.session() as s:
        if s.execute(update(buckets).where(buckets.c.id == bucket_id).values(**values)).rowcount == 0:
            raise NotFound(f"no crash bucket with id {bucket_id}")


def get_bucket(db: Database, bucket_id: int) -> dict[str, Any]:
    """The bucket's fields, plus `best_sample` (a dict, or None) and `sample_count`."""
    with db.session() as s:
        row = s.execute(select(buckets).where(buckets.c.id == bucket_id)).mappings().first()
        if row is None:
            raise NotFound(f"no crash bucket with id {bucket_id}")
        bucket = dict(row)
        bucket["sample_count"] = s.execute(
            select(func.count()).select_from(samples).where(samples.c.bucket_id == bucket_id)).scalar_one()
        bucket["best_sample"] = None
        if bucket["best_sample_id"] is not None:
            best = s.execute(select(samples).where(samples.c.id == bucket["best_sample_id"])).mappings().first()
            bucket["best_sample"] = dict(best) if best else None
    return bucket


def get_sample(db: Database, sample_id: int) -> dict[str, Any]:
    with db.session() as s:
        row = s.execute(select(samples).where(samples.c.id == sample_id)).mappings().first()
    if row is None:
        raise NotFound(f"no crash sample with id {sample_id}")
    return dict(row)


def list_samples(db: Database, bucket_id: int, limit: int | None = None) -> list[dict[str, Any]]:
    """A bucket's samples, shortest first (then oldest)."""
    with db.session() as s:
        if s.execute(select(buckets.c.id).where(buckets.c.id == bucket_id)).first() is None:
            raise NotFound(f"no crash bucket with id {bucket_id}")
        q = (select(samples).where(samples.c.bucket_id == bucket_id)
             .order_by(samples.c.schedule_len, samples.c.id).limit(limit))
        return [dict(r) for r in s.execute(q).mappings()]


def list_buckets(
    db: Database,
    protocol: str | None = None,
    oracle: str | None = None,
    status: str | Iterable[str] | None = None,
    since: datetime | None = None,
    *,
    variant: str | None = None,
) -> list[dict[str, Any]]:
    """Buckets, most recently seen first. `since` keeps buckets seen at or after that time
    (naive datetimes are taken as UTC); `status` may be one status or several."""
    q = (select(buckets, samples.c.schedule_len.label("best_schedule_len"))
         .outerjoin(samples, samples.c.id == buckets.c.best_sample_id)
         .order_by(buckets.c.last_seen.desc(), buckets.c.id.desc()))
    if protocol is not None:
        q = q.where(buckets.c.protocol == protocol)
    if variant is not None:
        q = q.where(buckets.c.variant == variant)
    if oracle is not None:
        q = q.where(buckets.c.oracle == oracle)
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        bad = [x for x in wanted if x not in BUCKET_STATUSES]
        if bad:
            raise ValueError(f"unknown status {bad[0]!r}: use one of {', '.join(BUCKET_STATUSES)}")
        q = q.where(buckets.c.status.in_(wanted))
    if since is not None:
        q = q.where(buckets.c.last_seen >= since)
    with db.session() as s:
        return [dict(r) for r in s.execute(q).mappings()]


def unminimized_buckets(db: Database, campaign_id: int) -> dict[int, bytes]:
    """The buckets a campaign has samples in that still lack a minimized reproducer, each with
    the shortest schedule the campaign stored for it (a job killed before its minimization
    leaves such buckets; the campaign's next job minimizes them with its own configuration)."""
    q = (select(samples.c.bucket_id, samples.c.schedule)
         .join(buckets, buckets.c.id == samples.c.bucket_id)
         .where(samples.c.campaign_id == campaign_id, buckets.c.minimized.is_(False))
         .order_by(samples.c.bucket_id, samples.c.schedule_len, samples.c.id))
    out: dict[int, bytes] = {}
    with db.session() as s:
        for bucket_id, schedule in s.execute(q):
            out.setdefault(bucket_id, bytes(schedule))
    return out


def set_minimized(
    db: Database,
    bucket_id: int,
    schedule: bytes,
    trace_sha256: str | None,
    *,
    engine_version: str | None = None,
    schedule_format: int | None = None,
    detail: str | None = None,
    consequence: Sequence[str] | None = None,
) -> int:
    """Store the minimizer's output as a new sample and make it the bucket's best, whatever its
    length. Other fields (config, ...) are copied from the current best sample; engine_version,
    schedule_format, detail and consequence too unless given (the minimized run's own detail
    names its own steps, so callers that replayed it pass it). Returns the new sample's id."""
    with db.session() as s:
        # Lock the bucket (Postgres) so a concurrent store_finding cannot slip in between.
        bucket = s.execute(select(buckets.c.id, buckets.c.best_sample_id)
                           .where(buckets.c.id == bucket_id).with_for_update()).first()
        if bucket is None:
            raise NotFound(f"no crash bucket with id {bucket_id}")
        src_q = select(samples).where(samples.c.bucket_id == bucket_id)
        if bucket.best_sample_id is not None:
            src_q = src_q.where(samples.c.id == bucket.best_sample_id)
        src = s.execute(src_q.order_by(samples.c.id.desc()).limit(1)).mappings().first()
        if src is None:
            raise NotFound(f"crash bucket {bucket_id} has no sample to minimize")
        schedule = bytes(schedule)
        row = {k: src[k] for k in ("protocol", "variant", "config", "detail", "consequence")}
        if detail is not None:
            row["detail"] = detail
        if consequence is not None:
            row["consequence"] = list(consequence)
        row.update(bucket_id=bucket_id, schedule=schedule, schedule_len=len(schedule),
                   schedule_format=src["schedule_format"] if schedule_format is None else schedule_format,
                   engine_version=engine_version or src["engine_version"], trace_sha256=trace_sha256,
                   minimized=True, campaign_id=None, job_id=None, created=utcnow())
        sid = s.execute(insert(samples).values(row).returning(samples.c.id)).scalar_one()
        s.execute(update(buckets).where(buckets.c.id == bucket_id).values(best_sample_id=sid, minimized=True))
    return sid


# ---------------------------------------------------------------------------------------------
# Corpus


def add_corpus_entries(
    db: Database,
    protocol: str,
    variant: str,
    entries: Iterable[bytes],
    campaign_id: int | None = None,
) -> int:
    """Add schedules to a variant's corpus, skipping any already there (by SHA-1). Returns how
    many were new."""
    unique: dict[str, bytes] = {}
    for e in entries:
        unique.setdefault(hashlib.sha1(e).hexdigest(), bytes(e))
    if not unique:
        return 0
    now = utcnow()
    rows = [{"protocol": protocol, "variant": variant, "sha1": h, "data": d, "created": now,
             "campaign_id": campaign_id} for h, d in unique.items()]
    added = 0
    with db.session() as s:
        for i in range(0, len(rows), CHUNK):
            stmt = (_upsert_insert(db, corpus).values(rows[i:i + CHUNK])
                    .on_conflict_do_nothing(index_elements=["protocol", "variant", "sha1"])
                    .returning(corpus.c.id))
            added += len(s.execute(stmt).all())
    return added


def corpus_entries(db: Database, protocol: str, variant: str) -> list[bytes]:
    """A variant's corpus, oldest first."""
    with db.session() as s:
        q = (select(corpus.c.data).where(corpus.c.protocol == protocol, corpus.c.variant == variant)
             .order_by(corpus.c.id))
        return [bytes(d) for d in s.execute(q).scalars()]


# ---------------------------------------------------------------------------------------------
# Regression runs


def record_regression_run(
    db: Database,
    *,
    source: str,
    total: int,
    passed: int,
    regressions: int,
    errors: int,
    details: Mapping[str, Any] | Sequence[Any] | None = None,
    started: datetime | None = None,
    finished: datetime | None = None,
) -> int:
    """Store the outcome of one replay of the known crashes/corpus; returns its id.
    `finished` defaults to now, `started` to `finished`."""
    finished = finished or utcnow()
    row = {"source": source, "total": total, "passed": passed, "regressions": regressions,
           "errors": errors, "details": details if details is not None else {},
           "started": started or finished, "finished": finished}
    with db.session() as s:
        return s.execute(insert(runs).values(row).returning(runs.c.id)).scalar_one()


def list_regression_runs(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    """The latest regression runs, newest first."""
    with db.session() as s:
        q = select(runs).order_by(runs.c.started.desc(), runs.c.id.desc()).limit(limit)
        return [dict(r) for r in s.execute(q).mappings()]
