"""kstructs.btf against BTF blobs built here by a small encoder, an ELF
wrapper, gcc's own BTF (``-gbtf``) and the running kernel's; and
kstructs.conformance.check_btf against a blob encoded from the binding's
classes, with one change at a time."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import compiler

from kstructs import cn_proc, connector, netlink
from kstructs.btf import Btf, BtfError, Kind
from kstructs.conformance import DEFAULT_BTF, Binding, CheckError, Finding, check_btf

BINDINGS = [Binding.from_module(m) for m in (netlink, connector, cn_proc)]


class Encoder:
    """Writes BTF: one ``add`` per type, ids from 1, a string table."""

    def __init__(self, order: str = "<") -> None:
        self.order = order
        self.types: list[bytes] = []
        self.strings = bytearray(b"\0")

    def name(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, kind: Kind, name: str, third: int, *, vlen: int = 0, flag: bool = False, tail: bytes = b"") -> int:
        info = int(flag) << 31 | int(kind) << 24 | vlen
        self.types.append(struct.pack(self.order + "III", self.name(name), info, third) + tail)
        return len(self.types)

    def int_(self, name: str, size: int, *, signed: bool = False, char: bool = False) -> int:
        encoding = int(signed) | int(char) << 1
        return self.add(Kind.INT, name, size, tail=struct.pack(self.order + "I", encoding << 24 | size * 8))

    def ref(self, kind: Kind, name: str, type_id: int) -> int:
        return self.add(kind, name, type_id)

    def array(self, elem: int, index: int, nelems: int) -> int:
        return self.add(Kind.ARRAY, "", 0, tail=struct.pack(self.order + "III", elem, index, nelems))

    def record(self, name: str, size: int, members: Iterable[tuple[str, int, int, int]], *, union: bool = False) -> int:
        """Members as (name, type id, bit offset, bitfield size)."""
        members = list(members)
        flag = any(bits for *_, bits in members)
        tail = b"".join(
            struct.pack(self.order + "III", self.name(n), t, bits << 24 | off if flag else off)
            for n, t, off, bits in members
        )
        kind = Kind.UNION if union else Kind.STRUCT
        return self.add(kind, name, size, vlen=len(members), flag=flag, tail=tail)

    def enum(self, name: str, values: Mapping[str, int], *, signed: bool = False) -> int:
        fmt = self.order + ("Ii" if signed else "II")
        tail = b"".join(struct.pack(fmt, self.name(n), v) for n, v in values.items())
        return self.add(Kind.ENUM, name, 4, vlen=len(values), flag=signed, tail=tail)

    def enum64(self, name: str, values: Mapping[str, int], *, signed: bool = False) -> int:
        packed = [(self.name(n), v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF) for n, v in values.items()]
        tail = b"".join(struct.pack(self.order + "III", *p) for p in packed)
        return self.add(Kind.ENUM64, name, 8, vlen=len(values), flag=signed, tail=tail)

    def blob(self, *, magic: int = 0xEB9F, version: int = 1) -> bytes:
        types = b"".join(self.types)
        header = struct.pack(
            self.order + "HBBIIIII", magic, version, 0, 24, 0, len(types), len(types), len(self.strings)
        )
        return header + types + bytes(self.strings)


def every_kind(order: str = "<") -> tuple[bytes, dict[str, int]]:
    """A blob with each kind once, and the ids of the interesting types."""
    e = Encoder(order)
    ids: dict[str, int] = {}
    ids["uint"] = e.int_("unsigned int", 4)
    ids["int"] = e.int_("int", 4, signed=True)
    ids["char"] = e.int_("char", 1, signed=True, char=True)
    ids["u32"] = e.ref(Kind.TYPEDEF, "__u32", ids["uint"])
    ids["const"] = e.ref(Kind.CONST, "", ids["u32"])
    ids["volatile"] = e.ref(Kind.VOLATILE, "", ids["const"])
    ids["ptr"] = e.ref(Kind.PTR, "", ids["int"])
    ids["restrict"] = e.ref(Kind.RESTRICT, "", ids["ptr"])
    ids["comm"] = e.array(ids["char"], ids["int"], 16)
    ids["anon"] = e.record("", 4, [("ruid", ids["u32"], 0, 0), ("rgid", ids["u32"], 0, 0)], union=True)
    members = [
        ("pid", ids["int"], 0, 0),
        ("", ids["anon"], 32, 0),  # a C11 unnamed member
        ("flags", ids["volatile"], 64, 3),  # a 3-bit bitfield
        ("comm", ids["comm"], 96, 0),
    ]
    ids["outer"] = e.record("outer", 28, members)
    ids["enum"] = e.enum("what", {"NEG": -1, "ONE": 1}, signed=True)
    ids["uenum"] = e.enum("", {"BIG": 0x80000000})
    ids["enum64"] = e.enum64("wide", {"HUGE": 1 << 40, "LOW": -2}, signed=True)
    ids["fwd"] = e.ref(Kind.FWD, "later", 0)
    ids["proto"] = e.add(
        Kind.FUNC_PROTO, "", ids["int"], vlen=1, tail=struct.pack(order + "II", e.name("a"), ids["int"])
    )
    ids["func"] = e.add(Kind.FUNC, "f", ids["proto"], vlen=1)  # vlen: linkage (global)
    ids["var"] = e.add(Kind.VAR, "v", ids["int"], tail=struct.pack(order + "I", 1))
    ids["datasec"] = e.add(Kind.DATASEC, ".data", 4, vlen=1, tail=struct.pack(order + "III", ids["var"], 0, 4))
    ids["float"] = e.add(Kind.FLOAT, "double", 8)
    ids["decl_tag"] = e.add(Kind.DECL_TAG, "tag", ids["outer"], tail=struct.pack(order + "i", 2))
    ids["type_tag"] = e.ref(Kind.TYPE_TAG, "user", ids["int"])
    return e.blob(), ids


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_every_kind_decodes(order: str) -> None:
    blob, ids = every_kind(order)
    btf = Btf(blob)
    assert len(btf) == len(ids) + 1
    assert {t.kind for t in btf} == set(Kind) - {Kind.VOID}

    assert btf.type(ids["uint"]).size == 4
    assert not btf.type(ids["uint"]).signed
    assert btf.type(ids["int"]).signed
    assert btf.type(ids["int"]).bits == 32
    assert btf.type(ids["char"]).encoding == 0b11

    assert btf.resolve(ids["volatile"]).id == ids["uint"]
    assert btf.resolve(ids["type_tag"]).id == ids["int"]
    assert btf.resolve(ids["restrict"]).kind is Kind.PTR
    assert btf.size_of(ids["restrict"]) == 8

    comm = btf.type(ids["comm"])
    assert (comm.kind, comm.type_id, comm.index_type_id, comm.nelems) == (Kind.ARRAY, ids["char"], ids["int"], 16)
    assert btf.size_of(ids["comm"]) == 16

    outer = btf.type(ids["outer"])
    assert outer.kind_flag
    assert [(m.name, m.type_id, m.bit_offset, m.bitfield_size) for m in outer.members] == [
        ("pid", ids["int"], 0, 0),
        ("", ids["anon"], 32, 0),
        ("flags", ids["volatile"], 64, 3),
        ("comm", ids["comm"], 96, 0),
    ]
    assert outer.member("comm") == outer.members[3]
    assert outer.member("nope") is None
    assert btf.type(ids["anon"]).kind is Kind.UNION
    assert btf.type(ids["anon"]).name == ""

    what = btf.type(ids["enum"])
    assert what.signed
    assert [(x.name, x.value) for x in what.enumerators] == [("NEG", -1), ("ONE", 1)]
    assert [(x.name, x.value) for x in btf.type(ids["uenum"]).enumerators] == [("BIG", 0x80000000)]
    assert not btf.type(ids["uenum"]).signed
    wide = btf.type(ids["enum64"])
    assert (wide.size, [(x.name, x.value) for x in wide.enumerators]) == (8, [("HUGE", 1 << 40), ("LOW", -2)])

    assert btf.type(ids["fwd"]).name == "later"
    proto = btf.type(ids["proto"])
    assert (proto.type_id, [(p.name, p.type_id) for p in proto.members]) == (ids["int"], [("a", ids["int"])])
    assert (btf.type(ids["func"]).type_id, btf.type(ids["func"]).linkage) == (ids["proto"], 1)
    assert btf.type(ids["var"]).linkage == 1
    sec = btf.type(ids["datasec"])
    assert [(m.name, m.type_id, m.bit_offset, m.bitfield_size) for m in sec.members] == [("v", ids["var"], 0, 4)]
    assert btf.type(ids["float"]).size == 8
    assert btf.type(ids["decl_tag"]).component_idx == 2
    assert btf.type(0).kind is Kind.VOID


def test_lookup_by_name() -> None:
    blob, ids = every_kind()
    btf = Btf(blob)
    assert [t.id for t in btf.named("outer")] == [ids["outer"]]
    assert [t.id for t in btf.named("what", Kind.ENUM)] == [ids["enum"]]
    assert btf.named("what", Kind.STRUCT) == []
    assert btf.named("absent") == []
    assert [(t.id, v) for t, v in btf.enumerator("BIG")] == [(ids["uenum"], 0x80000000)]
    assert [(t.id, v) for t, v in btf.enumerator("LOW")] == [(ids["enum64"], -2)]
    assert btf.enumerator("NOPE") == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b[:10], "BTF data too short: 0xa bytes"),
        (lambda b: b"\x00\x00" + b[2:], "bad BTF magic 0x0000"),
        (lambda b: b[:2] + b"\x02" + b[3:], "unsupported BTF version 0x2"),
        (lambda b: b[:-5], "BTF section past the end of the data"),
        (lambda b: b[:4] + struct.pack("<I", 0) + b[8:], "bad BTF header length 0x0"),
    ],
    ids=["short", "magic", "version", "truncated", "header-length"],
)
def test_malformed_header(change: Callable[[bytes], bytes], message: str) -> None:
    blob, _ = every_kind()
    with pytest.raises(BtfError, match=message):
        Btf(change(blob))


def test_unknown_kind_and_bad_references() -> None:
    e = Encoder()
    e.int_("int", 4, signed=True)
    e.add(Kind.INT, "", 0)  # an INT without its trailing word: the section ends mid-type
    with pytest.raises(BtfError, match="truncated"):
        Btf(e.blob())

    e = Encoder()
    e.types.append(struct.pack("<III", 0, 31 << 24, 0))
    with pytest.raises(BtfError, match="unknown BTF kind 0x1f at type id 0x1"):
        Btf(e.blob())

    e = Encoder()
    e.types.append(struct.pack("<III", 0xFFFF, int(Kind.PTR) << 24, 0))
    btf = Btf(e.blob())
    with pytest.raises(BtfError, match="BTF string offset out of range: 0xffff"):
        btf.type(1)
    with pytest.raises(BtfError, match="BTF type id out of range: 0x2"):
        btf.type(2)

    e = Encoder()
    e.ref(Kind.TYPEDEF, "loop", 1)
    with pytest.raises(BtfError, match="BTF type loop"):
        Btf(e.blob()).resolve(1)


def elf64(section: bytes, name: str = ".BTF") -> bytes:
    """A minimal little-endian ELF64 relocatable file holding one section."""
    names = b"\0" + name.encode() + b"\0.shstrtab\0"
    data_at = 64
    names_at = data_at + len(section)
    shoff = (names_at + len(names) + 7) & ~7
    shdr = struct.Struct("<IIQQQQIIQQ")
    headers = [
        bytes(shdr.size),
        shdr.pack(1, 1, 0, 0, data_at, len(section), 0, 0, 1, 0),
        shdr.pack(len(name) + 2, 3, 0, 0, names_at, len(names), 0, 0, 1, 0),
    ]
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, shdr.size, 3, 2)
    body = ehdr + section + names
    return body + bytes(shoff - len(body)) + b"".join(headers)


def test_load_raw_and_elf(tmp_path: Path) -> None:
    blob, ids = every_kind()
    raw, elf = tmp_path / "raw.btf", tmp_path / "obj.o"
    raw.write_bytes(blob)
    elf.write_bytes(elf64(blob))
    assert [t.name for t in Btf.load(raw)] == [t.name for t in Btf.load(elf)]
    assert Btf.load(elf).type(ids["outer"]).size == 28
    (tmp_path / "other.o").write_bytes(elf64(b"data", ".text"))
    with pytest.raises(BtfError, match=r"no \.BTF section in the ELF file"):
        Btf.load(tmp_path / "other.o")


@pytest.mark.parametrize("size", [0x34, 0x3F])
def test_load_short_elf64(tmp_path: Path, size: int) -> None:
    """Long enough for an ELF32 header, too short for an ELF64 one: a BtfError, not struct.error."""
    path = tmp_path / "short.o"
    path.write_bytes(elf64(b"")[:size])
    with pytest.raises(BtfError, match=f"ELF file too short for its header: 0x{size:x} bytes"):
        Btf.load(path)


# --- check_btf against a blob encoded from the binding's own classes --------


def encode(
    classes: Iterable[type[ctypes.Structure] | type[ctypes.Union]],
    *,
    enums: Mapping[str, Mapping[str, int]] = {},
    offsets: Mapping[str, int] = {},
    signed: Iterable[str] = (),
    drop: Iterable[str] = (),
    extra: Mapping[str, str] = {},
) -> Btf:
    """BTF for ctypes classes. ``offsets`` moves a field ("cls.field" -> byte
    offset), ``signed`` makes fields signed, ``drop`` leaves out fields or whole
    classes, ``extra`` adds a u32 field ("cls" -> name) at the end."""
    e = Encoder()
    u32 = e.int_("unsigned int", 4)
    made: dict[Any, int] = {}
    drop, signed = set(drop), set(signed)

    def scalar(ctype: Any, is_signed: bool) -> int:
        key = (ctypes.sizeof(ctype), is_signed, ctype is ctypes.c_char)
        if key not in made:
            made[key] = e.int_(f"int{key}", key[0], signed=key[1], char=key[2])
        return made[key]

    def encode_type(ctype: Any, field: str) -> int:
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Array):
            info = dict(vars(ctype))
            return e.array(encode_type(info["_type_"], field), u32, int(info["_length_"]))
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure | ctypes.Union):
            return encode_record(ctype)
        is_signed = field in signed or (ctype is not ctypes.c_char and ctype(-1).value < 0)
        return scalar(ctype, is_signed)

    def encode_record(cls: type[ctypes.Structure] | type[ctypes.Union]) -> int:
        if cls in made:
            return made[cls]
        members = []
        for fname, ftype, *_ in cls._fields_:
            key = f"{cls.__name__}.{fname}"
            if key in drop:
                continue
            offset = offsets.get(key, getattr(cls, fname).offset)
            members.append((fname, encode_type(ftype, key), offset * 8, 0))
        if cls.__name__ in extra:
            members.append((extra[cls.__name__], u32, ctypes.sizeof(cls) * 8, 0))
        name = "" if "__" in cls.__name__ else cls.__name__
        made[cls] = e.record(name, ctypes.sizeof(cls), members, union=issubclass(cls, ctypes.Union))
        return made[cls]

    for cls in classes:
        if cls.__name__ not in drop:
            encode_record(cls)
    for name, values in enums.items():
        e.enum(name, values)
    return Btf(e.blob())


ALL_TYPES = [cls for b in BINDINGS for cls in b.types]
CN_ENUMS = {
    "proc_cn_event": {
        n: getattr(cn_proc, n) for n in cn_proc.CONSTANTS if n.startswith("PROC_EVENT_") and n != "PROC_EVENT_ALL"
    },
    "proc_cn_mcast_op": {"PROC_CN_MCAST_LISTEN": 1, "PROC_CN_MCAST_IGNORE": 2},
}


def mismatches(findings: Iterable[Finding]) -> set[tuple[str, str, object, object]]:
    return {(f.category, f.item, f.binding, f.c) for f in findings}


def test_binding_matches_its_own_encoding() -> None:
    report = check_btf(BINDINGS, encode(ALL_TYPES, enums=CN_ENUMS), kernel="6.18")
    assert report.findings == ()
    assert report.version == "6.18"
    assert report.checked > 250


@pytest.mark.parametrize(
    ("kwargs", "kernel", "expected"),
    [
        (
            {"offsets": {"exit_proc_event.exit_signal": 16}},
            "6.18",
            {("offset", "struct exit_proc_event.exit_signal", 12, 16)},
        ),
        ({"signed": ["proc_event.cpu"]}, "6.18", {("signedness", "struct proc_event.cpu", "unsigned", "signed")}),
        ({"extra": {"cb_id": "more"}}, "6.18", {("missing-in-binding", "struct cb_id.more", None, 8)}),
        (
            {"enums": {**CN_ENUMS, "proc_cn_mcast_op": {**CN_ENUMS["proc_cn_mcast_op"], "PROC_CN_MCAST_FLUSH": 3}}},
            "6.18",
            {("missing-in-binding", "PROC_CN_MCAST_FLUSH", None, 3)},
        ),
        (
            {"enums": {**CN_ENUMS, "proc_cn_event": {**CN_ENUMS["proc_cn_event"], "PROC_EVENT_EXIT": 0x100}}},
            "6.18",
            {("value", "PROC_EVENT_EXIT", 0x80000000, 0x100)},
        ),
        ({"drop": ["proc_input"]}, "6.18", {("not-in-btf", "struct proc_input", 8, None)}),
        ({"drop": ["proc_input"]}, "6.1", {("newer", "struct proc_input", 8, None)}),
        (
            {"drop": ["exit_proc_event.parent_tgid"]},
            "4.17",
            {("newer", "struct exit_proc_event.parent_tgid", 20, None)},
        ),
        (
            {"drop": ["exit_proc_event.parent_tgid"]},
            "6.18",
            {("missing-in-btf", "struct exit_proc_event.parent_tgid", 20, None)},
        ),
        ({"drop": ["cb_id.val"]}, "6.18", {("missing-in-btf", "struct cb_id.val", 4, None)}),
    ],
    ids=[
        "offset",
        "signedness",
        "new-field",
        "new-enumerator",
        "enumerator-value",
        "absent-type",
        "absent-newer-type",
        "absent-newer-field",
        "absent-field",
        "absent-field-no-version",
    ],
)
def test_one_change_one_finding(
    kwargs: dict[str, Any], kernel: str, expected: set[tuple[str, str, object, object]]
) -> None:
    kwargs.setdefault("enums", CN_ENUMS)
    report = check_btf(BINDINGS, encode(ALL_TYPES, **kwargs), kernel=kernel)
    assert mismatches(report.findings) == expected
    assert report.failed() == (report.findings[0].category not in ("newer", "not-in-btf"))


def test_unreadable_btf_is_a_check_error(tmp_path: Path) -> None:
    with pytest.raises(CheckError, match="cannot read BTF"):
        check_btf(BINDINGS, tmp_path / "absent")
    (tmp_path / "junk").write_bytes(b"not btf at all, not at all")
    with pytest.raises(CheckError, match=r"unreadable BTF .*bad BTF magic"):
        check_btf(BINDINGS, tmp_path / "junk")


@pytest.mark.cc
def test_gcc_btf_of_the_installed_headers(tmp_path: Path) -> None:
    """gcc's own BTF (-gbtf) of the installed headers: the same layouts the probe sees."""
    cc = compiler()
    src = tmp_path / "h.c"
    src.write_text("".join(f"#include <{b.header}>\n" for b in BINDINGS))
    obj = tmp_path / "h.o"
    built = subprocess.run(
        [cc, "-gbtf", "-fno-eliminate-unused-debug-types", "-c", "-o", str(obj), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        pytest.skip(f"{cc} cannot emit BTF (-gbtf needs gcc 12 or later)")
    report = check_btf(BINDINGS, obj, kernel="6.1")
    assert [f for f in report.findings if f.severity == "mismatch"] == []
    assert report.checked > 250


def running_kernel_btf() -> Btf:
    if not os.access(DEFAULT_BTF, os.R_OK):
        pytest.skip(f"no readable {DEFAULT_BTF} (a kernel without CONFIG_DEBUG_INFO_BTF)")
    return Btf.load(DEFAULT_BTF)


def test_running_kernel_btf_parses() -> None:
    btf = running_kernel_btf()
    assert len(btf) > 1000
    (event,) = btf.named("proc_event", Kind.STRUCT)
    assert event.size == ctypes.sizeof(cn_proc.proc_event)
    assert [m.name for m in event.members] == [f[0] for f in cn_proc.proc_event._fields_]
    data = btf.resolve(event.members[-1].type_id)
    assert (data.kind, data.name) == (Kind.UNION, "")
    (_, value), *_ = btf.enumerator("PROC_EVENT_EXIT")
    assert value == cn_proc.PROC_EVENT_EXIT


# --- bit offsets and bitfields ------------------------------------------------

BITFIELDS = """
struct bits {
    unsigned a:3;
    int b:5;
    unsigned char c;
    unsigned long long d:40;
    struct { unsigned e:7, f:1; };
    unsigned :4;
    union { struct { unsigned short g:9; signed char h:2; } in; unsigned long long i:33; } u;
    unsigned :0;
    unsigned j:1;
    short k;
};
struct bits bits;
"""
# Each member set to all ones in a zeroed struct: where the compiler puts its bits.
PROBE = r"""
#include <stdio.h>
#include <string.h>
@BITFIELDS@
static void where(const char *path, const unsigned char *p, int big_endian) {
    int first = -1, n = 0;
    for (int i = 0; i < (int)sizeof(struct bits) * 8; i++) {
        int bit = big_endian ? 7 - i % 8 : i % 8;
        if (p[i / 8] >> bit & 1) {
            if (first < 0) first = i;
            n++;
        }
    }
    printf("%s %d %d\n", path, first, n);
}
#define AT(path) do { struct bits s; memset(&s, 0, sizeof s); s.path = -1; \
    where(#path, (const unsigned char *)&s, __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__); } while (0)
int main(void) {
    AT(a); AT(b); AT(c); AT(d); AT(e); AT(f); AT(u.in.g); AT(u.in.h); AT(u.i); AT(j); AT(k);
    return 0;
}
""".replace("@BITFIELDS@", BITFIELDS)
BITFIELD_WIDTHS = {"a": 3, "b": 5, "d": 40, "e": 7, "f": 1, "u.in.g": 9, "u.in.h": 2, "u.i": 33, "j": 1}


@pytest.mark.cc
def test_bitfields_from_gcc_btf(tmp_path: Path) -> None:
    """Bit offsets and widths in gcc's BTF, against the bits the compiled code sets."""
    cc = compiler()
    (tmp_path / "bits.c").write_text(BITFIELDS)
    (tmp_path / "probe.c").write_text(PROBE)
    obj, exe = tmp_path / "bits.o", tmp_path / "probe"
    built = subprocess.run(
        [cc, "-gbtf", "-c", "-o", str(obj), str(tmp_path / "bits.c")], capture_output=True, check=False
    )
    if built.returncode != 0:
        pytest.skip(f"{cc} cannot emit BTF (-gbtf needs gcc 12 or later)")
    subprocess.run([cc, "-o", str(exe), str(tmp_path / "probe.c")], check=True)
    truth: dict[str, tuple[int, int]] = {}
    for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines():
        name, at, bits_set = line.split()
        truth[name] = (int(at), int(bits_set))
    assert len(truth) == 11

    btf = Btf.load(obj)
    (bits,) = btf.named("bits", Kind.STRUCT)
    for path, (first, width) in truth.items():
        found = btf.field(bits.id, path)
        assert found is not None, path
        assert found.bit_offset == first, path
        if path in BITFIELD_WIDTHS:
            assert (found.bitfield_size, width) == (BITFIELD_WIDTHS[path], BITFIELD_WIDTHS[path]), path
        else:
            assert (found.bitfield_size, btf.size_of(found.member.type_id) * 8) == (0, width), path
    # The walk names every member C can name (the unnamed bitfields are not among them), in order.
    paths = [f.path for f in btf.fields(bits.id)]
    assert paths == ["a", "b", "c", "d", "e", "f", "u", "u.in", "u.in.g", "u.in.h", "u.i", "j", "k"]
    assert {f.path: f.bit_offset for f in btf.fields(bits.id) if f.path in truth} == {p: t[0] for p, t in truth.items()}


def test_bitfields_without_kind_flag() -> None:
    """The encoding before kind_flag (Linux 4.20): width and shift in the member's INT type."""
    e = Encoder()
    e.int_("unsigned int", 4)
    # BTF_INT_ENCODING << 24 | BTF_INT_OFFSET << 16 | BTF_INT_BITS
    three = e.add(Kind.INT, "unsigned int", 4, tail=struct.pack("<I", 0 << 24 | 2 << 16 | 3))
    inner = e.record("", 4, [("y", three, 4, 0)], union=True)
    top = e.record("old", 8, [("x", 1, 0, 0), ("z", three, 32, 0), ("", inner, 32, 0)])
    btf = Btf(e.blob())
    assert not btf.type(top).kind_flag
    assert btf.type(three).int_offset == 2
    assert [(f.path, f.bit_offset, f.bitfield_size) for f in btf.fields(top)] == [
        ("x", 0, 0),
        ("z", 34, 3),
        ("y", 38, 3),
    ]
    found = btf.field(top, "y")
    assert found is not None and (found.bit_offset, found.bitfield_size) == (38, 3)


def test_field_paths_match_c_names() -> None:
    blob, ids = every_kind()
    btf = Btf(blob)
    paths = [(f.path, f.bit_offset, f.bitfield_size) for f in btf.fields(ids["outer"])]
    assert paths == [("pid", 0, 0), ("ruid", 32, 0), ("rgid", 32, 0), ("flags", 64, 3), ("comm", 96, 0)]
    found = btf.field(ids["outer"], "rgid")
    assert found is not None and found.member.type_id == ids["u32"]
    assert btf.field(ids["outer"], "comm.x") is None
    assert btf.field(ids["outer"], "nope") is None
    assert btf.fields(ids["int"]) == ()


# --- a short fuzz run -----------------------------------------------------------


def test_short_fuzz_run() -> None:
    """A few hundred mutated blobs (bench/fuzz_btf.py): no exception but BtfError."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fuzz_btf", Path(__file__).parent.parent / "bench" / "fuzz_btf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_btf"] = module  # its dataclasses look their module up there
    sys.path.insert(0, str(Path(spec.origin or "").parent))  # for its _common
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
        del sys.modules["fuzz_btf"]
    result = module.fuzz(400, 600.0, 7)
    assert result["target"] == "btf"
    assert result["foreign"] == 0, result
    assert isinstance(result["inputs"], int) and result["inputs"] > 0
