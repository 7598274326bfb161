"""What a job payload may make a worker do: call one of our job functions with plain JSON.

RQ stores a job as the dotted name of a function plus its arguments, serialized with pickle by
default, and a worker imports and calls whatever name it finds. Anyone who can write to Redis
could then run code on every worker (a pickle runs code while it loads; a name like
`os.system` runs code when called). So every queue and worker here uses JSON, and the job
class refuses any function outside ALLOWED, bound methods, and callbacks.
"""

from __future__ import annotations

from rq.job import Job
from rq.serializers import JSONSerializer

# The only functions a farm job may name. Arguments are plain JSON (ids, strings).
ALLOWED = frozenset({
    "workers.jobs.run_job",
    "workers.jobs.nightly_replay",
})

SERIALIZER = JSONSerializer


class RefusedJob(Exception):
    """A job payload asked for something a farm worker does not do."""


class FarmJob(Job):
    """An RQ job that resolves only allow-listed functions and no callbacks."""

    @property
    def func(self):
        name = self.func_name  # raises DeserializationError on a non-JSON (e.g. pickled) payload
        if self.instance is not None:
            raise RefusedJob(f"job {self.id}: refusing a method call ({name!r} on an instance)")
        callbacks = [n for n in (self._success_callback_name, self._failure_callback_name,
                                 self._stopped_callback_name) if n]
        if callbacks:
            raise RefusedJob(f"job {self.id}: refusing a job with callbacks ({', '.join(callbacks)})")
        if name not in ALLOWED:
            raise RefusedJob(f"job {self.id}: refusing function {name!r}; farm jobs may only call "
                             f"{', '.join(sorted(ALLOWED))}")
        return super().func

    # Callbacks are resolved by name from the payload too and would run even for a refused
    # job (the failure callback); farm jobs never set one, so none is ever imported.
    @property
    def success_callback(self):
        return None

    @property
    def failure_callback(self):
        return None

    @property
    def stopped_callback(self):
        return None
