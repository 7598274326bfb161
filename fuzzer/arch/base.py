"""The architecture interface: everything the engine needs to know about an ISA.

The engine never looks at opcodes itself. An architecture model says how big a fetch unit is,
which text stores are atomic, which events serialize instruction fetch, how the store buffer
drains, how to lay out the generated kernel image and how to emulate a patched instruction.
Each model lists its rules with the manual section or kernel commit they come from (`RULES`),
so that a verdict can be argued with a maintainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One modelling rule and where it comes from."""

    what: str
    source: str


@dataclass
class SiteLayout:
    """Where a patch site ended up in the generated image."""

    name: str
    addr: int
    size: int
    func: int  # entry of the traced function whose first instruction is the site


@dataclass
class Image:
    """A generated kernel image: one text blob plus the symbols the engine needs."""

    base: int
    text: bytes
    symbols: dict[str, int]
    sites: dict[str, SiteLayout]
    thread_entry: int  # the caller loop run by every thread context
    nmi_entry: int  # NMI handler: calls traced functions, ends in the stop instruction
    foreign_trap: int  # address of a breakpoint owned by someone else (a kprobe)
    stop_pcs: frozenset = frozenset()  # addresses just after each stop instruction: code ends there


class Arch:
    """Base class of architecture models. Subclasses fill in the constants and methods."""

    name: str = "?"
    # Smallest unit of the instruction stream a CPU may refresh on its own while another CPU
    # writes the text: without serialization, each unit of a fetched instruction can come from
    # a different point in time.
    fetch_unit: int = 1
    # Size and alignment of the widest text store the architecture performs atomically.
    atomic_store: int = 1
    trap_insn: bytes = b""
    trap_name: str = "trap"
    # "fifo": x86-TSO, stores become visible in program order; "ooo": any order across
    # addresses until a barrier.
    store_buffer: str = "fifo"
    # Does a CPU's own text store reach its own instruction fetch at once?
    own_store_visible_to_fetch: bool = True
    # Does leaving the stop_machine rendezvous serialize the parked CPUs? An assumption,
    # stated in RULES, that the user can override per run.
    stop_machine_serializes: bool = True
    # The protocol method name this ISA's protocols may use for the trap handler instead of
    # the ISA-neutral `trap_handler` (x86: int3_handler), or None.
    trap_handler_alias: str | None = None
    RULES: tuple[Rule, ...] = ()

    # ---- image and registers -------------------------------------------------------------
    def build_image(self, sites: dict[str, object], calls_irqs_off: bool = True) -> Image:
        raise NotImplementedError

    def new_cpu(self, image: Image, cpu_index: int, hooks: CpuHooks):
        """Create the emulator for one CPU with its own copy (view) of the text."""
        raise NotImplementedError

    # ---- instructions ----------------------------------------------------------------------
    def insn_lengths(self, code: bytes) -> tuple[int, ...]:
        """Lengths of the instructions `code` decodes to, from its start (stops at garbage)."""
        raise NotImplementedError

    def disasm(self, code: bytes, addr: int) -> str:
        raise NotImplementedError

    def register_abstractable(self, blobs: list[bytes]) -> bool:
        """True if code made of these blobs reads no register state but SP, the IRQ flag and
        the stack (exhaustive search may then key states on those alone)."""
        return False

    def store_units(self, offset: int, data: bytes) -> list[tuple[int, bytes]]:
        """Split a text write into the stores the CPU performs, in program order."""
        raise NotImplementedError


@dataclass
class CpuHooks:
    """Callbacks the engine gives an architecture when it creates a CPU. Site stops are not
    among them: the CPU records those itself and `run()` returns the site address."""

    on_trap: Callable  # (cpu_index, kind, pc) -> None
    on_fault: Callable  # (cpu_index, kind, addr) -> None
