"""Records of what went wrong: violations, protocol errors, consequences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..render import Renderer
from .base import Event


@dataclass(slots=True, eq=False)
class Violation(Event):
    oracle: str
    title: str
    detail: str
    category: ClassVar[str] = "violation"

    def text(self, r: Renderer) -> str:
        return f"*** {self.oracle}: {self.title} -- {self.detail}"


@dataclass(slots=True, eq=False)
class ProtocolFailed(Event):
    """The protocol's own code went wrong (fuzzer/guard.py): not a finding about the scheme."""

    where: str
    what: str
    category: ClassVar[str] = "violation"

    def text(self, r: Renderer) -> str:
        return f"*** protocol error at {self.where}: {self.what}"


@dataclass(slots=True, eq=False)
class Consequence(Event):
    """What the offending CPU executed after the violation (emulated, one instruction each)."""

    what: str
    category: ClassVar[str] = "consequence"

    def text(self, r: Renderer) -> str:
        return "consequence: " + self.what
