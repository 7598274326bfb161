"""riscv64 patch_text(): a kprobe's ebreak over an arbitrary instruction, and back, through
stop_machine and patch_text_cb()'s `cpu_count` rendezvous.

Models arch/riscv/kernel/patch.c as of v6.x as arch_arm_kprobe()/arch_disarm_kprobe() use it
(arch/riscv/kernel/probes/kprobes.c: patch_text(p->addr, &insn, 1) with `ebreak` for a 4-byte
instruction): stop_machine_cpuslocked(patch_text_cb) runs on every online CPU; each does
atomic_inc_return(&cpu_count); the last to arrive writes with patch_insn_write() (whose
__patch_insn_write() flushes its own hart's icache right after the copy) and releases the
others with atomic_inc_return_release(); the others spin until cpu_count exceeds
num_online_cpus(), then run local_flush_icache_all(). The kprobe is registered before its
ebreak is written and forgotten once the original is back; kprobes' handler single-steps the
instruction it replaced (machine/traps.py). RISC-V Linux takes no NMIs (`nmi_sites`).

A second site shows why the kernel writes an ebreak of the probed instruction's own size
(`__BUG_INSN_16` over a compressed instruction): an `ebreak` written over two compressed
instructions combines smaller instructions into a larger one, which only stop_machine makes
safe.

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean.
* no-waiter-flush -- stale-after-complete: the waiters leave without local_flush_icache_all().
* early-release -- stale-after-complete: the master releases the waiters before it writes.
* nosync-wide -- cmodx-violation: patch_text_nosync() (no stop_machine) writing a 4-byte
  ebreak over two compressed instructions, outside Ziccif's safe harbor.
"""

from __future__ import annotations

from ...arch.riscv64 import EBREAK, addi, caddi
from ...protocol import Protocol, Site

A0, A1 = 10, 11


class Riscv64PatchText(Protocol):
    name = "riscv64/patch_text"
    arch = "riscv64"
    summary = "patch_text(): stop_machine(patch_text_cb), last CPU writes, waiters local_flush_icache_all()"
    nmi_sites = ()
    params = dict(flush=True, early_release=False, stop_machine=True)
    variants = {"correct": {}, "no-waiter-flush": dict(flush=False), "early-release": dict(early_release=True),
                "nosync-wide": dict(stop_machine=False)}
    expect = {"correct": None, "no-waiter-flush": "stale-after-complete", "early-release": "stale-after-complete",
              "nosync-wide": "cmodx-violation"}

    @property
    def sites(self):
        sites = {"probe": Site(old=addi(A0, A0, 1), new=EBREAK)}
        if not self.v.stop_machine:  # the wide ebreak over two compressed instructions
            sites = {"probe": Site(old=caddi(A0, 1) + caddi(A1, 1), new=EBREAK)}
        return sites

    def patcher(self, k):
        for n, (which, register) in enumerate((("new", True), ("old", False))):
            if register:
                yield k.register_kprobe("probe")
            yield from self.patch_text(k, f"pp{n}", getattr(k.site("probe"), which))
            yield k.complete("probe")
            if not register:
                yield k.unregister_kprobe("probe")

    def patch_text(self, k, pp: str, insn: bytes):
        """patch_text(addr, &insn, 1)."""
        if not self.v.stop_machine:
            yield k.poke("probe", insn)  # patch_text_nosync(): the write ...
            yield k.fence_i()  # ... and the local flush
            return
        yield from k.stop_machine(lambda kk: self.patch_text_cb(kk, pp, insn), every_cpu=True)

    def patch_text_cb(self, k, pp: str, insn: bytes):
        """patch_text_cb(), on every online CPU."""
        count = f"{pp}.cpu_count"
        n = k.ncpus
        arrived = yield k.atomic_inc_return(count)
        if arrived == n:
            if self.v.early_release:
                yield k.atomic_inc_return(count)
            yield k.poke("probe", insn)  # patch_insn_write() ...
            yield k.fence_i()  # ... and __patch_insn_write()'s local flush
            if not self.v.early_release:
                yield k.atomic_inc_return(count)  # atomic_inc_return_release()
        else:
            yield k.wait_until(count, lambda v: v > n, f"{count} > num_online_cpus()")
            if self.v.flush:
                yield k.fence_i()  # local_flush_icache_all()
