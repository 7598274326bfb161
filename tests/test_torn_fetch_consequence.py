"""A torn-fetch finding shows what the CPU actually did with the torn bytes."""

import re

import pytest

from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve
from fuzzer.strategies.random import RandomStrategy

CPUS = 4
SEED = 0
MAX_SCHEDULES = 400
WANT = 12  # torn-fetch findings to collect per protocol

EXECUTES = re.compile(r"executes ((?:[0-9a-f]{2} )*[0-9a-f]{2}) = ")
CONSEQUENCE = re.compile(r"^(?P<where>\S+): (?P<insn>.+?) -> (?P<effect>.+)$")
CALL = re.compile(r"^call (0x[0-9a-f]+)$")


def _torn_findings(machine):
    strategy = RandomStrategy(seed=SEED)
    found = []
    for _ in range(MAX_SCHEDULES):
        result = machine.run(strategy.next_schedule())
        if result.finding is not None and result.finding.oracle == "torn-fetch":
            found.append(result.finding)
            if len(found) == WANT:
                break
    return found


@pytest.mark.parametrize("spec", ["x86/text_poke_bp:no-sync-after-int3", "x86/stop_machine_naive"])
def test_torn_fetch_reports_emulated_consequence(spec):
    cls, variant = resolve(spec)
    machine = Machine(cls, variant, Config(cpus=CPUS))
    tracer = machine.image.symbols["ftrace_caller"]
    findings = _torn_findings(machine)
    assert findings, f"no torn fetch in {MAX_SCHEDULES} schedules"

    wild = 0
    for f in findings:
        site = next(s for name, s in machine.sites.items() if re.search(rf"\bat {name}\b", f.title))
        old_text = machine.arch.disasm(site.old, site.addr)
        new_text = machine.arch.disasm(site.new, site.addr)
        assert old_text == "nop dword ptr [rax + rax]"
        assert new_text == f"call {tracer:#x}"

        executed = EXECUTES.search(f.detail)
        assert executed, f.detail
        torn = bytes.fromhex(executed.group(1))
        assert len(torn) == site.size
        assert torn not in (site.old, site.new), f.detail

        assert f.consequence, f"no consequence for {f.title}: {f.detail}"
        first = CONSEQUENCE.match(f.consequence[0])
        assert first, f.consequence[0]
        # the CPU executed at the site, and what it executed is neither version
        assert first["where"] == f"{site.name}_func", f.consequence
        assert machine.image.symbols[first["where"]] == site.addr
        assert first["insn"] not in (old_text, new_text), f.consequence
        for line in f.consequence:
            m = CONSEQUENCE.match(line)
            assert m, line
            call = CALL.match(m["insn"])
            if call and m["effect"].startswith("pc 0x"):
                # an executed call lands where its (torn) displacement points
                assert m["effect"] == f"pc {call[1]}", line
            if "guest fault" in m["effect"] or (call and int(call[1], 16) != tracer):
                wild += 1
                break
    assert wild, "no finding shows a wild call or a guest fault:\n" + "\n".join(
        f"{f.detail} | {f.consequence}" for f in findings)
