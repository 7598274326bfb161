"""32-bit ARM ftrace in ARM state: `pop {lr}` <-> `bl __gnu_mcount_nc` at the mcount call site,
under stop_machine.

Models arch/arm/kernel/ftrace.c and entry-ftrace.S as of v6.x (Rabin Vincent's dynamic ftrace,
2010, without CONFIG_OLD_MCOUNT): gcc -pg puts `push {lr}` then `bl __gnu_mcount_nc` at every
function's entry; __gnu_mcount_nc (ftrace_caller once enabled) returns to the call site with
the pushed lr popped (`mov ip, lr; pop {lr}; bx ip`); while tracing is off the kernel replaces
the call with its NOP, `pop {lr}` (0xe8bd4000), which undoes the push. ftrace_modify_code()
checks the old word and writes the new one with __patch_text() (one aligned 32-bit store, then
flush_icache_range()), and arch_ftrace_update_code() runs all of it under
stop_machine(__ftrace_modify_code): "All code mutation routines here are called under
stop_machine()". That is necessary: `pop {lr}` is not on the ARMv7 list of instructions that
may be modified while they execute (the issue's text puts ARM ftrace's NOP <-> BL in the safe
set; the kernel's NOP is `pop {lr}`, not the NOP hint, and the model reports the pair when it is
modified unsynchronized). ARM Linux runs no traced code from its FIQ-based NMIs (`nmi_sites`).

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean: enable, then disable, each under stop_machine.
* nosync -- cmodx-violation: the words written and flushed without stop_machine, as a kernel that
  took its BL and NOP for the safe set would: `pop {lr}` <-> `bl` is outside it.
* no-flush -- cmodx-violation: under stop_machine, but without flush_icache_range(): the CPUs
  leave through an exception return with the old line still in their instruction caches, so
  either word may be fetched after the update (a pair outside the list).
"""

from __future__ import annotations

from ...arch.arm import BX_R12, MOV_R12_LR, POP_LR, PUSH_LR, add_imm1
from ...protocol import Call, Protocol, Site

# __gnu_mcount_nc as ftrace_caller: count, then back to the call site with the pushed lr popped
MCOUNT = add_imm1(10) + MOV_R12_LR + POP_LR + BX_R12


class ArmFtrace(Protocol):
    name = "arm/ftrace"
    arch = "arm"
    summary = "ftrace in ARM state: pop {lr} <-> bl __gnu_mcount_nc under stop_machine(__ftrace_modify_code)"
    symbols = (("__gnu_mcount_nc", MCOUNT),)
    sites = {"mcount": Site(old=POP_LR, new=Call("__gnu_mcount_nc"), entry=PUSH_LR)}
    nmi_sites = ()
    params = dict(stop_machine=True, flush=True)
    variants = {"correct": {}, "nosync": dict(stop_machine=False), "no-flush": dict(flush=False)}
    expect = {"correct": None, "nosync": "cmodx-violation", "no-flush": "cmodx-violation"}

    def patcher(self, k):
        site = k.site("mcount")
        for old, new in ((site.old, site.new), (site.new, site.old)):
            if self.v.stop_machine:
                yield from k.stop_machine(lambda kk, old=old, new=new: self.modify_code(kk, old, new))
            else:
                yield from self.modify_code(k, old, new)
            yield k.complete("mcount")

    def modify_code(self, k, old: bytes, new: bytes):
        """ftrace_modify_code(pc, old, new, validate=true)."""
        yield k.expect_text("mcount", old, "the expected old instruction")
        yield k.poke("mcount", new)  # __patch_text(): one aligned word ...
        if self.v.flush:
            yield from k.caches_clean_inval_pou("mcount")  # ... and flush_icache_range()
