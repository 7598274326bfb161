"""x86-64: the first architecture model.

Instruction bytes are hand-encoded (keystone mis-encodes some NOPs), decoded with capstone, and
executed by Unicorn. The rules below are what the engine enforces; each names its source.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import struct
import sys
from collections import OrderedDict
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

_uclib = _ucmod.uclib
_uc_emu_stop = _uclib.uc_emu_stop
_uc_hook_add = _uclib.uc_hook_add


def _hot(name: str):
    """A C entry point for the hot path: without argtypes (the binding's per-argument
    conversion costs more than the call; callers pass ctypes objects of the right widths) and
    through PyDLL (no GIL release and re-acquire: nothing else runs while a CPU steps)."""
    fn = getattr(ctypes.PyDLL(_uclib._name), name)
    fn.restype = ctypes.c_int
    return fn


_reg_read = _hot("uc_reg_read")
_reg_write = _hot("uc_reg_write")
_emu_start = _hot("uc_emu_start")
_ctx_restore = _hot("uc_context_restore")
_ctx_save = _hot("uc_context_save")
_uc_ctl = _hot("uc_ctl")
_UNTIL = ctypes.c_uint64(0xFFFF_FFFF_FFFF_0000)  # an `until` address that is never reached
_NO_TIMEOUT = ctypes.c_uint64(0)
_HOOK_CODE_CFUNC = _ucmod.HOOK_CODE_CFUNC
_HOOK_INTR_CFUNC = _ucmod.HOOK_INTR_CFUNC
_OK = unicorn.UC_ERR_OK

# The site hook's state, shared with the hooks: one int64 array per CPU. _INTR/_INTNO: an
# interrupt the native interrupt hook recorded, reported to the machine after the run.
# _STATUS: uc_emu_start's status, when the direct call returns _DETAILS.
_SKIP, _HIT_ADDR, _HIT, _ENABLED, _INTR, _INTNO, _STATUS = range(7)
_DETAILS = -2


def _direct_calls():
    """The C extension that calls libunicorn without ctypes (see _unicorn_calls.c), bound to
    the entry points the binding loaded; None when it was not built or PATCHFUZZ_NO_NATIVE is
    set (the ctypes path gives the same runs, only slower)."""
    if os.environ.get("PATCHFUZZ_NO_NATIVE"):
        return None
    try:
        from . import _unicorn_calls
    except ImportError:
        return None

    def addr(fn) -> int:
        return ctypes.cast(fn, ctypes.c_void_p).value

    _unicorn_calls.bind(addr(_uclib.uc_emu_start), addr(_uclib.uc_emu_stop),
                        addr(_uclib.uc_reg_read), addr(_uclib.uc_reg_write),
                        addr(_uclib.uc_context_save), addr(_uclib.uc_context_restore))
    return _unicorn_calls


_DIRECT = _direct_calls()
_RIP, _RSP, _EFLAGS = X.UC_X86_REG_RIP, X.UC_X86_REG_RSP, X.UC_X86_REG_EFLAGS

# Register and context access of an engine (`_Engine`) on the hot path, through the direct
# calls or, without them, the raw ctypes entries (one thread: one scratch value serves all).
if _DIRECT is not None:
    def _get_reg(eng, reg: int) -> int:
        return _DIRECT.reg_read(eng.uch_addr, reg)

    def _set_reg(eng, reg: int, value: int) -> None:
        _DIRECT.reg_write(eng.uch_addr, reg, value)

    def _save_ctx(eng, ctx) -> int:
        return _DIRECT.context_save(eng.uch_addr, ctx._addr)

    def _load_ctx(eng, ctx) -> int:
        return _DIRECT.context_restore(eng.uch_addr, ctx._addr)
else:
    _scratch = ctypes.c_uint64()
    _scratch_ref = ctypes.byref(_scratch)

    def _get_reg(eng, reg: int) -> int:
        _reg_read(eng.uch, reg, _scratch_ref)
        return _scratch.value

    def _set_reg(eng, reg: int, value: int) -> None:
        _scratch.value = value
        _reg_write(eng.uch, reg, _scratch_ref)

    def _save_ctx(eng, ctx) -> int:
        return _ctx_save(eng.uch, ctx._context)

    def _load_ctx(eng, ctx) -> int:
        return _ctx_restore(eng.uch, ctx._context)


def _native_site_hook() -> int | None:
    """The site hook as 48 bytes of host x86-64 code, so a site stop costs no Python callback
    (a ctypes callback costs about as much as the emulated slice itself). It implements, for
    `void hook(uc_engine *uc, uint64_t addr, uint32_t size, int64_t *st)`:

        if (addr == st[SKIP]) { st[SKIP] = -1; return; }    // resuming at this very site
        if (!st[ENABLED]) return;
        st[HIT_ADDR] = addr; st[HIT] = 1; uc_emu_stop(uc);   // tail call, uc still in rdi

    None where the host is not x86-64 Linux or refuses an executable mapping: the Python
    callback `_py_site_hook` does the same, only slower."""
    if platform.machine() not in ("x86_64", "AMD64") or not sys.platform.startswith("linux"):
        return None
    stop = ctypes.cast(_uc_emu_stop, ctypes.c_void_p).value
    code = (bytes.fromhex("488b01"            # mov rax, [rcx]
                          "4839f0"            # cmp rax, rsi
                          "7508"              # jne +8
                          "48c701ffffffff"    # mov qword [rcx], -1
                          "c3"                # ret
                          "48837918" "00"     # cmp qword [rcx+24], 0
                          "7418"              # je +24 (the final ret)
                          "48897108"          # mov [rcx+8], rsi
                          "48c7411001000000"  # mov qword [rcx+16], 1
                          "48b8") + struct.pack("<Q", stop)  # mov rax, uc_emu_stop
            + bytes.fromhex("ffe0"            # jmp rax
                            "c3"))            # ret
    try:
        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):
        return None
    buf.write(code)
    _NATIVE_KEEP.append(buf)
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


_NATIVE_KEEP: list = []  # the mapping holding the stub lives as long as the module
_NATIVE_SITE_HOOK = _native_site_hook()
# uc_ctl(uc, UC_CTL_TB_REMOVE_CACHE | write, lo, hi), encoded as the binding's ctl() does
_CTL_REMOVE_CACHE = ctypes.c_int(
    (unicorn.UC_CTL_IO_WRITE << 30) | (2 << 26) | unicorn.UC_CTL_TB_REMOVE_CACHE)


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
    trap_handler_alias = "int3_handler"
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

    # What the generated image may execute if register abstraction is to be sound: none of
    # these reads a general-purpose register other than RSP (call/ret) or an arithmetic flag.
    _SAFE_MNEMONICS = frozenset({"nop", "ret", "call", "jmp", "cli", "sti", "hlt", "int3"})
    _COUNTERS = frozenset({"r14", "r15"})  # `inc` of a register nothing else reads

    def register_abstractable(self, blobs: list[bytes]) -> bool:
        for blob in blobs:
            decoded = 0
            for insn in _CS.disasm(bytes(blob), 0):
                decoded += insn.size
                if insn.mnemonic in self._SAFE_MNEMONICS:
                    continue
                if insn.mnemonic == "inc" and insn.op_str in self._COUNTERS:
                    continue
                return False
            if decoded != len(blob):
                return False
        return True

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
            stop_pcs=frozenset(TEXT_BASE + i + 1 for i, b in enumerate(code) if b == HLT[0]),
        )

    # ---- CPUs ------------------------------------------------------------------------------
    def new_cpu(self, image: Image, cpu_index: int, hooks: CpuHooks) -> X86Cpu:
        return X86Cpu(image, cpu_index, hooks)


ENGINES_PER_CPU = 8  # views cached per CPU (text_poke_bp on 4 CPUs: ~1 retranslation a run)


class _Engine:
    """One Unicorn instance of a CPU, with its own copy of the text. `key` is the bytes of
    every patch site in that copy: its translations are valid for exactly that view."""

    __slots__ = ("uc", "uch", "uch_addr", "text_buf", "text", "key")


class X86Cpu:
    """One emulated x86-64 CPU.

    Its view of the text lives in a small pool of Unicorn instances ("engines"), one per
    recently used view, each with its own text copy and translation cache; the stack and the
    CPU state are moved along. A view change whose bytes an engine already holds is a switch
    (a context copy, ~1 us) instead of a flush and a retranslation (~15 us): a patch cycles
    every CPU through the same few views (old, int3, int3 + tail, new) in every run. An engine
    whose text is rewritten for another view has the changed range flushed, as FACTS requires.
    `uc` is always the engine holding the CPU; a pending view change is applied (`_switch`)
    before the CPU runs or its text is read.

    Hot-path calls go to the C API directly (the binding's wrappers cost more than the call);
    everything that is not hot uses `self.uc`."""

    def __init__(self, image: Image, index: int, hooks: CpuHooks):
        self.index = index
        self._hooks = hooks
        # The text is mapped from buffers we own, so a view update is a slice assignment
        # (plus the translation-cache flush) instead of a trip through mem_write. `_want` is
        # the view the CPU must execute, `_dirty` says it may differ from the engine's.
        self._want = bytearray(TEXT_SIZE)
        self._want[: len(image.text)] = image.text
        self._dirty = False
        self._site_offs = [(s.addr - TEXT_BASE, s.addr - TEXT_BASE + s.size)
                           for s in image.sites.values()]
        self._one_site = self._site_offs[0] if len(self._site_offs) == 1 else None
        self._site_ranges = [(s.addr, s.addr + s.size - 1) for s in image.sites.values()]
        # The stack is shared by the engines (and host-mapped, so the int3 handler's emulated
        # call pushes its return address with a host store: no code lives there).
        self._stack_buf = (ctypes.c_ubyte * STACK_SIZE)()
        self._stack = memoryview(self._stack_buf).cast("B")
        self._flush_args: dict[tuple[int, int], tuple] = {}
        self._a_begin = ctypes.c_uint64()
        self._a_count = ctypes.c_size_t()
        self._if: bool | None = None  # EFLAGS.IF, cached until the registers may change
        # Hook state shared with the native hooks and the direct run call (the _SKIP .. _STATUS
        # indices above; see _native_site_hook and _unicorn_calls.c).
        self._st_buf = (ctypes.c_int64 * 7)(-1, 0, 0, 1, 0, 0, 0)
        self._st_addr = ctypes.addressof(self._st_buf)
        self._st = memoryview(self._st_buf).cast("B").cast("q")
        if _NATIVE_SITE_HOOK is not None:
            self._site_cb = _NATIVE_SITE_HOOK
        else:
            self._site_cb = _HOOK_CODE_CFUNC(self._py_site_hook)
        if _DIRECT is not None:
            self._intr_cb = _DIRECT.intr_hook_address()
        else:
            self._intr_cb = _HOOK_INTR_CFUNC(self._on_intr)
        eng = self._new_engine()
        eng.key = self._key()
        self._engines: OrderedDict[bytes, _Engine] = OrderedDict({eng.key: eng})  # LRU order
        self._cur = eng
        self.uc = uc = eng.uc
        self._uch = eng.uch
        self._uch_addr = eng.uch_addr
        uc.reg_write(X.UC_X86_REG_RSP, NMI_STACK_TOP)
        uc.reg_write(X.UC_X86_REG_RIP, image.nmi_entry)
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
        self.nmi_context = self.save()
        uc.reg_write(X.UC_X86_REG_RSP, THREAD_STACK_TOP)
        uc.reg_write(X.UC_X86_REG_RIP, image.thread_entry)
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2 | EFLAGS_IF)
        self.thread_context = self.save()
        self._move = self.save()  # scratch: carries the CPU state between engines

    def _new_engine(self) -> _Engine:
        eng = _Engine()
        eng.uc = uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        eng.uch = uch = uc._uch
        eng.uch_addr = uch.value
        eng.key = b""
        eng.text_buf = (ctypes.c_ubyte * TEXT_SIZE)()
        eng.text = memoryview(eng.text_buf).cast("B")
        eng.text[:] = self._want
        uc.mem_map_ptr(TEXT_BASE, TEXT_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC,
                       ctypes.addressof(eng.text_buf))
        uc.mem_map_ptr(STACK_BASE, STACK_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE,
                       ctypes.addressof(self._stack_buf))
        # The site hook runs at every site execution: registered through the C API directly,
        # without the binding's per-call wrapper layers. It only records and stops.
        st_ptr = ctypes.c_void_p(ctypes.addressof(self._st_buf))
        for lo, hi in self._site_ranges:
            self._hook_raw(uch, unicorn.UC_HOOK_CODE, self._site_cb, st_ptr, lo, hi)
        self._hook_raw(uch, unicorn.UC_HOOK_INTR, self._intr_cb,
                       st_ptr if _DIRECT is not None else None, 1, 0)
        uc.hook_add(unicorn.UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(
            unicorn.UC_HOOK_MEM_FETCH_UNMAPPED | unicorn.UC_HOOK_MEM_READ_UNMAPPED
            | unicorn.UC_HOOK_MEM_WRITE_UNMAPPED | unicorn.UC_HOOK_MEM_FETCH_PROT
            | unicorn.UC_HOOK_MEM_WRITE_PROT,
            self._on_unmapped,
        )
        return eng

    @staticmethod
    def _hook_raw(uch, kind: int, cb, user_data, begin: int, end: int) -> None:
        handle = _ucmod.uc_hook_h()
        status = _uc_hook_add(uch, ctypes.byref(handle), kind, cb, user_data,
                              ctypes.c_uint64(begin), ctypes.c_uint64(end))
        if status != _OK:
            raise unicorn.UcError(status)

    def _key(self) -> bytes:
        want = self._want
        if self._one_site is not None:
            lo, hi = self._one_site
            return bytes(want[lo:hi])
        return b"".join([want[lo:hi] for lo, hi in self._site_offs])

    def _switch(self) -> None:
        """Move the CPU to an engine whose text is the wanted view: one that holds it already,
        else a new one while the pool has room, else the least recently used other engine,
        whose changed site bytes are rewritten and flushed."""
        self._dirty = False
        key = self._key()
        cur = self._cur
        if key == cur.key:
            return
        engines = self._engines
        eng = engines.get(key)
        if eng is None:
            if len(engines) < ENGINES_PER_CPU:
                eng = self._new_engine()  # a copy of the wanted text, nothing translated yet
            else:
                old = next((k for k, e in engines.items() if e is not cur), cur.key)
                eng = engines.pop(old)
                want = self._want
                text = eng.text
                for lo, hi in self._site_offs:
                    if text[lo:hi] != want[lo:hi]:
                        text[lo:hi] = want[lo:hi]
                        self._flush(eng.uch, TEXT_BASE + lo, hi - lo)
            eng.key = key
            engines[key] = eng
        else:
            engines.move_to_end(key)
        if eng is cur:  # a pool of one: the CPU's engine was rewritten in place
            return
        status = _save_ctx(cur, self._move)
        if status == _OK:
            status = _load_ctx(eng, self._move)
        if status != _OK:
            raise unicorn.UcError(status)
        self._cur = eng
        self.uc = eng.uc
        self._uch = eng.uch
        self._uch_addr = eng.uch_addr

    # hooks: keep them tiny, they are on the emulator's path
    def _py_site_hook(self, uch, addr, _size, _user_data):
        st = self._st
        if addr == st[_SKIP]:
            st[_SKIP] = -1
        elif st[_ENABLED]:
            st[_HIT_ADDR] = addr
            st[_HIT] = 1
            _uc_emu_stop(uch)

    # A trap or fault reported after a site stop supersedes it (it happened later), as a site
    # stop recorded after them supersedes them: the last event of a slice is its stop.
    def _on_intr(self, _uch, intno, _user_data):
        self._st[_HIT] = 0
        try:
            if intno == 3:
                self._hooks.on_trap(self.index, "int3", self.pc() - 1)
            else:
                self._hooks.on_fault(self.index, f"exception vector {intno}", self.pc())
        except BaseException as e:  # re-raised by run(), as the binding's wrapper would
            if self.uc._hook_exception is None:
                self.uc._hook_exception = e
        _uc_emu_stop(self._uch)

    def _on_invalid(self, uc, _user_data=None):  # unicorn calls it as (uc, user_data)
        self._st[_HIT] = 0
        self._hooks.on_fault(self.index, "invalid opcode", self.pc())
        return False

    def _on_unmapped(self, uc, access, addr, size, value, _):
        self._st[_HIT] = 0
        kind = {
            unicorn.UC_MEM_FETCH_UNMAPPED: "fetch from unmapped address",
            unicorn.UC_MEM_READ_UNMAPPED: "read from unmapped address",
            unicorn.UC_MEM_WRITE_UNMAPPED: "write to unmapped address",
            unicorn.UC_MEM_FETCH_PROT: "fetch from non-executable memory",
            unicorn.UC_MEM_WRITE_PROT: "write to read-only memory",
        }.get(access, "memory fault")
        self._hooks.on_fault(self.index, kind, addr)
        return False

    # hot-path register access: _get_reg/_set_reg, not the binding's slower wrappers
    def pc(self) -> int:
        return _get_reg(self._cur, _RIP)

    def set_pc(self, pc: int) -> None:
        self.uc.reg_write(X.UC_X86_REG_RIP, pc)

    def irqs_enabled(self) -> bool:
        v = self._if
        if v is None:
            v = self._if = bool(_get_reg(self._cur, _EFLAGS) & EFLAGS_IF)
        return v

    def run(self, pc: int, count: int, skip: int = -1, sites: bool = True) -> int:
        """Run from `pc` for at most `count` instructions. Returns the address of the site
        instruction the CPU stopped in front of, or -1 (ran out of count, reached the stop
        instruction, or a trap or fault, which the hooks report). `skip`: the site instruction
        at this address does not stop the CPU the first time (it resumes there). `sites=False`:
        no site stops at all."""
        # Always pass a count (FACTS: mixing counted and uncounted runs flushes the TB cache).
        # The raw C entry saves the binding's wrapper on the hottest path; hook exceptions are
        # still re-raised as the binding would.
        if self._dirty:
            self._switch()
        uc = self.uc
        st = self._st
        if not sites:
            st[_ENABLED] = 0
        self._if = None
        if _DIRECT is not None:
            hit = _DIRECT.run(self._uch_addr, self._st_addr, pc, count, skip)
            if hit != _DETAILS and uc._hook_exception is None:
                return hit  # a site stop or the end of the count: the common case
            status = st[_STATUS]
        else:
            st[_SKIP] = skip
            st[_HIT] = 0
            self._a_begin.value = pc
            self._a_count.value = count
            status = _emu_start(self._uch, self._a_begin, _UNTIL, _NO_TIMEOUT, self._a_count)
            st[_ENABLED] = 1
        exc = uc._hook_exception
        if exc is not None:
            uc._hook_exception = None
            raise exc
        if st[_INTR]:  # recorded by the native interrupt hook: report it as _on_intr would
            st[_INTR] = 0
            intno = st[_INTNO]
            if intno == 3:
                self._hooks.on_trap(self.index, "int3", self.pc() - 1)
            else:
                self._hooks.on_fault(self.index, f"exception vector {intno}", self.pc())
        if status != _OK:
            # the fault hooks have already recorded what happened; anything else is a fault too
            # (and it supersedes a site stop, which it follows)
            hit = st[_HIT]
            st[_HIT] = 0
            err = unicorn.UcError(status)
            self._hooks.on_fault(self.index, f"emulator error: {err}", self.pc(), only_if_new=not hit)
            return -1
        return st[_HIT_ADDR] if st[_HIT] else -1

    def skip_pending(self) -> int:
        """The `skip` address of the last run if it was never reached, else -1."""
        return self._st[_SKIP]

    def write_text(self, addr: int, data: bytes) -> None:
        """Change this CPU's view. Takes effect (on another engine, or with the translations
        of the range dropped: FACTS, unicorn does not notice host-side writes) before the CPU
        next runs or its text is read."""
        off = addr - TEXT_BASE
        end = off + len(data)
        self._want[off:end] = data
        for lo, hi in self._site_offs:
            if lo <= off and end <= hi:
                self._dirty = True
                return
        # outside the patch sites (the engine never does this): every engine changes
        for eng in self._engines.values():
            eng.text[off:end] = data
            self._flush(eng.uch, addr, end - off)

    def _flush(self, uch, addr: int, n: int) -> None:
        args = self._flush_args.get((addr, n))
        if args is None:
            args = self._flush_args[(addr, n)] = (ctypes.c_uint64(addr), ctypes.c_uint64(addr + n))
        status = _uc_ctl(uch, _CTL_REMOVE_CACHE, *args)
        if status != _OK:
            raise unicorn.UcError(status)

    def read(self, addr: int, n: int) -> bytes:
        """`n` bytes of memory as this CPU sees them (its view of the text)."""
        if self._dirty:
            self._switch()
        return bytes(self.uc.mem_read(addr, n))

    def save(self):
        ctx = self.uc.context_save()
        ctx._addr = ctx._context.value  # what the direct calls take
        return ctx

    def restore(self, ctx) -> None:
        self._if = None
        status = _load_ctx(self._cur, ctx)
        if status != _OK:
            raise unicorn.UcError(status)

    def emulate(self, kind: str, target: int, next_pc: int) -> int:
        """Apply a whole instruction's effect, as the int3 handler's int3_emulate_*() does.
        Returns the new PC."""
        eng = self._cur
        if kind == "call":
            rsp = _get_reg(eng, _RSP) - 8
            if STACK_BASE <= rsp <= STACK_BASE + STACK_SIZE - 8:
                struct.pack_into("<Q", self._stack, rsp - STACK_BASE, next_pc)
            else:  # off the stack: let the emulator raise what a real push would
                self.uc.mem_write(rsp, struct.pack("<Q", next_pc))
            _set_reg(eng, _RSP, rsp)
            pc = target
        elif kind == "jmp":
            pc = target
        else:
            pc = next_pc
        _set_reg(eng, _RIP, pc)
        return pc

    def abstract_registers(self, ctx=None) -> tuple | None:
        """(SP, IRQs enabled, the live stack above SP) of the CPU, or of a saved context; None
        when SP is outside the known stacks."""
        if ctx is None:
            rsp = self.uc.reg_read(X.UC_X86_REG_RSP)
            iflag = self.irqs_enabled()
        else:
            rsp = ctx.reg_read(X.UC_X86_REG_RSP)
            iflag = bool(ctx.reg_read(X.UC_X86_REG_EFLAGS) & EFLAGS_IF)
        top = THREAD_STACK_TOP if rsp <= THREAD_STACK_TOP else NMI_STACK_TOP
        if not 0 <= top - rsp <= 4096:
            return None
        return (rsp, iflag, bytes(self.uc.mem_read(rsp, top - rsp)))

    def return_address(self) -> int:
        rsp = self.uc.reg_read(X.UC_X86_REG_RSP)
        return struct.unpack("<Q", self.uc.mem_read(rsp, 8))[0]
