"""`format.RECORD_RULES` as code: the conditions of the binary record rules
rendered as Python source, for the two fast checks that cannot afford to
walk the table at run time.

- `binary` evaluates `accept_source()` at import: one boolean expression
  over a record unpacked with `format.RECORD_STRUCT` (the scalar path).
- `_checks` (numba) is this module's output, `render_checks()`, committed:
  one straight-line function over a record's 8-byte words.  Why generated:
  the same table walked by a compiled loop ran 2-3 times slower (numba
  compiles a loop over a tuple of rules to a loop, not to the comparisons),
  and code that reads the table as compile-time constants would be kept
  stale by numba's cache, which is keyed by the source file alone.

After changing the table, run ``python -m shm_engine.wire.rulecode``; a test
fails while `_checks.py` is not what `render_checks()` gives.  Numpy only.
"""

from __future__ import annotations

import math
import pathlib
import sys

import numpy as np

from shm_engine.wire.format import (FLAGS_WORD, ITEM, OFFSET, RECORD_DTYPE, RECORD_RULES,
                                    RESERVED_ITEMS, SHIFT, FlagsByte, Number, ReservedBytes, Text)

CHECKS_PATH = pathlib.Path(__file__).with_name("_checks.py")


def _literal(x: float, integer: bool) -> str:
    if math.isinf(x):
        return "_INF" if x > 0 else "-_INF"
    return repr(int(x)) if integer else repr(float(x))


def _number_term(rule: Number, read, flags: str) -> str:
    """The condition that a `Number` row holds, over ``read(field name)``:
    present (bit 0 or set), each value in range and, if ordered, the first
    <= the second; absent, every value 0.  NaN fails it."""
    ok = []
    for name in rule.names:
        ftype = RECORD_DTYPE[name]
        integer = ftype.kind == "u"
        b = rule.bound
        if integer and b.holds(0) and b.holds(int(np.iinfo(ftype).max)):
            continue                           # the type holds only valid values
        ok.append(f"{_literal(b.lo, integer)} {'<' if b.lo_open else '<='} {read(name)} "
                  f"{'<' if b.hi_open else '<='} {_literal(b.hi, integer)}")
    if rule.ordered:
        ok.append(f"{read(rule.names[0])} <= {read(rule.names[1])}")
    present = " and ".join(ok) or "True"
    if not rule.bit:
        return present
    zero = " and ".join(f"{read(n)} == 0" for n in rule.names)
    return f"(({present}) if {flags} & {rule.bit:#04x} else {zero})"


def _rule_terms(target) -> list[tuple[int, str, str]]:
    """(rule index, what it checks, the condition that it holds) per rule of
    RECORD_RULES, in order, as source for ``target``: `_Python` or `_Numba`."""
    terms = []
    for i, rule in enumerate(RECORD_RULES):
        if isinstance(rule, Number):
            terms.append((i, " ".join(rule.names), _number_term(rule, target.read, target.flags)))
        elif isinstance(rule, Text):
            valid, zero = target.text(rule)
            terms.append((i, rule.what, f"({valid} if {target.flags} & {rule.bit:#04x} else {zero})"
                          if rule.bit else valid))
        elif isinstance(rule, FlagsByte):
            terms.append((i, "unknown flag bits", f"not {target.flags} & {0xFF & ~rule.known:#04x}"))
        else:
            assert isinstance(rule, ReservedBytes)
            terms.append((i, "reserved bytes", target.reserved(rule)))
    return terms


class _Python:
    """A record unpacked with RECORD_STRUCT as ``v``, its flags as ``f``.
    Namespace: ``_INF``; ``_TEXT_<field>``, a fullmatch of the field's valid
    ASCII form; ``_ZERO_<item>``, the zero bytes of an item."""
    flags = "f"

    @staticmethod
    def read(name: str) -> str:
        return f"v[{ITEM[name]}]"

    @staticmethod
    def text(rule: Text) -> tuple[str, str]:
        i = ITEM[rule.name]
        return f"_TEXT_{rule.name}(v[{i}]) is not None", f"v[{i}] == _ZERO_{i}"

    @staticmethod
    def reserved(rule: ReservedBytes) -> str:
        return " and ".join(f"v[{k}] == _ZERO_{k}" for k in RESERVED_ITEMS)


def accept_source() -> str:
    """``lambda v: ...``, True only if the unpacked record ``v`` breaks no
    rule (it may say False for valid text with bytes >= 0x80, which the
    regular expressions do not decode).  Names: see `_Python`."""
    terms = [f"(f := v[{ITEM['flags']}]) >= 0"]
    terms += [term for _, _, term in _rule_terms(_Python)]
    return "lambda v: (" + "\n    and ".join(terms) + ")"


# ------------------------------------------------------------------ the compiled check

def _u64(x: int) -> str:
    return f"np.uint64({x:#x})"


class _Numba:
    """Record j of (n, WORDS) views ``f8`` and ``words``, its flags as
    ``flags``; text fields with bytes >= 0x80 are decoded only when the
    variable ``decode`` is true."""
    flags = "flags"

    @staticmethod
    def read(name: str) -> str:
        word, shift, ftype = OFFSET[name] // 8, SHIFT[name], RECORD_DTYPE[name]
        if ftype.kind == "f":
            return f"f8[j, {word}]"
        value = f"words[j, {word}]" + (f" >> {_u64(shift)}" if shift else "")
        return f"({value} & {_u64((1 << 8 * ftype.itemsize) - 1)})"

    @staticmethod
    def text(rule: Text) -> tuple[str, str]:
        first = OFFSET[rule.name] // 8
        last = first + RECORD_DTYPE[rule.name].itemsize // 8
        args = f"words, j, {first}, {last}, {rule.printable}"
        valid = f"(ascii_padded_ok({args}) or (decode and utf8_padded_ok({args})))"
        if rule.nonempty:
            valid = f"(words[j, {first}] & _BYTE != 0 and {valid})"
        zero = " and ".join(f"words[j, {k}] == 0" for k in range(first, last))
        return valid, f"({zero})"

    @staticmethod
    def reserved(rule: ReservedBytes) -> str:
        masks: dict[int, int] = {}
        for lo, hi in rule.spans:
            for byte in range(lo, hi):
                masks[byte // 8] = masks.get(byte // 8, 0) | 0xFF << 8 * (byte % 8)
        return " and ".join(f"words[j, {w}] == 0" if m == 2**64 - 1 else
                            f"words[j, {w}] & {_u64(m)} == 0" for w, m in sorted(masks.items()))


def _fault_chain() -> str:
    """``if not <rule 0 holds>: fault = 0  elif ...  else: fault = NO_FAULT``."""
    lines = []
    for i, what, term in _rule_terms(_Numba):
        lines += [f"{'if' if i == 0 else 'elif'} not ({term}):  # {what}", f"    fault = {i}"]
    lines += ["else:", "    fault = NO_FAULT"]
    return "\n".join(" " * 8 + line for line in lines)


_CHECKS_TEMPLATE = '''\
"""Compiled whole-batch check of binary heartbeat records (`binary.batch_faults`).

GENERATED from `format.RECORD_RULES` by `shm_engine.wire.rulecode`: do not
edit; run ``python -m shm_engine.wire.rulecode`` after changing the table.

Why a kernel: the rules as a dozen numpy whole-batch operations cost about
0.2 ms per 1000 records; one pass over each record in compiled code costs a
few microseconds.  It lives apart from the rest of the wire package so that
senders, which import the package for its encoders, never import numba.

Contract of `check_records`: ``out[j]`` is 0 when record j passes every
rule, else 1 + the index in RECORD_RULES of the first rule it breaks,
exactly as `binary.record_fault` finds it (test_wire and test_wire_fastpath
check the two agree on hostile records).
"""

import numpy as np
from numba import njit

from shm_engine.wire._padded import ascii_padded_ok, utf8_padded_ok

NO_FAULT = {no_fault}
_INF = np.inf
_BYTE = np.uint64(0xFF)


@njit(cache=True, nogil=True)
def _check(f8, words, out, decode):
    """Each record's fault into ``out``; returns how many are invalid.  Without
    ``decode``, a text field with a byte >= 0x80 counts as broken (deciding it
    takes the byte-by-byte decoder, which few records need); with it, only
    the records ``out`` marks are checked again.  The rules are written out
    in the loop: a call per record (numba passes arrays with reference
    counting) would cost more than the rules."""
    bad = 0
    for j in range(words.shape[0]):
        if decode and not out[j]:
            continue
        flags = {flags}
{chain}
        out[j] = 0 if fault == NO_FAULT else fault + 1
        bad += fault != NO_FAULT
    return bad


def check_records(f8, words, out):
    """Check n records given as float64 and uint64 (n, {words}) views of the
    same bytes; ``out`` (n,) uint8 receives each record's fault.  Returns
    how many records are invalid."""
    bad = _check(f8, words, out, False)
    return _check(f8, words, out, True) if bad else bad
'''


def render_checks() -> str:
    """The source of `_checks.py` for the current table."""
    assert len(RECORD_RULES) < 255
    flags = f"words[j, {FLAGS_WORD}]" + (f" >> {_u64(SHIFT['flags'])}" if SHIFT["flags"] else "")
    return _CHECKS_TEMPLATE.format(no_fault=len(RECORD_RULES), flags=f"{flags} & _BYTE",
                                   chain=_fault_chain(), words=RECORD_DTYPE.itemsize // 8)


def main() -> int:
    CHECKS_PATH.write_text(render_checks())
    print(f"wrote {CHECKS_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
