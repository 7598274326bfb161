"""wrong-target: control flow or handler emulation matches neither the old nor the new semantics.

Four ways: a CPU runs the first instructions of a site from one version and the rest from
another (it was preempted or interrupted between them while the site was rewritten: a RISC-V
AUIPC of one call and the JALR of another go somewhere neither goes); a site holds a whole version that is neither old nor new (a protocol wrote something
else there); the trap handlers claim a breakpoint that is not theirs (a foreign one, or another
address); a handler emulates an instruction that is none of the site's versions.
"""

from __future__ import annotations

from .. import ops
from .base import Oracle


class WrongTarget(Oracle):
    id = "wrong-target"
    fires_when = "control flow or handler emulation matches neither the old nor the new semantics"
    TITLES = {
        "site": "{site} holds neither old nor new instruction",
        "foreign": "{trap} handler claims a foreign breakpoint in {ctx}",
        "insn": "{trap} handler emulates wrong instruction at {site}",
        "mixed": "{site} runs a mix of two versions in {ctx}",
    }

    def on_fetch_mixed(self, cpu, frame, site, ran, view) -> None:
        m = self.m
        arch = m.arch
        off = len(ran)
        n = (arch.insn_lengths(view[off:]) or (len(view) - off,))[0]
        runs = ran + view[off:off + n]
        kind, target = arch.semantics(runs, site.addr) if len(runs) == site.size else ("bad", 0)
        went = (f": together they {kind} {m.sym(target)}" if kind in ("call", "jmp") else "")

        def does(v: bytes) -> str:
            k, t = m.fetch.semantics(v, site.addr)
            what = f" ({k} {m.sym(t)})" if k in ("call", "jmp") else " (run on)" if k == "next" else ""
            return f"{arch.disasm(v, site.addr)}{what}"

        versions = ", ".join(does(v) for v in (site.old, site.new))
        m.report(cpu, self.id, self.TITLES["mixed"].format(site=site.name, ctx=m.context_name(cpu)),
                 f"ran {arch.disasm(ran, site.addr)} before it was stopped inside the site, now "
                 f"runs {arch.disasm(view[off:off + n], site.addr + off)} of another version{went}; "
                 f"the site's old and new versions are {versions}", shows_consequence=True)

    def on_fetch_foreign(self, cpu, frame, site, view) -> None:
        dis = self.m.arch.disasm
        self.report(cpu, "site", f"executes {dis(view, site.addr)}; old is {dis(site.old, site.addr)}, "
                                 f"new is {dis(site.new, site.addr)}", site=site.name)

    def on_trap_claimed(self, cpu, addr, site, foreign, answer) -> None:
        m = self.m
        emulate = type(answer) is ops.Emulate
        if foreign or (emulate and (site is None or answer.addr != addr)):
            what = (f"emulated {answer.insn.hex(' ')} for {m.sym(answer.addr)}" if emulate
                    else f"answered {answer!r}")
            self.report(cpu, "foreign", f"trap at {m.sym(addr)}, handler {what}",
                        trap=m.arch.trap_name, ctx=m.context_name(cpu))
            return
        if not emulate:
            return  # single-step, retry, detour: what runs next is judged when it runs
        good = m.fetch.emulatable(site)
        off, n = addr - site.addr, len(answer.insn)
        # an instruction of a version, where the breakpoint stands (a site of several
        # instructions: the one the breakpoint replaced)
        if not any(v[off:off + n] == answer.insn and (off == 0 or off in m.fetch.boundaries(v))
                   and off + n in m.fetch.boundaries(v) for v in good):
            dis = m.arch.disasm
            self.report(cpu, "insn", f"emulated {dis(answer.insn, addr)}; the site's versions are "
                                     + ", ".join(dis(v, addr) for v in sorted(good)),
                        trap=m.arch.trap_name, site=site.name)
