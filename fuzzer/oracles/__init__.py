"""Oracles: one file each, and how a violation becomes a stable, deduplicable finding.

An oracle subscribes to the machine's check points by defining `on_<point>` methods (see
`base.CHECK_POINTS`), holds its title templates as data, and reports through
`Machine.report`, where one sanitizer (`titles.sanitize`) normalizes every title. To add an
oracle, copy the smallest file here (`guest_fault.py`) and list the class in `ALL` below.
"""

from __future__ import annotations

from .base import CHECK_POINTS, Oracle
from .cmodx_violation import CmodxViolation
from .deadlock import Deadlock
from .finding import Finding, signature
from .guest_fault import GuestFault
from .invariant import Invariant, Shared
from .mid_insn_resume import MidInsnResume
from .protocol_assert import ProtocolAssert
from .stale_after_complete import StaleAfterComplete
from .torn_fetch import TornFetch
from .unhandled_trap import UnhandledTrap
from .use_after_free import UseAfterFree
from .wrong_target import WrongTarget

ALL: tuple[type[Oracle], ...] = (TornFetch, UnhandledTrap, WrongTarget, StaleAfterComplete,
                                 MidInsnResume, UseAfterFree, Deadlock, GuestFault, ProtocolAssert,
                                 Invariant, CmodxViolation)
ORACLES: dict[str, str] = {cls.id: cls.fires_when for cls in ALL}

__all__ = ["ALL", "CHECK_POINTS", "ORACLES", "Finding", "Oracle", "Shared", "signature"]
