"""The test servers are the run's own: started from the machine's binaries on free ports, in
private directories, never the machine's shared servers on 5432 and 6379; a second run at the
same time gets servers of its own; a missing binary fails in one line, never skips."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from .services import (
    PG_HINT,
    STANDARD_PORTS,
    PrivatePostgres,
    ServiceError,
    find_pg_ctl,
    postgres_os_user,
)

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL_PG = os.environ.get("PATCHFUZZ_TEST_PG_ADMIN")
EXTERNAL_REDIS = os.environ.get("PATCHFUZZ_TEST_REDIS")


def test_postgres_is_the_runs_own_server(pg):
    if EXTERNAL_PG:  # opted in: the external server is used as given
        assert pg.server is None and pg.admin.url == make_url(EXTERNAL_PG)
        return
    url = make_url(pg.new_database())
    assert url.host == "127.0.0.1" and url.port == pg.server.port != STANDARD_PORTS["postgresql"]
    with create_engine(url).connect() as conn:  # a real TCP server, reachable by other processes
        assert conn.execute(text("SHOW port")).scalar() == str(pg.server.port)
        data_directory = conn.execute(text("SHOW data_directory")).scalar()
    assert Path(data_directory) == pg.server.datadir and pg.server.datadir.is_relative_to(pg.server.dir)
    if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster belongs to the postgres user
        assert pg.server.datadir.stat().st_uid == postgres_os_user(0).pw_uid


def test_redis_is_the_runs_own_server(redis_url, tmp_path_factory):
    if EXTERNAL_REDIS:
        assert redis_url == EXTERNAL_REDIS
        return
    conn = redis.Redis.from_url(redis_url)
    try:
        assert conn.connection_pool.connection_kwargs["port"] != STANDARD_PORTS["redis"]
        assert int(conn.config_get("port")["port"]) == conn.connection_pool.connection_kwargs["port"]
        # its directory is under this run's base temp, and it keeps nothing on disk
        assert Path(conn.config_get("dir")["dir"]).is_relative_to(tmp_path_factory.getbasetemp())
        assert conn.config_get("save")["save"] == "" and conn.config_get("timeout")["timeout"] == "0"
    finally:
        conn.close()


def test_the_postgres_server_restarts_on_its_port(pg):
    if EXTERNAL_PG:
        pytest.fail("this test restarts the tests' own PostgreSQL: unset PATCHFUZZ_TEST_PG_ADMIN", pytrace=False)
    url = pg.new_database()
    engine = create_engine(url, pool_pre_ping=True)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT pg_postmaster_start_time()")).scalar()
    pg.restart()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_postmaster_start_time()")).scalar() > before
    engine.dispose()


def _pytest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # addopts emptied: the project's own -q plus this one would hide the "N passed" line
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-q",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_second_run_at_the_same_time_gets_servers_of_its_own(pg, redis_url):
    """This run's servers are up; another run's tests of the same kind pass on servers of its own
    (a shared server would fail their data-directory and port checks)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHFUZZ_TEST_")}
    p = _pytest("tests/test_services.py", "-k", "runs_own_server", env=env)
    assert p.returncode == 0 and "2 passed" in p.stdout, p.stdout + p.stderr


def test_a_missing_redis_server_fails_in_one_line(tmp_path):
    # PATH without redis-server (and nothing else of the machine's)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHFUZZ_TEST_")}
    env["PATH"] = str(bindir)
    # -rN: the short summary repeats the message when the terminal is wide enough (CI's is)
    p = _pytest("tests/test_services.py", "-rN", "-k", "redis_is_the_runs_own_server", env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "skipped" not in out, out
    line = ("redis-server not found: the tests start their own server from it; install Debian's "
            "redis-server package (apt-get install redis-server)")
    assert out.count(line) == 1 and "Traceback" not in out, out


def test_pg_ctl_is_found_off_path_in_debians_layout(tmp_path):
    for version in ("9.6", "13", "15"):
        exe = tmp_path / version / "bin" / "pg_ctl"
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    assert find_pg_ctl(path="", roots=(str(tmp_path),)) == str(tmp_path / "15" / "bin" / "pg_ctl")
    assert find_pg_ctl(path="", roots=(str(tmp_path / "none"),)) is None


def test_a_missing_pg_ctl_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr("tests.services.find_pg_ctl", lambda: None)
    with pytest.raises(ServiceError) as err:
        PrivatePostgres()
    assert str(err.value) == f"pg_ctl not found: the tests start their own server from it; {PG_HINT}"


def test_as_root_postgres_needs_an_unprivileged_user():
    assert postgres_os_user(1000) is None  # an ordinary user runs PostgreSQL itself
    with pytest.raises(ServiceError) as err:
        postgres_os_user(0, "patchfuzz-no-such-user")
    assert str(err.value).startswith("PostgreSQL refuses to run as root and there is no "
                                     "'patchfuzz-no-such-user' user to run it as: install Debian's postgresql")
