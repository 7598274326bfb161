"""x86-64: the first architecture model.

Instruction bytes are hand-encoded (keystone mis-encodes some NOPs), decoded with capstone, and
executed by Unicorn. The rules below are what the engine enforces; each names its source.
"""

from __future__ import annotations

import ctypes
import struct
from functools import lru_cache

import capstone
import unicorn
import unicorn.unicorn_py3.unicorn as _ucmod
from unicorn import x86_const as X

from .base import Arch, CpuHooks, Image, Rule, SiteLayout

NOP5 = bytes.fromhex("0f1f440000")  # nopl 0x0(%rax,%rax,1): the kernel's ideal 5-byte NOP
INT3 = b"\xcc"
HLT = b"\xf4"
RET = b"\xc3"
CLI = b"\xfa"
STI = b"\xfb"

TEXT_BASE = 0x0010_0000
TEXT_SIZE = 0x1_0000
STACK_BASE = 0x0020_0000
STACK_SIZE = 0x1_0000
THREAD_STACK_TOP = STACK_BASE + 0x8000
NMI_STACK_TOP = STACK_BASE + 0xF000  # separate NMI stack, like the kernel's NMI IST
EFLAGS_IF = 1 << 9
NEVER = 0xFFFF_FFFF_FFFF_0000  # `until` address that is never reached

_uclib = _ucmod.uclib
_reg_read = _uclib.uc_reg_read
_emu_start = _uclib.uc_emu_start
_uc_ctl = _uclib.uc_ctl
_uc_emu_stop = _uclib.uc_emu_stop
_uc_hook_add = _uclib.uc_hook_add
_HOOK_CODE_CFUNC = _ucmod.HOOK_CODE_CFUNC
# uc_ctl(uc, UC_CTL_TB_REMOVE_CACHE | write, lo, hi), encoded as the binding's ctl() does
_CTL_REMOVE_CACHE = (unicorn.UC_CTL_IO_WRITE << 30) | (2 << 26) | unicorn.UC_CTL_TB_REMOVE_CACHE


def rel32(src_next: int, target: int) -> bytes:
    return struct.pack("<i", target - src_next)


def call_to(site_addr: int, target: int) -> bytes:
    return b"\xe8" + rel32(site_addr + 5, target)


def jmp_to(site_addr: int, target: int) -> bytes:
    return b"\xe9" + rel32(site_addr + 5, target)


_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


class X86_64(Arch):
    name = "x86_64"
    fetch_unit = 1
    atomic_store = 1
    trap_insn = INT3
    trap_name = "int3"
    store_buffer = "fifo"
    own_store_visible_to_fetch = True
    stop_machine_serializes = True
    RULES = (
        Rule(
            "Fetch unit is 1 byte: an instruction fetched while another CPU writes it may mix "
            "old and new bytes in any combination (within the window of the next rule).",
            "Intel SDM Vol. 3A 8.1.3 'Handling Self- and Cross-Modifying Code'; the kernel's "
            "text_poke_bp() comment (arch/x86/kernel/alternative.c) relies on exactly this.",
        ),
        Rule(
            "How far a view may lag: the instruction cache is coherent, so a fetch starts from "
            "memory as it is when the CPU reaches the instruction; bytes stored between that "
            "moment and the instruction's execution may or may not be seen, per byte. Only a "
            "serializing event discards an instruction already being fetched.",
            "Intel SDM Vol. 3A 11.6 (code-segment writes invalidate cached/prefetched "
            "instructions) and 8.1.3 (the executing CPU must serialize to be sure to see "
            "cross-modified code).",
        ),
        Rule(
            "Only a 1-byte store is atomic for text; a multi-byte poke is a sequence of byte "
            "stores in ascending address order (memcpy).",
            "text_poke_bp() writes the int3 first because 'a single byte write is atomic'; "
            "commit fd4363fff3d9 (x86: Introduce int3-based instruction patching).",
        ),
        Rule(
            "Serializing events refresh a CPU's whole instruction view: exception or NMI entry, "
            "IRET, an IPI taken (its handler does sync_core()), sync_core().",
            "Intel SDM Vol. 3A 8.3 'Serializing Instructions' (IRET, CPUID are serializing); "
            "text_poke_sync() = on_each_cpu(do_sync_core).",
        ),
        Rule(
            "A CPU's own text stores reach its own instruction fetch at once (self-modifying "
            "code is snooped).",
            "Intel SDM Vol. 3A 11.6 'Self-Modifying Code'.",
        ),
        Rule(
            "Stores to protocol variables and to text drain from a FIFO store buffer (x86-TSO): "
            "other CPUs see them in program order; a locked instruction or MFENCE drains it; "
            "smp_wmb()/smp_rmb() are compiler barriers only.",
            "Intel SDM Vol. 3A 8.2.2 'Memory Ordering in P6 and More Recent Processor Families'; "
            "Sewell et al., 'x86-TSO', CACM 2010; arch/x86/include/asm/barrier.h.",
        ),
        Rule(
            "IPIs are taken only with EFLAGS.IF set; NMIs are taken at any instruction boundary, "
            "also with IF clear; a nested NMI is held until the outer NMI handler returns.",
            "Intel SDM Vol. 3A 6.7.1 'Handling Multiple NMIs'; arch/x86/entry/entry_64.S "
            "nested-NMI logic (v3.3+).",
        ),
        Rule(
            "ASSUMPTION (switchable): CPUs released from the stop_machine rendezvous do not run "
            "bytes fetched before it; each leaves through the stopper thread's context switch.",
            "kernel/stop_machine.c multi_cpu_stop(); arm64 states the same explicitly with an "
            "isb() in aarch64_insn_patch_text_cb(). Disable with --no-stop-machine-serializes.",
        ),
    )

    # ---- instructions ----------------------------------------------------------------------
    @staticmethod
    @lru_cache(maxsize=4096)
    def _lengths(code: bytes) -> tuple[int, ...]:
        out = []
        for insn in _CS.disasm(code, 0):
            out.append(insn.size)
        return tuple(out)

    def insn_lengths(self, code: bytes) -> tuple[int, ...]:
        return self._lengths(bytes(code))

    def disasm(self, code: bytes, addr: int) -> str:
        parts = []
        pos = 0
        for insn in _CS.disasm(bytes(code), addr):
            parts.append(f"{insn.mnemonic} {insn.op_str}".strip())
            pos += insn.size
        if pos < len(code):
            parts.append("(bad)")
        return "; ".join(parts) if parts else "(bad)"

    def store_units(self, offset: int, data: bytes) -> list[tuple[int, bytes]]:
        return [(offset + i, data[i : i + 1]) for i in range(len(data))]

    def encode_call(self, site_addr: int, target: int) -> bytes:
        return call_to(site_addr, target)

    def encode_jmp(self, site_addr: int, target: int) -> bytes:
        return jmp_to(site_addr, target)

    nop = NOP5

    def semantics(self, insn: bytes, addr: int) -> tuple[str, int]:
        """What a whole patched instruction does: ('call'|'jmp'|'next', target)."""
        insn = bytes(insn)
        if len(insn) == 5 and insn[0] == 0xE8:
            return "call", (addr + 5 + struct.unpack("<i", insn[1:])[0]) & (2**64 - 1)
        if len(insn) == 5 and insn[0] == 0xE9:
            return "jmp", (addr + 5 + struct.unpack("<i", insn[1:])[0]) & (2**64 - 1)
        lens = self.insn_lengths(insn)
        if lens and sum(lens) == len(insn):
            return "next", addr + len(insn)
        return "bad", 0

    # ---- image -----------------------------------------------------------------------------
    def build_image(self, sites: dict, calls_irqs_off: bool = True) -> Image:
        """Generate the kernel: traced functions (site + body + ret), a tracer, the caller loop
        (one call per site, plus a call of the first site with IRQs off), an NMI handler that
        calls every traced function, and a kprobe'd function for foreign breakpoints."""
        code = bytearray()
        symbols: dict[str, int] = {}
        layouts: dict[str, SiteLayout] = {}

        def here() -> int:
            return TEXT_BASE + len(code)

        def align(n: int = 16) -> None:
            while len(code) % n:
                code.append(0xCC)

        symbols["ftrace_caller"] = here()
        code += bytes.fromhex("49ffc7")  # inc r15: counts tracer hits
        code += RET
        align()
        symbols["ftrace_stub"] = here()
        code += RET
        align()
        for name, site in sites.items():
            func = here()
            symbols[f"{name}_func"] = func
            layouts[name] = SiteLayout(name=name, addr=func, size=len(site.old), func=func)
            code += site.old
            code += bytes.fromhex("49ffc6")  # inc r14: the traced function's own work
            code += RET
            align()
        symbols["kprobed_func"] = here()
        code += bytes.fromhex("9090")  # the kprobe's int3 is injected here by the engine
        code += RET
        align()
        loop = here()
        symbols["caller_loop"] = loop
        names = list(sites)
        for name in names:
            code += call_to(here(), layouts[name].func)
        if calls_irqs_off and names:
            code += CLI
            code += call_to(here(), layouts[names[0]].func)
            code += STI
        code += jmp_to(here(), loop)
        align()
        nmi = here()
        symbols["nmi_handler"] = nmi
        for name in names:
            code += call_to(here(), layouts[name].func)
        code += HLT
        align()
        assert len(code) < TEXT_SIZE
        return Image(
            base=TEXT_BASE,
            text=bytes(code),
            symbols=symbols,
            sites=layouts,
            thread_entry=loop,
            nmi_entry=nmi,
            foreign_trap=symbols["kprobed_func"],
        )

    # ---- CPUs ------------------------------------------------------------------------------
    def new_cpu(self, image: Image, cpu_index: int, hooks: CpuHooks) -> X86Cpu:
        return X86Cpu(image, cpu_index, hooks)


class X86Cpu:
    """One emulated x86-64 CPU: a Unicorn instance whose text mapping is this CPU's view."""

    def __init__(self, image: Image, index: int, hooks: CpuHooks):
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        self.uc = uc
        self.index = index
        # The text is mapped from a buffer we own, so a view update is a slice assignment
        # (plus the translation-cache flush) instead of a trip through mem_write.
        self._text_buf = (ctypes.c_ubyte * TEXT_SIZE)()
        self._text = memoryview(self._text_buf).cast("B")
        self._text[: len(image.text)] = image.text
        uc.mem_map_ptr(TEXT_BASE, TEXT_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC,
                       ctypes.addressof(self._text_buf))
        uc.mem_map(STACK_BASE, STACK_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
        self._hooks = hooks
        self._pcval = ctypes.c_uint64()
        self._pcref = ctypes.byref(self._pcval)
        self._uch = uc._uch
        # The site hook runs at every site execution: registered through the C API directly,
        # without the binding's per-call wrapper layers. It only records and stops.
        self._site_cb = _HOOK_CODE_CFUNC(self._on_site)
        self._hook_handles = []
        for site in image.sites.values():
            handle = _ucmod.uc_hook_h()
            status = _uc_hook_add(self._uch, ctypes.byref(handle), unicorn.UC_HOOK_CODE,
                                  self._site_cb, None, ctypes.c_uint64(site.addr),
                                  ctypes.c_uint64(site.addr + site.size - 1))
            if status != unicorn.UC_ERR_OK:
                raise unicorn.UcError(status)
            self._hook_handles.append(handle)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._on_intr)
        uc.hook_add(unicorn.UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(
            unicorn.UC_HOOK_MEM_FETCH_UNMAPPED | unicorn.UC_HOOK_MEM_READ_UNMAPPED
            | unicorn.UC_HOOK_MEM_WRITE_UNMAPPED | unicorn.UC_HOOK_MEM_FETCH_PROT
            | unicorn.UC_HOOK_MEM_WRITE_PROT,
            self._on_unmapped,
        )
        uc.reg_write(X.UC_X86_REG_RSP, NMI_STACK_TOP)
        uc.reg_write(X.UC_X86_REG_RIP, image.nmi_entry)
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
        self.nmi_context = uc.context_save()
        uc.reg_write(X.UC_X86_REG_RSP, THREAD_STACK_TOP)
        uc.reg_write(X.UC_X86_REG_RIP, image.thread_entry)
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2 | EFLAGS_IF)
        self.thread_context = uc.context_save()

    # hooks: keep them tiny, they are on the emulator's path
    def _on_site(self, _uch, addr, _size, _user_data):
        if self._hooks.on_site(self.index, addr):
            _uc_emu_stop(self._uch)

    def _on_intr(self, uc, intno, _):
        if intno == 3:
            self._hooks.on_trap(self.index, "int3", self.pc() - 1)
        else:
            self._hooks.on_fault(self.index, f"exception vector {intno}", self.pc())
        uc.emu_stop()

    def _on_invalid(self, uc, _user_data=None):  # unicorn calls it as (uc, user_data)
        self._hooks.on_fault(self.index, "invalid opcode", self.pc())
        return False

    def _on_unmapped(self, uc, access, addr, size, value, _):
        kind = {
            unicorn.UC_MEM_FETCH_UNMAPPED: "fetch from unmapped address",
            unicorn.UC_MEM_READ_UNMAPPED: "read from unmapped address",
            unicorn.UC_MEM_WRITE_UNMAPPED: "write to unmapped address",
            unicorn.UC_MEM_FETCH_PROT: "fetch from non-executable memory",
            unicorn.UC_MEM_WRITE_PROT: "write to read-only memory",
        }.get(access, "memory fault")
        self._hooks.on_fault(self.index, kind, addr)
        return False

    # register access on the hot path uses the raw C call (~1 us instead of ~3 us)
    def pc(self) -> int:
        _reg_read(self._uch, X.UC_X86_REG_RIP, self._pcref)
        return self._pcval.value

    def set_pc(self, pc: int) -> None:
        self.uc.reg_write(X.UC_X86_REG_RIP, pc)

    def irqs_enabled(self) -> bool:
        _reg_read(self._uch, X.UC_X86_REG_EFLAGS, self._pcref)
        return bool(self._pcval.value & EFLAGS_IF)

    def run(self, pc: int, count: int) -> None:
        # Always pass a count (FACTS: mixing counted and uncounted runs flushes the TB cache).
        # The raw C entry saves the binding's wrapper on the hottest path; hook exceptions are
        # still re-raised as the binding would.
        uc = self.uc
        uc._hook_exception = None
        status = _emu_start(self._uch, pc, NEVER, 0, count)
        if uc._hook_exception is not None:
            raise uc._hook_exception
        if status != unicorn.UC_ERR_OK:
            # the fault hooks have already recorded what happened; anything else is a fault too
            err = unicorn.UcError(status)
            self._hooks.on_fault(self.index, f"emulator error: {err}", self.pc(), only_if_new=True)

    def write_text(self, addr: int, data: bytes) -> None:
        """Change this CPU's view and drop its stale translations (FACTS: unicorn does not
        notice host-side writes)."""
        off = addr - TEXT_BASE
        self._text[off : off + len(data)] = data
        status = _uc_ctl(self._uch, _CTL_REMOVE_CACHE, ctypes.c_uint64(addr),
                         ctypes.c_uint64(addr + len(data)))
        if status != unicorn.UC_ERR_OK:
            raise unicorn.UcError(status)

    def save(self):
        return self.uc.context_save()

    def restore(self, ctx) -> None:
        self.uc.context_restore(ctx)

    def emulate(self, kind: str, target: int, next_pc: int) -> None:
        """Apply a whole instruction's effect, as the int3 handler's int3_emulate_*() does."""
        uc = self.uc
        if kind == "call":
            rsp = uc.reg_read(X.UC_X86_REG_RSP) - 8
            uc.mem_write(rsp, struct.pack("<Q", next_pc))
            uc.reg_write(X.UC_X86_REG_RSP, rsp)
            uc.reg_write(X.UC_X86_REG_RIP, target)
        elif kind == "jmp":
            uc.reg_write(X.UC_X86_REG_RIP, target)
        else:
            uc.reg_write(X.UC_X86_REG_RIP, next_pc)

    def return_address(self) -> int:
        rsp = self.uc.reg_read(X.UC_X86_REG_RSP)
        return struct.unpack("<Q", self.uc.mem_read(rsp, 8))[0]
