"""riscv64 ftrace with CALL_OPS: AUIPC fixed at boot, only the JALR <-> NOP4 word patched.

Models arch/riscv/kernel/ftrace.c after Andy Chiu's "riscv: ftrace: atmoic patching and preempt
improvements" (merged for v6.16, HAVE_DYNAMIC_FTRACE_WITH_CALL_OPS): ftrace_init_nop() writes
`auipc t0, hi(ftrace_caller)` and NOP4 at boot, under text_mutex, and the AUIPC is never written
again; __ftrace_modify_call() writes only the second word, `jalr t0, lo(ftrace_caller)(t0)` or
NOP4, with patch_insn_write(): one naturally aligned 32-bit store, which Ziccif makes atomic for
instruction fetch (Documentation/arch/riscv/cmodx.rst). arch_ftrace_update_code() is
ftrace_modify_all_code() under text_mutex (FTRACE_MAY_SLEEP: no stop_machine, the patcher may
be preempted) and then flush_icache_all(): local FENCE.I, `fence w, o`, and a FENCE.I on every
other hart by IPI. Before the call is written, ftrace_update_ftrace_func() publishes the tracer:
WRITE_ONCE(ftrace_call_dest, func); smp_wmb(); smp_call_function(ftrace_sync_ipi), and
ftrace_rec_set_ops() writes the function's 8-byte CALL_OPS literal (here data: what ftrace_caller
loads; the image's ftrace_caller is real code that reads neither, so they order the patcher's
stores but no reader checks them). Kernel preemption is on: a task may be scheduled out between
the AUIPC and the JALR, and resumes at whichever word is there, which is harmless because the
AUIPC never changes. RISC-V Linux takes no NMIs (`nmi_sites`).

The patcher enables the call, then disables it; each update is complete when
arch_ftrace_update_code() returns.

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean.
* whole-call -- wrong-target: the call is retargeted to a tracer out of the JALR's +-2 KiB
  (`my_tramp`, a direct trampoline), which needs a new AUIPC too; writing both words without
  stop_machine lets a task run the old AUIPC with the new JALR.
* no-remote-fence-i -- stale-after-complete: flush_icache_all() without its remote part, so other
  harts may fetch the NOP4 after the update returned.
* no-data-fence -- stale-after-complete: the remote FENCE.I is requested without the data fence
  the ISA requires before it, so a hart's FENCE.I may run before the JALR store reaches memory.
* misaligned -- cmodx-violation: the patchable entry is not 4-byte aligned (a 2-byte instruction
  before it: no -falign-functions=4), so the JALR spans two aligned words and is written in two
  halves, outside Ziccif's safe harbor.
"""

from __future__ import annotations

from ...arch.riscv64 import C_NOP, NOP4
from ...protocol import Call, Part, Protocol, Site


class Riscv64FtraceCallOps(Protocol):
    name = "riscv64/ftrace_call_ops"
    arch = "riscv64"
    summary = "ftrace 6.16+: AUIPC fixed at boot, JALR <-> NOP4 under text_mutex, flush_icache_all()"
    symbols = ("my_tramp",)
    nmi_sites = ()
    params = dict(whole=False, remote=True, fence=True, misaligned=False)
    variants = {"correct": {}, "whole-call": dict(whole=True), "no-remote-fence-i": dict(remote=False),
                "no-data-fence": dict(fence=False), "misaligned": dict(misaligned=True)}
    expect = {"correct": None, "whole-call": "wrong-target", "no-remote-fence-i": "stale-after-complete",
              "no-data-fence": "stale-after-complete", "misaligned": "cmodx-violation"}

    @property
    def sites(self):
        boot = (Part(Call("ftrace_caller"), 0, 4), NOP4)  # ftrace_init_nop()
        if self.v.misaligned:
            return {"fentry": Site(old=(C_NOP, *boot, C_NOP), new=(C_NOP, Call("ftrace_caller"), C_NOP))}
        if self.v.whole:
            return {"fentry": Site(old=boot, new=Call("my_tramp"))}
        return {"fentry": Site(old=boot, new=Call("ftrace_caller"))}

    def initial_memory(self):
        return {"ftrace_call_dest": "ftrace_stub", "fentry.literal": "ftrace_nop_ops"}

    def patcher(self, k):
        site = k.site("fentry")
        pad = 2 if self.v.misaligned else 0
        for new, func, ops in ((site.new, "my_tracer", "my_ops"), (site.old, "ftrace_stub", "ftrace_nop_ops")):
            yield k.lock("text_mutex")
            # ftrace_modify_all_code(): the tracer first, then every record
            yield k.store("ftrace_call_dest", func)  # ftrace_update_ftrace_func()
            yield k.wmb()
            yield k.sync_cores()  # smp_call_function(ftrace_sync_ipi, NULL, 1)
            yield k.store("fentry.literal", ops)  # ftrace_rec_set_ops()
            if self.v.whole:  # both words, as a call out of the JALR's range needs
                yield k.poke("fentry", new)
            else:  # __ftrace_modify_call(): the JALR (or NOP4) only
                yield k.poke("fentry", new[pad + 4:pad + 8], offset=pad + 4)
            yield from self.flush_icache_all(k)
            yield k.unlock("text_mutex")
            yield k.complete("fentry")

    def flush_icache_all(self, k):
        """arch/riscv/mm/cacheflush.c flush_icache_all()."""
        yield k.fence_i()  # local_flush_icache_all()
        if self.v.remote:
            yield k.remote_fence_i(fence=self.v.fence)  # RISCV_FENCE(w, o); sbi_remote_fence_i()
