"""The litmus front end against herdtools7's aarch64-ifetch development set (a copy in
tests/data/litmus, since CI has no ../shared), each init and condition form, and malformed input:
one LitmusError line naming the line, never another exception."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fuzzer import litmus as L
from fuzzer.litmus import And, Atom, Instr, Int, LabelRef, LitmusError, Not, Or, Sym, parse, parse_kinds

DATA = Path(__file__).parent / "data" / "litmus" / "aarch64-ifetch"
FILES = sorted(DATA.glob("*/*.litmus"))
IDS = [f.stem for f in FILES]


def by_name(name: str) -> L.LitmusTest:
    return L.parse_file(next(f for f in FILES if f.stem == name))


def test_dev_set_is_complete() -> None:
    assert len(FILES) == 37
    assert {f.parent.name for f in FILES} == {"DIC0-IDC0", "DIC0-IDC1", "DIC1-IDC1"}


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_dev_test_parses_and_round_trips(path: Path) -> None:
    t = L.parse_file(path)
    assert t.arch == "AArch64" and t.name == path.stem and t.path == str(path)
    assert L.parse(L.format(t)) == t
    assert L.format(L.parse(L.format(t))) == L.format(t)


def test_thread_counts() -> None:
    counts = {f.stem: len(L.parse_file(f).threads) for f in FILES}
    assert counts["MP.RF+dmb.st+ctrlisb"] == 2
    assert counts["SM.B+isb"] == 1
    assert counts["WRC-inst+cachesync+dsb.ish"] == 3
    assert counts["dcc3"] == counts["icc3"] == 4
    assert sum(counts.values()) == 1 * 3 + 2 * 30 + 3 * 2 + 4 * 2


def test_headers_follow_the_directory() -> None:
    for f in FILES:
        cache = L.parse_file(f).headers.get("CacheType")
        assert cache == {"DIC0-IDC0": None, "DIC0-IDC1": "IDC", "DIC1-IDC1": "DIC"}[f.parent.name]
    assert by_name("miniJit01").headers == {"Variant": "self"}
    assert by_name("dcc3").headers == {"Stable": "X9"}


def test_spot_checks_mp_rf() -> None:
    t = by_name("MP.RF+dmb.st+ctrlisb")
    x1 = next(e for e in t.init if e.thread == 0 and e.name == "X1")
    assert x1.value == LabelRef(1, "m0")
    assert t.condition.quantifier == "exists"
    assert t.condition.expr == And((Atom(1, "X2", Int(1)), Atom(1, "X9", Int(0))))
    p1 = t.threads[1]
    assert p1.lines[2] == L.Line("l1", "ISB")
    assert p1.lines[-1] == L.Line("l0", "")
    assert [ln.text for ln in t.threads[0].lines] == ["STR W0,[X1]", "DMB ST", "STR W2,[X3]"]


def test_fault_handler_thread_and_spaced_operands() -> None:
    t = by_name("SM-invalid-2")
    assert [th.name for th in t.threads] == ["P0", "P0.F"]
    assert t.threads[1].index == 0 and t.threads[1].suffix == "F"
    assert L.Line(None, "MOV W2, #1") in t.threads[0].lines
    assert t.condition.expr == Atom(0, "X2", Int(42))


def test_init_forms() -> None:
    t = L.parse("""AArch64 T
{ 0:X0=NOP; 0:X1=P1:L0; 0:X2=x; 0:X3=-5; 0:X4=0x10; [y]=P1:L0; z=2;
  0:X5=instr:"B .+12"; ins_t *y; void *1:X1; int 1:X2=3 }
P0 | P1 ;
NOP | L0: ;
exists 0:X0=1
""")
    assert [(e.thread, e.name, e.value, e.ctype) for e in t.init] == [
        (0, "X0", Instr("NOP"), None), (0, "X1", LabelRef(1, "L0"), None),
        (0, "X2", Sym("x"), None), (0, "X3", Int(-5), None), (0, "X4", Int(16), None),
        (None, "y", LabelRef(1, "L0"), None), (None, "z", Int(2), None),
        (0, "X5", Instr("B .+12"), None), (None, "y", None, "ins_t *"),
        (1, "X1", None, "void *"), (1, "X2", Int(3), "int")]
    assert L.parse(L.format(t)) == t


def test_dev_set_init_forms() -> None:
    assert by_name("miniJit01").init[0] == L.InitEntry(None, "x", LabelRef(1, "L0"))
    assert L.InitEntry(None, "z", None, "ins_t *") in by_name("MP.RF+dmb.st+addr-cachesyncisb").init
    assert by_name("coFF+cachesync").init[2].value == Instr("B .+12")


def cond(text: str) -> L.Condition:
    return L.parse(f"AArch64 T\n{{ }}\nP0 ;\nNOP ;\n{text}\n").condition


A, B, C = Atom(0, "X1", Int(1)), Atom(1, "X2", Int(0)), Atom(None, "x", Int(2))


@pytest.mark.parametrize("text, quantifier, expr", [
    ("exists 0:X1=1", "exists", A),
    ("~exists (0:X1=1)", "~exists", A),
    ("~ exists 0:X1=1", "~exists", A),
    ("forall (0:X1=1 \\/ 1:X2=0)", "forall", Or((A, B))),
    ("exists(0:X1=1 /\\ 1:X2=0 /\\ [x]=2)", "exists", And((A, B, C))),
    ("exists 0:X1=1 \\/ 1:X2=0 /\\ x=2", "exists", Or((A, And((B, C))))),
    ("exists 0:X1=1 /\\ 1:X2=0 \\/ x=2", "exists", Or((And((A, B)), C))),
    ("exists (0:X1=1 \\/ 1:X2=0) /\\ x=2", "exists", And((Or((A, B)), C))),
    ("exists ((0:X1=1 /\\ 1:X2=0)) /\\ x=2", "exists", And((And((A, B)), C))),
    ("exists ~0:X1=1 /\\ 1:X2=0", "exists", And((Not(A), B))),
    ("exists ~(0:X1=1 /\\ 1:X2=0)", "exists", Not(And((A, B)))),
    ("exists ~~0:X1=1", "exists", Not(Not(A))),
    ("exists\n  (0:X1=1 /\\\n   1:X2=0)", "exists", And((A, B))),
    ("exists 1:X4=NOP /\\ 1:X5=P0:L1 /\\ 1:X6=x", "exists",
     And((Atom(1, "X4", Instr("NOP")), Atom(1, "X5", LabelRef(0, "L1")), Atom(1, "X6", Sym("x"))))),
])
def test_condition_forms(text: str, quantifier: str, expr: L.Expr) -> None:
    c = cond(text)
    assert (c.quantifier, c.expr) == (quantifier, expr)
    t = L.parse(f"AArch64 T\n{{ }}\nP0 ;\nNOP ;\n{text}\n")
    assert L.parse(L.format(t)) == t


def test_locations_line() -> None:
    t = L.parse("AArch64 T\n{ }\nP0 ;\nNOP ;\nlocations [x; 0:X1;]\nexists 0:X1=1\n")
    assert t.locations == ["x", "0:X1"]
    assert L.parse(L.format(t)) == t


def test_kinds_match_the_files() -> None:
    kinds = L.parse_kinds((DATA / "kinds.txt").read_text())
    assert len(kinds) == 37
    assert set(kinds) == {L.parse_file(f).name for f in FILES}
    assert list(kinds.values()).count("Allowed") == 16
    assert kinds["MP.RF+dmb.st+ctrlisb"] == "Allowed"
    assert kinds["MP.RF+cachesync+ctrlisb"] == "Forbidden"


def test_kinds_tolerates_comments_and_blank_lines() -> None:
    text = "# verdicts\n\nA Allowed  # trailing\n(* herd *) B Required\n\nC Forbidden\n"
    assert L.parse_kinds(text) == {"A": "Allowed", "B": "Required", "C": "Forbidden"}
    with pytest.raises(LitmusError, match=r"^k.txt:2: .*'B Sometimes'"):
        L.parse_kinds("A Allowed\nB Sometimes\n", "k.txt")


GOOD = (DATA / "DIC0-IDC0" / "MP.RF+dmb.st+ctrlisb.litmus").read_text()


@pytest.mark.parametrize("old, new, line, message", [
    ("1:X9=0; }", "1:X9=0;", 4, "missing '}' before the thread table"),
    ("STR W2,[X3]  | l1:", "STR W2,[X3]  | | l1:", 7, "thread row has 3 cells, the header names 2"),
    ("exists", "filter 1:X2=1\nexists", 11, "unsupported construct 'filter'"),
    ("exists", "scopes: (proc 0)\nexists", 11, "unsupported construct 'scopes'"),
    ("exists", "whatever section\nexists", 11, "unknown section 'whatever'"),
    ("exists 1:X2=1 /\\ 1:X9=0", "exists", 11, "empty condition after 'exists'"),
    ("exists 1:X2=1 /\\ 1:X9=0", "exists 1:X2=1 /\\ 1:X9=0\n\n garbage", 13,
     "unexpected 'garbage' after the condition"),
    ("exists 1:X2=1 /\\ 1:X9=0", "exists (1:X2=1", 11, "expected ')'"),
    ("exists", "exist", 11, "unknown quantifier 'exist'"),
    ("exists", "~forall", 11, "unknown quantifier '~forall'"),
    ("0:X2=1;", "0:X2=+;", 3, "bad init entry '0:X2=+'"),
    ("P0           | P1            ;", "Q0 | Q1 ;", 4, "expected a thread header"),
    ("{ 0:X0=NOP;", "(* open { 0:X0=NOP;", 2, "comment '(*' is never closed"),
    ("AArch64 MP.RF+dmb.st+ctrlisb", "AArch64", 1, "expected '<arch> <name>'"),
    ("STR W2,[X3]  | l1: ISB         ;", "STR W2,[X3]  | l1: ISB", 7,
     "thread row does not end with ';'"),
])
def test_malformed(old: str, new: str, line: int, message: str) -> None:
    assert old in GOOD
    with pytest.raises(LitmusError) as err:
        L.parse(GOOD.replace(old, new, 1), "tests/x.litmus")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"tests/x.litmus:{line}: "), text
    assert message in text, text
    assert err.value.line == line


def test_missing_brace_at_end_of_file() -> None:
    with pytest.raises(LitmusError, match=r"^<string>:2: missing '}' closing the init block$"):
        L.parse("AArch64 T\n{ 0:X0=1;\n 0:X1=2;\n")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(LitmusError, match="cannot read"):
        L.parse_file(tmp_path / "absent.litmus")


def mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        if not chars:
            break
        i, j = rng.randrange(len(chars)), rng.randrange(len(chars))
        op = rng.choice(("delete", "duplicate", "swap", "insert"))
        if op == "delete":
            del chars[i]
        elif op == "duplicate":
            chars.insert(i, chars[i])
        elif op == "swap":
            chars[i], chars[j] = chars[j], chars[i]
        else:
            chars.insert(i, rng.choice("{};|:=()*~/\\[]\"P0 \n"))
    return "".join(chars)


def test_random_mutations_raise_only_litmus_error() -> None:
    rng = random.Random(20260821)
    texts = [f.read_text() for f in FILES]
    outcomes = {"parsed": 0, "error": 0}
    for _ in range(500):
        text = mutate(rng, rng.choice(texts))
        try:
            t = L.parse(text, "m.litmus")
        except LitmusError as e:
            assert "\n" not in str(e) and str(e).startswith("m.litmus:")
            outcomes["error"] += 1
        else:
            assert L.parse(L.format(t)) == t
            outcomes["parsed"] += 1
    assert outcomes["parsed"] and outcomes["error"]


def test_label_values_in_herds_other_spelling_and_header_values_of_several_words():
    t = parse('AArch64 t\nCacheType=IDC DIC\n{ 0:X1=label:"P1:L0"; }\n P0 | P1 ;\n NOP | L0: NOP ;\n'
              'exists 0:X1=1\n')
    assert t.headers == {"CacheType": "IDC DIC"}
    assert t.init[0].value == LabelRef(1, "L0")


def test_kinds_files_as_the_catalogue_writes_them():
    kinds = parse_kinds("a Allow\nb Forbid\nc Require\nd Allowed\nd Allowed\ne\n", "kinds.txt")
    assert kinds == {"a": "Allowed", "b": "Forbidden", "c": "Required", "d": "Allowed"}
    with pytest.raises(LitmusError, match="kinds.txt:2: test 'a' has two verdicts"):
        parse_kinds("a Allowed\na Forbidden\n", "kinds.txt")
