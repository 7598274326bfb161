"""arm64 ftrace_modify_code(): NOP <-> BL at a function's patch site, with no cross-CPU sync.

Models arch/arm64/kernel/ftrace.c as of v6.x (HAVE_DYNAMIC_FTRACE_WITH_ARGS; the patch-site
pair described at ftrace_call_adjust(): `MOV X9, LR` written once at boot by ftrace_init_nop(),
then `NOP` <-> `BL ftrace_caller`). ftrace_modify_code()
reads the site (aarch64_insn_read), returns -EINVAL unless it holds the expected old
instruction, and writes the new one with aarch64_insn_patch_text_nosync(): one aligned 32-bit
store, then caches_clean_inval_pou() on the writer. arch_ftrace_update_code() is just
ftrace_modify_all_code(): no stop_machine, no IPI. Other CPUs may run the old or the new
instruction for a while, which is fine for tracing, and allowed because NOP and BL are both in
the CMODX list (Arm ARM B2.2.5). The patcher enables the call, then disables it again; no
completion is declared, since the kernel promises none.

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean.
* halfword-stores -- cmodx-violation: the BL is written as two 16-bit stores (a memcpy-like
  write), so a CPU may fetch a word that is half NOP, half BL: no instruction of the list.
* init-at-runtime -- cmodx-violation: `MOV X9, LR` is written at run time together with the BL
  (the site is the pair, NOP; NOP -> MOV X9, LR; BL) instead of once at boot: MOV is not in the
  CMODX list, so a CPU executing the site meanwhile may execute anything.
"""

from __future__ import annotations

from ...arch.arm64 import MOV_X9_LR, NOP
from ...protocol import Call, Protocol, Site


class Arm64Ftrace(Protocol):
    name = "arm64/ftrace"
    arch = "arm64"
    summary = "ftrace_modify_code(): validate, then NOP <-> BL with aarch64_insn_patch_text_nosync()"
    params = dict(halfwords=False, pair=False)
    variants = {"correct": {}, "halfword-stores": dict(halfwords=True), "init-at-runtime": dict(pair=True)}
    expect = {"correct": None, "halfword-stores": "cmodx-violation", "init-at-runtime": "cmodx-violation"}
    # ftrace_modify_all_code() returns with other CPUs free to run either instruction a while
    complete_when_done = False

    @property
    def sites(self):
        if self.v.pair:  # the pair as one site: NOP; NOP -> MOV X9, LR; BL ftrace_caller
            return {"fentry": Site(old=NOP + NOP, new=(MOV_X9_LR, Call("ftrace_caller")))}
        return {"fentry": Site(old=NOP, new=Call("ftrace_caller"))}

    def patcher(self, k):
        site = k.site("fentry")
        for old, new in ((site.old, site.new), (site.new, site.old)):
            yield from self.modify_code(k, old, new)

    def modify_code(self, k, old: bytes, new: bytes):
        """ftrace_modify_code(pc, old, new, validate=true)."""
        yield k.expect_text("fentry", old, "the expected old instruction")
        if self.v.halfwords:
            yield k.poke("fentry", new[:2])
            yield k.poke("fentry", new[2:], offset=2)
            yield from k.caches_clean_inval_pou("fentry")
        else:
            yield from k.patch_text_nosync("fentry", new)

