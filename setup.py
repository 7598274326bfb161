"""Only the optional C extension lives here; everything else is in pyproject.toml.

The engine calls Unicorn through `fuzzer/arch/_unicorn_calls.c` when it is built and through
ctypes otherwise (same results, about 10 % slower), so a failed compile does not fail the
install."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fuzzer.arch._unicorn_calls", ["fuzzer/arch/_unicorn_calls.c"],
                             optional=True)])
