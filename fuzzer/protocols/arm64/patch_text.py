"""arm64 aarch64_insn_patch_text(): a kprobe's BRK over an arbitrary instruction, and back,
through stop_machine and the `cpu_count` rendezvous.

Models arch/arm64/kernel/patching.c as of v6.x (aarch64_insn_patch_text() and
aarch64_insn_patch_text_cb(), Jiang Liu's 2013 code, moved out of arch/arm64/kernel/insn.c)
as arch_arm_kprobe() and arch_disarm_kprobe() use it: the instruction under the probe (here
`add x0, x0, #1`) is not in the CMODX list, so no CPU may execute it while it changes. stop_machine_cpuslocked() runs
aarch64_insn_patch_text_cb() on every online CPU: each does atomic_inc_return(&cpu_count); the
last to arrive is the master, writes the instruction with aarch64_insn_patch_text_nosync()
(write, then caches_clean_inval_pou()) and increments cpu_count once more; the others spin until
cpu_count exceeds num_online_cpus() and then isb(), so none of them fetches the old instruction
afterwards. Each call has its own `patch` (a fresh cpu_count). The kprobe is registered before
its BRK is written and forgotten once it is gone (kprobes' brk handler single-steps the
replaced instruction, machine/traps.py).

NMIs: the probed function is declared unreachable from the NMI handler (`nmi_sites`); the
`nmi-reachable` variant keeps it reachable and shows why: a pseudo-NMI taken by a CPU parked in
stop_machine runs the instruction while the master rewrites it, outside the CMODX list.

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean.
* no-isb -- cmodx-violation: the waiters leave the rendezvous without isb(), so a CPU may still
  fetch the old instruction next to the new one (a missing context synchronization).
* waiters-early -- cmodx-violation: the waiters leave the rendezvous at cpu_count ==
  num_online_cpus() (an off-by-one that does without the master's extra increment), so their
  isb() may come before the write, and they run the function next to the new instruction with
  the old one still fetchable.
* nosync -- cmodx-violation: aarch64_insn_patch_text_nosync() alone, with no stop_machine, for a
  pair outside the CMODX list.
* nmi-reachable -- cmodx-violation: as correct, but the NMI handler calls the probed function.
"""

from __future__ import annotations

from ...arch.arm64 import ADD_X0_1, BRK
from ...protocol import Protocol, Site


class Arm64PatchText(Protocol):
    name = "arm64/patch_text"
    arch = "arm64"
    summary = "aarch64_insn_patch_text(): stop_machine, cpu_count master election, isb on the waiters"
    sites = {"probe": Site(old=ADD_X0_1, new=BRK)}
    variants = {"correct": {}, "no-isb": dict(isb=False), "waiters-early": dict(waiters_early=True),
                "nosync": dict(stop_machine=False), "nmi-reachable": dict(nmi_reachable=True)}
    expect = {"correct": None, "no-isb": "cmodx-violation", "waiters-early": "cmodx-violation",
              "nosync": "cmodx-violation", "nmi-reachable": "cmodx-violation"}

    params = dict(isb=True, waiters_early=False, stop_machine=True, nmi_reachable=False)

    @property
    def nmi_sites(self):
        return None if self.v.nmi_reachable else ()

    def patcher(self, k):
        replaced = yield from self.arm(k)
        yield k.complete("probe")
        yield from self.patch_text(k, "pp2", replaced)
        yield k.complete("probe")
        yield k.unregister_kprobe("probe")

    def arm(self, k):
        """register_kprobe() -> arm_kprobe(): the probe is known before its BRK is written."""
        replaced = yield k.register_kprobe("probe")
        yield from self.patch_text(k, "pp1", BRK)
        return replaced


    def patch_text(self, k, pp: str, insn: bytes):
        """aarch64_insn_patch_text(&addr, &insn, 1)."""
        if not self.v.stop_machine:
            yield from k.patch_text_nosync("probe", insn)
            return
        yield from k.stop_machine(lambda kk: self.patch_text_cb(kk, pp, insn), every_cpu=True)

    def patch_text_cb(self, k, pp: str, insn: bytes):
        """aarch64_insn_patch_text_cb(), on every online CPU."""
        count = f"{pp}.cpu_count"
        arrived = yield k.atomic_inc_return(count)
        n = k.ncpus  # num_online_cpus()
        if arrived == n:  # the last CPU becomes master
            yield from k.patch_text_nosync("probe", insn)
            yield k.atomic_inc(count)  # notify the others with an additional increment
        elif self.v.waiters_early:
            yield k.wait_until(count, lambda v: v >= n, f"{count} >= num_online_cpus()")
            if self.v.isb:
                yield k.isb()
        else:
            yield k.wait_until(count, lambda v: v > n, f"{count} > num_online_cpus()")
            if self.v.isb:
                yield k.isb()
