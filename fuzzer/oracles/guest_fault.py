"""guest-fault: the emulated code raises invalid opcode or an unmapped/protected access."""

from __future__ import annotations

from .base import Oracle


class GuestFault(Oracle):
    id = "guest-fault"
    fires_when = "invalid opcode, unmapped fetch/access raised by the emulated code"
    TITLES = {"fault": "guest fault: {kind} in {ctx}"}

    def on_guest_fault(self, cpu, frame, kind, addr) -> None:
        m = self.m
        self.report(cpu, "fault", f"{kind} at {m.sym(addr)} (pc {m.sym(frame.pc)})",
                    kind=kind, ctx=m.context_name(cpu))
