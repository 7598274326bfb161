"""The nightly regression replay, for `rq cron`:

    TZ=Europe/Berlin PATCHFUZZ_NIGHTLY="30 3 * * *" rq cron workers.cron_config --url $PATCHFUZZ_REDIS

enqueues `workers.jobs.nightly_replay` on the farm queue at that local time; a worker replays
corpus/ and records the outcome in the database (`patchfuzz farm status` shows it).
"""

from __future__ import annotations

from rq import Queue, cron

from .jobs import nightly_replay
from .security import SERIALIZER, FarmJob
from .settings import FarmSettings


class _JsonQueue(Queue):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("serializer", SERIALIZER)
        kwargs.setdefault("job_class", FarmJob)
        super().__init__(*args, **kwargs)


# rq 3.0's cron scheduler enqueues through a plain Queue, i.e. with pickle, and has no setting
# for the serializer; farm workers refuse pickled payloads, so its queue is made a JSON one.
cron.Queue = _JsonQueue  # type: ignore[misc]

settings = FarmSettings()
cron.register(nightly_replay, queue_name=settings.queue, kwargs={"source": "nightly"},
              cron=settings.nightly_cron, job_timeout=3600, name="patchfuzz-nightly-replay")
