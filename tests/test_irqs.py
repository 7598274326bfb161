"""Maskable interrupts that run code: taken only where IRQs are on, on any CPU including the
patcher's, running the image's IRQ handler (which calls the traced functions)."""

from fuzzer import draws
from fuzzer import events as ev
from fuzzer.arch.x86_64 import NOP5
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Call, Protocol, Site
from fuzzer.strategies.exhaustive import ExhaustiveStrategy


class OwnIrq(Protocol):
    """The patcher writes a 5-byte call byte by byte on its own CPU: an IRQ there runs the traced
    function between two of its stores (a CPU's own stores reach its own fetch at once).
    `irqs-off` writes with IRQs off (local_irq_save), as text_poke() does."""

    name = "test/own_irq"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    tasks = {"patcher": 0}
    params = dict(irqs_off=False)
    variants = {"irqs-on": {}, "irqs-off": dict(irqs_off=True)}
    expect = {"irqs-on": "torn-fetch", "irqs-off": None}

    def patcher(self, k):
        flags = (yield k.local_irq_save()) if self.v.irqs_off else None
        yield k.poke("fentry", k.site("fentry").new)
        if self.v.irqs_off:
            yield k.local_irq_restore(flags)


class IrqOnCpu0:
    """A ChoiceSource: plain steps of CPU 0 (the patcher), and at step `at` an IRQ on CPU 0."""

    def __init__(self, at):
        self.at = at
        self.steps = 0

    def choose(self, what, n, options):
        if what == draws.EVENT.name:
            self.steps += 1
            return draws.KIND["irq"].lo if self.steps == self.at else 0
        if what in (draws.CPU.name, draws.IRQ_CPU.name) and options:
            return options.index(0) if 0 in options else 0
        return draws.DRAWS[what].neutral
        # (every other draw: its default)


def test_an_irq_on_the_patchers_own_cpu_runs_the_traced_function_mid_write():
    m = Machine(OwnIrq, "irqs-on", Config(cpus=2))
    for at in range(1, 8):
        r = m.run(b"", source=IrqOnCpu0(at), trace=True)
        if r.finding is not None:
            break
    assert r.finding.oracle == "torn-fetch" and r.finding.title == "torn fetch at fentry in IRQ"
    mine = [e for e in r.events if e.cpu == 0]
    assert any(type(e) is ev.Irq for e in mine)
    assert any(type(e) is ev.Poke for e in mine) and any(type(e) is ev.Fetch and e.ctx == "irq" for e in mine)


def test_irqs_off_keeps_the_irq_out_and_exhaustive_search_proves_it():
    off = Machine(OwnIrq, "irqs-off", Config(cpus=2))
    for at in range(1, 8):
        r = off.run(b"", source=IrqOnCpu0(at), trace=True)
        # while the patcher writes, its CPU is no candidate for an IRQ
        assert r.finding is None or r.finding.cpu != 0, r.finding
    # both variants under the same bounds (one IRQ, no NMI), every run looked at: the other
    # CPU still races the write, so what tells them apart is an IRQ on the patcher's CPU
    def findings(variant):
        m = Machine(OwnIrq, variant, Config(cpus=2))
        st = ExhaustiveStrategy(irqs=1, nmis=0)
        st.bind(m)
        seen = set()
        while (run := st.next_run()) is not None:
            r = m.run(run.schedule, source=run.source)
            st.observe(run, r)
            if r.finding is not None and not r.abandoned:
                seen.add((r.finding.title, r.finding.cpu))
        assert st.done
        return seen

    assert ("torn fetch at fentry in IRQ", 0) in findings("irqs-on")
    off = findings("irqs-off")
    assert ("torn fetch at fentry in IRQ", 1) in off and ("torn fetch at fentry in IRQ", 0) not in off


class HookedIrq(OwnIrq):
    """irq_enter/irq_exit bump counters, as the NMI protocols' nmi_enter/nmi_exit do."""

    name = "test/hooked_irq"

    def irq_enter(self, k):
        yield k.atomic_inc("irq_entered")

    def irq_exit(self, k):
        yield k.atomic_inc("irq_exited")


def test_irq_enter_and_irq_exit_run_around_the_image_irq_handler():
    m = Machine(HookedIrq, "irqs-on", Config(cpus=2))
    r = m.run(b"", source=IrqOnCpu0(1), trace=True)  # the IRQ comes before the first poke
    assert r.finding is None and m.memory.mem["irq_entered"] == m.memory.mem["irq_exited"] == 1
    in_irq = [(type(e).__name__, getattr(e, "var", "")) for e in r.events if e.cpu == 0 and e.ctx == "irq"]
    assert in_irq.index(("Atomic", "irq_entered")) < in_irq.index(("Fetch", "")) \
        < in_irq.index(("Atomic", "irq_exited")), in_irq


def test_irq_candidates_are_the_cpus_with_irqs_on():
    m = Machine(OwnIrq, "irqs-off", Config(cpus=2))
    m.run(bytes([0, 0]))  # the patcher's first step: IRQs off on CPU 0
    on = {c.idx for c in m.event_candidates("irq")}
    assert 0 not in on


def test_the_minimizer_the_focused_trace_and_the_picture_keep_the_irq():
    from fuzzer.diagram import Diagram
    from fuzzer.diagram_svg import render_svg
    from fuzzer.focus import focus_view
    from fuzzer.minimize import minimize

    m = Machine(OwnIrq, "irqs-on", Config(cpus=2))
    r = next(r for at in range(1, 8) if (r := m.run(b"", source=IrqOnCpu0(at))).finding)
    small, before, after, _ = minimize(m, r.schedule, max_runs=2000)
    assert m.run(small).finding.signature == r.finding.signature
    assert after.steps <= before.steps
    lines, rows, cpus = focus_view(m, small)
    text = "\n".join(lines)
    assert "IRQ (serializing)" in text and "[schedule: irq on cpu0]" in text
    assert "irq" in {row.category for row in rows} and "IRQ" in render_svg(Diagram("t", cpus, rows))
