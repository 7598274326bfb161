"""The emulated multi-CPU machine and its scheduler loop.

Each CPU is an emulator running real machine code from its own *view* of the text; the truth
(memory) is kept here. A CPU's view of a patch site is refreshed one fetch unit at a time when
the CPU is about to fetch the site, and wholly at serializing events. Protocol variables live in
shared memory behind per-CPU store buffers. Every CPU has a stack of frames (thread, irq, nmi,
trap); a frame is a coroutine that yields ops, and the op `RunCode` runs real code in slices.

`Machine.run(schedule)` is the scheduler loop: every nondeterministic decision comes from the
schedule bytes (`choices.Choices`), so a run is a pure function of protocol, configuration and
schedule.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from . import ops
from .arch import get_arch
from .arch.base import CpuHooks
from .choices import Abandon, Choices
from .oracles import Finding
from .protocol import Call, Jmp, K, Protocol

MIN_CPUS, MAX_CPUS = 2, 8

# Event byte ranges: a byte below EV_NMI is a plain step; the rest inject events. The split
# keeps the default (0) a plain step and gives random bytes a useful event rate.
EV_NMI, EV_FOREIGN, EV_PREEMPT, EV_DRAIN = 200, 216, 224, 232
RUN_TO_STOP = 1000  # instruction cap of a slice that runs to the next patch site
HANG_STEPS = 3000  # fair (default) steps without completion before "no progress"


@dataclass
class Config:
    cpus: int = 4
    max_steps: int = 20000
    epilogue_steps_per_cpu: int = 3
    stop_machine_serializes: bool | None = None  # None: the architecture's rule

    def to_dict(self) -> dict:
        return {"cpus": self.cpus, "stop_machine_serializes": self.stop_machine_serializes}


class SiteState:
    """One patch site: its truth bytes and the versions it may legitimately be executed in."""

    __slots__ = ("name", "addr", "size", "end", "old", "new", "truth", "intended", "_ok", "func")

    def __init__(self, name: str, addr: int, old: bytes, new: bytes, func: int):
        self.name, self.addr, self.size = name, addr, len(old)
        self.end = addr + len(old)
        self.old, self.new, self.func = old, new, func
        self.truth = bytearray(old)
        self.intended: set[bytes] = {old}
        self._ok: dict[bytes, bool] = {}

    def reset(self) -> None:
        self.truth[:] = self.old
        self.intended = {self.old}
        self._ok = {}


@dataclass(slots=True)
class Frame:
    kind: str  # "thread" | "irq" | "nmi" | "trap" | "parked"
    gen: Any
    k: K
    op: Any = None
    irqs_off: bool = False
    pc: int = 0
    code_active: bool = False
    saved_ctx: Any = None
    poke_pos: int = 0
    task: str = ""
    at_site: Any = None  # the site this code frame is stopped in front of
    tags: dict = field(default_factory=dict)


class Cpu:
    __slots__ = (
        "idx", "hw", "views", "stale", "frames", "sb", "online", "ipis", "in_nmi", "preempted",
        "skip", "stop", "code_frame", "stop_req", "k", "preempted_until", "plain",
    )

    def __init__(self, idx: int, hw, sites: dict[str, SiteState]):
        self.idx = idx
        self.hw = hw
        self.views = {name: bytearray(s.old) for name, s in sites.items()}
        self.k: K | None = None
        self.reset()

    def reset(self) -> None:
        self.stale: set = set()
        self.frames: list[Frame] = []
        self.sb: deque = deque()
        self.online = True
        self.ipis: list = []
        self.in_nmi = False
        self.preempted = False
        self.preempted_until = 0
        self.skip = -1
        self.stop = None
        self.code_frame: Frame | None = None
        self.stop_req = None
        self.plain = True

    def sync_plain(self) -> None:
        """`plain`: online, with no pending IPI, stop_machine request or preemption, so only its
        top frame's op decides whether it can run (the scheduler's fast path). Called after
        every change of those fields."""
        self.plain = self.online and not self.ipis and self.stop_req is None and not self.preempted


class _TaskDone(ops.Op):
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _Park(ops.Op):
    """A CPU held in the stop_machine rendezvous (IRQs off) until the caller releases it."""

    __slots__ = ("sm",)
    blocking = True

    def __init__(self, sm):
        self.sm = sm


class _StopEnter(ops.Op):
    __slots__ = ("sm",)
    blocking = True

    def __init__(self, sm):
        self.sm = sm


class _StopExit(ops.Op):
    __slots__ = ("sm",)

    def __init__(self, sm):
        self.sm = sm


class _StopMachineState:
    __slots__ = ("caller", "arrived", "released")

    def __init__(self, caller: int):
        self.caller = caller
        self.arrived: set[int] = set()
        self.released = False


class Lock:
    __slots__ = ("name", "owner", "readers", "waiting_writers")

    def __init__(self, name: str):
        self.name = name
        self.owner: Frame | None = None  # mutex owner or rwsem writer
        self.readers: list[Frame] = []
        self.waiting_writers: list[Frame] = []


@dataclass
class RunResult:
    finding: Finding | None
    steps: int
    trace: list[str]
    completed: bool
    schedule_used: int
    schedule: bytes = b""  # the bytes that replay this run (recorded when a source steered it)
    features: list[int] | None = None  # interleaving coverage, when asked for
    # for each feature, how many decisions had been drawn when it occurred: the schedule's
    # first `feature_at[i]` bytes lead to the state that produced `features[i]`
    feature_at: list[int] | None = None
    # indices into `features` of the ones whose state is one step from an oracle's violation
    # (a text store while another CPU fetches other bytes there; a free while a frame that
    # read the variable still runs): where a search should spend its next runs
    near: list[int] | None = None
    abandoned: bool = False  # the choice source stopped the run early (pruned)

    @property
    def verdict(self) -> str:
        return "crash" if self.finding else "clean"

    @property
    def trace_sha256(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()


class Machine:
    """Build once per (protocol, variant, configuration); `run()` many schedules."""

    def __init__(self, protocol_cls: type[Protocol], variant: str, config: Config | None = None):
        self.config = config or Config()
        if not MIN_CPUS <= self.config.cpus <= MAX_CPUS:
            raise ValueError(f"cpus must be between {MIN_CPUS} and {MAX_CPUS}")
        self.protocol_cls = protocol_cls
        self.proto = protocol_cls(variant)
        self.variant = variant
        self.arch = get_arch(protocol_cls.arch)
        smz = self.config.stop_machine_serializes
        self.stop_machine_serializes = self.arch.stop_machine_serializes if smz is None else smz
        self.image = self.arch.build_image(protocol_cls.sites)
        self.sites: dict[str, SiteState] = {}
        for name, spec in protocol_cls.sites.items():
            lay = self.image.sites[name]
            new = self._resolve(spec.new, lay.addr)
            if len(new) != len(spec.old):
                raise ValueError(f"site {name}: new and old versions differ in length")
            self.sites[name] = SiteState(name, lay.addr, bytes(spec.old), new, lay.func)
        self.site_by_addr = {s.addr: s for s in self.sites.values()}
        self._site_ranges = [(s.addr, s.end, s) for s in self.sites.values()]
        hooks = CpuHooks(on_trap=self._on_trap, on_fault=self._on_fault)
        self.ncpus = self.config.cpus
        self.cpus = [Cpu(i, self.arch.new_cpu(self.image, i, hooks), self.sites)
                     for i in range(self.ncpus)]
        for cpu in self.cpus:
            cpu.k = K(self, cpu.idx)  # stateless: one per CPU for every run
        # a site's verdict memo right after a reset (written versions: the old code only)
        self._fresh_memo = {name: self._memo_for(s) for name, s in self.sites.items()}
        # code that ends in the stop instruction: the address just after it ends a RunCode
        self.end_pcs = self.image.stop_pcs
        self.tracing = False
        self._sym_sorted = sorted((a, n) for n, a in self.image.symbols.items())

    def _resolve(self, spec, addr: int) -> bytes:
        if isinstance(spec, Call):
            return self.arch.encode_call(addr, self.image.symbols[spec.symbol])
        if isinstance(spec, Jmp):
            return self.arch.encode_jmp(addr, self.image.symbols[spec.symbol])
        return bytes(spec)

    # ================================================================ run
    def run(self, schedule: bytes = b"", trace: bool = False, source=None,
            coverage: bool = False) -> RunResult:
        """Run one schedule. `source` (a ChoiceSource) steers the run instead of bytes;
        `coverage` collects interleaving features in `RunResult.features`."""
        self._reset(schedule, trace, source, coverage)
        try:
            self._loop()
        except Abandon:
            return RunResult(finding=None, steps=self.step, trace=self.trace, completed=False,
                             schedule_used=len(self.ch.used), schedule=self.ch.used,
                             features=self.cov, feature_at=self.cov_at, near=self.near,
                             abandoned=True)
        if self.finding is not None and self.finding.oracle in ("torn-fetch", "mid-insn-resume"):
            self._aftermath(self.cpus[self.finding.cpu])
        return RunResult(
            finding=self.finding,
            steps=self.step,
            trace=self.trace,
            completed=self.completed,
            schedule_used=len(self.ch.used),
            schedule=self.ch.used,
            features=self.cov,
            feature_at=self.cov_at,
            near=self.near,
        )

    def _loop(self) -> None:
        # The hottest code of the fuzzer: one iteration per step, so the runnable scan, the
        # CPU's step and the op dispatch are inlined here, with lookups hoisted into locals.
        #
        # Once the schedule is used up ("fair": no source, no bytes left) every draw returns
        # its default and has no effect beyond `ch.defaulted`, so the fair path makes no
        # draws: no event, the first runnable CPU in round-robin order, drain everything,
        # take a pending IPI, refresh every fetch unit, run to the next stop. It also stops
        # the runnable scan at that first CPU: the CPUs after it are only checked where the
        # check itself has effects (a lock op: a writer joins the lock's waiter queue; wait
        # predicates are pure, see K.wait_until). A `plain` CPU's top op alone says whether
        # it can run.
        ch = self.ch
        data = ch.data  # the schedule's bytes, drawn here directly when no source steers
        cpus = self.cpus
        n = self.ncpus
        orders = [[cpus[(last + 1 + i) % n] for i in range(n)] for last in range(n)]
        max_steps = self.config.max_steps
        byte = ch.byte
        ready = self._ready
        irqs_on = self._irqs_on
        runnable_check = self._runnable
        step_code = self._step_code
        handlers = self._handlers
        run_code = ops.RunCode
        lock_op = ops.LockOp
        fair = False
        while self.finding is None:
            step = self.step = self.step + 1
            if step > max_steps:
                self._hang("step budget exhausted")
                break
            if self.completed:
                self.epilogue -= 1
                if self.epilogue < 0:
                    break
            elif ch.defaulted:
                self.fair_steps += 1
                if self.fair_steps > HANG_STEPS:
                    self._hang("no progress under fair scheduling")
                    break
            if not fair:  # once fair, fair for the rest of the run
                fair = ch.pos >= ch.n and ch.source is None
            if fair:
                ch.defaulted = True  # what the event draw would record
                cpu = None
                order = orders[self.last_cpu]
                for c in order:
                    if c.plain:
                        top = c.frames[-1]
                        op = top.op
                        if op is not None and (not op.blocking or ready(c, top, op)):
                            cpu = c
                            break
                    elif runnable_check(c):
                        cpu = c
                        break
                if self.lock_ops and cpu is not None:
                    for c in order[order.index(cpu) + 1:]:
                        if type(c.frames[-1].op) is lock_op:
                            runnable_check(c)
                if cpu is None:
                    if self._drain_all_buffers() or self._end_a_preemption():
                        continue
                    self._stall()
                    break
            else:
                if ch.source is None:  # not fair: a byte is left for this draw
                    pos = ch.pos
                    ev = data[pos]
                    ch.pos = pos + 1
                else:
                    ev = byte(0, "event")
                if ev >= EV_NMI:
                    if self._event(ev):
                        continue
                # round robin by default: the next runnable CPU after the one stepped last
                runnable = []
                for c in orders[self.last_cpu]:
                    if c.plain:
                        top = c.frames[-1]
                        op = top.op
                        if op is not None and (not op.blocking or ready(c, top, op)):
                            runnable.append(c)
                    elif runnable_check(c):
                        runnable.append(c)
                if not runnable:
                    if self._drain_all_buffers() or self._end_a_preemption():
                        continue
                    self._stall()
                    break
                if ch.source is None:  # Choices.byte inlined
                    pos = ch.pos
                    if pos < ch.n:
                        pick = data[pos]
                        ch.pos = pos + 1
                    else:
                        ch.defaulted = True
                        pick = -1
                else:
                    pick = byte(-1, "cpu", len(runnable), tuple(c.idx for c in runnable))
                # Default once the schedule is used up: round robin. (Running protocol work
                # first would save a third of the steps, but then the protocol's end runs
                # without any contention and random search needs 10-40x more schedules for
                # the late bugs.)
                cpu = runnable[pick % len(runnable)] if pick >= 0 else runnable[0]
            self.last_cpu = cpu.idx
            # ---- the CPU's step
            sb = cpu.sb
            if sb:
                if fair:
                    self._drain(cpu, len(sb))
                else:
                    d = byte(255, "drain", len(sb) + 1)
                    self._drain(cpu, len(sb) if d == 255 else d % (len(sb) + 1))
            if not cpu.plain:
                if cpu.ipis and irqs_on(cpu) and (fair or byte(0, "take ipi") < 160):
                    # The handler is atomic and serializing; the CPU then carries on in this
                    # step.
                    self._take_ipi(cpu)
                    continue
                if cpu.stop_req is not None and self._can_park(cpu):
                    self._park(cpu)
                    continue
                if cpu.preempted and len(cpu.frames) == 1:
                    self._resume_preempted(cpu)
                    continue
            frame = cpu.frames[-1]
            op = frame.op
            if op.blocking and not ready(cpu, frame, op):
                continue
            t = type(op)
            if t is run_code:
                step_code(cpu, frame, op, fair)
                continue
            handler = handlers.get(t)
            if handler is None:
                raise TypeError(f"protocol yielded {op!r}, which is not an op")
            handler(self, cpu, frame, op)

    def _reset(self, schedule: bytes, trace: bool, source=None, coverage: bool = False) -> None:
        self.ch = Choices(schedule, source)
        self.cov: list[int] | None = [] if coverage else None
        self.cov_at: list[int] | None = [] if coverage else None
        self.near: list[int] | None = [] if coverage else None
        self.progress = 0  # ops executed by the protocol's tasks: "which patcher step"
        self.writer: dict[str, str] = {}  # var -> who wrote the value memory holds
        self.tracing = trace
        self.trace: list[str] = []
        self.finding: Finding | None = None
        self.step = 0
        self.fair_steps = 0
        self.last_cpu = self.ncpus - 1
        self.completed = False
        self.epilogue = self.config.epilogue_steps_per_cpu * self.ncpus
        self.mem: dict[str, Any] = dict(self.proto.initial_memory())
        self.freed: set[str] = set()
        self.locks: dict[str, Lock] = {}
        self.tasks_left = 0
        # a lock op was yielded in this run: from then on, the fair path checks the CPUs after
        # the one it picks for lock ops (their readiness check queues waiting writers)
        self.lock_ops = False
        for s in self.sites.values():
            s.reset()
            s._ok = self._fresh_memo[s.name]
        proto = self.proto
        hot = self.protocol_cls.uses_hotplug
        for cpu in self.cpus:
            for name, view in cpu.views.items():
                site = self.sites[name]
                if view != site.old:
                    view[:] = site.old
                    cpu.hw.write_text(site.addr, site.old)
            cpu.reset()
            cpu.hw.restore(cpu.hw.thread_context)
        # frames only once every CPU is reset: a task's first op may already address others
        for cpu in self.cpus:
            task = ""
            if cpu.idx == 0:
                task, body = "patcher", self._task(cpu.k, proto.patcher, "patcher")
            elif hot and cpu.idx == self.ncpus - 1:
                task, body = "hotplug", self._task(cpu.k, proto.hotplug, "hotplug")
            else:
                body = self._thread_loop()
            self._push(cpu, Frame("thread", body, cpu.k, task=task))

    # ================================================================ frames
    def _task(self, k: K, fn, name: str):
        self.tasks_left += 1
        yield from fn(k)
        yield _TaskDone(name)
        yield ops.RunCode(self.image.thread_entry, "caller loop")

    def _thread_loop(self):
        yield ops.RunCode(self.image.thread_entry, "caller loop")

    def _push(self, cpu: Cpu, frame: Frame) -> None:
        cpu.frames.append(frame)
        self._advance(cpu, frame, None)

    def _advance(self, cpu: Cpu, frame: Frame, value: Any) -> None:
        """Run the frame's Python code up to its next op (or its end)."""
        if frame.task:
            self.progress += 1
        try:
            op = frame.op = frame.gen.send(value)
        except StopIteration as stop:
            frame.op = None
            self._pop(cpu, frame, stop.value)
            return
        if type(op) is ops.LockOp:
            self.lock_ops = True

    def _pop(self, cpu: Cpu, frame: Frame, result: Any) -> None:
        assert cpu.frames[-1] is frame
        cpu.frames.pop()
        kind = frame.kind
        if kind == "trap":
            self._trap_return(cpu, frame, result)
        elif kind == "nmi":
            cpu.in_nmi = False
            if self.tracing:
                self._t(cpu, "NMI handler returns (iret, serializing)")
            self._serialize(cpu)
            self._check_resume(cpu, "nmi")
        elif kind == "parked":
            if self.tracing:
                self._t(cpu, "leaves stop_machine")
            if self.stop_machine_serializes:
                self._serialize(cpu)
        elif kind == "thread":
            return

    # ================================================================ scheduling
    def _irqs_on(self, cpu: Cpu) -> bool:
        top = cpu.frames[-1]
        if top.kind != "thread" or top.irqs_off:
            return False
        if cpu.preempted:
            return True
        op = top.op
        if type(op) is ops.RunCode and top.code_active:
            return cpu.hw.irqs_enabled()
        return True

    def _runnable(self, cpu: Cpu) -> bool:
        if not cpu.online:
            return False
        if cpu.ipis and self._irqs_on(cpu):
            return True
        if cpu.stop_req is not None and self._can_park(cpu):
            return True
        if cpu.preempted and len(cpu.frames) == 1:
            return self.step >= cpu.preempted_until
        top = cpu.frames[-1]
        op = top.op
        if op is None:
            return False
        if op.blocking:
            return self._ready(cpu, top, op)
        return True

    def _event(self, ev: int) -> bool:
        """Inject an event chosen by the schedule. Returns True if one was injected."""
        ch = self.ch
        online = [c for c in self.cpus if c.online]
        if ev < EV_FOREIGN:
            cands = [c for c in online if not c.in_nmi]
            if not cands:
                return False
            cpu = cands[ch.byte(0, "nmi cpu", len(cands), self._opts(cands)) % len(cands)]
            self._nmi(cpu)
            return True
        if ev < EV_PREEMPT:
            cands = [c for c in online if c.frames[-1].code_active and not c.preempted]
            if not cands:
                return False
            cpu = cands[ch.byte(0, "trap cpu", len(cands), self._opts(cands)) % len(cands)]
            self._foreign_trap(cpu)
            return True
        if ev < EV_DRAIN:
            cands = [c for c in online if self._preemptible(c)]
            if not cands:
                return False
            cpu = cands[ch.byte(0, "preempt cpu", len(cands), self._opts(cands)) % len(cands)]
            cpu.preempted = True
            cpu.sync_plain()
            if self.cov is not None:
                self._feat("preempt", self.progress, cpu.frames[-1].at_site is not None)
            # how many steps the task stays off the CPU (IPIs and NMIs are still taken)
            cpu.preempted_until = self.step + ch.byte(0, "preempt for")
            if self.tracing:
                self._t(cpu, f"preempted at {self._sym(cpu.frames[-1].pc)}")
            return True
        cands = [c for c in self.cpus if c.sb]
        if not cands:
            return False
        cpu = cands[ch.byte(0, "drain cpu", len(cands), self._opts(cands)) % len(cands)]
        self._drain(cpu, 1)
        return True

    def waiting_at_site(self, idx: int) -> bool:
        """CPU `idx`'s next step fetches a patch site: its running code stands in front of
        one. For generators that steer a run as it goes (strategies/swarm.py)."""
        cpu = self.cpus[idx]
        top = cpu.frames[-1] if cpu.frames else None
        return top is not None and top is cpu.code_frame and top.at_site is not None

    def _opts(self, cpus: list) -> tuple[int, ...] | None:
        return tuple(c.idx for c in cpus) if self.ch.source is not None else None

    def _fetching(self, site: SiteState, writer: Cpu, off: int, data: bytes) -> tuple[str, ...]:
        """Who is in the middle of fetching `site` with other bytes than `writer` is storing
        there: the precondition of a torn fetch, so worth a coverage feature of its own."""
        return tuple(sorted(c.code_frame.kind for c in self.cpus
                            if c is not writer and c.code_frame is not None
                            and c.code_frame.at_site is site
                            and c.views[site.name][off:off + len(data)] != data))

    def _readers_in_flight(self, var: str, writer: Cpu) -> tuple[str, ...]:
        """Frames on other CPUs that read `var` and are still running as it is overwritten:
        the stale-read-in-flight pattern behind many patching races."""
        return tuple(sorted(f.kind for c in self.cpus if c is not writer for f in c.frames
                            if var in f.tags.get("read", ())))

    def _feat(self, *parts: Any, near: bool = False) -> None:
        """One interleaving-coverage feature (crc32, not hash(): str hashing is randomized).
        `near`: this state is one step from an oracle's violation (RunResult.near)."""
        if near:
            self.near.append(len(self.cov))
        self.cov.append(zlib.crc32(repr(parts).encode()))
        self.cov_at.append(self.ch.drawn)

    def _end_a_preemption(self) -> bool:
        """Nothing else can run: time passes until the first preempted task is due again."""
        waiting = [c for c in self.cpus if c.online and c.preempted and len(c.frames) == 1]
        if not waiting:
            return False
        first = min(waiting, key=lambda c: (c.preempted_until, c.idx))
        first.preempted_until = self.step
        return True

    def _preemptible(self, cpu: Cpu) -> bool:
        top = cpu.frames[-1]
        return (len(cpu.frames) == 1 and top.code_active and not cpu.preempted
                and cpu.hw.irqs_enabled())

    def _resume_preempted(self, cpu: Cpu) -> None:
        if self.step < cpu.preempted_until:
            return
        cpu.preempted = False
        cpu.sync_plain()
        if self.tracing:
            self._t(cpu, "resumes after preemption (iret, serializing)")
        self._serialize(cpu)
        self._check_resume(cpu, "preemption")

    # ================================================================ ops
    def _op_load(self, cpu, frame, op):
        var = op.var
        if var in self.freed:
            v = self._load(cpu, var, frame)
        elif cpu.sb:
            v = self._peek(cpu, var)
        else:
            v = self.mem.get(var, 0)
        if self.cov is not None:
            self._feat("rf", op.var, self.writer.get(op.var), frame.kind, self.progress)
            frame.tags.setdefault("read", set()).add(op.var)
        if self.finding is None:
            if self.tracing:
                self._t(cpu, f"load {op.var} -> {_fmt(v)}")
            self._advance(cpu, frame, v)

    def _op_store(self, cpu, frame, op):
        if self._check_live(cpu, op.var, frame):
            return
        cpu.sb.append((op.var, op.value))
        if self.tracing:
            self._t(cpu, f"store {op.var} = {_fmt(op.value)} (store buffer)")
        self._advance(cpu, frame, None)

    def _op_fence(self, cpu, frame, op):
        # x86-TSO: only a full barrier drains; wmb/rmb are compiler barriers.
        if op.kind == "mb" or self.arch.store_buffer != "fifo":
            self._drain(cpu, len(cpu.sb))
        if self.tracing:
            self._t(cpu, f"smp_{op.kind}()")
        self._advance(cpu, frame, None)

    def _op_atomic(self, cpu, frame, op):
        var = op.var
        if var in self.freed:
            self._check_live(cpu, var, frame)
            return
        if cpu.sb:
            self._drain(cpu, len(cpu.sb))  # a locked instruction drains the store buffer
        mem = self.mem
        old = mem.get(var, 0)
        new, result = op.fn(old)
        mem[var] = new
        if self.cov is not None:
            self._feat("rmw", var, self.writer.get(var), frame.kind, self.progress, result)
        self.writer[var] = frame.task or frame.kind
        if self.tracing:
            self._t(cpu, f"{op.name}({var}): {_fmt(old)} -> {_fmt(new)}")
        self._advance(cpu, frame, result)

    def _op_poke(self, cpu, frame, op):
        site = self.sites[op.site]
        units = self.arch.store_units(op.offset, op.data)
        if frame.poke_pos == 0:
            whole = bytearray(self._text_as_seen(cpu, site))
            whole[op.offset:op.offset + len(op.data)] = op.data
            if bytes(whole) not in site.intended:
                site.intended = site.intended | {bytes(whole)}
                site._ok = self._memo_for(site)
        off, data = units[frame.poke_pos]
        frame.poke_pos += 1
        if self.cov is not None:
            fetching = self._fetching(site, cpu, off, data)
            self._feat("poke", site.name, off, frame.kind, fetching, near=bool(fetching))
        cpu.sb.append((("text", site), (off, data)))
        if self.arch.own_store_visible_to_fetch:
            self._set_view(cpu, site, off, data)
        if self.tracing:
            self._t(cpu, f"poke {site.name}+{off} = {data.hex(' ')} (store buffer)")
        if frame.poke_pos == len(units):
            frame.poke_pos = 0
            self._advance(cpu, frame, None)

    def _op_read_text(self, cpu, frame, op):
        data = self._text_as_seen(cpu, self.sites[op.site])
        if self.tracing:
            self._t(cpu, f"read text {op.site}: {data.hex(' ')}")
        self._advance(cpu, frame, data)

    def _op_expect_text(self, cpu, frame, op):
        site = self.sites[op.site]
        data = self._text_as_seen(cpu, site)
        if data != op.data:
            self._find(cpu, "protocol-assert", f"protocol assertion: unexpected {op.what} at {site.name}",
                       f"expected {op.data.hex(' ')}, found {data.hex(' ')}")
            return
        if self.tracing:
            self._t(cpu, f"check {site.name} holds {op.what}: ok")
        self._advance(cpu, frame, None)

    def _op_bug(self, cpu, frame, op):
        self._find(cpu, "protocol-assert", f"protocol assertion: {op.message}", op.message)

    def _op_sync_core(self, cpu, frame, op):
        if self.tracing:
            self._t(cpu, "sync_core()")
        self._serialize(cpu)
        self._advance(cpu, frame, None)

    def _op_alloc(self, cpu, frame, op):
        # a new lifetime begins; the initializing store goes through the store buffer
        self.freed.discard(op.var)
        cpu.sb.append((op.var, op.value))
        if self.tracing:
            self._t(cpu, f"alloc {op.var} = {_fmt(op.value)} (store buffer)")
        self._advance(cpu, frame, None)

    def _op_free(self, cpu, frame, op):
        self._drain(cpu, len(cpu.sb))
        self.freed.add(op.var)
        if self.cov is not None:
            readers = self._readers_in_flight(op.var, cpu)
            self._feat("free", op.var, self.progress, readers, near=bool(readers))
        if self.tracing:
            self._t(cpu, f"free {op.var}")
        self._advance(cpu, frame, None)

    def _op_complete(self, cpu, frame, op):
        self._declare_complete(cpu)
        self._advance(cpu, frame, None)

    def _op_task_done(self, cpu, frame, op):
        self.tasks_left -= 1
        if self.tracing:
            self._t(cpu, f"{op.name} finished")
        if self.tasks_left == 0:
            self._declare_complete(cpu)
        self._advance(cpu, frame, None)

    def _op_sync_cores(self, cpu, frame, op):
        # first execution: a full barrier, then IPIs; the op then blocks in _ready()
        if op.pending is None:
            self._drain(cpu, len(cpu.sb))
            op.pending = set()
            self._serialize(cpu)  # the local call runs do_sync_core() directly
            for other in self.cpus:
                if other is not cpu and other.online:
                    other.ipis.append(op)
                    other.sync_plain()
                    op.pending.add(other.idx)
            if self.tracing:
                self._t(cpu, "sync_cores(): IPI to " + ",".join(f"cpu{i}" for i in sorted(op.pending)))
        if not op.pending:
            if self.tracing:
                self._t(cpu, "sync_cores() done")
            self._advance(cpu, frame, None)

    def _op_wait(self, cpu, frame, op):
        v = self._load(cpu, op.var, frame)
        if self.finding is None:
            if self.tracing:
                self._t(cpu, f"waited until {op.what} ({op.var} = {_fmt(v)})")
            self._advance(cpu, frame, v)

    def _op_lock(self, cpu, frame, op):
        lock = self._lock(op.lock)
        if frame in lock.waiting_writers:
            lock.waiting_writers.remove(frame)
        if op.mode == "read":
            lock.readers.append(frame)
        else:
            lock.owner = frame
        frame.tags.pop("waits", None)
        if self.cov is not None:
            held = tuple(sorted(n for n, lk in self.locks.items() if lk.owner is frame or frame in lk.readers))
            self._feat("lock", op.lock, op.mode, frame.task or frame.kind, held)
        if self.tracing:
            self._t(cpu, f"{'read-' if op.mode == 'read' else 'write-' if op.mode == 'write' else ''}lock {op.lock}")
        self._advance(cpu, frame, None)

    def _op_unlock(self, cpu, frame, op):
        lock = self._lock(op.lock)
        if op.mode == "read":
            lock.readers.remove(next(f for f in lock.readers if f is frame))
        else:
            lock.owner = None
        if self.tracing:
            self._t(cpu, f"unlock {op.lock}")
        self._advance(cpu, frame, None)

    def _op_stop_enter(self, cpu, frame, op):
        if self.tracing:
            self._t(cpu, "stop_machine: all CPUs parked, running callback with IRQs off")
        frame.irqs_off = True
        self._advance(cpu, frame, None)

    def _op_stop_exit(self, cpu, frame, op):
        sm = op.sm
        sm.released = True
        frame.irqs_off = False
        self._drain(cpu, len(cpu.sb))
        if self.tracing:
            self._t(cpu, "stop_machine: release")
        self._advance(cpu, frame, None)

    def _op_park(self, cpu, frame, op):
        # released: this CPU leaves the rendezvous when it is next scheduled
        self._advance(cpu, frame, None)

    def _op_cpu_down(self, cpu, frame, op):
        target = self.cpus[op.cpu]
        target.online = False
        for sync in target.ipis:  # a dying CPU flushes its pending IPIs
            sync.pending.discard(target.idx)
        target.ipis = []
        target.sync_plain()
        if self.tracing:
            self._t(cpu, f"cpu{op.cpu} goes offline")
        self._advance(cpu, frame, None)

    def _op_cpu_up(self, cpu, frame, op):
        target = self.cpus[op.cpu]
        target.online = True
        target.sync_plain()
        self._serialize(target)  # a CPU comes up through reset and the trampoline
        if self.tracing:
            self._t(cpu, f"cpu{op.cpu} comes online")
        self._advance(cpu, frame, None)

    # ---- stop_machine --------------------------------------------------------------------
    def stop_machine_enter(self, cpu_idx: int):
        sm = _StopMachineState(cpu_idx)
        cpu = self.cpus[cpu_idx]
        self._drain(cpu, len(cpu.sb))
        for other in self.cpus:
            if other.idx != cpu_idx and other.online:
                other.stop_req = sm
                other.sync_plain()
        return _StopEnter(sm)

    def stop_machine_exit(self, enter: _StopEnter):
        return _StopExit(enter.sm)

    def _can_park(self, cpu: Cpu) -> bool:
        # The stopper thread runs once the CPU can schedule: thread context, IRQs on.
        return len(cpu.frames) == 1 and (self._irqs_on(cpu) or not cpu.frames[0].code_active)

    def _park(self, cpu: Cpu) -> None:
        sm = cpu.stop_req
        cpu.stop_req = None
        cpu.sync_plain()
        sm.arrived.add(cpu.idx)
        if self.tracing:
            self._t(cpu, "enters stop_machine (IRQs off)")

        def parked():
            yield _Park(sm)

        self._push(cpu, Frame("parked", parked(), cpu.k, irqs_off=True))

    # ---- readiness of blocking ops -----------------------------------------------------------
    def _ready(self, cpu: Cpu, frame: Frame, op) -> bool:
        t = type(op)
        if t is ops.SyncCores:
            return op.pending is None or not op.pending
        if t is ops.WaitUntil:
            try:
                return bool(op.pred(self._peek(cpu, op.var)))
            except TypeError:
                return False
        if t is ops.LockOp:
            return self._lock_ready(cpu, frame, op)
        if t is _Park:
            return op.sm.released
        if t is _StopEnter:
            sm = op.sm
            return all(c.idx in sm.arrived for c in self.cpus if c.online and c.idx != sm.caller)
        if t is ops.CpuDown:
            target = self.cpus[op.cpu]
            return target.online and len(target.frames) == 1 and self._irqs_on(target)
        return True

    def _lock(self, name: str) -> Lock:
        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = Lock(name)
        return lock

    def _lock_ready(self, cpu: Cpu, frame: Frame, op) -> bool:
        lock = self._lock(op.lock)
        if op.mode == "read":
            # percpu-rwsem: a reader waits behind a queued writer (writer preference)
            ok = lock.owner is None and not lock.waiting_writers
        elif op.mode == "write":
            ok = lock.owner is None and not lock.readers
            if not ok and frame not in lock.waiting_writers:
                lock.waiting_writers.append(frame)
        else:
            ok = lock.owner is None
        if not ok and "waits" not in frame.tags:
            frame.tags["waits"] = op.lock
            if self.tracing:
                self._t(cpu, f"waits for {op.lock} ({op.mode})")
            self._check_deadlock(cpu, frame)
        return ok

    def _waits_for(self, frame: Frame) -> list[Frame]:
        name = frame.tags.get("waits")
        if name is None:
            return []
        lock = self.locks[name]
        op = frame.op
        out = [lock.owner] if lock.owner is not None else []
        if op.mode == "read":
            out.extend(w for w in lock.waiting_writers if w is not frame)
        else:
            out.extend(r for r in lock.readers if r is not frame)
        return out

    def _check_deadlock(self, cpu: Cpu, start: Frame) -> None:
        seen = {id(start)}

        def dfs(f: Frame) -> list[Frame] | None:
            for g in self._waits_for(f):
                if g is start:
                    return [f]
                if id(g) in seen:
                    continue
                seen.add(id(g))
                rest = dfs(g)
                if rest is not None:
                    return [f] + rest
            return None

        cycle = dfs(start)
        if cycle:
            names = sorted({f.tags["waits"] for f in cycle})
            desc = " -> ".join(f"{f.task or f.kind}@cpu{f.k.cpu} waits {f.tags['waits']}" for f in cycle)
            self._find(cpu, "deadlock", "deadlock: lock cycle " + " vs ".join(names), desc)

    def _stall(self) -> None:
        waits = []
        for c in self.cpus:
            if not c.online or not c.frames:
                continue
            op = c.frames[-1].op
            waits.append(f"cpu{c.idx}: {type(op).__name__}")
            if type(op) is ops.SyncCores and op.pending:
                self._find(c, "deadlock", "deadlock: IPI can never be taken",
                           "; ".join(waits) + f"; pending IPI on cpus {sorted(op.pending)}")
                return
        self._find(self.cpus[0], "deadlock", "deadlock: no CPU can make progress", "; ".join(waits))

    def _hang(self, why: str) -> None:
        self._find(self.cpus[0], "deadlock", "hang: no progress", why)

    # ================================================================ memory
    def _peek(self, cpu: Cpu, var: str):
        for key, value in reversed(cpu.sb):
            if key == var:
                return value
        return self.mem.get(var, 0)

    def _load(self, cpu: Cpu, var: str, frame: Frame):
        if self._check_live(cpu, var, frame):
            return None
        return self._peek(cpu, var)

    def _check_live(self, cpu: Cpu, var: str, frame: Frame) -> bool:
        if var in self.freed:
            where = {"trap": "int3 handler", "nmi": "NMI handler"}.get(frame.kind, frame.task or frame.kind)
            self._find(cpu, "use-after-free", f"use after free of {var} in {where}",
                       f"{var} was freed before this access")
            return True
        return False

    def _drain(self, cpu: Cpu, count: int) -> None:
        sb = cpu.sb
        for _ in range(min(count, len(sb))):
            key, value = sb.popleft()
            if type(key) is tuple:
                site = key[1]
                off, data = value
                site.truth[off:off + len(data)] = data
                for other in self.cpus:
                    other.stale.add(site)  # maybe stale: checked against the truth at fetch
                if self.cov is not None:
                    fetching = self._fetching(site, cpu, off, data)
                    self._feat("text-drain", site.name, off, fetching, near=bool(fetching))
                if self.tracing:
                    self._t(cpu, f"drain: {site.name}+{off} = {data.hex(' ')} reaches memory")
            else:
                self.mem[key] = value
                self.writer[key] = "patcher-cpu" if cpu.idx == 0 else "cpu"
                if self.cov is not None:
                    self._feat("drain", key, self.progress, self._readers_in_flight(key, cpu))
                if self.tracing:
                    self._t(cpu, f"drain: {key} = {_fmt(value)} reaches memory")

    def _drain_all_buffers(self) -> bool:
        drained = False
        for c in self.cpus:
            if c.sb:
                self._drain(c, len(c.sb))
                drained = True
        return drained

    def _text_as_seen(self, cpu: Cpu, site: SiteState) -> bytes:
        if not cpu.sb:
            return bytes(site.truth)
        data = bytearray(site.truth)
        for key, value in cpu.sb:
            if type(key) is tuple and key[1] is site:
                off, b = value
                data[off:off + len(b)] = b
        return bytes(data)

    # ================================================================ views
    def _set_view(self, cpu: Cpu, site: SiteState, off: int, data: bytes) -> None:
        view = cpu.views[site.name]
        if view[off:off + len(data)] != data:
            view[off:off + len(data)] = data
            cpu.hw.write_text(site.addr + off, data)
        cpu.stale.add(site)

    def _sync_view(self, cpu: Cpu, site: SiteState) -> None:
        fresh = self._text_as_seen(cpu, site)
        view = cpu.views[site.name]
        if view != fresh:
            view[:] = fresh
            cpu.hw.write_text(site.addr, fresh)
        cpu.stale.discard(site)

    def _serialize(self, cpu: Cpu) -> None:
        if not cpu.stale:
            return
        for site in list(cpu.stale):
            fresh = self._text_as_seen(cpu, site)
            view = cpu.views[site.name]
            if view != fresh:
                view[:] = fresh
                cpu.hw.write_text(site.addr, fresh)
        cpu.stale.clear()

    def _refresh_units(self, cpu: Cpu, site: SiteState, fresh: bytes, mask: int) -> None:
        unit = self.arch.fetch_unit
        view = cpu.views[site.name]
        changed = False
        for i in range(0, site.size, unit):
            if mask & (1 << ((i // unit) & 7)) and view[i:i + unit] != fresh[i:i + unit]:
                view[i:i + unit] = fresh[i:i + unit]
                changed = True
        if changed:
            cpu.hw.write_text(site.addr, view)
        if view == fresh:
            cpu.stale.discard(site)

    # ================================================================ code
    def _step_code(self, cpu: Cpu, frame: Frame, op, fair: bool = False) -> None:
        """One slice of code. `fair`: the schedule is used up, every draw takes its default."""
        hw = cpu.hw
        ch = self.ch
        if not frame.code_active:
            self._start_code(cpu, frame, op)
        elif cpu.code_frame is not frame:
            raise AssertionError("code frame is not the CPU's live context")
        site = frame.at_site
        if site is not None:
            frame.at_site = None
            if site in cpu.stale:
                fresh = self._text_as_seen(cpu, site)
                if cpu.views[site.name] != fresh:
                    self._refresh_units(cpu, site, fresh, 0xFF if fair else ch.byte(0xFF, "refresh"))
                else:
                    cpu.stale.discard(site)
            self._check_fetch(cpu, frame, site)
            if self.finding is not None:
                return
            cpu.skip = frame.pc
        if fair:
            count = RUN_TO_STOP
        else:
            if ch.source is None:  # Choices.byte inlined
                pos = ch.pos
                if pos < ch.n:
                    n = ch.data[pos]
                    ch.pos = pos + 1
                else:
                    ch.defaulted = True
                    n = 0
            else:
                n = ch.byte(0, "slice")
            count = RUN_TO_STOP if n < 192 else n - 191
        cpu.stop = None
        hit = hw.run(frame.pc, count, cpu.skip)
        cpu.skip = -1
        if hit >= 0:
            frame.pc = hit
            # The fetch of this instruction starts now: the instruction cache is coherent, so
            # it starts from memory as it is; only stores landing before it executes can mix.
            site = self.site_by_addr.get(hit)
            if site is None:  # an instruction starting inside a site: a fetch point as well
                site = next(s for lo, hi, s in self._site_ranges if lo <= hit < hi)
            frame.at_site = site
            if site in cpu.stale:
                self._sync_view(cpu, site)
            return
        stop = cpu.stop
        if stop is None:
            frame.pc = pc = hw.pc()
            if pc in self.end_pcs:
                self._end_code(cpu, frame)
            return
        if stop[0] == "trap":
            frame.pc = stop[1] + len(self.arch.trap_insn)
            self._trap(cpu, stop[1], foreign=False)
        else:
            frame.pc = hw.pc()
            self._guest_fault(cpu, frame, stop[1], stop[2])

    def _start_code(self, cpu: Cpu, frame: Frame, op) -> None:
        hw = cpu.hw
        below = cpu.code_frame
        if below is not None and below is not frame:
            below.saved_ctx = hw.save()
        hw.restore(hw.nmi_context if frame.kind == "nmi" else hw.thread_context)
        frame.pc = op.entry
        frame.code_active = True
        cpu.code_frame = frame
        if self.tracing:
            self._t(cpu, f"runs {op.what}")

    def _end_code(self, cpu: Cpu, frame: Frame) -> None:
        frame.code_active = False
        cpu.code_frame = None
        for f in reversed(cpu.frames):
            if f is not frame and f.code_active:
                cpu.hw.restore(f.saved_ctx)
                f.saved_ctx = None
                cpu.code_frame = f
                break
        self._advance(cpu, frame, None)

    # hooks, called from inside the emulator (site stops are recorded by the CPU itself)
    def _on_trap(self, idx: int, kind: str, pc: int) -> None:
        self.cpus[idx].stop = ("trap", pc)

    def _on_fault(self, idx: int, kind: str, addr: int, only_if_new: bool = False) -> None:
        cpu = self.cpus[idx]
        if only_if_new and cpu.stop is not None and cpu.stop[0] == "fault":
            return
        cpu.stop = ("fault", kind, addr)

    # ================================================================ oracles at fetch
    def _check_fetch(self, cpu: Cpu, frame: Frame, site: SiteState) -> None:
        view = bytes(cpu.views[site.name])
        off = frame.pc - site.addr
        key = (view, off)
        ok = site._ok.get(key)
        if ok is None:
            ok = site._ok[key] = self._is_intended(site, view, off)
        if self.tracing:
            label = "new" if view == site.new else "old" if view == site.old else (
                "trap" if view[:1] == self.arch.trap_insn else "intended" if ok else "TORN")
            at = f"{site.name}+{off}" if off else site.name
            self._t(cpu, f"fetch {at}: {view.hex(' ')} ({label}) "
                         f"{self.arch.disasm(view[off:], frame.pc)}")
        if self.cov is not None:
            mix = tuple(0 if view[i] == site.old[i] else 1 if view[i] == site.new[i] else 2
                        for i in range(site.size))
            self._feat("fetch", site.name, frame.kind, self.progress, off, mix)
        if not ok:
            self._find(cpu, "torn-fetch", f"torn fetch at {site.name} in {self._ctx(cpu)}",
                       f"executes {view.hex(' ')} = {self.arch.disasm(view, site.addr)}; "
                       f"memory holds {bytes(site.truth).hex(' ')}")
            return
        if ok is _FOREIGN:
            self._find(cpu, "wrong-target", f"{site.name} holds neither old nor new instruction",
                       f"executes {self.arch.disasm(view, site.addr)}; old is "
                       f"{self.arch.disasm(site.old, site.addr)}, new is {self.arch.disasm(site.new, site.addr)}")
            return
        if self.completed and not off and site.truth != site.old:
            lens = self.arch.insn_lengths(site.old)
            if lens and view[:lens[0]] == site.old[:lens[0]]:
                self._find(cpu, "stale-after-complete",
                           f"stale {site.name} executed after completion in {self._ctx(cpu)}",
                           f"executes old {view.hex(' ')}; memory holds {bytes(site.truth).hex(' ')}")

    # Fetch verdicts (and the versions an int3 handler may emulate) depend only on the site's
    # old and new bytes and its written versions: one memo per such state, kept across runs,
    # so a run does not decode again what the runs before it decoded.
    _verdicts: dict[tuple, dict] = {}
    _semantics_memo: dict[tuple[str, bytes, int], tuple[str, int]] = {}

    def _memo_for(self, site: SiteState) -> dict:
        key = (self.arch.name, site.old, site.new, frozenset(site.intended))
        memo = Machine._verdicts.get(key)
        if memo is None:
            memo = Machine._verdicts[key] = {}
        return memo

    def _semantics(self, insn: bytes, addr: int) -> tuple[str, int]:
        key = (self.arch.name, insn, addr)
        sem = self._semantics_memo.get(key)
        if sem is None:
            sem = self._semantics_memo[key] = self.arch.semantics(insn, addr)
        return sem

    def _is_intended(self, site: SiteState, view: bytes, off: int = 0):
        """True if the instruction about to execute at `off` is a whole instruction of a
        version the site was written to; _FOREIGN if it is, but that version is neither old,
        new nor a trap."""
        if off:
            lens = self.arch.insn_lengths(view[off:])
            if not lens:
                return False
            n = lens[0]
            return any(off in self._boundaries(v) and v[:1] != self.arch.trap_insn
                       and v[off:off + n] == view[off:off + n]
                       and self.arch.insn_lengths(v[off:])[:1] == (n,)
                       for v in site.intended | {site.old, site.new})
        lens = self.arch.insn_lengths(view)
        if not lens:
            return False
        first = lens[0]
        head = view[:first]
        if not any(v[:first] == head and self.arch.insn_lengths(v)[:1] == (first,)
                   for v in site.intended):
            return False
        if head in (site.old[:first], site.new[:first]) or head == self.arch.trap_insn:
            return True
        return _FOREIGN

    def _check_resume(self, cpu: Cpu, after: str) -> None:
        """mid-insn-resume: the interrupted code resumes at a PC inside a site that is not an
        instruction boundary of the site's current (non-trap) version."""
        f = cpu.code_frame
        if f is None or self.finding is not None or cpu.frames[-1] is not f:
            return  # code resumes only when its frame is back on top
        pc = f.pc
        for lo, hi, site in self._site_ranges:
            if lo < pc < hi:
                view = bytes(cpu.views[site.name])
                off = pc - lo
                # fine only if what follows is still the rest of a whole version that has an
                # instruction boundary here (e.g. the untouched tail of old multi-byte NOPs)
                ok = any(v[:1] != self.arch.trap_insn and v[off:] == view[off:]
                         and off in self._boundaries(v)
                         for v in site.intended | {site.old, site.new})
                if not ok:
                    self._find(cpu, "mid-insn-resume",
                               f"resume inside {site.name} after {after}",
                               f"resumes at {self._sym(pc)} while the site holds {view.hex(' ')}")
                return

    def _boundaries(self, code: bytes) -> set[int]:
        offs, acc = set(), 0
        for n in self.arch.insn_lengths(code):
            acc += n
            offs.add(acc)
        return offs

    # ================================================================ traps, NMIs, IPIs
    def _trap(self, cpu: Cpu, addr: int, foreign: bool) -> None:
        if self.cov is not None:
            self._feat("trap", addr, foreign, cpu.frames[-1].kind, self.progress)
        if self.tracing:
            self._t(cpu, f"int3 at {self._sym(addr)}" + (" (foreign: kprobe)" if foreign else ""))
        self._serialize(cpu)  # exception entry
        k = cpu.k
        handler = self.proto.int3_handler(k, addr)
        if not hasattr(handler, "send"):  # a handler that is a plain function: its answer
            handler = _answer(handler)
        self._push(cpu, Frame("trap", handler, k, irqs_off=True,
                              tags={"trap_addr": addr, "foreign": foreign}))

    def _foreign_trap(self, cpu: Cpu) -> None:
        if self.cov is not None:
            self._feat("foreign", cpu.frames[-1].kind, self.progress)
        self._trap(cpu, self.image.foreign_trap, foreign=True)

    def _trap_return(self, cpu: Cpu, frame: Frame, result) -> None:
        addr = frame.tags["trap_addr"]
        foreign = frame.tags["foreign"]
        site = self.site_by_addr.get(addr)
        code = cpu.code_frame
        if result is ops.NOT_MINE or result is None:
            if foreign:
                if self.tracing:
                    self._t(cpu, "int3 handler: not mine, passed on to kprobes")
            else:
                name = site.name if site else self._sym(addr)
                self._find(cpu, "unhandled-trap", f"unhandled int3 at {name} in {self._ctx(cpu)}",
                           f"the protocol's handler did not recognize the int3 at {self._sym(addr)}")
                return
        elif isinstance(result, ops.Emulate):
            if foreign or site is None or result.addr != addr:
                self._find(cpu, "wrong-target",
                           f"int3 handler claims a foreign breakpoint in {self._ctx(cpu)}",
                           f"trap at {self._sym(addr)}, handler emulated {result.insn.hex(' ')} "
                           f"for {self._sym(result.addr)}")
                return
            memo = site._ok
            good = memo.get(_GOOD)
            if good is None:
                good = memo[_GOOD] = frozenset(
                    {site.old, site.new} | {v for v in site.intended if v[:1] != self.arch.trap_insn})
            if result.insn not in good:
                self._find(cpu, "wrong-target", f"int3 handler emulates wrong instruction at {site.name}",
                           f"emulated {self.arch.disasm(result.insn, addr)}; the site's versions are "
                           + ", ".join(self.arch.disasm(v, addr) for v in sorted(good)))
                return
            kind, target = self._semantics(result.insn, addr)
            code.pc = cpu.hw.emulate(kind, target, addr + len(result.insn))
            if self.tracing:
                self._t(cpu, f"int3 handler emulates {self.arch.disasm(result.insn, addr)}")
        else:
            raise TypeError(f"int3_handler returned {result!r}; expected NOT_MINE or k.emulate()")
        if self.tracing:
            self._t(cpu, "int3 returns (iret, serializing)")
        self._serialize(cpu)
        if not foreign:
            self._check_resume(cpu, "int3")

    def _nmi(self, cpu: Cpu) -> None:
        if self.cov is not None:
            self._feat("nmi", cpu.frames[-1].kind, cpu.idx == 0, self.progress,
                       sum(c.in_nmi for c in self.cpus))
        cpu.in_nmi = True
        if self.tracing:
            self._t(cpu, "NMI (serializing)")
        self._serialize(cpu)
        k = cpu.k
        proto = self.proto
        entry = self.image.nmi_entry

        def nmi():
            yield from proto.nmi_enter(k)
            yield ops.RunCode(entry, "NMI handler")
            yield from proto.nmi_exit(k)

        self._push(cpu, Frame("nmi", nmi(), k, irqs_off=True))

    def _take_ipi(self, cpu: Cpu) -> None:
        if self.cov is not None:
            self._feat("ipi", self.progress, cpu.frames[-1].at_site is not None)
        self._serialize(cpu)
        for sync in cpu.ipis:
            sync.pending.discard(cpu.idx)
        cpu.ipis = []
        cpu.sync_plain()
        if self.tracing:
            self._t(cpu, "takes IPI: sync_core (serializing)")
        self._check_resume(cpu, "ipi")

    def _guest_fault(self, cpu: Cpu, frame: Frame, kind: str, addr: int) -> None:
        self._find(cpu, "guest-fault", f"guest fault: {kind} in {self._ctx(cpu)}",
                   f"{kind} at {self._sym(addr)} (pc {self._sym(frame.pc)})")

    # ================================================================ findings
    def _declare_complete(self, cpu: Cpu) -> None:
        if not self.completed:
            self.completed = True
            if self.tracing:
                self._t(cpu, "protocol declares completion")

    def _find(self, cpu: Cpu, oracle: str, title: str, detail: str) -> None:
        if self.finding is not None:
            return
        self.finding = Finding(oracle=oracle, title=title, protocol=self.protocol_cls.name,
                               variant=self.variant, step=self.step, cpu=cpu.idx, detail=detail)
        if self.tracing:
            self._t(cpu, f"*** {oracle}: {title} -- {detail}")

    def _aftermath(self, cpu: Cpu) -> None:
        """Let the offending CPU execute what it fetched, one instruction at a time, so the
        report shows the emulated consequence (a wild call, a different instruction, a fault)."""
        f = self.finding
        frame = cpu.code_frame
        if frame is None:
            return
        hw = cpu.hw
        pc = frame.pc
        func_site = next((s for s in self.sites.values() if s.func <= pc < s.func + 64), None)
        cpu.skip = pc
        for _ in range(12):
            view = hw.read(pc, 16)
            insn = self.arch.disasm(view[: (self.arch.insn_lengths(view) or (1,))[0]], pc)
            cpu.stop = None
            hw.run(pc, 1, cpu.skip, sites=False)
            cpu.skip = hw.skip_pending()
            new_pc = hw.pc()
            stop = cpu.stop
            if stop is not None and stop[0] == "fault":
                f.consequence.append(f"{self._sym(pc)}: {insn} -> guest fault: {stop[1]} at {self._sym(stop[2])}")
                break
            if stop is not None and stop[0] == "trap":
                f.consequence.append(f"{self._sym(pc)}: {insn} -> int3 trap")
                break
            f.consequence.append(f"{self._sym(pc)}: {insn} -> pc {self._sym(new_pc)}")
            if new_pc == pc:
                break
            pc = new_pc
            cpu.skip = -1
            if func_site is not None and not (func_site.func <= pc < func_site.func + 64):
                break
        for line in f.consequence:
            if self.tracing:
                self._t(cpu, "consequence: " + line)

    # ================================================================ trace helpers
    def _ctx(self, cpu: Cpu) -> str:
        kinds = [f.kind for f in cpu.frames]
        for k in ("nmi", "trap", "irq"):
            if k in kinds:
                return {"nmi": "NMI", "trap": "int3 handler", "irq": "IRQ"}[k]
        if cpu.frames and cpu.frames[0].task:
            return cpu.frames[0].task
        return "thread"

    def _sym(self, addr: int) -> str:
        best = None
        for a, name in self._sym_sorted:
            if a <= addr:
                best = (a, name)
            else:
                break
        if best is None or addr - best[0] > 0x400:
            return hex(addr)
        return best[1] if addr == best[0] else f"{best[1]}+{addr - best[0]:#x}"

    def _t(self, cpu: Cpu, msg: str) -> None:
        if self.tracing:
            ctx = cpu.frames[-1].kind if cpu.frames else "-"
            self.trace.append(f"{self.step:5d} cpu{cpu.idx} {ctx:<6} {msg}")

    _handlers: dict = {}


_FOREIGN = "foreign"  # a whole written version that is neither old nor new
_GOOD = "good"  # key, in a site's verdict memo, of the versions a handler may emulate


def _answer(value: Any):
    """A coroutine that yields nothing and returns `value`."""
    return value
    yield  # pragma: no cover - makes this a generator


def _fmt(v: Any) -> str:
    """Trace rendering of protocol values: bytes as hex, addresses as hex, tuples recursively."""
    if isinstance(v, (bytes, bytearray)):
        return "[" + bytes(v).hex(" ") + "]"
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, int):
        return hex(v) if v >= 0x10000 else str(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, str):
        return v
    return repr(v)


Machine._handlers = {
    ops.Load: Machine._op_load,
    ops.Store: Machine._op_store,
    ops.Fence: Machine._op_fence,
    ops.Atomic: Machine._op_atomic,
    ops.Poke: Machine._op_poke,
    ops.ReadText: Machine._op_read_text,
    ops.ExpectText: Machine._op_expect_text,
    ops.Bug: Machine._op_bug,
    ops.SyncCore: Machine._op_sync_core,
    ops.SyncCores: Machine._op_sync_cores,
    ops.WaitUntil: Machine._op_wait,
    ops.LockOp: Machine._op_lock,
    ops.UnlockOp: Machine._op_unlock,
    ops.Alloc: Machine._op_alloc,
    ops.Free: Machine._op_free,
    ops.Complete: Machine._op_complete,
    ops.CpuDown: Machine._op_cpu_down,
    ops.CpuUp: Machine._op_cpu_up,
    _TaskDone: Machine._op_task_done,
    _StopEnter: Machine._op_stop_enter,
    _StopExit: Machine._op_stop_exit,
    _Park: Machine._op_park,
}
