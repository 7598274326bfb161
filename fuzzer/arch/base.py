"""The architecture interface: everything the engine needs to know about an ISA.

The engine never looks at opcodes, register numbers or trap vectors itself. An architecture
model (one file: x86_64.py, later arm64.py, riscv64.py, arm.py) says how big a fetch unit is,
which text stores are atomic, which events serialize instruction fetch, how the store buffer
drains, how Unicorn and capstone are driven for it, how a trap and the end of a code run show
up in the emulator, which registers hold the PC, the stack pointer and the IRQ mask, and how to
encode the few instructions the generated kernel image is made of (the emitters). One image
builder (image.py) lays the image out from the emitters and one CPU class (unicorn_cpu.py)
runs it, for every ISA. Each model lists its rules with the manual section or kernel commit
they come from (`RULES`), so that a verdict can be argued with a maintainer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

import capstone

if TYPE_CHECKING:
    from .unicorn_cpu import UnicornCpu


@dataclass(frozen=True)
class Rule:
    """One modelling rule and where it comes from."""

    what: str
    source: str


class UnknownOption(ValueError):
    """An architecture option the model does not have (`Arch.OPTIONS`)."""

    def __init__(self, arch: str, option: str, known: tuple[str, ...]) -> None:
        self.arch, self.option, self.known = arch, option, known
        super().__init__(f"{arch}: unknown architecture option {option!r} "
                         f"(known: {', '.join(known) or 'none'})")


@dataclass
class SiteLayout:
    """Where a patch site ended up in the generated image."""

    name: str
    addr: int
    size: int
    func: int  # entry of the traced function the site belongs to (its first patchable insn)
    old: bytes = b""  # the site's old version as laid out here
    program: str = ""  # the program this instruction belongs to ("": a patch site)


@dataclass
class Image:
    """A generated kernel image: one text blob plus the symbols the engine needs."""

    base: int
    text: bytes
    symbols: dict[str, int]
    sites: dict[str, SiteLayout]
    thread_entry: int  # the caller loop run by every thread context
    nmi_entry: int  # NMI handler: calls traced functions, ends in the stop instruction
    irq_entry: int  # IRQ handler: the same, for maskable interrupts
    foreign_trap: int  # address of a breakpoint owned by someone else (a kprobe)
    # The PC a CPU has once it executed a stop instruction: a code run that gets there is over.
    # Known from the layout, so nobody has to scan the text for an opcode byte.
    stop_pcs: frozenset[int] = field(default_factory=frozenset)
    # Code outside the text: (address, bytes) of each far function (Arch.far_base). It is never
    # patched, so every engine of a CPU maps one copy.
    far: tuple[tuple[int, bytes], ...] = ()
    # The protocol's programs: name -> (entry, the PC once it has run to its end).
    programs: dict[str, tuple[int, int]] = field(default_factory=dict)
    # The data region's variables (what programs load and store): name -> address.
    data: dict[str, int] = field(default_factory=dict)


@dataclass
class CpuHooks:
    """Callbacks the engine gives an architecture when it creates a CPU. Site stops are not
    among them: the CPU records those itself and `run()` returns the site address."""

    on_trap: Callable  # (cpu_index, kind, pc) -> None
    on_fault: Callable  # (cpu_index, kind, addr) -> None
    # Loads and stores of programs (an image with a data region or programs only):
    on_load: Callable | None = None  # (cpu_index, addr, size) -> the value the CPU reads
    on_store: Callable | None = None  # (cpu_index, addr, size, value) -> None


# Names of the events after which a CPU fetches the text afresh (`Arch.serializing_events`).
EXCEPTION_ENTRY = "exception entry"  # a trap, an NMI or an IRQ taken
EXCEPTION_RETURN = "exception return"  # leaving a handler (x86 iret)
IPI_TAKEN = "IPI taken"  # the IPI handler of a sync ends in a core serialization
SYNC_CORE = "sync_core"  # the local serializing instruction (x86 sync_core, arm64 isb)


@cache
def _decoder(cs_arch: int, cs_mode: int):
    """One capstone instance per ISA and its memoized length decoder, shared by every model
    instance (each Machine makes its own): the machine asks for the same few site versions
    over and over."""
    cs = capstone.Cs(cs_arch, cs_mode)

    @lru_cache(maxsize=4096)
    def lengths(code: bytes) -> tuple[int, ...]:
        return tuple(insn.size for insn in cs.disasm(code, 0))

    return cs, lengths


class Arch:
    """Base class of architecture models. Subclasses fill in the constants and methods; what
    is defined here is either ISA-neutral or a conservative default."""

    name: str = "?"

    # ---- memory model ----------------------------------------------------------------------
    # Smallest unit of the instruction stream a CPU may refresh on its own while another CPU
    # writes the text: without serialization, each unit of a fetched instruction can come from
    # a different point in time.
    fetch_unit: int = 1
    # Size and alignment of the widest text store the architecture performs atomically.
    atomic_store: int = 1
    # "fifo": x86-TSO, stores become visible in program order; "ooo": any order across
    # addresses until a barrier.
    store_buffer: str = "fifo"
    # Does a CPU's own text store reach its own instruction fetch at once?
    own_store_visible_to_fetch: bool = True
    # Does leaving the stop_machine rendezvous serialize the parked CPUs? An assumption,
    # stated in RULES, that the user can override per run.
    stop_machine_serializes: bool = True
    # The events (names above) after which a CPU's view of the text is refreshed; each one is
    # argued in RULES.
    serializing_events: tuple[str, ...] = ()
    RULES: tuple[Rule, ...] = ()

    # ---- instruction fetch against data stores ------------------------------------------
    # "coherent": a fetch starts from memory as it is (x86; machine/views.py). "maintained":
    # instruction fetch is not coherent with data stores; a fetch may return any version of a
    # location written since the last one made visible to fetch by cache maintenance and then
    # a context synchronization event on the fetching CPU (arm64, riscv64; machine/icache.py).
    fetch_model: str = "coherent"
    # "maintained" only. Must written code be cleaned to the point of unification (dc_cvau)
    # before an invalidation brings it to fetch (arm64: CTR_EL0.IDC == 0)?
    icache_needs_clean: bool = True
    # Must the instruction cache be invalidated at all (arm64: CTR_EL0.DIC == 0)?
    icache_needs_invalidate: bool = True
    # Are two fetches of one location by one CPU coherent: once it fetched a version, never an
    # older one again (arm64: only with DIC == 1)?
    coherent_fetches: bool = False
    # Switches a user may set per run (`--arch-opt NAME`): name -> what it changes. The model
    # applies them in `__init__`.
    OPTIONS: Mapping[str, str] = {}

    # ---- traps -----------------------------------------------------------------------------
    # The breakpoint protocols patch in, and what traces and titles call it.
    trap_insn: bytes = b""
    trap_name: str = "trap"
    # Every breakpoint instruction the kernel writes, where there is more than one (riscv64:
    # ebreak over a 4-byte instruction, c.ebreak over a 2-byte one); () means trap_insn alone.
    trap_insns: tuple[bytes, ...] = ()
    # How Unicorn reports the breakpoint: UC_HOOK_INTR with this interrupt number, the PC
    # `trap_pc_after` bytes past the breakpoint's address (x86 int3: after it; arm64 brk: at
    # it). The CPU subtracts it so the machine always gets the breakpoint's own address. None:
    # Unicorn reports it as an invalid instruction (riscv64 ebreak, Thumb udf), and the CPU
    # tells it from a real one by the bytes at the PC.
    trap_intno: int | None = -1
    trap_pc_after: int = 0
    # How far past the faulting instruction Unicorn has moved the PC when it reports another
    # exception through UC_HOOK_INTR (riscv64: 4, even for a 2-byte instruction; MULTIARCH 2.1);
    # the CPU subtracts it so a guest fault names the instruction that raised it.
    intr_pc_after: int = 0
    # The protocol method an ISA's protocols name their breakpoint handler with (x86:
    # "int3_handler"), for a machine that otherwise calls the ISA-neutral `trap_handler`.
    trap_handler_alias: str | None = None

    # ---- emulator and disassembler ---------------------------------------------------------
    uc_arch: int = -1
    uc_mode: int = 0
    uc_cpu_model: int | None = None  # None: Unicorn's default model for the arch
    cs_arch: int = -1
    cs_mode: int = 0

    # ---- registers (Unicorn register ids) --------------------------------------------------
    reg_pc: int = -1
    reg_sp: int = -1
    # IRQs are enabled when (reg_irq & irq_mask) is set if irq_set_enables, clear otherwise
    # (x86 EFLAGS.IF set = enabled; arm64 PSTATE.I set = masked).
    reg_irq: int = -1
    irq_mask: int = 0
    irq_set_enables: bool = True
    # Where a call leaves its return address: None pushes `word_size` bytes on the stack (x86);
    # a register id is the link register (arm64 X30, riscv ra).
    link_reg: int | None = None
    word_size: int = 8
    # Bits a code address carries for the CPU to run it in the right state, in emu_start's
    # `begin` and in a link register (Thumb: 1; MULTIARCH 2.1: resuming with the plain PC
    # silently runs Thumb bytes as ARM). PCs read back and site addresses are plain.
    pc_exec_bits: int = 0
    # Registers besides the PC, the stack pointer and the IRQ mask that the image's code keeps
    # return addresses in (arm64: the link register, and the registers the traced entry and the
    # tracer save it in): exhaustive search keys a running CPU by them too.
    state_regs: tuple[int, ...] = ()
    # The registers the image's counters count in, by `counter_inc` name, for tests and reports.
    counter_regs: Mapping[str, int] = {}

    # ---- memory layout of the generated kernel (ISA-neutral defaults) ----------------------
    text_base: int = 0x0010_0000
    text_size: int = 0x1_0000
    stack_base: int = 0x0020_0000
    stack_size: int = 0x1_0000
    thread_stack_top: int = 0x0020_8000
    irq_stack_top: int = 0x0020_B800  # the IRQ stack (x86: the per-CPU hardirq stack)
    nmi_stack_top: int = 0x0020_F000  # a separate NMI stack, like the kernel's NMI IST
    # The data region programs load from and store to: one word per variable.
    data_base: int = 0x0030_0000
    data_size: int = 0x1000
    # The registers a program starts with and ends with, by their assembly names.
    program_regs: Mapping[str, int] = {}
    # What pads functions to their alignment: something that stops a CPU that runs into it.
    filler: bytes = b""
    # Where the functions a site calls or jumps to live (the tracer, the stub, a protocol's
    # `symbols`): each in its own page, `far_stride` apart, far from the traced functions, as
    # in a kernel, where a tracer sits megabytes away from the code it traces. With a stride
    # whose every byte is nonzero, two calls from one site to different targets differ in
    # every byte of their offsets, so a torn fetch of a retargeted call can happen (next to
    # each other they differ in one byte, and no tear is possible). None: lay them out with
    # the traced functions.
    far_base: int | None = None
    far_stride: int = 0x0101_0101
    far_size: int = 0x1000

    def __init__(self, options: tuple[str, ...] = ()) -> None:
        unknown = [o for o in options if o not in self.OPTIONS]
        if unknown:
            raise UnknownOption(self.name, unknown[0], tuple(self.OPTIONS))
        self.options = tuple(sorted(set(options)))
        self._cs, self._lengths = _decoder(self.cs_arch, self.cs_mode)

    # ---- image and CPUs --------------------------------------------------------------------
    def build_image(self, sites: Mapping[str, Any], calls_irqs_off: bool = True,
                    symbols: tuple[str, ...] = (), nmi_sites: tuple[str, ...] | None = None,
                    programs: Mapping[str, tuple[str, ...]] | None = None,
                    data: tuple[str, ...] = ()) -> Image:
        """Lay out the generated kernel from this ISA's emitters (see image.py); `symbols`:
        more functions a protocol's sites may call or jump to; `nmi_sites`: the sites whose
        functions the NMI handler calls (None: all); `programs` and `data`: the protocol's
        programs and the variables they address."""
        from .image import build_image

        return build_image(self, sites, calls_irqs_off, symbols, nmi_sites, programs, data)

    def new_cpu(self, image: Image, cpu_index: int, hooks: CpuHooks) -> UnicornCpu:
        """Create the emulator for one CPU with its own copy (view) of the text."""
        from .unicorn_cpu import new_cpu

        return new_cpu(self, image, cpu_index, hooks)

    # ---- instructions ----------------------------------------------------------------------
    def insn_lengths(self, code: bytes) -> tuple[int, ...]:
        """Lengths of the instructions `code` decodes to, from its start (stops at garbage)."""
        return self._lengths(bytes(code))

    def disasm(self, code: bytes, addr: int) -> str:
        parts = []
        pos = 0
        for insn in self._cs.disasm(bytes(code), addr):
            parts.append(f"{insn.mnemonic} {insn.op_str}".strip())
            pos += insn.size
        if pos < len(code):
            parts.append("(bad)")
        return "; ".join(parts) if parts else "(bad)"

    def store_units(self, offset: int, data: bytes) -> list[tuple[int, bytes]]:
        """Split a text write into the stores the CPU performs, in program order: ascending,
        each naturally aligned and no wider than `atomic_store` (what memcpy-like patch code
        does; `offset` is site-relative and sites start `atomic_store`-aligned)."""
        units = []
        pos, end = offset, offset + len(data)
        while pos < end:
            n = self.atomic_store
            while n > 1 and (pos % n or pos + n > end):
                n //= 2
            units.append((pos, data[pos - offset : pos - offset + n]))
            pos += n
        return units

    def encode_call(self, site_addr: int, target: int) -> bytes:
        """The call instruction at `site_addr` to `target`, as the kernel's patch code makes it."""
        raise NotImplementedError

    def encode_jmp(self, site_addr: int, target: int) -> bytes:
        raise NotImplementedError

    def semantics(self, insn: bytes, addr: int) -> tuple[str, int]:
        """What a whole patched instruction does: ('call'|'jmp'|'next'|'bad', target)."""
        raise NotImplementedError

    def breakpoints(self) -> tuple[bytes, ...]:
        return self.trap_insns or (self.trap_insn,)

    def trap_length(self, code: bytes) -> int:
        """The length of the breakpoint `code` begins with, 0 if it begins with none."""
        return next((len(t) for t in self.breakpoints() if bytes(code[:len(t)]) == t), 0)

    def cmodx_safe(self, insn: bytes) -> bool:
        """May `insn` be replaced, or replace another such instruction, while other CPUs
        execute it, with the old-or-new guarantee? True for every instruction where the
        architecture has no such list (x86: its fetch and store rules decide)."""
        return True

    # What findings call the rule `cmodx_unsafe` applies (arm64: its list of instructions).
    cmodx_scope: str = "the CMODX list"

    def cmodx_unsafe(self, words: list[bytes], versions: list[bytes] | None = None, off: int = 0) -> bytes | None:
        """The versions of one fetch unit a CPU may fetch either of (newest first): the first
        one the architecture does not let be modified while it may execute, or None.
        `versions`: the whole site versions they come from, `off`: the unit's offset in them
        (where a unit is less than an instruction, the instruction it is part of decides)."""
        return next((w for w in words if not self.cmodx_safe(w)), None)

    # ---- programs (Protocol.programs) ------------------------------------------------------
    def assemble(self, lines: tuple[str, ...], base: int) -> tuple[bytes, dict[str, int]]:
        """A program's code laid out from `base`, and its labels' addresses."""
        raise NotImplementedError(f"{self.name}: no assembler for programs")

    # The local serializing instruction as traces name it (x86 sync_core(), arm64 isb)
    sync_core_name: str = "sync_core()"
    # The architecture's name in herd7 litmus headers ("AArch64"), if programs can run its tests.
    litmus_name: str | None = None

    def program_reg(self, name: str) -> tuple[str, int]:
        """A register as a program or a litmus test names it -> (its name in `program_regs`,
        the bits the name covers); KeyError if there is none."""
        if name.upper() in self.program_regs:
            return name.upper(), self.word_size * 8
        raise KeyError(name)

    def encode_insn(self, text: str) -> bytes:
        """One instruction as a value (a litmus init `0:X0=NOP`): its encoding, position
        independent (a relative branch keeps its offset)."""
        code, _ = self.assemble((text,), 0)
        return code

    def insn_effect(self, code: bytes) -> tuple | None:
        """What executing `code` does to the memory and fetch models beyond its loads and
        stores (which the emulator reports): ("fence", kind) with kind one of "mb", "wmb",
        "rmb", "dsb", "drain" (the stores complete, nothing else); ("sync",) a context synchronization; ("maint", kind, reg) cache
        maintenance of the address in register `reg` ("clean", "inval") or ("maint",
        "inval_local", None); ("release",): its store is a store-release. None: nothing."""
        return None

    def register_abstractable(self, blobs: list[bytes]) -> bool:
        """True if code made only of `blobs` leaves the PC, the stack pointer, the IRQ flag, the
        stack above the stack pointer and `state_regs` as the only register state its future
        depends on (what exhaustive search keys a running CPU by): every instruction decodes
        and `abstractable_insn` accepts it."""
        for blob in blobs:
            decoded = 0
            for insn in self._cs.disasm(bytes(blob), 0):
                decoded += insn.size
                if not self.abstractable_insn(insn.mnemonic, insn.op_str):
                    return False
            if decoded != len(blob):
                return False
        return True

    def abstractable_insn(self, mnemonic: str, op_str: str) -> bool:
        """May the image's code execute this instruction and still be keyed by the registers
        `register_abstractable` names? False unless a model can show it."""
        return False

    # ---- emitters: the instructions the image builder lays out -----------------------------
    def call(self, src: int, dst: int) -> bytes:
        return self.encode_call(src, dst)

    def jmp(self, src: int, dst: int) -> bytes:
        return self.encode_jmp(src, dst)

    def ret(self) -> bytes:
        raise NotImplementedError

    def nop(self) -> bytes:
        raise NotImplementedError

    def stop(self) -> bytes:
        """The instruction that ends a code run: Unicorn stops there silently, the PC just
        after it (x86 hlt, arm64 wfi)."""
        raise NotImplementedError

    def irqs_off(self) -> bytes:
        raise NotImplementedError

    def irqs_on(self) -> bytes:
        raise NotImplementedError

    def counter_inc(self, which: str) -> bytes:
        """Count in a register nothing else reads: "tracer" (tracer hits) or "work" (the traced
        function's own work)."""
        raise NotImplementedError

    def traced_entry(self) -> bytes:
        """What a traced function runs before its patch site: nothing where the call pushes
        its return address (x86); where a call overwrites the link register, the kernel's
        entry saves it first (arm64: `mov x9, x30` ahead of the ftrace BL)."""
        return b""

    def tracer_return(self) -> bytes:
        """How the tracer returns into the traced function (and restores what the entry
        saved, where it saved something)."""
        return self.ret()
