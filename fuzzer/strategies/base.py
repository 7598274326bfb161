"""The strategy interface (modelled on Shuttle's scheduler trait: small on purpose).

Every strategy has a `name`, says whether it `wants_coverage`, searches with
`search(machine, campaign)` and reports its own figures with `stats()`; `prepare(machine)`
sets up what it keeps outside the process (atheris: its corpus and log directories) before a
campaign is recorded anywhere, so a setup mistake is reported before anything is written. It reports runs,
findings and progress through the campaign (`fuzzer/campaign.py`), whatever way it searches.

Most strategies search in this process, one run at a time: they derive from `Stepwise` and
write three methods. `next_run()` hands out the next run: schedule bytes, or a `ChoiceSource`
that steers the run as it goes (its decisions are recorded as bytes either way, so every
finding replays with `patchfuzz run`), or None when nothing is left to try (exhaustive search,
once its bounds are covered). `observe()` sees each result. `bind()` sees the machine once.
The loop that runs them is `Stepwise.search`, written once here. atheris runs libFuzzer in
subprocesses and implements `search` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol as _Protocol

from ..campaign import Campaign
from ..choices import ChoiceSource
from ..machine import Machine, RunResult


class SetupError(Exception):
    """A strategy cannot set up what it needs (a corpus path that is a file, a read-only
    directory): the message names the path and what to do."""


@dataclass
class Run:
    schedule: bytes = b""
    source: ChoiceSource | None = None


class Strategy(_Protocol):
    name: str
    wants_coverage: bool

    def prepare(self, machine: Machine) -> None:
        """Set up files and directories; raises SetupError saying what is wrong."""

    def search(self, machine: Machine, campaign: Campaign) -> None:
        """Search until `campaign.should_stop()`, reporting every run and finding to it."""

    def stats(self) -> dict:
        """Strategy-specific figures for progress and summaries (coverage, corpus, ...)."""


class Stepwise:
    """Base of the strategies that run one schedule at a time in this process."""

    name = "?"
    wants_coverage = False

    def prepare(self, machine: Machine) -> None:
        """Nothing outside this process to set up."""

    def bind(self, machine: Machine) -> None:
        """Called once before the first run (strategies that need the machine keep it)."""

    def next_run(self) -> Run | None:
        raise NotImplementedError

    def observe(self, run: Run, result: RunResult) -> None:
        """Feedback after each run."""

    def stats(self) -> dict:
        return {}

    def search(self, machine: Machine, campaign: Campaign) -> None:
        self.bind(machine)
        while not campaign.should_stop():
            run = self.next_run()
            if run is None:
                campaign.result.exhausted = True
                return
            result = machine.run(run.schedule, source=run.source, coverage=self.wants_coverage)
            campaign.ran()
            if result.error is not None:
                campaign.errored(result.error, result.schedule)
                return
            self.observe(run, result)
            if result.finding is not None and not result.abandoned:
                campaign.found(result.finding, result.schedule)
            campaign.progress(self.stats)
