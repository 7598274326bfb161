"""Turning trace records into text: how values print, and what a line needs from the run.

A record (`fuzzer/events/`) holds raw values; its text needs the run's architecture (trap
name, disassembler) and the image's symbols, which a `Renderer` carries.
"""

from __future__ import annotations

from typing import Any


def fmt(v: Any) -> str:
    """Trace rendering of protocol values: bytes as hex, addresses as hex, tuples recursively."""
    if isinstance(v, (bytes, bytearray)):
        return "[" + bytes(v).hex(" ") + "]"
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, int):
        return hex(v) if v >= 0x10000 else str(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(fmt(x) for x in v) + ")"
    if isinstance(v, str):
        return v
    return repr(v)


class Renderer:
    """What turning records into text needs from the run: the architecture (trap name,
    disassembler) and the image's symbols."""

    def __init__(self, arch, symbols: dict[str, int]) -> None:
        self.arch = arch
        self.trap = arch.trap_name
        self.sync_core = arch.sync_core_name  # what a CPU's own serialization is called on this ISA
        self._sorted = sorted((a, n) for n, a in symbols.items())

    def sym(self, addr: int) -> str:
        best = None
        for a, name in self._sorted:
            if a <= addr:
                best = (a, name)
            else:
                break
        if best is None or addr - best[0] > 0x400:
            return hex(addr)
        return best[1] if addr == best[0] else f"{best[1]}+{addr - best[0]:#x}"

    def disasm(self, code: bytes, addr: int) -> str:
        return self.arch.disasm(code, addr)

    def line(self, ev: Any) -> str:
        return f"{ev.step:5d} cpu{ev.cpu} {ev.ctx:<6} {ev.text(self)}"
