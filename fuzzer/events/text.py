"""Records of the text: pokes, drains to it, fetches, checks, cache maintenance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..render import Renderer
from .base import Event


@dataclass(slots=True, eq=False)
class Poke(Event):
    site: str
    off: int
    data: bytes
    category: ClassVar[str] = "text write"
    folds: ClassVar[bool] = True

    def text(self, r: Renderer) -> str:
        return f"{self.brief(r)} (store buffer)"

    def brief(self, r: Renderer) -> str:
        return f"poke {self.site}+{self.off} = {self.data.hex(' ')}"

    def writes(self) -> tuple[str, ...]:
        return (self.site,)


@dataclass(slots=True, eq=False)
class TextDrain(Poke):
    category: ClassVar[str] = "memory"

    def text(self, r: Renderer) -> str:
        return f"{self.brief(r)} reaches memory"

    def brief(self, r: Renderer) -> str:
        return f"drain: {self.site}+{self.off} = {self.data.hex(' ')}"


@dataclass(slots=True, eq=False)
class ReadText(Event):
    site: str
    data: bytes

    def text(self, r: Renderer) -> str:
        return f"read text {self.site}: {self.data.hex(' ')}"

    def reads(self) -> tuple[str, ...]:
        return (self.site,)


@dataclass(slots=True, eq=False)
class TextChecked(Event):
    site: str
    what: str

    def text(self, r: Renderer) -> str:
        return f"check {self.site} holds {self.what}: ok"

    def reads(self) -> tuple[str, ...]:
        return (self.site,)


@dataclass(slots=True, eq=False)
class Fetch(Event):
    """A CPU is about to execute an instruction at a patch site, fetched as `view`."""

    site: str
    off: int
    pc: int
    view: bytes
    label: str  # old, new, trap, intended, TORN
    category: ClassVar[str] = "fetch"

    @property
    def plain(self) -> bool:
        """Whole old or new code: the CPU going about its business."""
        return self.label in ("old", "new")

    def text(self, r: Renderer) -> str:
        at = f"{self.site}+{self.off}" if self.off else self.site
        return f"fetch {at}: {self.view.hex(' ')} ({self.label}) {r.disasm(self.view[self.off:], self.pc)}"

    def reads(self) -> tuple[str, ...]:
        return (self.site,)


@dataclass(slots=True, eq=False)
class RunsCode(Event):
    what: str

    def text(self, r: Renderer) -> str:
        return f"runs {self.what}"
