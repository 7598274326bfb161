"""The strategy interface (modelled on Shuttle's scheduler trait: small on purpose)."""

from __future__ import annotations

from typing import Protocol as _Protocol

from ..machine import RunResult


class Strategy(_Protocol):
    name: str

    def next_schedule(self) -> bytes | None:
        """The next schedule to run, or None when the strategy has nothing left to try."""

    def observe(self, schedule: bytes, result: RunResult) -> None:
        """Feedback after each run (coverage-guided strategies use it; random ignores it)."""
