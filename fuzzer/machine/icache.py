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
  CPU, done at the issuer's next DSB: `Cpu.ilevel`, the version an invalidated cache refills
  from, which is what the point of unification holds when the invalidation completes), and
  only then does a
  context synchronization event on the fetching CPU (ISB, exception entry or return, an IPI
  taken: `serialize`) raise its floor to that version. An architecture whose data side needs
  no cleaning (arm64 CTR_EL0.IDC) cleans every version as it reaches memory; one whose
  instruction side needs no invalidation (DIC) refills from the point of unification directly.
* Fetches happen in program order (each no earlier than the one before it), and a version can
  be fetched only once it is in memory: so once a CPU has fetched a version written at some
  moment, its later fetches happen after that moment, and return nothing older than what its
  instruction cache could still hold then: a version at least the refill level of every
  invalidation completed by then (`Cpu.ival`); with coherent fetches, the version memory held
  then. Each version is stamped with the moment it reached memory (`SiteState.hist_t`), each
  completed invalidation with its moment, and each CPU keeps the moment of its latest fetch
  (`Cpu.ftime`); a context synchronization event moves it to now.
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
                 "coherent": "the architecture's", "cmodx_unsafe": "the architecture's",
                 "clock": "only orders new moments after every recorded one (the recorded ones are "
                          "in the sites' and CPUs' state)"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        arch = machine.arch
        self.needs_clean = arch.icache_needs_clean
        self.needs_inval = arch.icache_needs_invalidate
        self.coherent = arch.coherent_fetches
        self.cmodx_unsafe = arch.cmodx_unsafe
        self.clock = 0

    def reset(self) -> None:
        self.clock = 0

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    # ---- versions --------------------------------------------------------------------------
    def text_reached(self, site: SiteState) -> None:
        site.hist.append(bytes(site.truth))
        site.hist_t.append(self.tick())
        for c in self.m.cpus:  # own stores a FENCE.I let a CPU fetch: all in memory now
            if c.iown and site.name in c.iown and not any(
                    type(key) is tuple and key[1] is site for key, _ in c.sb):
                del c.iown[site.name]
                newest = len(site.hist) - 1
                c.ifloor[site.name] = newest
                self._invalidated(c, site.name, newest)
                c.ftime = max(c.ftime, site.hist_t[-1])

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
            cpu.maint.append(("inval", m.sites[name].name, None))
        elif kind in ("inval_local", "inval_all"):
            cpu.maint.append((kind, "", None))
        elif kind == "inval_local_sync":
            # RISC-V FENCE.I: this CPU's fetches from here on see every store visible to it:
            # every version in memory now, and its own stores still in its buffer, which no
            # other CPU sees yet (`iown`, until they reach memory); nothing waits for a barrier
            for site in m.sites.values():
                self._invalidated(cpu, site.name, self.pou(site))
            self.serialize(cpu)
            own = {key[1] for key, _ in cpu.sb if type(key) is tuple}
            cpu.iown = {s.name: self.memory.text_as_seen(cpu, s) for s in m.sites.values() if s in own}
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
                self._cleaned(name, value)
            elif kind == "inval":
                # an invalidated line refills from the point of unification as it is once the
                # invalidation has completed (or later)
                level = self.pou(m.sites[name])
                for c in m.cpus:
                    self._invalidated(c, name, level)
            else:  # every site: this CPU's cache (IC IALLU) or every CPU's (IC IALLUIS)
                levels = [(s.name, self.pou(s)) for s in m.sites.values()]
                for c in (m.cpus if kind == "inval_all" else (cpu,)):
                    for name_, level in levels:
                        self._invalidated(c, name_, level)
        cpu.maint = []

    def order_cleans(self, cpu: Cpu) -> None:
        """A full DMB: `cpu`'s cache cleans (DC CVAU) before it are performed before anything
        after it (herd's aarch64.cat bob: DC.CVAU; po; dmb.full; po; M); invalidations still
        wait for a DSB."""
        if not any(kind == "clean" for kind, _, _ in cpu.maint):
            return
        for kind, name, value in cpu.maint:
            if kind == "clean":
                self._cleaned(name, value)
        cpu.maint = [e for e in cpu.maint if e[0] != "clean"]

    def _cleaned(self, name: str, version: int) -> None:
        """A clean of site `name` (up to `version`) reached the point of unification."""
        site = self.m.sites[name]
        site.pou = max(site.pou, version)

    def _invalidated(self, c: Cpu, name: str, level: int) -> None:
        if level > c.ilevel.get(name, 0):
            c.ilevel[name] = level
            c.ival[name] = (*c.ival.get(name, ()), (self.tick(), level))

    def inval_level_at(self, cpu: Cpu, name: str, moment: int) -> int:
        """The refill level of the invalidations of `name` completed on `cpu` by `moment`."""
        level = 0
        for t, lvl in cpu.ival.get(name, ()):
            if t > moment:
                break
            level = lvl
        return level

    def serialize(self, cpu: Cpu) -> None:
        """A context synchronization event: fetches from here on see at least what the
        completed maintenance made visible to this CPU's instruction fetch."""
        floor = cpu.ifloor
        for site in self.m.sites.values():
            lvl = self.level(cpu, site)
            if lvl > floor.get(site.name, 0):
                floor[site.name] = lvl
        cpu.ftime = self.clock  # fetches after it happen after it

    # ---- fetching ----------------------------------------------------------------------------
    def arrive(self, cpu: Cpu, site: SiteState) -> None:
        """Nothing is fixed on arrival: the fetch may return any version it may still see."""

    def before_fetch(self, cpu: Cpu, frame: Frame, site: SiteState, fair: bool) -> None:
        if cpu.iown and site.name in cpu.iown:
            self.show(cpu, site, cpu.iown[site.name])
            return
        hist = site.hist
        floor = cpu.ifloor.get(site.name, 0)
        newest = len(hist) - 1
        if floor == newest and cpu.views[site.name] == hist[-1]:
            t = site.hist_t[newest]
            if t > cpu.ftime:
                cpu.ftime = t
            return
        unit = self.unit
        view = bytearray(cpu.views[site.name])
        ch = self.m.ch
        ftime = cpu.ftime
        hist_t = site.hist_t
        # the versions it may fetch (newest first): in memory by the fetch's moment, which is no
        # earlier than its last fetch's, and still in its cache then (or memory's, if coherent)
        if self.coherent:
            allowed = [i for i in range(newest, floor - 1, -1) if i == newest or hist_t[i + 1] > ftime]
        elif site.name in cpu.ival:
            allowed = [i for i in range(newest, floor - 1, -1)
                       if i >= self.inval_level_at(cpu, site.name, max(ftime, hist_t[i]))]
        else:  # no invalidation completed here: every version from the floor up
            allowed = range(newest, floor - 1, -1)
        moment = ftime
        for off in range(0, site.size, unit):
            # the distinct versions of this unit it may fetch, newest first
            seen: list[bytes] = []
            at: list[int] = []
            for i in allowed:
                word = hist[i][off:off + unit]
                if word not in seen:
                    seen.append(word)
                    at.append(i)
            if len(seen) > 1:
                bad = self.cmodx_unsafe(seen, [hist[i] for i in at], off)
                if bad is not None:
                    other = next(w for w in seen if w != bad)
                    self.checks.cmodx(cpu, frame, site, off, seen[-1] if bad != seen[-1] else other, bad)
                    return
                pick = 0 if fair else ch.byte(_PICK.default, _PICK.name, len(seen),
                                              tuple(range(len(seen)))) % len(seen)
            else:
                pick = 0
            view[off:off + unit] = seen[pick]
            moment = max(moment, hist_t[at[pick]])
        cpu.ftime = moment
        self.show(cpu, site, bytes(view))

    def candidates(self, cpu: Cpu, site: SiteState) -> list[bytes]:
        """The whole-site versions `cpu` may still fetch, newest first (tests, reports)."""
        return list(dict.fromkeys(reversed(site.hist[cpu.ifloor.get(site.name, 0):])))

