"""x86 dynamic ftrace, NMI-safe code modification (v2.6.28, commit 17666f02b118).

Under stop_machine, do_ftrace_mod_code() publishes the target IP and new code, sets
mod_code_write, waits until no NMI is running, writes the code, clears the flag and waits
again. ftrace_nmi_enter() counts running NMIs and, when the flag is set, writes the same new
code itself before the NMI handler runs any traced function: identical bytes, so the NMI never
executes a half-written site. ftrace_modify_code() first checks the old bytes (ftrace_bug).

Variants (expected verdict on 4 CPUs):
* correct -- torn-fetch, and this is a finding about the 2008 design, not a model artifact: the
  patcher waits for running NMIs before *its* write, but an NMI that arrives after
  mod_code_write=1 writes the code at once, while an older NMI that read the flag as 0 may be
  fetching the same site. Minimal schedule: NMI A on cpu3 reads mod_code_write == 0 and reaches
  fentry_b; the patcher sets the flag; NMI B (on the patching CPU itself, or any other) sees the
  flag and writes fentry_b byte by byte; NMI A executes a mix. Later kernels (see
  ftrace_nmi_2010) fold the flag into nmi_running and set it only with cmpxchg(0 -> FLAG), i.e.
  only when no NMI at all is running, which closes exactly this window.
* no-nmi-write -- torn-fetch: an NMI during the write executes the half-written site.
* no-wait -- torn-fetch: an NMI that began before the flag was set runs traced code while the
  patcher writes.
"""

from __future__ import annotations

from ...arch.x86_64 import NOP5
from ...protocol import Call, Protocol, Site


class FtraceNmi2008(Protocol):
    name = "x86/ftrace_nmi_2008"
    summary = "ftrace under stop_machine; NMIs write the pending code themselves"
    sites = {"fentry_a": Site(old=NOP5, new=Call("ftrace_caller")),
             "fentry_b": Site(old=NOP5, new=Call("ftrace_caller"))}
    params = dict(nmi_write=True, wait=True)
    variants = {"correct": {}, "no-nmi-write": dict(nmi_write=False), "no-wait": dict(wait=False)}
    expect = {"correct": "torn-fetch", "no-nmi-write": "torn-fetch", "no-wait": "torn-fetch"}

    def patcher(self, k):
        yield from k.stop_machine(self._update_all)

    def _update_all(self, k):
        for name in self.sites:
            site = k.site(name)
            yield k.expect_text(name, site.old)
            yield from self._do_mod_code(k, name, site.new)

    def _do_mod_code(self, k, name, new):
        yield k.store("mod_code_ip", name)
        yield k.store("mod_code_newcode", new)
        yield k.wmb()
        yield k.store("mod_code_write", 1)
        yield k.mb()
        yield from self._wait_for_nmi(k)
        yield k.mb()
        yield k.poke(name, new)
        yield k.wmb()
        yield k.store("mod_code_write", 0)
        yield k.mb()
        yield from self._wait_for_nmi(k)

    def _wait_for_nmi(self, k):
        if self.v.wait:
            yield k.wait_until("nmi_running", lambda n: n == 0, "no NMI running")

    def nmi_enter(self, k):
        yield k.atomic_inc("nmi_running")
        yield k.mb()
        if (yield k.load("mod_code_write")) and self.v.nmi_write:
            ip = yield k.load("mod_code_ip")
            new = yield k.load("mod_code_newcode")
            yield k.poke(ip, new)
            yield k.atomic_inc("nmi_update_count")

    def nmi_exit(self, k):
        yield k.wmb()
        yield k.atomic_dec("nmi_running")
