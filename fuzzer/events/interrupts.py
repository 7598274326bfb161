"""Records of serialization, IPIs, NMIs, IRQs, traps and preemption."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..render import Renderer
from .base import Event


@dataclass(slots=True, eq=False)
class SyncCore(Event):
    category: ClassVar[str] = "ipi"

    def text(self, r: Renderer) -> str:
        return r.sync_core


@dataclass(slots=True, eq=False)
class SyncCoresStart(Event):
    targets: tuple[int, ...]
    category: ClassVar[str] = "ipi"

    def text(self, r: Renderer) -> str:
        return "sync_cores(): IPI to " + ",".join(f"cpu{i}" for i in self.targets)


@dataclass(slots=True, eq=False)
class SyncCoresDone(Event):
    category: ClassVar[str] = "ipi"

    def text(self, r: Renderer) -> str:
        return "sync_cores() done"


@dataclass(slots=True, eq=False)
class TakeIpi(Event):
    category: ClassVar[str] = "ipi"

    def text(self, r: Renderer) -> str:
        return "takes IPI: sync_core (serializing)"


@dataclass(slots=True, eq=False)
class Nmi(Event):
    category: ClassVar[str] = "nmi"

    def text(self, r: Renderer) -> str:
        return "NMI (serializing)"


@dataclass(slots=True, eq=False)
class NmiReturn(Event):
    category: ClassVar[str] = "nmi"

    def text(self, r: Renderer) -> str:
        return "NMI handler returns (iret, serializing)"


@dataclass(slots=True, eq=False)
class Irq(Event):
    category: ClassVar[str] = "irq"

    def text(self, r: Renderer) -> str:
        return "IRQ (serializing)"


@dataclass(slots=True, eq=False)
class IrqReturn(Event):
    category: ClassVar[str] = "irq"

    def text(self, r: Renderer) -> str:
        return "IRQ handler returns (iret, serializing)"


@dataclass(slots=True, eq=False)
class Trap(Event):
    addr: int
    foreign: bool
    category: ClassVar[str] = "trap"

    def text(self, r: Renderer) -> str:
        return f"{r.trap} at {r.sym(self.addr)}" + (" (foreign: kprobe)" if self.foreign else "")


@dataclass(slots=True, eq=False)
class TrapPassedOn(Event):
    category: ClassVar[str] = "trap"

    def text(self, r: Renderer) -> str:
        return f"{r.trap} handler: not mine, passed on to kprobes"


@dataclass(slots=True, eq=False)
class TrapEmulates(Event):
    insn: bytes
    addr: int
    category: ClassVar[str] = "trap"

    def text(self, r: Renderer) -> str:
        return f"{r.trap} handler emulates {r.disasm(self.insn, self.addr)}"


@dataclass(slots=True, eq=False)
class TrapAnswer(Event):
    """A handler's answer other than emulating a whole site version: what runs next."""

    how: str  # single_step, retry, detour
    insn: bytes
    addr: int
    target: int
    category: ClassVar[str] = "trap"

    def text(self, r: Renderer) -> str:
        if self.how == "single_step":
            return (f"{r.trap} handler single-steps {r.disasm(self.insn, self.addr)} out of line, "
                    f"resumes at {r.sym(self.addr + len(self.insn))}")
        if self.how == "retry":
            return f"{r.trap} handler retries: {r.sym(self.addr)} runs again"
        return f"{r.trap} handler detours to {r.sym(self.target)}"


@dataclass(slots=True, eq=False)
class TrapReturn(Event):
    category: ClassVar[str] = "trap"

    def text(self, r: Renderer) -> str:
        return f"{r.trap} returns (iret, serializing)"


@dataclass(slots=True, eq=False)
class Preempted(Event):
    pc: int
    category: ClassVar[str] = "preemption"

    def text(self, r: Renderer) -> str:
        return f"preempted at {r.sym(self.pc)}"


@dataclass(slots=True, eq=False)
class Resumed(Event):
    category: ClassVar[str] = "preemption"

    def text(self, r: Renderer) -> str:
        return "resumes after preemption (iret, serializing)"
