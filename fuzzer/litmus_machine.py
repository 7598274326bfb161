"""A litmus test as a protocol: its threads are programs (`Protocol.programs`) on the model of
the architecture its header names, and its final condition is the protocol's verdict.

Each thread Pn is a task on CPU n that runs program "Pn" with the registers of the init block,
then hands its final registers over with a fully ordered atomic (which also drains its store
buffer, so memory is final once every thread has handed over). Thread 0 then waits for all of
them, reads the locations the condition names and, when the condition's body holds (for
`forall`: when it does not), says so with `k.bug`: reaching the condition is the run's
finding, and no other oracle judges (`Protocol.oracles`), since a litmus thread is not a patch.

What the model cannot run is refused here with `Unsupported`, one line naming the construct.
"""

from __future__ import annotations

from typing import Any

from .arch import get_arch, litmus_arch
from .litmus import And, Atom, Instr, Int, LabelRef, LitmusTest, Not, Or, Sym, Value
from .machine.state import MAX_CPUS
from .protocol import Addr, Protocol

# herd7's CacheType header -> the architecture options it switches on (DIC implies IDC: an
# implementation that needs no invalidation to the PoU needs no clean to it either, and the
# catalogue files its CacheType=DIC tests under DIC1-IDC1)
CACHE_TYPES = {"DIC": ("dic", "idc"), "IDC": ("idc",)}
HINT_HEADERS = ("Stable", "Hash", "Com", "Orig", "Cycle", "Relax", "Safe", "Prefetch", "Generator")
VARIANTS = ("self", "ifetch")  # herd's self-modifying-code variants: what this model always runs
VERDICT_VAR = "__P{}_final"


class Unsupported(Exception):
    """The model cannot run this test: one line naming the construct."""


def arch_options(test: LitmusTest) -> tuple[str, ...]:
    opts: list[str] = []
    for word in test.headers.get("CacheType", "").replace(",", " ").split():
        if word not in CACHE_TYPES:
            raise Unsupported(f"CacheType={word} (known: {', '.join(CACHE_TYPES)})")
        opts += [o for o in CACHE_TYPES[word] if o not in opts]
    return tuple(opts)


def check_supported(test: LitmusTest) -> str:
    """The architecture model that runs `test`; raises Unsupported for what it cannot."""
    arch = litmus_arch(test.arch)
    if arch is None:
        raise Unsupported(f"architecture {test.arch} has no model")
    for key, value in test.headers.items():
        if key.lower() == "variant":
            if any(v.lower() not in VARIANTS for v in value.replace(",", " ").split()):
                raise Unsupported(f"{key}={value} (this model runs: {', '.join(VARIANTS)})")
        elif key not in ("CacheType", *HINT_HEADERS):
            raise Unsupported(f"header {key}={value}")
    arch_options(test)
    for t in test.threads:
        if t.suffix:
            raise Unsupported(f"thread {t.name} (a fault handler: exceptions taken to a test's own "
                              "handler are not modelled)")
    return arch


def build(test: LitmusTest, options: tuple[str, ...] = ()) -> tuple[type[Protocol], Any]:
    """The protocol class that runs `test`, and its architecture model (with the test's
    CacheType and `options`, more of the model's OPTIONS)."""
    arch_name = check_supported(test)
    try:
        arch = get_arch(arch_name, tuple(dict.fromkeys((*arch_options(test), *options))))
    except ValueError as e:  # an option the model does not have
        raise Unsupported(str(e)) from None
    threads = sorted(test.threads, key=lambda t: t.index)
    if [t.index for t in threads] != list(range(len(threads))):
        raise Unsupported("threads are not numbered P0, P1, ... in order")
    n = len(threads)
    if n > MAX_CPUS:
        raise Unsupported(f"{n} threads (the machine has at most {MAX_CPUS} CPUs)")

    def reg(name: str) -> tuple[str, int]:
        try:
            return arch.program_reg(name)
        except KeyError:
            raise Unsupported(f"register {name}") from None

    locations: list[str] = []

    def location(name: str) -> None:
        if name not in locations:
            locations.append(name)

    init_regs: dict[int, list[tuple[str, Value]]] = {i: [] for i in range(n)}
    init_mem: dict[str, Value] = {}
    for e in test.init:
        if e.value is None:
            if e.thread is None:
                location(e.name)
            continue
        if isinstance(e.value, Sym):
            location(e.value.name)
        if e.thread is None:
            location(e.name)
            init_mem[e.name] = e.value
        elif e.thread >= n:
            raise Unsupported(f"init of {e.thread}:{e.name}: the test has no thread P{e.thread}")
        else:
            init_regs[e.thread].append((reg(e.name)[0], e.value))
    cond_regs: dict[int, list[str]] = {i: [] for i in range(n)}
    for atom in _atoms(test.condition.expr):
        if isinstance(atom.value, Sym):
            location(atom.value.name)
        if atom.thread is None:
            location(atom.name)
        elif atom.thread >= n:
            raise Unsupported(f"the condition reads {atom.thread}:{atom.name}: no thread P{atom.thread}")
        elif reg(atom.name)[0] not in cond_regs[atom.thread]:
            cond_regs[atom.thread].append(reg(atom.name)[0])
    labels = {(t.index, ln.label) for t in threads for ln in t.lines if ln.label}
    for v in [v for _, v in (*init_mem.items(), *(p for regs in init_regs.values() for p in regs))]:
        if isinstance(v, LabelRef) and (v.thread, v.label) not in labels:
            raise Unsupported(f"P{v.thread}:{v.label}: no such label")
    programs = {f"P{t.index}": _lines(t) for t in threads}
    for name, lines in programs.items():  # refuse what the assembler cannot encode, up front
        try:
            arch.assemble(lines, arch.text_base)
        except ValueError as e:
            raise Unsupported(f"{name}: {e}") from None

    for v in [*init_mem.values(), *(v for regs in init_regs.values() for _, v in regs)]:
        if isinstance(v, Instr):
            try:  # an instruction the assembler cannot encode is refused now
                _value(arch, None, v)
            except ValueError as e:
                raise Unsupported(f"instruction value {v.text!r}: {e}") from None
    mem0 = {}
    for loc in locations:
        v = init_mem.get(loc)
        mem0[loc] = (v.value if isinstance(v, Int) else 0 if v is None else Addr(v.name) if isinstance(v, Sym)
                     else Addr(f"P{v.thread}:{v.label}") if isinstance(v, LabelRef) else _value(arch, None, v))

    attrs: dict[str, Any] = {
        "name": f"litmus/{test.name}", "arch": arch_name, "programs": programs,
        "data": tuple(locations), "tasks": {f"P{i}": i for i in range(n)},
        "summary": f"litmus test {test.name}", "test_name": test.name, "arch_model": arch,
        "init_regs": init_regs, "cond_regs": cond_regs, "locations": tuple(locations),
        "quantifier": test.condition.quantifier, "expr": test.condition.expr, "memory0": mem0,
    }
    for i in range(n):
        attrs[f"P{i}"] = _task(i)
    return type("LitmusTestProtocol", (LitmusProtocol,), attrs), arch


class LitmusProtocol(Protocol):
    """The base of the protocols `build` makes: what a test needs is class data (the state
    key reads a coroutine's frame, which holds only the thread's number and its registers)."""

    caller_loops = False
    complete_when_done = False
    oracles = ("protocol-assert", "guest-fault")
    variants = {"test": {}}
    expect = {"test": None}
    test_name = ""
    arch_model: Any = None
    init_regs: dict = {}
    cond_regs: dict = {}
    locations: tuple[str, ...] = ()
    quantifier = "exists"
    expr: Any = None
    memory0: dict = {}

    def initial_memory(self) -> dict[str, Any]:
        return dict(self.memory0)

    def value(self, k, v: Value) -> int:
        return _value(self.arch_model, k, v)

    def thread(self, i: int, k):
        regs = yield k.run_program(f"P{i}", {name: self.value(k, v) for name, v in self.init_regs[i]})
        # a value-returning atomic: fully ordered, so this thread's stores are in memory
        yield k.cmpxchg(VERDICT_VAR.format(i), 0, ("final", tuple(regs[r] for r in self.cond_regs[i])))
        if i:
            return
        n = len(self.tasks)
        got = yield k.wait_until(tuple(VERDICT_VAR.format(j) for j in range(n)),
                                 lambda *vs: all(v != 0 for v in vs), "every thread's end")
        seen = {(j, r): got[j][1][x] for j in range(n) for x, r in enumerate(self.cond_regs[j])}
        for loc in self.locations:
            seen[(None, loc)] = yield k.load(loc)
        body = _holds(self.expr, seen, lambda v: self.value(k, v), self.arch_model.program_reg)
        if body != (self.quantifier == "forall"):
            yield k.bug(f"{'counterexample of ' if self.quantifier == 'forall' else ''}the final "
                        f"condition of {self.test_name} reached")


def _task(i: int):
    def task(self, k):  # a function of its own per thread: its closure holds only `i`
        return (yield from self.thread(i, k))
    task.__name__ = f"P{i}"
    return task


def _value(arch, k, v: Value) -> int:
    if isinstance(v, Int):
        return v.value
    if isinstance(v, Sym):
        return k.symbol(v.name)
    if isinstance(v, LabelRef):
        return k.symbol(f"P{v.thread}:{v.label}")
    if isinstance(v, Instr):
        return int.from_bytes(arch.encode_insn(v.text), "little")
    raise Unsupported(f"value {v!r}")


def _lines(thread) -> tuple[str, ...]:
    out: list[str] = []
    for ln in thread.lines:
        if ln.label:
            out.append(f"{ln.label}:")
        if ln.text:
            out.append(ln.text)
    return tuple(out)


def _atoms(e):
    if isinstance(e, Atom):
        yield e
    elif isinstance(e, Not):
        yield from _atoms(e.arg)
    else:
        for a in e.args:
            yield from _atoms(a)


def _holds(e, seen: dict, value, reg) -> bool:
    if isinstance(e, Atom):
        if e.thread is None:
            return seen[(None, e.name)] == value(e.value)
        name, bits = reg(e.name)
        mask = (1 << bits) - 1
        return seen[(e.thread, name)] & mask == value(e.value) & mask
    if isinstance(e, Not):
        return not _holds(e.arg, seen, value, reg)
    if isinstance(e, And):
        return all(_holds(a, seen, value, reg) for a in e.args)
    if isinstance(e, Or):
        return any(_holds(a, seen, value, reg) for a in e.args)
    raise Unsupported(f"condition {e!r}")
