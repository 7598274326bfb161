"""cmodx-violation: concurrent modification and execution outside the architecture's list.

Where instruction fetch is not coherent with data stores (machine/icache.py), a CPU that has not
synchronized its fetch with a modification of a site may fetch either the old or the new
instruction. Architectures that allow that only for a few instructions (arm64: B, BL, BRK, HVC,
ISB, NOP, SMC, SVC, Arm ARM B2.2.5) leave every other pair CONSTRAINED UNPREDICTABLE: the CPU may
execute something that is neither. The machine asks the architecture (`Arch.cmodx_safe`) at
each such fetch and reports the first pair outside the list.
"""

from __future__ import annotations

from .base import Oracle


class CmodxViolation(Oracle):
    id = "cmodx-violation"
    fires_when = ("a CPU fetches a site another modification of which is not yet synchronized with "
                  "its fetch, and the two instructions are not both in the architecture's list of "
                  "instructions that may be modified while executed (arm64 CMODX)")
    TITLES = {"pair": "cmodx-violation at {site}: {old} <-> {new} in {ctx}"}

    def on_cmodx(self, cpu, frame, site, off, old, new) -> None:
        m = self.m
        arch = m.arch
        addr = site.addr + off

        def mnemonic(word: bytes) -> str:
            return arch.disasm(word, addr).split(" ")[0].split(";")[0]

        self.report(cpu, "pair",
                    f"may fetch {arch.disasm(old, addr)} or {arch.disasm(new, addr)} at "
                    f"{m.sym(addr)}: the modification is not yet synchronized with this CPU's "
                    "instruction fetch, and the pair is outside the CMODX list",
                    site=site.name, old=mnemonic(old), new=mnemonic(new), ctx=m.context_name(cpu))
