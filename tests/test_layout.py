"""The engine's layout: small modules, and an ISA's names only in its own files."""

import re
from pathlib import Path

import fuzzer

ROOT = Path(fuzzer.__file__).resolve().parent
MAX_LINES = 520
# x86 registers, opcodes and trap numbers, as code would name them
X86_NAMES = re.compile(r"UC_X86_|\b(?:rsp|rip|eflags|EFLAGS_IF)\b|\bintno\s*==\s*3\b|0xF4\b|\b0xCC\b|\bhlt\b",
                       re.IGNORECASE)


def _modules():
    return list(ROOT.rglob("*.py"))


def test_no_module_over_about_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_x86_names_only_in_the_x86_files():
    allowed = (ROOT / "arch", ROOT / "protocols" / "x86")
    leaks = {}
    for p in _modules():
        if any(a in p.parents for a in allowed):
            continue
        hits = [ln for ln in p.read_text().splitlines() if X86_NAMES.search(ln)]
        if hits:
            leaks[str(p.relative_to(ROOT))] = hits
    assert not leaks, leaks
