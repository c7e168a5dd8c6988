"""A reader for BTF, the kernel's compact type information, in pure Python.

``Btf(data)`` parses a raw BTF blob (what ``/sys/kernel/btf/vmlinux`` holds) and
``Btf.load(path)`` reads one from a file, raw or as the ``.BTF`` section of an
ELF object (``gcc -gbtf -c``). Types are decoded on demand: the kernel's blob
has over a hundred thousand of them and a check needs a few dozen.
``Btf.fields(type_id)`` and ``Btf.field(type_id, path)`` give the members of a
struct or union by the dotted paths C names them with, bit offsets and
bitfield widths exact under either encoding of bitfields.

The format is ``include/uapi/linux/btf.h`` and ``Documentation/bpf/btf.rst``.
Malformed input raises ``BtfError`` with the offending value in hex. Nothing
here recurses on the input's depth: chains of types are followed in loops that
stop at a cycle, and a walk over members visits each type once per path
prefix, within a budget (``WALK_BUDGET``), so hostile input cannot make it
exponential.
"""

from __future__ import annotations

import enum
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kstructs import _elf
from kstructs.errors import BtfError, ElfError

__all__ = ["BtfError", "Enumerator", "Field", "Kind", "Member", "Type", "Btf", "MAX_SIZE", "WALK_BUDGET"]

# include/uapi/linux/btf.h: struct btf_header
BTF_MAGIC: Final = 0xEB9F
BTF_VERSION: Final = 1
_HEADER_LEN: Final = 24  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len

# include/uapi/linux/btf.h: BTF_INT_ENCODING() bits of a BTF_KIND_INT
BTF_INT_SIGNED: Final = 1 << 0
BTF_INT_CHAR: Final = 1 << 1
BTF_INT_BOOL: Final = 1 << 2

# What Btf.load() reads at most, unless told otherwise: 128 MiB, twenty times the
# BTF of a distribution kernel (about 6 MiB), and a bound on the memory a
# hostile file can make the type index take (a few hundred MiB).
MAX_SIZE: Final = 1 << 27
# The kernel refuses BTF names longer than KSYM_NAME_LEN (512); a few times that
# is a name no compiler writes, and bounds the work of each string lookup.
_MAX_NAME: Final = 0x1000
# Steps one member walk may take (members visited plus characters of the paths
# it names): a hundred times what the kernel's largest struct needs.
WALK_BUDGET: Final = 0x40000
# sizeof of any type fits in a 64-bit size_t.
_MAX_SIZEOF: Final = (1 << 64) - 1


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
# Kind by number, for decoding; the scan has refused numbers past the last kind.
_KINDS: Final = tuple(Kind(min(k, max(Kind))) for k in range(32))
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
    int_offset: int = 0  # INT: BTF_INT_OFFSET, where the value bits start (old bitfield encoding)
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


@dataclass(frozen=True)
class Field:
    """A member of a struct or union, reached by the dotted path C names it with.

    Unnamed members (C11 anonymous structs and unions) add no component to
    the path: their members are reached as the outer type's own.
    ``bit_offset`` counts from the start of the outer type. ``bitfield_size``
    is the width of a bitfield, 0 for any other member, whether the struct
    encodes it in its member (``kind_flag``) or in the member's INT type
    (``BTF_INT_OFFSET`` and ``BTF_INT_BITS``, as pahole wrote before Linux 4.20).
    """

    path: str
    member: Member  # as the containing struct or union lists it
    bit_offset: int
    bitfield_size: int


_VOID: Final = Type(0, Kind.VOID, "void", kind_flag=False)
_RECORDS: Final = (Kind.STRUCT, Kind.UNION)
# What failed, for Btf._failed.
_RESOLVE, _SIZE, _FIELDS, _NAMES = range(4)
_FILE_KINDS: Final = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


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
        self._resolved: dict[int, int] = {}  # type id -> the id behind its typedefs and modifiers
        self._sizes: dict[int, int] = {}  # type id -> sizeof
        self._pointer: int | None = None
        self._names: dict[int, dict[str, Field]] = {}  # record id -> the members C reaches by one name
        self._paths: dict[int, tuple[Field, ...]] = {}  # record id -> Btf.fields()
        self._failed: dict[tuple[int, int], str] = {}  # (_RESOLVE etc., type id) -> the BtfError it ended in
        self._scan()

    @classmethod
    def load(cls, path: str | Path, *, max_size: int = MAX_SIZE) -> Btf:
        """Read raw BTF, or the ``.BTF`` section of an ELF file.

        Only a regular file is read (``/sys/kernel/btf/*`` are), and at most
        ``max_size`` bytes of it (``MAX_SIZE``, 128 MiB, unless told
        otherwise): a FIFO, a device or a larger file is a ``BtfError``, without
        waiting for or reading any of it. ``OSError`` if the file cannot be
        opened or read.
        """
        if max_size < 0:
            raise ValueError(f"max_size must be 0 or more, not {max_size}")
        data = _read_regular(path, max_size)
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
        end = self._strings.find(b"\0", offset, offset + _MAX_NAME + 1)
        if end < 0:
            if offset + _MAX_NAME < len(self._strings):
                raise BtfError(f"BTF string at 0x{offset:x} longer than 0x{_MAX_NAME:x} bytes")
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
        kind, vlen, kind_flag = _KINDS[(info >> 24) & 0x1F], info & 0xFFFF, bool(info >> 31)
        name = self.string(name_off)
        size, ref = (third, 0) if kind in _SIZED else (0, third)
        pos += 12

        # One Type(...) per kind, not dataclasses.replace(): decoding is most of a check's time.
        def make(**fields: Any) -> Type:
            fields.setdefault("type_id", ref)
            return Type(type_id, kind, name, kind_flag, size, **fields)

        if kind is Kind.INT:
            (word,) = struct.unpack_from(o + "I", types, pos)
            return make(encoding=(word >> 24) & 0x0F, int_offset=(word >> 16) & 0xFF, bits=word & 0xFF)
        if kind is Kind.ARRAY:
            elem, index, nelems = struct.unpack_from(o + "III", types, pos)
            return make(type_id=elem, index_type_id=index, nelems=nelems)
        if kind in (Kind.STRUCT, Kind.UNION):
            members = []
            for m_name, m_type, m_off in struct.iter_unpack(o + "III", types[pos : pos + 12 * vlen]):
                # With kind_flag, the offset word packs the bitfield size in its top byte.
                bit_offset, bitfield = (m_off & 0xFFFFFF, m_off >> 24) if kind_flag else (m_off, 0)
                members.append(Member(self.string(m_name), m_type, bit_offset, bitfield))
            return make(members=tuple(members))
        if kind is Kind.ENUM:
            # Values are 32 bits; kind_flag says whether they are signed (Linux 6.0).
            entries = struct.iter_unpack(o + ("Ii" if kind_flag else "II"), types[pos : pos + 8 * vlen])
            return make(enumerators=tuple(Enumerator(self.string(n), v) for n, v in entries))
        if kind is Kind.ENUM64:
            values = []
            for n, lo, hi in struct.iter_unpack(o + "III", types[pos : pos + 12 * vlen]):
                v = hi << 32 | lo
                values.append(Enumerator(self.string(n), v - (1 << 64) if kind_flag and v >> 63 else v))
            return make(enumerators=tuple(values))
        if kind is Kind.FUNC_PROTO:
            params = struct.iter_unpack(o + "II", types[pos : pos + 8 * vlen])
            return make(members=tuple(Member(self.string(n), t, 0) for n, t in params))
        if kind is Kind.DATASEC:
            # Each entry's name is read from the raw type, not by decoding it: a
            # DATASEC that lists itself must not decode itself again.
            entries = struct.iter_unpack(o + "III", types[pos : pos + 12 * vlen])
            return make(members=tuple(Member(self._name_of(t), t, off, sz) for t, off, sz in entries))
        if kind is Kind.VAR:
            (linkage,) = struct.unpack_from(o + "I", types, pos)
            return make(linkage=linkage)
        if kind is Kind.FUNC:
            return make(linkage=vlen)
        if kind is Kind.DECL_TAG:
            (component,) = struct.unpack_from(o + "i", types, pos)
            return make(component_idx=component)
        return make()

    def _name_of(self, type_id: int) -> str:
        cached = self._cache.get(type_id)
        if cached is not None:
            return cached.name
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"BTF type id out of range: 0x{type_id:x}")
        (name_off,) = struct.unpack_from(self._order + "I", self._types, self._offsets[type_id])
        return self.string(name_off)

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
        found = self._resolved.get(type_id)
        if found is not None:
            return self._cache[found]
        chain: list[int] = [type_id]
        seen: set[int] = {type_id}
        try:
            self._refail(_RESOLVE, type_id)
            t = self.type(type_id)
            while t.kind in _TRANSPARENT:
                known = self._resolved.get(t.type_id)
                if known is not None:
                    t = self._cache[known]
                    break
                self._refail(_RESOLVE, t.type_id)
                if t.type_id in seen:
                    raise BtfError(f"BTF type loop at type id 0x{t.type_id:x}")
                seen.add(t.type_id)
                chain.append(t.type_id)
                t = self.type(t.type_id)
        except BtfError as e:
            self._remember(_RESOLVE, chain, e)
            raise
        for i in chain:
            self._resolved[i] = t.id
        return t

    def size_of(self, type_id: int) -> int:
        """``sizeof`` of a type: through modifiers and typedefs, arrays as a whole."""
        found = self._sizes.get(type_id)
        if found is not None:
            return found
        arrays: list[Type] = []
        seen: set[int] = set()
        try:
            self._refail(_SIZE, type_id)
            t = self.resolve(type_id)
            size: int | None = None
            while t.kind is Kind.ARRAY:
                size = self._sizes.get(t.id)
                if size is not None:
                    break
                self._refail(_SIZE, t.id)
                if t.id in seen:
                    raise BtfError(f"BTF type loop at type id 0x{t.id:x}")
                seen.add(t.id)
                arrays.append(t)
                t = self.resolve(t.type_id)
            if size is None:
                size = self._unit_size(t)
            sizes = []
            for a in reversed(arrays):
                size *= a.nelems
                if size > _MAX_SIZEOF:
                    raise BtfError(f"BTF array 0x{a.id:x} larger than 0x{_MAX_SIZEOF:x} bytes")
                sizes.append((a.id, size))
        except BtfError as e:
            self._remember(_SIZE, [type_id, *(a.id for a in arrays)], e)
            raise
        self._sizes.update(sizes)
        self._sizes[type_id] = size
        return size

    # A walk that failed once fails the same way again: remembered, so that
    # asking again about any type on a long chain into a cycle costs nothing.
    def _refail(self, what: int, type_id: int) -> None:
        failed = self._failed.get((what, type_id))
        if failed is not None:
            raise BtfError(failed)

    def _remember(self, what: int, type_ids: list[int], error: BtfError) -> None:
        for i in type_ids:
            self._failed[what, i] = str(error)

    def _unit_size(self, t: Type) -> int:
        if t.kind is Kind.PTR:
            if self._pointer is None:
                longs = self.named("long unsigned int", Kind.INT) or self.named("long int", Kind.INT)
                self._pointer = longs[0].size if longs else 8
            return self._pointer
        if t.kind in _SIZED:
            return t.size
        raise BtfError(f"BTF type 0x{t.id:x} of kind {t.kind.name} has no size")

    # --- Members by path ----------------------------------------------------

    def fields(self, type_id: int) -> tuple[Field, ...]:
        """Every member of a struct or union by its dotted path, in declaration order.

        Paths go through unnamed members and into named members whose type is
        an anonymous struct or union (``event_data.fork.child_pid``), not into
        named struct types, which have their own name. A path that occurs
        twice (not valid C) is given once, at its first place. Empty for a
        type that is not a struct or union. ``BtfError`` if a struct contains
        itself or the walk exceeds ``WALK_BUDGET`` steps.
        """
        top = self.resolve(type_id)
        found = self._paths.get(top.id)
        if found is None:
            self._refail(_FIELDS, top.id)
            try:
                found = self._paths[top.id] = tuple(self._walk(top, into_named=True).values())
            except BtfError as e:
                self._remember(_FIELDS, [top.id], e)
                raise
        return found

    def field(self, type_id: int, path: str) -> Field | None:
        """The member at a dotted path, as C reaches it (``a.b`` is ``x.a.b``), or None.

        Each component is looked up among the named members of the type
        reached so far, those of its unnamed members included; the offset is
        from the start of ``type_id``.
        """
        found: Field | None = None
        base = 0
        for name in path.split("."):
            t = self.resolve(type_id if found is None else found.member.type_id)
            names = self._names.get(t.id)
            if names is None:
                self._refail(_NAMES, t.id)
                try:
                    names = self._names[t.id] = self._walk(t, into_named=False)
                except BtfError as e:
                    self._remember(_NAMES, [t.id], e)
                    raise
            inner = names.get(name)
            if inner is None:
                return None
            base += inner.bit_offset
            found = Field(path, inner.member, base, inner.bitfield_size)
        return found

    def _walk(self, top: Type, *, into_named: bool) -> dict[str, Field]:
        """The named members under ``top``, first occurrence of each path kept.

        An explicit stack instead of recursion; a (type, path prefix) already
        walked is not walked again, since everything under it is already
        found (with the offsets of its first occurrence), which keeps shared
        anonymous types linear; a type on the stack is a struct inside itself.
        """
        found: dict[str, Field] = {}
        if top.kind not in _RECORDS:
            return found
        walked: set[tuple[int, str]] = {(top.id, "")}
        on_stack: set[int] = {top.id}
        # Frames: the record, its offset from top, the path prefix, the next member index.
        stack: list[tuple[Type, int, str, int]] = [(top, 0, "", 0)]
        budget = WALK_BUDGET
        while stack:
            record, base, prefix, index = stack[-1]
            if index == len(record.members):
                stack.pop()
                on_stack.discard(record.id)
                continue
            stack[-1] = (record, base, prefix, index + 1)
            m = record.members[index]
            budget -= 1 + len(prefix) + len(m.name)
            if budget < 0:
                raise BtfError(f"BTF members of type 0x{top.id:x} past 0x{WALK_BUDGET:x} steps")
            mt = self.resolve(m.type_id)
            offset, bits = self._bitfield(record, m, mt)
            offset += base
            if m.name:
                path = prefix + m.name
                if path not in found:
                    found[path] = Field(path, m, offset, bits)
                if not (into_named and mt.kind in _RECORDS and not mt.name):
                    continue
                inner = path + "."
            elif mt.kind in _RECORDS:
                inner = prefix
            else:
                continue
            if mt.id in on_stack:
                raise BtfError(f"BTF type 0x{mt.id:x} contains itself")
            if (mt.id, inner) not in walked:
                walked.add((mt.id, inner))
                on_stack.add(mt.id)
                stack.append((mt, offset, inner, 0))
        return found

    def _bitfield(self, record: Type, m: Member, mt: Type) -> tuple[int, int]:
        """A member's bit offset in ``record`` and its bitfield width (0: not a bitfield)."""
        if record.kind_flag:
            return m.bit_offset, m.bitfield_size
        # Without kind_flag a bitfield's width and shift live in its INT type.
        if mt.kind is Kind.INT and (mt.int_offset or mt.bits != mt.size * 8):
            return m.bit_offset + mt.int_offset, mt.bits
        return m.bit_offset, 0

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
                ids = index.setdefault(name_off, [])
                if not ids or ids[-1] != type_id:  # an enum that repeats a name is listed once
                    ids.append(type_id)
        return index


def _read_regular(path: str | Path, max_size: int) -> bytes:
    """At most ``max_size`` bytes of a regular file; O_NONBLOCK so that opening a FIFO cannot wait."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "of an unknown type")
            raise BtfError(f"BTF file is {kind}, not a regular file: st_mode 0x{st.st_mode:x}")
        if st.st_size > max_size:
            raise BtfError(f"BTF file of 0x{st.st_size:x} bytes, larger than the limit of 0x{max_size:x}")
        chunks: list[bytes] = []
        total = 0
        # Not trusting st_size: a file can grow, and /proc files report 0.
        while chunk := os.read(fd, min(1 << 20, max_size + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_size:
                raise BtfError(f"BTF file larger than the limit of 0x{max_size:x} bytes")
    finally:
        os.close(fd)
    return b"".join(chunks)
