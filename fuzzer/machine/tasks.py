"""The protocol's tasks, and what the other CPUs run: their caller loops.

Each task the protocol declares (`Protocol.tasks`: a patcher, a second patcher, a module
loader, CPU hotplug, ...) runs on its CPU; every other CPU runs the image's caller loop, calling
the traced functions over and over. A task that returns goes on to run the caller loop too.
Every site's patch is complete once every task has returned, unless the protocol said so
earlier (`k.complete()`).

A task free to migrate (placed on None) may be moved by the schedule (`draws.MIGRATE`) at any
of its steps to a CPU whose caller loop can be switched out there and then (preemptible: its
thread alone, IRQs on), as the kernel's scheduler moves a preemptible task: the task's stores
drain first (a context switch is a full barrier), it runs on with that CPU's `k` (`k.cpu`
changes), and its old CPU starts a caller loop afresh (idle loops are all alike). A task with
preemption or IRQs off stays where it is.
"""

from __future__ import annotations

from .. import events as ev
from .. import ops
from ..protocol import K
from .part import Part
from .state import Cpu, Frame


def _never(cpu: Cpu, frame: Frame, op) -> bool:
    return False


class Tasks(Part):
    SIBLINGS = ("memory", "interrupts")
    NOT_STATE = {"on_cpu": "the protocol's task placement, fixed", "free": "fixed",
                 "task_k": "each free task's kernel interface (its CPU is in the frames' state)"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.on_cpu = {cpu: name for name, cpu in machine.proto.task_cpus(machine.ncpus).items()}
        self.free = machine.proto.free_tasks()
        # a free task has a `k` of its own, whose CPU follows it
        self.task_k = {name: K(machine, cpu) for cpu, name in self.on_cpu.items() if name in self.free}

    def handlers(self) -> dict:
        # Idle is listed so a coroutine may yield it; it is never handled, since it is never ready
        return {ops.TaskDone: self.op_task_done, ops.Complete: self.op_complete, ops.Idle: _never}

    def start(self) -> None:
        m = self.m
        proto = m.proto
        for cpu in m.cpus:
            task = self.on_cpu.get(cpu.idx, "")
            k = cpu.k
            if task in self.free:
                k = self.task_k[task]
                k.cpu = cpu.idx
                cpu.set_roaming(True)
            body = self._task(k, getattr(proto, task), task) if task else self._caller_loop()
            m.push(cpu, Frame("thread", body, k, task=task))

    def _task(self, k, fn, name: str):
        m = self.m
        m.tasks_left += 1
        yield from fn(k)
        yield ops.TaskDone(name)
        yield from self._caller_loop()

    def _caller_loop(self):
        if self.m.proto.caller_loops:
            yield ops.RunCode(self.m.image.thread_entry, "caller loop")
        else:  # a machine of tasks only: nothing to run
            yield ops.Idle()

    def readiness(self) -> dict:
        return {ops.Idle: _never}

    def op_task_done(self, cpu: Cpu, frame: Frame, op: ops.TaskDone) -> None:
        m = self.m
        m.tasks_left -= 1
        if cpu.roaming:
            cpu.set_roaming(False)  # from here it is one more caller loop
        if m.observing:
            m.emit(cpu, ev.TaskDone, op.name)
        if m.tasks_left == 0:
            # every task returned: every site whose patch is not complete yet is now, unless
            # the protocol makes no such promise; the run winds down from here (the epilogue)
            if m.proto.complete_when_done:
                self.declare_complete(cpu, [s for s in m.sites.values() if s.completed is None])
            if not m.completed:
                m.completed = True
                if m.observing:
                    m.emit(cpu, ev.Completed)
        m.advance(cpu, frame, None)

    def op_complete(self, cpu: Cpu, frame: Frame, op: ops.Complete) -> None:
        m = self.m
        sites = [m.sites[n] for n in op.sites] if op.sites else list(m.sites.values())
        self.declare_complete(cpu, sites)
        if m.observing:
            m.emit(cpu, ev.SitesCompleted, tuple(s.name for s in sites))
        m.advance(cpu, frame, None)

    def declare_complete(self, cpu: Cpu, sites: list) -> None:
        """The patch of `sites` is complete with the versions `cpu` sees there now (the run
        goes on: its tasks may start other operations; it winds down once they all return)."""
        m = self.m
        for site in sites:
            site.completed = m.memory.text_as_seen(cpu, site)
        # a fetch that began before this completion may still run what it fetched then
        for c in m.cpus:
            for f in c.frames:
                if f.at_site is not None and f.at_site in sites:
                    f.fetch_excused = True

    # ---- migration -----------------------------------------------------------------------------
    def migration_targets(self, cpu: Cpu) -> list[Cpu]:
        """Where the free task on `cpu` may move now (empty: it cannot move)."""
        frame = cpu.frames[-1]
        if len(cpu.frames) != 1 or frame.irqs_off or frame.preempt_count:
            return []
        return [c for c in self.m.cpus if c is not cpu and c.online and c.plain and len(c.frames) == 1
                and not c.frames[0].task and self.interrupts.preemptible(c)]

    def migrate(self, cpu: Cpu, target: Cpu) -> None:
        m = self.m
        frame = cpu.frames[0]
        self.memory.drain(cpu, len(cpu.sb))  # a context switch is a full barrier
        if m.observing:
            m.emit(cpu, ev.Migrated, frame.task, target.idx)
        target.frames.pop().gen.close()  # the caller loop it displaces is one like any other
        if target.code_frame is not None:
            target.code_frame = None
        cpu.frames.pop()
        cpu.set_roaming(False)
        frame.k.cpu = target.idx
        target.frames.append(frame)
        target.set_roaming(True)
        m.push(cpu, Frame("thread", self._caller_loop(), cpu.k))
