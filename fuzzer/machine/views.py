"""Per-CPU instruction views: what each CPU would fetch, kept apart from memory (the truth).

A CPU's view of a patch site changes only when the architecture lets it: its own text stores
where they reach its own fetch at once, a refresh of some fetch units when the CPU starts
fetching the site (a draw: which units), and a whole refresh at serializing events (exception
or NMI entry, IRET, an IPI taken, sync_core). Every change goes to the CPU's emulator
(`hw.write_text`), which flushes its translations: Unicorn does not notice host-side writes.

`Cpu.stale` holds the sites whose view may differ from memory as the CPU sees it; they are
checked against the truth when the CPU next fetches them.
"""

from __future__ import annotations

from .. import draws, ops
from .part import Part
from .state import Cpu, Frame, SiteState

_REFRESH, _REFRESH_DEFAULT = draws.REFRESH.name, draws.REFRESH.default


class Views(Part):
    """The coherent instruction fetch (x86): see the module docstring. `icache.py` holds the
    fetch that is not coherent with data stores, with the same methods."""

    SIBLINGS = ('memory', 'checks')
    NOT_STATE = {"unit": "the architecture's fetch unit", "events": "the architecture's"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.unit = machine.arch.fetch_unit
        self.events = frozenset(machine.arch.serializing_events)

    def event(self, cpu: Cpu, name: str) -> None:
        """`cpu` went through an event (arch/base.py: exception entry or return, an IPI taken,
        its local serializing instruction): a serializing one where the architecture says it
        is (`Arch.serializing_events`; on RISC-V none is, only FENCE.I)."""
        if name in self.events:
            self.serialize(cpu)

    def handlers(self) -> dict:
        return {ops.CacheMaint: self.op_cache}

    def op_cache(self, cpu: Cpu, frame: Frame, op: ops.CacheMaint) -> None:
        self.maintain(cpu, op.kind, op.site)
        self.m.advance(cpu, frame, None)

    def maintain(self, cpu: Cpu, kind: str, site: str) -> None:
        """Cache maintenance: nothing to do where fetch is coherent with memory, but the
        synchronization of a FENCE.I-like instruction."""
        if kind == "inval_local_sync":
            self.serialize(cpu)

    def reset(self) -> None:
        """A run starts (the fetch model that is not coherent keeps its moments' clock)."""

    def barrier(self, cpu: Cpu) -> None:
        """A DSB completes `cpu`'s cache maintenance: none is pending here."""

    def order_cleans(self, cpu: Cpu) -> None:
        """A full DMB orders `cpu`'s cache cleans: none is pending here."""

    def text_reached(self, site: SiteState) -> None:
        """A text store reached memory: every CPU's view of the site may be stale now."""
        for other in self.m.cpus:
            other.stale.add(site)  # maybe stale: checked against the truth at fetch

    def arrive(self, cpu: Cpu, site: SiteState) -> None:
        """`cpu` reached the site: its fetch starts from memory as it is now (x86 rule)."""
        if site in cpu.stale:
            self.sync(cpu, site)

    def before_fetch(self, cpu: Cpu, frame: Frame, site: SiteState, fair: bool) -> None:
        """`cpu` is about to execute at the site: bytes stored since its fetch began may or may
        not be seen, per fetch unit (the "refresh" draw)."""
        if site in cpu.stale:
            fresh = self.memory.text_as_seen(cpu, site)
            if cpu.views[site.name] != fresh:
                ch = self.m.ch
                self.refresh_units(cpu, site, fresh,
                                   _REFRESH_DEFAULT if fair else ch.byte(_REFRESH_DEFAULT, _REFRESH))
            else:
                cpu.stale.discard(site)

    def set(self, cpu: Cpu, site: SiteState, off: int, data: bytes) -> None:
        """The CPU's own store reaches its fetch."""
        view = cpu.views[site.name]
        if view[off:off + len(data)] != data:
            view[off:off + len(data)] = data
            cpu.hw.write_text(site.addr + off, data)
        cpu.stale.add(site)

    def show(self, cpu: Cpu, site: SiteState, data: bytes) -> None:
        """`cpu` will execute `data` at the whole site: its view and its emulator's copy."""
        view = cpu.views[site.name]
        if view != data:
            view[:] = data
            cpu.hw.write_text(site.addr, data)

    def sync(self, cpu: Cpu, site: SiteState) -> None:
        """The whole site as `cpu` sees memory now (a fetch that starts afresh)."""
        self.show(cpu, site, self.memory.text_as_seen(cpu, site))
        cpu.stale.discard(site)

    def serialize(self, cpu: Cpu) -> None:
        """A serializing event: every stale site refreshed."""
        if not cpu.stale:
            return
        text_as_seen = self.memory.text_as_seen
        for site in list(cpu.stale):
            self.show(cpu, site, text_as_seen(cpu, site))
        cpu.stale.clear()

    def refresh_units(self, cpu: Cpu, site: SiteState, fresh: bytes, byte: int) -> None:
        """Refresh the fetch units a "refresh" draw's byte names; the others keep what the CPU
        fetched before (a partial refresh is a torn fetch in the making)."""
        out = self.refreshed(bytes(cpu.views[site.name]), fresh, byte)
        self.show(cpu, site, out)
        if out == fresh:
            cpu.stale.discard(site)

    def refreshed(self, view: bytes, fresh: bytes, byte: int) -> bytes:
        """The view `refresh_units` would leave for `byte` (for searches that compare answers)."""
        unit = self.unit
        out = bytearray(view)
        for i, refresh in zip(range(0, len(view), unit), draws.refreshed_units(byte, -(-len(view) // unit))):
            if refresh:
                out[i:i + unit] = fresh[i:i + unit]
        return bytes(out)
