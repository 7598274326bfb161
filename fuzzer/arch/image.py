"""The generated kernel image, laid out once for every ISA from its emitters.

The image is the smallest kernel that gives patch sites something to race with: traced
functions (entry, patch site, body, return), a tracer the sites call once patched, a caller
loop every thread context runs (one call per site, and the first site once more with IRQs off,
so an IPI has to wait for it), an NMI handler that calls every traced function and ends in the
stop instruction, and a kprobe'd function whose breakpoint is someone else's. Functions are
16-byte aligned, padded with the ISA's filler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Arch, Image, SiteLayout

FUNC_ALIGN = 16


def build_image(arch: Arch, sites: Mapping[str, Any], calls_irqs_off: bool = True) -> Image:
    """`sites`: name -> an object with the site's `old` bytes (protocol.Site)."""
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

    symbols["ftrace_caller"] = here()
    code += arch.counter_inc("tracer")
    code += arch.tracer_return()
    align()
    # a bare return: a site patched to jump here makes its function return at once
    symbols["ftrace_stub"] = here()
    code += arch.ret()
    align()
    for name, site in sites.items():
        func = here()
        symbols[f"{name}_func"] = func
        code += arch.traced_entry()
        if here() % arch.atomic_store:
            raise ValueError(f"{arch.name}: site {name} would not be aligned for an atomic store")
        layouts[name] = SiteLayout(name=name, addr=here(), size=len(site.old), func=func)
        code += site.old
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
    nmi = here()
    symbols["nmi_handler"] = nmi
    for name in names:
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
        nmi_entry=nmi,
        foreign_trap=symbols["kprobed_func"],
        stop_pcs=frozenset(stops),
    )
