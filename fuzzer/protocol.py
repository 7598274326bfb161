"""The protocol API: what a protocol file writes against.

A protocol is a class with the sites it patches, its variants (parameters, not copies), the
expected verdict of each variant, and a few coroutines (`patcher`, optionally `hotplug`,
`trap_handler`, `nmi_enter`, `nmi_exit`) that yield one shared-memory operation at a time
through `k`, the kernel interface of the CPU they run on. An ISA may let its protocols name
the trap handler as its kernel does (x86: `int3_handler`, see `Arch.trap_handler_alias`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

from . import ops
from .ops import NOT_MINE, Emulate


@dataclass(frozen=True)
class Call:
    """A `call <symbol>` at the site (encoded per site address by the architecture)."""

    symbol: str
    kind = "call"


@dataclass(frozen=True)
class Jmp:
    """A `jmp <symbol>` at the site."""

    symbol: str
    kind = "jmp"


@dataclass(frozen=True)
class Part:
    """Bytes `start`..`end` of `spec` (a Call or Jmp) as encoded for the address it would start
    at: a site that holds only some instructions of a call (RISC-V ftrace's AUIPC, fixed at boot,
    with a NOP in place of the JALR)."""

    spec: Any
    start: int
    end: int


@dataclass(frozen=True)
class Addr:
    """A value that is the address of a symbol of this run's image (a program's label
    `"P1:L0"`, a data variable), for `initial_memory`, resolved when a run starts."""

    symbol: str


@dataclass(frozen=True)
class Site:
    """A patch site: the first instruction of a traced function. `old` and `new` are bytes, or
    a call or jump to a symbol of the image (`ftrace_caller`, `ftrace_stub`, `<site>_func`,
    or one the protocol declares in `symbols`), resolved for the site's address, or a tuple of
    those, each resolved at its own address (a site of several instructions)."""

    old: Any  # bytes, Call, Jmp or a tuple of them
    new: Any  # bytes, Call, Jmp or a tuple of them


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


class Protocol:
    """Base class of protocols. Subclasses set the class attributes and write coroutines."""

    name: ClassVar[str] = "?"
    arch: ClassVar[str] = "x86_64"
    # the sites it patches: a class attribute, or a property when variants change them (it
    # may read `self.v`)
    sites: ClassVar[dict[str, Site]] = {}
    # more functions the image lays out for it (call or jump targets for its sites)
    symbols: ClassVar[tuple[str, ...]] = ()
    # Is every site's patch complete once all tasks returned (where no k.complete() said so
    # before)? False for a protocol that never synchronizes the other CPUs with its writes and
    # promises nothing about when they see them (arm64 ftrace: old or new, for a while).
    complete_when_done: ClassVar[bool] = True
    # the sites whose functions the NMI handler calls (None: every one); code a protocol
    # declares unreachable from NMIs (the kernel forbids probing it, say) is left out. A
    # property when variants differ (it may read `self.v`).
    nmi_sites: ClassVar[tuple[str, ...] | None] = None
    # variant name -> parameters overriding `params`; the first variant is the default
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    params: ClassVar[dict[str, Any]] = {}
    # variant name -> expected oracle id, or None for "clean"
    expect: ClassVar[dict[str, str | None]] = {}
    # one-line summaries for `patchfuzz protocols`
    summary: ClassVar[str] = ""
    variant_help: ClassVar[dict[str, str]] = {}
    uses_hotplug: ClassVar[bool] = False
    # The trap handlers, in the order the kernel calls them (do_int3(): ...), by method name;
    # the first that does not answer NOT_MINE answers. None: the one `trap_handler` (or the
    # ISA's name for it).
    trap_handlers: ClassVar[tuple[str, ...] | None] = None
    # The tasks it runs: method name -> the CPU it runs on (negative: counted from the last
    # CPU), or None: free to migrate (it starts on the first CPU no task is placed on, and the
    # schedule may move it at any of its steps to an idle CPU, as the kernel's scheduler can
    # while it is preemptible). Default: `patcher` on CPU 0, and with `uses_hotplug` its
    # `hotplug` on the last CPU. The other CPUs run the image's caller loop; a task that
    # returns does too.
    tasks: ClassVar[dict[str, int | None] | None] = None
    # Programs of real code the tasks run (`k.run_program`): name -> lines of the ISA's
    # assembly, labels as "L0:" (alone or before an instruction). Laid out in the image;
    # every instruction is a place a CPU fetches from (a site with no patch of its own) and a
    # label is the symbol "<name>:<label>". A property when variants differ.
    programs: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Shared variables the programs address (loads and stores of real code): each is a word
    # of the image's data region, symbol = its name, and the same variable `k.load`/`k.store`
    # reach; its first value comes from `initial_memory`.
    data: ClassVar[tuple[str, ...]] = ()
    # May the image's code be preempted, or parked by stop_machine's stopper thread, at any
    # instruction boundary with IRQs on (CONFIG_PREEMPT)? False (PREEMPT_NONE/VOLUNTARY): a task
    # is never scheduled out between two instructions of a patch site, since the traced code
    # has no scheduling point there; elsewhere it still is, which for the sites is the same as
    # reaching cond_resched() before or after the call.
    preemptible_code: ClassVar[bool] = True
    # Do CPUs without a task, and tasks that returned, run the image's caller loop? False: they
    # idle (a machine of tasks only, such as the threads of a litmus test).
    caller_loops: ClassVar[bool] = True
    # The oracles that judge this protocol (ids; None: every one). A protocol that states its
    # own verdict (`k.bug`) over programs with no patch expectations picks the few that apply.
    oracles: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, variant: str):
        if variant not in self.variants:
            raise KeyError(variant)
        self.variant = variant
        self.v = SimpleNamespace(**{**self.params, **self.variants[variant]})

    # shared memory the protocol starts with: name -> value
    def initial_memory(self) -> dict[str, Any]:
        return {}

    def invariants(self) -> dict[str, Any]:
        """What must hold whenever shared state changes: name -> predicate over a
        `fuzzer.oracles.Shared` view (`s.var(name)`, `s.text(site)`, `s.holds(site, "new")`,
        `s.locked(lock)`, `s.freed(var)`). The `invariant` oracle reports the first change after
        which one is false, titled "invariant violated: <name>"."""
        return {}

    def task_cpus(self, ncpus: int) -> dict[str, int]:
        """Each task's (first) CPU on a machine of `ncpus` CPUs; see `free_tasks` for which
        may move."""
        tasks = self.tasks
        if tasks is None:
            tasks = {"patcher": 0, **({"hotplug": -1} if self.uses_hotplug else {})}
        placed = {name: cpu % ncpus if cpu is not None and -ncpus <= cpu < ncpus else None
                  for name, cpu in tasks.items() if cpu is not None}
        idle = [c for c in range(ncpus) if c not in placed.values()]
        for name in (n for n, cpu in tasks.items() if cpu is None):
            if not idle:
                raise ValueError(f"{self.name}: no CPU left for the free task {name!r} on {ncpus} CPUs")
            placed[name] = idle.pop(0)
        placed = {name: placed[name] for name in tasks}  # the declared order
        bad = [n for n, c in placed.items() if c is None]
        if bad:
            raise ValueError(f"{self.name}: task {bad[0]!r} is placed on CPU {tasks[bad[0]]}, "
                             f"which a {ncpus}-CPU machine does not have")
        shared = [c for c in set(placed.values()) if list(placed.values()).count(c) > 1]
        if shared:
            raise ValueError(f"{self.name}: tasks {', '.join(n for n, c in placed.items() if c == shared[0])} "
                             f"share CPU {shared[0]}; give each its own")
        missing = [n for n in placed if not callable(getattr(self, n, None))]
        if missing:
            raise ValueError(f"{self.name}: task {missing[0]!r} has no method of that name")
        return placed

    def free_tasks(self) -> frozenset[str]:
        """The tasks free to migrate."""
        return frozenset(n for n, cpu in (self.tasks or {}).items() if cpu is None)

    def patcher(self, k: K) -> Iterator:
        raise NotImplementedError

    def hotplug(self, k: K) -> Iterator:
        return iter(())

    def trap_handler(self, k: K, ip: int) -> Iterator:
        """Called when a CPU executes a breakpoint at `ip` (the protocol's own at a site, or a
        foreign one): return `k.NOT_MINE` or `k.emulate(ip, insn)`."""
        return NOT_MINE
        yield  # pragma: no cover - makes this a generator

    def nmi_enter(self, k: K) -> Iterator:
        return
        yield  # pragma: no cover

    def nmi_exit(self, k: K) -> Iterator:
        return
        yield  # pragma: no cover

    def irq_enter(self, k: K) -> Iterator:
        """Runs when a maskable interrupt arrives on a CPU with IRQs on, before the image's IRQ
        handler (which calls the traced functions)."""
        return
        yield  # pragma: no cover

    def irq_exit(self, k: K) -> Iterator:
        return
        yield  # pragma: no cover
