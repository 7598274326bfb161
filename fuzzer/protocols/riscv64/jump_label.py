"""riscv64 static_branch_enable(): NOP4 -> JAL at every site of a key, then one flush_icache_all().

Models arch/riscv/kernel/jump_label.c after Samuel Holland's "riscv: jump_label: Batch icache
maintenance" (2024, HAVE_JUMP_LABEL_BATCH): arch_jump_label_transform_queue() writes each site's
new instruction, `jal x0, <target>` (RISCV_INSN_JAL | offset) or NOP4, with patch_insn_write()
under text_mutex: one naturally aligned 32-bit store, inside Ziccif's safe harbor, and no
flush; arch_jump_label_transform_apply() then calls flush_icache_all(): local FENCE.I,
`fence w, o`, and a FENCE.I on every other hart by IPI. static_branch_enable() returns there, so
that is where completion is declared. Before the batching, every site was patched with
patch_text_nosync(), which flushed after each.

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean.
* local-flush -- stale-after-complete: arch_jump_label_transform_apply() runs only
  local_flush_icache_all(), so the other harts may still fetch the NOP4 after
  static_branch_enable() returned.
* no-apply -- stale-after-complete: no flush at all (a transform_queue without its apply).
* misaligned -- cmodx-violation: the site is not 4-byte aligned (a 2-byte instruction before it),
  so the JAL spans two aligned words and is written in halves, outside Ziccif's safe harbor.

Not shown here: flush_icache_all() without its `fence w, o`. The machine's unlock of text_mutex
drains the patcher's stores (stronger than RVWMO's release, which does not order a later MMIO
write), so the remote request can no longer overtake them; riscv64/ftrace_call_ops, whose flush
runs under text_mutex as the kernel's does, shows that mutant.
"""

from __future__ import annotations

from ...arch.riscv64 import C_NOP, NOP4
from ...protocol import Jmp, Protocol, Site


class Riscv64JumpLabel(Protocol):
    name = "riscv64/jump_label"
    arch = "riscv64"
    summary = "static_branch_enable(): JAL|NOP via patch_insn_write() under text_mutex, then flush_icache_all()"
    nmi_sites = ()
    params = dict(remote=True, apply=True, misaligned=False)
    variants = {"correct": {}, "local-flush": dict(remote=False), "no-apply": dict(apply=False),
                "misaligned": dict(misaligned=True)}
    expect = {"correct": None, "local-flush": "stale-after-complete", "no-apply": "stale-after-complete",
              "misaligned": "cmodx-violation"}

    @property
    def sites(self):
        if self.v.misaligned:
            return {"key_a": Site(old=C_NOP + NOP4 + C_NOP, new=(C_NOP, Jmp("ftrace_stub"), C_NOP)),
                    "key_b": Site(old=NOP4, new=Jmp("ftrace_stub"))}
        return {"key_a": Site(old=NOP4, new=Jmp("ftrace_stub")), "key_b": Site(old=NOP4, new=Jmp("ftrace_stub"))}

    def patcher(self, k):
        for name in self.sites:  # arch_jump_label_transform_queue() per entry
            yield k.lock("text_mutex")
            yield k.poke(name, k.site(name).new)  # patch_insn_write()
            yield k.unlock("text_mutex")
        if self.v.apply:  # arch_jump_label_transform_apply(): flush_icache_all()
            yield k.fence_i()
            if self.v.remote:
                yield k.remote_fence_i()
        yield k.complete(*self.sites)
