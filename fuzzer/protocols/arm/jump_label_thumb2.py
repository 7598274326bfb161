"""32-bit ARM static_branch_enable() in a Thumb-2 kernel: nop.w -> b.w through patch_text(),
at an aligned site and at one that straddles an aligned word.

Models arch/arm/kernel/jump_label.c and arch/arm/kernel/patch.c as of v6.x with
CONFIG_THUMB2_KERNEL: arch_jump_label_transform() builds `b.w <target>` with arm_gen_branch()
(__arm_gen_branch_thumb2()) or `nop.w` with arm_gen_nop() and calls patch_text(), which always
runs stop_machine(patch_text_stop_machine). __patch_text_real() writes an aligned 32-bit
instruction with one 32-bit store and one that straddles a word (`uintaddr & 2`) as two
separate halfword stores, first half first, then flush_icache_range(); the parked CPUs leave by
an exception return (`patchfuzz rules thumb2`). Thumb fetches halfwords, so without the
stop_machine a CPU may fetch one half old and one half new: a b.w half-written over a nop.w is
another valid instruction (MULTIARCH.md 2.1: `aff3feb9` is b.w #0x3b0402, `00f00080` beq.w), the
reason arch/arm/probes/kprobes/core.c gives for stop_machine ("to atomically set the two
half-words of a 32-bit Thumb breakpoint"). ARM Linux runs no traced code from its FIQ-based
NMIs (`nmi_sites`).

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean.
* direct -- torn-fetch: the straddling b.w written as two halfwords (and flushed) without
  stop_machine; a CPU fetching meanwhile runs a branch neither version has, and the finding names
  it and shows where it went.
* no-isb -- torn-fetch as well: the aligned b.w, one 32-bit store, flushed with the writer's own
  ISB, but no stop_machine and so no context synchronization (the exception return out of it) on
  the executing cores: one of them may fetch half of the old nop.w next to half of the new b.w.
"""

from __future__ import annotations

from ...arch.thumb2 import NOP16, NOP_W
from ...protocol import Jmp, Protocol, Site


class ArmJumpLabelThumb2(Protocol):
    name = "arm/jump_label_thumb2"
    arch = "thumb2"
    summary = "static_branch_enable() in a Thumb-2 kernel: patch_text() of nop.w -> b.w, aligned and straddling"
    sites = {"aligned": Site(old=NOP_W, new=Jmp("ftrace_stub")),
             "straddling": Site(old=NOP16 + NOP_W + NOP16, new=(NOP16, Jmp("ftrace_stub"), NOP16))}
    nmi_sites = ()
    params = dict(stop_machine=True, which=("aligned", "straddling"))
    variants = {"correct": {}, "direct": dict(stop_machine=False, which=("straddling",)),
                "no-isb": dict(stop_machine=False, which=("aligned",))}
    expect = {"correct": None, "direct": "torn-fetch", "no-isb": "torn-fetch"}

    def patcher(self, k):
        for name in self.v.which:  # one arch_jump_label_transform() per site
            site = k.site(name)
            off = 2 if name == "straddling" else 0
            insn = site.new[off:off + 4]
            if self.v.stop_machine:
                yield from k.stop_machine(lambda kk, name=name, insn=insn, off=off: self.patch_text_real(kk, name, insn, off))
            else:
                yield from self.patch_text_real(k, name, insn, off)
        yield k.complete(*self.v.which)

    def patch_text_real(self, k, name: str, insn: bytes, off: int):
        """__patch_text_real(): one 32-bit store, or two halfword stores where it straddles, then
        flush_icache_range()."""
        if off & 2:
            yield k.poke(name, insn[:2], offset=off)
            yield k.poke(name, insn[2:], offset=off + 2)
        else:
            yield k.poke(name, insn, offset=off)
        yield from k.caches_clean_inval_pou(name)
