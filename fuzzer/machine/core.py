"""The machine: several emulated CPUs running real code, a protocol, and one run at a time.

Build once per (protocol, variant, configuration); `run()` many schedules. The machine is the
composition of parts that each own one responsibility:

    memory.py      shared variables, store buffers, the text's truth; data and text ops
    views.py       per-CPU instruction views and when they refresh
    fetch.py       what a fetch at a patch site is (whole, foreign, torn)
    code.py        slices of real code on the emulator, its hooks, the aftermath of a finding
    programs.py    the protocol's programs: their loads, stores, barriers, cache maintenance
    interrupts.py  NMIs, IRQs, IPIs, preemption, IRQ masking
    traps.py       breakpoints: the handler chain, its answers, kprobes
    sync.py        locks and the wait-for graph, stop_machine, hotplug, RCU grace periods
    tasks.py       the protocol's tasks (fixed or free to migrate) and the other CPUs' caller loops
    scheduler.py   the loop: one step at a time, every decision drawn from the schedule
    coverage.py    interleaving coverage, an observer of the events
    ../oracles/    what is a violation, one file each

This module holds what they share: the run's state (step, last CPU, completion, the finding),
the frame stacks (push, advance, pop), the event stream (`emit`), the oracles' check points
(`check`, `report`) and the public view of the state strategies read (`state_view`,
`event_candidates`, `waiting_at_site`).
"""

from __future__ import annotations

from typing import Any

from .. import events as ev
from .. import ops
from ..arch import get_arch
from ..arch.image import resolve
from ..choices import Abandon, Choices
from ..events import Renderer
from ..guard import WATCHDOG, ProtocolError, ProtocolFault, ProtocolTimeout, fault_from, where_suspended
from ..oracles import ALL as ALL_ORACLES
from ..oracles import CHECK_POINTS, Finding
from ..oracles.titles import sanitize
from ..protocol import K, Protocol
from .code import Code
from .coverage import Coverage
from .fetch import FetchModel
from .icache import MaintainedViews
from .interrupts import Interrupts
from .memory import Memory
from .programs import Programs
from .scheduler import Scheduler
from .state import MAX_CPUS, MIN_CPUS, Config, Cpu, Frame, RunResult, SiteState
from .sync import Sync
from .tasks import Tasks
from .traps import Traps
from .views import Views


class Checks:
    """One callable per check point (oracles/base.py) that calls every subscribed oracle:
    `m.checks.fetch_torn(cpu, frame, site, view)`. A point nobody subscribes to costs a call to
    a function that does nothing; a point with one subscriber is that oracle's bound method."""

    def __init__(self, oracles: list) -> None:
        for point in CHECK_POINTS:
            subs = tuple(getattr(o, f"on_{point}") for o in oracles
                         if point in o.subscriptions() and o.active())
            setattr(self, point, _fan_out(subs))


def _nothing(*args: Any) -> None:
    return None


def _fan_out(subs: tuple):
    if not subs:
        return _nothing
    if len(subs) == 1:
        return subs[0]

    def every(*args: Any) -> None:
        for sub in subs:
            sub(*args)

    return every


class Machine:
    """Build once per (protocol, variant, configuration); `run()` many schedules."""

    # The run's own state, and the parts and records that state theirs (`state_view`).
    RUN_STATE = ("last_cpu", "completed", "epilogue", "tasks_left")
    STATE_PARTS = ("memory", "sync", "traps", "sites", "proto", "cpus")
    PARTS = ("memory", "views", "fetch", "programs", "code", "interrupts", "traps", "sync", "tasks", "scheduler")
    NOT_STATE = {
        **dict.fromkeys(("config", "protocol_cls", "variant", "arch", "stop_machine_serializes", "image",
                         "site_by_addr", "_site_ranges", "ncpus", "renderer", "oracles", "_oracle",
                         "checks", "handlers", "readiness", "yield_hooks", "op_types", "watchdog"),
                        "fixed for the machine's lifetime"),
        "error": "None until the run ends",
        **dict.fromkeys(PARTS, "a part: classifies its own attributes"),
        "step": "kept as steps left and a preemption's remaining time",
        "ch": "the choice source itself",
        "coverage": "coverage only", "progress": "coverage only", "events": "the trace only",
        "tracing": "the trace only", "observing": "trace or coverage only",
        "finding": "None until the run ends", "shows_consequence": "set with the finding",
        "fair_steps": "counted only once a schedule runs out",
    }

    def __init__(self, protocol_cls: type[Protocol], variant: str, config: Config | None = None):
        self.config = config or Config()
        if not MIN_CPUS <= self.config.cpus <= MAX_CPUS:
            raise ValueError(f"cpus must be between {MIN_CPUS} and {MAX_CPUS}")
        self.protocol_cls = protocol_cls
        self.proto = protocol_cls(variant)
        self.variant = variant
        self.arch = get_arch(protocol_cls.arch, self.config.arch_options)
        smz = self.config.stop_machine_serializes
        self.stop_machine_serializes = self.arch.stop_machine_serializes if smz is None else smz
        specs = self.proto.sites  # the variant's sites (a protocol may compute them)
        self.image = self.arch.build_image(specs, symbols=tuple(protocol_cls.symbols),
                                           nmi_sites=self.proto.nmi_sites,
                                           programs=self.proto.programs, data=tuple(self.proto.data))
        self.sites: dict[str, SiteState] = {}
        for name, lay in self.image.sites.items():
            if lay.program:  # a program's instruction: no patch of its own, new is old
                self.sites[name] = SiteState(name, lay.addr, lay.old, lay.old, lay.func, lay.program)
                continue
            new = resolve(self.arch, specs[name].new, lay.addr, self.image.symbols)
            if len(new) != len(lay.old):
                raise ValueError(f"site {name}: new and old versions differ in length")
            self.sites[name] = SiteState(name, lay.addr, lay.old, new, lay.func)
        self.site_by_addr = {s.addr: s for s in self.sites.values()}
        self._site_ranges = [(s.addr, s.end, s) for s in self.sites.values()]
        self.ncpus = self.config.cpus
        self.renderer = Renderer(self.arch, self.image.symbols)
        # the parts (module docstring), then the CPUs, whose emulators call back into `code`
        self.memory = Memory(self)
        self.views = MaintainedViews(self) if self.arch.fetch_model == "maintained" else Views(self)
        self.fetch = FetchModel(self)
        self.programs = Programs(self)
        self.code = Code(self)
        self.interrupts = Interrupts(self)
        self.traps = Traps(self)
        self.sync = Sync(self)
        self.tasks = Tasks(self)
        hooks = self.code.hooks()
        self.cpus = [Cpu(i, self.arch.new_cpu(self.image, i, hooks), self.sites) for i in range(self.ncpus)]
        for cpu in self.cpus:
            cpu.k = K(self, cpu.idx)  # stateless: one per CPU for every run
        self.scheduler = Scheduler(self)
        wanted = self.proto.oracles
        if wanted is not None and set(wanted) - {cls.id for cls in ALL_ORACLES}:
            raise ValueError(f"{protocol_cls.name}: oracles names no oracle "
                             f"{sorted(set(wanted) - {cls.id for cls in ALL_ORACLES})[0]!r}")
        self.oracles = [cls(self) for cls in ALL_ORACLES if wanted is None or cls.id in wanted]
        self._oracle = {o.id: o for o in self.oracles}
        self.checks = Checks(self.oracles)
        for name in self.PARTS:
            getattr(self, name).bind()
        # each op type's handler, readiness check (blocking ops) and yield hook, from its part
        self.handlers: dict = {}
        self.readiness: dict = {}
        self.yield_hooks: dict = {}
        for name in self.PARTS:
            part = getattr(self, name)
            self.handlers.update(part.handlers())
            self.readiness.update(part.readiness())
            self.yield_hooks.update(part.on_yield())
        unready = [t.__name__ for t in self.handlers if t.blocking and t not in self.readiness]
        if unready:
            raise TypeError(f"blocking ops without a readiness check: {', '.join(unready)}")
        self.op_types = frozenset(self.handlers) | {ops.RunCode}  # what a coroutine may yield
        self.watchdog = WATCHDOG
        self.tracing = self.observing = False
        self.coverage: Coverage | None = None

    # ================================================================ a run
    def run(self, schedule: bytes = b"", trace: bool = False, source=None,
            coverage: bool = False) -> RunResult:
        """Run one schedule. `source` (a ChoiceSource) steers the run instead of bytes;
        `trace` keeps the run's events (`RunResult.events`, `.trace`); `coverage` collects
        interleaving features in `RunResult.features`."""
        wd = self.watchdog
        wd.arm(self.config.op_timeout)
        try:
            self._reset(schedule, trace, source, coverage)
            self.scheduler.loop()
        except Abandon:
            return self._result(abandoned=True)
        except ProtocolFault as e:
            self._failed(e)
        except ProtocolTimeout as e:  # stopped just after the protocol's code returned
            self._failed(fault_from(e))
        finally:
            wd.disarm()
        f = self.finding
        if self.error is None and f is not None and self.shows_consequence:
            self.code.aftermath(self.cpus[f.cpu])
        return self._result()

    def _failed(self, fault: ProtocolFault) -> None:
        cpu = fault.cpu if fault.cpu >= 0 else self.last_cpu
        self.error = ProtocolError(protocol=self.protocol_cls.name, variant=self.variant,
                                   where=fault.where, what=fault.what, step=self.step, cpu=cpu)
        if self.tracing:
            c = self.cpus[cpu]
            self.events.append(ev.ProtocolFailed(self.step, cpu, c.frames[-1].kind if c.frames else "-",
                                                 fault.where, fault.what))

    def _result(self, abandoned: bool = False) -> RunResult:
        cov = self.coverage
        return RunResult(finding=self.finding, steps=self.step,
                         completed=self.completed and not abandoned,
                         schedule_used=len(self.ch.used), schedule=self.ch.used,
                         events=self.events, renderer=self.renderer,
                         features=cov.features if cov else None, feature_at=cov.at if cov else None,
                         near=cov.near if cov else None, abandoned=abandoned, error=self.error)

    def _reset(self, schedule: bytes, trace: bool, source, coverage: bool) -> None:
        self.error: ProtocolError | None = None
        self.ch = Choices(schedule, source)
        self.coverage = Coverage(self) if coverage else None
        self.tracing = trace
        self.observing = trace or coverage
        self.events: list | None = [] if trace else None
        self.progress = 0  # ops executed by the protocol's tasks: "which patcher step"
        self.finding: Finding | None = None
        self.shows_consequence = False
        self.step = 0
        self.fair_steps = 0
        self.last_cpu = self.ncpus - 1
        self.completed = False
        self.epilogue = self.config.epilogue_steps_per_cpu * self.ncpus
        self.tasks_left = 0
        self.memory.reset()
        self.views.reset()
        self.sync.reset()
        self.traps.reset()
        for s in self.sites.values():
            self.fetch.reset(s)
        for cpu in self.cpus:
            for name, view in cpu.views.items():
                site = self.sites[name]
                if view != site.old:
                    view[:] = site.old
                    cpu.hw.write_text(site.addr, site.old)
            cpu.reset()
            cpu.hw.restore(cpu.hw.thread_context)
        # frames only once every CPU is reset: a task's first op may already address others
        self.tasks.start()

    # ================================================================ frames
    def push(self, cpu: Cpu, frame: Frame) -> None:
        cpu.frames.append(frame)
        self.advance(cpu, frame, None)

    def advance(self, cpu: Cpu, frame: Frame, value: Any) -> None:
        """Run the frame's Python code up to its next op (or its end). The protocol's code runs
        here: what it raises, and an answer that is not an op, end the run as its error."""
        if frame.task:
            self.progress += 1
        wd = self.watchdog
        wd.entries += 1
        wd.inside = True
        try:
            op = frame.op = frame.gen.send(value)
        except StopIteration as stop:
            wd.inside = False
            frame.op = None
            self.pop(cpu, frame, stop.value)
            return
        except (Exception, ProtocolTimeout) as e:
            wd.inside = False
            if isinstance(e, ProtocolFault):
                raise
            raise fault_from(e, cpu.idx) from None
        wd.inside = False
        if type(op) not in self.op_types:
            frame.op = None
            raise ProtocolFault(f"yielded {op!r} ({type(op).__name__}), which is not an op (yield k.<op>(...))",
                                where_suspended(frame.gen), cpu.idx)
        hook = self.yield_hooks.get(type(op))
        if hook is not None:
            hook(cpu, frame, op)

    def pop(self, cpu: Cpu, frame: Frame, result: Any) -> None:
        assert cpu.frames[-1] is frame
        cpu.frames.pop()
        kind = frame.kind
        if kind == "trap":
            self.traps.trap_return(cpu, frame, result)
        elif kind == "nmi":
            self.interrupts.nmi_return(cpu)
        elif kind == "irq":
            self.interrupts.irq_return(cpu)
        elif kind == "parked":
            self.sync.unparked(cpu)

    def ready(self, cpu: Cpu, frame: Frame, op) -> bool:
        """Can a blocking op proceed? (its part's readiness check; every blocking op has one)"""
        return self.readiness[type(op)](cpu, frame, op)

    # ================================================================ events and oracles
    def emit(self, cpu: Cpu, cls: type[ev.Event], *fields: Any, record: bool = True) -> None:
        """An event happened on `cpu` now. Called only while `observing` (a trace or coverage
        is on); `record=False` keeps it out of the trace."""
        e = cls(self.step, cpu.idx, cpu.frames[-1].kind if cpu.frames else "-", *fields)
        if record and self.tracing:
            self.events.append(e)
        if self.coverage is not None:
            self.coverage.observe(cpu, e)

    def report(self, cpu: Cpu, oracle: str, title: str, detail: str,
               shows_consequence: bool | None = None) -> None:
        """An oracle's finding; the first one of a run ends it. `shows_consequence`: let the
        CPU run on for the report (None: as the oracle class says)."""
        if self.finding is not None:
            return
        self.shows_consequence = (self._oracle[oracle].shows_consequence if shows_consequence is None
                                  else shows_consequence)
        title = sanitize(title)
        self.finding = Finding(oracle=oracle, title=title, protocol=self.protocol_cls.name,
                               variant=self.variant, step=self.step, cpu=cpu.idx, detail=detail)
        if self.observing:
            self.emit(cpu, ev.Violation, oracle, title, detail)

    # ================================================================ names, for titles
    def context_name(self, cpu: Cpu) -> str:
        """Where the CPU is, as a title says it: NMI, the trap handler, IRQ, a task, thread."""
        kinds = [f.kind for f in cpu.frames]
        if "nmi" in kinds:
            return "NMI"
        if "trap" in kinds:
            return f"{self.arch.trap_name} handler"
        if "irq" in kinds:
            return "IRQ"
        if cpu.frames and cpu.frames[0].task:
            return cpu.frames[0].task
        return "thread"

    def frame_name(self, frame: Frame) -> str:
        if frame.kind == "trap":
            return f"{self.arch.trap_name} handler"
        if frame.kind == "nmi":
            return "NMI handler"
        return frame.task or frame.kind

    def sym(self, addr: int) -> str:
        return self.renderer.sym(addr)

    def site_containing(self, pc: int) -> SiteState | None:
        for lo, hi, s in self._site_ranges:
            if lo <= pc < hi:
                return s
        return None

    def site_inside(self, pc: int) -> SiteState | None:
        """The site `pc` points strictly inside of (past its first byte)."""
        for lo, hi, s in self._site_ranges:
            if lo < pc < hi:
                return s
        return None

    # ================================================================ the public view
    def waiting_at_site(self, idx: int) -> bool:
        """CPU `idx`'s next step fetches a patch site: its running code stands in front of
        one. For generators that steer a run as it goes (strategies/swarm.py)."""
        cpu = self.cpus[idx]
        top = cpu.frames[-1] if cpu.frames else None
        return top is not None and top is cpu.code_frame and top.at_site is not None

    def event_candidates(self, kind: str) -> list[Cpu]:
        """The CPUs an injected event of `kind` (draws.EVENT_KINDS) could land on now."""
        if kind == "drain":
            return [c for c in self.cpus if c.sb]
        online = [c for c in self.cpus if c.online]
        if kind == "nmi":
            return [c for c in online if not c.in_nmi]  # a nested NMI waits for the outer one
        if kind == "irq":
            return [c for c in online if self.interrupts.irqs_on(c)]  # maskable: only with IRQs on
        if kind == "foreign":
            return [c for c in online if c.frames[-1].code_active and not c.preempted]
        if kind == "preempt":
            return [c for c in online if self.interrupts.preemptible(c)]
        return []

    def state_view(self) -> dict:
        """Everything that decides the future of the current run, as each part states it (for
        exhaustive search's state caching). Left out: the step number (kept only as steps left
        and a preemption's remaining time), `progress` and the coverage (features only), the
        fair-scheduling hang clock (counted only once a schedule runs out), the choice source."""
        return {
            "run": tuple(getattr(self, name) for name in self.RUN_STATE),
            "memory": self.memory.state(),
            "sites": [s.state() for s in self.sites.values()],
            "protocol": vars(self.proto),
            "cpus": [c.state(self.step) for c in self.cpus],
            "traps": self.traps.state(),
            "sync": self.sync.state(),
        }

    def unclassified_state(self) -> list[str]:
        """Attributes of the machine or of a part that are neither state nor declared not to
        be (`NOT_STATE`, with the reason): a search that prunes on states must refuse to run
        while any exists, since the key would not cover it."""
        out = [f"Machine.{a}" for a in vars(self)
               if a not in self.NOT_STATE and a not in self.RUN_STATE and a not in self.STATE_PARTS]
        for name in self.PARTS:
            part = getattr(self, name)
            keyed = set(part.state()) if hasattr(part, "state") else set()
            out += [f"{type(part).__name__}.{a}" for a in vars(part)
                    if a not in part.not_state() and a not in keyed]
        return out
