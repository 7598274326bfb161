"""mid-insn-resume: interrupted or preempted code resumes at a PC inside a site that is not an
instruction boundary of what the site now holds.

Resuming is fine only if what follows the PC is still the rest of a whole version with an
instruction boundary there (the untouched tail of old multi-byte NOPs, for instance).
"""

from __future__ import annotations

from .base import Oracle


class MidInsnResume(Oracle):
    id = "mid-insn-resume"
    fires_when = "a saved or preempted PC points inside a patched range that changed"
    shows_consequence = True
    TITLES = {"resume": "resume inside {site} after {after}"}

    def on_resume(self, cpu, after) -> None:
        m = self.m
        f = cpu.code_frame
        if f is None or cpu.frames[-1] is not f:
            return  # code resumes only when its frame is back on top
        site = m.site_inside(f.pc)
        if site is None:
            return
        view = bytes(cpu.views[site.name])
        if not m.fetch.resumable(site, view, f.pc - site.addr):
            self.report(cpu, "resume", f"resumes at {m.sym(f.pc)} while the site holds {view.hex(' ')}",
                        site=site.name, after=after)
