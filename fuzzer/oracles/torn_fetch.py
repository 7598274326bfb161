"""torn-fetch: a CPU executes bytes at a patch site that were never one whole intended version.

The machine classifies each fetch at a site against every version the site was written to
(`machine/fetch.py`); bytes that are no whole version are a mix of moments: old and new bytes of
a multi-byte write seen by a CPU that fetched while it happened.
"""

from __future__ import annotations

from .base import Oracle


class TornFetch(Oracle):
    id = "torn-fetch"
    fires_when = "a CPU executes bytes at a patch site that were never one whole intended version"
    shows_consequence = True
    TITLES = {"torn": "torn fetch at {site} in {ctx}"}

    def on_fetch_torn(self, cpu, frame, site, view) -> None:
        m = self.m
        self.report(cpu, "torn", f"executes {view.hex(' ')} = {m.arch.disasm(view, site.addr)}; "
                                 f"memory holds {bytes(site.truth).hex(' ')}",
                    site=site.name, ctx=m.context_name(cpu))
