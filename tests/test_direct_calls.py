"""The engine calls Unicorn through a small C extension (fuzzer/arch/_unicorn_calls.c) and falls
back to ctypes without it. Both paths must give the same runs, and the install must build the
extension (the packaging lets a failed compile pass, so only this test notices it)."""

import os
import subprocess
import sys

from fuzzer.arch import hotpath

# Runs every variant on random schedules and prints a digest of verdicts, traces and coverage.
# It first checks which path it is on, and that int3 traps (the native interrupt hook's work)
# and site stops occurred.
DIGEST = """
import hashlib, random, sys
from fuzzer.arch import hotpath
from fuzzer.machine import Config, Machine
from fuzzer.protocols import registry
assert (hotpath.DIRECT is not None) == (sys.argv[1] == "native"), "wrong call path"
h = hashlib.sha256()
traps = 0
for name, cls in sorted(registry().items()):
    for variant in cls.variants:
        m = Machine(cls, variant, Config(cpus=4))
        rng = random.Random(len(name) + len(variant))
        for i in range(40):
            r = m.run(rng.randbytes(rng.randint(0, 256)), trace=True, coverage=True)
            traps += sum("int3 at" in line for line in r.trace)
            h.update(repr((r.steps, r.completed, r.finding and r.finding.signature, r.trace,
                           r.features)).encode())
assert traps > 100, traps
print(h.hexdigest())
"""


def _digest(path: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PATCHFUZZ_NO_NATIVE"}
    if path == "ctypes":
        env["PATCHFUZZ_NO_NATIVE"] = "1"
    out = subprocess.run([sys.executable, "-c", DIGEST, path], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_install_built_the_direct_calls():
    assert hotpath.DIRECT is not None, "fuzzer/arch/_unicorn_calls.c was not compiled"


def test_direct_calls_and_ctypes_give_the_same_runs():
    assert _digest("native") == _digest("ctypes")
