"""The scheduler loop: one iteration per step, every decision drawn from the schedule.

Each step first draws an event (`draws.EVENT`): a plain step, or an injected NMI, foreign trap,
preemption or single store drain on a CPU the schedule picks. A plain step picks a runnable CPU
(round robin by default), drains some of its store buffer, lets it take a pending IPI, park for
stop_machine or resume from a preemption, and otherwise runs its top frame's op: a slice of
code, or a protocol operation.

Once the schedule is used up ("fair": no source, no bytes left) every draw returns its default
and has no effect beyond `Choices.defaulted`, so the fair path makes no draws: no event, the
first runnable CPU in round-robin order, drain everything, take a pending IPI, refresh every
fetch unit, run to the next stop. It also stops the runnable scan at that first CPU: the CPUs
after it are only checked where the check itself has effects (a lock op: a writer joins the
lock's waiter queue; wait predicates are pure, see K.wait_until). A `plain` CPU's top op alone
says whether it can run.
"""

from __future__ import annotations

from .. import draws, ops
from .part import Part
from .state import Cpu

HANG_STEPS = 3000  # fair (default) steps without completion before "no progress"
_EVENT, _CPU = draws.EVENT, draws.CPU
_DRAIN, _TAKE_IPI, _MIGRATE = draws.DRAIN, draws.TAKE_IPI, draws.MIGRATE
EV_NMI = draws.EV_NMI


class Scheduler(Part):
    SIBLINGS = ('checks', 'code', 'interrupts', 'memory', 'sync')
    NOT_STATE = {"orders": "fixed", "injectors": "fixed"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        cpus = machine.cpus
        n = len(cpus)
        # the runnable scan's order after each CPU: round robin from the next one
        self.orders = [[cpus[(last + 1 + i) % n] for i in range(n)] for last in range(n)]
        self.injectors = {"nmi": machine.interrupts.nmi, "irq": machine.interrupts.irq,
                          "foreign": machine.traps.foreign_trap,
                          "preempt": machine.interrupts.preempt, "drain": self._drain_one}



    def loop(self) -> None:
        # The hottest code of the fuzzer: the runnable scan, the CPU's step and the op dispatch
        # are inlined here, with lookups hoisted into locals.
        m = self.m
        ch = m.ch
        data = ch.data  # the schedule's bytes, drawn here directly when no source steers
        orders = self.orders
        max_steps = m.config.max_steps
        byte = ch.byte
        readiness = m.readiness  # a blocking op's check, by its type
        irqs_on = self.interrupts.irqs_on
        interrupts = m.interrupts
        sync = m.sync
        drain = self.memory.drain
        runnable_check = self.runnable
        step_code = self.code.step
        handlers = m.handlers
        run_code = ops.RunCode
        lock_op = ops.LockOp
        fair = False
        while m.finding is None:
            step = m.step = m.step + 1
            if step > max_steps:
                self.checks.budget_spent("step budget exhausted")
                break
            if m.completed:
                m.epilogue -= 1
                if m.epilogue < 0:
                    break
            elif ch.defaulted:
                m.fair_steps += 1
                if m.fair_steps > HANG_STEPS:
                    self.checks.budget_spent("no progress under fair scheduling")
                    break
            if not fair:  # once fair, fair for the rest of the run
                fair = ch.pos >= ch.n and ch.source is None
            if fair:
                ch.defaulted = True  # what the event draw would record
                cpu = None
                order = orders[m.last_cpu]
                for c in order:
                    if c.plain:
                        top = c.frames[-1]
                        op = top.op
                        if op is not None and (not op.blocking or readiness[type(op)](c, top, op)):
                            cpu = c
                            break
                    elif runnable_check(c):
                        cpu = c
                        break
                if sync.lock_ops:
                    if cpu is not None:
                        for c in order[order.index(cpu) + 1:]:
                            if type(c.frames[-1].op) is lock_op:
                                runnable_check(c)
                    if m.finding is not None:
                        break  # a lock wait closed a cycle: nothing runs after the finding
                if cpu is None:
                    if self.memory.drain_every_cpu() or interrupts.end_a_preemption():
                        continue
                    if not self.all_idle():
                        self.checks.stall()
                    break
            else:
                if ch.source is None:  # not fair: a byte is left for this draw
                    pos = ch.pos
                    ev = data[pos]
                    ch.pos = pos + 1
                else:
                    ev = byte(_EVENT.default, _EVENT.name)
                if ev >= EV_NMI:
                    if self.inject(ev):
                        continue
                # round robin by default: the next runnable CPU after the one stepped last
                runnable = []
                for c in orders[m.last_cpu]:
                    if c.plain:
                        top = c.frames[-1]
                        op = top.op
                        if op is not None and (not op.blocking or readiness[type(op)](c, top, op)):
                            runnable.append(c)
                    elif runnable_check(c):
                        runnable.append(c)
                if sync.lock_ops and m.finding is not None:
                    break  # a lock wait closed a cycle: nothing runs after the finding
                if not runnable:
                    if self.memory.drain_every_cpu() or interrupts.end_a_preemption():
                        continue
                    if not self.all_idle():
                        self.checks.stall()
                    break
                if ch.source is None:  # Choices.byte inlined
                    pos = ch.pos
                    if pos < ch.n:
                        pick = data[pos]
                        ch.pos = pos + 1
                    else:
                        ch.defaulted = True
                        pick = _CPU.default
                else:
                    pick = byte(_CPU.default, _CPU.name, len(runnable), tuple(c.idx for c in runnable))
                # Default once the schedule is used up: round robin. (Running protocol work
                # first would save a third of the steps, but then the protocol's end runs
                # without any contention and random search needs 10-40x more schedules for
                # the late bugs.)
                cpu = runnable[pick % len(runnable)] if pick >= 0 else runnable[0]
            m.last_cpu = cpu.idx
            # ---- the CPU's step
            sb = cpu.sb
            if sb:
                if fair:
                    drain(cpu, len(sb))
                else:
                    drain(cpu, draws.drain_count(byte(_DRAIN.default, _DRAIN.name, len(sb) + 1), len(sb)))
            if not cpu.plain:
                if cpu.ipis and irqs_on(cpu) and (
                        fair or draws.takes_ipi(byte(_TAKE_IPI.default, _TAKE_IPI.name))):
                    # The handler is atomic and serializing; the CPU then carries on in this
                    # step.
                    interrupts.take_ipi(cpu)
                    continue
                if cpu.stop_req is not None and sync.can_park(cpu):
                    sync.park(cpu)
                    continue
                if cpu.preempted and len(cpu.frames) == 1:
                    interrupts.resume_preempted(cpu)
                    continue
                if cpu.roaming and not fair and self._migrates(cpu):
                    continue
            frame = cpu.frames[-1]
            op = frame.op
            if op.blocking and not readiness[type(op)](cpu, frame, op):
                continue
            t = type(op)
            if t is run_code:
                step_code(cpu, frame, op, fair)
                continue
            handler = handlers.get(t)
            if handler is None:
                raise TypeError(f"protocol yielded {op!r}, which is not an op")
            handler(cpu, frame, op)

    def all_idle(self) -> bool:
        """Has every online CPU nothing left to run (`ops.Idle`)? Then the run is over, not
        stalled."""
        return all(type(c.frames[-1].op) is ops.Idle for c in self.m.cpus if c.online and c.frames)

    def runnable(self, cpu: Cpu) -> bool:
        """Can `cpu` take a step (the slow path, for CPUs that are not `plain`)?"""
        m = self.m
        if not cpu.online:
            return False
        if cpu.ipis and self.interrupts.irqs_on(cpu):
            return True
        if cpu.stop_req is not None and self.sync.can_park(cpu):
            return True
        if cpu.preempted and len(cpu.frames) == 1:
            return m.step >= cpu.preempted_until
        top = cpu.frames[-1]
        op = top.op
        if op is None:
            return False
        if op.blocking:
            return m.ready(cpu, top, op)
        return True

    def inject(self, byte: int) -> bool:
        """Inject the event an "event" byte asks for. Returns True if one was injected."""
        m = self.m
        kind = draws.KIND_OF_BYTE[byte]
        cands = m.event_candidates(kind.name)
        if not cands:
            return False
        ch = m.ch
        opts = tuple(c.idx for c in cands) if ch.source is not None else None
        cpu = cands[ch.byte(draws.DRAWS[kind.target].default, kind.target, len(cands), opts) % len(cands)]
        self.injectors[kind.name](cpu)
        return True

    def _migrates(self, cpu: Cpu) -> bool:
        """The schedule may move the free task on `cpu` to an idle CPU (draws.MIGRATE)."""
        tasks = self.m.tasks
        targets = tasks.migration_targets(cpu)
        if not targets:
            return False
        options = (cpu.idx, *(t.idx for t in targets))
        pick = self.m.ch.byte(_MIGRATE.default, _MIGRATE.name, len(options), options) % len(options)
        if not pick:
            return False
        tasks.migrate(cpu, targets[pick - 1])
        return True

    def _drain_one(self, cpu: Cpu) -> None:
        self.memory.drain(cpu, 1)
