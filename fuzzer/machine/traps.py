"""Traps: breakpoints executed, and the chain of handlers that answers them.

A CPU that executes a breakpoint (the protocol's own at a site, or someone else's) takes an
exception: a trap frame runs the protocol's handler chain with IRQs off, as the kernel's
do_int3()/brk handler calls its handlers in turn (`Protocol.trap_handlers`; by default the one
`trap_handler`). Each handler says "not mine" or answers: emulate a whole version of the site
(`k.emulate`), single-step an instruction out of line and resume at its boundary
(`k.single_step`), run the trapping address again (`k.retry`), or go on at another address
(`k.detour`). The answer is applied when the frame returns, and the oracles judge what runs
next.

Someone else's breakpoints are kprobes: one the schedule injects into running code (at the
image's kprobed function), or one a protocol's task arms at any site (`k.arm_kprobe`), including
inside one. A trap there is foreign: the protocol's chain must pass it on, and the kprobes
model at the end of the chain single-steps the instruction the kprobe replaced.
"""

from __future__ import annotations

from typing import Any

from .. import events as ev
from .. import ops
from ..arch.base import EXCEPTION_ENTRY, EXCEPTION_RETURN
from ..guard import protected
from ..protocol import Protocol
from .part import Part
from .state import Cpu, Frame


def _answer(value: Any):
    """A coroutine that yields nothing and returns `value` (a handler that is a plain function)."""
    return value
    yield  # pragma: no cover - makes this a generator


def _as_coroutine(value: Any):
    return value if hasattr(value, "send") else _answer(value)


class Traps(Part):
    SIBLINGS = ("checks", "fetch", "memory", "views")
    NOT_STATE = {"trap_len": "fixed", "trap_name": "fixed", "trap_insn": "fixed",
                 "chain": "the protocol's handlers (their state is the protocol's attributes)"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        arch = machine.arch
        self.trap_insn = arch.trap_insn
        self.trap_len = len(arch.trap_insn)
        self.trap_name = arch.trap_name
        self.chain = [getattr(machine.proto, name) for name in self._chain_names(machine.proto, arch)]
        self.kprobes: dict[int, bytes] = {}  # armed kprobe address -> the instruction it replaced

    @staticmethod
    def _chain_names(proto: Protocol, arch) -> tuple[str, ...]:
        names = proto.trap_handlers  # the variant may choose (a property)
        if names is not None:
            missing = [n for n in names if not callable(getattr(proto, n, None))]
            if missing:
                raise ValueError(f"{proto.name}: trap handler {missing[0]!r} has no method of that name")
            return tuple(names)
        # The ISA-neutral name when the protocol defines it; else an ISA may let its protocols
        # keep the name its kernel uses (x86: int3_handler).
        alias = arch.trap_handler_alias
        neutral = type(proto).trap_handler is not Protocol.trap_handler
        use_alias = not neutral and alias and getattr(type(proto), alias, None) is not None
        return (alias if use_alias else "trap_handler",)

    def reset(self) -> None:
        self.kprobes = {}

    def state(self) -> dict:
        return {"kprobes": tuple(sorted(self.kprobes.items()))}

    def handlers(self) -> dict:
        return {ops.KprobeRegister: self.op_kprobe_register}

    # ---- a breakpoint executed ----------------------------------------------------------------
    def trap(self, cpu: Cpu, addr: int, foreign: bool) -> None:
        m = self.m
        foreign = foreign or addr in self.kprobes
        if m.observing:
            m.emit(cpu, ev.Trap, addr, foreign)
        self.views.event(cpu, EXCEPTION_ENTRY)
        k = cpu.k
        if len(self.chain) == 1:
            handler = _as_coroutine(protected(cpu.idx, self.chain[0], k, addr))
        else:
            handler = self._run_chain(k, addr)
        m.push(cpu, Frame("trap", handler, k, irqs_off=True, tags={"trap_addr": addr, "foreign": foreign}))

    def _run_chain(self, k, addr: int):
        for handler in self.chain:
            answer = yield from _as_coroutine(protected(k.cpu, handler, k, addr))
            if answer is not ops.NOT_MINE and answer is not None:
                return answer
        return ops.NOT_MINE

    def foreign_trap(self, cpu: Cpu) -> None:
        """The schedule's foreign breakpoint: the running code hits someone else's kprobe."""
        self.trap(cpu, self.m.image.foreign_trap, foreign=True)

    def trap_resume_pc(self, addr: int, cpu: Cpu | None = None) -> int:
        """Where code that trapped at `addr` resumes if nobody moves it: past the breakpoint
        there (as `cpu` sees the text, where the architecture has breakpoints of two sizes)."""
        if cpu is None or not self.m.arch.trap_insns:
            return addr + self.trap_len
        return addr + (self.m.arch.trap_length(cpu.hw.read(addr, 4)) or self.trap_len)

    # ---- the handlers' answer -----------------------------------------------------------------
    def trap_return(self, cpu: Cpu, frame: Frame, answer) -> None:
        m = self.m
        addr = frame.tags["trap_addr"]
        foreign = frame.tags["foreign"]
        site = m.site_by_addr.get(addr)
        code = cpu.code_frame
        hw = cpu.hw
        if answer is ops.NOT_MINE or answer is None:
            if not foreign:
                self.checks.trap_unclaimed(cpu, addr, site)
                if m.finding is not None:
                    return
            else:
                if m.observing:
                    m.emit(cpu, ev.TrapPassedOn)
                replaced = self.kprobes.get(addr)
                if replaced is not None:  # kprobes single-steps the instruction it replaced
                    kind, target = self.fetch.semantics(replaced, addr)
                    code.pc = hw.emulate(kind, target, addr + len(replaced))
        else:
            self.checks.trap_claimed(cpu, addr, site, foreign, answer)
            if m.finding is not None:
                return
            t = type(answer)
            if t is ops.Emulate or t is ops.SingleStep:
                insn = answer.insn
                kind, target = self.fetch.semantics(insn, addr)
                code.pc = hw.emulate(kind, target, addr + len(insn))
                if m.observing:
                    if t is ops.Emulate:
                        m.emit(cpu, ev.TrapEmulates, insn, addr)
                    else:
                        m.emit(cpu, ev.TrapAnswer, "single_step", insn, addr, code.pc)
            elif t is ops.Retry:
                code.pc = hw.emulate("jmp", addr, addr)
                if m.observing:
                    m.emit(cpu, ev.TrapAnswer, "retry", b"", addr, addr)
            elif t is ops.Detour:
                code.pc = hw.emulate("jmp", answer.target, addr)
                if m.observing:
                    m.emit(cpu, ev.TrapAnswer, "detour", b"", addr, answer.target)
            else:
                raise TypeError(f"trap handler returned {answer!r}; expected NOT_MINE, k.emulate(), "
                                "k.single_step(), k.retry() or k.detour()")
        if m.observing:
            m.emit(cpu, ev.TrapReturn)
        self.views.event(cpu, EXCEPTION_RETURN)
        if not foreign:
            self.checks.resume(cpu, self.trap_name)

    # ---- kprobes -----------------------------------------------------------------------------
    def op_kprobe_register(self, cpu: Cpu, frame: Frame, op: ops.KprobeRegister) -> None:
        """Register (before it is written) or forget (once it is gone) a kprobe at a site."""
        m = self.m
        site = m.sites[op.site]
        addr = site.addr + op.offset
        if op.arm:
            seen = self.memory.text_as_seen(cpu, site)[op.offset:]
            lens = m.arch.insn_lengths(seen)
            self.kprobes[addr] = seen[:lens[0]] if lens else seen
            m.advance(cpu, frame, self.kprobes[addr])
        else:
            self.kprobes.pop(addr, None)
            m.advance(cpu, frame, None)
