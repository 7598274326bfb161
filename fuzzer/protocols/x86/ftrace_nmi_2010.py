"""x86 dynamic ftrace, NMI path only when modifying (v2.6.3x, arch/x86/kernel/ftrace.c).

ftrace_arch_code_modify_prepare() sets a global `modifying_code` before stop_machine and
post_process clears it after. ftrace_nmi_enter() snapshots it per CPU (save_modifying_code) and,
when no modification is under way, skips the atomic counter and barriers entirely; otherwise
atomic_inc_return(nmi_running) tells it, through MOD_CODE_WRITE_FLAG, whether to write the
pending code itself. The patcher sets the flag with cmpxchg(nmi_running, 0, FLAG) once no NMI
runs, writes, clears the flag with a cmpxchg loop and waits for running NMIs.

Variants: correct -- modelled faithfully. Random search on 4 CPUs finds nothing (the window that
breaks ftrace_nmi_2008:correct is closed: the flag can only be set while nmi_running == 0, and
an NMI that snapshotted modifying_code == 0 must finish before its CPU can join stop_machine).
"""

from __future__ import annotations

from ...arch.x86_64 import NOP5
from ...protocol import Call, Protocol, Site

MOD_CODE_WRITE_FLAG = 1 << 31


class FtraceNmi2010(Protocol):
    name = "x86/ftrace_nmi_2010"
    summary = "ftrace with a per-CPU modifying_code snapshot so idle NMIs skip the counter"
    sites = {"fentry_a": Site(old=NOP5, new=Call("ftrace_caller")),
             "fentry_b": Site(old=NOP5, new=Call("ftrace_caller"))}
    variants = {"correct": {}}
    expect = {"correct": None}

    def patcher(self, k):
        yield k.store("modifying_code", 1)
        yield from k.stop_machine(self._update_all)
        yield k.store("modifying_code", 0)

    def _update_all(self, k):
        for name in self.sites:
            site = k.site(name)
            yield k.expect_text(name, site.old)
            yield from self._do_mod_code(k, name, site.new)

    def _do_mod_code(self, k, name, new):
        yield k.store("mod_code_ip", name)
        yield k.store("mod_code_newcode", new)
        yield k.mb()
        # wait_for_nmi_and_set_mod_flag()
        while (yield k.cmpxchg("nmi_running", 0, MOD_CODE_WRITE_FLAG)) != 0:
            yield k.wait_until("nmi_running", lambda n: n == 0, "no NMI running")
        yield k.mb()
        yield k.poke(name, new)
        yield k.mb()
        # clear_mod_flag()
        old = yield k.load("nmi_running")
        while old != old & ~MOD_CODE_WRITE_FLAG:
            old = yield k.cmpxchg("nmi_running", old, old & ~MOD_CODE_WRITE_FLAG)
        yield k.wait_until("nmi_running", lambda n: n == 0, "no NMI running")

    def nmi_enter(self, k):
        snap = yield k.load("modifying_code")
        yield k.store(f"save_modifying_code.cpu{k.cpu}", snap)
        if not snap:
            return
        if (yield k.atomic_inc_return("nmi_running")) & MOD_CODE_WRITE_FLAG:
            yield k.rmb()
            ip = yield k.load("mod_code_ip")
            new = yield k.load("mod_code_newcode")
            yield k.poke(ip, new)
            yield k.atomic_inc("nmi_update_count")
        yield k.mb()

    def nmi_exit(self, k):
        if not (yield k.load(f"save_modifying_code.cpu{k.cpu}")):
            return
        yield k.mb()
        yield k.atomic_dec("nmi_running")
