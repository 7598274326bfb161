"""A running farm survives its services restarting: Redis (a private server of this test, with
persistence, as in docker-compose.yml) and the run's own PostgreSQL server (conftest), stopped
and started again on the same port under its clients."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

import db
from db.models import JobFinding

from .services import REDIS_HINT, find_redis_server, missing
from .test_farm import BUG, Workers, cli, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir()
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(self.port),
                        "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                        "--save", "", "--logfile", str(self.dir / "redis.log")], check=True)
        wait_for(lambda: self._ping(), 10, "the private Redis to start", every=0.1)

    def _ping(self) -> bool:
        try:
            return redis.Redis(port=self.port, socket_connect_timeout=1).ping()
        except redis.exceptions.ConnectionError:
            return False

    def stop(self) -> None:
        try:
            redis.Redis(port=self.port).shutdown()  # writes the append-only file, then exits
        except redis.exceptions.ConnectionError:
            pass
        wait_for(lambda: not self._ping(), 10, "the private Redis to stop", every=0.1)


@pytest.fixture
def private_redis(tmp_path):
    if find_redis_server() is None:
        pytest.fail(missing("redis-server", REDIS_HINT), pytrace=False)
    r = PrivateRedis(tmp_path / "redis")
    r.start()
    yield r
    r.stop()


def test_workers_carry_on_when_redis_and_postgres_restart(tmp_path, pg, private_redis, monkeypatch):
    env = {"PATCHFUZZ_REDIS": private_redis.url, "PATCHFUZZ_DB": pg.new_database(),
           "PATCHFUZZ_QUEUE": "restarts", "PATCHFUZZ_PROGRESS": "1", "PATCHFUZZ_WORK_DIR": str(tmp_path)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    sub = json.loads(cli("farm", "submit", BUG, "--jobs", "3", "--job-seconds", "10",
                         "--minimize-runs", "100", "--json").stdout)
    workers = Workers(tmp_path)
    try:
        workers.start("w-1")  # a fixed name: re-registering after the outage must not clash

        def progressed(n: int):
            with db.open_db(env["PATCHFUZZ_DB"]) as d:
                return sum(j["schedules_run"] for j in db.campaign_jobs(d, sub["campaign"])) > n

        wait_for(lambda: progressed(0), 120, "the first job to report progress")
        private_redis.stop()
        time.sleep(3)
        private_redis.start()
        wait_for(lambda: progressed(0), 30, "progress after the Redis restart")
        with db.open_db(env["PATCHFUZZ_DB"]) as d:
            done = sum(j["schedules_run"] for j in db.campaign_jobs(d, sub["campaign"]))
        pg.restart()
        wait_for(lambda: progressed(done), 60, "progress after the PostgreSQL restart")

        def finished():
            st = json.loads(cli("farm", "status", "--json").stdout)
            c = next(c for c in st["campaigns"] if c["id"] == sub["campaign"])
            return c if c["status"] != "running" else None

        camp = wait_for(finished, 300, "the campaign to finish", every=2)
        assert camp["status"] == "finished" and camp["jobs"] == {"finished": 3}, (camp, workers.log("w-1")[-3000:])
        with db.open_db(env["PATCHFUZZ_DB"]) as d:
            buckets = db.list_buckets(d)
            assert any(b["oracle"] == "unhandled-trap" for b in buckets)
            with d.session() as s:
                for b in buckets:
                    ledger = s.execute(select(func.sum(JobFinding.hits))
                                       .where(JobFinding.signature == b["signature"])).scalar_one()
                    assert b["count"] == ledger
        assert workers.procs["w-1"].poll() is None  # the worker itself never gave up
    finally:
        workers.stop_all()
