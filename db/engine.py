"""Opening the crash database: URL resolution, engine set-up, migrations, sessions, errors.

    db = open_db(None)            # --db, else $PATCHFUZZ_DB, else ./patchfuzz.db
    with db.session() as s: ...   # one transaction, committed on success

Every way the database can be unusable (no server, wrong password, no such database, a file
that is not SQLite, a schema newer than this code) ends in one `DatabaseError` whose message is
one line naming the database (password masked), what is wrong, and what to do.
"""

from __future__ import annotations

import os
import re
import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from .errors import DatabaseError
from .models import Base

ENV_VAR = "PATCHFUZZ_DB"
DEFAULT_URL = "sqlite:///patchfuzz.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Our own name, so a Postgres database shared with another Alembic project stays usable.
VERSION_TABLE = "patchfuzz_schema_version"
HINT = "set --db or PATCHFUZZ_DB"
SQLITE_HEADER = b"SQLite format 3\x00"
SQLITE_BUSY_MS = 30_000  # writers queue behind each other rather than fail
PG_CONNECT_TIMEOUT_S = 10  # a firewalled host would otherwise hang for minutes
# Any fixed number: serializes concurrent first opens of one Postgres database (several workers).
PG_MIGRATION_LOCK = 0x7061_7463_6866_757A  # "patchfuz"


def resolve_url(url: str | None = None) -> str:
    """Explicit URL > $PATCHFUZZ_DB > sqlite:///patchfuzz.db (current directory).

    A bare path (`foo.db`, `~/crashes.db`) means a SQLite file; `postgres://` and `postgresql://`
    mean psycopg 3, the only Postgres driver we install."""
    url = (url or "").strip() or os.environ.get(ENV_VAR, "").strip() or DEFAULT_URL
    if "\0" in url:  # no file or server name holds one; the OS would refuse it with a ValueError
        raise DatabaseError(f"invalid database URL {mask_url(url)!r}: it contains a NUL byte; {HINT}")
    if url == ":memory:":
        return "sqlite://"
    if "://" not in url:
        return "sqlite:///" + os.path.expanduser(url)
    scheme, rest = url.split("://", 1)
    if scheme in ("postgres", "postgresql", "postgresql+psycopg2"):
        return "postgresql+psycopg://" + rest
    return url


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database or an in-memory one."""
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        return None
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    parsed = None
    try:
        parsed = make_url(url)
        rendered = parsed.render_as_string(hide_password=True)
        # SQLite URLs hold no secrets; show the path as typed rather than %-escaped.
        return unquote(rendered) if parsed.get_backend_name() == "sqlite" else rendered
    except Exception:  # noqa: BLE001 - unparsable, or unrenderable (undecodable bytes from argv)
        text = str(url)
    password = parsed.password if parsed is not None else None
    if password:  # where the parser found it, as typed or %-escaped
        for form in {str(password), quote(str(password), safe="", errors="surrogateescape")}:
            text = text.replace(f":{form}@", ":***@")
        return text
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", text)  # anything that looks like user:pass@


_OPEN: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked child (rq's forking worker) must not talk over its parent's pooled connections:
    # drop them without closing, so the parent's stay usable, and let the child open its own.
    for database in list(_OPEN):
        database.engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


class Database:
    """An opened, migrated database: the engine and a session factory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect: str = engine.dialect.name
        self.url: str = mask_url(engine.url)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        _OPEN.add(self)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.

        Lost connections and lock time-outs come out as DatabaseError; other errors (our bugs,
        constraint violations) pass through unchanged."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
                session.rollback()
                raise DatabaseError(_explain(exc, self.url, opening=False), exc) from None
            except sa_exc.DatabaseError as exc:
                session.rollback()
                if _is_corruption(exc):  # a page went bad after the open-time check
                    raise DatabaseError(_explain(exc, self.url, opening=False), exc) from None
                raise
            except BaseException:
                session.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.url})"


def open_db(url: str | None = None, *, migrate: bool = True) -> Database:
    """Open the database (see resolve_url) and bring its schema to the newest revision.

    Re-opening an up-to-date database changes nothing. Raises DatabaseError if it cannot be
    reached or used."""
    resolved = resolve_url(url)
    masked = mask_url(resolved)
    engine = make_engine(resolved)
    try:
        _refuse_corrupt_sqlite(engine)
        if migrate:
            _migrate(engine)
        else:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
    except DatabaseError:
        engine.dispose()
        raise
    except (sa_exc.DBAPIError, sqlite3.Error, CommandError) as exc:
        engine.dispose()
        message = _explain(exc, masked, opening=True)
        # Drivers do not echo passwords today; make sure a future one cannot leak it here.
        password = engine.url.password
        if password and len(str(password)) >= 4:
            message = message.replace(str(password), "***")
        raise DatabaseError(message, exc) from None
    return Database(engine)


def make_engine(url: str) -> Engine:
    """An engine with our connection settings; does not connect yet."""
    masked = mask_url(url)
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        raise DatabaseError(f"invalid database URL {masked!r}: expected sqlite:///FILE or "
                            f"postgresql+psycopg://USER@HOST/DB; {HINT}") from None
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            _check_sqlite_file(parsed, masked)
            engine = create_engine(parsed)
            _sqlite_settings(engine)
            return engine
        if backend == "postgresql":
            if parsed.get_driver_name() != "psycopg":
                parsed = parsed.set(drivername="postgresql+psycopg")
            connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
            return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except (sa_exc.ArgumentError, ValueError, TypeError) as e:
        # the dialect checks the URL's parts only here (`sqlite://t`: a host where a file belongs)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatabaseError(f"invalid database URL {masked!r} ({reason}): expected sqlite:///FILE or "
                            f"postgresql+psycopg://USER@HOST/DB; {HINT}") from None
    raise DatabaseError(f"unsupported database {masked!r}: patchfuzz stores crashes in SQLite "
                        f"(sqlite:///FILE) or PostgreSQL (postgresql+psycopg://...); {HINT}")


def alembic_config(connection=None) -> Config:
    """Alembic configuration built in code: no alembic.ini is needed or read."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def _migrate(engine: Engine) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Held to the end of this transaction; Postgres DDL is transactional, so a second
            # worker waits here and then finds the schema already at head.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _signed64(PG_MIGRATION_LOCK)})
        _refuse_foreign_schema(conn)
        command.upgrade(alembic_config(conn), "head")


def _refuse_foreign_schema(conn) -> None:
    tables = set(inspect(conn).get_table_names())
    ours = tables & set(Base.metadata.tables)
    if ours and VERSION_TABLE not in tables:
        raise DatabaseError(
            f"{mask_url(conn.engine.url)} already has tables named like ours ({', '.join(sorted(ours))}) "
            f"but no {VERSION_TABLE} table, so it was not made by patchfuzz; it was left untouched: "
            f"use another database ({HINT})")


def _signed64(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def _check_sqlite_file(url: URL, masked: str) -> None:
    """Refuse, before SQLite touches it, a file that is not a SQLite database, so it is never
    overwritten; and say plainly when its directory is missing."""
    path = url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    p = Path(path)
    try:  # a name too long for the file system, a component that is a file, no permission
        if p.is_dir():
            raise DatabaseError(f"cannot open {masked}: {path} is a directory; give a file name ({HINT})")
        if not p.parent.exists():
            raise DatabaseError(f"cannot open {masked}: directory {p.parent} does not exist; create it "
                                f"or {HINT}")
        if not (p.exists() and p.stat().st_size > 0):
            return
        with p.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise DatabaseError(f"cannot open {masked}: {exc.strerror}; {HINT}") from None
    if header != SQLITE_HEADER:
        raise DatabaseError(f"cannot open {masked}: {path} is not a SQLite database (corrupt or "
                            f"another kind of file); it was left untouched: move it away or {HINT}")


def _refuse_corrupt_sqlite(engine: Engine) -> None:
    """A SQLite file with a bad page answers some queries and fails others, so a campaign could
    run for an hour and then lose what it found at its first write, and a listing could quietly
    miss rows: check every page before anything reads or writes (quick_check reads the whole
    file once, a few milliseconds per megabyte)."""
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    with engine.connect() as conn:
        problems = [row[0] for row in conn.exec_driver_sql("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise DatabaseError(f"cannot open {mask_url(engine.url)}: the database file is corrupt "
                            f"({_one_line(problems[0])}); it was left untouched: restore a backup, "
                            f"salvage it (sqlite3 FILE .recover | sqlite3 recovered.db), or move it "
                            f"away and {HINT}")


def _is_corruption(exc: sa_exc.DatabaseError) -> bool:
    low = str(getattr(exc, "orig", exc)).lower()
    return "malformed" in low or "file is not a database" in low


def _sqlite_settings(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # We issue BEGIN ourselves (below): the sqlite3 module otherwise starts transactions only
        # before INSERT/UPDATE/DELETE, leaving migrations' DDL outside any transaction.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cur.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite
            cur.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL, far fewer fsyncs
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # IMMEDIATE takes the write lock up front (waiting up to busy_timeout). A deferred
        # transaction that read first could not upgrade to writing once another process had
        # written, and would fail with "database is locked" without waiting.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_SQLITE_REASONS = [
    ("file is not a database", "it is not a SQLite database (corrupt or another kind of file); it was "
                               "left untouched: move it away or " + HINT),
    ("malformed", "the database file is corrupt; it was left untouched: restore a backup, salvage "
                  "it (sqlite3 FILE .recover | sqlite3 recovered.db), or move it away and " + HINT),
    ("unable to open database file", "the file cannot be created or opened; check the path and its "
                                     "permissions, or " + HINT),
    ("readonly database", "the file is read-only; fix its permissions (and its directory's) or " + HINT),
    ("database is locked", "the database is locked by another process for too long; retry, or " + HINT),
    ("disk i/o error", "disk I/O error; check the disk and the file, or " + HINT),
    ("database or disk is full", "the disk is full; free space or " + HINT),
]

_PG_REASONS = [
    (r"connection refused", "connection refused; is the server running and listening on that "
                            "host and port? " + HINT),
    (r'database "([^"]+)" does not exist', "database {0!r} does not exist; create it "
                                            "(createdb {0}) or " + HINT),
    (r'role "([^"]+)" does not exist', "user {0!r} does not exist on that server; " + HINT),
    (r"password authentication failed for user \"([^\"]+)\"", "password authentication failed for user "
                                                                "{0!r}; check the user and password in "
                                                                "the URL, or " + HINT),
    (r"no password supplied", "the server wants a password and the URL has none; " + HINT),
    (r"could not translate host name|name or service not known|nodename nor servname",
     "unknown host name; check the URL, or " + HINT),
    (r"timeout expired|timed out", f"no answer within {PG_CONNECT_TIMEOUT_S} s; is the host reachable? " + HINT),
    (r"no route to host|network is unreachable", "the host is unreachable; " + HINT),
    (r"permission denied", "permission denied: the user may not use this database; " + HINT),
    (r"too many (connections|clients)", "the server has too many connections; retry later or raise "
                                        "max_connections"),
    (r"server closed the connection|terminating connection|connection .* lost|consuming input failed",
     "the server closed the connection; is it restarting? retry, or " + HINT),
]


def _explain(exc: BaseException, masked_url: str, *, opening: bool) -> str:
    """One line from a driver or Alembic error; never the driver's multi-line text verbatim."""
    what = "cannot open" if opening else "database error on"
    if isinstance(exc, CommandError):
        raw = str(exc)
        m = re.search(r"Can't locate revision identified by '([^']+)'", raw)
        if m:
            return (f"{what} {masked_url}: its schema is at revision {m.group(1)}, which this version of "
                    f"patchfuzz does not know (made by a newer one?); upgrade patchfuzz or {HINT}")
        return f"{what} {masked_url}: schema migration failed: {_one_line(raw)}"
    orig = getattr(exc, "orig", None) or exc
    raw = str(orig)
    low = raw.lower()
    if isinstance(orig, sqlite3.Error) or masked_url.startswith("sqlite"):
        for needle, reason in _SQLITE_REASONS:
            if needle in low:
                return f"{what} {masked_url}: {reason}"
        return f"{what} {masked_url}: {_one_line(raw)}; {HINT}"
    for pattern, reason in _PG_REASONS:
        m = re.search(pattern, raw, re.IGNORECASE)
        if m:
            verb = "cannot connect to" if opening else what
            return f"{verb} {masked_url}: {reason.format(*m.groups())}"
    return f"{what} {masked_url}: {_one_line(raw)}; {HINT}"


def _one_line(raw: str) -> str:
    # psycopg prefixes 'connection failed:' and appends tab-indented hints on further lines.
    first = next((line.strip() for line in raw.splitlines() if line.strip()), raw.strip())
    first = re.sub(r"^(connection failed:\s*|FATAL:\s*|ERROR:\s*)+", "", first)
    first = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", first)
    return first[:300]
