"""Structured trace records: what happened in a run, one typed record per happening.

The machine emits these (only when a run is traced or collects coverage); the text trace,
`--focus`, the timeline picture and the minimizer's counts are renderings of them, so nothing
parses trace text. A record holds raw values (bytes, addresses, names); turning them into text
needs the run's architecture and symbols, which a `Renderer` carries.

Each record type says what a reader of a race needs to know about it:
* `category`: the kind of box the timeline draws;
* `reads()` / `writes()`: the objects (site, variable or lock names) it observed or changed,
  which is how the focused trace follows the data from a violation back to the other side;
* `folds`: consecutive records of these types on one CPU fold into one line (a CPU's writes
  reaching its store buffer and memory);
* `text(r)` / `brief(r)`: the trace line's message, and the shorter form used when folded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .render import Renderer, fmt

__all__ = ["Event", "Renderer", "fmt"]  # and the record types below


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


# ---- memory ----------------------------------------------------------------------------------
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
    kind: str  # mb, wmb, rmb, dsb

    def text(self, r: Renderer) -> str:
        return "dsb(ish)" if self.kind == "dsb" else f"smp_{self.kind}()"


_CACHE_OPS = {"clean": "dc cvau", "inval": "ic ivau", "inval_local": "ic iallu"}


@dataclass(slots=True, eq=False)
class CacheMaint(Event):
    kind: str  # clean, inval, inval_local (ops.CacheMaint)
    site: str

    def text(self, r: Renderer) -> str:
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


# ---- text ------------------------------------------------------------------------------------
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


# ---- serialization, IPIs, NMIs, traps, preemption -----------------------------------------------
@dataclass(slots=True, eq=False)
class SyncCore(Event):
    category: ClassVar[str] = "ipi"

    def text(self, r: Renderer) -> str:
        return "sync_core()"


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


# ---- locks, stop_machine, hotplug, tasks ----------------------------------------------------------
@dataclass(slots=True, eq=False)
class Locked(Event):
    lock: str
    mode: str  # mutex, read, write
    category: ClassVar[str] = "lock"

    def text(self, r: Renderer) -> str:
        prefix = {"read": "read-", "write": "write-"}.get(self.mode, "")
        return f"{prefix}lock {self.lock}"

    def writes(self) -> tuple[str, ...]:
        return (self.lock,)


@dataclass(slots=True, eq=False)
class Unlocked(Locked):
    def text(self, r: Renderer) -> str:
        return f"unlock {self.lock}"


@dataclass(slots=True, eq=False)
class LockWait(Event):
    lock: str
    mode: str
    category: ClassVar[str] = "lock wait"

    def text(self, r: Renderer) -> str:
        return f"waits for {self.lock} ({self.mode})"

    def reads(self) -> tuple[str, ...]:
        return (self.lock,)


@dataclass(slots=True, eq=False)
class Parked(Event):
    category: ClassVar[str] = "stop_machine"

    def text(self, r: Renderer) -> str:
        return "enters stop_machine (IRQs off)"


@dataclass(slots=True, eq=False)
class Unparked(Event):
    category: ClassVar[str] = "stop_machine"

    def text(self, r: Renderer) -> str:
        return "leaves stop_machine"


@dataclass(slots=True, eq=False)
class StopMachineRun(Event):
    category: ClassVar[str] = "stop_machine"

    def text(self, r: Renderer) -> str:
        return "stop_machine: all CPUs parked, running callback with IRQs off"


@dataclass(slots=True, eq=False)
class StopMachineRelease(Event):
    category: ClassVar[str] = "stop_machine"

    def text(self, r: Renderer) -> str:
        return "stop_machine: release"


@dataclass(slots=True, eq=False)
class CpuOffline(Event):
    target: int

    def text(self, r: Renderer) -> str:
        return f"cpu{self.target} goes offline"


@dataclass(slots=True, eq=False)
class CpuOnline(Event):
    target: int

    def text(self, r: Renderer) -> str:
        return f"cpu{self.target} comes online"


@dataclass(slots=True, eq=False)
class TaskDone(Event):
    name: str

    def text(self, r: Renderer) -> str:
        return f"{self.name} finished"


@dataclass(slots=True, eq=False)
class Migrated(Event):
    task: str
    target: int

    def text(self, r: Renderer) -> str:
        return f"{self.task} migrates to cpu{self.target}"


@dataclass(slots=True, eq=False)
class Completed(Event):
    def text(self, r: Renderer) -> str:
        return "protocol declares completion"


@dataclass(slots=True, eq=False)
class SitesCompleted(Event):
    sites: tuple[str, ...]  # k.complete(...): the run goes on

    def text(self, r: Renderer) -> str:
        return f"protocol declares the patch of {', '.join(self.sites)} complete"

    def writes(self) -> tuple[str, ...]:
        return self.sites


# ---- findings -----------------------------------------------------------------------------
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
