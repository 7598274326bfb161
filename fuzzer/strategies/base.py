"""The strategy interface (modelled on Shuttle's scheduler trait: small on purpose).

An in-process strategy hands out one run at a time: schedule bytes, or a `ChoiceSource` that
steers the run as it goes (the run's decisions are recorded as bytes either way, so every
finding replays with `patchfuzz run`). It sees each result and may stop the campaign by
returning None (exhaustive search does, once its bounds are covered).

A strategy that runs its own loop elsewhere (atheris: libFuzzer in a subprocess) implements
`run_campaign()` instead and reports runs and findings through the same callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol as _Protocol

from ..choices import ChoiceSource
from ..machine import Machine, RunResult


@dataclass
class Run:
    schedule: bytes = b""
    source: ChoiceSource | None = None


class Strategy(_Protocol):
    name: str
    wants_coverage: bool

    def bind(self, machine: Machine) -> None:
        """Called once before the first run (strategies that need the machine keep it)."""

    def next_run(self) -> Run | None:
        """The next run, or None when the strategy has nothing left to try."""

    def observe(self, run: Run, result: RunResult) -> None:
        """Feedback after each run."""

    def stats(self) -> dict:
        """Strategy-specific figures for progress and summaries (coverage, corpus, ...)."""
