"""invariant: a predicate the protocol declares over its shared state is false.

A protocol states what must hold whenever its shared state changes (`Protocol.invariants()`:
name -> predicate over a `Shared` view), for example "the key's count is positive exactly when
the site holds the jump, unless jump_label_mutex is held". The oracle evaluates every predicate
each time memory, a site's text in memory or a lock changes, and reports the first change after
which one is false, titled with the invariant's name. Predicates see memory as it is (not what
a CPU still holds in its store buffer), the text in memory and the locks.
"""

from __future__ import annotations

from ..guard import protected
from .base import Oracle


class Shared:
    """What an invariant's predicate reads: the machine's shared state, now."""

    __slots__ = ("_m",)

    def __init__(self, machine) -> None:
        self._m = machine

    def var(self, name: str, default=0):
        """A protocol variable's value in memory."""
        return self._m.memory.mem.get(name, default)

    def freed(self, name: str) -> bool:
        return name in self._m.memory.freed

    def text(self, site: str) -> bytes:
        """The bytes a site holds in memory."""
        return bytes(self._m.sites[site].truth)

    def holds(self, site: str, version: str) -> bool:
        """Does the site hold its "old" or its "new" version, whole?"""
        s = self._m.sites[site]
        return s.truth == (s.old if version == "old" else s.new)

    def locked(self, lock: str) -> bool:
        """Is the lock held (by a writer or owner, or by any reader)?"""
        lk = self._m.sync.locks.get(lock)
        return lk is not None and (lk.owner is not None or bool(lk.readers))


class Invariant(Oracle):
    id = "invariant"
    fires_when = "a predicate the protocol declares over its shared state is false"
    TITLES = {"false": "invariant violated: {name}"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.predicates = dict(machine.proto.invariants())
        self.shared = Shared(machine)

    def active(self) -> bool:
        return bool(self.predicates)

    def on_shared_changed(self, cpu) -> None:
        shared = self.shared
        for name, holds in self.predicates.items():
            if not protected(cpu.idx, holds, shared):
                m = self.m
                detail = "; ".join(f"{k} = {v!r}" for k, v in sorted(m.memory.mem.items(), key=lambda kv: kv[0]))
                texts = "; ".join(f"{s.name} holds {bytes(s.truth).hex(' ')}" for s in m.sites.values())
                self.report(cpu, "false", f"{name} is false after this step: {detail}; {texts}", name=name)
                return
