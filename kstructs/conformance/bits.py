"""The bytes C gives a struct with one bitfield set: compile-only, read from the object file.

For each bitfield, a static object of the outer type is initialised with only
that field set to -1, and another with it set to 1 (the method of CPython's
``Lib/test/test_ctypes/test_generated_structs.py``, where the other fields
stay 0). Each pair goes into a section of its own; the compiler lays the
bytes out and nothing is run, so any cross compiler will do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kstructs._elf import ElfError, section
from kstructs.conformance.cc import Compiler, _errors, _first_error, _missing_header, _read, _write, workdir
from kstructs.conformance.probe import _text
from kstructs.errors import CheckError

MAX_ROUNDS = 20


def bitfield_bytes(
    cc: Compiler, headers: Sequence[str], include_dirs: Sequence[Path], entries: Sequence[tuple[str, str]]
) -> tuple[dict[int, tuple[bytes, bytes]], dict[int, str]]:
    """For each (C type, designator path): the bytes with the field at -1 and at 1.
    Entries that do not compile are returned with the compiler's message instead."""
    live = list(range(len(entries)))
    failed: dict[int, str] = {}
    flags = ["-w", *(f"-I{d}" for d in include_dirs)]
    out: dict[int, tuple[bytes, bytes]] = {}
    if not entries:
        return out, failed
    with workdir() as tmp:
        src, obj = tmp / "bits.c", tmp / "bits.o"
        for _ in range(MAX_ROUNDS):
            lines = [f"#include <{h}>" for h in headers]
            first = len(lines) + 1
            for i in live:
                ctype, path = entries[i]
                lines.append(
                    f'__attribute__((used, section(".kstructs.b{i}"))) static const {ctype} kstructs_b{i}[2]'
                    f" = {{ {{ .{path} = -1 }}, {{ .{path} = 1 }} }};"
                )
            _write(src, "\n".join([*lines, ""]))
            built = cc.run([*flags, "-c", "-o", str(obj), str(src)], "the C compiler", tmp)
            if built.returncode == 0:
                break
            if (name := _missing_header(built.output)) is not None:
                raise CheckError(f"headers not found: {name}")
            bad: dict[int, str] = {}
            for file, line, msg, notes in _errors(built.output):
                for f, n in [(file, line), *notes]:
                    if Path(f).name == src.name and first <= n < first + len(live):
                        bad.setdefault(live[n - first], msg)
            if not bad:
                raise CheckError(f"the bitfield probe does not compile: {_first_error(built.output)}")
            failed.update(bad)
            live = [i for i in live if i not in failed]
            if not live:
                return out, failed
        else:
            raise CheckError(f"the bitfield probe does not compile after {MAX_ROUNDS} rounds of removing failed items")
        data = _read(obj, "object file")
    for i in live:
        try:
            found = section(data, f".kstructs.b{i}")
        except ElfError as e:
            raise CheckError(f"unreadable bitfield probe object: {_text(e)}") from None
        if found is None:
            raise CheckError(f"the bitfield probe object has no section .kstructs.b{i}")
        both = found.data
        half = len(both) // 2
        out[i] = (both[:half], both[half:])
    return out, failed


def bit_span(data: bytes, big_endian: bool) -> tuple[int, int] | None:
    """(first bit, width) of the set bits, numbered as BTF does: from the least
    significant bit of byte 0 on little-endian machines, from the most
    significant on big-endian ones. None when no bit is set."""
    n = int.from_bytes(data, "big" if big_endian else "little")
    if not n:
        return None
    if big_endian:
        total = len(data) * 8
        return total - n.bit_length(), n.bit_length() - (n & -n).bit_length() + 1
    low = (n & -n).bit_length() - 1
    return low, n.bit_length() - low
