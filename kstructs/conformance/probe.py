"""The probe's program and its object file: what the probe writes, framed so
that nothing else can pass for it, and how the values are read back.

The static values are one array of 64-bit words in the section ``SECTION``:
a magic, a per-run nonce and the count, then each value and its sign, then
a trailer (the nonce mixed with a constant); a word a relocation patches is
an address, not a constant, and its item fails. Values the compiler folds
through ``asm`` operands are 18-byte records in ``FOLD_SECTION``, each with
the nonce and its query's index. Everything is read in the object's byte
order with the ELF reader.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from kstructs._elf import ElfError, Section, section
from kstructs.errors import CheckError

SECTION: Final = ".kstructs_probe"  # the static values
FOLD_SECTION: Final = ".kstructs_fold"  # values folded through asm operands
_MAGIC: Final = 0x6B737472_75637473  # "kstructs"
_END: Final = 0x646E655F_65626F72  # the trailer, xor the nonce

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _text(value: object) -> str:
    """Text safe to print or put in JSON: undecodable bytes (surrogates)
    replaced, control and bidirectional characters escaped."""
    text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


@dataclass(frozen=True)
class Query:
    """An integer constant expression whose value is wanted, and the item it belongs to.

    A compile error in any expression of an item fails the whole item."""

    item: str  # "struct cn_msg.len", "CN_IDX_PROC", "NLMSG_ALIGN"
    expr: str  # "offsetof(struct cn_msg, len)"


_CLOSING: Final = {"(": ")", "[": "]", "{": "}"}


def _usable(expr: str) -> str | None:
    """Why an expression cannot be put on one line of the probe, or None.

    It must be one line with balanced brackets; braces and ';' only inside
    parentheses (``offsetof(struct { char c; long long x; }, x)``); no comment."""
    if not expr.strip():
        return "an empty expression"
    if any(c in expr for c in "\n\r\0"):
        return "not one line"
    stack: list[str] = []
    quote = ""
    escaped = False
    previous = ""
    for c in expr:
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
            continue
        if c in "\"'":
            quote = c
        elif previous == "/" and c in "/*":
            return "not one C expression (a comment)"
        elif c in _CLOSING:
            if c == "{" and "(" not in stack:
                return "not one C expression (braces outside parentheses)"
            stack.append(c)
        elif c in ")]}":
            if not stack or _CLOSING[stack.pop()] != c:
                return "not one C expression (unbalanced brackets)"
        elif c == ";" and "(" not in stack:
            return "not one C expression (';' outside parentheses)"
        elif c == "#":
            return "not one C expression ('#')"
        previous = c
    if quote or stack:
        return "not one C expression (unbalanced brackets or quotes)"
    return None


@dataclass
class _Program:
    nonce: int
    static: list[int]  # query indexes in the static array, in order
    folded: list[int]  # query indexes asked through asm operands
    lines: dict[int, int]  # source line -> query index
    text: str


def _program(
    headers: Sequence[str], prelude: str, queries: Sequence[Query], static: list[int], folded: list[int]
) -> _Program:
    nonce = int.from_bytes(os.urandom(4), "little")  # unpredictable: a header cannot forge the framing
    lines = [f"#include <{h}>" for h in headers]
    lines += ["#include <stddef.h>", prelude]
    at: dict[int, int] = {}
    if static:
        lines.append(
            f'static const unsigned long long kstructs_probe[] __attribute__((section("{SECTION}"), used)) = {{'
        )
        lines.append(f"    0x{_MAGIC:x}ULL, 0x{nonce:x}ULL, {len(static)}ULL,")
        for i in static:
            e = queries[i].expr
            at[len(lines) + 1] = i
            lines.append(f"    (unsigned long long)({e}) + 0 * sizeof(~({e})), (unsigned long long)(({e}) < 0),")
        lines.append(f"    0x{_END ^ nonce:x}ULL }};")
    if folded:
        lines.append("#define KSTRUCTS_OK(u, n) (__builtin_constant_p(u) && __builtin_constant_p(n))")
        lines.append(f"#define KSTRUCTS_FOLD(i, u, n) {_fold_asm(nonce)}")
    for k, i in enumerate(folded):
        e = queries[i].expr
        at[len(lines) + 1] = i
        lines.append(
            f"void kstructs_fold_{k}(void) {{ unsigned long long u = (unsigned long long)({e}); "
            f"int n = ({e}) < 0; KSTRUCTS_FOLD({i}, u, n); }}"
        )
    lines.append("")
    return _Program(nonce, static, folded, at, "\n".join(lines))


# A folded value is written byte by byte, each an asm operand printed with %c
# (s390x prints %c of a larger constant as its low byte only): the nonce (4
# bytes), the query index (4), whether the compiler could fold it (1), the
# value (8) and its sign (1), little-endian whatever the target.
_FOLD_RECORD: Final = 18


def _fold_asm(nonce: int) -> str:
    ops = [f'"n"((unsigned char)(0x{nonce:x}u >> {8 * k}))' for k in range(4)]
    ops += [f'"n"((unsigned char)((unsigned)(i) >> {8 * k}))' for k in range(4)]
    ops += ['"n"(KSTRUCTS_OK(u, n))']
    ops += [f'"n"(KSTRUCTS_OK(u, n) ? (unsigned char)((u) >> {8 * k}) : 0)' for k in range(8)]
    ops += ['"n"(KSTRUCTS_OK(u, n) ? (n) : 0)']
    template = ", ".join(f"%c{k}" for k in range(_FOLD_RECORD))
    return (
        f'__asm__ volatile (".pushsection {FOLD_SECTION},\\"a\\"\\n\\t.byte {template}\\n\\t.popsection" '
        f":: {', '.join(ops)})"
    )


def _values(data: bytes, program: _Program, queries: Sequence[Query]) -> tuple[list[int | None], dict[int, str]]:
    """The values in the object file, by query index, and the queries whose value is not there."""
    values: list[int | None] = [None] * len(queries)
    missing: dict[int, str] = {}
    try:
        static = section(data, SECTION) if program.static else None
        fold = section(data, FOLD_SECTION) if program.folded else None
        relocated = _relocated(data)
    except ElfError as e:
        raise CheckError(f"the compiler's object file is unreadable: {_text(e)}") from None
    if program.static:
        if static is None:
            raise CheckError(f"the compiler's object file has no {SECTION} section")
        words = _words(static, 8)
        n = len(program.static)
        if (
            len(words) != 4 + 2 * n
            or words[0] != _MAGIC
            or words[1] != program.nonce
            or words[2] != n
            or words[-1] != _END ^ program.nonce
        ):
            raise CheckError(
                f"the {SECTION} section of the object file is not the probe's (0x{len(static.data):x} bytes)"
            )
        for k, i in enumerate(program.static):
            if any(3 + 2 * k <= w < 5 + 2 * k for w in relocated):
                missing[i] = "not an integer constant (its value needs a relocation)"
                continue
            u, neg = words[3 + 2 * k], words[4 + 2 * k]
            values[i] = u - (1 << 64) if neg else u
    if program.folded:
        data = fold.data if fold is not None else b""
        seen: set[int] = set()
        if len(data) % _FOLD_RECORD:
            raise CheckError(f"the {FOLD_SECTION} section of the object file is not the probe's")
        wanted = set(program.folded)
        for at in range(0, len(data), _FOLD_RECORD):
            record = data[at : at + _FOLD_RECORD]
            nonce, i = int.from_bytes(record[0:4], "little"), int.from_bytes(record[4:8], "little")
            if nonce != program.nonce or i not in wanted or i in seen or record[8] > 1 or record[17] > 1:
                raise CheckError(f"the {FOLD_SECTION} section of the object file is not the probe's")
            if record[8]:
                seen.add(i)
                u = int.from_bytes(record[9:17], "little")
                values[i] = u - (1 << 64) if record[17] else u
        for i in wanted - seen:
            missing[i] = "not a constant the compiler can compute"
    return values, missing


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _words(sec: Section, size: int) -> list[int]:
    data = sec.data
    if len(data) % size:
        raise CheckError(f"the {sec.name} section of the object file is not the probe's (0x{len(data):x} bytes)")
    return [int.from_bytes(data[at : at + size], sec.byteorder) for at in range(0, len(data), size)]


def _relocated(data: bytes) -> set[int]:
    """The 8-byte words of the static section that a relocation patches (an address, not a constant)."""
    words: set[int] = set()
    for name, entry in ((".rela" + SECTION, 3), (".rel" + SECTION, 2)):
        sec = section(data, name)
        if sec is None:
            continue
        size = sec.elfclass // 8
        step = entry * size
        for at in range(0, len(sec.data) - step + 1, step):
            words.add(int.from_bytes(sec.data[at : at + size], sec.byteorder) // 8)
    return words
