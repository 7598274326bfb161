"""A campaign: a strategy searching one machine within a budget, and what it found.

Every strategy runs a campaign the same way: `strategy.search(machine, campaign)`. The strategy
decides how to search (one schedule at a time in this process, or libFuzzer in subprocesses);
the campaign holds the budget and the results, and is the one interface through which every
strategy reports: `ran()` for runs, `found()` for findings, `progress()` for live figures, and
`should_stop()` to ask whether the budget is spent. For each distinct signature it keeps the
first schedule that showed it (with its index and time) and counts the hits. It knows nothing of
the strategies themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .machine import Machine
from .oracles import Finding


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
class ErrorRecord:
    """The protocol's own code went wrong (guard.ProtocolError), and the schedule that led
    there: the campaign stops, since no later verdict could be trusted."""

    error: Any
    schedule: bytes
    at_schedule: int

    def replay(self, cpus: int) -> str:
        e = self.error
        return f"patchfuzz run {e.protocol}:{e.variant} --cpus {cpus} --schedule '{self.schedule.hex()}'"


@dataclass
class CampaignResult:
    schedules: int = 0
    seconds: float = 0.0
    crashes: dict[str, CrashRecord] = field(default_factory=dict)
    exhausted: bool = False  # the strategy covered everything it could try (exhaustive)
    stats: dict = field(default_factory=dict)  # strategy figures: coverage, corpus size, ...
    error: ErrorRecord | None = None  # the protocol's code went wrong: the campaign stopped there
    interrupted: bool = False  # stopped by the user (Ctrl-C, SIGTERM): what it found is kept

    @property
    def rate(self) -> float:
        return self.schedules / self.seconds if self.seconds > 0 else 0.0


class Campaign:
    """The budget and the results of one search, and the interface strategies report through."""

    def __init__(self, machine: Machine, *, schedules: int | None = None, seconds: float | None = None,
                 on_progress: Callable[[CampaignResult], None] | None = None,
                 on_crash: Callable[[CrashRecord], None] | None = None,
                 progress_every: float = 0.25, stop_on: set[str] | None = None,
                 stop_requested: Callable[[], bool] | None = None) -> None:
        if schedules is None and seconds is None:
            raise ValueError("give schedules or seconds")
        self.machine = machine
        self.schedules = schedules
        self.seconds = seconds
        self.stop_on = stop_on or set()
        self.progress_every = progress_every
        self._on_progress = on_progress
        self._on_crash = on_crash
        # asked at every check of the budget: an interrupt whose KeyboardInterrupt was lost (raised
        # inside a __del__, which Python only reports) still ends the search
        self._stop_requested = stop_requested
        self.result = CampaignResult()
        self.start = time.monotonic()
        self._next_report = self.start + progress_every
        self.stopped = False  # a finding of a `stop_on` oracle arrived

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    # ---- what a strategy asks ---------------------------------------------------------------
    def should_stop(self) -> bool:
        """The budget is spent, or a finding the campaign stops on arrived."""
        if self.stopped:
            return True
        if self.interrupted():
            return True
        if self.schedules is not None and self.result.schedules >= self.schedules:
            return True
        return self.seconds is not None and self.elapsed() >= self.seconds

    def interrupted(self) -> bool:
        """Someone outside asked the search to stop (Ctrl-C, SIGTERM)."""
        if self._stop_requested is not None and self._stop_requested():
            self.result.interrupted = True
        return self.result.interrupted

    # ---- what a strategy reports ----------------------------------------------------------------
    def ran(self, count: int = 1, total: int | None = None) -> None:
        """`count` more runs, or (a strategy that counts elsewhere) `total` runs so far."""
        self.result.schedules = total if total is not None else self.result.schedules + count

    def found(self, finding: Finding, schedule: bytes, seconds: float | None = None) -> CrashRecord:
        """A finding: one record per signature, the first schedule and a hit count. `seconds`
        since the campaign began, if the strategy knows better than now."""
        res = self.result
        rec = res.crashes.get(finding.signature)
        if rec is None:
            at = self.elapsed() if seconds is None else seconds
            rec = res.crashes[finding.signature] = CrashRecord(finding, schedule, res.schedules, at)
            if self._on_crash:
                self._on_crash(rec)
        else:
            rec.hits += 1
        if finding.oracle in self.stop_on:
            self.stopped = True
        return rec

    def errored(self, error: Any, schedule: bytes) -> None:
        """The protocol's own code went wrong on `schedule`: keep it, stop the campaign."""
        if self.result.error is None:
            self.result.error = ErrorRecord(error, schedule, self.result.schedules)
        self.stopped = True

    def progress(self, stats: Callable[[], dict]) -> None:
        """Live figures for whoever watches, at most every `progress_every` seconds; `stats`
        is called only when they are due."""
        if self._on_progress is None:
            return
        now = time.monotonic()
        if now >= self._next_report:
            self.result.seconds = now - self.start
            self.result.stats = stats()
            self._on_progress(self.result)
            self._next_report = now + self.progress_every


class Searcher(Protocol):
    """What `fuzz` needs of a strategy (strategies/base.py has the whole interface)."""

    def search(self, machine: Machine, campaign: Campaign) -> None: ...

    def stats(self) -> dict: ...


def fuzz(machine: Machine, strategy: Searcher, *, schedules: int | None = None,
         seconds: float | None = None, on_progress: Callable[[CampaignResult], None] | None = None,
         on_crash: Callable[[CrashRecord], None] | None = None, progress_every: float = 0.25,
         stop_on: set[str] | None = None,
         stop_requested: Callable[[], bool] | None = None) -> CampaignResult:
    """Run until `schedules` runs or `seconds` elapse (whichever is given; both: first hit),
    until the strategy has nothing left to try (`CampaignResult.exhausted`), or, with
    `stop_on`, until a finding of one of those oracles (benchmark trials). An interrupt
    (KeyboardInterrupt, or `stop_requested` answering true) ends it early with
    `CampaignResult.interrupted` set."""
    campaign = Campaign(machine, schedules=schedules, seconds=seconds, on_progress=on_progress,
                        on_crash=on_crash, progress_every=progress_every, stop_on=stop_on,
                        stop_requested=stop_requested)
    try:
        strategy.search(machine, campaign)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (see cli/fuzz.py): keep what was found so far
        campaign.result.interrupted = True
    res = campaign.result
    res.seconds = campaign.elapsed()
    res.stats = strategy.stats()
    return res

