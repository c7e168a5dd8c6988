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
_PAIRS = ".kstructs.bits"
_PLACES = ".kstructs.bitsat"
_USED = "__attribute__((used, section("


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
            # One struct holds every pair, so the object has two sections to read whatever the
            # count: the pairs, and where each starts (offsetof) with its size.
            lines = [f"#include <{h}>" for h in headers]
            lines += ["#include <stddef.h>", "struct kstructs_bits {"]
            at: dict[int, int] = {}
            for i in live:
                at[len(lines) + 1] = i
                lines.append(f"    {entries[i][0]} b{i}[2];")
            lines.append("};")
            lines.append(
                f'__attribute__((used, section("{_PAIRS}"))) static const struct kstructs_bits kstructs_b = {{'
            )
            for i in live:
                at[len(lines) + 1] = i
                path = entries[i][1]
                lines.append(f"    .b{i} = {{ {{ .{path} = -1 }}, {{ .{path} = 1 }} }},")
            lines.append("};")
            lines.append(
                f'__attribute__((used, section("{_PLACES}"))) static const unsigned long long kstructs_o[] = {{'
            )
            lines += [f"    offsetof(struct kstructs_bits, b{i}), sizeof(kstructs_b.b{i}[0])," for i in live]
            lines.append("};")
            _write(src, "\n".join([*lines, ""]))
            built = cc.run([*flags, "-c", "-o", str(obj), str(src)], "the C compiler", tmp)
            if built.returncode == 0:
                break
            if (name := _missing_header(built.output)) is not None:
                raise CheckError(f"headers not found: {name}")
            bad: dict[int, str] = {}
            for file, line, msg, notes in _errors(built.output):
                for f, n in [(file, line), *notes]:
                    if Path(f).name == src.name and n in at:
                        bad.setdefault(at[n], msg)
            if not bad:
                raise CheckError(f"the bitfield probe does not compile: {_first_error(built.output)}")
            failed.update(bad)
            live = [i for i in live if i not in failed]
            if not live:
                return out, failed
        else:
            raise CheckError(f"the bitfield probe does not compile after {MAX_ROUNDS} rounds of removing failed items")
        data = _read(obj, "object file")
    try:
        pairs, places = section(data, _PAIRS), section(data, _PLACES)
    except ElfError as e:
        raise CheckError(f"unreadable bitfield probe object: {_text(e)}") from None
    if pairs is None or places is None or len(places.data) != 16 * len(live):
        raise CheckError("the bitfield probe object lacks its sections")
    big = data[5:6] == b"\x02"  # EI_DATA: ELFDATA2MSB
    words = [int.from_bytes(places.data[k : k + 8], "big" if big else "little") for k in range(0, len(places.data), 8)]
    for n, i in enumerate(live):
        start, size = words[2 * n], words[2 * n + 1]
        if start + 2 * size > len(pairs.data):
            raise CheckError(f"the bitfield probe object is shorter than its offsets: 0x{start + 2 * size:x}")
        out[i] = (pairs.data[start : start + size], pairs.data[start + size : start + 2 * size])
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
