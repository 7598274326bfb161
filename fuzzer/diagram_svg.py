"""The race diagram drawn as SVG (or HTML around it): one column per CPU, time going down.

A left gutter numbers the steps; each row is a box in its CPU's column, coloured by category,
its label wrapped inside the column (never cut); a CPU's protocol step is written above its
first row in it; a stretch of steps nothing is shown for is a "⋮ N steps skipped" marker; the
violation is the last box, in red. The legend names the categories drawn and no others. Sized
from its text, so a focused diagram of a small race fits a laptop screen.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from .diagram import COLOURS, Diagram, Line, Row, wrap

FONT = 11  # px, monospace
CW = 7.0  # px per character of an 11 px monospace font (0.602 em, hinted up by renderers)
LH = 14  # px per wrapped text line
PAD = 4  # px inside a box
INDENT = 12  # px a handler's rows are indented: they run inside the thread's step
MARGIN, GUTTER, GAP = 12, 52, 12
MAX_WIDTH = 1280  # px: columns narrow (their labels wrap) to keep the diagram within a screen
PHASE_H = 15  # px for a protocol-step label above a box
SKIP_H = 18
RED = "#d62728"


def _columns(d: Diagram) -> tuple[dict[int, float], float, int]:
    """Each CPU's column x, the column width in px, and the characters a line of it holds."""
    n = max(len(d.cpus), 1)
    fit = (MAX_WIDTH - 2 * MARGIN - GUTTER - (n - 1) * GAP) / n
    longest = max([len(row.label) * CW + (INDENT if row.ctx not in ("thread", "") else 0)
                   for row in d.rows if row.cpu in d.cpus] + [len(ph) * CW * 0.9 for row in d.rows
                                                              for ph in [row.phase] if row.cpu in d.cpus]
                  + [20 * CW])
    width = min(fit, longest + 2 * PAD)
    xs = {cpu: MARGIN + GUTTER + i * (width + GAP) for i, cpu in enumerate(d.cpus)}
    return xs, width, int((width - 2 * PAD) / CW)


def _box(row: Row, x: float, y: float, width: float, chars: int) -> tuple[list[str], float]:
    indent = INDENT if row.ctx not in ("thread", "") else 0
    lines = wrap(row.label, chars - int(indent / CW))
    h = len(lines) * LH + 2 * PAD - 2
    bad = row.category == "violation"
    fill = COLOURS.get(row.category, COLOURS["op"])
    span = f"steps {row.first}-{row.last}" if row.first != row.last else f"step {row.first}"
    tip = f"{span} CPU{row.cpu} [{row.ctx}] {row.text}" + (f" ({row.phase})" if row.phase else "")
    tspans = "".join(f'<tspan x="{x + indent + PAD:.1f}" dy="{0 if i == 0 else LH}">{escape(t)}</tspan>'
                     for i, t in enumerate(lines))  # one element: no blank text between the lines
    out = [f'<g class="row" data-category="{escape(row.category)}"><title>{escape(tip)}</title>',
           f'<rect x="{x + indent:.1f}" y="{y:.1f}" width="{width - indent:.1f}" height="{h:.1f}" '
           f'rx="3" fill="{fill}"' + (f' stroke="{RED}" stroke-width="2"' if bad else ' stroke="#aaa"') + '/>',
           f'<text x="{x + indent + PAD:.1f}" y="{y + PAD + FONT - 1:.1f}" class="label"'
           + (' fill="#fff" font-weight="bold"' if bad else "") + f">{tspans}</text></g>"]
    return out, h


def _line(line: Line, y: float, xs: dict[int, float], width: float, chars: int, right: float
          ) -> tuple[list[str], float]:
    """One line of the diagram at y: its SVG and its height."""
    if line.skipped:
        what = f"{line.skipped} step{'s' if line.skipped > 1 else ''} skipped"
        note = "".join(f"; {n}" for n in line.notes)
        return [f'<rect x="{MARGIN}" y="{y + 2:.1f}" width="{right - MARGIN:.1f}" height="{SKIP_H - 4}" '
                f'fill="#f2f2f2"/>',
                f'<text x="{MARGIN + GUTTER - 6}" y="{y + 13:.1f}" text-anchor="end" class="dots">\u22ee</text>',
                f'<text x="{MARGIN + GUTTER + 4}" y="{y + 13:.1f}" class="skip" data-skipped="{line.skipped}">'
                f'{escape(what + note)}</text>'], SKIP_H
    out: list[str] = []
    top = y + (PHASE_H if line.phases else 0)
    h = 0.0
    for cpu, row in line.cells.items():
        svg, bh = _box(row, xs[cpu], top, width, chars)
        out += svg
        h = max(h, bh)
    for cpu, phase in line.phases.items():  # after the boxes, which would hide its underscores
        out.append(f'<text x="{xs[cpu] + 2:.1f}" y="{top - 4:.1f}" class="phase">\u25b8 {escape(phase)}</text>')
    out.append(f'<text x="{MARGIN + GUTTER - 6}" y="{top + PAD + FONT - 1:.1f}" text-anchor="end" '
               f'class="step">{line.steps}</text>')
    return out, top - y + h + 4


def render_svg(d: Diagram) -> str:
    xs, width, chars = _columns(d)
    right = MARGIN + GUTTER + len(d.cpus) * (width + GAP) - GAP
    total_w = right + MARGIN
    body: list[str] = []
    title = wrap(d.title, int((total_w - 2 * MARGIN) / (CW * 1.2)))
    y = MARGIN + 12.0
    for t in title:
        body.append(f'<text x="{MARGIN}" y="{y:.1f}" class="title">{escape(t)}</text>')
        y += 17
    lx = float(MARGIN)
    for kind in d.categories():  # only what is drawn
        w = 18 + len(kind) * CW
        if lx + w > total_w - MARGIN:
            lx, y = float(MARGIN), y + 16
        body.append(f'<g class="legend"><rect x="{lx:.1f}" y="{y - 1:.1f}" width="11" height="11" '
                    f'fill="{COLOURS.get(kind, COLOURS["op"])}" stroke="#aaa"/>'
                    f'<text x="{lx + 15:.1f}" y="{y + 9:.1f}">{escape(kind)}</text></g>')
        lx += w + 14
    y += 34
    body.append(f'<text x="{MARGIN + GUTTER - 6}" y="{y:.1f}" text-anchor="end" class="head">step</text>')
    for cpu, x in xs.items():
        body.append(f'<text x="{x + width / 2:.1f}" y="{y:.1f}" text-anchor="middle" class="cpu">CPU{cpu}</text>')
    top = y + 6
    body.append(f'<line x1="{MARGIN}" y1="{top:.1f}" x2="{right:.1f}" y2="{top:.1f}" stroke="#888"/>')
    y = top + 6
    drawn: list[str] = []
    for line in d.lines():
        svg, h = _line(line, y, xs, width, chars, right)
        drawn += svg
        y += h
    bands = [f'<rect x="{x - 3:.1f}" y="{top:.1f}" width="{width + 6:.1f}" height="{y - top:.1f}" class="band"/>'
             for x in xs.values()]  # a column per CPU, shaded so the eye follows it down
    total_h = int(y + MARGIN)
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{int(total_w)}" height="{total_h}" '
            f'viewBox="0 0 {int(total_w)} {total_h}" font-family="DejaVu Sans Mono, monospace" '
            f'font-size="{FONT}">',
            "<style>.title{font-size:13px;font-weight:bold}.cpu{font-size:13px;font-weight:bold}"
            ".head,.step{fill:#555}.phase{fill:#1f4e8c}"
            ".skip{fill:#666}.dots{fill:#666;font-size:14px;font-weight:bold;font-family:'DejaVu Sans',sans-serif}"
            ".band{fill:#f5f7fa}</style>",
            f'<rect width="{int(total_w)}" height="{total_h}" fill="#ffffff"/>']
    return "\n".join(head + body + bands + drawn + ["</svg>"]) + "\n"


def render_html(d: Diagram, lines: list[str]) -> str:
    """The picture, the same diagram as text, and below them the trace (`lines`)."""
    from .diagram_text import render_text

    text = "\n".join(escape(line) for line in lines)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(d.title)}</title></head>"
            f"<body>{render_svg(d)}<pre>{escape(chr(10).join(render_text(d)))}</pre>"
            f"<pre>{text}</pre></body></html>\n")

