"""What a fetch at a patch site is: the classification the fetch oracles judge.

Every text write records the whole version it leaves the site in (`written`); a fetch is then
classified against those versions:

* WHOLE: the instruction about to execute is a whole instruction of a written version (or of
  the old or the new one, which are always legitimate), and its head is the old code, the new
  code or the trap instruction;
* FOREIGN: a whole written version, but neither old, new nor a trap (a protocol wrote
  something else);
* TORN: no written version has these bytes here: a mix of moments.

Verdicts depend only on the site's old and new bytes, its written versions and the bytes
fetched, so they are memoized per such state across runs (a run does not decode again what the
runs before it decoded).
"""

from __future__ import annotations

from .. import events as ev
from .part import Part
from .state import Cpu, Frame, SiteState

WHOLE, TORN, FOREIGN = True, False, "foreign"
_EMULATABLE = "emulatable"  # key, in a site's verdict memo, of the versions a handler may emulate


class FetchModel(Part):
    SIBLINGS = ('checks',)
    # (arch, old, new, written versions) -> {(view, off): verdict}, shared by every machine
    _verdicts: dict[tuple, dict] = {}
    _semantics: dict[tuple[str, bytes, int], tuple[str, int]] = {}

    NOT_STATE = {"arch": "fixed", "trap": "fixed",
                 "fresh": "memos of the sites' verdicts after a reset"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.arch = machine.arch
        self.trap = machine.arch.trap_insn
        # a site's verdict memo right after a reset (written versions: the old code only)
        self.fresh = {name: self._memo_for(s) for name, s in machine.sites.items()}



    def reset(self, site: SiteState) -> None:
        site.reset()
        site.verdicts = self.fresh[site.name]

    def _memo_for(self, site: SiteState) -> dict:
        key = (self.arch.name, site.old, site.new, frozenset(site.intended))
        memo = FetchModel._verdicts.get(key)
        if memo is None:
            memo = FetchModel._verdicts[key] = {}
        return memo

    def written(self, site: SiteState, whole: bytes) -> None:
        """A text write leaves `site` holding `whole` (as its writer sees memory)."""
        if whole not in site.intended:
            site.intended = site.intended | {whole}
            site.verdicts = self._memo_for(site)

    # ---- the fetch check ------------------------------------------------------------------
    def check(self, cpu: Cpu, frame: Frame, site: SiteState) -> None:
        """`cpu` is about to execute at `frame.pc` inside `site`, as its view has it."""
        m = self.m
        view = bytes(cpu.views[site.name])
        off = frame.pc - site.addr
        key = (view, off)
        verdict = site.verdicts.get(key)
        if verdict is None:
            verdict = site.verdicts[key] = self.classify(site, view, off)
        if m.observing:
            label = ("old" if view == site.old else "written") if site.program else \
                "new" if view == site.new else "old" if view == site.old else (
                "trap" if view[:1] == self.trap else "intended" if verdict else "TORN")
            m.emit(cpu, ev.Fetch, site.name, off, frame.pc, view, label)
        if verdict is WHOLE:
            if site.completed is not None and not frame.fetch_excused:
                self.checks.fetch_after_complete(cpu, frame, site, view, off)
        elif verdict is TORN:
            self.checks.fetch_torn(cpu, frame, site, view)
        else:
            self.checks.fetch_foreign(cpu, frame, site, view)

    def classify(self, site: SiteState, view: bytes, off: int = 0):
        lengths = self.arch.insn_lengths
        if off:
            lens = lengths(view[off:])
            if not lens:
                return TORN
            n = lens[0]
            return any(off in self.boundaries(v) and v[:1] != self.trap
                       and v[off:off + n] == view[off:off + n] and lengths(v[off:])[:1] == (n,)
                       for v in site.intended | {site.old, site.new})
        lens = lengths(view)
        if not lens:
            return TORN
        first = lens[0]
        head = view[:first]
        # the old and the new instruction are always legitimate to run, even before the new
        # one is whole in memory (an old first byte and a new tail can spell the new call)
        if not any(v[:first] == head and lengths(v)[:1] == (first,)
                   for v in site.intended | {site.old, site.new}):
            return TORN
        if head in (site.old[:first], site.new[:first]) or head == self.trap:
            return WHOLE
        return FOREIGN

    def boundaries(self, code: bytes) -> set[int]:
        offs, acc = set(), 0
        for n in self.arch.insn_lengths(code):
            acc += n
            offs.add(acc)
        return offs

    def resumable(self, site: SiteState, view: bytes, off: int) -> bool:
        """Can code interrupted at `off` inside the site resume, the site holding `view`? Only
        if what follows is still the rest of a whole version with an instruction boundary there
        (the untouched tail of old multi-byte NOPs, say), and not a trap's."""
        return any(v[:1] != self.trap and v[off:] == view[off:] and off in self.boundaries(v)
                   for v in site.intended | {site.old, site.new})

    def emulatable(self, site: SiteState) -> frozenset[bytes]:
        """The versions a trap handler may emulate at the site: old, new and every written one
        that is not a trap."""
        memo = site.verdicts
        good = memo.get(_EMULATABLE)
        if good is None:
            good = memo[_EMULATABLE] = frozenset(
                {site.old, site.new} | {v for v in site.intended if v[:1] != self.trap})
        return good

    def semantics(self, insn: bytes, addr: int) -> tuple[str, int]:
        """What a whole patched instruction does at `addr` (the arch's answer, memoized)."""
        key = (self.arch.name, insn, addr)
        sem = FetchModel._semantics.get(key)
        if sem is None:
            sem = FetchModel._semantics[key] = self.arch.semantics(insn, addr)
        return sem
