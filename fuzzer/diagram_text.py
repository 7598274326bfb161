"""The race diagram as plain text, laid out the way kernel changelogs draw races.

    step  CPU0                              | CPU3
    ----  ----------------------------------+----------------------------------
       6  sync_cores(): IPI to cpu1,cpu2,...|
     ...  ... 2 steps skipped               | ...
       9                                    | takes IPI: sync_core (serializing)

One column per CPU, time going down, step numbers on the left; labels wrap inside their
column (nothing is cut); a CPU's protocol step is a `-- ... --` line in its column where it
changes; skipped stretches are `...` lines; the violation, marked `***`, is the last line.
ASCII only, so it can be pasted into a commit message.
"""

from __future__ import annotations

from .diagram import Diagram, Line, wrap

WIDTH = 100  # characters: wide enough for two columns of a trace, narrow enough for a changelog
MIN_COLUMN = 20


def _cell_lines(line: Line, cpu: int, width: int) -> tuple[list[str], list[str]]:
    """A CPU's cell on a line: the protocol step it enters there, and its row."""
    phase = wrap(f"-- {line.phases[cpu]} --", width) if cpu in line.phases else []
    row = line.cells.get(cpu)
    if row is None:
        return phase, []
    text = row.label
    if row.category == "violation":  # no colour in text: the kernel's marker
        text = f"[{row.ctx}] {row.text}" if row.ctx not in ("thread", "") else row.text
    return phase, wrap(text, width)


def render_text(d: Diagram, width: int = WIDTH) -> list[str]:
    """The diagram as lines of at most about `width` characters (a column is never narrower
    than MIN_COLUMN)."""
    lines = d.lines()
    gutter = max([len(line.steps) for line in lines] + [4])
    n = max(len(d.cpus), 1)
    longest = max([len(text) for line in lines for cpu in d.cpus
                   for part in _cell_lines(line, cpu, 10 ** 6) for text in part] + [MIN_COLUMN])
    col = max(MIN_COLUMN, min(longest, (width - gutter - 2 - 3 * (n - 1)) // n))

    def row(left: str, cells: list[str], sep: str = " | ") -> str:
        return (f"{left:>{gutter}}  " + sep.join(c.ljust(col) for c in cells)).rstrip()

    out = [*wrap(d.title, width), "",
           row("step", [f"CPU{cpu}" for cpu in d.cpus]),
           row("-" * gutter, ["-" * col for _ in d.cpus], "-+-")]
    for line in lines:
        if line.skipped:
            what = f"... {line.skipped} step{'s' if line.skipped > 1 else ''} skipped" \
                + "".join(f"; {note}" for note in line.notes)
            first = wrap(what, col)
            for i, text in enumerate(first):
                out.append(row("..." if i == 0 else "", [text] + ["..." if i == 0 else ""] * (n - 1)))
            continue
        parts = [_cell_lines(line, cpu, col) for cpu in d.cpus]
        above = max(len(phase) for phase, _ in parts)  # rows start level, under any phase lines
        cells = [[""] * (above - len(phase)) + phase + text for phase, text in parts]
        for i in range(max(len(c) for c in cells)):
            out.append(row(line.steps if i == above else "", [c[i] if i < len(c) else "" for c in cells]))
    return out
