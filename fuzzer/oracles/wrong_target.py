"""wrong-target: control flow or handler emulation matches neither the old nor the new semantics.

Three ways: a site holds a whole version that is neither old nor new (a protocol wrote something
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
    }

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
        if answer.insn not in good:
            dis = m.arch.disasm
            self.report(cpu, "insn", f"emulated {dis(answer.insn, addr)}; the site's versions are "
                                     + ", ".join(dis(v, addr) for v in sorted(good)),
                        trap=m.arch.trap_name, site=site.name)
