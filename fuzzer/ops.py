"""Operations a protocol coroutine yields. Each yield is one scheduling point.

Ops are plain records; the machine gives them meaning (each op's handler lives with the part of
the machine it concerns: `machine/memory.py`, `interrupts.py`, `sync.py`, `core.py`).
`blocking` ops make the frame wait until the op's readiness check says it can proceed;
everything else takes one step (a text poke takes one step per store unit). A protocol never
calls into the machine: even stop_machine is a pair of ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Op:
    __slots__ = ()
    blocking = False


@dataclass(slots=True)
class Load(Op):
    var: str


@dataclass(slots=True)
class Store(Op):
    var: str
    value: Any
    release: bool = False


@dataclass(slots=True)
class Fence(Op):
    # "mb" (smp_mb, DMB ISH) | "wmb" (smp_wmb, DMB ISHST) | "rmb" (smp_rmb, DMB ISHLD) | "dsb"
    # (DSB ISH: a full barrier that also completes the CPU's cache maintenance)
    kind: str


@dataclass(slots=True)
class CacheMaint(Op):
    """Cache maintenance by this CPU, completed by its next `Fence("dsb")`: "clean" a site's
    text to the point of unification (DC CVAU), "inval" the instruction caches of every CPU for
    it (IC IVAU, broadcast), "inval_local" this CPU's whole instruction cache (IC IALLU);
    "inval_local_sync" invalidates this CPU's instruction cache and synchronizes its fetch at
    once (RISC-V FENCE.I: local, no barrier needed, its own buffered stores not drained)."""

    kind: str
    site: str = ""


@dataclass(slots=True)
class Atomic(Op):
    """A read-modify-write: fn(old) -> (new, result). `ordered` (the kernel's value-returning
    atomics, and every locked instruction on x86) drains the store buffer; a relaxed one
    (atomic_inc(), atomic_dec()) only acts on the newest value of its own variable."""

    var: str
    fn: Callable[[Any], tuple[Any, Any]]
    name: str
    ordered: bool = True


@dataclass(slots=True)
class Poke(Op):
    """Write `data` into a site's text at `offset`, one architectural store unit per step."""

    site: str
    data: bytes
    offset: int = 0


@dataclass(slots=True)
class ReadText(Op):
    site: str


@dataclass(slots=True)
class ExpectText(Op):
    """ftrace_bug()-style check: the site must hold `data` (as this CPU sees memory)."""

    site: str
    data: bytes
    what: str


@dataclass(slots=True)
class Bug(Op):
    message: str


@dataclass(slots=True)
class SyncCore(Op):
    pass


class SyncCores(Op):
    """IPI every other online CPU and wait until each has taken it (text_poke_sync)."""

    __slots__ = ("pending", "ordered", "icache")
    blocking = True

    def __init__(self, ordered: bool = True, icache: bool = False) -> None:
        self.pending: set[int] | None = None
        # `ordered`: the sender's earlier stores are visible before any IPI is (a full barrier
        # first, as smp_call_function's queueing gives); False: the request may overtake them
        # (RISC-V's remote fence.i without the data FENCE the ISA requires before it).
        self.ordered = ordered
        # `icache`: the handler invalidates its CPU's instruction cache and synchronizes its
        # fetch (RISC-V FENCE.I), on every CPU including the sender's
        self.icache = icache


@dataclass(slots=True)
class WaitUntil(Op):
    """Block until `pred` holds of `var`'s value, or of the values of several variables (`var`
    a tuple: `pred(*values)`)."""

    var: str | tuple[str, ...]
    pred: Callable[..., bool]
    what: str
    blocking = True


class SynchronizeRcu(Op):
    """Wait for an RCU grace period: every other online CPU has been seen in a quiescent state
    (its thread alone, IRQs on, preemption on) since the call. `pending` holds the CPUs not
    seen yet (None before the call runs)."""

    __slots__ = ("pending", "ordered", "icache")
    blocking = True

    def __init__(self, ordered: bool = True, icache: bool = False) -> None:
        self.pending: set[int] | None = None
        # `ordered`: the sender's earlier stores are visible before any IPI is (a full barrier
        # first, as smp_call_function's queueing gives); False: the request may overtake them
        # (RISC-V's remote fence.i without the data FENCE the ISA requires before it).
        self.ordered = ordered
        # `icache`: the handler invalidates its CPU's instruction cache and synchronizes its
        # fetch (RISC-V FENCE.I), on every CPU including the sender's
        self.icache = icache


@dataclass(slots=True)
class IrqSave(Op):
    """local_irq_save(): IRQs off on this CPU's frame; the answer is the previous state."""


@dataclass(slots=True)
class IrqRestore(Op):
    """local_irq_restore(flags): IRQs back to the state `flags` says (True: they were off)."""

    flags: bool


@dataclass(slots=True)
class Preempt(Op):
    """preempt_disable() (delta 1) / preempt_enable() (delta -1)."""

    delta: int


@dataclass(slots=True)
class LockOp(Op):
    lock: str
    mode: str  # "mutex" | "read" | "write"
    blocking = True


@dataclass(slots=True)
class UnlockOp(Op):
    lock: str
    mode: str


@dataclass(slots=True)
class RunCode(Op):
    """Run code from `entry` until it reaches a stop. With `regs` (register name -> value), a
    program of the protocol's (`Protocol.programs`): it starts with those registers set and the
    answer is its registers when it ends (`Arch.program_regs`)."""

    entry: int
    what: str
    regs: tuple[tuple[str, int], ...] | None = None


class Idle(Op):
    """A CPU with nothing left to run (a machine without caller loops, `Protocol.caller_loops`):
    never ready. A run whose tasks all returned ends once only idle CPUs are left."""

    __slots__ = ()
    blocking = True


@dataclass(slots=True)
class Free(Op):
    var: str


@dataclass(slots=True)
class Alloc(Op):
    var: str
    value: Any


@dataclass(slots=True)
class Complete(Op):
    """The patch operation on `sites` (every site when empty) is complete: from here on, a CPU
    that begins fetching one of them must execute what the completing CPU wrote there."""

    sites: tuple[str, ...] = ()


class CpuDown(Op):
    __slots__ = ("cpu",)
    blocking = True

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu


@dataclass(slots=True)
class CpuUp(Op):
    cpu: int


class StopMachineEnter(Op):
    """Start stop_machine. Yielding it asks every other online CPU to park (the machine does
    that at the yield, `sm` is the rendezvous); it proceeds once all have parked. With
    `every_cpu`, each parked CPU then runs `fn` too (multi_cpu_stop), as soon as it is
    scheduled."""

    __slots__ = ("sm", "fn")
    blocking = True

    def __init__(self, fn=None) -> None:
        self.sm = None
        self.fn = fn  # the callback every parked CPU runs, or None


class StopMachineExit(Op):
    """Release the CPUs parked by `enter` (once each has run the callback, with every_cpu)."""

    __slots__ = ("enter",)
    blocking = True

    def __init__(self, enter: StopMachineEnter) -> None:
        self.enter = enter


@dataclass(slots=True)
class Park(Op):
    """Yielded by the machine's own parked frame: held in the rendezvous until released, or
    (`until_run`) until every CPU has arrived and the callback may run."""

    sm: Any
    until_run: bool = False
    blocking = True


@dataclass(slots=True)
class TaskDone(Op):
    """Yielded by the machine after a protocol task's coroutine returns."""

    name: str


class NotMine:
    """The trap handler's answer for a breakpoint it does not own."""

    def __repr__(self) -> str:
        return "NOT_MINE"


NOT_MINE = NotMine()


@dataclass(frozen=True, slots=True)
class Emulate:
    """The trap handler's answer: emulate `insn`, a whole version of the site, as if it ran at
    `addr` (x86 int3_emulate_call/jmp)."""

    addr: int
    insn: bytes


@dataclass(frozen=True, slots=True)
class SingleStep:
    """The trap handler's answer: execute `insn` out of line as if at the trapping address,
    then resume at its boundary (kprobes' single-stepping of the instruction it replaced)."""

    insn: bytes


@dataclass(frozen=True, slots=True)
class Retry:
    """The trap handler's answer: run the trapping address again (the breakpoint is gone)."""


@dataclass(frozen=True, slots=True)
class Detour:
    """The trap handler's answer: go on at `target` (a detour buffer, a trampoline)."""

    target: int


@dataclass(slots=True)
class KprobeRegister(Op):
    """A kprobe at `site`+`offset` is registered (`arm`: before its breakpoint is written; the
    answer is the instruction it replaces) or forgotten (once its breakpoint is gone)."""

    site: str
    offset: int
    arm: bool
