"""The trace record's base class: what every record says about itself (see the package)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..render import Renderer


@dataclass(slots=True, eq=False)
class Event:
    step: int
    cpu: int
    ctx: str  # the kind of the CPU's top frame: thread, nmi, trap, irq, parked

    category: ClassVar[str] = "op"
    folds: ClassVar[bool] = False

    def text(self, r: Renderer) -> str:
        raise NotImplementedError

    def brief(self, r: Renderer) -> str:
        return self.text(r)

    def reads(self) -> tuple[str, ...]:
        return ()

    def writes(self) -> tuple[str, ...]:
        return ()
