"""Search strategies. Each produces schedule bytes, so every finding replays with `run`."""

from __future__ import annotations

from .base import Strategy
from .random import RandomStrategy

STRATEGIES: dict[str, type[Strategy]] = {"random": RandomStrategy}

__all__ = ["STRATEGIES", "Strategy", "RandomStrategy"]
