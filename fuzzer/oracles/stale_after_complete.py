"""stale-after-complete: a CPU executes something else than what a completed patch wrote.

Once a protocol declares the patch of a site complete (`k.complete(site)`, or every task
returned), a CPU that *begins* to fetch the site afterwards must execute the version the
completing CPU saw there. A fetch that began before the declaration has an excuse under the
architecture's rules (x86: bytes stored after a fetch began may or may not be seen; see
`patchfuzz rules`), so it is not judged: the NMI that already stood at the site while
stop_machine patched it may still run the old code.
"""

from __future__ import annotations

from .base import Oracle


class StaleAfterComplete(Oracle):
    id = "stale-after-complete"
    fires_when = ("a CPU that begins fetching a site after its patch was declared complete executes "
                  "something else than the completed version")
    TITLES = {"stale": "stale {site} executed after completion in {ctx}"}

    def on_fetch_after_complete(self, cpu, frame, site, view, off) -> None:
        m = self.m
        done = site.completed
        if off and off not in m.fetch.boundaries(done):
            return  # not an instruction of the completed version: mid-insn-resume's to judge
        lens = m.arch.insn_lengths(done[off:])
        n = lens[0] if lens else len(done) - off
        if view[off:off + n] != done[off:off + n]:
            self.report(cpu, "stale", f"executes {view.hex(' ')}; the patch completed with "
                                      f"{done.hex(' ')}; memory holds {bytes(site.truth).hex(' ')}",
                        site=site.name, ctx=m.context_name(cpu))
