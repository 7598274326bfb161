"""The generated kernel image, laid out once for every ISA from its emitters.

The image is the smallest kernel that gives patch sites something to race with: traced
functions (entry, patch site, body, return), a tracer the sites call once patched, a caller
loop every thread context runs (one call per site, and the first site once more with IRQs off,
so an IPI has to wait for it), an NMI handler and an IRQ handler that each call every traced
function and end in the stop instruction, and a kprobe'd function whose breakpoint is someone else's. Functions are
16-byte aligned, padded with the ISA's filler.

A protocol may declare more functions (`Protocol.symbols`, laid out like the tracer: they
count their calls and return; or with code of their own), a site may have an entry of its own
(`Site.entry`), and a site's old or new instruction may be a call or a jump to
any symbol (`protocol.Call`, `protocol.Jmp`), encoded for the site's address in this layout:
the image is laid out twice when an old instruction needs an address found only later. The
functions sites call or jump to live far away when the ISA says where (`Arch.far_base`), each
in its own page, so that calls to two of them differ in every byte of their offsets, as in a
kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Arch, Image, SiteLayout

FUNC_ALIGN = 16


def build_image(arch: Arch, sites: Mapping[str, Any], calls_irqs_off: bool = True,
                extra: tuple[str, ...] = (), nmi_sites: tuple[str, ...] | None = None,
                programs: Mapping[str, tuple[str, ...]] | None = None,
                data: tuple[str, ...] = ()) -> Image:
    """`sites`: name -> a `protocol.Site` (its `old`: bytes, or a call or jump to a symbol);
    `extra`: more functions to lay out, by name; `nmi_sites`: the sites whose functions the NMI
    handler calls (None: every one); `programs`: name -> assembly lines, laid out after the
    rest, each instruction a site of its own; `data`: the data region's variables."""
    if nmi_sites is not None and set(nmi_sites) - set(sites):
        raise ValueError(f"nmi_sites names no site {sorted(set(nmi_sites) - set(sites))[0]!r}")
    first = _layout(arch, sites, calls_irqs_off, extra, None, nmi_sites)
    if not all(isinstance(site.old, (bytes, bytearray)) for site in sites.values()):
        image = _layout(arch, sites, calls_irqs_off, extra, first.symbols, nmi_sites)
        assert image.symbols == first.symbols, "an old instruction's encoding changed its length"
        first = image
    if programs or data:
        _programs(arch, first, programs or {}, data)
    return first


def _programs(arch: Arch, image: Image, programs: Mapping[str, tuple[str, ...]], data: tuple[str, ...]) -> None:
    """Lay the protocol's programs out after the image's code, each instruction a site named
    by its label ("P1:L0") or its offset ("P1+8"), each program ending in the stop instruction;
    and the data region's variables, a word each."""
    text = bytearray(image.text)
    stops = set(image.stop_pcs)
    for name, lines in programs.items():
        while len(text) % FUNC_ALIGN:
            text.extend(arch.filler)
        base = image.base + len(text)
        code, labels = arch.assemble(tuple(lines), base)
        for sym, addr in [(name, base), *((f"{name}:{lbl}", a) for lbl, a in labels.items())]:
            if sym in image.symbols:
                raise ValueError(f"symbol {sym!r} is already in the image")
            image.symbols[sym] = addr
        named = {}
        for lbl, addr in labels.items():
            named.setdefault(addr, f"{name}:{lbl}")
        off = 0
        for size in arch.insn_lengths(code) if code else ():
            addr = base + off
            site = named.get(addr, f"{name}+{off}")
            image.sites[site] = SiteLayout(name=site, addr=addr, size=size, func=base,
                                           old=bytes(code[off:off + size]), program=name)
            off += size
        if off != len(code):
            raise ValueError(f"program {name}: its code does not decode at {base + off:#x}")
        text += code
        text += arch.stop()
        end = image.base + len(text)
        stops.add(end)
        image.programs[name] = (base, end)
    if len(text) >= arch.text_size:
        raise ValueError(f"{arch.name}: the image does not fit in {arch.text_size:#x} bytes")
    if len(data) * arch.word_size > arch.data_size:
        raise ValueError(f"{arch.name}: {len(data)} data variables do not fit in the data region")
    for i, var in enumerate(data):
        if var in image.symbols:
            raise ValueError(f"data variable {var!r} clashes with a symbol of the image")
        image.symbols[var] = image.data[var] = arch.data_base + i * arch.word_size
    image.text = bytes(text)
    image.stop_pcs = frozenset(stops)


def resolve(arch: Arch, spec: Any, at: int, symbols: Mapping[str, int] | None) -> bytes:
    """A site version's bytes at address `at`: bytes as they are, a call or jump encoded for
    its target (`symbols` None: a placeholder of the right length, for a first layout), a part
    of one (`protocol.Part`), or a sequence of those, each encoded at its own address (a call
    that takes two instructions)."""
    if isinstance(spec, (tuple, list)):
        out = b""
        for part in spec:
            out += resolve(arch, part, at + len(out), symbols)
        return out
    if hasattr(spec, "start") and hasattr(spec, "spec"):  # protocol.Part: some of a call
        whole = resolve(arch, spec.spec, at - spec.start, symbols)
        return whole[spec.start:spec.end]
    kind = getattr(spec, "kind", None)
    if kind is None:
        return bytes(spec)
    if symbols is None:
        target = at
    elif spec.symbol in symbols:
        target = symbols[spec.symbol]
    else:
        raise ValueError(f"no symbol {spec.symbol!r} in the image; known: {', '.join(sorted(symbols))} "
                         "(declare it in the protocol's `symbols`)")
    return arch.encode_call(at, target) if kind == "call" else arch.encode_jmp(at, target)


def _layout(arch: Arch, sites: Mapping[str, Any], calls_irqs_off: bool, extra: tuple[str, ...],
            known: Mapping[str, int] | None, nmi_sites: tuple[str, ...] | None = None) -> Image:
    base = arch.text_base
    code = bytearray()
    symbols: dict[str, int] = {}
    layouts: dict[str, SiteLayout] = {}
    stops: set[int] = set()
    fill = arch.filler

    def here() -> int:
        return base + len(code)

    def align() -> None:
        if len(code) % len(fill):
            raise ValueError(f"{arch.name}: code is not a whole number of filler units")
        while len(code) % FUNC_ALIGN:
            code.extend(fill)

    far: list[tuple[int, bytes]] = []

    def target(name: str, body: bytes) -> None:
        """A function sites call or jump to: far away, or here."""
        if name in symbols:
            raise ValueError(f"symbol {name!r} is already in the image")
        if arch.far_base is None:
            symbols[name] = here()
            code.extend(body)
            align()
            return
        addr = arch.far_base + len(far) * arch.far_stride
        if len(body) > arch.far_size - addr % arch.far_size:
            raise ValueError(f"{arch.name}: function {name} does not fit in its page")
        symbols[name] = addr
        far.append((addr, body))

    target("ftrace_caller", arch.counter_inc("tracer") + arch.tracer_return())
    # a bare return: a site patched to jump here makes its function return at once
    target("ftrace_stub", arch.ret())
    for entry in extra:  # a name, or (name, the function's own code)
        if isinstance(entry, tuple):
            target(entry[0], bytes(entry[1]))
        else:
            target(entry, arch.counter_inc("tracer") + arch.tracer_return())
    for name, site in sites.items():
        func = here()
        symbols[f"{name}_func"] = func
        entry = getattr(site, "entry", None)
        code += arch.traced_entry() if entry is None else bytes(entry)
        if here() % arch.atomic_store:
            raise ValueError(f"{arch.name}: site {name} would not be aligned for an atomic store")
        old = resolve(arch, site.old, here(), known)
        layouts[name] = SiteLayout(name=name, addr=here(), size=len(old), func=func, old=old)
        code += old
        code += arch.counter_inc("work")
        code += arch.ret()
        align()
    symbols["kprobed_func"] = here()
    code += arch.nop() + arch.nop()  # the machine injects the kprobe's breakpoint here
    code += arch.ret()
    align()
    loop = here()
    symbols["caller_loop"] = loop
    names = list(sites)
    for name in names:
        code += arch.call(here(), layouts[name].func)
    if calls_irqs_off and names:
        code += arch.irqs_off()
        code += arch.call(here(), layouts[names[0]].func)
        code += arch.irqs_on()
    code += arch.jmp(here(), loop)
    align()
    handlers = {}
    for handler in ("nmi_handler", "irq_handler"):  # each calls every traced function, then stops
        handlers[handler] = symbols[handler] = here()
        called = names if handler == "irq_handler" or nmi_sites is None else [n for n in names if n in nmi_sites]
        for name in called:
            code += arch.call(here(), layouts[name].func)
        code += arch.stop()
        stops.add(here())
        align()
    if len(code) >= arch.text_size:
        raise ValueError(f"{arch.name}: the image does not fit in {arch.text_size:#x} bytes")
    return Image(
        base=base,
        text=bytes(code),
        symbols=symbols,
        sites=layouts,
        thread_entry=loop,
        nmi_entry=handlers["nmi_handler"],
        irq_entry=handlers["irq_handler"],
        foreign_trap=symbols["kprobed_func"],
        stop_pcs=frozenset(stops),
        far=tuple(far),
    )
