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
_LENGTH, _MIXED = "length", "mixed"  # keys of instruction lengths and of passes, in the same memo


class FetchModel(Part):
    SIBLINGS = ('checks',)
    # (arch, old, new, written versions) -> {(view, off): verdict}, shared by every machine
    _verdicts: dict[tuple, dict] = {}
    _semantics: dict[tuple[str, bytes, int], tuple[str, int]] = {}

    NOT_STATE = {"arch": "fixed", "trap": "fixed", "traps": "fixed", "multi": "fixed",
                 "fresh": "memos of the sites' verdicts after a reset"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.arch = machine.arch
        self.trap = machine.arch.trap_insn
        self.traps = frozenset(machine.arch.breakpoints())
        # a site's verdict memo right after a reset (written versions: the old code only)
        self.fresh = {name: self._memo_for(s) for name, s in machine.sites.items()}
        # the sites whose old or new version is several instructions: passes through them are
        # followed (`follow`); a breakpoint over the head of a single instruction is no such site
        self.multi = frozenset(name for name, s in machine.sites.items()
                               if len(self.arch.insn_lengths(s.old)) > 1 or len(self.arch.insn_lengths(s.new)) > 1)



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
            return
        else:
            self.checks.fetch_foreign(cpu, frame, site, view)
        if site.name in self.multi and m.finding is None:
            self.follow(cpu, frame, site, view, off)

    def follow(self, cpu: Cpu, frame: Frame, site: SiteState, view: bytes, off: int) -> None:
        """Follow `frame`'s pass through a site of several instructions: each instruction is
        fetched on its own, so one that was interrupted or preempted between two of them may
        run the first from one version and the next from another (RISC-V's AUIPC of an old
        call, then the JALR of a new one), although each fetch is whole."""
        memo = site.verdicts
        key = (_LENGTH, view, off)
        n = memo.get(key)
        if n is None:
            n = memo[key] = (self.arch.insn_lengths(view[off:]) or (site.size - off,))[0]
        run = frame.site_run
        if not off:
            frame.site_run = (site.name, view[:n]) if n < site.size else None
            return
        if run is None or run[0] != site.name or len(run[1]) != off:
            frame.site_run = None  # entered in the middle: nothing ran before here
            return
        ran = run[1] + view[off:off + n]
        key = (_MIXED, ran, view)
        fine = memo.get(key)
        if fine is None:
            fine = memo[key] = self.consistent(site, ran, view)
        frame.site_run = (site.name, ran) if off + n < site.size else None
        if not fine:
            self.checks.fetch_mixed(cpu, frame, site, run[1], view)

    def consistent(self, site: SiteState, ran: bytes, view: bytes) -> bool:
        """Is a pass that ran `ran` so far, the site holding `view` for the rest, one a version
        could have made: a prefix of a version, or a mix that does what a version does (an
        AUIPC that computes a temporary nobody reads, then the old NOP)?"""
        versions = site.intended | {site.old, site.new}
        if any(v.startswith(ran) for v in versions):
            return True
        mix = ran + view[len(ran):]
        effect = self.semantics(mix, site.addr)
        return effect[0] != "bad" and any(self.semantics(v, site.addr) == effect for v in versions)

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
        if head in (site.old[:first], site.new[:first]) or head in self.traps:
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
