"""How a CPU calls libunicorn on its hot path: host-side machinery, the same for every guest ISA.

The binding's wrappers cost more than the Unicorn calls they wrap (a ctypes call is about 4,000
host instructions of argument conversion), so the CPU's hottest calls go through the C extension
`_unicorn_calls` when it is built, through raw ctypes entries otherwise (PATCHFUZZ_NO_NATIVE=1
forces that: the same runs, only slower), and its site hook is 48 bytes of host code.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import struct
import sys

import unicorn
import unicorn.unicorn_py3.unicorn as _ucmod

_uclib = _ucmod.uclib
uc_emu_stop = _uclib.uc_emu_stop
uc_hook_add = _uclib.uc_hook_add


def _hot(name: str):
    """A C entry point for the hot path: without argtypes (the binding's per-argument
    conversion costs more than the call; callers pass ctypes objects of the right widths) and
    through PyDLL (no GIL release and re-acquire: nothing else runs while a CPU steps)."""
    fn = getattr(ctypes.PyDLL(_uclib._name), name)
    fn.restype = ctypes.c_int
    return fn


_reg_read = _hot("uc_reg_read")
_reg_write = _hot("uc_reg_write")
emu_start = _hot("uc_emu_start")
_ctx_restore = _hot("uc_context_restore")
_ctx_save = _hot("uc_context_save")
uc_ctl = _hot("uc_ctl")
UNTIL = ctypes.c_uint64(0xFFFF_FFFF_FFFF_0000)  # an `until` address that is never reached
NO_TIMEOUT = ctypes.c_uint64(0)
HOOK_CODE_CFUNC = _ucmod.HOOK_CODE_CFUNC
HOOK_INTR_CFUNC = _ucmod.HOOK_INTR_CFUNC
OK = unicorn.UC_ERR_OK

# The site hook's state, shared with the hooks: one int64 array per CPU. INTR/INTNO: an
# interrupt the native interrupt hook recorded, reported to the machine after the run.
# STATUS: uc_emu_start's status, when the direct call returns DETAILS.
SKIP, HIT_ADDR, HIT, ENABLED, INTR, INTNO, STATUS = range(7)
DETAILS = -2


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


DIRECT = _direct_calls()

# Register and context access of an engine (`_Engine`) on the hot path, through the direct
# calls or, without them, the raw ctypes entries (one thread: one scratch value serves all).
if DIRECT is not None:
    def get_reg(eng, reg: int) -> int:
        return DIRECT.reg_read(eng.uch_addr, reg)

    def set_reg(eng, reg: int, value: int) -> None:
        DIRECT.reg_write(eng.uch_addr, reg, value)

    def save_ctx(eng, ctx) -> int:
        return DIRECT.context_save(eng.uch_addr, ctx._addr)

    def load_ctx(eng, ctx) -> int:
        return DIRECT.context_restore(eng.uch_addr, ctx._addr)
else:
    _scratch = ctypes.c_uint64()
    _scratch_ref = ctypes.byref(_scratch)

    def get_reg(eng, reg: int) -> int:
        _reg_read(eng.uch, reg, _scratch_ref)
        return _scratch.value

    def set_reg(eng, reg: int, value: int) -> None:
        _scratch.value = value
        _reg_write(eng.uch, reg, _scratch_ref)

    def save_ctx(eng, ctx) -> int:
        return _ctx_save(eng.uch, ctx._context)

    def load_ctx(eng, ctx) -> int:
        return _ctx_restore(eng.uch, ctx._context)


def _native_site_hook() -> int | None:
    """The site hook as 48 bytes of host x86-64 code, so a site stop costs no Python callback
    (a ctypes callback costs about as much as the emulated slice itself). It implements, for
    `void hook(uc_engine *uc, uint64_t addr, uint32_t size, int64_t *st)`:

        if (addr == st[SKIP]) { st[SKIP] = -1; return; }    // resuming at this very site
        if (!st[ENABLED]) return;
        st[HIT_ADDR] = addr; st[HIT] = 1; uc_emu_stop(uc);   // tail call, uc still in rdi

    None where the host is not x86-64 Linux or refuses an executable mapping: the Python
    callback `UnicornCpu._py_site_hook` does the same, only slower."""
    if platform.machine() not in ("x86_64", "AMD64") or not sys.platform.startswith("linux"):
        return None
    stop = ctypes.cast(uc_emu_stop, ctypes.c_void_p).value
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
NATIVE_SITE_HOOK = _native_site_hook()
# uc_ctl(uc, UC_CTL_TB_REMOVE_CACHE | write, lo, hi), encoded as the binding's ctl() does
CTL_REMOVE_CACHE = ctypes.c_int(
    (unicorn.UC_CTL_IO_WRITE << 30) | (2 << 26) | unicorn.UC_CTL_TB_REMOVE_CACHE)
