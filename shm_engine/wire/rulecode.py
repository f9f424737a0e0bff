"""The rule table as code: `format.RECORD_RULES` and `format.FIELDS` rendered
as source for the hot paths that cannot afford to walk the table at run time,
into two committed modules (a test fails while either is not what the
current table renders; ``python -m shm_engine.wire`` rewrites both):

- `_scalar` (Python): `accept(v, slow_ok)`, one boolean expression over a
  record unpacked with `format.RECORD_STRUCT` (the scalar path of `binary`;
  ``slow_ok(rule index, value)`` decides what the expression leaves to the
  reference walk: text that is not plain ASCII, resources that are present);
  `one(v)`, that record as `DecodedFrame.one`; `json_fields(obj, values,
  read)`, the fields of a JSON heartbeat in table order, a value of the
  field's type (float, or int for an integer field) in range taken as is
  (`jsondecode`).  A loop of Python calls costs more than a
  whole record's comparisons.
- `_checks` (numba): one loop over the records with the rules written out
  as comparisons on a record's 8-byte words.  The same table walked by a
  compiled loop ran 2-3 times slower (numba compiles a loop over a tuple of
  rules to a loop, not to the comparisons), and code that read the table as
  compile-time constants would be kept stale by numba's cache, which is
  keyed by the source file alone.

The readable walks of the table (`binary.record_fault`, the readers of
`jsondecode`) are the reference; tests prove the rendered code agrees with
them.  Numpy only, and nothing rendered is evaluated at run time.
"""

from __future__ import annotations

import hashlib
import math
import pathlib
import sys

import numpy as np

from shm_engine.wire.format import (
    FIELD_INDEX,
    FIELD_NAMES,
    FIELDS,
    FLAGS_WORD,
    ITEM,
    OFFSET,
    RECORD_DTYPE,
    RECORD_RULES,
    RESERVED_ITEMS,
    RESERVED_SPANS,
    SHIFT,
    FlagsByte,
    Labels,
    Number,
    ReservedBytes,
    Resources,
    Taints,
    Text,
    names_of,
)

CHECKS_PATH = pathlib.Path(__file__).with_name("_checks.py")
SCALAR_PATH = pathlib.Path(__file__).with_name("_scalar.py")
PADDED_PATH = pathlib.Path(__file__).with_name("_padded.py")


def _literal(x: float, integer: bool) -> str:
    if math.isinf(x):
        return "_INF" if x > 0 else "-_INF"
    return repr(int(x)) if integer else repr(float(x))


def _in_bound(x: str, bound, integer: bool) -> str:
    """``lo <= x < hi`` (the bound's kind of interval) as source."""
    return (
        f"{_literal(bound.lo, integer)} {'<' if bound.lo_open else '<='} {x} "
        f"{'<' if bound.hi_open else '<='} {_literal(bound.hi, integer)}"
    )


def _number_term(rule: Number, read, flags: str) -> str:
    """The condition that a `Number` row holds, over ``read(field name)``:
    present (bit 0 or set), each value in range and, if ordered, the first
    <= the second; absent, every value 0.  NaN fails it."""
    ok = []
    for name in rule.names:
        ftype = RECORD_DTYPE[name]
        integer = ftype.kind == "u"
        if integer and rule.bound.holds(0) and rule.bound.holds(int(np.iinfo(ftype).max)):
            continue  # the type holds only valid values
        ok.append(_in_bound(read(name), rule.bound, integer))
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
            terms.append(
                (
                    i,
                    rule.what,
                    f"({valid} if {target.flags} & {rule.bit:#04x} else {zero})"
                    if rule.bit
                    else valid,
                )
            )
        elif isinstance(rule, Resources):
            valid, zero = target.resources(rule)
            terms.append(
                (i, rule.name, f"({valid} if {target.flags} & {rule.bit:#04x} else {zero})")
            )
        elif isinstance(rule, FlagsByte):
            terms.append(
                (i, "unknown flag bits", f"not {target.flags} & {0xFF & ~rule.known:#04x}")
            )
        else:
            assert isinstance(rule, ReservedBytes)
            terms.append((i, "reserved bytes", target.reserved(rule)))
    return terms


class _Python:
    """A record unpacked with RECORD_STRUCT as ``v``, its flags as ``f``;
    ``slow_ok(rule index, raw)`` decides text that is not plain ASCII, and
    ``slow_ok(rule index, v)`` present resources.  Module names: ``_INF``;
    ``_ASCII_<field>``, a fullmatch of the field's valid ASCII form;
    ``_ZERO_<item>``, the zero bytes of an item; ``_NO_<field>``, the items
    of absent resources."""

    flags = "f"

    @staticmethod
    def read(name: str) -> str:
        return f"v[{ITEM[name]}]"

    @staticmethod
    def text(rule: Text) -> tuple[str, str]:
        i = ITEM[rule.name]
        k = RECORD_RULES.index(rule)
        ascii_ok = f"_ASCII_{rule.name}(v[{i}]) is not None"
        if rule.ranges is not None:  # ASCII only: the pattern decides alone
            return f"({ascii_ok})", f"v[{i}] == _ZERO_{i}"
        return f"({ascii_ok} or slow_ok({k}, v[{i}]))", f"v[{i}] == _ZERO_{i}"

    @staticmethod
    def resources(rule: Resources) -> tuple[str, str]:
        first, last = _resource_items(rule)
        return f"slow_ok({RECORD_RULES.index(rule)}, v)", f"v[{first}:{last}] == _NO_{rule.name}"

    @staticmethod
    def reserved(rule: ReservedBytes) -> str:
        return " and ".join(f"v[{k}] == _ZERO_{k}" for k in RESERVED_ITEMS)


def _resource_items(rule: Resources) -> tuple[int, int]:
    """[first, last) items of the resource entries in an unpacked record:
    the names, then the values, adjacent."""
    items = [ITEM[n] for n in rule.names + rule.values]
    assert items == list(range(items[0], items[0] + len(items)))
    return items[0], items[-1] + 1


def text_pattern(rule: Text) -> bytes:
    """A padded text field that is valid without a UTF-8 decode: ASCII
    (``ranges`` if given; else printable: 0x20..0x7e, or 0x01..0x7f), then
    NULs, at least one."""
    size = RECORD_DTYPE[rule.name].itemsize
    if rule.ranges is not None:
        chars = b"".join(rb"\x%02x-\x%02x" % pair for pair in rule.ranges)
    else:
        chars = rb"\x20-\x7e" if rule.printable else rb"\x01-\x7f"
    return rb"[%s]{%d,%d}\x00+" % (chars, int(rule.nonempty), size - 1)


def _accept_lines() -> list[str]:
    terms = [term for _, _, term in _rule_terms(_Python)]
    return (
        ["def accept(v, slow_ok):", f"    f = v[{ITEM['flags']}]", "    return (" + terms[0]]
        + [f"            and {term}" for term in terms[1:]]
        + ["    )"]
    )


def _one_lines() -> list[str]:
    """`one`: slices for runs of adjacent items, one tuple for the text."""
    out: list[str] = []
    run: list[int] = []  # adjacent items, taken as one slice
    texts: list[str] = []  # unpadded text items, one tuple

    def close() -> None:
        if run:
            out.append(f"v[{run[0]}:{run[-1] + 1}]")
            run.clear()
        if texts:
            out.append(f"({', '.join(texts)},)")
            texts.clear()

    for name in FIELD_NAMES:
        item = ITEM[name]
        if RECORD_DTYPE[name].kind == "S":
            if run:
                close()
            texts.append(f"v[{item}].rstrip(b'\\0')")
        elif run and item == run[-1] + 1:
            run.append(item)
        else:
            close()
            run.append(item)
    close()
    return ["def one(v):", "    return " + " + ".join(out)]


def _json_fields_lines() -> list[str]:
    """`json_fields`: anything but a value of the field's type in range (a
    float, or an int for an integer field) goes to ``read[key](obj,
    values)``, which checks it in full and raises `Reject`."""
    lines = ["def json_fields(obj, values, read):", "    flags = 0", "    labels = None"]
    for rule in FIELDS[1:]:
        body, keys = [], names_of(rule)
        for j, key in enumerate(keys):
            slow = f"read[{key!r}](obj, values)"
            if isinstance(rule, Labels):
                body.append(f"labels = {slow}")
                continue
            if isinstance(rule, Taints):  # its reader appends them to the labels
                body.append(f"labels = read[{key!r}](obj, labels)")
                continue
            if isinstance(rule, Resources):  # its reader fills the entries
                body.append(slow)
                continue
            i = FIELD_INDEX[key]
            if isinstance(rule, Number):
                kind = RECORD_DTYPE[key].kind
                fast = _in_bound("x", rule.bound, kind == "u")
                if rule.ordered and j:
                    fast += f" and x >= values[{FIELD_INDEX[keys[0]]}]"
                plain = "int" if kind == "u" else "float"
                body += [
                    f"x = obj[{key!r}]",
                    f"values[{i}] = x if type(x) is {plain} and {fast} else {slow}",
                ]
            else:
                body.append(f"values[{i}] = {slow}")
        optional = isinstance(rule, (Labels, Taints)) or rule.bit != 0
        if not isinstance(rule, (Labels, Taints)) and rule.bit:
            body.append(f"flags |= {rule.bit:#04x}")
        if optional:
            lines.append(f"    if {keys[0]!r} in obj:")
        lines += [("        " if optional else "    ") + line for line in body]
    return lines + [f"    values[{FIELD_INDEX['flags']}] = flags", "    return labels"]


def render_scalar() -> str:
    """The source of `_scalar.py` for the current table."""
    names = ["_INF = math.inf"]
    for rule in RECORD_RULES:
        if isinstance(rule, Text):
            names.append(f"_ASCII_{rule.name} = re.compile({text_pattern(rule)!r}).fullmatch")
            item = ITEM[rule.name]
            names.append(f"_ZERO_{item} = bytes({RECORD_DTYPE[rule.name].itemsize})")
        elif isinstance(rule, Resources):
            size = RECORD_DTYPE[rule.names[0]].itemsize
            names.append(
                f"_NO_{rule.name} = (bytes({size}),) * {len(rule.names)} "
                f"+ (0.0,) * {len(rule.values)}"
            )
    names += [
        f"_ZERO_{k} = bytes({hi - lo})"
        for k, (lo, hi) in zip(RESERVED_ITEMS, RESERVED_SPANS, strict=True)
    ]
    code = [
        '"""The scalar hot paths of the wire package: GENERATED from the rule table',
        "by `shm_engine.wire.rulecode`, which says what each function does.  Do not",
        'edit: run ``python -m shm_engine.wire`` after changing the table."""',
        "# ruff: noqa: E501",
        "",
        "import math",
        "import re",
        "",
        *names,
        "",
        "",
        *_accept_lines(),
        "",
        "",
        *_one_lines(),
        "",
        "",
        *_json_fields_lines(),
    ]
    return "\n".join(code) + "\n"


# ------------------------------------------------------------------ the compiled check


def _u64(x: int) -> str:
    return f"np.uint64({x:#x})"


class _Numba:
    """Record j of (n, WORDS) views ``f8`` and ``words``, its flags as
    ``flags``; text fields with bytes >= 0x80 are decoded only when the
    variable ``decode`` is true.  Module names: ``_RANGES_<field>``, the byte
    ranges of a `Text` with ``ranges``."""

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
        if rule.ranges is not None:
            valid = f"ranges_padded_ok(words, j, {first}, {last}, _RANGES_{rule.name})"
        else:
            valid = f"(ascii_padded_ok({args}) or (decode and utf8_padded_ok({args})))"
        if rule.nonempty:
            valid = f"(words[j, {first}] & _BYTE != 0 and {valid})"
        zero = " and ".join(f"words[j, {k}] == 0" for k in range(first, last))
        return valid, f"({zero})"

    @staticmethod
    def resources(rule: Resources) -> tuple[str, str]:
        """Names by `_padded.resource_names_ok`; each value within the bound
        where its name is set, else 0."""
        first = OFFSET[rule.names[0]] // 8
        per = RECORD_DTYPE[rule.names[0]].itemsize // 8
        valid = [f"resource_names_ok(words, j, {first}, {per}, {len(rule.names)}, decode)"]
        zero = [f"words[j, {w}] == 0" for w in range(first, first + per * len(rule.names))]
        for i, name in enumerate(rule.values):
            x = _Numba.read(name)
            valid.append(
                f"(({_in_bound(x, rule.bound, False)}) if words[j, {first + per * i}] "
                f"& _BYTE else {x} == 0)"
            )
            zero.append(f"{x} == 0")
        return "(" + " and ".join(valid) + ")", "(" + " and ".join(zero) + ")"

    @staticmethod
    def reserved(rule: ReservedBytes) -> str:
        masks: dict[int, int] = {}
        for lo, hi in rule.spans:
            for byte in range(lo, hi):
                masks[byte // 8] = masks.get(byte // 8, 0) | 0xFF << 8 * (byte % 8)
        return " and ".join(
            f"words[j, {w}] == 0" if m == 2**64 - 1 else f"words[j, {w}] & {_u64(m)} == 0"
            for w, m in sorted(masks.items())
        )


def _fault_chain() -> list[str]:
    """``if not (<rule 0 holds>): fault = 0``, ``elif`` for each next rule,
    ``else: fault = NO_FAULT``: the first broken rule, in table order."""
    lines = []
    for i, what, term in _rule_terms(_Numba):
        lines += [f"{'if' if i == 0 else 'elif'} not ({term}):  # {what}", f"    fault = {i}"]
    return [" " * 8 + line for line in lines + ["else:", "    fault = NO_FAULT"]]


def render_checks() -> str:
    """The source of `_checks.py` for the current table.

    `check_records(f8, words, out, decode)` there: each record's first
    broken rule into ``out`` (1 + its index in RECORD_RULES; 0: none),
    returning how many are invalid.  The rules are written out inside the
    loop: a call per record (numba passes arrays with reference counting)
    would cost more than the rules.  Without ``decode``, text with a byte
    >= 0x80 counts as broken (its decoder is byte by byte, and few records
    need it); with it, only the records ``out`` marks are checked again."""
    assert len(RECORD_RULES) < 255
    flags = f"words[j, {FLAGS_WORD}]" + (f" >> {_u64(SHIFT['flags'])}" if SHIFT["flags"] else "")
    code = [
        '"""The compiled batch check of binary records: GENERATED from',
        "`format.RECORD_RULES` by `shm_engine.wire.rulecode`, which says why and",
        "what `check_records` returns.  Do not edit: run ``python -m shm_engine.wire``",
        'after changing the table."""',
        "# ruff: noqa: E501, UP034 (one condition per rule, as rendered)",
        # numba caches this file's code with _padded's compiled in, keyed by this
        # file alone: a change there changes this line, so the cache follows.
        f"# _padded.py sha256 {hashlib.sha256(PADDED_PATH.read_bytes()).hexdigest()[:16]}",
        "",
        "import numpy as np",
        "from numba import njit",
        "",
        "from shm_engine.wire._padded import (ascii_padded_ok, ranges_padded_ok, "
        "resource_names_ok,",
        "                                     utf8_padded_ok)",
        "",
        f"NO_FAULT = {len(RECORD_RULES)}",
        "_INF = np.inf",
        "_BYTE = np.uint64(0xFF)",
        *(
            f"_RANGES_{rule.name} = {rule.ranges!r}"
            for rule in RECORD_RULES
            if isinstance(rule, Text) and rule.ranges is not None
        ),
        "",
        "",
        "@njit(cache=True, nogil=True)",
        "def check_records(f8, words, out, decode):",
        "    bad = 0",
        "    for j in range(words.shape[0]):",
        "        if decode and not out[j]:",
        "            continue",
        f"        flags = {flags} & _BYTE",
        *_fault_chain(),
        "        out[j] = 0 if fault == NO_FAULT else fault + 1",
        "        bad += fault != NO_FAULT",
        "    return bad",
    ]
    return "\n".join(code) + "\n"


def main() -> int:
    for path, source in ((SCALAR_PATH, render_scalar()), (CHECKS_PATH, render_checks())):
        path.write_text(source)
        print(f"wrote {path}", file=sys.stderr)
    return 0
