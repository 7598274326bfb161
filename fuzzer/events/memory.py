"""Records of shared memory: loads, stores, drains, fences, atomics, lifetimes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..render import Renderer, fmt
from .base import Event


@dataclass(slots=True, eq=False)
class Load(Event):
    var: str
    value: Any

    def text(self, r: Renderer) -> str:
        return f"load {self.var} -> {fmt(self.value)}"

    def reads(self) -> tuple[str, ...]:
        return (self.var,)


@dataclass(slots=True, eq=False)
class Store(Event):
    var: str
    value: Any
    folds: ClassVar[bool] = True

    def text(self, r: Renderer) -> str:
        return f"{self.brief(r)} (store buffer)"

    def brief(self, r: Renderer) -> str:
        return f"store {self.var} = {fmt(self.value)}"

    def writes(self) -> tuple[str, ...]:
        return (self.var,)


@dataclass(slots=True, eq=False)
class Alloc(Store):
    def brief(self, r: Renderer) -> str:
        return f"alloc {self.var} = {fmt(self.value)}"


@dataclass(slots=True, eq=False)
class Drain(Event):
    var: str
    value: Any
    category: ClassVar[str] = "memory"
    folds: ClassVar[bool] = True

    def text(self, r: Renderer) -> str:
        return f"{self.brief(r)} reaches memory"

    def brief(self, r: Renderer) -> str:
        return f"drain: {self.var} = {fmt(self.value)}"

    def writes(self) -> tuple[str, ...]:
        return (self.var,)


@dataclass(slots=True, eq=False)
class Fence(Event):
    kind: str  # mb, wmb, rmb, dsb, drain (DSB ST)

    def text(self, r: Renderer) -> str:
        return {"dsb": "dsb(ish)", "drain": "dsb(st)"}.get(self.kind) or f"smp_{self.kind}()"


_CACHE_OPS = {"clean": "dc cvau", "inval": "ic ivau", "inval_local": "ic iallu", "inval_all": "ic ialluis",
              "inval_local_sync": "fence.i"}


@dataclass(slots=True, eq=False)
class CacheMaint(Event):
    kind: str  # clean, inval, inval_local, inval_all, inval_local_sync (ops.CacheMaint)
    site: str

    def text(self, r: Renderer) -> str:
        if self.kind == "inval_local_sync":  # done at once: this CPU fetches what memory holds
            return "fence.i: this CPU now fetches what memory holds"
        return f"{_CACHE_OPS[self.kind]} {self.site}".strip() + " (done at the next dsb)"

    def reads(self) -> tuple[str, ...]:
        return (self.site,) if self.site else ()


@dataclass(slots=True, eq=False)
class Atomic(Event):
    name: str
    var: str
    old: Any
    new: Any
    result: Any  # what the operation returned to the protocol

    def text(self, r: Renderer) -> str:
        return f"{self.name}({self.var}): {fmt(self.old)} -> {fmt(self.new)}"

    def reads(self) -> tuple[str, ...]:
        return (self.var,)

    def writes(self) -> tuple[str, ...]:
        return (self.var,)


@dataclass(slots=True, eq=False)
class Free(Event):
    var: str

    def text(self, r: Renderer) -> str:
        return f"free {self.var}"

    def writes(self) -> tuple[str, ...]:
        return (self.var,)


@dataclass(slots=True, eq=False)
class Waited(Event):
    what: str
    var: str | tuple[str, ...]  # several variables: their values are a tuple
    value: Any

    def text(self, r: Renderer) -> str:
        names = self.var if isinstance(self.var, str) else ", ".join(self.var)
        return f"waited until {self.what} ({names} = {fmt(self.value)})"

    def reads(self) -> tuple[str, ...]:
        return (self.var,) if isinstance(self.var, str) else tuple(self.var)
