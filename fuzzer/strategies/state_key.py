"""Canonical keys of machine states, for exhaustive search's state caching.

A key encodes everything that decides the future of a run, as the machine's public view
states it (`Machine.state_view()`: each part and record lists its own state, every field unless
it says why not), plus what only this encoder can read: each frame's coroutine, exactly, and
the CPUs' abstract registers.

* Coroutines: code position (`f_lasti`) plus every slot of the generator's frame (bound locals,
  closure cells and the value stack: for-loop iterators, the sub-generator of a `yield from`),
  read through `gc.get_referents`, which walks a frame as the collector does. That is the
  coroutine's state itself, not a history that stands in for it.
* Registers: a code frame's future depends on its PC (kept in `Frame.pc`), and, in the
  generated image, on SP, the IRQ flag and the stack above SP (return addresses) only, when
  the architecture says so for the image (`Arch.register_abstractable`); else states with code
  in flight are not cached.

Objects are numbered in first-visit order, so sharing is part of the key (the same SyncCores op
pending on two CPUs, a lock owner that is a frame). A value the encoder does not know leaves
that state uncached (`Opaque`: sound, only slower).
"""

from __future__ import annotations

import gc
import hashlib
import marshal
import types
from collections import deque

from ..machine import Cpu, Frame, Machine, SiteState
from ..machine.part import Part
from ..ops import NotMine
from ..protocol import K, Protocol


class Opaque(Exception):
    """The state holds something the encoder cannot canonicalize: do not cache it."""

_PRIMITIVE = (int, str, bytes, bool, float, type(None))
_UNSET = object()  # an empty __slots__ entry, distinct from None
# id -> (name, code): holding the code object keeps its id from being reused by another
_code_names: dict[int, tuple[str, types.CodeType]] = {}
_type_slots: dict[type, tuple[str, ...]] = {}


def _code_name(code: types.CodeType) -> str:
    hit = _code_names.get(id(code))
    if hit is None:
        hit = _code_names[id(code)] = (f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}", code)
    return hit[0]


def _slots_of(t: type) -> tuple[str, ...]:
    slots = _type_slots.get(t)
    if slots is None:
        names = []
        for klass in reversed(t.__mro__):
            own = getattr(klass, "__slots__", ())
            names.extend([own] if isinstance(own, str) else own)
        slots = _type_slots[t] = tuple(n for n in names if n not in ("__dict__", "__weakref__"))
    return slots


class StateKey:
    """One canonical encoding of a machine state (see the module docstring for what is in it)."""

    __slots__ = ("m", "regs_ok", "memo")

    def __init__(self, machine: Machine, regs_ok: bool):
        self.m = machine
        self.regs_ok = regs_ok
        self.memo: dict[int, tuple[int, object]] = {}

    def key(self) -> bytes:
        m = self.m
        view = m.state_view()
        parts = [view["run"], self.val(view["memory"]), self.val(view["sites"]), self.val(view["protocol"])]
        parts.extend(self.cpu(c, st) for c, st in zip(m.cpus, view["cpus"]))
        # locks last: their owners and waiters are frames already numbered above
        parts.append(self.val(view["sync"]))
        return hashlib.blake2b(marshal.dumps(tuple(parts), 2), digest_size=16).digest()

    def cpu(self, c: Cpu, state: dict) -> tuple:
        regs = self.registers(c, None) if c.code_frame is not None else None
        return (tuple((name, self.val(v)) for name, v in state.items()), regs)

    def frame(self, f: Frame, c: Cpu) -> tuple:
        ref = self._ref(f)
        if ref is not None:
            return ref
        n = len(self.memo) - 1
        out = []
        for name, v in f.state().items():
            if name == "gen":
                out.append(self.gen(v))
            elif name == "saved_ctx":
                out.append(None if v is None else self.registers(c, v))
            else:
                out.append(self.val(v))
        return ("F", n, *out)

    def registers(self, c: Cpu, ctx) -> tuple:
        """The CPU's abstract registers (SP, the IRQ flag, the live stack: all the generated
        image's code depends on, when the architecture says so for this image)."""
        if not self.regs_ok:
            raise Opaque("registers of an image not checked for abstraction")
        regs = c.hw.abstract_registers(ctx)
        if regs is None:
            raise Opaque("stack pointer outside the known stacks")
        return regs

    def _ref(self, obj) -> tuple | None:
        """('@', n) if `obj` was encoded before; else number it and return None. The memo keeps
        `obj` alive: an id reused by a temporary would otherwise alias two objects."""
        hit = self.memo.get(id(obj))
        if hit is not None:
            return ("@", hit[0])
        self.memo[id(obj)] = (len(self.memo), obj)
        return None

    def gen(self, g) -> tuple:
        """A suspended coroutine's exact state: its code position and every slot of its frame
        (bound locals, closure cells, and the value stack: for-loop iterators, the generator of
        a `yield from`), read with gc.get_referents, which walks the frame as the collector does."""
        if type(g) is not types.GeneratorType:
            raise Opaque(f"coroutine of type {type(g).__name__}")
        ref = self._ref(g)
        if ref is not None:
            return ref
        fr = g.gi_frame
        if fr is None:
            return ("g", _code_name(g.gi_code), "done")
        # Unbound locals are NULL slots, which the walk skips: the bound names pin the layout.
        bound = tuple(sorted(fr.f_locals))
        items = gc.get_referents(g)
        code = g.gi_code
        # the walk yields code, name, qualname, frame object, [locals dict], function, code,
        # then the frame's slots
        for i in range(len(items) - 1):
            x = items[i]
            if type(x) is types.FunctionType and x.__code__ is code and items[i + 1] is code:
                slots = items[i + 2:]
                break
        else:
            raise Opaque("unexpected generator layout")
        return ("g", _code_name(code), fr.f_lasti, bound, tuple(self.val(x) for x in slots))

    def val(self, v) -> object:
        """Canonical, marshal-able encoding of a value held in machine or coroutine state.
        Primitives stand for themselves; everything else is a tuple starting with a tag."""
        t = type(v)
        if t in _PRIMITIVE:
            return v
        if t is tuple:
            prim = _PRIMITIVE
            for x in v:
                if type(x) not in prim:
                    return ("t", *(self.val(x) for x in v))
            return ("t", *v)  # the common case: registers, stack bytes, versions
        if t is bytearray:
            return ("ba", bytes(v))
        if t is SiteState:
            return ("S", v.name)
        if t is K:
            return ("K", v.cpu)
        if t is Cpu:
            return ("C", v.idx)
        if isinstance(v, Machine):
            return ("M",)
        if isinstance(v, Part):
            return ("part", type(v).__name__)  # its state is in the machine's state view
        if isinstance(v, Protocol):
            return ("P",)  # its attributes are part of the key once, at the top
        if t is NotMine:
            return ("NOT_MINE",)
        if v is _UNSET:
            return ("unset",)
        if t is types.GeneratorType:
            return self.gen(v)
        if t is range:
            return ("range", v.start, v.stop, v.step)
        if t is frozenset:
            return ("fs", *sorted((self.val(x) for x in v), key=_order))
        if t is Frame:
            # usually numbered on its CPU's stack already; else encoded here in full
            return self.frame(v, self.m.cpus[v.k.cpu])
        if t is types.CellType:
            ref = self._ref(v)
            if ref is not None:
                return ref
            return ("cell", self.val(v.cell_contents) if _cell_full(v) else ("empty",))
        if t.__name__.endswith("iterator") and t.__module__ == "builtins":
            # a for loop's position: __reduce__ gives (iter, (remaining or whole,)[, index])
            # without advancing the iterator
            ref = self._ref(v)
            if ref is not None:
                return ref
            red = v.__reduce__()
            self._ref(red)  # keep the reduced copies alive while ids are compared
            return ("it", t.__name__, self.val(red[1]), self.val(red[2]) if len(red) > 2 else None)
        if t is types.FunctionType:
            return ("f", _code_name(v.__code__), self.val(v.__closure__), self.val(v.__defaults__),
                    self.val(v.__kwdefaults__))
        if t is types.MethodType:
            return ("bm", _code_name(v.__func__.__code__), self.val(v.__self__))
        # mutable containers and objects: numbered, so sharing is part of the key
        ref = self._ref(v)
        if ref is not None:
            return ref
        n = len(self.memo) - 1
        if t is list or t is deque:
            return ("l", n, *(self.val(x) for x in v))
        if t is set:
            return ("s", n, *sorted((self.val(x) for x in v), key=_order))
        if t is dict:
            return ("d", n, *((self.val(k), self.val(x)) for k, x in v.items()))
        if t is types.SimpleNamespace:
            return ("ns", n, *((k, self.val(x)) for k, x in sorted(vars(v).items())))
        if not t.__module__.startswith("fuzzer."):
            raise Opaque(f"value of type {t.__module__}.{t.__qualname__}")
        slots = tuple((s, self.val(getattr(v, s, _UNSET))) for s in _slots_of(t))
        attrs = tuple((k, self.val(x)) for k, x in sorted(vars(v).items())) if hasattr(v, "__dict__") else ()
        return ("o", t.__qualname__, n, slots, attrs)


def _cell_full(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - probing an empty closure cell
    except ValueError:
        return False
    return True


def _order(enc) -> bytes:
    return marshal.dumps(enc, 2)


def generators_are_readable() -> bool:
    """Does `StateKey.gen` see a suspended generator's locals and value stack on this Python?"""

    def inner():
        yield 1

    def outer(a):
        for _ in ["p", "q"]:
            yield from inner()

    g = outer(7)
    next(g)
    try:
        enc = repr(StateKey(None, False).gen(g))
    except Opaque:
        return False
    return "7" in enc and "_iterator" in enc and "inner" in enc
