"""deadlock: a cycle in the wait-for graph, an IPI that can never be taken, or no progress.

Lock cycles are found the moment the last edge appears (`machine/sync.py` keeps the graph),
not by timeout; a stall is a state in which no CPU can run and nothing is left to drain; "no
progress" is the step budget running out.
"""

from __future__ import annotations

from .base import Oracle


class Deadlock(Oracle):
    id = "deadlock"
    fires_when = "a cycle in the wait-for graph, an IPI that can never be taken, or no progress"
    TITLES = {
        "cycle": "deadlock: lock cycle {locks}",
        "ipi": "deadlock: IPI can never be taken",
        "stall": "deadlock: no CPU can make progress",
        "hang": "hang: no progress",
    }

    def on_lock_wait(self, cpu, frame) -> None:
        cycle = self.m.sync.cycle_from(frame)
        if cycle:
            names = sorted({f.tags["waits"] for f in cycle})
            desc = " -> ".join(f"{f.task or f.kind}@cpu{f.k.cpu} waits {f.tags['waits']}" for f in cycle)
            self.report(cpu, "cycle", desc, locks=" vs ".join(names))

    def on_stall(self) -> None:
        m = self.m
        waits = []
        for c in m.cpus:
            if not c.online or not c.frames:
                continue
            op = c.frames[-1].op
            waits.append(f"cpu{c.idx}: {type(op).__name__}")
            pending = m.interrupts.pending_ipis_of(op)
            if pending:
                self.report(c, "ipi", "; ".join(waits) + f"; pending IPI on cpus {pending}")
                return
        self.report(m.cpus[0], "stall", "; ".join(waits))

    def on_budget_spent(self, why) -> None:
        self.report(self.m.cpus[0], "hang", why)
