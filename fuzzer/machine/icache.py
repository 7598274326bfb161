"""Instruction fetch that is not coherent with data stores (arm64, riscv64): the views of a
machine whose architecture says `fetch_model = "maintained"`.

The model (each rule is argued, with its source, in the architecture's RULES):

* Every version a site's text held in memory is kept, oldest first (`SiteState.hist`). A CPU
  may fetch, per fetch unit, any version from its floor (`Cpu.ifloor`) to the newest: its
  instruction cache may hold an old line, and fetches may happen early and out of order, so
  two fetches of one location need not agree (new, then old) unless the architecture says
  fetches are coherent (then a fetch raises the floor to what it fetched). Which version a
  fetch returns is a draw (`draws.FETCH_VERSION`, newest first).
* A write becomes visible to instruction fetch in steps: cleaned to the point of unification
  (`dc_cvau`, done at the writer's next DSB: `SiteState.pou`), then the instruction caches are
  invalidated (`ic_ivau` on every CPU, `ic_iallu` on the issuing CPU only, IC IALLUIS on every
  CPU, done at the issuer's
  next DSB: `Cpu.ilevel`, the version an invalidated cache refills from), and only then does a
  context synchronization event on the fetching CPU (ISB, exception entry or return, an IPI
  taken: `serialize`) raise its floor to that version. An architecture whose data side needs
  no cleaning (arm64 CTR_EL0.IDC) cleans every version as it reaches memory; one whose
  instruction side needs no invalidation (DIC) refills from the point of unification directly.
* A fetch that may still return two different versions of a unit is a concurrent modification
  and execution: where the architecture limits that to a list of instructions
  (`Arch.cmodx_safe`, arm64's CMODX list), any other pair is reported (`cmodx-violation`).

Unicorn never decides what a CPU fetches here: the chosen version is written into the CPU's
own copy of the text, which flushes its translations (MULTIARCH.md 2.2).
"""

from __future__ import annotations

from .. import draws
from .. import events as ev
from .state import Cpu, Frame, SiteState
from .views import Views

_PICK = draws.FETCH_VERSION


class MaintainedViews(Views):
    NOT_STATE = {**Views.NOT_STATE, "needs_clean": "the architecture's", "needs_inval": "the architecture's",
                 "coherent": "the architecture's", "cmodx_safe": "the architecture's"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        arch = machine.arch
        self.needs_clean = arch.icache_needs_clean
        self.needs_inval = arch.icache_needs_invalidate
        self.coherent = arch.coherent_fetches
        self.cmodx_safe = arch.cmodx_safe

    # ---- versions --------------------------------------------------------------------------
    def text_reached(self, site: SiteState) -> None:
        site.hist.append(bytes(site.truth))

    def pou(self, site: SiteState) -> int:
        """The newest version cleaned to the point of unification."""
        return site.pou if self.needs_clean else len(site.hist) - 1

    def level(self, cpu: Cpu, site: SiteState) -> int:
        """The version `cpu`'s instruction cache refills from once invalidated."""
        return cpu.ilevel.get(site.name, 0) if self.needs_inval else self.pou(site)

    # ---- maintenance -------------------------------------------------------------------------
    def maintain(self, cpu: Cpu, kind: str, name: str) -> None:
        m = self.m
        if kind == "clean":
            site = m.sites[name]
            # a clean is ordered after this CPU's earlier stores to the same location
            self.memory.drain_site(cpu, site)
            cpu.maint.append(("clean", site.name, len(site.hist) - 1))
        elif kind == "inval":
            site = m.sites[name]
            cpu.maint.append(("inval", site.name, self.pou(site)))
        elif kind in ("inval_local", "inval_all"):
            cpu.maint.append((kind, "", tuple(self.pou(s) for s in m.sites.values())))
        else:
            raise ValueError(f"unknown cache maintenance {kind!r}")
        if m.observing:
            m.emit(cpu, ev.CacheMaint, kind, name)

    def barrier(self, cpu: Cpu) -> None:
        """A DSB: the maintenance `cpu` issued is complete."""
        if not cpu.maint:
            return
        m = self.m
        for kind, name, value in cpu.maint:
            if kind == "clean":
                site = m.sites[name]
                site.pou = max(site.pou, value)
            elif kind == "inval":
                for c in m.cpus:
                    c.ilevel[name] = max(c.ilevel.get(name, 0), value)
            else:  # every site: this CPU's cache (IC IALLU) or every CPU's (IC IALLUIS)
                for c in (m.cpus if kind == "inval_all" else (cpu,)):
                    for s, v in zip(m.sites, value):
                        c.ilevel[s] = max(c.ilevel.get(s, 0), v)
        cpu.maint = []

    def serialize(self, cpu: Cpu) -> None:
        """A context synchronization event: fetches from here on see at least what the
        completed maintenance made visible to this CPU's instruction fetch."""
        floor = cpu.ifloor
        for site in self.m.sites.values():
            lvl = self.level(cpu, site)
            if lvl > floor.get(site.name, 0):
                floor[site.name] = lvl

    # ---- fetching ----------------------------------------------------------------------------
    def arrive(self, cpu: Cpu, site: SiteState) -> None:
        """Nothing is fixed on arrival: the fetch may return any version it may still see."""

    def before_fetch(self, cpu: Cpu, frame: Frame, site: SiteState, fair: bool) -> None:
        hist = site.hist
        floor = cpu.ifloor.get(site.name, 0)
        if floor == len(hist) - 1 and cpu.views[site.name] == hist[-1]:
            return
        unit = self.unit
        view = bytearray(cpu.views[site.name])
        ch = self.m.ch
        chosen_min = len(hist) - 1
        for off in range(0, site.size, unit):
            # the distinct versions of this unit it may fetch, newest first
            seen: list[bytes] = []
            at: list[int] = []
            for i in range(len(hist) - 1, floor - 1, -1):
                word = hist[i][off:off + unit]
                if word not in seen:
                    seen.append(word)
                    at.append(i)
            if len(seen) > 1:
                bad = next((w for w in seen if not self.cmodx_safe(w)), None)
                if bad is not None:
                    other = next(w for w in seen if w != bad)
                    self.checks.cmodx(cpu, frame, site, off, seen[-1] if bad != seen[-1] else other, bad)
                    return
                pick = 0 if fair else ch.byte(_PICK.default, _PICK.name, len(seen),
                                              tuple(range(len(seen)))) % len(seen)
            else:
                pick = 0
            view[off:off + unit] = seen[pick]
            chosen_min = min(chosen_min, at[pick])
        if self.coherent and chosen_min > floor:
            cpu.ifloor[site.name] = chosen_min
        self.show(cpu, site, bytes(view))

    def candidates(self, cpu: Cpu, site: SiteState) -> list[bytes]:
        """The whole-site versions `cpu` may still fetch, newest first (tests, reports)."""
        return list(dict.fromkeys(reversed(site.hist[cpu.ifloor.get(site.name, 0):])))

