"""A reader for BTF, the kernel's compact type information, in pure Python.

``Btf(data)`` parses a raw BTF blob (what ``/sys/kernel/btf/vmlinux`` holds) and
``Btf.load(path)`` reads one from a file, raw or as the ``.BTF`` section of an
ELF object (``gcc -gbtf -c``). Types are decoded on demand: the kernel's blob
has over a hundred thousand of them and a check needs a few dozen.

The format is ``include/uapi/linux/btf.h`` and ``Documentation/bpf/btf.rst``.
Malformed input raises ``BtfError`` with the offending value in hex.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from kstructs import _elf
from kstructs.errors import BtfError, ElfError

__all__ = ["BtfError", "Enumerator", "Kind", "Member", "Type", "Btf"]

# include/uapi/linux/btf.h: struct btf_header
BTF_MAGIC: Final = 0xEB9F
BTF_VERSION: Final = 1
_HEADER_LEN: Final = 24  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len

# include/uapi/linux/btf.h: BTF_INT_ENCODING() bits of a BTF_KIND_INT
BTF_INT_SIGNED: Final = 1 << 0
BTF_INT_CHAR: Final = 1 << 1
BTF_INT_BOOL: Final = 1 << 2


class Kind(enum.IntEnum):
    """``BTF_KIND_*``: bits 24-28 of ``btf_type.info``."""

    VOID = 0  # BTF_KIND_UNKN: type id 0 only
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17  # Linux 5.16
    TYPE_TAG = 18  # Linux 5.17
    ENUM64 = 19  # Linux 6.0


# Bytes that follow the 12-byte struct btf_type: a fixed part, and a part per vlen entry.
_TRAILER: Final[dict[int, tuple[int, int]]] = {
    Kind.INT: (4, 0),  # __u32 encoding/offset/bits
    Kind.PTR: (0, 0),
    Kind.ARRAY: (12, 0),  # struct btf_array
    Kind.STRUCT: (0, 12),  # struct btf_member
    Kind.UNION: (0, 12),
    Kind.ENUM: (0, 8),  # struct btf_enum
    Kind.FWD: (0, 0),
    Kind.TYPEDEF: (0, 0),
    Kind.VOLATILE: (0, 0),
    Kind.CONST: (0, 0),
    Kind.RESTRICT: (0, 0),
    Kind.FUNC: (0, 0),
    Kind.FUNC_PROTO: (0, 8),  # struct btf_param
    Kind.VAR: (4, 0),  # struct btf_var
    Kind.DATASEC: (0, 12),  # struct btf_var_secinfo
    Kind.FLOAT: (0, 0),
    Kind.DECL_TAG: (4, 0),  # struct btf_decl_tag
    Kind.TYPE_TAG: (0, 0),
    Kind.ENUM64: (0, 12),  # struct btf_enum64
}
# Kinds whose third word is a size in bytes; for the others it is a type id.
_SIZED: Final = frozenset({Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FLOAT, Kind.DATASEC})
# Kinds that only qualify or rename another type.
_TRANSPARENT: Final = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})


@dataclass(frozen=True)
class Member:
    """A ``struct btf_member``, or a ``struct btf_param`` / ``btf_var_secinfo`` in the same shape."""

    name: str  # "" for an anonymous struct or union member
    type_id: int
    bit_offset: int  # for a DATASEC entry: its byte offset
    bitfield_size: int = 0  # 0 unless a bitfield; for a DATASEC entry: its byte size


@dataclass(frozen=True)
class Enumerator:
    name: str
    value: int


@dataclass(frozen=True)
class Type:
    """One decoded ``struct btf_type`` with what follows it.

    ``size`` is set for the sized kinds (INT, STRUCT, UNION, ENUM, ENUM64,
    FLOAT, DATASEC); ``type_id`` is the referenced type of the others.
    """

    id: int
    kind: Kind
    name: str  # "" when anonymous
    kind_flag: bool
    size: int = 0
    type_id: int = 0  # ARRAY: the element type; FUNC_PROTO: the return type
    encoding: int = 0  # INT: BTF_INT_* bits
    bits: int = 0  # INT: the number of value bits
    index_type_id: int = 0  # ARRAY
    nelems: int = 0  # ARRAY
    linkage: int = 0  # FUNC, VAR
    component_idx: int = -1  # DECL_TAG: the member or parameter tagged, -1 for the type itself
    members: tuple[Member, ...] = ()  # STRUCT, UNION; FUNC_PROTO parameters; DATASEC variables
    enumerators: tuple[Enumerator, ...] = ()  # ENUM, ENUM64

    @property
    def signed(self) -> bool:
        """An INT with the signed bit, or an ENUM/ENUM64 whose kind_flag marks signed values."""
        if self.kind is Kind.INT:
            return bool(self.encoding & BTF_INT_SIGNED)
        return self.kind in (Kind.ENUM, Kind.ENUM64) and self.kind_flag

    def member(self, name: str) -> Member | None:
        """The member called ``name``, or None."""
        return next((m for m in self.members if m.name == name), None)


_VOID: Final = Type(0, Kind.VOID, "void", kind_flag=False)


class Btf:
    """The types of one BTF blob, decoded on demand by id (1 and up) or by name."""

    def __init__(self, data: bytes) -> None:
        if len(data) < _HEADER_LEN:
            raise BtfError(f"BTF data too short: 0x{len(data):x} bytes")
        magic_le = int.from_bytes(data[:2], "little")
        if magic_le == BTF_MAGIC:
            order = "<"
        elif magic_le == 0x9FEB:
            order = ">"
        else:
            raise BtfError(f"bad BTF magic 0x{magic_le:04x}")
        version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(order + "BBIIIII", data, 2)
        if version != BTF_VERSION:
            raise BtfError(f"unsupported BTF version 0x{version:x}")
        if hdr_len < _HEADER_LEN or hdr_len > len(data):
            raise BtfError(f"bad BTF header length 0x{hdr_len:x}")
        type_start, str_start = hdr_len + type_off, hdr_len + str_off
        if type_start + type_len > len(data) or str_start + str_len > len(data):
            end = max(type_start + type_len, str_start + str_len)
            raise BtfError(f"BTF section past the end of the data: 0x{end:x}")
        self._order = order
        self._data = bytes(data)
        self._types = memoryview(self._data)[type_start : type_start + type_len]
        self._strings = self._data[str_start : str_start + str_len]
        self._offsets: list[int] = [-1]  # type id -> offset in the type section; id 0 is void
        self._by_name: dict[int, list[int]] = {}  # name_off -> type ids
        self._enum_ids: list[int] = []
        self._cache: dict[int, Type] = {0: _VOID}
        self._enumerator_index: dict[int, list[int]] | None = None
        self._scan()

    @classmethod
    def load(cls, path: str | Path) -> Btf:
        """Read raw BTF, or the ``.BTF`` section of an ELF file. ``OSError`` if unreadable."""
        data = Path(path).read_bytes()
        if _elf.is_elf(data):
            try:
                found = _elf.section(data, ".BTF")
            except ElfError as e:
                raise BtfError(str(e)) from e
            if found is None:
                raise BtfError("no .BTF section in the ELF file")
            data = found.data
        return cls(data)

    def _scan(self) -> None:
        head = struct.Struct(self._order + "III")
        # Per kind: (fixed trailer, trailer per vlen entry); None for kinds this reader does not know.
        trailers: list[tuple[int, int] | None] = [_TRAILER.get(k) for k in range(32)]
        enum_kinds = (int(Kind.ENUM), int(Kind.ENUM64))
        types, end, pos = self._types, len(self._types), 0
        offsets, by_name, enum_ids = self._offsets, self._by_name, self._enum_ids
        while pos < end:
            if pos + 12 > end:
                raise BtfError(f"BTF type section truncated at 0x{pos:x}")
            name_off, info, _ = head.unpack_from(types, pos)
            kind = (info >> 24) & 0x1F
            trailer = trailers[kind]
            if trailer is None:
                raise BtfError(f"unknown BTF kind 0x{kind:x} at type id 0x{len(offsets):x}")
            type_id = len(offsets)
            offsets.append(pos)
            if name_off:
                ids = by_name.get(name_off)
                if ids is None:
                    by_name[name_off] = [type_id]
                else:
                    ids.append(type_id)
            if kind in enum_kinds:
                enum_ids.append(type_id)
            pos += 12 + trailer[0] + trailer[1] * (info & 0xFFFF)
        if pos != end:
            raise BtfError(f"BTF type section truncated at 0x{end:x}")

    def __len__(self) -> int:
        """The number of types, void (id 0) included."""
        return len(self._offsets)

    def __iter__(self) -> Iterator[Type]:
        return (self.type(i) for i in range(1, len(self._offsets)))

    def string(self, offset: int) -> str:
        """The NUL-terminated string at ``offset`` of the string section."""
        if not 0 <= offset < len(self._strings):
            raise BtfError(f"BTF string offset out of range: 0x{offset:x}")
        end = self._strings.find(b"\0", offset)
        if end < 0:
            raise BtfError(f"BTF string not terminated at 0x{offset:x}")
        return self._strings[offset:end].decode("utf-8", "replace")

    def type(self, type_id: int) -> Type:
        """The type with id ``type_id`` (0 is void)."""
        found = self._cache.get(type_id)
        if found is None:
            if not 0 < type_id < len(self._offsets):
                raise BtfError(f"BTF type id out of range: 0x{type_id:x}")
            found = self._cache[type_id] = self._decode(type_id)
        return found

    def _decode(self, type_id: int) -> Type:
        o, types = self._order, self._types
        pos = self._offsets[type_id]
        name_off, info, third = struct.unpack_from(o + "III", types, pos)
        kind, vlen, kind_flag = Kind((info >> 24) & 0x1F), info & 0xFFFF, bool(info >> 31)
        name = self.string(name_off)
        size, ref = (third, 0) if kind in _SIZED else (0, third)
        pos += 12

        base = Type(type_id, kind, name, kind_flag, size, ref)
        if kind is Kind.INT:
            (word,) = struct.unpack_from(o + "I", types, pos)
            return replace(base, encoding=(word >> 24) & 0x0F, bits=word & 0xFF)
        if kind is Kind.ARRAY:
            elem, index, nelems = struct.unpack_from(o + "III", types, pos)
            return replace(base, type_id=elem, index_type_id=index, nelems=nelems)
        if kind in (Kind.STRUCT, Kind.UNION):
            members = []
            for m_name, m_type, m_off in struct.iter_unpack(o + "III", types[pos : pos + 12 * vlen]):
                # With kind_flag, the offset word packs the bitfield size in its top byte.
                bit_offset, bitfield = (m_off & 0xFFFFFF, m_off >> 24) if kind_flag else (m_off, 0)
                members.append(Member(self.string(m_name), m_type, bit_offset, bitfield))
            return replace(base, members=tuple(members))
        if kind is Kind.ENUM:
            # Values are 32 bits; kind_flag says whether they are signed (Linux 6.0).
            entries = struct.iter_unpack(o + ("Ii" if kind_flag else "II"), types[pos : pos + 8 * vlen])
            return replace(base, enumerators=tuple(Enumerator(self.string(n), v) for n, v in entries))
        if kind is Kind.ENUM64:
            values = []
            for n, lo, hi in struct.iter_unpack(o + "III", types[pos : pos + 12 * vlen]):
                v = hi << 32 | lo
                values.append(Enumerator(self.string(n), v - (1 << 64) if kind_flag and v >> 63 else v))
            return replace(base, enumerators=tuple(values))
        if kind is Kind.FUNC_PROTO:
            params = struct.iter_unpack(o + "II", types[pos : pos + 8 * vlen])
            return replace(base, members=tuple(Member(self.string(n), t, 0) for n, t in params))
        if kind is Kind.DATASEC:
            entries = struct.iter_unpack(o + "III", types[pos : pos + 12 * vlen])
            return replace(base, members=tuple(Member(self.type(t).name, t, off, sz) for t, off, sz in entries))
        if kind is Kind.VAR:
            (linkage,) = struct.unpack_from(o + "I", types, pos)
            return replace(base, linkage=linkage)
        if kind is Kind.FUNC:
            return replace(base, linkage=vlen)
        if kind is Kind.DECL_TAG:
            (component,) = struct.unpack_from(o + "i", types, pos)
            return replace(base, component_idx=component)
        return base

    def named(self, name: str, kind: Kind | None = None) -> list[Type]:
        """The types called ``name`` (of ``kind``, if given), in id order."""
        ids: list[int] = []
        for off in self._string_offsets(name):
            ids += self._by_name.get(off, [])
        return [t for t in map(self.type, sorted(ids)) if kind is None or t.kind is kind]

    def _string_offsets(self, name: str) -> Iterator[int]:
        needle, strings = b"\0" + name.encode() + b"\0", self._strings
        at = strings.find(needle)
        while at >= 0:
            yield at + 1
            at = strings.find(needle, at + 1)

    def resolve(self, type_id: int) -> Type:
        """The type behind typedefs and the const/volatile/restrict/type_tag modifiers."""
        t = self.type(type_id)
        for _ in range(len(self._offsets)):
            if t.kind not in _TRANSPARENT:
                return t
            t = self.type(t.type_id)
        raise BtfError(f"BTF type loop at type id 0x{type_id:x}")

    def size_of(self, type_id: int) -> int:
        """``sizeof`` of a type: through modifiers and typedefs, arrays as a whole."""
        t = self.resolve(type_id)
        if t.kind is Kind.ARRAY:
            return t.nelems * self.size_of(t.type_id)
        if t.kind is Kind.PTR:
            return self._pointer_size()
        if t.kind in _SIZED:
            return t.size
        raise BtfError(f"BTF type 0x{t.id:x} of kind {t.kind.name} has no size")

    def _pointer_size(self) -> int:
        longs = self.named("long unsigned int", Kind.INT) or self.named("long int", Kind.INT)
        return longs[0].size if longs else 8

    def enumerator(self, name: str) -> list[tuple[Type, int]]:
        """Every enum that has an enumerator called ``name``, with its value there."""
        if self._enumerator_index is None:
            self._enumerator_index = self._index_enumerators()
        found: list[tuple[Type, int]] = []
        for off in self._string_offsets(name):
            for type_id in self._enumerator_index.get(off, []):
                t = self.type(type_id)
                found += [(t, e.value) for e in t.enumerators if e.name == name]
        return found

    def _index_enumerators(self) -> dict[int, list[int]]:
        # Enumerator name offset -> enum type ids, read from the raw entries so
        # that no string is decoded to build it.
        index: dict[int, list[int]] = {}
        head = struct.Struct(self._order + "III")
        for type_id in self._enum_ids:
            pos = self._offsets[type_id]
            _, info, _ = head.unpack_from(self._types, pos)
            entry = 8 if (info >> 24) & 0x1F == Kind.ENUM else 12
            entries = self._types[pos + 12 : pos + 12 + entry * (info & 0xFFFF)]
            for (name_off,) in struct.iter_unpack(self._order + "I" + "x" * (entry - 4), entries):
                index.setdefault(name_off, []).append(type_id)
        return index
