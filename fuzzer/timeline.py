"""A picture of the race: one lane per CPU over scheduling steps, drawn from a run's trace.

Each trace event becomes a labelled box in its CPU's lane at its step, coloured by kind (fetch
at a patch site with the bytes seen, text write, IPI, NMI, int3 and handler steps, lock waits,
stop_machine, memory); the violation is marked in red with its title. SVG, or HTML wrapping it.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

LINE = re.compile(r"^\s*(\d+) cpu(\d+) (\S+)\s+(.*)$")
KINDS = [  # (substring, kind, colour): first match wins
    ("***", "violation", "#d62728"),
    ("consequence:", "violation", "#ff9896"),
    ("fetch ", "fetch", "#1f77b4"),
    ("poke ", "text write", "#ff7f0e"),
    ("drain: ", "memory", "#c7c7c7"),
    ("IPI", "ipi", "#2ca02c"),
    ("sync_core", "ipi", "#2ca02c"),
    ("NMI", "nmi", "#9467bd"),
    ("int3", "trap", "#e377c2"),
    ("waits for", "lock wait", "#8c564b"),
    ("lock ", "lock", "#bcbd22"),
    ("stop_machine", "stop_machine", "#17becf"),
    ("preempt", "preemption", "#7f7f7f"),
]
STEP_W, LANE_H, LEFT, TOP = 26, 64, 70, 40


def _kind(msg: str) -> tuple[str, str]:
    for key, kind, colour in KINDS:
        if key in msg:
            return kind, colour
    return "op", "#aec7e8"


def render_svg(trace: list[str], title: str, ncpus: int) -> str:
    events = []
    for line in trace:
        m = LINE.match(line)
        if m:
            events.append((int(m[1]), int(m[2]), m[3], m[4]))
    last = max((e[0] for e in events), default=1)
    width = LEFT + (last + 2) * STEP_W
    height = TOP + ncpus * LANE_H + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="9">',
           f'<text x="8" y="16" font-size="13" font-weight="bold">{escape(title)}</text>']
    for cpu in range(ncpus):
        y = TOP + cpu * LANE_H
        out.append(f'<rect x="{LEFT}" y="{y}" width="{width - LEFT}" height="{LANE_H - 4}" '
                   f'fill="{"#f7f7f7" if cpu % 2 else "#ffffff"}" stroke="#ddd"/>')
        out.append(f'<text x="8" y="{y + LANE_H // 2}" font-size="12">cpu{cpu}</text>')
    slot: dict[tuple[int, int], int] = {}
    for step, cpu, ctx, msg in events:
        if cpu >= ncpus:
            continue
        k = slot.get((step, cpu), 0)
        slot[(step, cpu)] = k + 1
        kind, colour = _kind(msg)
        x = LEFT + step * STEP_W
        y = TOP + cpu * LANE_H + 2 + (k % 4) * 14
        label = msg if len(msg) < 60 else msg[:57] + "..."
        out.append(f'<g><title>step {step} cpu{cpu} [{escape(ctx)}] {escape(msg)}</title>'
                   f'<rect x="{x}" y="{y}" width="{STEP_W - 2}" height="12" fill="{colour}" rx="2"/>'
                   f'<text x="{x + 2}" y="{y + 9}" fill="#000">{escape(kind[:4])}</text></g>')
        if kind == "violation" and msg.startswith("***"):
            out.append(f'<line x1="{x}" y1="{TOP - 6}" x2="{x}" y2="{TOP + ncpus * LANE_H}" '
                       f'stroke="#d62728" stroke-width="2"/>')
            out.append(f'<text x="{LEFT}" y="{TOP + ncpus * LANE_H + 20}" fill="#d62728" font-size="11">'
                       f'step {step}, cpu{cpu}: {escape(label)}</text>')
    legend_y = TOP + ncpus * LANE_H + 40
    seen = []
    for _, kind, colour in KINDS + [("", "op", "#aec7e8")]:
        if kind not in seen:
            seen.append(kind)
            x = LEFT + (len(seen) - 1) * 90
            out.append(f'<rect x="{x}" y="{legend_y}" width="10" height="10" fill="{colour}"/>'
                       f'<text x="{x + 14}" y="{legend_y + 9}">{escape(kind)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_html(trace: list[str], title: str, ncpus: int) -> str:
    rows = "\n".join(escape(line) for line in trace)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
            f"<body>{render_svg(trace, title, ncpus)}<pre>{rows}</pre></body></html>\n")
