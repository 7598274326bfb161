"""riscv64 ftrace before CALL_OPS: the whole AUIPC + JALR call rewritten under stop_machine.

Models arch/riscv/kernel/ftrace.c from v6.5 (Guo Ren's "riscv: ftrace: Reduce the detour code
size to half", the 8-byte `auipc t0; jalr t0` call) to v6.15, the last release before Andy
Chiu's "riscv: ftrace: atmoic patching and preempt improvements": the patchable entry of a traced
function is two instructions, NOP4; NOP4 while tracing is off, and `auipc t0, hi; jalr t0,
lo(t0)` (make_call_t0()) to the tracer while it is on. ftrace_make_call()/ftrace_make_nop() write
both words with patch_text_nosync() (patch_insn_write(), then the local flush); the writes run in
arch_ftrace_update_code() -> stop_machine(__ftrace_modify_code): every CPU does
atomic_inc_return(&cpu_count); the last to arrive runs ftrace_modify_all_code() and releases the
others with atomic_inc_return_release(); then every CPU runs local_flush_icache_all(). (The
2020-2023 form was four instructions, `sd ra; auipc ra; jalr ra; ld ra`, under the same
stop_machine: the same race.) patch_text_nosync()'s remote fence.i through the SBI reaches
the waiters while they spin; they flush again on the way out, which is what is modelled.

stop_machine parks a CPU at any instruction boundary where its task can be scheduled out.
With kernel preemption, that includes the boundary between the AUIPC and the JALR: the task
resumes after the rewrite at the new JALR with the old AUIPC's t0 (Documentation/arch/riscv/
cmodx.rst: "Kernel preemption makes things even worse as it allows the old state to persist
across the patching process with stop_machine()"). The kernel's stopgap was to forbid it:
commit 8547649981e6 ("riscv: ftrace: Fixup panic by disabling preemption", 2022) made dynamic
ftrace depend on !PREEMPTION. RISC-V Linux takes no NMIs, so no NMI calls a traced function
here (`nmi_sites`).

The traced function's call is retargeted from ftrace_caller to ftrace_regs_caller (a second
tracer wanting registers: ftrace_modify_call()) and back; the two are far apart, as in a
kernel, so both words change. Each update is one arch_ftrace_update_code(), complete once
stop_machine returns. (Enabling from NOP4; NOP4 races the same way: a task that ran the first
NOP4 resumes at a JALR whose t0 nobody set.)

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean: the scheme as the kernel shipped it after the stopgap (dynamic ftrace only
  without kernel preemption), so no task is ever parked inside the call.
* preemptible -- wrong-target: the same code with CONFIG_PREEMPT, as the kernel allowed it before
  the stopgap; a task parked between the AUIPC and the JALR runs a mix of two calls.
* no-flush -- stale-after-complete: the waiters leave without local_flush_icache_all(), so they
  may still fetch the old call after the update returned.
* early-release -- stale-after-complete: the master releases the waiters (the second increment)
  before it writes, so their flush comes before the write.
"""

from __future__ import annotations

from ...protocol import Call, Protocol, Site


class Riscv64FtraceStopMachine(Protocol):
    name = "riscv64/ftrace_stop_machine"
    arch = "riscv64"
    summary = ("ftrace 6.5-6.15: AUIPC+JALR rewritten whole under stop_machine(__ftrace_modify_code); "
               "preemption between the two is the bug")
    symbols = ("ftrace_regs_caller",)
    sites = {"fentry": Site(old=Call("ftrace_caller"), new=Call("ftrace_regs_caller"))}
    nmi_sites = ()
    params = dict(preempt=False, flush=True, early_release=False)
    variants = {"correct": {}, "preemptible": dict(preempt=True), "no-flush": dict(flush=False),
                "early-release": dict(early_release=True)}
    expect = {"correct": None, "preemptible": "wrong-target", "no-flush": "stale-after-complete",
              "early-release": "stale-after-complete"}
    variant_help = {
        "correct": "the 2022 stopgap: dynamic ftrace only without kernel preemption",
        "preemptible": "CONFIG_PREEMPT: a task parked between AUIPC and JALR resumes at the new JALR",
        "no-flush": "the waiters skip local_flush_icache_all()",
        "early-release": "the master releases the waiters before it writes",
    }

    @property
    def preemptible_code(self) -> bool:
        return self.v.preempt

    def patcher(self, k):
        for n, which in enumerate(("new", "old")):
            yield from k.stop_machine(lambda kk, n=n, which=which: self.modify_code(kk, f"u{n}", which),
                                      every_cpu=True)
            yield k.complete("fentry")

    def modify_code(self, k, param: str, which: str):
        """__ftrace_modify_code(), on every online CPU."""
        count = f"{param}.cpu_count"
        n = k.ncpus
        arrived = yield k.atomic_inc_return(count)
        if arrived == n:  # the last to arrive runs ftrace_modify_all_code()
            if self.v.early_release:
                yield k.atomic_inc_return(count)
            # ftrace_modify_all_code() -> ftrace_modify_call() -> patch_text_nosync()
            yield k.poke("fentry", getattr(k.site("fentry"), which))  # patch_insn_write() ...
            yield k.fence_i()  # ... and the local flush
            if not self.v.early_release:
                yield k.atomic_inc_return(count)  # atomic_inc_return_release()
        else:
            yield k.wait_until(count, lambda v: v > n, f"{count} > num_online_cpus()")
        if self.v.flush or arrived == n:
            yield k.fence_i()  # local_flush_icache_all()
