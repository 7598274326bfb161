"""The `patchfuzz` command line.

User mistakes (unknown protocol, malformed schedule, missing file, bad CPU count) end in one
line on stderr and a non-zero exit, never a traceback.

    group.py    the command group, and the commands other packages add (the farm's)
    engine.py   protocols, run, bench, minimize, replay, rules, oracles
    fuzz.py     fuzz: a campaign, stored as it goes
    crashes.py  crashes list/show/repro/mark: triage of the crash database
    litmus.py   litmus: herd7 litmus tests on the models, agreement with a verdict file
    common.py   what they share
"""

from __future__ import annotations

from ..strategies import STRATEGIES
from . import crashes, engine, fuzz, litmus  # noqa: F401 - each registers its commands on `main`
from .group import main

__all__ = ["STRATEGIES", "main"]
