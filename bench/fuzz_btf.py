"""Fuzz the BTF reader: mutated kernel and compiler BTF through ``kstructs.btf``.

    python bench/fuzz_btf.py [--count N] [--seconds S] [--seed S] [--check]

Seeds: the running kernel's ``/sys/kernel/btf/vmlinux`` (whole, rarely, and
as small closed pieces of it: the types the kstructs binding names and a few
other structs with what they refer to, renumbered), objects that
``gcc -gbtf -c`` writes for a small C file (the binding's UAPI headers,
bitfields, anonymous unions), as ELF files and as their raw ``.BTF``; each
also byte-swapped to big-endian and wrapped in ELF32/ELF64 files of either
byte order built here.

Mutations know where BTF keeps its type ids, counts and names: a type id
pointing at its own type or anywhere else, huge ``vlen``/``nelems``/header
lengths, appended chains of thousands of arrays, modifiers or anonymous
structs (cyclic or not), 2**n member paths, changed kinds and kind_flags,
truncation, bit flips and boundary bytes; for ELF inputs the ELF header and
section table too. One to three per input.

Each input is parsed and then read the way the checker reads it: every
struct/union named like a binding type walked by path (``Btf.fields``,
``Btf.field``, ``size_of``, ``resolve``), random type ids decoded, the
binding's enumerators looked up; with ``--check``, ``check_btf`` as well.
``BtfError`` (``CheckError`` from ``check_btf``) is the expected refusal;
any other exception is "foreign" and listed. Time per input is CPU time of
this process, so a loaded machine does not inflate it; the slowest input is
named. Exits 1 on a foreign exception.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import _common

from kstructs import _elf, cn_proc, connector, netlink
from kstructs.btf import Btf, BtfError, Kind
from kstructs.conformance import Binding, CheckError, check_btf

VMLINUX = Path("/sys/kernel/btf/vmlinux")
BINDINGS = [Binding.from_module(m) for m in (netlink, connector, cn_proc)]
TAGS = sorted({cls.__name__ for b in BINDINGS for cls in b.types})
CONSTANTS = sorted({n for b in BINDINGS for n in b.constants})

# Kinds whose third word is a type id (the others: a size, or unused).
REF_KINDS = frozenset(
    {
        Kind.PTR,
        Kind.TYPEDEF,
        Kind.VOLATILE,
        Kind.CONST,
        Kind.RESTRICT,
        Kind.FUNC,
        Kind.FUNC_PROTO,
        Kind.VAR,
        Kind.DECL_TAG,
        Kind.TYPE_TAG,
    }
)
# Per kind: words after the 12-byte header, fixed and per vlen entry.
TRAILER = {
    Kind.INT: (1, 0),
    Kind.ARRAY: (3, 0),
    Kind.STRUCT: (0, 3),
    Kind.UNION: (0, 3),
    Kind.ENUM: (0, 2),
    Kind.FUNC_PROTO: (0, 2),
    Kind.VAR: (1, 0),
    Kind.DATASEC: (0, 3),
    Kind.DECL_TAG: (1, 0),
    Kind.ENUM64: (0, 3),
}
U32_EDGES = (0, 1, 2, 3, 7, 8, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFF, 0x1000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


# ---------------------------------------------------------------- a BTF model independent of kstructs.btf


@dataclass
class Record:
    """One type: its kind, words (header and trailer), and which words are type ids / names."""

    kind: int
    words: list[int]
    ids: list[int]  # indexes into words
    names: list[int]


@dataclass
class Blob:
    order: str
    records: list[Record]
    strings: bytes

    def encode(self) -> bytes:
        words = [w for r in self.records for w in r.words]
        types = struct.pack(f"{self.order}{len(words)}I", *words)
        header = struct.pack(self.order + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings))
        return header + types + self.strings


def decode(data: bytes) -> Blob:
    """A well-formed blob as records; ValueError for anything else (the seeds are well-formed)."""
    order = "<" if data[:2] == b"\x9f\xeb" else ">"
    _, _, _, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(order + "HBBIIIII", data)
    types = data[hdr_len + type_off : hdr_len + type_off + type_len]
    words = list(struct.unpack(f"{order}{len(types) // 4}I", types))
    records, pos = [], 0
    while pos < len(words):
        info = words[pos + 1]
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        fixed, per = TRAILER.get(Kind(kind), (0, 0))
        n = 3 + fixed + per * vlen
        ids = [2] if kind in REF_KINDS else []
        names = [0]
        if kind == Kind.ARRAY:
            ids += [3, 4]
        elif kind in (Kind.STRUCT, Kind.UNION):
            ids += [3 + 3 * i + 1 for i in range(vlen)]
            names += [3 + 3 * i for i in range(vlen)]
        elif kind == Kind.FUNC_PROTO:
            ids += [3 + 2 * i + 1 for i in range(vlen)]
            names += [3 + 2 * i for i in range(vlen)]
        elif kind == Kind.DATASEC:
            ids += [3 + 3 * i for i in range(vlen)]
        elif kind in (Kind.ENUM, Kind.ENUM64):
            step = 2 if kind == Kind.ENUM else 3
            names += [3 + step * i for i in range(vlen)]
        records.append(Record(kind, words[pos : pos + n], ids, names))
        pos += n
    if pos != len(words):
        raise ValueError("not a well-formed seed")
    return Blob(order, records, data[hdr_len + str_off : hdr_len + str_off + str_len])


def string_at(strings: bytes, off: int) -> bytes:
    end = strings.find(b"\0", off)
    return strings[off:end]


def closure(blob: Blob, roots: list[int], limit: int) -> Blob:
    """The types reachable from ``roots`` (ids), at most ``limit``, renumbered; names copied; lost ids -> 0."""
    keep: dict[int, int] = {}
    queue = list(roots)
    while queue and len(keep) < limit:
        type_id = queue.pop(0)
        if type_id in keep or not 0 < type_id <= len(blob.records):
            continue
        keep[type_id] = 0
        r = blob.records[type_id - 1]
        queue += [r.words[i] for i in r.ids]
    for new, old in enumerate(sorted(keep), 1):
        keep[old] = new
    strings = bytearray(b"\0")
    offsets: dict[int, int] = {0: 0}
    records = []
    for old in sorted(keep):
        r = blob.records[old - 1]
        words = list(r.words)
        for i in r.ids:
            words[i] = keep.get(words[i], 0)
        for i in r.names:
            off = words[i]
            if off not in offsets:
                offsets[off] = len(strings)
                strings += string_at(blob.strings, off) + b"\0"
            words[i] = offsets[off]
        records.append(Record(r.kind, words, r.ids, r.names))
    return Blob(blob.order, records, bytes(strings))


def swapped(data: bytes) -> bytes:
    """The same BTF in the other byte order: every word of the header and the type section swapped."""
    blob = decode(data)
    return Blob(">" if blob.order == "<" else "<", blob.records, blob.strings).encode()


def elf_file(section: bytes, elfclass: int, order: str, name: str = ".BTF") -> bytes:
    """A relocatable ELF file holding ``section``, then a name table, then the section headers."""
    shdr = struct.Struct(order + ("IIQQQQIIQQ" if elfclass == 64 else "IIIIIIIIII"))
    ehdr_size = 64 if elfclass == 64 else 52
    names = b"\0.text\0" + name.encode() + b"\0.shstrtab\0"
    data_at, names_at = ehdr_size + 4, ehdr_size + 4 + len(section)
    shoff = names_at + len(names)
    headers = [
        bytes(shdr.size),
        shdr.pack(1, 1, 6, 0, ehdr_size, 4, 0, 0, 4, 0),
        shdr.pack(7, 1, 0, 0, data_at, len(section), 0, 0, 1, 0),
        shdr.pack(8 + len(name), 3, 0, 0, names_at, len(names), 0, 0, 1, 0),
    ]
    ident = b"\x7fELF" + bytes([elfclass // 32, 1 if order == "<" else 2, 1]) + bytes(9)
    fields = (1, 62, 1, 0, 0, shoff, 0, ehdr_size, 0, 0, shdr.size, len(headers), len(headers) - 1)
    ehdr = ident + struct.pack(order + ("HHIQQQIHHHHHH" if elfclass == 64 else "HHIIIIIHHHHHH"), *fields)
    return ehdr + b"\x90" * 4 + section + names + b"".join(headers)


# ---------------------------------------------------------------- seeds


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    elf: bool = False


C_SOURCE = """
#include <linux/netlink.h>
#include <linux/connector.h>
#include <linux/cn_proc.h>
struct bits { unsigned a:3; int b:5; unsigned char c; unsigned long long d:40; struct { unsigned e:7, f:1; }; };
struct nest { int n; union { struct { short lo, hi; }; int both; }; char tail[3][5]; const volatile struct bits *p; };
typedef struct nest nest_t;
enum wide { W_NEG = -1, W_BIG = 0x7fffffffffffLL };
struct bits b; struct nest n; nest_t t; enum wide w;
struct proc_event e; struct cn_msg m; struct nlmsghdr h;
int f(struct nest *x, int y) { return x->n + y; }
"""


def gcc_seeds(tmp: Path) -> list[Seed]:
    cc = os.environ.get("CC") or shutil.which("gcc")
    if cc is None:
        return []
    src = tmp / "seed.c"
    src.write_text(C_SOURCE)
    seeds = []
    for flags, label in (([], "64"), (["-m32"], "32")):
        obj = tmp / f"seed{label}.o"
        cmd = [cc, *flags, "-gbtf", "-fno-eliminate-unused-debug-types", "-c", "-o", str(obj), str(src)]
        if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
            continue
        data = obj.read_bytes()
        seeds.append(Seed(f"gcc -gbtf ELF{label}", data, elf=True))
        found = _elf.section(data, ".BTF")
        if found is not None and label == "64":
            seeds.append(Seed("gcc -gbtf raw", found.data))
    return seeds


def kernel_seeds(rng: random.Random) -> tuple[list[Seed], Seed | None]:
    """Small closed pieces of the running kernel's BTF, and the whole of it."""
    if not os.access(VMLINUX, os.R_OK):
        return [], None
    data = VMLINUX.read_bytes()
    blob = decode(data)
    by_name: dict[bytes, list[int]] = {}
    enums: list[int] = []
    constants = {c.encode() for c in CONSTANTS}
    for type_id, r in enumerate(blob.records, 1):
        if r.kind in (Kind.STRUCT, Kind.UNION):
            by_name.setdefault(string_at(blob.strings, r.words[0]), []).append(type_id)
        elif r.kind == Kind.ENUM and any(string_at(blob.strings, r.words[i]) in constants for i in r.names[1:]):
            enums.append(type_id)
    roots = [i for tag in TAGS for i in by_name.get(tag.encode(), [])] + enums
    seeds = [Seed("vmlinux: the binding's types", closure(blob, roots, 2000).encode())]
    others = sorted(n for n in by_name if n and n.decode(errors="replace") not in TAGS)
    for name in rng.sample(others, min(12, len(others))):
        piece = closure(blob, by_name[name][:1], 300)
        seeds.append(Seed(f"vmlinux: struct {name.decode(errors='replace')}", piece.encode()))
    return seeds, Seed("vmlinux", data)


def all_seeds(rng: random.Random, tmp: Path) -> tuple[list[Seed], Seed | None]:
    seeds, whole = kernel_seeds(rng)
    seeds += gcc_seeds(tmp)
    raw = [s for s in seeds if not s.elf]
    seeds += [Seed(f"{s.name}, big-endian", swapped(s.data)) for s in raw]
    for s in raw[:3]:
        for elfclass, order in ((32, "<"), (32, ">"), (64, ">")):
            body = s.data if order == "<" else swapped(s.data)
            label = f"{s.name} in ELF{elfclass}{'BE' if order == '>' else 'LE'}"
            seeds.append(Seed(label, elf_file(body, elfclass, order), elf=True))
    return seeds, whole


# ---------------------------------------------------------------- mutations


class Mutator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._decoded: dict[bytes, Blob] = {}

    def decoded(self, data: bytes) -> Blob:
        """A fresh copy of the seed ``data`` as records (each seed is decoded once)."""
        blob = self._decoded.get(data)
        if blob is None:
            blob = self._decoded[data] = decode(data)
        records = [Record(r.kind, list(r.words), list(r.ids), list(r.names)) for r in blob.records]
        return Blob(blob.order, records, blob.strings)

    def u32(self) -> int:
        r = self.rng
        return r.choice((r.choice(U32_EDGES), r.randrange(1 << 32), r.randrange(64)))

    # Structural mutations work on a decoded blob; each returns a label.

    def self_reference(self, b: Blob) -> str:
        candidates = [(i, r) for i, r in enumerate(b.records, 1) if r.ids]
        if not candidates:
            return "no type ids"
        type_id, r = self.rng.choice(candidates)
        r.words[self.rng.choice(r.ids)] = type_id
        return f"type 0x{type_id:x} refers to itself"

    def repoint(self, b: Blob) -> str:
        candidates = [r for r in b.records if r.ids]
        if not candidates:
            return "no type ids"
        r = self.rng.choice(candidates)
        target = self.rng.choice((self.rng.randrange(len(b.records) + 2), self.u32()))
        r.words[self.rng.choice(r.ids)] = target
        return f"a type id set to 0x{target:x}"

    def huge_count(self, b: Blob) -> str:
        r = self.rng.choice(b.records)
        if r.kind == Kind.ARRAY and self.rng.random() < 0.5:
            r.words[5] = self.rng.choice((0xFFFFFFFF, 0x80000000, self.u32()))
            return "nelems changed"
        vlen = self.rng.choice((0xFFFF, min((r.words[1] & 0xFFFF) + 1, 0xFFFF), self.rng.randrange(0x10000)))
        r.words[1] = (r.words[1] & ~0xFFFF) | vlen
        return f"vlen 0x{vlen:x}"

    def kind(self, b: Blob) -> str:
        r = self.rng.choice(b.records)
        kind = self.rng.randrange(32)
        r.words[1] = (r.words[1] & ~(0x1F << 24)) | kind << 24
        return f"kind 0x{kind:x}"

    def kind_flag(self, b: Blob) -> str:
        r = self.rng.choice(b.records)
        r.words[1] ^= 1 << 31
        return "kind_flag flipped"

    def name(self, b: Blob) -> str:
        r = self.rng.choice(b.records)
        r.words[self.rng.choice(r.names)] = self.rng.choice((self.rng.randrange(len(b.strings) + 1), self.u32()))
        return "a name offset moved"

    def _hook(self, b: Blob, type_id: int, label: str) -> str:
        """Make a struct or union of the blob hold ``type_id`` as a new (unnamed or named) member."""
        records = [r for r in b.records if r.kind in (Kind.STRUCT, Kind.UNION) and (r.words[1] & 0xFFFF) < 0xFFFF]
        if not records:
            return label + ", not held"
        r = self.rng.choice(records)
        r.words[1] += 1
        name = 0 if self.rng.random() < 0.7 else r.words[0]
        r.words += [name, type_id, self.rng.choice((0, 0x20, 0xFFFFFF))]
        r.ids.append(len(r.words) - 2)
        r.names.append(len(r.words) - 3)
        return label

    def chain(self, b: Blob) -> str:
        """Thousands of arrays or modifiers, each referring to the one before; maybe closed into a cycle."""
        n = self.rng.choice((2, 50, 1000, 1000, 5000))
        kinds = self.rng.choice(((Kind.ARRAY,), (Kind.TYPEDEF,), (Kind.CONST, Kind.ARRAY, Kind.VOLATILE)))
        first = len(b.records) + 1
        prev = self.rng.randrange(first)
        cyclic = self.rng.random() < 0.3
        for i in range(n):
            k = kinds[i % len(kinds)]
            ref = first + n - 1 if cyclic and i == 0 else prev
            if k == Kind.ARRAY:
                b.records.append(Record(k, [0, k << 24, 0, ref, ref, self.rng.choice((1, 2, 0xFFFFFFFF))], [3, 4], [0]))
            else:
                b.records.append(Record(k, [0, k << 24, ref], [2], [0]))
            prev = first + i
        return self._hook(b, prev, f"a {'cyclic ' if cyclic else ''}chain of 0x{n:x} {'/'.join(k.name for k in kinds)}")

    def doubling(self, b: Blob) -> str:
        """Anonymous structs each holding two members of the next: 2**n paths to one member."""
        depth = self.rng.choice((10, 30, 200))
        named = self.rng.random() < 0.3
        first = len(b.records) + 1
        names = [1 % max(len(b.strings), 1), 1 % max(len(b.strings), 1)] if named else [0, 0]
        leaf_type = self.rng.randrange(1, first) if first > 1 else 0
        b.records.append(Record(Kind.STRUCT, [0, Kind.STRUCT << 24 | 1, 4, 1, leaf_type, 0], [4], [0, 3]))
        for i in range(depth):
            inner = first + i
            words = [0, Kind.UNION << 24 | 2, 4, names[0], inner, 0, names[1], inner, 0]
            b.records.append(Record(Kind.UNION, words, [4, 7], [0, 3, 6]))
        if self.rng.random() < 0.2:  # and the innermost holds the outermost: a cycle
            b.records[first - 1].words[4] = first + depth
        return self._hook(b, first + depth, f"2**{depth} {'named ' if named else ''}member paths")

    STRUCTURAL: tuple[Callable[[Mutator, Blob], str], ...] = (
        self_reference,
        repoint,
        huge_count,
        kind,
        kind_flag,
        name,
        chain,
        doubling,
    )

    # Byte mutations work on any bytes.

    def flips(self, data: bytearray) -> str:
        n = self.rng.choice((1, 2, 8))
        for _ in range(n):
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        return f"{n} bit flips"

    def word(self, data: bytearray) -> str:
        at = self.rng.randrange(max(len(data) - 3, 1))
        value = self.u32()
        data[at : at + 4] = value.to_bytes(4, self.rng.choice(("little", "big")))
        return f"word 0x{value:x} at 0x{at:x}"

    def header(self, data: bytearray) -> str:
        at = self.rng.choice((2, 3, 4, 8, 12, 16, 20))
        value = self.u32()
        order: Literal["little", "big"] = "little" if data[:2] == b"\x9f\xeb" else "big"
        width = 1 if at in (2, 3) else 4
        data[at : at + width] = (value & (0xFF if width == 1 else 0xFFFFFFFF)).to_bytes(width, order)
        return f"header word at 0x{at:x} set to 0x{value:x}"

    def truncate(self, data: bytearray) -> str:
        n = self.rng.choice((self.rng.randrange(len(data) + 1), max(len(data) - self.rng.randrange(1, 16), 0)))
        del data[n:]
        return f"cut at 0x{n:x}"

    def elf_header(self, data: bytearray) -> str:
        at = self.rng.choice((4, 5, 0x20, 0x28, 0x2E, 0x30, 0x32, 0x3A, 0x3C, 0x3E))
        width = 1 if at < 8 else self.rng.choice((2, 4, 8))
        value = self.rng.choice((0, 1, 2, 0xFF, 0xFFFF, 0xFFFFFFFF, 1 << 63, self.rng.randrange(1 << 16)))
        if at + width <= len(data):
            order: Literal["little", "big"] = "little" if data[5:6] != b"\x02" else "big"
            data[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, order)
        return f"ELF header at 0x{at:x} set to 0x{value:x}"

    BYTES: tuple[Callable[[Mutator, bytearray], str], ...] = (flips, word, header, truncate)

    def mutate(self, seed: Seed) -> tuple[bytes, str]:
        r = self.rng
        labels = [seed.name]
        if seed.elf:
            found = _elf.section(seed.data, ".BTF")
            if found is None or r.random() < 0.3:
                data = bytearray(seed.data)
                labels.append(self.elf_header(data) if r.random() < 0.6 else self.flips(data))
                return bytes(data), "; ".join(labels)
            start = seed.data.find(found.data)
            btf, labels2 = self._mutate_btf(found.data)
            labels += labels2
            if len(btf) != len(found.data):  # a new size: rewrite the file around it
                return elf_file(btf, found.elfclass, "<" if found.byteorder == "little" else ">"), "; ".join(labels)
            return seed.data[:start] + btf + seed.data[start + len(btf) :], "; ".join(labels)
        btf, labels2 = self._mutate_btf(seed.data)
        return btf, "; ".join(labels + labels2)

    def _mutate_btf(self, data: bytes) -> tuple[bytes, list[str]]:
        r = self.rng
        labels = []
        if r.random() < 0.6:
            blob = self.decoded(data)
            for _ in range(r.choice((1, 1, 2, 3))):
                labels.append(r.choice(self.STRUCTURAL)(self, blob))
            data = blob.encode()
        out = bytearray(data)
        if not labels or r.random() < 0.3:
            labels.append(r.choice(self.BYTES)(self, out))
        return bytes(out), labels


# ---------------------------------------------------------------- the target


def parse(data: bytes) -> Btf:
    """What ``Btf.load`` does with a file's bytes."""
    if _elf.is_elf(data):
        try:
            found = _elf.section(data, ".BTF")
        except _elf.ElfError as e:
            raise BtfError(str(e)) from e
        if found is None:
            raise BtfError("no .BTF section in the ELF file")
        data = found.data
    return Btf(data)


def calls(btf: Btf, rng: random.Random) -> Iterator[tuple[Callable[..., object], tuple[object, ...]]]:
    """What the checker asks of a blob, one call at a time."""
    for tag in TAGS:
        for kind in (Kind.STRUCT, Kind.UNION):
            try:
                found = [(t, btf.fields(t.id)) for t in btf.named(tag, kind)[:4]]
            except BtfError:
                continue
            for t, fields in found:
                for f in fields[:64]:
                    yield btf.field, (t.id, f.path)
                    yield btf.size_of, (f.member.type_id,)
                    yield btf.resolve, (f.member.type_id,)
    for _ in range(16):
        type_id = rng.randrange(len(btf) + 1)
        for call in (btf.type, btf.resolve, btf.size_of, btf.fields):
            yield call, (type_id,)
        yield btf.field, (type_id, "a.b")
    for name in rng.sample(CONSTANTS, min(8, len(CONSTANTS))):
        yield btf.enumerator, (name,)


def exercise(data: bytes, rng: random.Random, *, check: bool) -> int:
    """Run one input; the number of BtfErrors. Anything else propagates."""
    try:
        btf = parse(data)
    except BtfError:
        return 1
    refused = 0
    for call, args in calls(btf, rng):
        try:
            call(*args)
        except BtfError:
            refused += 1
    if check:
        try:
            check_btf(BINDINGS, btf, kernel="6.18")
        except CheckError:
            refused += 1
    return refused


def fuzz(count: int, seconds: float, seed: int, *, check: bool = False, progress: bool = False) -> dict[str, object]:
    """Up to ``count`` mutated blobs within ``seconds`` (wall time); totals as a dict.

    ``progress`` prints a line to stderr every 10,000 inputs.
    """
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        seeds, whole = all_seeds(rng, Path(tmp))
    if not seeds:
        raise SystemExit("fuzz_btf: no seeds (no readable kernel BTF and no gcc that writes -gbtf)")
    mutator = Mutator(rng)
    start = time.perf_counter()
    inputs = foreign = 0
    slowest_s, slowest = 0.0, ""
    failures: list[str] = []
    while inputs < count and time.perf_counter() - start < seconds:
        # The whole kernel blob once in a thousand: it takes about 0.3 s to scan.
        chosen = whole if whole is not None and rng.randrange(1000) == 0 else rng.choice(seeds)
        data, label = mutator.mutate(chosen)
        cpu = time.process_time()
        try:
            exercise(data, rng, check=check)
        except Exception as e:
            foreign += 1
            if len(failures) < 20:
                failures.append(f"{label}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}")
        took = time.process_time() - cpu
        inputs += 1
        if progress and inputs % 10_000 == 0:
            print(f"fuzz_btf: {inputs} inputs, {foreign} foreign, {time.perf_counter() - start:.0f} s", file=sys.stderr)
        if took > slowest_s:
            slowest_s, slowest = took, label
    for failure in failures:
        print(failure, file=sys.stderr)
    return {
        "target": "btf",
        "inputs": inputs,
        "seconds": round(time.perf_counter() - start, 1),
        "foreign": foreign,
        "slowest_s": round(slowest_s, 4),
        "slowest": slowest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Fuzz the BTF reader with mutated kernel and compiler BTF.")
    parser.add_argument("--count", type=int, default=200_000, help="inputs to try at most (default 200000)")
    parser.add_argument("--seconds", type=float, default=3600.0, help="wall-time bound (default 3600)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="run check_btf on each parsed input as well")
    parser.add_argument("--progress", action="store_true", help="a line on stderr every 10000 inputs")
    args = parser.parse_args()
    result = fuzz(args.count, args.seconds, args.seed, check=args.check, progress=args.progress)
    keys = ["target", "inputs", "seconds", "foreign", "slowest_s", "slowest"]
    print(_common.table(keys, [[result[k] for k in keys]]))
    sys.exit(1 if result["foreign"] else 0)


if __name__ == "__main__":
    main()
