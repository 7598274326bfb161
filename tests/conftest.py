"""Shared fixtures: the real PostgreSQL and Redis servers of this machine (never skipped: CI
must fail when a service is missing)."""

from __future__ import annotations

import os
from itertools import count

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

ADMIN_URL = os.environ.get("PATCHFUZZ_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PATCHFUZZ_TEST_REDIS", "redis://127.0.0.1:6379/13")


class PgServer:
    """Creates throw-away databases on the test server; drops them all at the end."""

    def __init__(self) -> None:
        self.admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True,
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

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg() -> PgServer:
    server = PgServer()
    try:
        with server.admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except sa_exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        pytest.fail(f"PostgreSQL is required by the db tests and is unreachable at {ADMIN_URL} ({reason}); "
                    f"start it (trust auth for user postgres, database 'test') or set "
                    f"PATCHFUZZ_TEST_PG_ADMIN", pytrace=False)
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def pg_url(pg: PgServer) -> str:
    """One database for the session's ordinary tests, emptied before each of them."""
    return pg.new_database()


@pytest.fixture
def redis_url() -> str:
    """A Redis database of its own (index 13 by default), emptied before each test."""
    import redis

    conn = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        conn.flushdb()
    except redis.exceptions.ConnectionError as e:
        pytest.fail(f"Redis is required by the farm tests and is unreachable at {REDIS_URL} ({e}); start "
                    f"it or set PATCHFUZZ_TEST_REDIS", pytrace=False)
    finally:
        conn.close()
    return REDIS_URL
