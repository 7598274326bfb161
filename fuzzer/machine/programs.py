"""Programs: threads of real code whose shared accesses obey the machine's models.

A protocol's programs (`Protocol.programs`) are laid out in the image with every instruction a
site of its own, so a CPU running one stops in front of each instruction: every instruction is
a scheduling point, and its fetch goes through the instruction-fetch model (`views.py` or
`icache.py`) like a patch site's. What the instruction then does to memory goes through the
memory model:

* its loads and stores of the data region reach `Memory` through the emulator's memory hooks
  (`on_load`, `on_store`): a load reads the CPU's own newest buffered store, else memory; a
  store enters the CPU's store buffer;
* its stores to code are text stores (as `k.poke`'s) into the store buffer, and the CPU's own
  copy of the text is left as its fetch view has it (the emulator wrote it: `ProgramCpu`
  restores it);
* barriers, context synchronization and cache maintenance, which the emulator runs as no-ops,
  take effect here before the instruction runs, as the architecture classifies the fetched
  instruction (`Arch.insn_effect`).

A program starts with the registers its `k.run_program` gives and answers its registers when it
ends (`Arch.program_regs`).
"""

from __future__ import annotations

from .. import events as ev
from .part import Part
from .state import Cpu, SiteState


class Programs(Part):
    SIBLINGS = ("memory", "views")
    NOT_STATE = {"by_addr": "the image's data layout", "effects": "a memo of the architecture's answers",
                 "release_cpu": "set and used within one instruction's step"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.by_addr = {addr: var for var, addr in machine.image.data.items()}
        self.effects: dict[bytes, tuple | None] = {}
        self.release_cpu = -1  # the CPU whose instruction in flight is a store-release

    # ---- start and end -------------------------------------------------------------------------
    def start(self, cpu: Cpu, op) -> None:
        regs = self.m.arch.program_regs
        unknown = [name for name, _ in op.regs if name not in regs]
        if unknown:
            raise ValueError(f"program {op.what}: no register {unknown[0]!r} "
                             f"(known: {', '.join(regs)})")
        cpu.hw.write_regs([(regs[name], value) for name, value in op.regs])

    def registers(self, cpu: Cpu) -> dict[str, int]:
        regs = self.m.arch.program_regs
        return dict(zip(regs, cpu.hw.read_regs(tuple(regs.values()))))

    # ---- the instruction about to run ------------------------------------------------------------
    def before_insn(self, cpu: Cpu, site: SiteState) -> None:
        """`cpu` fetched `site`'s instruction (its view) and runs it next: its effect on the
        models beyond loads and stores."""
        code = bytes(cpu.views[site.name])
        effects = self.effects
        if code in effects:
            effect = effects[code]
        else:
            effect = effects[code] = self.m.arch.insn_effect(code)
        self.release_cpu = -1
        if effect is None:
            return
        what = effect[0]
        if what == "fence":
            self.memory.fence(cpu, effect[1])
        elif what == "sync":
            m = self.m
            if m.observing:
                m.emit(cpu, ev.SyncCore)
            self.views.serialize(cpu)
        elif what == "maint":
            kind, reg = effect[1], effect[2]
            if reg is None:
                self.views.maintain(cpu, kind, "")
            else:
                target = self.m.site_containing(cpu.hw.read_regs((reg,))[0])
                if target is not None:  # a data line: nothing fetch could see
                    self.views.maintain(cpu, kind, target.name)
        elif what == "release":
            self.release_cpu = cpu.idx
        else:
            raise ValueError(f"unknown instruction effect {effect!r}")

    # ---- the emulator's memory hooks ---------------------------------------------------------------
    def on_load(self, idx: int, addr: int, size: int) -> int | None:
        """A program on CPU `idx` loads `size` bytes at `addr`: what it reads. A data variable as
        the CPU sees it; code as memory holds it with the CPU's own buffered text stores (a data
        read, not a fetch); None: whatever the emulator holds there."""
        m = self.m
        cpu = m.cpus[idx]
        var = self.by_addr.get(addr - addr % m.arch.word_size)
        if var is not None:
            value = self.memory.peek(cpu, var)
            if m.observing:
                m.emit(cpu, ev.Load, var, value)
            return value
        out = b""
        while len(out) < size:
            site = m.site_containing(addr + len(out))
            if site is None:
                return None
            off = addr + len(out) - site.addr
            out += self.memory.text_as_seen(cpu, site)[off:off + size - len(out)]
        value = int.from_bytes(out, "little")
        if m.observing:
            m.emit(cpu, ev.Load, m.sym(addr), value)
        return value

    def on_store(self, idx: int, addr: int, size: int, value: int) -> None:
        """A program on CPU `idx` stores `value` (`size` bytes) at `addr`: into its store
        buffer, as a data store or a text store."""
        m = self.m
        cpu = m.cpus[idx]
        release = self.release_cpu == idx
        var = self.by_addr.get(addr - addr % m.arch.word_size)
        if var is not None:
            self.memory.push(cpu, var, value, release)
            if m.observing:
                m.emit(cpu, ev.Store, var, value)
            return
        data = value.to_bytes(size, "little")
        while data:
            site = m.site_containing(addr)
            if site is None:
                raise ValueError(f"cpu{idx}: a program stores to {m.sym(addr)}, which is neither "
                                 "a data variable nor an instruction of a program")
            off = addr - site.addr
            part, data = data[:site.size - off], data[site.size - off:]
            self.memory.begin_text_write(cpu, site, off, part)
            self.memory.text_store(cpu, site, off, part, release)
            addr += len(part)
