"""A picture of the race: one lane per CPU over scheduling steps, drawn from a run's events.

Each event becomes a box in its CPU's lane at its step, labelled with what happened (the bytes
a fetch at a patch site saw, what a text write stored where, IPIs, NMIs, traps and handler
steps, lock waits, stop_machine, memory) and coloured by its category; the violation is marked
in red with its title. Draws the full trace or the focused one (folded step ranges). SVG, or
HTML wrapping it. It draws rows (`Row`), built from events or from focused lines: it reads no
trace text.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from .events import Event, Renderer

COLOURS = {  # category -> colour, in legend order
    "violation": "#d62728",
    "consequence": "#ff9896",
    "fetch": "#6baed6",
    "text write": "#fdae6b",
    "memory": "#d9d9d9",
    "ipi": "#74c476",
    "nmi": "#bcbddc",
    "irq": "#9e9ac8",
    "trap": "#f1b6da",
    "lock wait": "#c49c94",
    "lock": "#dbdb8d",
    "stop_machine": "#9edae5",
    "preemption": "#bdbdbd",
    "op": "#c6dbef",
}
CHAR_W, ROW_H, LEFT, TOP = 5.6, 14, 64, 48  # monospace 9 px: ~5.4 px per character
MAX_LABEL = 44  # characters shown in a box; the whole line is in its tooltip


@dataclass(frozen=True)
class Row:
    """One box: steps first..last of one CPU, in a context, of a category, saying `text`."""

    first: int
    last: int
    cpu: int
    ctx: str
    category: str
    text: str


def rows_of_events(events: list[Event], r: Renderer) -> list[Row]:
    return [Row(e.step, e.step, e.cpu, e.ctx, e.category, e.text(r)) for e in events]


def _label(msg: str) -> str:
    msg = msg.removeprefix("*** ")
    return msg if len(msg) <= MAX_LABEL else msg[:MAX_LABEL - 1] + "\u2026"


def render_svg(rows: list[Row], title: str, ncpus: int) -> str:
    """Columns are the steps that have events (left to right, in order), each as wide as its
    longest label, so the bytes a CPU fetched and what was written where can be read on the
    picture itself; each CPU lane is as tall as its busiest step."""
    events = [(row.first, row.last, row.cpu, row.ctx, row.category, row.text) for row in rows
              if 0 <= row.cpu < ncpus]
    columns = sorted({e[0] for e in events})
    col_of = {step: i for i, step in enumerate(columns)}
    cells: dict[tuple[int, int], list[tuple[int, str, str]]] = {}
    width_of = [0.0] * len(columns)
    for first, last, cpu, ctx, category, msg in events:
        cells.setdefault((col_of[first], cpu), []).append((last, ctx, category, msg))
        width_of[col_of[first]] = max(width_of[col_of[first]], len(_label(msg)) * CHAR_W + 8, 28)
    xs, x = [], float(LEFT)
    for w in width_of:
        xs.append(x)
        x += w + 4
    total_w = int(x + 10)
    rows_of = [max([len(v) for (c, cpu), v in cells.items() if cpu == lane] or [1]) for lane in range(ncpus)]
    lane_y, y = [], TOP
    for rows in rows_of:
        lane_y.append(y)
        y += rows * ROW_H + 10
    total_h = int(y + 70)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
           f'font-family="monospace" font-size="9">',
           f'<rect width="{total_w}" height="{total_h}" fill="#ffffff"/>',
           f'<text x="8" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
           f'<text x="8" y="{TOP - 8}" font-size="9" fill="#666">step</text>']
    for i, step in enumerate(columns):
        out.append(f'<text x="{xs[i]:.0f}" y="{TOP - 8}" font-size="9" fill="#666">{step}</text>')
    for cpu in range(ncpus):
        h = rows_of[cpu] * ROW_H + 6
        out.append(f'<rect x="{LEFT - 4}" y="{lane_y[cpu] - 3}" width="{total_w - LEFT}" height="{h}" '
                   f'fill="{"#f4f4f4" if cpu % 2 else "#fbfbfb"}" stroke="#ddd"/>')
        out.append(f'<text x="8" y="{lane_y[cpu] + h / 2}" font-size="12">cpu{cpu}</text>')
    for (col, cpu), items in sorted(cells.items()):
        for k, (last, ctx, kind, msg) in enumerate(items):
            colour = COLOURS.get(kind, COLOURS["op"])
            step = columns[col]
            span = f"steps {step}-{last}" if last != step else f"step {step}"
            bx, by = xs[col], lane_y[cpu] + k * ROW_H
            ctx_mark = "" if ctx == "thread" else f"[{ctx}] "
            out.append(f'<g><title>{span} cpu{cpu} [{escape(ctx)}] {escape(msg)}</title>'
                       f'<rect x="{bx:.0f}" y="{by}" width="{width_of[col]:.0f}" height="{ROW_H - 2}" '
                       f'fill="{colour}" rx="2"'
                       + (' stroke="#d62728" stroke-width="1.5"' if kind == "violation" else "") + '/>'
                       f'<text x="{bx + 3:.0f}" y="{by + 9}" fill="#000">{escape(_label(ctx_mark + msg))}</text></g>')
            if kind == "violation":
                out.append(f'<line x1="{bx - 2:.0f}" y1="{TOP - 20}" x2="{bx - 2:.0f}" y2="{lane_y[-1] + rows_of[-1] * ROW_H + 4}" '
                           f'stroke="#d62728" stroke-width="2"/>')
                out.append(f'<text x="{LEFT}" y="{y + 14}" fill="#d62728" font-size="11">'
                           f'step {step}, cpu{cpu}: {escape(msg.removeprefix("*** "))}</text>')
    legend_y = y + 36
    for i, (kind, colour) in enumerate(COLOURS.items()):
        lx = LEFT + i * 90
        out.append(f'<rect x="{lx}" y="{legend_y}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{lx + 14}" y="{legend_y + 9}">{escape(kind)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_html(rows: list[Row], title: str, ncpus: int, lines: list[str]) -> str:
    """The picture and, below it, the trace as text (`lines`)."""
    text = "\n".join(escape(line) for line in lines)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
            f"<body>{render_svg(rows, title, ncpus)}<pre>{text}</pre></body></html>\n")
