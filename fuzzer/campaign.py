"""The fuzz loop: ask a strategy for schedules, run them, keep one record per signature.

It keeps going after a finding; for each distinct signature it keeps the first schedule that
showed it (and its index and time) and counts the hits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .machine import Machine
from .oracles import Finding

if TYPE_CHECKING:  # strategies import this module (atheris reports through record_finding)
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
    exhausted: bool = False  # the strategy covered everything it could try (exhaustive)
    stats: dict = field(default_factory=dict)  # strategy figures: coverage, corpus size, ...

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
    stop_on: set[str] | None = None,
) -> CampaignResult:
    """Run until `schedules` runs or `seconds` elapse (whichever is given; both: first hit),
    until the strategy has nothing left to try (`CampaignResult.exhausted`), or, with
    `stop_on`, until a finding of one of those oracles (benchmark trials)."""
    if schedules is None and seconds is None:
        raise ValueError("give schedules or seconds")
    res = CampaignResult()
    external = getattr(strategy, "run_campaign", None)
    if external is not None:  # the strategy runs its own loop (atheris, in a subprocess)
        return external(machine, res, schedules=schedules, seconds=seconds,
                        on_progress=on_progress, on_crash=on_crash, stop_on=stop_on)
    strategy.bind(machine)
    start = time.perf_counter()
    next_report = start + progress_every
    while True:
        if schedules is not None and res.schedules >= schedules:
            break
        now = time.perf_counter()
        if seconds is not None and now - start >= seconds:
            break
        run = strategy.next_run()
        if run is None:
            res.exhausted = True
            break
        result = machine.run(run.schedule, source=run.source, coverage=strategy.wants_coverage)
        res.schedules += 1
        strategy.observe(run, result)
        if result.finding is not None and not result.abandoned:
            record_finding(res, result.finding, result.schedule, time.perf_counter() - start, on_crash)
            if stop_on and result.finding.oracle in stop_on:
                break
        if on_progress and now >= next_report:
            res.seconds = now - start
            res.stats = strategy.stats()
            on_progress(res)
            next_report = now + progress_every
    res.seconds = time.perf_counter() - start
    res.stats = strategy.stats()
    return res


def record_finding(res: CampaignResult, finding: Finding, schedule: bytes, seconds: float,
                   on_crash: Callable[[CrashRecord], None] | None = None) -> CrashRecord:
    """Keep one record per signature: the first schedule, and a hit count."""
    rec = res.crashes.get(finding.signature)
    if rec is None:
        rec = res.crashes[finding.signature] = CrashRecord(finding, schedule, res.schedules, seconds)
        if on_crash:
            on_crash(rec)
    else:
        rec.hits += 1
    return rec
