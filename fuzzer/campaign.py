"""The fuzz loop: ask a strategy for schedules, run them, keep one record per signature.

It keeps going after a finding; for each distinct signature it keeps the first schedule that
showed it (and its index and time) and counts the hits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .machine import Machine
from .oracles import Finding
from .strategies.base import Strategy


@dataclass
class CrashRecord:
    finding: Finding
    schedule: bytes
    first_schedule: int  # 1-based index of the run that first showed it
    first_seconds: float
    hits: int = 1

    def to_dict(self) -> dict:
        f = self.finding
        return {
            "oracle": f.oracle,
            "title": f.title,
            "signature": f.signature,
            "schedule": self.schedule.hex(),
            "protocol": f.protocol,
            "variant": f.variant,
            "detail": f.detail,
            "first_schedule": self.first_schedule,
            "first_seconds": round(self.first_seconds, 4),
            "hits": self.hits,
        }


@dataclass
class CampaignResult:
    schedules: int = 0
    seconds: float = 0.0
    crashes: dict[str, CrashRecord] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.schedules / self.seconds if self.seconds > 0 else 0.0


def fuzz(
    machine: Machine,
    strategy: Strategy,
    *,
    schedules: int | None = None,
    seconds: float | None = None,
    on_progress: Callable[[CampaignResult], None] | None = None,
    on_crash: Callable[[CrashRecord], None] | None = None,
    progress_every: float = 0.25,
) -> CampaignResult:
    """Run until `schedules` runs or `seconds` elapse (whichever is given; both: first hit)."""
    if schedules is None and seconds is None:
        raise ValueError("give schedules or seconds")
    res = CampaignResult()
    start = time.perf_counter()
    next_report = start + progress_every
    while True:
        if schedules is not None and res.schedules >= schedules:
            break
        now = time.perf_counter()
        if seconds is not None and now - start >= seconds:
            break
        sched = strategy.next_schedule()
        if sched is None:
            break
        result = machine.run(sched)
        res.schedules += 1
        strategy.observe(sched, result)
        f = result.finding
        if f is not None:
            sig = f.signature
            rec = res.crashes.get(sig)
            if rec is None:
                rec = res.crashes[sig] = CrashRecord(f, sched, res.schedules,
                                                     time.perf_counter() - start)
                if on_crash:
                    on_crash(rec)
            else:
                rec.hits += 1
        if on_progress and now >= next_report:
            res.seconds = now - start
            on_progress(res)
            next_report = now + progress_every
    res.seconds = time.perf_counter() - start
    return res
