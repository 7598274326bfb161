"""32-bit ARM static_branch_enable() in ARM state: mov r0, r0 -> B through patch_text().

Models arch/arm/kernel/jump_label.c and arch/arm/kernel/patch.c as of v6.x in an ARM (not
Thumb-2) kernel: arch_jump_label_transform() builds `b <target>` with arm_gen_branch() or the
NOP with arm_gen_nop(), which is `mov r0, r0`, not the NOP hint, and calls patch_text(), which
always runs stop_machine(patch_text_stop_machine): the CPU that runs the callback writes the word
(__patch_text_real(): one aligned 32-bit store) and flushes it (flush_icache_range():
v7_coherent_kern_range's dccmvau; dsb; icimvau; dsb; isb); the other CPUs are parked and leave
by an exception return (the model's stated assumption, `patchfuzz rules arm`). `mov r0, r0` is
outside the ARMv7 list of instructions that may be modified while they execute, so no CPU may
execute the site while it changes: that is why patch_text() synchronizes even for one word.
static_branch_enable() returns when patch_text() does: completion is declared there.

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean.
* nosync -- cmodx-violation: the word written and flushed without stop_machine (as arm64 does
  with its NOP hint): mov r0, r0 <-> b is not in the list.
* no-flush -- cmodx-violation: stop_machine, but no flush_icache_range(): the CPUs leave the
  rendezvous through a context synchronization event, yet their instruction caches may still
  hold the old line, so a CPU may fetch either word after the update: a concurrent modification
  of a pair outside the list (it would be stale-after-complete with a pair inside it).

NMIs: ARM Linux runs no traced code from its FIQ-based NMIs, so the NMI handler calls no site
here (`nmi_sites`); a handler that did would run the site while the parked CPUs' master rewrites
it (arm64/patch_text:nmi-reachable shows that race).
"""

from __future__ import annotations

from ...arch.arm import NOP
from ...protocol import Jmp, Protocol, Site


class ArmJumpLabel(Protocol):
    name = "arm/jump_label"
    arch = "arm"
    summary = "static_branch_enable() in ARM state: patch_text() of mov r0,r0 -> b under stop_machine"
    sites = {"key": Site(old=NOP, new=Jmp("ftrace_stub"))}
    nmi_sites = ()
    params = dict(stop_machine=True, flush=True)
    variants = {"correct": {}, "nosync": dict(stop_machine=False), "no-flush": dict(flush=False)}
    expect = {"correct": None, "nosync": "cmodx-violation", "no-flush": "cmodx-violation"}

    def patcher(self, k):
        new = k.site("key").new
        if self.v.stop_machine:
            yield from k.stop_machine(lambda kk: self.patch_text_real(kk, new))
        else:
            yield from self.patch_text_real(k, new)
        yield k.complete("key")

    def patch_text_real(self, k, insn: bytes):
        """__patch_text_real(): the store, then flush_icache_range() over the word."""
        yield k.poke("key", insn)
        if self.v.flush:
            yield from k.caches_clean_inval_pou("key")
