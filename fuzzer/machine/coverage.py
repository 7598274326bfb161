"""Interleaving coverage: an observer of the machine's events.

Each event of a run maps to a feature (a hashed tuple) saying what happened relative to the
protocol's progress and the other CPUs: which patcher step a fetch, trap, NMI, IPI or
preemption fell into, which write each read observed (reads-from pairs), which old/new byte mix
a CPU fetched, lock acquisition orders. Features one step from an oracle's violation are also
flagged as *near misses* (`RunResult.near`): a text store while another CPU is fetching other
bytes at that site (a torn fetch in the making), a free while a frame that read the variable
still runs (a use after free in the making). atheris feeds the features to libFuzzer.

Features are computed from the machine's state at the moment of the event, which is why the
machine emits each event at the point its feature describes.
"""

from __future__ import annotations

import zlib
from typing import Any

from .. import events as ev
from .part import Part
from .state import Cpu


class Coverage(Part):
    NOT_STATE = {"features": "coverage only", "at": "coverage only",
                 "near": "coverage only", "_observe": "fixed"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.features: list[int] = []
        self.at: list[int] = []  # decisions drawn when each feature occurred
        self.near: list[int] = []
        self._observe = {
            ev.Load: self._load, ev.Atomic: self._atomic, ev.Poke: self._poke,
            ev.TextDrain: self._text_drain, ev.Drain: self._drain, ev.Locked: self._lock,
            ev.Preempted: self._preempt, ev.Fetch: self._fetch, ev.Trap: self._trap,
            ev.Nmi: self._nmi, ev.Irq: self._irq, ev.TakeIpi: self._ipi, ev.Free: self._free,
            ev.Migrated: self._migrated,
        }

    def observe(self, cpu: Cpu, e: ev.Event) -> None:
        handler = self._observe.get(type(e))
        if handler is not None:
            handler(cpu, e)

    def _feat(self, *parts: Any, near: bool = False) -> None:
        """One feature (crc32, not hash(): str hashing is randomized)."""
        if near:
            self.near.append(len(self.features))
        self.features.append(zlib.crc32(repr(parts).encode()))
        self.at.append(self.m.ch.drawn)

    # ---- what is about to race --------------------------------------------------------------
    def _fetching(self, site_name: str, writer: Cpu, off: int, data: bytes) -> tuple[str, ...]:
        """Who is in the middle of fetching the site with other bytes than `writer` is storing
        there: the precondition of a torn fetch."""
        site = self.m.sites[site_name]
        return tuple(sorted(c.code_frame.kind for c in self.m.cpus
                            if c is not writer and c.code_frame is not None
                            and c.code_frame.at_site is site
                            and c.views[site_name][off:off + len(data)] != data))

    def _readers_in_flight(self, var: str, writer: Cpu) -> tuple[str, ...]:
        """Frames on other CPUs that read `var` and are still running as it is overwritten:
        the stale-read-in-flight pattern behind many patching races."""
        return tuple(sorted(f.kind for c in self.m.cpus if c is not writer for f in c.frames
                            if var in f.tags.get("read", ())))

    # ---- one feature per event kind -----------------------------------------------------------
    def _load(self, cpu, e):
        frame = cpu.frames[-1]
        self._feat("rf", e.var, self.m.memory.writer.get(e.var), frame.kind, self.m.progress)
        frame.tags.setdefault("read", set()).add(e.var)

    def _atomic(self, cpu, e):
        m = self.m
        self._feat("rmw", e.var, m.memory.writer.get(e.var), cpu.frames[-1].kind, m.progress, e.result)

    def _poke(self, cpu, e):
        fetching = self._fetching(e.site, cpu, e.off, e.data)
        self._feat("poke", e.site, e.off, cpu.frames[-1].kind, fetching, near=bool(fetching))

    def _text_drain(self, cpu, e):
        fetching = self._fetching(e.site, cpu, e.off, e.data)
        self._feat("text-drain", e.site, e.off, fetching, near=bool(fetching))

    def _drain(self, cpu, e):
        self._feat("drain", e.var, self.m.progress, self._readers_in_flight(e.var, cpu))

    def _lock(self, cpu, e):
        frame = cpu.frames[-1]
        self._feat("lock", e.lock, e.mode, frame.task or frame.kind, self.m.sync.held_by(frame))

    def _preempt(self, cpu, e):
        self._feat("preempt", self.m.progress, cpu.frames[-1].at_site is not None)

    def _fetch(self, cpu, e):
        site = self.m.sites[e.site]
        view = e.view
        mix = tuple(0 if view[i] == site.old[i] else 1 if view[i] == site.new[i] else 2
                    for i in range(site.size))
        self._feat("fetch", e.site, cpu.frames[-1].kind, self.m.progress, e.off, mix)

    def _trap(self, cpu, e):
        kind = cpu.frames[-1].kind
        progress = self.m.progress
        if e.foreign:
            self._feat("foreign", kind, progress)
        self._feat("trap", e.addr, e.foreign, kind, progress)

    def _nmi(self, cpu, e):
        m = self.m
        self._feat("nmi", cpu.frames[-1].kind, cpu.idx == 0, m.progress, sum(c.in_nmi for c in m.cpus))

    def _irq(self, cpu, e):
        self._feat("irq", cpu.frames[-1].kind, cpu.frames[-1].task, self.m.progress)

    def _migrated(self, cpu, e):
        self._feat("migrate", e.task, self.m.progress)

    def _ipi(self, cpu, e):
        self._feat("ipi", self.m.progress, cpu.frames[-1].at_site is not None)

    def _free(self, cpu, e):
        readers = self._readers_in_flight(e.var, cpu)
        self._feat("free", e.var, self.m.progress, readers, near=bool(readers))
