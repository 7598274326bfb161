"""The printer of herd7 litmus tests (`format`): `parse(format(t)) == t` for what `litmus.parse`
reads."""

from __future__ import annotations

from .litmus import _UPPER_RE, And, Atom, Expr, InitEntry, Instr, Int, LabelRef, LitmusTest, Not, Value


def _format_value(v: Value) -> str:
    if isinstance(v, Int):
        return str(v.value)
    if isinstance(v, LabelRef):
        return f"P{v.thread}:{v.label}"
    if isinstance(v, Instr):
        return v.text if _UPPER_RE.fullmatch(v.text) else f'instr:"{v.text}"'
    return v.name


def _target(thread: int | None, name: str, bracket: bool = True) -> str:
    if thread is None:
        return f"[{name}]" if bracket else name
    return f"{thread}:{name}"


def _format_expr(e: Expr, top: bool = False) -> str:
    if isinstance(e, Atom):
        return f"{_target(e.thread, e.name)}={_format_value(e.value)}"
    if isinstance(e, Not):
        return "~" + _format_expr(e.arg)
    op = r" /\ " if isinstance(e, And) else r" \/ "
    # compound operands come back parenthesised, so the author's nesting survives the trip
    inner = op.join(_format_expr(a) for a in e.args)
    return inner if top else f"({inner})"


def _format_entry(e: InitEntry) -> str:
    target = _target(e.thread, e.name)
    if e.ctype is not None:
        space = "" if e.ctype.endswith("*") else " "
        decl = e.ctype + space + _target(e.thread, e.name, False)
        return decl if e.value is None else f"{decl}={_format_value(e.value)}"
    assert e.value is not None
    return f"{target}={_format_value(e.value)}"


def format(test: LitmusTest) -> str:  # noqa: A001 - the module's printer, as in the brief
    """Litmus text for `test`, with aligned columns; `parse(format(t)) == t`."""
    out = [f"{test.arch} {test.name}"]
    out += [f"{k}={v}" for k, v in test.headers.items()]
    out.append("{")
    group: list[str] = []
    for i, e in enumerate(test.init):
        group.append(_format_entry(e) + ";")
        if i + 1 == len(test.init) or test.init[i + 1].thread != e.thread:
            out.append(" " + " ".join(group))
            group = []
    out.append("}")
    cols = []
    for t in test.threads:
        lw = max((len(ln.label) + 2 for ln in t.lines if ln.label), default=0)
        cols.append([t.name] + [(f"{ln.label}:" if ln.label else "").ljust(lw) + ln.text
                                for ln in t.lines])
    height = max(len(c) for c in cols)
    widths = [max(len(s) for s in c) for c in cols]
    for r in range(height):
        cells = [(c[r] if r < len(c) else "").ljust(w) for c, w in zip(cols, widths)]
        out.append(" " + " | ".join(cells) + " ;")
    if test.locations is not None:
        out.append("locations [" + " ".join(x + ";" for x in test.locations) + "]")
    c = test.condition
    out.append(f"{c.quantifier} ({_format_expr(c.expr, top=True)})")
    return "\n".join(out) + "\n"
