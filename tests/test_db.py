"""The crash database on both SQLite and the real PostgreSQL server.

PostgreSQL is required, never skipped: the farm stores crashes there, and the traps that matter
(duplicate conflict keys in one statement, concurrent upserts, time zones) differ between the
two. Each test session creates its own databases on the server and drops them at the end.
"""

from __future__ import annotations

import multiprocessing
import os
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

import db
from db.engine import VERSION_TABLE, alembic_config, current_revision, head_revision, resolve_url
from db.models import VIEWS, Base

TABLES = ("campaigns", "jobs", "job_findings", "farm_identity", "crash_buckets", "crash_samples", "corpus_entries",
          "regression_runs")


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crashes.db'}"
    pg_url = request.getfixturevalue("pg_url")
    with db.open_db(pg_url) as d, d.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    return pg_url


@pytest.fixture
def database(url: str):
    d = db.open_db(url)
    yield d
    d.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path) -> str:
    """A database never opened before (no schema at all)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("pg").new_database()


def finding(signature: str = "sig-a", schedule: bytes = b"\x01\x02\x03", **over) -> dict:
    f = dict(signature=signature, protocol="x86/text_poke_bp", variant="no-final-sync",
             oracle="fetch", title="torn fetch of a patched site", schedule=schedule, schedule_format=1,
             engine_version="0.1.0", config={"cpus": 2}, trace_sha256="ab" * 32,
             detail="cpu1 fetched cc db ff at 0x1000", consequence=["invalid opcode"])
    f.update(over)
    return f


# ---------------------------------------------------------------------------------------------
# Buckets and samples


def test_same_signature_twice_is_one_bucket_best_is_shorter(database):
    long_, short = bytes(range(40)), bytes(range(7))
    bid, new = db.store_finding(database, **finding(schedule=long_))
    assert new
    first = db.get_bucket(database, bid)
    bid2, new2 = db.store_finding(database, **finding(schedule=short))
    assert (bid2, new2) == (bid, False)

    b = db.get_bucket(database, bid)
    assert len(db.list_buckets(database)) == 1
    assert b["count"] == 2 and b["sample_count"] == 2
    assert b["first_seen"] == first["first_seen"]
    assert b["last_seen"] > first["last_seen"]
    assert b["best_sample"]["schedule"] == short and b["best_sample"]["schedule_len"] == 7
    assert b["status"] == "new" and b["minimized"] is False
    assert b["best_sample"]["config"] == {"cpus": 2}
    assert b["best_sample"]["consequence"] == ["invalid opcode"]


def test_best_sample_stays_shorter_older_on_ties(database):
    short, long_ = b"\x05" * 3, b"\x06" * 30
    bid, _ = db.store_finding(database, **finding(schedule=short))
    best_id = db.get_bucket(database, bid)["best_sample_id"]
    db.store_finding(database, **finding(schedule=long_))
    db.store_finding(database, **finding(schedule=b"\x07" * 3))  # same length: the older one stays
    b = db.get_bucket(database, bid)
    assert b["count"] == 3 and b["sample_count"] == 3
    assert b["best_sample_id"] == best_id and b["best_sample"]["schedule"] == short
    assert [s["schedule"] for s in db.list_samples(database, bid)] == [short, b"\x07" * 3, long_]


def test_timestamps_are_aware_utc(database):
    paris = timezone(timedelta(hours=1))
    seen = datetime(2024, 3, 1, 13, 30, 0, 123456, tzinfo=paris)
    bid, _ = db.store_finding(database, **finding(), seen=seen)
    b = db.get_bucket(database, bid)
    for value in (b["first_seen"], b["last_seen"], b["best_sample"]["created"]):
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
        assert value == seen
    assert b["first_seen"] == datetime(2024, 3, 1, 12, 30, 0, 123456, tzinfo=UTC)


def test_batch_dedupes_signatures(database):
    # Postgres refuses one INSERT .. ON CONFLICT that touches the same key twice.
    batch = [finding("sig-a", b"a" * 9), finding("sig-b", b"b" * 4), finding("sig-a", b"a" * 2),
             finding("sig-a", b"a" * 5, hits=3)]
    got = db.store_findings_batch(database, batch, campaign_id=None)
    assert set(got) == {"sig-a", "sig-b"} and all(new for _, new in got.values())
    a = db.get_bucket(database, got["sig-a"][0])
    assert a["count"] == 5 and a["sample_count"] == 3 and a["best_sample"]["schedule"] == b"aa"

    again = db.store_findings_batch(database, [finding("sig-b", b"b"), finding("sig-c")])
    assert again["sig-b"] == (got["sig-b"][0], False) and again["sig-c"][1] is True
    b = db.get_bucket(database, got["sig-b"][0])
    assert b["count"] == 2 and b["best_sample"]["schedule"] == b"b"
    assert db.store_findings_batch(database, []) == {}


def test_bad_findings_are_refused(database):
    with pytest.raises(TypeError, match="missing title"):
        db.store_findings_batch(database, [{k: v for k, v in finding().items() if k != "title"}])
    with pytest.raises(TypeError, match="unknown colour"):
        db.store_findings_batch(database, [finding(colour="red")])
    with pytest.raises(TypeError, match="bytes"):
        db.store_finding(database, **finding(schedule="0102"))
    assert db.list_buckets(database) == []


def _store_many(url: str, barrier, results, n: int) -> None:
    d = db.open_db(url)  # concurrent first opens: the migration must run once
    barrier.wait()
    flags = [db.store_finding(d, **finding("sig-hot", bytes([os.getpid() % 251]) * (5 + i)))[1]
             for i in range(n)]
    d.close()
    results.put(flags)


def test_concurrent_writers(fresh_url):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_store_many, args=(fresh_url, barrier, results, 25)) for _ in range(4)]
    for p in procs:
        p.start()
    flags = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sum(f.count(True) for f in flags) == 1  # exactly one writer created the bucket
    with db.open_db(fresh_url) as d:
        (bucket,) = db.list_buckets(d)
        assert bucket["count"] == 100
        b = db.get_bucket(d, bucket["id"])
        assert b["sample_count"] == 100 and b["best_sample"]["schedule_len"] == 5


# ---------------------------------------------------------------------------------------------
# Triage


def test_list_filters(database):
    now = datetime.now(UTC)
    old = now - timedelta(days=10)
    a, _ = db.store_finding(database, **finding("a", protocol="x86/text_poke_bp", oracle="fetch"), seen=old)
    b, _ = db.store_finding(database, **finding("b", protocol="x86/text_poke_bp", oracle="stale"))
    c, _ = db.store_finding(database, **finding("c", protocol="arm64/aarch64_insn_patch", oracle="fetch"))
    db.mark(database, c, "fixed")

    ids = lambda rows: [r["id"] for r in rows]  # noqa: E731
    assert ids(db.list_buckets(database)) == [c, b, a]  # last seen first
    assert ids(db.list_buckets(database, protocol="x86/text_poke_bp")) == [b, a]
    assert ids(db.list_buckets(database, oracle="fetch")) == [c, a]
    assert ids(db.list_buckets(database, status="fixed")) == [c]
    assert ids(db.list_buckets(database, status=["new", "duplicate"])) == [b, a]
    assert ids(db.list_buckets(database, since=now - timedelta(days=1))) == [c, b]
    naive = (now - timedelta(days=1)).replace(tzinfo=None)  # taken as UTC
    assert ids(db.list_buckets(database, since=naive)) == [c, b]
    assert ids(db.list_buckets(database, protocol="x86/text_poke_bp", oracle="fetch", status="new")) == [a]
    assert db.list_buckets(database, protocol="nope") == []
    assert db.list_buckets(database, variant="no-final-sync")[0]["best_schedule_len"] == 3
    with pytest.raises(ValueError, match="unknown status"):
        db.list_buckets(database, status="wontfix")


def test_mark_and_not_found(database):
    bid, _ = db.store_finding(database, **finding())
    db.mark(database, bid, "duplicate", "same as #12")
    assert (db.get_bucket(database, bid)["status"], db.get_bucket(database, bid)["note"]) == (
        "duplicate", "same as #12")
    db.mark(database, bid, "fixed")  # no note: the old one stays
    assert db.get_bucket(database, bid)["note"] == "same as #12"
    with pytest.raises(ValueError, match="unknown status 'wontfix'"):
        db.mark(database, bid, "wontfix")
    for call in (lambda: db.mark(database, 987654, "fixed"), lambda: db.get_bucket(database, 987654),
                 lambda: db.set_minimized(database, 987654, b"x", None),
                 lambda: db.list_samples(database, 987654)):
        with pytest.raises(db.NotFound, match="no crash bucket with id 987654"):
            call()
    with pytest.raises(db.NotFound):
        db.get_sample(database, 987654)


def test_set_minimized(database):
    bid, _ = db.store_finding(database, **finding(schedule=b"z" * 20))
    sid = db.set_minimized(database, bid, b"z" * 4, "cd" * 32)
    b = db.get_bucket(database, bid)
    assert b["minimized"] is True and b["best_sample_id"] == sid and b["count"] == 1
    best = b["best_sample"]
    assert best["schedule"] == b"z" * 4 and best["minimized"] is True and best["trace_sha256"] == "cd" * 32
    assert best["config"] == {"cpus": 2} and best["detail"] == finding()["detail"]
    db.store_finding(database, **finding(schedule=b"z" * 10))  # longer: the minimized one stays best
    assert db.get_bucket(database, bid)["best_sample_id"] == sid
    db.store_finding(database, **finding(schedule=b"z"))  # fewer bytes but raw: the minimized one stays
    b = db.get_bucket(database, bid)
    assert b["best_sample_id"] == sid and b["minimized"] is True


# ---------------------------------------------------------------------------------------------
# Corpus, campaigns, regression runs


def test_corpus_dedup(database):
    assert db.add_corpus_entries(database, "x86/text_poke_bp", "v1", [b"a", b"b", b"a"]) == 2
    assert db.add_corpus_entries(database, "x86/text_poke_bp", "v1", [b"a", b"c"]) == 1
    assert db.add_corpus_entries(database, "x86/text_poke_bp", "v1", []) == 0
    assert db.add_corpus_entries(database, "x86/text_poke_bp", "v2", [b"a"]) == 1  # per variant
    assert db.corpus_entries(database, "x86/text_poke_bp", "v1") == [b"a", b"b", b"c"]
    assert db.corpus_entries(database, "x86/text_poke_bp", "v2") == [b"a"]
    many = [i.to_bytes(3, "big") for i in range(450)]  # more than one statement's worth
    assert db.add_corpus_entries(database, "p", "v", many + many) == 450
    assert db.corpus_entries(database, "p", "v") == many


def test_campaigns_jobs_and_regression_runs(database):
    cid = db.create_campaign(database, protocol="x86/text_poke_bp", variant="v", strategy="pct",
                             config={"seconds": 20})
    jid = db.create_job(database, cid, seed=2**40, budget=60.0)
    db.start_job(database, jid, "worker-1")
    db.store_finding(database, **finding(), campaign_id=cid, job_id=jid)
    db.finish_job(database, jid, schedules_run=1000)
    db.finish_campaign(database, cid, schedules_run=1000, seconds=20.5, coverage=321, findings=1,
                       unique_findings=1, new_buckets=1, stats={"corpus": 3})
    c, j = db.get_campaign(database, cid), db.get_job(database, jid)
    assert c["status"] == "finished" and c["coverage"] == 321 and c["finished"] >= c["created"]
    assert j["state"] == "finished" and j["worker"] == "worker-1" and j["seed"] == 2**40
    sample = db.get_bucket(database, db.list_buckets(database)[0]["id"])["best_sample"]
    assert (sample["campaign_id"], sample["job_id"]) == (cid, jid)
    with pytest.raises(db.NotFound):
        db.create_job(database, 987654, seed=1, budget=1)

    rid = db.record_regression_run(database, source="nightly", total=10, passed=8, regressions=1,
                                   errors=1, details={"regressed": ["sig-a"]})
    (run,) = db.list_regression_runs(database)
    assert run["id"] == rid and run["regressions"] == 1 and run["details"] == {"regressed": ["sig-a"]}


# ---------------------------------------------------------------------------------------------
# Views


def test_views(database):
    now = datetime.now(UTC)
    old = now - timedelta(days=10)
    a, _ = db.store_finding(database, **finding("a"), seen=old)
    db.store_finding(database, **finding("a"))
    b, _ = db.store_finding(database, **finding("b", variant="other"))
    c, _ = db.store_finding(database, **finding("c"))
    d, _ = db.store_finding(database, **finding("d"))
    db.mark(database, c, "fixed")
    db.mark(database, d, "invalid")
    with database.session() as s:
        per_day = {(r.protocol, r.variant, str(r.day)): r.samples
                   for r in s.execute(text("SELECT * FROM crashes_per_protocol_per_day"))}
        week = {r.id for r in s.execute(text("SELECT * FROM new_buckets_this_week"))}
        live = {r.id: (r.status, r.count)
                for r in s.execute(text("SELECT * FROM buckets_still_reproducing"))}
    proto = "x86/text_poke_bp"
    assert per_day == {(proto, "no-final-sync", old.date().isoformat()): 1,
                       (proto, "no-final-sync", now.date().isoformat()): 3,
                       (proto, "other", now.date().isoformat()): 1}
    assert week == {b, c, d}
    assert live == {a: ("new", 2), b: ("new", 1)}


# ---------------------------------------------------------------------------------------------
# Migrations


def _schema(engine) -> tuple[set[str], set[str]]:
    insp = inspect(engine)
    return set(insp.get_table_names()), set(insp.get_view_names())


def test_open_twice_is_a_noop_and_models_match_migrations(fresh_url):
    with db.open_db(fresh_url) as d:
        bid, _ = db.store_finding(d, **finding())
        assert current_revision(d) == head_revision()
        with d.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
            assert compare_metadata(ctx, Base.metadata) == []
    with db.open_db(fresh_url) as d:
        assert current_revision(d) == head_revision()
        assert db.get_bucket(d, bid)["count"] == 1
        tables, views = _schema(d.engine)
        assert tables == set(TABLES) | {VERSION_TABLE} and views == set(VIEWS)


def test_downgrade_base_and_upgrade_head(fresh_url):
    with db.open_db(fresh_url) as d:
        db.store_finding(d, **finding())
        db.add_corpus_entries(d, "p", "v", [b"x"])
        with d.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert _schema(d.engine) == ({VERSION_TABLE}, set())
        assert current_revision(d) is None
        with d.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        assert _schema(d.engine) == (set(TABLES) | {VERSION_TABLE}, set(VIEWS))
        assert db.list_buckets(d) == []
        bid, new = db.store_finding(d, **finding())
        assert new and db.get_bucket(d, bid)["count"] == 1


def test_unknown_schema_revision_is_refused(fresh_url):
    with db.open_db(fresh_url) as d, d.engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(db.DatabaseError) as err:
        db.open_db(fresh_url)
    assert "revision 9999" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# Unusable databases


def _one_line(err: BaseException) -> str:
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg and "sqlalche.me" not in msg
    return msg


def test_unreachable_server():
    with pytest.raises(db.DatabaseError) as err:
        db.open_db("postgresql+psycopg://postgres@127.0.0.1:1/x")
    msg = _one_line(err.value)
    assert msg.startswith("cannot connect to postgresql+psycopg://postgres@127.0.0.1:1/x: connection refused")
    assert "PATCHFUZZ_DB" in msg

    with pytest.raises(db.DatabaseError) as err:
        db.open_db("postgresql://postgres:hunter2@127.0.0.1:1/x")
    msg = _one_line(err.value)
    assert "hunter2" not in msg and "postgres:***@127.0.0.1:1/x" in msg


def test_missing_postgres_database(pg):
    url = pg.admin.url.set(database="patchfuzz_no_such_db").render_as_string(hide_password=False)
    with pytest.raises(db.DatabaseError) as err:
        db.open_db(url)
    assert "'patchfuzz_no_such_db' does not exist" in _one_line(err.value)


@pytest.mark.parametrize("content", [b"this is not a database at all\n" * 100,
                                     b"SQLite format 3\x00" + bytes(range(256)) * 20])
def test_corrupt_sqlite_file_is_refused_and_kept(tmp_path, content):
    path = tmp_path / "crashes.db"
    path.write_bytes(content)
    with pytest.raises(db.DatabaseError) as err:
        db.open_db(str(path))
    msg = _one_line(err.value)
    assert str(path) in msg and "not a SQLite database" in msg and "left untouched" in msg
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crashes.db"]


def test_sqlite_other_unusable_paths(tmp_path):
    with pytest.raises(db.DatabaseError, match="does not exist"):
        db.open_db(str(tmp_path / "missing" / "x.db"))
    with pytest.raises(db.DatabaseError, match="is a directory"):
        db.open_db(str(tmp_path))
    with pytest.raises(db.DatabaseError, match="unsupported database"):
        db.open_db("mysql://u:secret@localhost/x")


def test_resolve_url(monkeypatch, tmp_path):
    monkeypatch.delenv("PATCHFUZZ_DB", raising=False)
    assert resolve_url(None) == "sqlite:///patchfuzz.db"
    monkeypatch.setenv("PATCHFUZZ_DB", "postgres://u@h/db")
    assert resolve_url(None) == "postgresql+psycopg://u@h/db"
    assert resolve_url("foo.db") == "sqlite:///foo.db"
    assert resolve_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path}/a.db"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setenv("PATCHFUZZ_DB", "")
    assert resolve_url("") == "sqlite:///patchfuzz.db"


def test_default_database_is_in_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("PATCHFUZZ_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    with db.open_db() as d:
        db.store_finding(d, **finding())
    assert (tmp_path / "patchfuzz.db").exists()


def test_usable_in_a_forked_child(database):
    # rq's forking worker: a child must not talk over the parent's pooled connections.
    bid, _ = db.store_finding(database, **finding())
    with database.engine.connect() as conn:
        parent_conn = id(conn.connection.dbapi_connection)  # same address in the child's copy
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with database.engine.connect() as conn:
                code = 3 if id(conn.connection.dbapi_connection) == parent_conn else 0
            db.store_finding(database, **finding())
            code = code or (0 if db.get_bucket(database, bid)["count"] == 2 else 2)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    db.store_finding(database, **finding())
    assert db.get_bucket(database, bid)["count"] == 3
