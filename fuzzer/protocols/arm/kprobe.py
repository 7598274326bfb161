"""32-bit ARM kprobes in a Thumb-2 kernel: a udf.w breakpoint over a 32-bit instruction that
straddles an aligned word, inserted and removed through patch_text().

Models arch/arm/probes/kprobes/core.c as of v6.x: arch_arm_kprobe() and arch_disarm_kprobe()
write KPROBE_THUMB32_BREAKPOINT_INSTRUCTION (udf.w #0x18) over a 32-bit instruction, and the
instruction back, with patch_text(), i.e. stop_machine(patch_text_stop_machine) and
__patch_text_real()'s two halfword stores for a straddling instruction, then
flush_icache_range(). The file explains why: "synchronized using stop_machine. This
synchronization is necessary on SMP to avoid removing a probe between the moment the 'Undefined
Instruction' exception is raised and the moment the exception handler reads the faulting
instruction from memory. It is also needed to atomically set the two half-words of a 32-bit
Thumb breakpoint." The undefined-instruction handler (kprobe_trap_handler() via the undef hook)
reads the faulting instruction and claims it only if it is the breakpoint, then single-steps the
instruction the probe replaced; anything else is a real undefined instruction (an oops). ARM
Linux runs no traced code from its FIQ-based NMIs (`nmi_sites`).

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean.
* nosync-remove -- unhandled-trap: the probe is removed by writing the instruction back without
  stop_machine; a CPU that trapped on the breakpoint reads the faulting instruction after the
  write, sees no breakpoint and takes it for a real undefined instruction (the first reason).
* nosync-insert -- torn-fetch: the breakpoint is written as two halfwords without stop_machine; a
  CPU fetching meanwhile runs half the breakpoint and half the instruction (the second reason).
"""

from __future__ import annotations

from ...arch.thumb2 import ADDW_R0_1, KPROBE_THUMB32_BREAK, NOP16
from ...protocol import Protocol, Site

OFF = 2  # the probed 32-bit instruction straddles an aligned word


class ArmKprobe(Protocol):
    name = "arm/kprobe"
    arch = "thumb2"
    summary = "kprobes in a Thumb-2 kernel: udf.w over a straddling 32-bit instruction, in and out via patch_text()"
    sites = {"probe": Site(old=NOP16 + ADDW_R0_1 + NOP16, new=NOP16 + KPROBE_THUMB32_BREAK + NOP16)}
    nmi_sites = ()
    params = dict(sync_insert=True, sync_remove=True)
    variants = {"correct": {}, "nosync-remove": dict(sync_remove=False), "nosync-insert": dict(sync_insert=False)}
    expect = {"correct": None, "nosync-remove": "unhandled-trap", "nosync-insert": "torn-fetch"}

    def patcher(self, k):
        yield from self.patch_text(k, KPROBE_THUMB32_BREAK, self.v.sync_insert)  # arch_arm_kprobe()
        yield k.complete("probe")
        yield from self.patch_text(k, ADDW_R0_1, self.v.sync_remove)  # arch_disarm_kprobe()
        yield k.complete("probe")

    def patch_text(self, k, insn: bytes, sync: bool):
        if sync:
            yield from k.stop_machine(lambda kk: self.patch_text_real(kk, insn))
        else:
            yield from self.patch_text_real(k, insn)

    def patch_text_real(self, k, insn: bytes):
        """__patch_text_real() of a straddling 32-bit instruction: two halfword stores, then
        flush_icache_range()."""
        yield k.poke("probe", insn[:2], offset=OFF)
        yield k.poke("probe", insn[2:], offset=OFF + 2)
        yield from k.caches_clean_inval_pou("probe")

    def trap_handler(self, k, ip):
        """The undef hook -> kprobe_trap_handler(): read the faulting instruction from memory;
        only kprobes' breakpoint is kprobes'; then single-step the replaced instruction."""
        if ip != k.site("probe").addr + OFF:
            return k.NOT_MINE
        text = yield k.read_text("probe")
        if text[OFF:OFF + 4] != KPROBE_THUMB32_BREAK:
            return k.NOT_MINE
        return k.single_step(ADDW_R0_1)
