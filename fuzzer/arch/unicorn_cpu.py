"""One Unicorn CPU for every ISA: engine pool, direct calls into libunicorn, site stops.

Everything guest-specific (Unicorn arch and mode, register ids, the IRQ flag, how a trap is
reported, where a call leaves its return address, the memory layout) comes from the `Arch`; this
file only knows how to drive Unicorn fast. The C extension (_unicorn_calls.c) and the native site
hook are host code, valid whatever the guest.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import struct
import sys
from collections import OrderedDict

import unicorn
import unicorn.unicorn_py3.unicorn as _ucmod

from .base import Arch, CpuHooks, Image

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


_LIVE_STACK = 4096  # the deepest live stack abstract_registers() keys by
ENGINES_PER_CPU = 8  # views cached per CPU (text_poke_bp on 4 CPUs: ~1 retranslation a run)


class _Engine:
    """One Unicorn instance of a CPU, with its own copy of the text. `key` is the bytes of
    every patch site in that copy: its translations are valid for exactly that view."""

    __slots__ = ("uc", "uch", "uch_addr", "text_buf", "text", "key")


class UnicornCpu:
    """One emulated CPU of any ISA the Unicorn build supports.

    Its view of the text lives in a small pool of Unicorn instances ("engines"), one per
    recently used view, each with its own text copy and translation cache; the stack and the
    CPU state are moved along. A view change whose bytes an engine already holds is a switch
    (a context copy, ~1 us) instead of a flush and a retranslation (~15 us): a patch cycles
    every CPU through the same few views (x86 text_poke_bp: old, int3, int3 + tail, new) in
    every run. An engine whose text is rewritten for another view has the changed range
    flushed, as FACTS requires.
    `uc` is always the engine holding the CPU; a pending view change is applied (`_switch`)
    before the CPU runs or its text is read.

    Hot-path calls go to the C API directly (the binding's wrappers cost more than the call);
    everything that is not hot uses `self.uc`."""

    def __init__(self, arch: Arch, image: Image, index: int, hooks: CpuHooks):
        self.index = index
        self._hooks = hooks
        self._arch = arch
        self._text_base = arch.text_base
        self._stack_base = arch.stack_base
        self._pc_reg = arch.reg_pc
        self._sp_reg = arch.reg_sp
        self._irq_reg = arch.reg_irq
        self._irq_mask = arch.irq_mask
        # what (reg_irq & irq_mask) is when IRQs are enabled
        self._irq_on = arch.irq_mask if arch.irq_set_enables else 0
        self._trap_intno = arch.trap_intno
        self._trap_name = arch.trap_name
        self._trap_pc_after = arch.trap_pc_after
        self._link_reg = arch.link_reg
        self._word = struct.Struct({4: "<I", 8: "<Q"}[arch.word_size])
        # The text is mapped from buffers we own, so a view update is a slice assignment
        # (plus the translation-cache flush) instead of a trip through mem_write. `_want` is
        # the view the CPU must execute, `_dirty` says it may differ from the engine's.
        self._want = bytearray(arch.text_size)
        self._want[: len(image.text)] = image.text
        self._dirty = False
        self._site_offs = [(s.addr - self._text_base, s.addr - self._text_base + s.size)
                           for s in image.sites.values()]
        self._one_site = self._site_offs[0] if len(self._site_offs) == 1 else None
        self._site_ranges = [(s.addr, s.addr + s.size - 1) for s in image.sites.values()]
        # The stack is shared by the engines (and host-mapped, so a trap handler's emulated
        # call pushes its return address with a host store: no code lives there).
        self._stack_buf = (ctypes.c_ubyte * arch.stack_size)()
        self._stack = memoryview(self._stack_buf).cast("B")
        self._flush_args: dict[tuple[int, int], tuple] = {}
        self._a_begin = ctypes.c_uint64()
        self._a_count = ctypes.c_size_t()
        self._if: bool | None = None  # IRQs enabled, cached until the registers may change
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
        # The IRQ flag is changed in the register's reset value: its other bits (x86 EFLAGS
        # bit 1, arm64 EL and the other DAIF bits) stay what the CPU starts with.
        flags = uc.reg_read(arch.reg_irq) & ~arch.irq_mask
        irq_off = flags | (arch.irq_mask ^ self._irq_on)
        uc.reg_write(arch.reg_sp, arch.nmi_stack_top)
        uc.reg_write(arch.reg_pc, image.nmi_entry)
        uc.reg_write(arch.reg_irq, irq_off)
        self.nmi_context = self.save()
        uc.reg_write(arch.reg_sp, arch.thread_stack_top)
        uc.reg_write(arch.reg_pc, image.thread_entry)
        uc.reg_write(arch.reg_irq, flags | self._irq_on)
        self.thread_context = self.save()
        self._move = self.save()  # scratch: carries the CPU state between engines

    def _new_engine(self) -> _Engine:
        eng = _Engine()
        arch = self._arch
        eng.uc = uc = unicorn.Uc(arch.uc_arch, arch.uc_mode)
        if arch.uc_cpu_model is not None:  # FACTS: only right after Uc()
            uc.ctl_set_cpu_model(arch.uc_cpu_model)
        eng.uch = uch = uc._uch
        eng.uch_addr = uch.value
        eng.key = b""
        eng.text_buf = (ctypes.c_ubyte * arch.text_size)()
        eng.text = memoryview(eng.text_buf).cast("B")
        eng.text[:] = self._want
        uc.mem_map_ptr(arch.text_base, arch.text_size, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC,
                       ctypes.addressof(eng.text_buf))
        uc.mem_map_ptr(arch.stack_base, arch.stack_size, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE,
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
                        self._flush(eng.uch, self._text_base + lo, hi - lo)
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
            self._report_intr(intno)
        except BaseException as e:  # re-raised by run(), as the binding's wrapper would
            if self.uc._hook_exception is None:
                self.uc._hook_exception = e
        _uc_emu_stop(self._uch)

    def _report_intr(self, intno: int) -> None:
        if intno == self._trap_intno:
            self._hooks.on_trap(self.index, self._trap_name, self.pc() - self._trap_pc_after)
        else:
            self._hooks.on_fault(self.index, f"exception vector {intno}", self.pc())

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
        return _get_reg(self._cur, self._pc_reg)

    def set_pc(self, pc: int) -> None:
        self.uc.reg_write(self._pc_reg, pc)

    def irqs_enabled(self) -> bool:
        v = self._if
        if v is None:
            v = self._if = (_get_reg(self._cur, self._irq_reg) & self._irq_mask) == self._irq_on
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
            self._report_intr(st[_INTNO])
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
        off = addr - self._text_base
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
        """Apply a whole instruction's effect, as a trap handler's emulation (x86
        int3_emulate_call()) does. Returns the new PC."""
        eng = self._cur
        if kind == "call":
            link = self._link_reg
            if link is not None:
                _set_reg(eng, link, next_pc)
            else:
                word = self._word
                sp = _get_reg(eng, self._sp_reg) - word.size
                off = sp - self._stack_base
                if 0 <= off <= len(self._stack) - word.size:
                    word.pack_into(self._stack, off, next_pc)
                else:  # off the stack: let the emulator raise what a real push would
                    self.uc.mem_write(sp, word.pack(next_pc))
                _set_reg(eng, self._sp_reg, sp)
            pc = target
        elif kind == "jmp":
            pc = target
        else:
            pc = next_pc
        _set_reg(eng, self._pc_reg, pc)
        return pc

    def abstract_registers(self, ctx=None) -> tuple[int, bool, bytes] | None:
        """The register state the generated image's code can depend on, when the Arch says it
        is register-abstractable: (stack pointer, IRQs enabled, the live stack above the stack
        pointer), of the running CPU or of a saved context `ctx`. None when the stack pointer
        is outside the thread and NMI stacks' live windows (nothing to key it by)."""
        if ctx is None:
            sp = _get_reg(self._cur, self._sp_reg)
            irqs = self.irqs_enabled()
        else:
            sp = ctx.reg_read(self._sp_reg)
            irqs = (ctx.reg_read(self._irq_reg) & self._irq_mask) == self._irq_on
        arch = self._arch
        top = arch.thread_stack_top if sp <= arch.thread_stack_top else arch.nmi_stack_top
        if not 0 <= top - sp <= _LIVE_STACK:
            return None
        base = self._stack_base
        return (sp, irqs, bytes(self._stack[sp - base : top - base]))
