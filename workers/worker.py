"""`patchfuzz worker`: an RQ worker that runs farm jobs, JSON only, allow-listed functions only.

RQ's defaults suit web jobs of seconds; a fuzz farm needs a dead worker's job back in the queue
within a minute, not after RQ's 60 s heartbeat grace plus a 10-minute maintenance period. So
heartbeats are frequent, the grace is short, and every idle worker checks for abandoned jobs
(whose retry RQ then enqueues) every MAINTENANCE seconds.
"""

from __future__ import annotations

import logging
import os
import time

import redis
from rq import Queue, Worker

from .security import SERIALIZER, FarmJob

HEARTBEAT = 5  # seconds between a busy worker's heartbeats (job_monitoring_interval)
GRACE = 15  # seconds a missed heartbeat is tolerated before the job counts as abandoned
MAINTENANCE = 10  # seconds between registry clean-ups (abandoned jobs -> retried)
WORKER_TTL = 30  # an idle worker blocks at most WORKER_TTL - 15 s per dequeue, then cleans up
RECONNECT_MAX = 30.0

log = logging.getLogger("patchfuzz.worker")


class FarmWorker(Worker):
    job_class = FarmJob

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        if job.timeout and job.timeout > 0:
            return int(min(job.timeout - working_time, self.job_monitoring_interval)) + GRACE
        return self.job_monitoring_interval + GRACE


def queue(name: str, connection: redis.Redis) -> Queue:
    return Queue(name, connection=connection, serializer=SERIALIZER, job_class=FarmJob)


def make_worker(queues: list[str], connection: redis.Redis, name: str | None = None) -> FarmWorker:
    return FarmWorker([queue(q, connection) for q in queues], connection=connection, name=name,
                      serializer=SERIALIZER, job_class=FarmJob, job_monitoring_interval=HEARTBEAT,
                      maintenance_interval=MAINTENANCE, worker_ttl=WORKER_TTL)


def run_worker(redis_url: str, queues: list[str], *, burst: bool = False, name: str | None = None,
               with_scheduler: bool = False) -> None:
    """Work until stopped. If Redis goes away, wait for it with backoff and carry on: RQ's own
    loop gives up on some connection errors. No RQ scheduler by default: farm jobs are never
    scheduled or retried with a delay, and a scheduler process per worker would poll Redis
    every second for nothing."""
    wait = 1.0
    previous: FarmWorker | None = None
    while True:
        connection = redis.Redis.from_url(redis_url, health_check_interval=10)
        try:
            connection.ping()
            wait = 1.0
            if previous is not None:
                # the last incarnation could not say goodbye while Redis was away; without
                # this, a worker with a fixed --name could not register again
                previous.connection = connection
                previous.register_death()
                previous = None
            worker = make_worker(queues, connection, name)
            try:
                worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="INFO")
            finally:
                _wait_for_horse(worker)
            # RQ's loop also returns after a lost connection; only a signal (set by its
            # SIGTERM/SIGINT handler) or burst mode means "stop"
            if burst or getattr(worker, "_shutdown_requested_date", None) is not None:
                return
            previous = worker
            log.warning("worker loop ended; reconnecting to Redis")
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            log.warning("Redis unreachable (%s); retrying in %.0f s", e, wait)
        except ValueError as e:
            if "active worker named" not in str(e):
                raise
            # a fixed --name still registered by our last incarnation (its heartbeat key
            # outlives a short outage): it expires within WORKER_TTL
            log.warning("%s; retrying in %.0f s", e, wait)
        finally:
            connection.close()
        time.sleep(wait)
        wait = min(wait * 2, RECONNECT_MAX)


def _wait_for_horse(worker: FarmWorker) -> None:
    """When RQ's loop gives up on a lost connection mid-job, its work horse (our child) goes on
    with the job, whose findings go to the database; let it finish before the next incarnation
    takes another job, so a worker never runs two fuzzers at once."""
    pid = worker.horse_pid
    if not pid:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # already reaped by RQ
