"""Shared fixtures: PostgreSQL and Redis servers of the run's own (tests/services.py), started
from the machine's binaries on free ports. Never skipped: a server that cannot start fails the
tests that need it, with one line saying what to install.

PATCHFUZZ_TEST_PG_ADMIN (a superuser's SQLAlchemy URL) and PATCHFUZZ_TEST_REDIS (a Redis URL
whose database the tests empty) opt in to external servers instead.
"""

from __future__ import annotations

import os
from itertools import count

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from .services import PrivatePostgres, PrivateRedis, ServiceError

EXTERNAL_PG = os.environ.get("PATCHFUZZ_TEST_PG_ADMIN")
EXTERNAL_REDIS = os.environ.get("PATCHFUZZ_TEST_REDIS")


def _start_or_fail(start):
    """The started server, or the test fails with the one line that says why (no traceback)."""
    try:
        return start()
    except ServiceError as e:
        error = str(e)
    pytest.fail(error, pytrace=False)  # outside the except: no "during handling ..." chain


class PgServer:
    """Creates throw-away databases on the test server; drops them all at the end."""

    def __init__(self, admin_url: str, server: PrivatePostgres | None = None) -> None:
        self.server = server  # None: an external server (PATCHFUZZ_TEST_PG_ADMIN)
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True,
                                   connect_args={"connect_timeout": 5})
        self.names: list[str] = []
        self._seq = count()

    def new_database(self) -> str:
        name = f"patchfuzz_test_{os.getpid()}_{next(self._seq)}"
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return self.admin.url.set(database=name).render_as_string(hide_password=False)

    def restart(self) -> None:
        """Restart the server under its clients (only the run's own server can be restarted)."""
        if self.server is None:
            pytest.fail("restarting PostgreSQL needs the tests' own server: unset PATCHFUZZ_TEST_PG_ADMIN",
                        pytrace=False)
        self.server.restart()

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg() -> PgServer:
    server = None
    if EXTERNAL_PG is None:
        server = _start_or_fail(lambda: PrivatePostgres().start())
    pg_server = PgServer(EXTERNAL_PG or server.admin_url, server)
    try:
        with pg_server.admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except sa_exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if server is not None:
            server.stop()
        pytest.fail(f"PostgreSQL is unreachable at {pg_server.admin.url} ({reason})", pytrace=False)
    try:
        yield pg_server
    finally:
        if server is None:  # an external server keeps running: drop what the tests created
            pg_server.drop_all()
        else:  # the tests' own cluster goes away whole
            pg_server.admin.dispose()
            server.stop()


@pytest.fixture(scope="session")
def pg_url(pg: PgServer) -> str:
    """One database for the session's ordinary tests, emptied before each of them."""
    return pg.new_database()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> str:
    """The URL of the run's own Redis (database 0), or of PATCHFUZZ_TEST_REDIS."""
    if EXTERNAL_REDIS is not None:
        yield EXTERNAL_REDIS
        return
    server = _start_or_fail(lambda: PrivateRedis(tmp_path_factory.mktemp("redis")).start())
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The test server's database, emptied before each test."""
    import redis

    conn = redis.Redis.from_url(redis_server, socket_connect_timeout=5)
    try:
        conn.flushdb()
    except redis.exceptions.ConnectionError as e:
        pytest.fail(f"Redis is unreachable at {redis_server} ({e})", pytrace=False)
    finally:
        conn.close()
    return redis_server
