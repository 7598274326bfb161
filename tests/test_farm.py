"""The fuzz farm against real Redis and PostgreSQL servers (the run's own, see conftest), with
real worker processes.

Never skipped: a server that cannot start fails (see conftest). Each test gets the Redis database
emptied, its own queue name and a fresh PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import redis
from rq import Queue, Worker
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from sqlalchemy import func, select

import db
from db.models import CrashSample, Job, JobFinding
from workers import coordinator
from workers.settings import FarmSettings
from workers.worker import make_worker

ROOT = Path(__file__).resolve().parents[1]
PATCHFUZZ = [sys.executable, "-m", "fuzzer.cli"]
BUG = "x86/text_poke_bp:no-final-sync"


@pytest.fixture
def farm(tmp_path, redis_url, pg, monkeypatch):
    """Environment of one farm: Redis db, queue, PostgreSQL database, scratch dir."""
    env = {"PATCHFUZZ_REDIS": redis_url, "PATCHFUZZ_DB": pg.new_database(),
           "PATCHFUZZ_QUEUE": f"test-{tmp_path.name}", "PATCHFUZZ_PROGRESS": "1",
           "PATCHFUZZ_WORK_DIR": str(tmp_path)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*PATCHFUZZ, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"patchfuzz {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (RQ's work horse puts itself in a process group of its own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Workers:
    """`patchfuzz worker` processes. `kill` SIGKILLs a worker with everything below it (work
    horse, fuzzer subprocess), as when its container or machine dies."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([*PATCHFUZZ, "worker", "--name", name], cwd=ROOT, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = p
        return p

    def kill(self, name: str) -> None:
        p = self.procs[name]
        tree = descendants(p.pid)
        assert tree, "the worker should be running a job"
        for pid in [p.pid, *tree]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def workers(tmp_path):
    w = Workers(tmp_path)
    yield w
    w.stop_all()


def wait_for(cond, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def current_job_of(conn: redis.Redis, worker_name: str) -> int | None:
    for w in Worker.all(connection=conn, serializer=JSONSerializer):
        if w.name == worker_name:
            rid = w.get_current_job_id()
            return int(rid.rsplit("-", 1)[1]) if rid else None
    return None


# ---------------------------------------------------------------------------------------------
# End to end


def test_two_workers_one_bucket_and_a_sigkilled_job_runs_again(farm, workers):
    sub = json.loads(cli("farm", "submit", BUG, "--jobs", "4", "--job-seconds", "8", "--cpus", "4",
                         "--minimize-runs", "200", "--json").stdout)
    cid, job_ids = sub["campaign"], sub["jobs"]
    workers.start("w-victim")
    workers.start("w-survivor")
    database = db.open_db(farm["PATCHFUZZ_DB"])
    conn = redis.Redis.from_url(farm["PATCHFUZZ_REDIS"])
    try:
        # the victim is mid-job and that job has already stored a finding
        def victim_job_with_finding():
            jid = current_job_of(conn, "w-victim")
            if jid is None:
                return None
            with database.session() as s:
                n = s.execute(select(func.count()).select_from(CrashSample)
                              .where(CrashSample.job_id == jid)).scalar_one()
            return jid if n else None

        victim_job = wait_for(victim_job_with_finding, 120, "the victim to store a finding mid-job")
        before_kill = db.list_buckets(database)
        assert len(before_kill) >= 1
        with database.session() as s:
            victim_samples = set(s.execute(select(CrashSample.id).where(CrashSample.job_id == victim_job)).scalars())
        workers.kill("w-victim")

        def finished():
            st = json.loads(cli("farm", "status", "--json").stdout)
            c = next(c for c in st["campaigns"] if c["id"] == cid)
            return c if c["status"] != "running" else None

        camp = wait_for(finished, 240, "the campaign to finish", every=2)
        assert camp["status"] == "finished", camp
        assert camp["jobs"] == {"finished": 4}
        assert camp["schedules_run"] > 0 and camp["findings"] > 0

        # nothing the killed job stored was lost, and the job ran again to the end
        with database.session() as s:
            kept = set(s.execute(select(CrashSample.id).where(CrashSample.id.in_(victim_samples))).scalars())
        assert kept == victim_samples
        killed = db.get_job(database, victim_job)
        assert killed["state"] == "finished" and killed["attempts"] == 2, killed
        (detail,) = json.loads(cli("farm", "status", str(cid), "--json").stdout)["campaigns"]
        row = next(j for j in detail["job_list"] if j["id"] == victim_job)
        assert (row["attempts"], row["worker"], row["state"]) == (2, "w-survivor", "finished")

        # one bucket per signature; the no-final-sync bug's count grew after the kill and equals
        # the sum of the per-job ledgers (the retried job is not counted twice)
        after = {b["signature"]: b for b in db.list_buckets(database)}
        assert len(after) == len({b["signature"] for b in db.list_buckets(database)})
        for b in before_kill:
            assert after[b["signature"]]["count"] >= b["count"]
        assert sum(b["count"] for b in after.values()) > sum(b["count"] for b in before_kill)
        with database.session() as s:
            for sig, b in after.items():
                ledger = s.execute(select(func.sum(JobFinding.hits)).where(JobFinding.signature == sig)).scalar_one()
                assert b["count"] == ledger, (sig, b["count"], ledger)
            assert {j.id for j in s.execute(select(Job)).scalars()} == set(job_ids)
        assert any(b["oracle"] == "unhandled-trap" for b in after.values())  # the expected bug
        # every bucket got its minimized reproducer, those the killed attempt created too
        assert all(b["minimized"] for b in after.values()), after
        # the farm shares one corpus: later jobs started from what earlier ones uploaded
        assert len(db.corpus_entries(database, "x86/text_poke_bp", "no-final-sync")) > 0
    finally:
        database.close()
        conn.close()


def test_sigterm_stops_an_idle_worker(farm, workers):
    p = workers.start("w-idle")
    conn = redis.Redis.from_url(farm["PATCHFUZZ_REDIS"])
    wait_for(lambda: any(w.name == "w-idle" for w in Worker.all(connection=conn)), 30,
             "the worker to register")
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(timeout=20) == 0  # it does not reconnect and carry on as after a lost Redis


# ---------------------------------------------------------------------------------------------
# Security: payloads are JSON naming an allow-listed function, nothing else


class _Evil:
    """Runs code while being unpickled, as a hostile payload would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _burst(redis_url: str, queue: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    make_worker([queue], conn).work(burst=True, with_scheduler=False)
    conn.close()


def test_a_pickled_job_payload_is_refused_and_never_unpickled(farm, tmp_path):
    marker = tmp_path / "pwned"
    conn = redis.Redis.from_url(farm["PATCHFUZZ_REDIS"])
    q = Queue(farm["PATCHFUZZ_QUEUE"], connection=conn)  # rq's default serializer: pickle
    job = q.enqueue("workers.jobs.nightly_replay", _Evil(marker))
    assert zlib.decompress(conn.hget(job.key, "data")).startswith(b"\x80")  # it really is a pickle
    _burst(farm["PATCHFUZZ_REDIS"], farm["PATCHFUZZ_QUEUE"])
    job = Queue(farm["PATCHFUZZ_QUEUE"], connection=conn, serializer=JSONSerializer).fetch_job(job.id)
    assert job.get_status() == JobStatus.FAILED
    assert "DeserializationError" in job.latest_result().exc_string
    assert not marker.exists()
    with db.open_db(farm["PATCHFUZZ_DB"]) as d:
        assert db.list_regression_runs(d) == []  # the job function never ran


def test_a_json_payload_naming_another_function_is_refused(farm, tmp_path):
    victim = tmp_path / "keep-me"
    victim.write_text("x")
    conn = redis.Redis.from_url(farm["PATCHFUZZ_REDIS"])
    q = Queue(farm["PATCHFUZZ_QUEUE"], connection=conn, serializer=JSONSerializer)
    job = q.enqueue("os.remove", str(victim))
    _burst(farm["PATCHFUZZ_REDIS"], farm["PATCHFUZZ_QUEUE"])
    job = q.fetch_job(job.id)
    assert job.get_status() == JobStatus.FAILED
    assert "refusing function 'os.remove'" in job.latest_result().exc_string
    assert victim.exists()


# ---------------------------------------------------------------------------------------------
# Duplicate delivery


def _finding(sig: str, hits: int, schedule: bytes = b"\x01\x02") -> dict:
    return dict(signature=sig, protocol="p", variant="v", oracle="o", title=f"t {sig}", schedule=schedule,
                schedule_format=1, engine_version="0", config={}, trace_sha256=None, detail="",
                consequence=[], hits=hits)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_job_hit_totals_are_counted_once(backend, pg, tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}" if backend == "sqlite" else pg.new_database()
    with db.open_db(url) as d:
        cid = db.create_campaign(d, protocol="p", variant="v", strategy="random")
        j1, j2 = db.create_job(d, cid, seed=0, budget=1), db.create_job(d, cid, seed=1, budget=1)
        (bid, new), = db.store_job_findings(d, j1, [_finding("s", 1)]).values()
        assert new
        db.store_job_findings(d, j1, [_finding("s", 5)])
        db.store_job_findings(d, j1, [_finding("s", 5)])  # the same totals again
        db.store_job_findings(d, j1, [_finding("s", 3)])  # a redelivery that got less far
        assert db.get_bucket(d, bid)["count"] == 5
        assert len(db.list_samples(d, bid)) == 1  # one sample per job and signature
        db.store_job_findings(d, j2, [_finding("s", 2, b"\x01")])
        b = db.get_bucket(d, bid)
        assert b["count"] == 7 and len(db.list_samples(d, bid)) == 2
        assert db.get_job(d, j1)["findings"] == 5 and db.get_job(d, j1)["new_buckets"] == 1
        assert db.get_job(d, j2)["new_buckets"] == 0


def test_a_finished_job_delivered_again_adds_nothing(farm):  # and a finished campaign stays finished
    settings = FarmSettings()
    sub = coordinator.submit(BUG, strategy="random", jobs=1, job_seconds=2, minimize_runs=50, settings=settings)
    from workers.jobs import run_job

    first = run_job(sub.jobs[0])
    assert first["findings"], first
    with db.open_db(settings.db_url) as d:
        counts = {b["signature"]: b["count"] for b in db.list_buckets(d)}
        runs = db.get_job(d, sub.jobs[0])["schedules_run"]
        again = run_job(sub.jobs[0])
        assert again == {"job": sub.jobs[0], "skipped": "finished"}
        assert {b["signature"]: b["count"] for b in db.list_buckets(d)} == counts
        assert db.get_job(d, sub.jobs[0])["schedules_run"] == runs
        assert db.get_campaign(d, sub.campaign)["status"] == "finished"
    with pytest.raises(coordinator.FarmError, match="already finished"):
        coordinator.cancel(sub.campaign, settings)
    with db.open_db(settings.db_url) as d:
        assert db.get_campaign(d, sub.campaign)["status"] == "finished"


def test_an_arm64_campaign_runs_on_the_farm_unchanged(farm):
    """A weak-model finding goes through the jobs, the crash database and minimization like any
    other: nothing in workers/ or db/ knows the ISA."""
    settings = FarmSettings()
    sub = coordinator.submit("arm64/patch_text:no-isb", strategy="random", jobs=1, job_seconds=2,
                             minimize_runs=100, settings=settings)
    from workers.jobs import run_job

    assert run_job(sub.jobs[0])["findings"]
    with db.open_db(settings.db_url) as d:
        buckets = db.list_buckets(d)
        assert {b["oracle"] for b in buckets} == {"cmodx-violation"}, buckets
        assert all(db.get_bucket(d, b["id"])["minimized"] for b in buckets)


def test_a_bucket_a_killed_attempt_left_unminimized_is_minimized_by_the_next_job(farm):
    from fuzzer.campaign import fuzz
    from fuzzer.machine import Machine
    from fuzzer.protocols import resolve
    from fuzzer.records import FindingRecords
    from fuzzer.strategies import RandomStrategy
    from workers.jobs import run_job

    settings = FarmSettings()
    sub = coordinator.submit(BUG, strategy="random", jobs=2, job_seconds=2, minimize_runs=200,
                             settings=settings)
    first, second = sub.jobs
    with db.open_db(settings.db_url) as d:
        config = db.get_campaign(d, sub.campaign)["config"]["machine"]
        from fuzzer.machine import Config

        machine = Machine(*resolve(BUG), Config(**config))
        found = fuzz(machine, RandomStrategy(seed=3), schedules=400).crashes
        rec = max(found.values(), key=lambda r: r.hits)  # the signature the next job meets again
        # the first job's attempt stores that finding and is SIGKILLed before it minimizes
        db.start_job(d, first, "w-killed")
        stored = db.store_job_findings(d, first, [FindingRecords(machine).row(rec, 1)], campaign_id=sub.campaign)
        (bucket, new), = stored.values()
        assert new and not db.get_bucket(d, bucket)["minimized"]
        raw = len(rec.schedule)

    out = run_job(second)
    assert rec.finding.signature in out["findings"]  # found again: not a new bucket for this job
    with db.open_db(settings.db_url) as d:
        b = db.get_bucket(d, bucket)
        assert b["minimized"], "the bucket the killed attempt created was never minimized"
        assert len(bytes(b["best_sample"]["schedule"])) < raw


# ---------------------------------------------------------------------------------------------
# Cancel, nightly replay, bad input


def test_cancel_drops_queued_jobs(farm):
    sub = json.loads(cli("farm", "submit", BUG, "--jobs", "3", "--job-seconds", "30", "--json").stdout)
    out = cli("farm", "cancel", str(sub["campaign"])).stdout
    assert "cancelled (3 unfinished jobs stopped)" in out
    conn = redis.Redis.from_url(farm["PATCHFUZZ_REDIS"])
    q = Queue(farm["PATCHFUZZ_QUEUE"], connection=conn, serializer=JSONSerializer)
    assert q.count == 0
    st = json.loads(cli("farm", "status", "--json").stdout)
    c = next(c for c in st["campaigns"] if c["id"] == sub["campaign"])
    assert c["status"] == "cancelled" and c["jobs"] == {"cancelled": 3}
    again = cli("farm", "cancel", str(sub["campaign"]), check=False)
    assert again.returncode == 2 and "already cancelled: nothing to cancel" in again.stderr


def _small_corpus(tmp_path: Path, broken: bool) -> Path:
    src = ROOT / "corpus"
    d = tmp_path / "corpus"
    d.mkdir(parents=True)
    cases = sorted(src.rglob("*.json"))
    bug = next(p for p in cases if json.loads(p.read_text())["expect"]["verdict"] == "crash")
    clean = next(p for p in cases if json.loads(p.read_text())["expect"]["verdict"] == "clean")
    shutil.copy(bug, d)
    shutil.copy(clean, d)
    if broken:  # a known bug that no longer shows: its case now claims the variant is clean
        case = json.loads(bug.read_text())
        case["expect"] = {"verdict": "clean"}
        (d / "claims-clean.json").write_text(json.dumps(case))
    return d


def test_nightly_now_runs_on_a_worker_and_a_regression_shows_in_status(farm, workers, tmp_path, monkeypatch):
    good_corpus = _small_corpus(tmp_path, broken=False)
    monkeypatch.setenv("PATCHFUZZ_CORPUS", str(good_corpus))
    workers.start("w-nightly")
    ok = cli("farm", "nightly", "--now", "--json")
    assert json.loads(ok.stdout) == {"regression_run": 1, "corpus": str(good_corpus.resolve()), "total": 2,
                                     "passed": 2, "regressions": 0, "errors": 0}
    workers.stop_all()

    bad_corpus = _small_corpus(tmp_path / "b", broken=True)
    monkeypatch.setenv("PATCHFUZZ_CORPUS", str(bad_corpus))
    workers.start("w-nightly-2")  # reads PATCHFUZZ_CORPUS at job time, from its environment
    bad = cli("farm", "nightly", "--now", check=False)
    assert bad.returncode == 1, bad.stderr
    assert "1 regressions" in bad.stdout
    assert str(bad_corpus.resolve()) in bad.stdout  # which corpus the worker replayed
    status = cli("farm", "status").stdout
    assert "REGRESSION" in status and "claims-clean" in status
    st = json.loads(cli("farm", "status", "--json").stdout)
    assert st["regression_runs"][0]["regressions"] == 1


def test_cron_config_enqueues_the_nightly_replay_as_json(farm, tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHFUZZ_CORPUS", str(_small_corpus(tmp_path, broken=False)))
    monkeypatch.setenv("PATCHFUZZ_NIGHTLY", "15 4 * * *")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    from rq.cron import CronScheduler

    conn = redis.Redis.from_url(farm["PATCHFUZZ_REDIS"])
    sched = CronScheduler(connection=conn)
    sys.modules.pop("workers.cron_config", None)
    sched.load_config_from_file("workers.cron_config")
    (cron_job,) = sched._cron_jobs
    assert cron_job.cron == "15 4 * * *" and cron_job.queue_name == farm["PATCHFUZZ_QUEUE"]
    nxt = cron_job.get_next_enqueue_time().astimezone()
    assert (nxt.hour, nxt.minute) == (4, 15) and nxt.tzname() in ("CET", "CEST")
    job = cron_job.enqueue(conn)
    json.loads(zlib.decompress(conn.hget(job.key, "data")))  # JSON, not pickle: farm workers accept it
    _burst(farm["PATCHFUZZ_REDIS"], farm["PATCHFUZZ_QUEUE"])
    with db.open_db(farm["PATCHFUZZ_DB"]) as d:
        (run,) = db.list_regression_runs(d)
    assert (run["source"], run["total"], run["passed"]) == ("nightly", 2, 2)
    monkeypatch.delenv("TZ")
    time.tzset()


@pytest.mark.parametrize("args, message", [
    (["farm", "submit", "x86/nope"], "unknown protocol 'x86/nope'"),
    (["farm", "submit", BUG, "--strategy", "exhaustive", "--jobs", "2"], "exhaustive search"),
    (["farm", "cancel", "999"], "no campaign with id 999"),
])
def test_farm_bad_input_is_one_line(farm, args, message):
    p = cli(*args, check=False)
    assert p.returncode == 2 and p.stderr.startswith("patchfuzz: error: ") and message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_submit_warns_when_it_would_use_the_default_sqlite_file(farm, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PATCHFUZZ_DB"}
    p = subprocess.run([*PATCHFUZZ, "farm", "submit", BUG, "--jobs", "1", "--job-seconds", "1"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    (warning,) = p.stderr.strip().splitlines()
    assert warning.startswith("patchfuzz: warning: PATCHFUZZ_DB is not set") and "patchfuzz.db" in warning
    quiet = cli("farm", "submit", BUG, "--jobs", "1", "--job-seconds", "1")  # PATCHFUZZ_DB set: no warning
    assert quiet.stderr == ""


def test_unreachable_redis_is_one_line_and_creates_no_campaign(farm, monkeypatch):
    monkeypatch.setenv("PATCHFUZZ_REDIS", "redis://127.0.0.1:1/0")
    for args in (["farm", "submit", BUG], ["farm", "status"], ["worker"]):
        p = cli(*args, check=False)
        assert p.returncode == 2 and "cannot reach Redis at redis://127.0.0.1:1/0" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    with db.open_db(farm["PATCHFUZZ_DB"]) as d:
        assert db.list_campaigns(d) == []


def test_unreachable_database_is_one_line(farm, monkeypatch):
    monkeypatch.setenv("PATCHFUZZ_DB", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    for args in (["farm", "submit", BUG], ["farm", "status"], ["worker"]):
        p = cli(*args, check=False)
        assert p.returncode == 2 and "cannot connect to postgresql+psycopg://postgres@127.0.0.1:1/nowhere" in p.stderr
        assert "set PATCHFUZZ_DB" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    conn = redis.Redis.from_url(farm["PATCHFUZZ_REDIS"])
    assert Queue(farm["PATCHFUZZ_QUEUE"], connection=conn, serializer=JSONSerializer).count == 0  # nothing enqueued


def test_jobs_are_time_boxed_and_retried(farm):
    sub = coordinator.submit(BUG, jobs=2, job_seconds=45, settings=FarmSettings())
    conn = redis.Redis.from_url(farm["PATCHFUZZ_REDIS"])
    q = Queue(farm["PATCHFUZZ_QUEUE"], connection=conn, serializer=JSONSerializer)
    for jid in sub.jobs:
        with db.open_db(farm["PATCHFUZZ_DB"]) as d:
            token = db.farm_token(d)
        job = q.fetch_job(coordinator.rq_id(token, jid))
        assert job.func_name == "workers.jobs.run_job" and job.args == [jid, token] and job.kwargs == {}
        assert job.timeout == 45 + coordinator.JOB_OVERHEAD  # RQ kills the work horse after that
        assert job.retries_left == coordinator.RETRIES
        # the payload is JSON carrying nothing but the job id and its database's farm token
        assert json.loads(zlib.decompress(conn.hget(job.key, "data"))) == ["workers.jobs.run_job", None,
                                                                           [jid, token], {}]


def test_a_worker_on_another_database_refuses_the_job_untouched(farm, pg, monkeypatch):
    sub = coordinator.submit(BUG, jobs=1, job_seconds=5, settings=FarmSettings())
    other = pg.new_database()
    monkeypatch.setenv("PATCHFUZZ_DB", other)  # a worker misconfigured on the same Redis queue
    _burst(farm["PATCHFUZZ_REDIS"], farm["PATCHFUZZ_QUEUE"])
    conn = redis.Redis.from_url(farm["PATCHFUZZ_REDIS"])
    with db.open_db(farm["PATCHFUZZ_DB"]) as d:
        rid = coordinator.rq_id(db.farm_token(d), sub.jobs[0])
        assert db.get_job(d, sub.jobs[0])["attempts"] == 0  # its own database: untouched
    job = Queue(farm["PATCHFUZZ_QUEUE"], connection=conn, serializer=JSONSerializer).fetch_job(rid)
    assert "was submitted to another database" in job.latest_result().exc_string
    with db.open_db(other) as d:
        assert db.list_campaigns(d) == [] and db.list_buckets(d) == []


def test_status_enqueues_again_the_jobs_a_restarted_redis_forgot(farm):
    sub = coordinator.submit(BUG, jobs=3, job_seconds=5, settings=FarmSettings())
    conn = redis.Redis.from_url(farm["PATCHFUZZ_REDIS"])
    conn.flushdb()  # a Redis without persistence restarted: the queue is gone
    q = Queue(farm["PATCHFUZZ_QUEUE"], connection=conn, serializer=JSONSerializer)
    assert q.count == 0
    st = json.loads(cli("farm", "status", "--json").stdout)
    assert q.count == 3 and st["campaigns"][0]["jobs"] == {"queued": 3}
    _burst(farm["PATCHFUZZ_REDIS"], farm["PATCHFUZZ_QUEUE"])  # and they run
    with db.open_db(farm["PATCHFUZZ_DB"]) as d:
        assert db.get_campaign(d, sub.campaign)["status"] == "finished"
