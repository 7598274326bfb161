"""The kernel interface a protocol's coroutines call (`k`): one method per kernel primitive,
each returning the op to yield (memory and barriers, cache maintenance, atomics, text writes,
IPIs and stop_machine, completion, IRQ and preemption control, locks, hotplug, code runs,
trap answers and kprobes). What a protocol declares is in protocol.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import ops
from .ops import NOT_MINE, Emulate


# read-modify-write functions of the atomics that take no argument: fn(old) -> (new, result)
def _inc(v):
    return v + 1, v + 1


def _dec(v):
    return v - 1, v - 1


def _dec_and_test(v):
    return v - 1, v - 1 == 0


def _inc_not_zero(v):
    return (v + 1, True) if v else (v, False)


class K:
    """The kernel interface a protocol coroutine uses: every method returns an op to yield.

    Values live in the machine's shared memory under string names; `site()` gives a site's
    address and its old/new instruction bytes as laid out in this run's image.
    """

    NOT_MINE = NOT_MINE

    def __init__(self, machine, cpu: int):
        self._m = machine
        self.cpu = cpu

    # ---- information (no scheduling point) ---------------------------------------------------
    @property
    def ncpus(self) -> int:
        return self._m.ncpus

    def site(self, name: str):
        return self._m.sites[name]

    def site_at(self, addr: int):
        return self._m.site_by_addr.get(addr)

    def symbol(self, name: str) -> int:
        """The address of a symbol of this run's image."""
        try:
            return self._m.image.symbols[name]
        except KeyError:
            raise KeyError(f"no symbol {name!r} in the image") from None

    # ---- memory --------------------------------------------------------------------------------
    def load(self, var: str) -> ops.Load:
        return ops.Load(var)

    def store(self, var: str, value: Any) -> ops.Store:
        return ops.Store(var, value)

    def store_release(self, var: str, value: Any) -> ops.Store:
        return ops.Store(var, value, release=True)

    def mb(self) -> ops.Fence:
        return ops.Fence("mb")

    def wmb(self) -> ops.Fence:
        return ops.Fence("wmb")

    def rmb(self) -> ops.Fence:
        return ops.Fence("rmb")

    def dmb(self, kind: str = "ish") -> ops.Fence:
        """DMB ISH (smp_mb), "ishst" (smp_wmb) or "ishld" (smp_rmb), by the arm64 names."""
        kinds = {"ish": "mb", "ishst": "wmb", "ishld": "rmb"}
        if kind not in kinds:
            raise ValueError(f"dmb kind {kind!r}: one of {', '.join(kinds)}")
        return ops.Fence(kinds[kind])

    def dsb(self) -> ops.Fence:
        """DSB ISH: a full barrier that also completes this CPU's cache maintenance."""
        return ops.Fence("dsb")

    def isb(self) -> ops.SyncCore:
        """A context synchronization event on this CPU (ISB; x86 sync_core, riscv fence.i's
        local part): its next fetches see what maintenance has made visible to fetch."""
        return ops.SyncCore()

    def load_acquire(self, var: str) -> ops.Load:
        """LDAR / smp_load_acquire(): this model runs a CPU's loads in program order, so an
        acquire orders nothing more than a plain load does."""
        return ops.Load(var)

    # ---- cache maintenance (no effect where instruction fetch is coherent) ------------------------
    def dc_cvau(self, site: str) -> ops.CacheMaint:
        """DC CVAU: clean the site's text to the point of unification (done at the next dsb)."""
        return ops.CacheMaint("clean", site)

    def ic_ivau(self, site: str) -> ops.CacheMaint:
        """IC IVAU: invalidate the site in every CPU's instruction cache (done at the next dsb)."""
        return ops.CacheMaint("inval", site)

    def ic_iallu(self) -> ops.CacheMaint:
        """IC IALLU: invalidate this CPU's whole instruction cache (done at the next dsb)."""
        return ops.CacheMaint("inval_local")

    def fence_i(self) -> ops.CacheMaint:
        """RISC-V FENCE.I (local_flush_icache_all()): this CPU's later fetches see what memory
        holds now; no other CPU's, and this CPU's own buffered stores only once they drained."""
        return ops.CacheMaint("inval_local_sync")

    def remote_fence_i(self, fence: bool = True) -> ops.SyncCores:
        """flush_icache_all()'s remote part: IPI every hart to run FENCE.I (sbi_remote_fence_i(),
        on_each_cpu(ipi_remote_fence_i)) and wait. `fence=False` leaves out the data FENCE the
        ISA requires before the request, so the request may overtake this CPU's stores."""
        return ops.SyncCores(ordered=fence, icache=True)

    def caches_clean_inval_pou(self, site: str) -> Iterator:
        """`yield from`: the kernel's caches_clean_inval_pou() over a site (arch/arm64/mm/
        cache.S): DC CVAU, DSB ISH, IC IVAU, DSB ISH, ISB."""
        yield self.dc_cvau(site)
        yield self.dsb()
        yield self.ic_ivau(site)
        yield self.dsb()
        yield self.isb()

    def patch_text_nosync(self, site: str, data: bytes, offset: int = 0) -> Iterator:
        """`yield from`: aarch64_insn_patch_text_nosync(): write the instruction, then make it
        visible to instruction fetch on this CPU (caches_clean_inval_pou); no cross-CPU
        synchronization: other CPUs see it after their own context synchronization."""
        yield self.poke(site, data, offset)
        yield from self.caches_clean_inval_pou(site)

    def atomic_inc(self, var: str) -> ops.Atomic:
        """atomic_inc(): relaxed, it orders nothing (Documentation/atomic_t.txt), which a weak
        store buffer shows; x86 executes it as a locked instruction all the same."""
        return ops.Atomic(var, _inc, "atomic_inc", ordered=False)

    def atomic_dec(self, var: str) -> ops.Atomic:
        """atomic_dec(): relaxed, as atomic_inc()."""
        return ops.Atomic(var, _dec, "atomic_dec", ordered=False)

    def atomic_dec_and_test(self, var: str) -> ops.Atomic:
        return ops.Atomic(var, _dec_and_test, "atomic_dec_and_test")

    def inc_not_zero(self, var: str) -> ops.Atomic:
        return ops.Atomic(var, _inc_not_zero, "atomic_inc_not_zero")

    def cmpxchg(self, var: str, old: Any, new: Any) -> ops.Atomic:
        return ops.Atomic(var, lambda v: (new if v == old else v, v), "cmpxchg")

    def atomic_fetch_and(self, var: str, mask: int) -> ops.Atomic:
        return ops.Atomic(var, lambda v: (v & mask, v), "atomic_fetch_and")

    def atomic_inc_return(self, var: str) -> ops.Atomic:
        """Value-returning, so fully ordered (shown as atomic_inc in traces)."""
        return ops.Atomic(var, _inc, "atomic_inc")

    def wait_until(self, var: str | tuple[str, ...], pred, what: str = "") -> ops.WaitUntil:
        """Block until `pred(value of var)` holds, or with several variables (a tuple of
        names) `pred(value, value, ...)`; the answer is the value (or the tuple of values).
        `pred` must be pure: the scheduler calls it whenever it asks whether this CPU can run,
        as often as it likes."""
        if not isinstance(var, str):
            var = tuple(var)
        return ops.WaitUntil(var, pred, what or (var if isinstance(var, str) else ", ".join(var)))

    def alloc(self, var: str, value: Any) -> ops.Alloc:
        return ops.Alloc(var, value)

    def free(self, var: str) -> ops.Free:
        return ops.Free(var)

    # ---- text ------------------------------------------------------------------------------------
    def poke(self, site: str, data: bytes, offset: int = 0) -> ops.Poke:
        return ops.Poke(site, bytes(data), offset)

    def read_text(self, site: str) -> ops.ReadText:
        return ops.ReadText(site)

    def expect_text(self, site: str, data: bytes, what: str = "old code") -> ops.ExpectText:
        return ops.ExpectText(site, bytes(data), what)

    def bug(self, message: str) -> ops.Bug:
        return ops.Bug(message)

    def sync_core(self) -> ops.SyncCore:
        return ops.SyncCore()

    def sync_cores(self) -> ops.SyncCores:
        """IPI every other CPU and wait (text_poke_sync(), kick_all_cpus_sync(),
        smp_call_function(..., wait)): a full barrier first; the handler serializes where the
        architecture says taking an IPI does."""
        return ops.SyncCores()

    def stop_machine(self, fn, every_cpu: bool = False) -> Iterator:
        """Use as `yield from k.stop_machine(fn)`: `fn(k)` is a coroutine run on this CPU while
        every other online CPU is parked in the rendezvous with IRQs off (NMIs still arrive).
        With `every_cpu`, every online CPU runs `fn(its k)` once all have arrived, each when it
        is next scheduled, as multi_cpu_stop() does (so a protocol can write the kernel's
        `cpu_count` rendezvous: the last CPU to arrive patches, the others wait), and the
        release waits until every CPU has returned from it; the answer is this CPU's."""
        enter = ops.StopMachineEnter(fn if every_cpu else None)
        yield enter
        result = yield from fn(self)
        yield ops.StopMachineExit(enter)
        return result

    def complete(self, *sites: str) -> ops.Complete:
        """Declare the patch of `sites` (default: every site) complete: a CPU that begins to
        fetch one afterwards must execute the version this CPU sees there now (the
        stale-after-complete oracle). A later write to a site starts a new operation on it.
        Without any, every site is complete once all tasks have returned."""
        unknown = [s for s in sites if s not in self._m.sites]
        if unknown:
            raise KeyError(f"k.complete(): no site {unknown[0]!r}")
        return ops.Complete(tuple(sites))

    # ---- IRQs and preemption ---------------------------------------------------------------
    def local_irq_save(self) -> ops.IrqSave:
        """IRQs off on this CPU (IPIs wait, stop_machine cannot park it); the answer is the
        flags to restore."""
        return ops.IrqSave()

    def local_irq_restore(self, flags: bool) -> ops.IrqRestore:
        return ops.IrqRestore(bool(flags))

    def preempt_disable(self) -> ops.Preempt:
        """The task cannot be switched out (stop_machine's stopper thread cannot run here)."""
        return ops.Preempt(1)

    def preempt_enable(self) -> ops.Preempt:
        return ops.Preempt(-1)

    def rcu_read_lock(self) -> ops.Preempt:
        """An RCU read-side critical section (classic RCU: preemption off) begins."""
        return ops.Preempt(1)

    def rcu_read_unlock(self) -> ops.Preempt:
        return ops.Preempt(-1)

    def synchronize_rcu(self) -> ops.SynchronizeRcu:
        """Wait until every other online CPU has passed a quiescent state (its thread alone, IRQs
        and preemption on): no RCU reader that began before the call is still running."""
        return ops.SynchronizeRcu()

    def spin_lock(self, name: str) -> Iterator:
        """`yield from k.spin_lock(name)`: preemption off, then spin for the lock."""
        yield ops.Preempt(1)
        yield ops.LockOp(name, "mutex")

    def spin_unlock(self, name: str) -> Iterator:
        yield ops.UnlockOp(name, "mutex")
        yield ops.Preempt(-1)

    def spin_lock_irqsave(self, name: str) -> Iterator:
        """`flags = yield from k.spin_lock_irqsave(name)`: IRQs off first, then spin for the lock
        (raw_spin_lock_irqsave): a CPU spinning here takes no IPI."""
        flags = yield ops.IrqSave()
        yield ops.LockOp(name, "mutex")
        return flags

    def spin_unlock_irqrestore(self, name: str, flags: bool) -> Iterator:
        yield ops.UnlockOp(name, "mutex")
        yield ops.IrqRestore(bool(flags))

    # ---- locks and hotplug -------------------------------------------------------------------
    def lock(self, name: str) -> ops.LockOp:
        return ops.LockOp(name, "mutex")

    def unlock(self, name: str) -> ops.UnlockOp:
        return ops.UnlockOp(name, "mutex")

    def read_lock(self, name: str) -> ops.LockOp:
        return ops.LockOp(name, "read")

    def read_unlock(self, name: str) -> ops.UnlockOp:
        return ops.UnlockOp(name, "read")

    def write_lock(self, name: str) -> ops.LockOp:
        return ops.LockOp(name, "write")

    def write_unlock(self, name: str) -> ops.UnlockOp:
        return ops.UnlockOp(name, "write")

    def cpu_down(self, cpu: int) -> ops.CpuDown:
        return ops.CpuDown(cpu)

    def cpu_up(self, cpu: int) -> ops.CpuUp:
        return ops.CpuUp(cpu)

    def run_code(self, entry: int, what: str = "code") -> ops.RunCode:
        return ops.RunCode(entry, what)

    def run_program(self, name: str, regs: dict[str, int] | None = None) -> ops.RunCode:
        """Run program `name` (`Protocol.programs`) on this CPU from its first instruction with
        `regs` set (register name -> value; the others keep the thread's start values); every
        instruction is a scheduling point, its fetch goes through the instruction-fetch model
        and its loads and stores through the memory model. The answer is the program's
        registers when it ends (name -> value, `Arch.program_regs`)."""
        if name not in self._m.image.programs:
            raise KeyError(f"no program {name!r} (declare it in the protocol's `programs`)")
        return ops.RunCode(self.symbol(name), name, tuple(sorted((regs or {}).items())))

    # ---- handler answers -----------------------------------------------------------------------
    def emulate(self, addr: int, insn: bytes) -> Emulate:
        """Emulate `insn`, a whole version of the site at `addr` (old, new, or one written)."""
        return Emulate(addr, bytes(insn))

    def single_step(self, insn: bytes) -> ops.SingleStep:
        """Execute `insn` out of line as if at the trapping address, resume at its boundary."""
        return ops.SingleStep(bytes(insn))

    def retry(self) -> ops.Retry:
        """Run the trapping address again (the breakpoint is gone by now)."""
        return ops.Retry()

    def detour(self, target: str | int) -> ops.Detour:
        """Go on at `target`, a symbol or an address (a detour buffer, a trampoline)."""
        return ops.Detour(self.symbol(target) if isinstance(target, str) else int(target))

    # ---- someone else's breakpoints ------------------------------------------------------------
    def arm_kprobe(self, site: str, offset: int = 0) -> Iterator:
        """`yield from k.arm_kprobe(site)`: kprobes registers a probe at the instruction at
        `site`+`offset`, then writes its breakpoint there and syncs (arm_kprobe()). A CPU that
        hits it traps foreign: the protocol's handlers must pass it on; kprobes single-steps the
        instruction it replaced. The answer is that instruction."""
        replaced = yield self.register_kprobe(site, offset)
        trap = self._m.arch.trap_insn
        yield ops.Poke(site, trap, offset)
        yield ops.SyncCores()
        return replaced

    def disarm_kprobe(self, site: str, replaced: bytes, offset: int = 0) -> Iterator:
        """`yield from k.disarm_kprobe(site, replaced)`: writes back the first bytes of the
        instruction the breakpoint replaced, syncs, then forgets the probe."""
        trap = self._m.arch.trap_insn
        yield ops.Poke(site, bytes(replaced[:len(trap)]), offset)
        yield ops.SyncCores()
        yield self.unregister_kprobe(site, offset)

    def register_kprobe(self, site: str, offset: int = 0) -> ops.KprobeRegister:
        """The kprobe at `site`+`offset` is known before its breakpoint is written (the answer
        is the instruction it replaces); the protocol writes the breakpoint its own way."""
        return ops.KprobeRegister(site, offset, True)

    def unregister_kprobe(self, site: str, offset: int = 0) -> ops.KprobeRegister:
        """The kprobe is forgotten (once its breakpoint is gone)."""
        return ops.KprobeRegister(site, offset, False)
