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

        diff = next((i for i in range(min(len(old), len(new))) if old[i] != new[i]), 0)

        def mnemonic(word: bytes) -> str:
            # the instruction that changes, decoded from a whole version of the site holding
            # `word` (an instruction may begin before the fetch unit or run on past it)
            whole = next((v for v in reversed(site.hist) if v[off:off + len(word)] == word), None)
            if whole is not None:
                pos = 0
                for n in arch.insn_lengths(whole):
                    if pos <= off + diff < pos + n:
                        return arch.disasm(whole[pos:pos + n], site.addr + pos).split(" ")[0]
                    pos += n
            return arch.disasm(word, addr).split(" ")[0].split(";")[0]

        self.report(cpu, "pair",
                    f"may fetch {arch.disasm(old, addr)} or {arch.disasm(new, addr)} at "
                    f"{m.sym(addr)}: the modification is not yet synchronized with this CPU's "
                    f"instruction fetch, and the pair is outside {arch.cmodx_scope}",
                    site=site.name, old=mnemonic(old), new=mnemonic(new), ctx=m.context_name(cpu))
