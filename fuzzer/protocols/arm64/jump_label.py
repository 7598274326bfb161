"""arm64 static_branch_enable(): NOP -> B at every site of a key, batched.

Models arch/arm64/kernel/jump_label.c after commit cfb00a357864 ("arm64: jump_label: Ensure
patched jump_labels are visible to all CPUs", Will Deacon, 2024, HAVE_JUMP_LABEL_BATCH):
arch_jump_label_transform_queue() writes each site's new instruction with
aarch64_insn_patch_text_nosync() (an aligned 32-bit store, then caches_clean_inval_pou() on the
writer), and arch_jump_label_transform_apply() is kick_all_cpus_sync(): an IPI every online CPU
takes as an exception, a context synchronization event, after which none fetches the old NOP.
static_branch_enable() returns there, so that is where completion is declared. NOP and B are
both in the CMODX list, so CPUs that run a site meanwhile see one or the other.

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean.
* no-kick -- stale-after-complete: no kick_all_cpus_sync(), so a CPU that took no exception
  since still fetches the old NOP after static_branch_enable() returned. This is the kernel from
  commit f6cc0c501649 ("arm64: Avoid calling stop_machine() when patching jump labels") until
  cfb00a357864, whose message quotes the Arm ARM: "each PE that is executing the modified
  instructions must execute an ISB or perform a context synchronizing event".
* no-dc -- stale-after-complete: the writer skips DC CVAU, so the invalidated instruction
  caches refill the old instruction from the point of unification (clean with --arch-opt idc).
* no-ic -- stale-after-complete: the writer skips IC IVAU, so the other CPUs' instruction caches
  keep the old line through their context synchronization (clean with --arch-opt dic).
"""

from __future__ import annotations

from ...arch.arm64 import NOP
from ...protocol import Jmp, Protocol, Site


class Arm64JumpLabel(Protocol):
    name = "arm64/jump_label"
    arch = "arm64"
    summary = "static_branch_enable(): transform_queue (patch_text_nosync) per site, then kick_all_cpus_sync()"
    symbols = ("key_on",)
    sites = {"key_a": Site(old=NOP, new=Jmp("key_on")), "key_b": Site(old=NOP, new=Jmp("key_on"))}
    params = dict(kick=True, dc=True, ic=True)
    variants = {"correct": {}, "no-kick": dict(kick=False), "no-dc": dict(dc=False), "no-ic": dict(ic=False)}
    expect = {"correct": None, "no-kick": "stale-after-complete", "no-dc": "stale-after-complete",
              "no-ic": "stale-after-complete"}

    def patcher(self, k):
        for name in self.sites:  # arch_jump_label_transform_queue() per entry
            yield from self.patch_text_nosync(k, name, k.site(name).new)
        if self.v.kick:
            yield k.sync_cores()  # arch_jump_label_transform_apply(): kick_all_cpus_sync()
        yield k.complete(*self.sites)

    def patch_text_nosync(self, k, name: str, insn: bytes):
        """aarch64_insn_patch_text_nosync(), with the variant's maintenance step left out."""
        yield k.poke(name, insn)
        if self.v.dc:
            yield k.dc_cvau(name)
        yield k.dsb()
        if self.v.ic:
            yield k.ic_ivau(name)
        yield k.dsb()
        yield k.isb()
