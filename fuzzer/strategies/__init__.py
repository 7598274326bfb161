"""Search strategies. Each produces schedule bytes, so every finding replays with `run`."""

from __future__ import annotations

from .atheris import AtherisStrategy
from .base import Run, SetupError, Stepwise, Strategy
from .exhaustive import ExhaustiveStrategy
from .pct import PctStrategy
from .random import RandomStrategy
from .swarm import SwarmStrategy

STRATEGIES: dict[str, type] = {"atheris": AtherisStrategy, "pct": PctStrategy, "random": RandomStrategy,
                               "swarm": SwarmStrategy, "exhaustive": ExhaustiveStrategy}
DEFAULT_STRATEGY = "atheris"

__all__ = ["STRATEGIES", "AtherisStrategy", "ExhaustiveStrategy", "PctStrategy", "RandomStrategy", "Run", "SetupError",
           "Stepwise", "Strategy", "SwarmStrategy"]
