"""Search strategies. Each produces schedule bytes, so every finding replays with `run`."""

from __future__ import annotations

from .base import Run, Strategy
from .pct import PctStrategy
from .random import RandomStrategy

STRATEGIES: dict[str, type] = {"random": RandomStrategy, "pct": PctStrategy}
DEFAULT_STRATEGY = "random"

__all__ = ["STRATEGIES", "PctStrategy", "RandomStrategy", "Run", "Strategy"]
