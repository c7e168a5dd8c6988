"""The binding side of a check as plain data: record layouts and their field paths.

A ``RecordInfo`` holds the numbers one interpreter's ctypes computed for a
``Structure`` or ``Union`` (read from a ``discover`` document, so that they
may come from another interpreter); ``field_paths`` lists the fields of a
record as C names them, walking into the members whose types have no name of
their own in C.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kstructs.conformance import discover
from kstructs.errors import CheckError

# How deep records may nest inside each other (C compilers allow far less in practice).
MAX_DEPTH = 64


@dataclass(frozen=True)
class FieldInfo:
    """One entry of ``_fields_``: its name, offset and type descriptor."""

    name: str
    offset: int
    type: Mapping[str, Any]  # kind, size and per kind: signed, elem and length, ref, to
    bits: int = 0  # bitfield width, 0 if none
    masks: Mapping[str, str] | None = None  # "-1"/"1" -> bytes (hex) of the record with only this field set


@dataclass(frozen=True)
class RecordInfo:
    """One ctypes ``Structure`` or ``Union`` as its interpreter lays it out."""

    key: str  # "module:Qualname"
    name: str
    qualname: str
    kind: str  # "struct" or "union"
    size: int
    align: int
    opaque: bool  # no _fields_: only the name is declared
    pack: int | None
    swapped: bool  # a BigEndianStructure on a little-endian machine, or the reverse
    anonymous: tuple[str, ...]
    fields: tuple[FieldInfo, ...]
    align_requested: int | None = None  # the class's _align_, honoured or not

    @property
    def tag(self) -> str:
        """The C tag its class name suggests: ``struct nlmsghdr``."""
        return f"{self.kind} {self.name}"

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> RecordInfo:
        try:
            return cls(
                key=str(doc["key"]),
                name=str(doc["name"]),
                qualname=str(doc["qualname"]),
                kind=str(doc["kind"]),
                size=int(doc["size"]),
                align=int(doc["align"]),
                opaque=bool(doc["opaque"]),
                pack=doc.get("pack"),
                swapped=bool(doc.get("swapped", False)),
                anonymous=tuple(doc.get("anonymous", ())),
                fields=tuple(
                    FieldInfo(str(f["name"]), int(f["offset"]), f["type"], int(f.get("bits", 0)), f.get("masks"))
                    for f in doc["fields"]
                ),
                align_requested=_positive(doc.get("align_requested")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckError(f"malformed binding description: {type(e).__name__}: {e}") from None


def _positive(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CheckError(f"malformed binding description: align_requested {value!r}")
    return value


def describe(types: Iterable[type[ctypes.Structure] | type[ctypes.Union]]) -> dict[str, RecordInfo]:
    """This interpreter's layouts of some classes and every record their fields reach."""
    out: dict[str, RecordInfo] = {}
    queue: list[type] = list(types)
    while queue:
        cls = queue.pop(0)
        if discover.key(cls) in out:
            continue
        reached: list[type] = []
        out[discover.key(cls)] = RecordInfo.from_doc(discover.describe_record(cls, reached))
        queue += reached
    return out


def is_legacy_nested(rec: RecordInfo) -> bool:
    """kstructs' own convention: the class of an untagged member type is named ``parent__member``."""
    return "__" in rec.name.lstrip("_")


@dataclass(frozen=True)
class FieldPath:
    """A field reached from an outer record, as C spells its path."""

    path: str  # "event_data.fork", C names, from the outer record
    pypath: str  # the same path in the binding's names
    offset: int  # from the start of the outer record
    type: Mapping[str, Any]
    nested: bool  # a record member type without a C name of its own: walked into
    named: RecordInfo | None  # a record member type checked under its own name
    bits: int
    masks: Mapping[str, str] | None
    base: int  # offset of the record that declares the field
    owner: RecordInfo  # the record that declares the field


def elem(t: Mapping[str, Any]) -> Mapping[str, Any]:
    """The innermost element type of (nested) arrays."""
    while t.get("kind") == "array":
        t = t["elem"]
    return t


def field_paths(
    rec: RecordInfo,
    records: Mapping[str, RecordInfo],
    *,
    walk_into: Callable[[RecordInfo, str], bool],
    cname: Callable[[RecordInfo, str], str],
) -> list[FieldPath]:
    """The fields of ``rec``, depth first, with the members of anonymous and
    untagged member types reached as their C paths. ``walk_into(child, path)``
    says whether a record member type has no name of its own in C;
    ``cname(record, field)`` maps a binding field name to C's."""
    out: list[FieldPath] = []
    # (record, C path prefix, binding path prefix, offset, depth, index of the next field)
    stack: list[tuple[RecordInfo, str, str, int, int]] = [(rec, "", "", 0, 0)]
    pending: list[Iterator[FieldInfo]] = [iter(rec.fields)]
    while pending:
        owner, prefix, pyprefix, base, depth = stack[-1]
        f = next(pending[-1], None)
        if f is None:
            stack.pop()
            pending.pop()
            continue
        offset = base + f.offset
        child = records.get(f.type.get("ref", "")) if f.type.get("kind") == "record" else None
        if f.name in owner.anonymous and child is not None:
            # A C11 unnamed member: its fields are reached as if they were this level's.
            _push(stack, pending, child, prefix=prefix, pyprefix=pyprefix, offset=offset, depth=depth)
            continue
        cn = cname(owner, f.name)
        path, pypath = prefix + cn, pyprefix + f.name
        nested = child is not None and walk_into(child, path)
        named = child if child is not None and not nested else None
        out.append(FieldPath(path, pypath, offset, f.type, nested, named, f.bits, f.masks, base, owner))
        if nested and child is not None:
            _push(stack, pending, child, prefix=path + ".", pyprefix=pypath + ".", offset=offset, depth=depth)
    return out


def _push(
    stack: list[tuple[RecordInfo, str, str, int, int]],
    pending: list[Iterator[FieldInfo]],
    child: RecordInfo,
    *,
    prefix: str,
    pyprefix: str,
    offset: int,
    depth: int,
) -> None:
    if depth + 1 > MAX_DEPTH:
        raise CheckError(f"records nested deeper than {MAX_DEPTH} at {child.qualname}")
    stack.append((child, prefix, pyprefix, offset, depth + 1))
    pending.append(iter(child.fields))


def signed(t: Mapping[str, Any]) -> bool | None:
    """Whether a scalar is signed; None for char, pointers, records and the like."""
    return bool(t["signed"]) if t.get("kind") == "int" and "signed" in t else None


def describe_type(t: Mapping[str, Any], records: Mapping[str, RecordInfo]) -> str:
    """A field type in words, for findings."""
    kind = t.get("kind")
    size = t.get("size")
    if kind == "array":
        e = t["elem"]
        return f"array of {t['length']} x {describe_type(e, records)}"
    if kind == "record":
        r = records.get(t.get("ref", ""))
        return r.tag if r is not None else "a record"
    if kind == "int":
        return f"{'' if t.get('signed') else 'un'}signed {size}-byte integer"
    if kind in ("pointer", "funcptr"):
        return "function pointer" if kind == "funcptr" else "pointer"
    return f"{kind} of {size} bytes"


# __builtin_classify_type() of a field in C, by kind of binding field
C_CLASSES = {1: "an integer", 2: "a char", 3: "an enum", 4: "a _Bool", 5: "a pointer or array", 8: "a float"}
C_CLASSES |= {12: "a struct", 13: "a union"}


def expected_class(t: Mapping[str, Any], records: Mapping[str, RecordInfo]) -> set[int] | None:
    """The type classes a C field may have to be mirrored by this binding type."""
    kind = t.get("kind")
    if kind in ("int", "char", "bool"):
        return {1, 2, 3, 4}
    if kind == "float":
        return {8}
    if kind in ("pointer", "funcptr", "array"):
        return {5}
    if kind == "record":
        r = records.get(t.get("ref", ""))
        if r is None:
            return None
        return {12} if r.kind == "struct" else {13}
    return None
