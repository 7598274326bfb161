"""What a farm job does (the functions named in workers.security.ALLOWED).

A job's payload is its id and nothing else: the protocol, variant, configuration, strategy,
seed and budget are read from the database row the coordinator wrote, and the protocol is
resolved in the installed registry. A job:

1. marks itself running (or does nothing if an earlier delivery already finished it);
2. seeds its corpus with every entry the campaign's earlier jobs uploaded, so the farm is one
   search and not N copies;
3. fuzzes for its time budget (atheris in its own subprocess, as on the command line), storing
   each finding the moment it turns up and writing progress, hit totals and new corpus entries
   every few seconds (absolute totals through a per-job ledger: a retried or duplicated job
   never counts the same hits twice);
4. minimizes the buckets it created and any of its campaign's that a killed attempt left
   unminimized, marks itself finished and closes the campaign if it was
   the last job.
A worker killed mid-job loses nothing stored; RQ retries the job and the retry carries on from
the shared corpus.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import db
from db.coltypes import utcnow
from fuzzer.campaign import CampaignResult, CrashRecord, fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocols import UnknownProtocol, resolve
from fuzzer.records import FindingRecords
from fuzzer.strategies import STRATEGIES

from .settings import FarmSettings

MINIMIZE_RUNS = 2000  # per new bucket, at the end of the job that created it
# How long a job waits for the database to come back before its closing writes give up (and
# RQ retries the job). Progress writes in between never wait: totals are absolute, so the next
# checkpoint resends whatever a failed one did not store.
DB_WAIT = 180.0

log = logging.getLogger("patchfuzz.job")


T = TypeVar("T")


def patiently(fn: Callable[[], T], what: str, wait: float = DB_WAIT) -> T:
    """Call `fn`, retrying while the database is unreachable (restarting), up to `wait` s."""
    deadline = time.monotonic() + wait
    pause = 0.5
    while True:
        try:
            return fn()
        except db.DatabaseError as e:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s: database unavailable (%s); retrying in %.1f s", what, e, pause)
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


class JobCancelled(Exception):
    """The campaign was cancelled while this job ran."""


def worker_name() -> str:
    """The RQ worker's name when run by one (what `farm status` lists), else host:pid."""
    from rq import get_current_job

    current = get_current_job()
    if current is not None and current.worker_name:
        return current.worker_name
    return f"{socket.gethostname()}:{os.getpid()}"


class CorpusSync:
    """The job's corpus directory and the campaign's shared corpus in the database."""

    def __init__(self, database: db.Database, protocol: str, variant: str, directory: Path,
                 campaign_id: int) -> None:
        self.db, self.protocol, self.variant = database, protocol, variant
        self.dir, self.campaign_id = directory, campaign_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.known: set[str] = set()

    def download(self) -> int:
        entries = db.corpus_entries(self.db, self.protocol, self.variant)
        for data in entries:
            name = hashlib.sha1(data).hexdigest()  # libFuzzer's own naming: no duplicates
            (self.dir / name).write_bytes(data)
            self.known.add(name)
        return len(entries)

    def upload(self) -> int:
        fresh = {}
        for path in self.dir.iterdir():
            if path.name not in self.known and path.is_file():
                try:
                    fresh[path.name] = path.read_bytes()
                except FileNotFoundError:  # libFuzzer replaced it meanwhile (reduced input)
                    continue
        if not fresh:
            return 0
        added = db.add_corpus_entries(self.db, self.protocol, self.variant, fresh.values(),
                                      campaign_id=self.campaign_id)
        self.known.update(fresh)
        return added

    def size(self) -> int:
        return len(self.known)


class FindingSink:
    """Stores a job's findings: each one when found, then its growing hit totals."""

    def __init__(self, database: db.Database, machine: Machine, campaign_id: int, job_id: int) -> None:
        self.db, self.machine = database, machine
        self.campaign_id, self.job_id = campaign_id, job_id
        self.records = FindingRecords(machine)
        self.reported: dict[str, int] = {}
        self.new_buckets: dict[int, bytes] = {}

    def report(self, recs: list[CrashRecord]) -> None:
        rows = [self.records.row(r, r.hits) for r in recs if r.hits > self.reported.get(r.finding.signature, 0)]
        if not rows:
            return
        stored = db.store_job_findings(self.db, self.job_id, rows, campaign_id=self.campaign_id)
        for r in recs:
            self.reported[r.finding.signature] = max(self.reported.get(r.finding.signature, 0), r.hits)
        for rec in recs:
            bucket, new = stored.get(rec.finding.signature, (None, False))
            if new and bucket is not None:
                self.new_buckets[bucket] = rec.schedule

    def found(self, rec: CrashRecord) -> None:
        try:
            self.report([rec])
        except db.DatabaseError as e:
            # not lost: report() sends totals, and the next checkpoint includes this finding
            log.warning("finding %s not stored yet (%s); will retry", rec.finding.signature, e)

    def minimize_pending(self, max_runs: int) -> None:
        """The buckets this job created, and those of its campaign that an earlier attempt or
        job created and never minimized (a worker killed between finding and minimizing)."""
        if max_runs <= 0:  # --minimize-runs 0: keep the raw reproducers
            return
        pending = {**db.unminimized_buckets(self.db, self.campaign_id), **self.new_buckets}
        for bucket, schedule in sorted(pending.items()):
            try:
                small, extra = self.records.minimized(schedule, max_runs)
            except ValueError as e:  # stored by another engine version: it no longer reproduces
                log.warning("bucket %d not minimized: %s", bucket, e)
                continue
            db.set_minimized(self.db, bucket, small, **extra)


def _strategy(campaign: dict[str, Any], job: dict[str, Any], work: Path):
    options = dict(campaign["config"].get("strategy_options") or {})
    cls = STRATEGIES[campaign["strategy"]]
    if campaign["strategy"] == "atheris":
        options.update(corpus_dir=work / "corpus", log_dir=work / "logs")
    return cls(seed=int(job["seed"]), **options)


class WrongFarm(Exception):
    """The job was submitted to another database than this worker's."""


def run_job(job_id: int, farm: str | None = None) -> dict[str, Any]:
    """Run farm job `job_id` (a row of the jobs table) to the end of its time budget. `farm` is
    the token of the database it was submitted to: a worker configured with another database
    refuses it before touching anything."""
    settings = FarmSettings()
    database = db.open_db(settings.db_url)
    try:
        mine = db.farm_token(database)
        if farm is not None and farm != mine:
            raise WrongFarm(f"job {job_id} was submitted to another database (farm {farm[:12]}) than this "
                            f"worker's {database.url} (farm {mine[:12]}); give the submitter and the "
                            f"workers the same PATCHFUZZ_DB, or each farm its own PATCHFUZZ_QUEUE")
        return _run(database, int(job_id), settings)
    finally:
        database.close()


def _run(database: db.Database, job_id: int, settings: FarmSettings) -> dict[str, Any]:
    job = db.get_job(database, job_id)
    campaign = db.get_campaign(database, job["campaign_id"])
    cid = campaign["id"]
    if job["state"] in ("finished", "cancelled", "failed") or campaign["status"] == "cancelled":
        # a second delivery of a job that is done: nothing to add
        if campaign["status"] == "cancelled" and job["state"] in ("queued", "running"):
            db.finish_job(database, job_id, state="cancelled")
        db.settle_campaign(database, cid)
        return {"job": job_id, "skipped": job["state"]}
    attempt = db.start_job(database, job_id, worker_name())
    try:
        cls, variant = resolve(f"{campaign['protocol']}:{campaign['variant']}")
    except UnknownProtocol as e:
        # not worth a retry: the workers run another version of the protocols than the submitter
        db.finish_job(database, job_id, state="failed", error=str(e))
        db.settle_campaign(database, cid)
        return {"job": job_id, "error": str(e)}
    machine = Machine(cls, variant, Config(**(campaign["config"].get("machine") or {})))
    work = Path(tempfile.mkdtemp(prefix=f"patchfuzz-job{job_id}-", dir=settings.work_dir))
    sink = FindingSink(database, machine, cid, job_id)
    corpus = CorpusSync(database, cls.name, variant, work / "corpus", cid)
    try:
        if campaign["strategy"] == "atheris":
            corpus.download()
        strategy = _strategy(campaign, job, work)
        next_write = time.monotonic() + settings.progress_seconds

        def progress(res: CampaignResult) -> None:
            nonlocal next_write
            now = time.monotonic()
            if now < next_write:
                return
            next_write = now + settings.progress_seconds
            try:
                _checkpoint(database, job_id, res, sink, corpus, campaign["strategy"])
                cancelled = db.get_campaign(database, cid)["status"] == "cancelled"
            except db.DatabaseError as e:
                log.warning("job %d: progress not stored (%s); fuzzing on", job_id, e)
                return
            if cancelled:
                raise JobCancelled()

        try:
            res = fuzz(machine, strategy, seconds=float(job["budget"]), on_progress=progress,
                       on_crash=sink.found)
        except JobCancelled:
            db.finish_job(database, job_id, state="cancelled")
            db.settle_campaign(database, cid)
            return {"job": job_id, "cancelled": True}
        patiently(lambda: _checkpoint(database, job_id, res, sink, corpus, campaign["strategy"]),
                  f"job {job_id} final checkpoint")
        patiently(lambda: sink.minimize_pending(int(campaign["config"].get("minimize_runs", MINIMIZE_RUNS))),
                  f"job {job_id} minimization")
        if res.error is not None:  # the protocol's own code went wrong: the job says so, with the replay
            cpus = machine.config.cpus
            error = f"{res.error.error.line()}; replay: {res.error.replay(cpus)}"
            patiently(lambda: db.finish_job(database, job_id, state="failed", schedules_run=res.schedules,
                                            error=error), f"job {job_id} finish")
        else:
            patiently(lambda: db.finish_job(database, job_id, schedules_run=res.schedules),
                      f"job {job_id} finish")
        status = patiently(lambda: db.settle_campaign(database, cid), f"campaign {cid} settle")
        return {"job": job_id, "attempt": attempt, "schedules": res.schedules,
                "findings": {s: r.hits for s, r in res.crashes.items()}, "campaign": status}
    except Exception as e:
        # RQ retries the job if it has retries left; the row says why the attempt ended
        from rq import get_current_job

        current = get_current_job()
        last = current is None or not current.retries_left
        db.finish_job(database, job_id, state="failed" if last else "queued",
                      error=f"attempt {attempt}: {type(e).__name__}: {e}"[:2000])
        if last:
            db.settle_campaign(database, cid)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _checkpoint(database: db.Database, job_id: int, res: CampaignResult, sink: FindingSink,
                corpus: CorpusSync, strategy: str) -> None:
    sink.report(list(res.crashes.values()))
    if strategy == "atheris":
        corpus.upload()
    db.job_progress(database, job_id, schedules_run=res.schedules,
                    coverage=res.stats.get("coverage_features"),
                    corpus=corpus.size() if strategy == "atheris" else None)


def nightly_replay(source: str = "nightly") -> dict[str, Any]:
    """Replay the regression corpus and record the outcome in the database."""
    from fuzzer.regress import replay_dir

    settings = FarmSettings()
    started = utcnow()
    outcomes = replay_dir(settings.corpus_dir)
    bad = [o for o in outcomes if o.status != "pass"]
    summary = {"total": len(outcomes), "passed": len(outcomes) - len(bad),
               "regressions": sum(o.status == "regression" for o in bad),
               "errors": sum(o.status == "error" for o in bad) + (0 if outcomes else 1)}
    details = {"corpus": str(settings.corpus_dir), "failed": [o.to_dict() for o in bad]}
    if not outcomes:
        details["error"] = f"no cases (*.json) under {settings.corpus_dir}"
    database = db.open_db(settings.db_url)
    try:
        run_id = db.record_regression_run(database, source=str(source)[:32], started=started,
                                          details=details, **summary)
    finally:
        database.close()
    return {"regression_run": run_id, "corpus": str(settings.corpus_dir.resolve()), **summary}
