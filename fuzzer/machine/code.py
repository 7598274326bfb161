"""Code slices: a frame's `RunCode` op runs real machine code on its CPU's emulator.

A slice runs until the CPU stands in front of a patch site instruction (the emulator's site
hook stops it there), for a number of instructions the schedule picks, or to the stop
instruction that ends the code. A CPU standing at a site is about to fetch it: its next slice
first lets the schedule refresh the fetch units of a stale view, then the fetch is checked
(`fetch.py`), then the instruction runs. Traps and faults the emulator reports end the slice.

After a torn fetch or a mid-instruction resume, `aftermath` lets the offending CPU execute what
it fetched, one instruction at a time, so the report shows the emulated consequence.
"""

from __future__ import annotations

from .. import draws
from .. import events as ev
from ..arch.base import CpuHooks
from .part import Part
from .state import Cpu, Frame

_SLICE, _SLICE_DEFAULT = draws.SLICE.name, draws.SLICE.default
RUN_TO_STOP, SLICE_SHORT = draws.RUN_TO_STOP, draws.SLICE_SHORT
AFTERMATH_INSNS = 12  # instructions the offending CPU runs after a violation, for the report


class Code(Part):
    SIBLINGS = ('checks', 'fetch', 'memory', 'traps', 'views', 'programs')
    NOT_STATE = {"stop_pcs": "the image's"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.stop_pcs = machine.image.stop_pcs



    def hooks(self) -> CpuHooks:
        """Callbacks from inside the emulator (site stops are recorded by the CPU itself)."""
        image = self.m.image
        if not (image.programs or image.data):
            return CpuHooks(on_trap=self.on_trap, on_fault=self.on_fault)
        programs = self.m.programs  # the parts are bound only once the CPUs exist
        return CpuHooks(on_trap=self.on_trap, on_fault=self.on_fault, on_load=programs.on_load,
                        on_store=programs.on_store)

    def on_trap(self, idx: int, kind: str, pc: int) -> None:
        self.m.cpus[idx].stop = ("trap", pc)

    def on_fault(self, idx: int, kind: str, addr: int, only_if_new: bool = False) -> None:
        cpu = self.m.cpus[idx]
        if only_if_new and cpu.stop is not None and cpu.stop[0] == "fault":
            return
        cpu.stop = ("fault", kind, addr)

    def step(self, cpu: Cpu, frame: Frame, op, fair: bool = False) -> None:
        """One slice of code. `fair`: the schedule is used up, every draw takes its default."""
        m = self.m
        hw = cpu.hw
        ch = m.ch
        if not frame.code_active:
            self.start(cpu, frame, op)
        elif cpu.code_frame is not frame:
            raise AssertionError("code frame is not the CPU's live context")
        site = frame.at_site
        if site is not None:
            frame.at_site = None
            self.views.before_fetch(cpu, frame, site, fair)
            if m.finding is not None:
                return
            self.fetch.check(cpu, frame, site)
            if m.finding is not None:
                return
            if site.program:
                self.programs.before_insn(cpu, site)
            cpu.skip = frame.pc
        if fair:
            count = RUN_TO_STOP
        else:
            if ch.source is None:  # Choices.byte inlined: a draw per slice
                pos = ch.pos
                if pos < ch.n:
                    n = ch.data[pos]
                    ch.pos = pos + 1
                else:
                    ch.defaulted = True
                    n = _SLICE_DEFAULT
            else:
                n = ch.byte(_SLICE_DEFAULT, _SLICE)
            count = RUN_TO_STOP if n < SLICE_SHORT else n - SLICE_SHORT + 1
        cpu.stop = None
        hit = hw.run(frame.pc, count, cpu.skip)
        cpu.skip = -1
        if hit >= 0:
            frame.pc = hit
            # The fetch of this instruction starts now: the instruction cache is coherent, so
            # it starts from memory as it is; only stores landing before it executes can mix.
            site = m.site_by_addr.get(hit)
            if site is None:  # an instruction starting inside a site: a fetch point as well
                site = m.site_containing(hit)
            frame.at_site = site
            frame.fetch_excused = site.completed is None
            self.views.arrive(cpu, site)
            return
        stop = cpu.stop
        if stop is None:
            frame.pc = pc = hw.pc()
            if pc in self.stop_pcs:
                self.end(cpu, frame)
            return
        if stop[0] == "trap":
            frame.pc = self.traps.trap_resume_pc(stop[1], cpu)
            self.traps.trap(cpu, stop[1], foreign=False)
        else:
            frame.pc = hw.pc()
            self.checks.guest_fault(cpu, frame, stop[1], stop[2])

    def start(self, cpu: Cpu, frame: Frame, op) -> None:
        hw = cpu.hw
        below = cpu.code_frame
        if below is not None and below is not frame:
            below.saved_ctx = hw.save()
        hw.restore(hw.nmi_context if frame.kind == "nmi" else hw.irq_context if frame.kind == "irq"
                   else hw.thread_context)
        frame.pc = op.entry
        frame.code_active = True
        cpu.code_frame = frame
        if op.regs is not None:
            self.programs.start(cpu, op)
        m = self.m
        if m.observing:
            m.emit(cpu, ev.RunsCode, op.what)

    def end(self, cpu: Cpu, frame: Frame) -> None:
        answer = self.programs.registers(cpu) if frame.op.regs is not None else None
        frame.code_active = False
        cpu.code_frame = None
        for f in reversed(cpu.frames):
            if f is not frame and f.code_active:
                cpu.hw.restore(f.saved_ctx)
                f.saved_ctx = None
                cpu.code_frame = f
                break
        self.m.advance(cpu, frame, answer)

    def aftermath(self, cpu: Cpu) -> None:
        """Let the offending CPU execute what it fetched, one instruction at a time, so the
        report shows the emulated consequence (a wild call, a different instruction, a fault)."""
        m = self.m
        f = m.finding
        frame = cpu.code_frame
        if frame is None:
            return
        hw = cpu.hw
        arch = m.arch
        pc = frame.pc
        func_site = next((s for s in m.sites.values() if s.func <= pc < s.func + 64), None)
        cpu.skip = pc
        for _ in range(AFTERMATH_INSNS):
            view = hw.read(pc, 16)
            insn = arch.disasm(view[: (arch.insn_lengths(view) or (1,))[0]], pc)
            cpu.stop = None
            hw.run(pc, 1, cpu.skip, sites=False)
            cpu.skip = hw.skip_pending()
            new_pc = hw.pc()
            stop = cpu.stop
            if stop is not None and stop[0] == "fault":
                f.consequence.append(f"{m.sym(pc)}: {insn} -> guest fault: {stop[1]} at {m.sym(stop[2])}")
                break
            if stop is not None and stop[0] == "trap":
                f.consequence.append(f"{m.sym(pc)}: {insn} -> {arch.trap_name} trap")
                break
            f.consequence.append(f"{m.sym(pc)}: {insn} -> pc {m.sym(new_pc)}")
            if new_pc == pc:
                break
            pc = new_pc
            cpu.skip = -1
            if func_site is not None and not (func_site.func <= pc < func_site.func + 64):
                break
        if m.tracing:
            for line in f.consequence:
                m.emit(cpu, ev.Consequence, line)
