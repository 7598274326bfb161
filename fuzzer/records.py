"""What the crash database keeps of a finding, built in one place for the command line and the
farm's jobs. Plain values only: the engine still knows nothing of SQL."""

from __future__ import annotations

from typing import Any

from . import ENGINE_VERSION, SCHEDULE_FORMAT
from .campaign import CrashRecord
from .machine import Machine


class FindingRecords:
    """Arguments for db.store_finding / db.set_minimized for one machine's findings; each
    schedule is replayed once for its trace hash, however often its counts are stored."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.config = machine.config.to_dict()
        self._runs: dict[bytes, tuple[str | None, Any]] = {}  # schedule -> trace hash, finding

    def _replay(self, schedule: bytes) -> tuple[str | None, Any]:
        if schedule not in self._runs:
            r = self.machine.run(schedule, trace=True)
            self._runs[schedule] = (r.trace_sha256, r.finding)
        return self._runs[schedule]

    def trace_sha256(self, schedule: bytes) -> str | None:
        return self._replay(schedule)[0]

    def row(self, rec: CrashRecord, hits: int) -> dict[str, Any]:
        f = rec.finding
        return dict(signature=f.signature, protocol=f.protocol, variant=f.variant, oracle=f.oracle,
                    title=f.title, schedule=rec.schedule, schedule_format=SCHEDULE_FORMAT,
                    engine_version=ENGINE_VERSION, config=self.config,
                    trace_sha256=self.trace_sha256(rec.schedule), detail=f.detail,
                    consequence=f.consequence, hits=hits)

    def minimized(self, schedule: bytes, max_runs: int) -> tuple[bytes, dict[str, Any]]:
        """The minimized schedule and the rest of db.set_minimized's arguments for it."""
        from .minimize import minimize

        small, _, _, _ = minimize(self.machine, schedule, max_runs=max_runs)
        sha, f = self._replay(small)
        # the detail shown above the minimized reproducer's trace is that run's, not the first sample's
        own = dict(detail=f.detail, consequence=f.consequence) if f is not None else {}
        return small, dict(trace_sha256=sha, engine_version=ENGINE_VERSION, schedule_format=SCHEDULE_FORMAT,
                           **own)
