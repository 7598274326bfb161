"""The protocol API: what a protocol file writes against.

A protocol is a class with the sites it patches, its variants (parameters, not copies), the
expected verdict of each variant, and a few coroutines (`patcher`, optionally `hotplug`,
`trap_handler`, `nmi_enter`, `nmi_exit`) that yield one shared-memory operation at a time
through `k`, the kernel interface of the CPU they run on (kernel.py). An ISA may let its protocols name
the trap handler as its kernel does (x86: `int3_handler`, see `Arch.trap_handler_alias`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

from .kernel import K  # noqa: F401  (protocols and the machine import it from here)
from .ops import NOT_MINE


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
    # What the traced function runs before the site, never patched (None: the ISA's usual entry,
    # `Arch.traced_entry`): 32-bit ARM's `push {lr}` ahead of the mcount call, which the
    # kernel's NOP, `pop {lr}`, undoes.
    entry: Any = None


class Protocol:
    """Base class of protocols. Subclasses set the class attributes and write coroutines."""

    name: ClassVar[str] = "?"
    arch: ClassVar[str] = "x86_64"
    # the sites it patches: a class attribute, or a property when variants change them (it
    # may read `self.v`)
    sites: ClassVar[dict[str, Site]] = {}
    # more functions the image lays out for it (call or jump targets for its sites)
    # (a name, laid out like the tracer, or (name, its code): a function the kernel's own ABI
    # defines, such as 32-bit ARM's __gnu_mcount_nc, which pops what the call site pushed)
    symbols: ClassVar[tuple[str | tuple[str, bytes], ...]] = ()
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
