"""Interrupts: NMIs, IRQs, IPIs and preemption, and the serializing events they are (traps,
the breakpoint exceptions, are in traps.py).

* NMIs arrive at any moment the schedule picks, also on the patching CPU and on CPUs parked in
  stop_machine; a nested NMI waits for the outer one. The NMI frame runs the protocol's
  nmi_enter, the image's NMI handler (which calls traced functions) and nmi_exit.
* IPIs (sync_cores) are taken only with IRQs on; the handler is atomic and serializing.
* Preemption takes a task off its CPU at an instruction boundary (IRQs on, thread context) for
  a number of steps; resuming is an IRET.

Entering or leaving any of these is a serializing event: the CPU's stale views are refreshed,
and interrupted code about to resume is checked by the oracles (`resume`).
"""

from __future__ import annotations

from .. import draws, ops
from .. import events as ev
from ..arch.base import EXCEPTION_ENTRY, EXCEPTION_RETURN, IPI_TAKEN, SYNC_CORE
from .part import Part
from .state import Cpu, Frame


class Interrupts(Part):
    SIBLINGS = ('checks', 'fetch', 'memory', 'views')

    def handlers(self) -> dict:
        return {ops.SyncCore: self.op_sync_core, ops.SyncCores: self.op_sync_cores,
                ops.IrqSave: self.op_irq_save, ops.IrqRestore: self.op_irq_restore,
                ops.Preempt: self.op_preempt}

    def readiness(self) -> dict:
        return {ops.SyncCores: self.sync_cores_ready}

    # ---- IRQ state ---------------------------------------------------------------------------
    def irqs_on(self, cpu: Cpu) -> bool:
        """Would `cpu` take a maskable interrupt now: thread context with IRQs enabled."""
        top = cpu.frames[-1]
        if top.kind != "thread" or top.irqs_off:
            return False
        if cpu.preempted:
            return True
        if type(top.op) is ops.RunCode and top.code_active:
            return cpu.hw.irqs_enabled()
        return True

    def op_irq_save(self, cpu: Cpu, frame: Frame, op: ops.IrqSave) -> None:
        was_off = frame.irqs_off
        frame.irqs_off = True
        self.m.advance(cpu, frame, was_off)

    def op_irq_restore(self, cpu: Cpu, frame: Frame, op: ops.IrqRestore) -> None:
        frame.irqs_off = op.flags
        self.m.advance(cpu, frame, None)

    def op_preempt(self, cpu: Cpu, frame: Frame, op: ops.Preempt) -> None:
        frame.preempt_count += op.delta
        if frame.preempt_count < 0:
            raise ValueError("preempt_enable() without preempt_disable()")
        self.m.advance(cpu, frame, None)

    # ---- NMIs ----------------------------------------------------------------------------------
    def nmi(self, cpu: Cpu) -> None:
        m = self.m
        if m.observing:
            m.emit(cpu, ev.Nmi)
        cpu.in_nmi = True
        self.views.event(cpu, EXCEPTION_ENTRY)
        k = cpu.k
        proto = m.proto
        entry = m.image.nmi_entry

        def nmi():
            yield from proto.nmi_enter(k)
            yield ops.RunCode(entry, "NMI handler")
            yield from proto.nmi_exit(k)

        m.push(cpu, Frame("nmi", nmi(), k, irqs_off=True))

    def irq(self, cpu: Cpu) -> None:
        """A maskable interrupt (the schedule sent it to a CPU with IRQs on): its handler runs
        the protocol's irq_enter, the image's IRQ handler (which calls traced functions) and
        irq_exit, with IRQs off."""
        m = self.m
        if m.observing:
            m.emit(cpu, ev.Irq)
        self.views.event(cpu, EXCEPTION_ENTRY)
        k = cpu.k
        proto = m.proto
        entry = m.image.irq_entry

        def irq():
            yield from proto.irq_enter(k)
            yield ops.RunCode(entry, "IRQ handler")
            yield from proto.irq_exit(k)

        m.push(cpu, Frame("irq", irq(), k, irqs_off=True))

    def irq_return(self, cpu: Cpu) -> None:
        m = self.m
        if m.observing:
            m.emit(cpu, ev.IrqReturn)
        self.views.event(cpu, EXCEPTION_RETURN)
        self.checks.resume(cpu, "irq")

    def nmi_return(self, cpu: Cpu) -> None:
        m = self.m
        cpu.in_nmi = False
        if m.observing:
            m.emit(cpu, ev.NmiReturn)
        self.views.event(cpu, EXCEPTION_RETURN)
        self.checks.resume(cpu, "nmi")

    # ---- IPIs ----------------------------------------------------------------------------------
    def take_ipi(self, cpu: Cpu) -> None:
        m = self.m
        if m.observing:
            m.emit(cpu, ev.TakeIpi)
        self.views.event(cpu, IPI_TAKEN)
        for sync in cpu.take_ipis():
            if sync.icache:  # the handler runs the local instruction-fetch sync (FENCE.I)
                self.views.maintain(cpu, "inval_local_sync", "")
            sync.pending.discard(cpu.idx)
        self.checks.resume(cpu, "ipi")

    def op_sync_core(self, cpu: Cpu, frame: Frame, op: ops.SyncCore) -> None:
        m = self.m
        if m.observing:
            m.emit(cpu, ev.SyncCore)
        self.views.event(cpu, SYNC_CORE)
        m.advance(cpu, frame, None)

    def op_sync_cores(self, cpu: Cpu, frame: Frame, op: ops.SyncCores) -> None:
        # first execution: a full barrier, then IPIs; the op then blocks until all are taken
        m = self.m
        if op.pending is None:
            if op.ordered:
                self.memory.drain(cpu, len(cpu.sb))
            op.pending = set()
            # the local call runs the handler directly
            if op.icache:
                self.views.maintain(cpu, "inval_local_sync", "")
            else:
                self.views.event(cpu, SYNC_CORE)
            for other in m.cpus:
                if other is not cpu and other.online:
                    other.add_ipi(op)
                    op.pending.add(other.idx)
            if m.observing:
                m.emit(cpu, ev.SyncCoresStart, tuple(sorted(op.pending)))
        if not op.pending:
            if m.observing:
                m.emit(cpu, ev.SyncCoresDone)
            m.advance(cpu, frame, None)

    def sync_cores_ready(self, cpu: Cpu, frame: Frame, op: ops.SyncCores) -> bool:
        return op.pending is None or not op.pending

    @staticmethod
    def pending_ipis_of(op) -> list[int]:
        """The CPUs that have not taken the IPIs `op` sent (empty for any other op)."""
        return sorted(op.pending) if type(op) is ops.SyncCores and op.pending else []

    # ---- preemption ----------------------------------------------------------------------------
    def preemptible(self, cpu: Cpu) -> bool:
        top = cpu.frames[-1]
        return (len(cpu.frames) == 1 and top.code_active and not cpu.preempted
                and cpu.hw.irqs_enabled() and self.may_schedule_out(top))

    def may_schedule_out(self, frame: Frame) -> bool:
        """Can the code of `frame` (running, IRQs on) be scheduled out where it stands? Anywhere
        with kernel preemption; without it (`Protocol.preemptible_code`) not strictly inside a
        patch site."""
        m = self.m
        return m.proto.preemptible_code or m.site_inside(frame.pc) is None

    def preempt(self, cpu: Cpu) -> None:
        m = self.m
        cpu.set_preempted(True)
        if m.observing:
            m.emit(cpu, ev.Preempted, cpu.frames[-1].pc)
        # how many steps the task stays off the CPU (IPIs and NMIs are still taken)
        cpu.preempted_until = m.step + m.ch.byte(draws.PREEMPT_FOR.default, draws.PREEMPT_FOR.name)

    def resume_preempted(self, cpu: Cpu) -> None:
        m = self.m
        if m.step < cpu.preempted_until:
            return
        cpu.set_preempted(False)
        if m.observing:
            m.emit(cpu, ev.Resumed)
        self.views.event(cpu, EXCEPTION_RETURN)
        self.checks.resume(cpu, "preemption")

    def end_a_preemption(self) -> bool:
        """Nothing else can run: time passes until the first preempted task is due again."""
        m = self.m
        waiting = [c for c in m.cpus if c.online and c.preempted and len(c.frames) == 1]
        if not waiting:
            return False
        first = min(waiting, key=lambda c: (c.preempted_until, c.idx))
        first.preempted_until = m.step
        return True
