"""The protocol's tasks, and what the other CPUs run: their caller loops.

Each task the protocol declares (`Protocol.tasks`: a patcher, a second patcher, a module
loader, CPU hotplug, ...) runs on its CPU; every other CPU runs the image's caller loop, calling
the traced functions over and over. A task that returns goes on to run the caller loop too.
Every site's patch is complete once every task has returned, unless the protocol said so
earlier (`k.complete()`).
"""

from __future__ import annotations

from .. import events as ev
from .. import ops
from .part import Part
from .state import Cpu, Frame


class Tasks(Part):
    SIBLINGS = ("memory",)
    NOT_STATE = {"on_cpu": "the protocol's task placement, fixed"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.on_cpu = {cpu: name for name, cpu in machine.proto.task_cpus(machine.ncpus).items()}

    def handlers(self) -> dict:
        return {ops.TaskDone: self.op_task_done, ops.Complete: self.op_complete}

    def start(self) -> None:
        m = self.m
        proto = m.proto
        for cpu in m.cpus:
            task = self.on_cpu.get(cpu.idx, "")
            body = self._task(cpu.k, getattr(proto, task), task) if task else self._caller_loop()
            m.push(cpu, Frame("thread", body, cpu.k, task=task))

    def _task(self, k, fn, name: str):
        m = self.m
        m.tasks_left += 1
        yield from fn(k)
        yield ops.TaskDone(name)
        yield ops.RunCode(m.image.thread_entry, "caller loop")

    def _caller_loop(self):
        yield ops.RunCode(self.m.image.thread_entry, "caller loop")

    def op_task_done(self, cpu: Cpu, frame: Frame, op: ops.TaskDone) -> None:
        m = self.m
        m.tasks_left -= 1
        if m.observing:
            m.emit(cpu, ev.TaskDone, op.name)
        if m.tasks_left == 0:
            # every task returned: every site whose patch is not complete yet is now
            self.declare_complete(cpu, [s for s in m.sites.values() if s.completed is None])
        m.advance(cpu, frame, None)

    def op_complete(self, cpu: Cpu, frame: Frame, op: ops.Complete) -> None:
        m = self.m
        self.declare_complete(cpu, [m.sites[n] for n in op.sites] if op.sites else list(m.sites.values()))
        m.advance(cpu, frame, None)

    def declare_complete(self, cpu: Cpu, sites: list) -> None:
        """The patch of `sites` is complete with the versions `cpu` sees there now; the run
        itself winds down a few steps after the first completion (the epilogue)."""
        m = self.m
        for site in sites:
            site.completed = m.memory.text_as_seen(cpu, site)
        if not m.completed:
            m.completed = True
            if m.observing:
                m.emit(cpu, ev.Completed)
