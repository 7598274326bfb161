"""stale-after-complete: a CPU executes the old instruction after the protocol declared
completion.

Once a protocol says its patch is complete, a fetch at the start of a site whose memory no
longer holds the old code must not execute the old code's first instruction.
"""

from __future__ import annotations

from .base import Oracle


class StaleAfterComplete(Oracle):
    id = "stale-after-complete"
    fires_when = "a CPU executes the old instruction after the protocol declared completion"
    TITLES = {"stale": "stale {site} executed after completion in {ctx}"}

    def on_fetch_after_complete(self, cpu, frame, site, view, off) -> None:
        m = self.m
        if not off and site.truth != site.old:
            lens = m.arch.insn_lengths(site.old)
            if lens and view[:lens[0]] == site.old[:lens[0]]:
                self.report(cpu, "stale", f"executes old {view.hex(' ')}; memory holds "
                                          f"{bytes(site.truth).hex(' ')}",
                            site=site.name, ctx=m.context_name(cpu))
