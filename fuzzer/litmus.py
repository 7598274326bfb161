"""Front end for herd7 litmus tests: the subset of the format that herdtools7's
`catalogue/aarch64-ifetch` uses, parsed into plain values and printed back.

Nothing here knows an ISA. Instructions stay text for the ISA model to assemble, and init and
condition values stay typed tokens (`Int`, `Sym`, `Instr`, `LabelRef`). Every malformed input
raises `LitmusError`, one line naming the file and line, since the `litmus` command will show
it to users who are debugging a test file, not this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

QUANTIFIERS = ("exists", "~exists", "forall")
VERDICTS = ("Allowed", "Forbidden", "Required")
# herd7 sections outside the catalogue's subset: named in the error rather than misread as rows.
UNSUPPORTED = ("filter", "scopes", "levels", "regions", "types", "final", "observed", "cases")
MAX_DEPTH = 100  # mutated inputs must not reach Python's recursion limit

_ID = r"[A-Za-z_][\w]*"
_VALUE = rf'instr:"[^"\n]*"|label:"P\d+:{_ID}"|P\d+:{_ID}|-?(?:0[xX][0-9a-fA-F]+|\d+)|{_ID}'
_LHS = rf"(?:(\d+):({_ID})|\[\s*({_ID})\s*\]|({_ID}))"
_ASSIGN_RE = re.compile(rf"{_LHS}\s*=\s*({_VALUE})")
_DECL_RE = re.compile(rf"({_ID})(\s*\*\s*|\s+){_LHS}(?:\s*=\s*({_VALUE}))?")
_HEADER_RE = re.compile(rf"({_ID})\s*=\s*(\S(?:.*\S)?)")  # a value may be words: CacheType=IDC DIC
_THREAD_RE = re.compile(r"P(\d+)(?:\.(\w+))?")
_LABEL_RE = re.compile(rf"({_ID})\s*:\s*(.*)")
_UPPER_RE = re.compile(r"[A-Z][A-Z0-9_.]*")
_TOKEN_RE = re.compile(
    rf"(?P<ws>\s+)|(?P<and>/\\)|(?P<or>\\/)|(?P<not>~)|(?P<lp>\()|(?P<rp>\))"
    rf"|(?P<atom>{_LHS}\s*=\s*(?:{_VALUE}))|(?P<word>[^\s()~\[]+|\[)")


class LitmusError(Exception):
    """A malformed or unsupported litmus test: `path:line: what`, always one line."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path, self.line, self.message = path, line, " ".join(message.split())
        super().__init__(f"{path}:{line}: {self.message}")


@dataclass(frozen=True)
class Int:
    value: int


@dataclass(frozen=True)
class Sym:
    """A memory location's name, standing for its address in a register init or a condition."""
    name: str


@dataclass(frozen=True)
class Instr:
    """An instruction as a value (`NOP`, `instr:"B .+12"`), left for the ISA model to encode."""
    text: str


@dataclass(frozen=True)
class LabelRef:
    """`P1:L0`: the address of label L0 in thread P1's code."""
    thread: int
    label: str


Value = Int | Sym | Instr | LabelRef


def _value(tok: str) -> Value:
    # the regexes only hand over tokens of _VALUE's shape, so this cannot fail
    if tok.startswith('instr:"'):
        return Instr(tok[7:-1])
    if tok.startswith('label:"'):  # herd's other spelling of a label's address
        tok = tok[7:-1]
    m = re.fullmatch(rf"P(\d+):({_ID})", tok)
    if m:
        return LabelRef(int(m[1]), m[2])
    if re.fullmatch(r"-?(?:0[xX][0-9a-fA-F]+|\d+)", tok):
        return Int(int(tok, 0) if not re.fullmatch(r"-?0\d+", tok) else int(tok, 10))
    # the catalogue's convention: instruction names are upper case, locations lower case
    return Instr(tok) if _UPPER_RE.fullmatch(tok) else Sym(tok)


def _first_word(s: str) -> str:
    """The section keyword a line starts with, `~ exists` counting as `~exists`."""
    m = re.match(r"~?\s*[^\s(\[:]*", s)
    return m[0].replace(" ", "") if m else ""


@dataclass
class InitEntry:
    """`0:X0=NOP`, `[x]=P1:L0`, or a declaration `ins_t *z` (ctype set, value possibly None)."""
    thread: int | None  # None: a memory location
    name: str
    value: Value | None
    ctype: str | None = None  # "ins_t *", "void *", "int"


@dataclass
class Line:
    label: str | None
    text: str  # "" for a bare label


@dataclass
class Thread:
    index: int
    lines: list[Line]
    suffix: str = ""  # herd's `P0.F` (P0's fault handler) has index 0 and suffix "F"

    @property
    def name(self) -> str:
        return f"P{self.index}" + (f".{self.suffix}" if self.suffix else "")


@dataclass(frozen=True)
class Atom:
    thread: int | None  # None: a memory location
    name: str
    value: Value


@dataclass(frozen=True)
class Not:
    arg: Expr


@dataclass(frozen=True)
class And:
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    args: tuple[Expr, ...]


Expr = Atom | Not | And | Or


@dataclass
class Condition:
    quantifier: str  # one of QUANTIFIERS
    expr: Expr


@dataclass
class LitmusTest:
    arch: str
    name: str
    headers: dict[str, str]
    init: list[InitEntry]
    threads: list[Thread]
    condition: Condition
    locations: list[str] | None = None
    path: str = field(default="<string>", compare=False)


def _strip_comments(text: str, path: str) -> str:
    """Blank out (nested) `(* *)` comments, keeping newlines so line numbers survive."""
    out, depth, i, start, n = [], 0, 0, 0, len(text)
    in_string = False
    while i < n:
        c, two = text[i], text[i:i + 2]
        if depth == 0 and in_string:
            in_string = c not in '"\n'
        elif two == "(*":
            depth, start = depth + 1, (i if depth == 0 else start)
            out.append("  ")
            i += 2
            continue
        elif depth and two == "*)":
            depth -= 1
            out.append("  ")
            i += 2
            continue
        elif depth == 0 and c == '"':
            in_string = True
        out.append(c if depth == 0 or c == "\n" else " ")
        i += 1
    if depth:
        raise LitmusError(path, text.count("\n", 0, start) + 1, "comment '(*' is never closed")
    return "".join(out)


class _Parser:
    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.lines = _strip_comments(text, path).split("\n")
        self.i = 0  # index of the next line to read

    def error(self, lineno: int, message: str) -> LitmusError:
        return LitmusError(self.path, lineno, message)

    def next_line(self) -> tuple[int, str] | None:
        """The next non-blank line, stripped, with its 1-based number."""
        while self.i < len(self.lines):
            self.i += 1
            s = self.lines[self.i - 1].strip()
            if s:
                return self.i, s
        return None

    def parse(self) -> LitmusTest:
        first = self.next_line()
        if first is None:
            raise self.error(1, "empty file: expected '<arch> <name>'")
        lineno, s = first
        words = s.split()
        if len(words) != 2:
            raise self.error(lineno, f"expected '<arch> <name>', found {s!r}")
        arch, name = words
        headers: dict[str, str] = {}
        while True:
            nxt = self.next_line()
            if nxt is None:
                raise self.error(len(self.lines), "missing init block '{'")
            lineno, s = nxt
            if s.startswith("{"):
                break
            m = _HEADER_RE.fullmatch(s)
            if not m:
                raise self.error(lineno, f"expected a 'Key=value' header or '{{', found {s!r}")
            if m[1] in headers:
                raise self.error(lineno, f"duplicate header {m[1]!r}")
            headers[m[1]] = m[2]
        init = self.init_block(lineno, s[1:])
        threads = self.table()
        locations, condition = self.tail()
        return LitmusTest(arch, name, headers, init, threads, condition, locations, self.path)

    def init_block(self, open_line: int, rest: str) -> list[InitEntry]:
        chunks: list[str] = []  # the block's body, one piece a line
        lineno = open_line
        while "}" not in rest:
            chunks.append(rest)
            if self.i >= len(self.lines):
                raise self.error(open_line, "missing '}' closing the init block")
            lineno, rest = self.i + 1, self.lines[self.i]
            self.i += 1
            if re.match(r"\s*P\d+(\.\w+)?\s*[|;]", rest):
                raise self.error(lineno, f"missing '}}' before the thread table (init block"
                                         f" opened at line {open_line})")
        body, after = rest.split("}", 1)
        chunks.append(body)
        if after.strip():
            raise self.error(lineno, f"unexpected {after.strip()!r} after '}}'")
        # an entry may span lines; errors name the line it starts on
        body = "\n".join(chunks)
        entries, pos = [], 0
        for piece in body.split(";"):
            if piece.strip():
                lead = len(piece) - len(piece.lstrip())
                ln = open_line + body.count("\n", 0, pos + lead)
                entries.append(self.init_entry(ln, piece.strip()))
            pos += len(piece) + 1
        return entries

    def init_entry(self, lineno: int, s: str) -> InitEntry:
        m = _ASSIGN_RE.fullmatch(s)
        if m:
            thread, name = self.lhs(m)
            return InitEntry(thread, name, _value(m[5]))
        m = _DECL_RE.fullmatch(s)
        if m:
            thread, name = self.lhs(m, 2)
            ctype = m[1] + (" *" if "*" in m[2] else "")
            return InitEntry(thread, name, _value(m[7]) if m[7] else None, ctype)
        raise self.error(lineno, f"bad init entry {s!r}")

    @staticmethod
    def lhs(m: re.Match[str], off: int = 0) -> tuple[int | None, str]:
        if m[1 + off] is not None:
            return int(m[1 + off]), m[2 + off]
        return None, m[3 + off] or m[4 + off]

    def table(self) -> list[Thread]:
        nxt = self.next_line()
        if nxt is None:
            raise self.error(len(self.lines), "missing thread table after the init block")
        lineno, s = nxt
        cells = [c.strip() for c in s[:-1].split("|")] if s.endswith(";") else []
        matches = [_THREAD_RE.fullmatch(c) for c in cells]
        if not cells or not all(matches):
            raise self.error(lineno, f"expected a thread header like 'P0 | P1 ;', found {s!r}")
        threads = [Thread(int(m[1]), [], m[2] or "") for m in matches if m]
        if len({t.name for t in threads}) != len(threads):
            raise self.error(lineno, "a thread is named twice in the table header")
        while self.i < len(self.lines):
            lineno, s = self.i + 1, self.lines[self.i].strip()
            if not s:
                self.i += 1
                continue
            word = _first_word(s)  # a row ends with ';', and no keyword starts one
            if word in QUANTIFIERS + UNSUPPORTED + ("locations",) or not s.endswith(";"):
                break
            self.i += 1
            row = s[:-1].split("|")
            if len(row) != len(threads):
                raise self.error(lineno, f"thread row has {len(row)} cells, the header names "
                                         f"{len(threads)} threads")
            for t, cell in zip(threads, row):
                cell = cell.strip()
                if not cell:
                    continue
                lm = _LABEL_RE.fullmatch(cell)
                t.lines.append(Line(lm[1], lm[2].strip()) if lm else Line(None, cell))
        return threads

    def tail(self) -> tuple[list[str] | None, Condition]:
        locations: list[str] | None = None
        while True:
            nxt = self.next_line()
            if nxt is None:
                raise self.error(len(self.lines), "missing final condition")
            lineno, s = nxt
            word = _first_word(s)
            if word == "locations" and locations is None:
                m = re.fullmatch(r"locations\s*\[([^\]]*)\]", s)
                if not m:
                    raise self.error(lineno, f"bad locations line {s!r}")
                locations = [x.strip() for x in m[1].split(";") if x.strip()]
                if not all(re.fullmatch(rf"(?:\d+:)?{_ID}|\[{_ID}\]", x) for x in locations):
                    raise self.error(lineno, f"bad locations line {s!r}")
                continue
            if word in UNSUPPORTED:
                raise self.error(lineno, f"unsupported construct {word!r}")
            if word in QUANTIFIERS:
                return locations, self.condition(lineno)
            if word == "locations":
                raise self.error(lineno, "second 'locations' line")
            rest = s[len(word):].lstrip() if s.startswith(word) else ""
            if re.fullmatch(r"~?[A-Za-z_]\w*", word) and (rest.startswith("(")
                                                          or _ASSIGN_RE.match(rest)):
                raise self.error(lineno, f"unknown quantifier {word!r}")
            if "|" in s:
                raise self.error(lineno, "thread row does not end with ';'")
            raise self.error(lineno, f"unknown section {word or s!r}")

    def condition(self, first_line: int) -> Condition:
        text = "\n".join(self.lines[first_line - 1:])
        toks: list[tuple[str, str, int]] = []  # (kind, text, line)
        pos = 0
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            assert m is not None  # the 'word' alternative matches any non-blank character
            if m.lastgroup != "ws":
                toks.append((m.lastgroup or "", m[0], first_line + text.count("\n", 0, pos)))
            pos = m.end()
        if toks[0][0] == "not" and len(toks) > 1:  # `~exists`, perhaps written `~ exists`
            toks[:2] = [("word", "~" + toks[1][1], toks[0][2])]
        quantifier = toks[0][1]
        if quantifier not in QUANTIFIERS:
            raise self.error(first_line, f"unknown quantifier {quantifier!r}")
        if len(toks) == 1:
            raise self.error(first_line, f"empty condition after {quantifier!r}")
        self.toks, self.pos = toks, 1
        expr = self.disjunction(0)
        if self.pos < len(toks):
            _, t, ln = toks[self.pos]
            raise self.error(ln, f"unexpected {t!r} after the condition")
        return Condition(quantifier, expr)

    def peek(self) -> tuple[str, str, int]:
        if self.pos < len(self.toks):
            return self.toks[self.pos]
        return ("end", "end of file", self.toks[-1][2])

    def disjunction(self, depth: int, op: str = "or") -> Expr:
        # `/\` binds tighter than `\/`, and a chain of one operator is one n-ary node
        sub = (lambda: self.disjunction(depth, "and")) if op == "or" else (
            lambda: self.unary(depth))
        args = [sub()]
        while self.peek()[0] == op:
            self.pos += 1
            args.append(sub())
        return args[0] if len(args) == 1 else (Or if op == "or" else And)(tuple(args))

    def unary(self, depth: int) -> Expr:
        kind, text, ln = self.peek()
        if depth > MAX_DEPTH:
            raise self.error(ln, "condition nested too deeply")
        self.pos += 1
        if kind == "not":
            return Not(self.unary(depth + 1))
        if kind == "lp":
            e = self.disjunction(depth + 1)
            if self.peek()[0] != "rp":
                raise self.error(self.peek()[2], f"expected ')', found {self.peek()[1]!r}")
            self.pos += 1
            return e
        if kind == "atom":
            m = _ASSIGN_RE.fullmatch(text)
            assert m is not None
            thread, name = self.lhs(m)
            return Atom(thread, name, _value(m[5]))
        raise self.error(ln, f"expected a condition atom like '0:X1=1', found {text!r}")


def parse(text: str, path: str = "<string>") -> LitmusTest:
    """The test in `text`; `path` only names the file in errors and in the result."""
    return _Parser(text, path).parse()


def parse_file(path: str | Path) -> LitmusTest:
    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LitmusError(p, 0, f"cannot read: {e}") from None
    return parse(text, p)


# herdtools7's kinds files spell verdicts both ways (tests/kinds.txt has "Allow" and "Allowed")
_VERDICT_SPELLINGS = {**{v: v for v in VERDICTS}, "Allow": "Allowed", "Forbid": "Forbidden",
                      "Require": "Required"}


def parse_kinds(text: str, path: str = "<string>") -> dict[str, str]:
    """herdtools7's kinds.txt: `name Allowed|Forbidden|Required` a line (or Allow, Forbid,
    Require); a test listed twice with the same verdict is one entry, one named with no
    verdict has none."""
    kinds: dict[str, str] = {}
    for lineno, line in enumerate(_strip_comments(text, path).split("\n"), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) == 1:  # a test named with no verdict (the catalogue has one): none to compare
            continue
        verdict = _VERDICT_SPELLINGS.get(words[1]) if len(words) == 2 else None
        if verdict is None:
            raise LitmusError(path, lineno, f"expected '<name> Allowed|Forbidden|Required', "
                                            f"found {line.strip()!r}")
        if kinds.get(words[0], verdict) != verdict:
            raise LitmusError(path, lineno, f"test {words[0]!r} has two verdicts")
        kinds[words[0]] = verdict
    return kinds


# the printer lives in its own module; `format` stays importable from here
from .litmus_print import format  # noqa: E402, F401, A001 - re-exported; imports this module's types
