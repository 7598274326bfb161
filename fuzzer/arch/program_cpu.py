"""The emulator CPU of an image with programs (`Protocol.programs`, `machine/programs.py`)."""

from __future__ import annotations

import ctypes

import unicorn

from .base import Arch, CpuHooks, Image
from .unicorn_cpu import UnicornCpu, _Engine


class ProgramCpu(UnicornCpu):
    """A CPU of an image with programs (`Protocol.programs`): a data region, whose loads and
    stores the machine answers (`CpuHooks.on_load`/`on_store`: the memory model, not the
    emulator, decides what a load reads), and text stores, which the machine takes as stores
    into the store buffer while this CPU's text stays the view it fetches (restored after the
    instruction, with its translations dropped). Every register a program uses is part of the
    abstract state (`Arch.program_regs`). A class of its own, so the others pay nothing."""

    __slots__ = ("_data_buf", "_data", "_stored")

    def __init__(self, arch: Arch, image: Image, index: int, hooks: CpuHooks):
        # the data region is host memory shared by the CPU's engines, as the stack is
        self._data_buf = (ctypes.c_ubyte * arch.data_size)()
        self._data = memoryview(self._data_buf).cast("B")
        self._stored: list[tuple[int, int]] = []  # text ranges the last run stored to
        super().__init__(arch, image, index, hooks)
        self._state_regs = tuple(dict.fromkeys((*arch.state_regs, *arch.program_regs.values())))

    def _new_engine(self) -> _Engine:
        eng = super()._new_engine()
        arch = self._arch
        uc = eng.uc
        uc.mem_map_ptr(arch.data_base, arch.data_size, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE,
                       ctypes.addressof(self._data_buf))
        uc.mem_protect(arch.text_base, arch.text_size, unicorn.UC_PROT_ALL)
        data_end = arch.data_base + arch.data_size - 1
        uc.hook_add(unicorn.UC_HOOK_MEM_READ, self._on_read, begin=arch.data_base, end=data_end)
        uc.hook_add(unicorn.UC_HOOK_MEM_WRITE, self._on_write, begin=arch.data_base, end=data_end)
        uc.hook_add(unicorn.UC_HOOK_MEM_WRITE, self._on_write, begin=arch.text_base,
                    end=arch.text_base + arch.text_size - 1)
        uc.hook_add(unicorn.UC_HOOK_MEM_READ, self._on_text_read, begin=arch.text_base,
                    end=arch.text_base + arch.text_size - 1)
        return eng

    def _on_read(self, uc, access, addr, size, value, _):
        # what the load reads is written where it reads, just before it reads (Unicorn loads
        # after the hook returns)
        v = self._hooks.on_load(self.index, addr, size)
        off = addr - self._arch.data_base
        self._data[off:off + size] = ((v or 0) & ((1 << 8 * size) - 1)).to_bytes(size, "little")

    def _on_text_read(self, uc, access, addr, size, value, _):
        # a data read of code reads memory (not this CPU's fetch view, which the text copy
        # holds): written where it reads for the load, restored after the instruction
        v = self._hooks.on_load(self.index, addr, size)
        if v is not None:
            off = addr - self._text_base
            self._cur.text[off:off + size] = (v & ((1 << 8 * size) - 1)).to_bytes(size, "little")
            self._stored.append((off, size))

    def _on_write(self, uc, access, addr, size, value, _):
        self._hooks.on_store(self.index, addr, size, value & ((1 << 8 * size) - 1))
        if self._arch.text_base <= addr < self._arch.text_base + self._arch.text_size:
            self._stored.append((addr - self._text_base, size))

    def run(self, pc: int, count: int, skip: int = -1, sites: bool = True) -> int:
        try:
            return UnicornCpu.run(self, pc, count, skip, sites)
        finally:
            if self._stored:
                eng = self._cur
                want = self._want
                for off, n in self._stored:
                    eng.text[off:off + n] = want[off:off + n]
                    self._flush(eng.uch, self._text_base + off, n)
                self._stored = []
