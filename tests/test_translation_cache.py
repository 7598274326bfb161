"""Unicorn caches translated blocks; a CPU whose view of a site changes must drop them.

The schedule used here makes every CPU execute the site's old NOP before the patch lands, so
Unicorn has translated that block. If `UnicornCpu.write_text` did not flush it, the CPUs would keep
running the NOP: no int3 is taken and the new call never reaches the tracer (which counts hits
in r15).
"""

import re

from unicorn.x86_const import UC_X86_REG_R15

import fuzzer.arch.unicorn_cpu as unicorn_cpu
from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve
from fuzzer.strategies.random import RandomStrategy

SPEC = "x86/text_poke_bp:correct"
CPUS = 4
FETCH_TRAP = re.compile(r"^\s*\d+ (cpu\d+) .*fetch fentry: cc\b")
OLD_FETCH = "fetch fentry: 0f 1f 44 00 00 (old)"


def _pick_schedule():
    """The first seeded random schedule in which every other CPU runs the old NOP before the
    patch and fetches the new call after it, the patch completes cleanly, and no NMI runs (NMI tracer hits do not stay in r15)."""
    cls, variant = resolve(SPEC)
    machine = Machine(cls, variant, Config(cpus=CPUS))
    strategy = RandomStrategy(seed=0)
    for _ in range(2000):
        schedule = strategy.next_schedule()
        result = machine.run(schedule, trace=True)
        if result.verdict != "clean" or not result.completed or any("NMI" in t for t in result.trace):
            continue
        per_cpu = [_lines_of(result.trace, f"cpu{i}") for i in range(1, CPUS)]
        if all(any(OLD_FETCH in t for t in lines) and any("(new)" in t for t in lines)
               for lines in per_cpu):
            return schedule
    raise AssertionError("no schedule meets the precondition")


def _run():
    cls, variant = resolve(SPEC)
    machine = Machine(cls, variant, Config(cpus=CPUS))
    return machine, machine.run(SCHEDULE, trace=True)


def _r15(machine, i):
    return machine.cpus[i].hw.uc.reg_read(UC_X86_REG_R15)


def _lines_of(trace, cpu):
    return [line for line in trace if re.match(rf"^\s*\d+ {cpu} ", line)]


def _trap_fetches_not_taken(trace):
    """Trace lines where a CPU fetched an int3 at the site and its next line is not the int3."""
    bad = []
    for i, line in enumerate(trace):
        m = FETCH_TRAP.match(line)
        if m is None:
            continue
        cpu = m.group(1)
        nxt = next((t for t in trace[i + 1:] if re.match(rf"^\s*\d+ {cpu} ", t)), None)
        if nxt is None or "int3 at" not in nxt:
            bad.append((line, nxt))
    return bad


SCHEDULE = _pick_schedule()


def test_new_call_executes_on_every_cpu():
    machine, result = _run()
    assert result.verdict == "clean" and result.completed
    for i in range(1, CPUS):
        lines = _lines_of(result.trace, f"cpu{i}")
        # the precondition: this CPU ran the old NOP before the patch
        assert any(OLD_FETCH in t for t in lines), f"cpu{i}"
        new_fetches = sum("(new)" in t for t in lines)
        assert new_fetches > 0, f"cpu{i} never fetched the new call"
        r15 = _r15(machine, i)
        assert r15 > 0, f"cpu{i}: the tracer was never reached"
        # every fetch of the new call really executed it (emulated calls through int3 add more)
        assert r15 >= new_fetches, (i, r15, new_fetches)


def test_fetched_trap_is_taken():
    _, result = _run()
    assert any(FETCH_TRAP.match(t) for t in result.trace), "the run never fetched the int3"
    assert _trap_fetches_not_taken(result.trace) == []


def test_stale_translations_are_detected(monkeypatch):
    """Sensitivity: the two tests above fail when write_text does not flush translations."""

    def write_text_without_flush(self, addr, data):
        self.uc.mem_write(addr, bytes(data))

    monkeypatch.setattr(unicorn_cpu.UnicornCpu, "write_text", write_text_without_flush)
    machine, result = _run()
    stale = [i for i in range(1, CPUS) if _r15(machine, i) == 0]
    assert stale, "every CPU reached the tracer even without flushing"
    assert _trap_fetches_not_taken(result.trace), "every fetched int3 was taken without flushing"

