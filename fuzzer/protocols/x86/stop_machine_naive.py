"""x86 stop_machine, naive: write each 5-byte site while every other CPU is parked.

The idea before NMI-safe modification (dynamic ftrace, 2008): no CPU runs traced code while it
is held in stop_machine, so a plain non-atomic write looks safe. It is not: NMIs still arrive on
the parked CPUs (and on the patching CPU), and the NMI handler calls traced functions. An NMI
that lands between two byte stores serializes its view of the half-written site and executes it.

Variants: naive -- torn-fetch (an NMI executes a half-written call).
"""

from __future__ import annotations

from ...arch.x86_64 import NOP5
from ...protocol import Call, Protocol, Site


class StopMachineNaive(Protocol):
    name = "x86/stop_machine_naive"
    summary = "non-atomic 5-byte writes under stop_machine while NMIs run traced code"
    sites = {"fentry_a": Site(old=NOP5, new=Call("ftrace_caller")),
             "fentry_b": Site(old=NOP5, new=Call("ftrace_caller"))}
    variants = {"naive": {}}
    expect = {"naive": "torn-fetch"}

    def patcher(self, k):
        yield from k.stop_machine(self._write_all)

    def _write_all(self, k):
        for name in self.sites:
            site = k.site(name)
            yield k.expect_text(name, site.old)
            yield k.poke(name, site.new)
