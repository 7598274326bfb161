"""The emulated multi-CPU machine (see core.py for how its parts fit together)."""

from .core import Machine
from .state import MAX_CPUS, MIN_CPUS, Config, Cpu, Frame, Lock, RunResult, SiteState

__all__ = ["MAX_CPUS", "MIN_CPUS", "Config", "Cpu", "Frame", "Lock", "Machine", "RunResult", "SiteState"]
