"""x86 text_mutex against CPU hotplug: lock order between patching and cpu_down.

The patcher patches `fentry` with text_poke_bp() under text_mutex, and its IPI syncs need the
CPUs held still, so it takes cpu_hotplug_lock for reading (a percpu rwsem whose queued writer
blocks new readers). The hotplug task takes cpu_hotplug_lock for writing, takes a CPU offline,
and patches a static key (`key`, a jump label) under text_mutex, as jump_label updates on
hotplug do.

Variants (expected verdict on 4 CPUs):
* correct -- clean: both paths take cpu_hotplug_lock before text_mutex.
* abba -- deadlock: the patcher holds text_mutex and waits for cpu_hotplug_lock, the hotplug
  task holds cpu_hotplug_lock and waits for text_mutex.
"""

from __future__ import annotations

from ...arch.x86_64 import NOP5
from ...protocol import Call, Jmp, Site
from .text_poke_bp import TextPokeBP


class TextMutexHotplug(TextPokeBP):
    name = "x86/text_mutex_hotplug"
    summary = "text_mutex vs cpu_hotplug_lock: patching races a CPU going down"
    uses_hotplug = True
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller")),
             "key": Site(old=NOP5, new=Jmp("ftrace_stub"))}
    params = {**TextPokeBP.params, "hotplug_first": True}
    variants = {"correct": {}, "abba": dict(hotplug_first=False)}
    expect = {"correct": None, "abba": "deadlock"}

    def patcher(self, k):
        if self.v.hotplug_first:
            yield k.read_lock("cpu_hotplug_lock")
        yield k.lock("text_mutex")
        if not self.v.hotplug_first:
            yield k.read_lock("cpu_hotplug_lock")
        yield from self.poke_bp(k, ["fentry"])
        yield k.unlock("text_mutex")
        yield k.read_unlock("cpu_hotplug_lock")

    def hotplug(self, k):
        target = k.ncpus - 2 if k.ncpus >= 3 else None
        yield k.write_lock("cpu_hotplug_lock")
        if target:
            yield k.cpu_down(target)
        yield k.lock("text_mutex")
        yield from self.poke_bp(k, ["key"])
        yield k.unlock("text_mutex")
        if target:
            yield k.cpu_up(target)
        yield k.write_unlock("cpu_hotplug_lock")
