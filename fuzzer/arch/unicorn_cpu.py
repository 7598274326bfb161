"""One Unicorn CPU for every ISA: engine pool, direct calls into libunicorn, site stops.

Everything guest-specific (Unicorn arch and mode, register ids, the IRQ flag, how a trap is
reported, where a call leaves its return address, the memory layout) comes from the `Arch`; this
file only knows how to drive Unicorn fast, through the host-side calls of hotpath.py.
"""

from __future__ import annotations

import ctypes
import struct
from collections import OrderedDict

import unicorn
import unicorn.unicorn_py3.unicorn as _ucmod

from . import hotpath
from .base import Arch, CpuHooks, Image
from .hotpath import (
    CTL_REMOVE_CACHE,
    DETAILS,
    DIRECT,
    ENABLED,
    HIT,
    HIT_ADDR,
    HOOK_CODE_CFUNC,
    HOOK_INTR_CFUNC,
    INTNO,
    INTR,
    NO_TIMEOUT,
    OK,
    SKIP,
    STATUS,
    UNTIL,
    emu_start,
    get_reg,
    load_ctx,
    save_ctx,
    set_reg,
    uc_ctl,
    uc_emu_stop,
    uc_hook_add,
)

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
    everything that is not hot uses `self.uc`. Slots: more than 30 instance attributes would
    cost CPython 3.11 its shared-key instance dicts, and with them its fastest attribute loads
    (measured: +10 % on the emulator floor)."""

    __slots__ = (
        "index", "uc", "nmi_context", "irq_context", "thread_context",
        "_hooks", "_arch", "_text_base", "_stack_base", "_pc_reg", "_sp_reg", "_irq_reg",
        "_irq_mask", "_irq_on", "_trap_intno", "_trap_name", "_trap_pc_after", "_link_reg",
        "_pc_bits", "_invalid_trap", "_word", "_want", "_dirty", "_site_offs", "_one_site",
        "_site_ranges", "_stack_buf", "_stack", "_flush_args", "_a_begin", "_a_count", "_if",
        "_st_buf", "_st_addr", "_st", "_site_cb", "_intr_cb", "_engines", "_cur", "_uch",
        "_uch_addr", "_move", "_far", "_state_regs",
    )

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
        self._state_regs = tuple(arch.state_regs)
        self._pc_bits = arch.pc_exec_bits
        self._invalid_trap = False  # the last run's invalid instruction was the breakpoint
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
        # The far functions' pages: never written, so one host copy serves every engine.
        self._far = []
        for addr, body in image.far:
            page = addr - addr % arch.far_size
            buf = (ctypes.c_ubyte * arch.far_size)()
            memoryview(buf).cast("B")[addr - page:addr - page + len(body)] = body
            self._far.append((page, buf))
        self._flush_args: dict[tuple[int, int], tuple] = {}
        self._a_begin = ctypes.c_uint64()
        self._a_count = ctypes.c_size_t()
        self._if: bool | None = None  # IRQs enabled, cached until the registers may change
        # Hook state shared with the native hooks and the direct run call (the SKIP .. STATUS
        # indices of hotpath.py; see its native site hook and _unicorn_calls.c).
        self._st_buf = (ctypes.c_int64 * 7)(-1, 0, 0, 1, 0, 0, 0)
        self._st_addr = ctypes.addressof(self._st_buf)
        self._st = memoryview(self._st_buf).cast("B").cast("q")
        if hotpath.NATIVE_SITE_HOOK is not None:  # read here, so tests can switch it off
            self._site_cb = hotpath.NATIVE_SITE_HOOK
        else:
            self._site_cb = HOOK_CODE_CFUNC(self._py_site_hook)
        if DIRECT is not None:
            self._intr_cb = DIRECT.intr_hook_address()
        else:
            self._intr_cb = HOOK_INTR_CFUNC(self._on_intr)
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
        uc.reg_write(arch.reg_sp, arch.irq_stack_top)
        uc.reg_write(arch.reg_pc, image.irq_entry)
        self.irq_context = self.save()  # IRQs masked too: a handler runs with them off
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
        for page, buf in self._far:
            uc.mem_map_ptr(page, arch.far_size, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC,
                           ctypes.addressof(buf))
        # The site hook runs at every site execution: registered through the C API directly,
        # without the binding's per-call wrapper layers. It only records and stops.
        st_ptr = ctypes.c_void_p(ctypes.addressof(self._st_buf))
        for lo, hi in self._site_ranges:
            self._hook_raw(uch, unicorn.UC_HOOK_CODE, self._site_cb, st_ptr, lo, hi)
        self._hook_raw(uch, unicorn.UC_HOOK_INTR, self._intr_cb,
                       st_ptr if DIRECT is not None else None, 1, 0)
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
        status = uc_hook_add(uch, ctypes.byref(handle), kind, cb, user_data,
                             ctypes.c_uint64(begin), ctypes.c_uint64(end))
        if status != OK:
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
        status = save_ctx(cur, self._move)
        if status == OK:
            status = load_ctx(eng, self._move)
        if status != OK:
            raise unicorn.UcError(status)
        self._cur = eng
        self.uc = eng.uc
        self._uch = eng.uch
        self._uch_addr = eng.uch_addr

    # hooks: keep them tiny, they are on the emulator's path
    def _py_site_hook(self, uch, addr, _size, _user_data):
        st = self._st
        if addr == st[SKIP]:
            st[SKIP] = -1
        elif st[ENABLED]:
            st[HIT_ADDR] = addr
            st[HIT] = 1
            uc_emu_stop(uch)

    # A trap or fault reported after a site stop supersedes it (it happened later), as a site
    # stop recorded after them supersedes them: the last event of a slice is its stop.
    def _on_intr(self, _uch, intno, _user_data):
        self._st[HIT] = 0
        try:
            self._report_intr(intno)
        except BaseException as e:  # re-raised by run(), as the binding's wrapper would
            if self.uc._hook_exception is None:
                self.uc._hook_exception = e
        uc_emu_stop(self._uch)

    def _report_intr(self, intno: int) -> None:
        if intno == self._trap_intno:
            self._hooks.on_trap(self.index, self._trap_name, self.pc() - self._trap_pc_after)
        else:
            pc = self.pc() - self._arch.intr_pc_after
            if pc != self.pc():  # the CPU stands at the faulting instruction, as its epc says
                set_reg(self._cur, self._pc_reg, pc)
            self._hooks.on_fault(self.index, f"exception vector {intno}", pc)

    def _on_invalid(self, uc, _user_data=None):  # unicorn calls it as (uc, user_data)
        self._st[HIT] = 0
        pc = self.pc()
        arch = self._arch
        # a breakpoint Unicorn reports as an invalid instruction (riscv ebreak, ARM's udf ones)
        if arch.trap_length(
                bytes(uc.mem_read(pc, max(len(t) for t in arch.breakpoints())))):
            self._invalid_trap = True
            self._hooks.on_trap(self.index, self._trap_name, pc - self._trap_pc_after)
        else:
            self._hooks.on_fault(self.index, "invalid opcode", pc)
        return False

    def _on_unmapped(self, uc, access, addr, size, value, _):
        self._st[HIT] = 0
        kind = {
            unicorn.UC_MEM_FETCH_UNMAPPED: "fetch from unmapped address",
            unicorn.UC_MEM_READ_UNMAPPED: "read from unmapped address",
            unicorn.UC_MEM_WRITE_UNMAPPED: "write to unmapped address",
            unicorn.UC_MEM_FETCH_PROT: "fetch from non-executable memory",
            unicorn.UC_MEM_WRITE_PROT: "write to read-only memory",
        }.get(access, "memory fault")
        self._hooks.on_fault(self.index, kind, addr)
        return False

    # hot-path register access: get_reg/set_reg, not the binding's slower wrappers
    def pc(self) -> int:
        return get_reg(self._cur, self._pc_reg)

    def set_pc(self, pc: int) -> None:
        self.uc.reg_write(self._pc_reg, pc)

    def irqs_enabled(self) -> bool:
        v = self._if
        if v is None:
            v = self._if = (get_reg(self._cur, self._irq_reg) & self._irq_mask) == self._irq_on
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
            st[ENABLED] = 0
        self._if = None
        if DIRECT is not None:
            hit = DIRECT.run(self._uch_addr, self._st_addr, pc, count, skip)
            if hit != DETAILS and uc._hook_exception is None:
                return hit  # a site stop or the end of the count: the common case
            status = st[STATUS]
        else:
            st[SKIP] = skip
            st[HIT] = 0
            self._a_begin.value = pc
            self._a_count.value = count
            status = emu_start(self._uch, self._a_begin, UNTIL, NO_TIMEOUT, self._a_count)
            st[ENABLED] = 1
        trapped = self._invalid_trap
        self._invalid_trap = False
        exc = uc._hook_exception
        if exc is not None:
            uc._hook_exception = None
            raise exc
        if st[INTR]:  # recorded by the native interrupt hook: report it as _on_intr would
            st[INTR] = 0
            self._report_intr(st[INTNO])
        if status != OK:
            if trapped:  # the breakpoint, reported already; Unicorn calls it an error
                return -1
            # the fault hooks have already recorded what happened; anything else is a fault too
            # (and it supersedes a site stop, which it follows)
            hit = st[HIT]
            st[HIT] = 0
            err = unicorn.UcError(status)
            self._hooks.on_fault(self.index, f"emulator error: {err}", self.pc(), only_if_new=not hit)
            return -1
        return st[HIT_ADDR] if st[HIT] else -1

    def skip_pending(self) -> int:
        """The `skip` address of the last run if it was never reached, else -1."""
        return self._st[SKIP]

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
        status = uc_ctl(uch, CTL_REMOVE_CACHE, *args)
        if status != OK:
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
        status = load_ctx(self._cur, ctx)
        if status != OK:
            raise unicorn.UcError(status)

    def emulate(self, kind: str, target: int, next_pc: int) -> int:
        """Apply a whole instruction's effect, as a trap handler's emulation (x86
        int3_emulate_call()) does. Returns the new PC."""
        eng = self._cur
        if kind == "call":
            link = self._link_reg
            if link is not None:
                set_reg(eng, link, next_pc | self._pc_bits)
            else:
                word = self._word
                sp = get_reg(eng, self._sp_reg) - word.size
                off = sp - self._stack_base
                if 0 <= off <= len(self._stack) - word.size:
                    word.pack_into(self._stack, off, next_pc)
                else:  # off the stack: let the emulator raise what a real push would
                    self.uc.mem_write(sp, word.pack(next_pc))
                set_reg(eng, self._sp_reg, sp)
            pc = target
        elif kind == "jmp":
            pc = target
        else:
            pc = next_pc
        set_reg(eng, self._pc_reg, pc)
        return pc

    def write_regs(self, pairs) -> None:
        """Set registers: (Unicorn register id, value) pairs."""
        self._if = None
        for reg, value in pairs:
            set_reg(self._cur, reg, value)

    def read_regs(self, regs: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(get_reg(self._cur, r) for r in regs)

    def abstract_registers(self, ctx=None) -> tuple | None:
        """The register state the generated image's code can depend on, when the Arch says it
        is register-abstractable: (stack pointer, IRQs enabled, the live stack above the stack
        pointer), plus the values of the Arch's `state_regs` where it has any (return addresses
        kept in registers), of the running CPU or of a saved context `ctx`. None when the stack
        pointer is outside the thread, IRQ and NMI stacks' live windows (nothing to key it by)."""
        if ctx is None:
            sp = get_reg(self._cur, self._sp_reg)
            irqs = self.irqs_enabled()
        else:
            sp = ctx.reg_read(self._sp_reg)
            irqs = (ctx.reg_read(self._irq_reg) & self._irq_mask) == self._irq_on
        arch = self._arch
        top = next((t for t in (arch.thread_stack_top, arch.irq_stack_top, arch.nmi_stack_top) if sp <= t),
                   arch.nmi_stack_top)
        if not 0 <= top - sp <= _LIVE_STACK:
            return None
        base = self._stack_base
        stack = bytes(self._stack[sp - base : top - base])
        if not self._state_regs:
            return (sp, irqs, stack)
        read = (lambda r: get_reg(self._cur, r)) if ctx is None else ctx.reg_read
        return (sp, irqs, stack, tuple(read(r) for r in self._state_regs))


class StateBitCpu(UnicornCpu):
    """A CPU whose code addresses carry state bits (Thumb): runs resume with them. A class of
    its own, so the others' run() does not pay for it."""

    __slots__ = ()

    def run(self, pc: int, count: int, skip: int = -1, sites: bool = True) -> int:
        return UnicornCpu.run(self, pc | self._pc_bits, count, skip, sites)


def new_cpu(arch: Arch, image: Image, index: int, hooks: CpuHooks) -> UnicornCpu:
    if image.programs or image.data:
        if arch.pc_exec_bits:
            raise NotImplementedError(f"{arch.name}: programs on a CPU whose code addresses carry state bits")
        from .program_cpu import ProgramCpu

        return ProgramCpu(arch, image, index, hooks)
    return (StateBitCpu if arch.pc_exec_bits else UnicornCpu)(arch, image, index, hooks)
