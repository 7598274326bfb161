"""unhandled-trap: a breakpoint trap at a patch site is not recognized by the protocol's handler.

A trap the schedule injected as someone else's (a kprobe) may be passed on; a trap at the
protocol's own site must be claimed, or the kernel would die on it.
"""

from __future__ import annotations

from .base import Oracle


class UnhandledTrap(Oracle):
    id = "unhandled-trap"
    fires_when = "a breakpoint trap at a patch site is not recognized by the protocol's handler"
    TITLES = {"unhandled": "unhandled {trap} at {site} in {ctx}"}

    def on_trap_unclaimed(self, cpu, addr, site) -> None:
        m = self.m
        trap = m.arch.trap_name
        self.report(cpu, "unhandled", f"the protocol's handler did not recognize the {trap} at {m.sym(addr)}",
                    trap=trap, site=site.name if site else m.sym(addr), ctx=m.context_name(cpu))
