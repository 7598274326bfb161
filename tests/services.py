"""The tests' own Redis and PostgreSQL servers, started from the machine's binaries on free ports
and in private directories: a run never touches the machine's shared servers (their standard
ports may be taken, their data is not ours), and two runs at once never meet.

The executors come from pytest-redis and pytest-postgresql. PostgreSQL refuses to run as root
(initdb, pg_ctl and postgres all check), and CI runs as root: then pg_ctl runs as the `postgres`
user through a small wrapper script, in a directory that user owns.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import tempfile
from pathlib import Path

from mirakuru.exceptions import AlreadyRunning
from port_for import get_port

REDIS_HINT = "install Debian's redis-server package (apt-get install redis-server)"
PG_HINT = "install Debian's postgresql package (apt-get install postgresql)"
PG_OS_USER = "postgres"  # the account Debian's postgresql package creates
HOST = "127.0.0.1"
STANDARD_PORTS = {"redis": 6379, "postgresql": 5432}
ATTEMPTS = 3  # a free port can be taken by another run between choosing it and binding it


class ServiceError(Exception):
    """A server of the tests cannot be started; the message is the one line to show."""


def missing(binary: str, hint: str) -> str:
    return f"{binary} not found: the tests start their own server from it; {hint}"


def find_redis_server(path: str | None = None) -> str | None:
    return shutil.which("redis-server", path=path)


def find_pg_ctl(path: str | None = None, roots: tuple[str, ...] = ("/usr/lib/postgresql",)) -> str | None:
    """pg_ctl on PATH, else the newest of Debian's /usr/lib/postgresql/<major>/bin (kept off PATH)."""
    found = shutil.which("pg_ctl", path=path)
    if found:
        return found
    candidates = [p for root in roots for p in Path(root).glob("*/bin/pg_ctl") if os.access(p, os.X_OK)]

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", p.parent.parent.name))

    return str(max(candidates, key=version)) if candidates else None


def postgres_os_user(euid: int, name: str = PG_OS_USER) -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: None (ourselves) unless we are root."""
    if euid != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(f"PostgreSQL refuses to run as root and there is no '{name}' user to run it as: "
                           f"{PG_HINT}, which creates it, or run the tests as an ordinary user") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f"; its log ends: {lines[-1].strip()}" if lines else ""


class PrivateRedis:
    """redis-server on a free port, its files in `directory`; keeps nothing on disk."""

    def __init__(self, directory: Path, executable: str | None = None) -> None:
        self.executable = executable or find_redis_server()
        if self.executable is None:
            raise ServiceError(missing("redis-server", REDIS_HINT))
        self.dir = directory
        self.executor = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> PrivateRedis:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> PrivateRedis:
        from pytest_redis.executor import RedisExecutor

        for attempt in range(ATTEMPTS):
            self.port = get_port(None)
            # redis_timeout=0: idle clients (a worker between jobs) are never disconnected
            self.executor = RedisExecutor(self.executable, databases=16, redis_timeout=0, loglevel="notice",
                                          host=HOST, port=self.port, datadir=self.dir, startup_timeout=30)
            try:
                self.executor.start()
                break
            except AlreadyRunning:
                if attempt == ATTEMPTS - 1:
                    raise ServiceError(f"no free port for the tests' Redis after {ATTEMPTS} tries") from None
            except Exception as e:
                log = self.dir / f"redis-server.{self.port}.log"
                raise ServiceError(f"could not start the tests' Redis from {self.executable} "
                                   f"({_one_line(e)}){_last_line(log)}") from None
        import redis

        with redis.Redis(host=HOST, port=self.port) as conn:
            conn.config_set("save", "")  # no snapshots: nothing here needs to survive the run
        return self

    def stop(self) -> None:
        if self.executor is not None and self.executor.running():
            self.executor.stop()
        self.executor = None


class PrivatePostgres:
    """A throw-away cluster (initdb, trust auth for user postgres) on a free port.

    Layout: `<dir>/` (ours, 0711) holds the pg_ctl wrapper when we are root, and `<dir>/cluster/`
    (owned by the user PostgreSQL runs as) holds the data directory, the log and the socket.
    """

    def __init__(self, pg_ctl: str | None = None, euid: int | None = None) -> None:
        self.pg_ctl = pg_ctl or find_pg_ctl()
        if self.pg_ctl is None:
            raise ServiceError(missing("pg_ctl", PG_HINT))
        self.pg_ctl = os.path.realpath(self.pg_ctl)  # pg_ctl finds postgres and initdb beside it
        self.os_user = postgres_os_user(os.geteuid() if euid is None else euid)
        self.dir: Path | None = None
        self.executor = None
        self.port = 0

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/postgres"

    @property
    def cluster(self) -> Path:
        assert self.dir is not None
        return self.dir / "cluster"

    @property
    def datadir(self) -> Path:
        return self.cluster / "data"

    @property
    def logfile(self) -> Path:
        return self.cluster / "postgresql.log"

    def _control_command(self) -> str:
        """pg_ctl itself, or, as root, a script that runs it as the postgres user."""
        if self.os_user is None:
            return self.pg_ctl
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        if not os.access(runuser, os.X_OK):
            raise ServiceError("runuser not found: as root the tests run PostgreSQL as the postgres user "
                               "with it; install Debian's util-linux package")
        wrapper = self.dir / "pg_ctl"
        # cd: pg_ctl and initdb look at their working directory, which the postgres user may not read
        wrapper.write_text("#!/bin/sh\n"
                           "# PostgreSQL refuses to run as root: pg_ctl runs as the postgres user\n"
                           f"cd {shlex.quote(str(self.cluster))} || exit 1\n"
                           f"exec {shlex.quote(runuser)} -u {shlex.quote(self.os_user.pw_name)} -- "
                           f"{shlex.quote(self.pg_ctl)} \"$@\"\n")
        wrapper.chmod(0o755)
        return str(wrapper)

    def start(self) -> PrivatePostgres:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> PrivatePostgres:
        from pytest_postgresql.executors import PostgreSQLExecutor

        self.dir = Path(tempfile.mkdtemp(prefix="patchfuzz-test-pg-"))
        self.dir.chmod(0o711)
        self.cluster.mkdir(mode=0o700)
        if self.os_user is not None:
            os.chown(self.cluster, self.os_user.pw_uid, self.os_user.pw_gid)
        control = self._control_command()
        for attempt in range(ATTEMPTS):
            self.port = get_port(None)
            self.executor = PostgreSQLExecutor(
                executable=control, host=HOST, port=self.port, datadir=str(self.datadir),
                unixsocketdir=str(self.cluster), logfile=str(self.logfile), startparams="-w",
                dbname="patchfuzz_tests", user="postgres",
                # a throw-away cluster: durability would only slow the tests down
                postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            try:
                self.executor.start()
                self.wait_ready()
                break
            except AlreadyRunning:
                if attempt == ATTEMPTS - 1:
                    raise ServiceError(f"no free port for the tests' PostgreSQL after {ATTEMPTS} tries") from None
            except Exception as e:
                raise ServiceError(f"could not start the tests' PostgreSQL with {self.pg_ctl} "
                                   f"({_one_line(e)}){_last_line(self.logfile)}") from None
        return self

    def restart(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected) and start it again, same port."""
        self.executor.stop()
        self.executor.start()
        self.wait_ready()

    def wait_ready(self, seconds: float = 60) -> None:
        """pg_ctl -w can return while the server still answers "the database system is starting
        up" (crash recovery after a fast shutdown): wait until it takes a connection."""
        import time

        import psycopg

        deadline = time.monotonic() + seconds
        while True:
            try:
                psycopg.connect(host=HOST, port=self.port, user="postgres", dbname="postgres",
                                connect_timeout=5).close()
                return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise ServiceError(f"the tests' PostgreSQL did not accept connections within "
                                       f"{seconds:.0f} s ({_one_line(e)})") from None
                time.sleep(0.2)

    def stop(self) -> None:
        try:
            if self.executor is not None and self.executor.running():
                self.executor.stop()
            self.executor = None
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None
