"""What a conformance check compares and reports: bindings, facts, findings, categories."""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final, TypeAlias

CType: TypeAlias = type[ctypes.Structure] | type[ctypes.Union]
Value: TypeAlias = int | str | None

DEFAULT_BTF: Final = "/sys/kernel/btf/vmlinux"

# Category -> (severity, meaning). A "mismatch" fails a check, a "note" fails it
# only when strict, "info" never does.
CATEGORIES: Final[Mapping[str, tuple[str, str]]] = {
    "size": ("mismatch", "sizeof of a struct, union or field differs"),
    "align": ("mismatch", "_Alignof of a struct or union differs (headers only: BTF does not record it)"),
    "offset": ("mismatch", "offsetof of a field differs"),
    "signedness": ("mismatch", "a field or array element is signed on one side and unsigned on the other"),
    "length": ("mismatch", "the element count of an array field differs"),
    "type": ("mismatch", "a field is not of the named struct or union type the binding says"),
    "value": ("mismatch", "a macro's or enumerator's value differs"),
    "macro": ("mismatch", "a Python macro function gives another result than the C macro for some input"),
    "missing-in-binding": ("mismatch", "the C side has this item and the binding lacks it (a header that grew)"),
    "missing-in-headers": ("mismatch", "the binding has this item, the headers lack it and it is not recorded newer"),
    "missing-in-btf": ("mismatch", "the binding has this field, the BTF struct lacks it and it is not recorded newer"),
    "added-in": ("mismatch", "ADDED_IN records a later Linux than these headers, yet they have the item"),
    "newer": ("note", "the binding has this item, the C side lacks it: ADDED_IN records a later Linux version"),
    "not-mirrored": ("info", "a header item the binding leaves out on purpose (NOT_MIRRORED says why)"),
    "not-in-btf": ("info", "a type the BTF does not contain (BTF need not hold every UAPI type): not compared"),
}

# Inputs for the function-like macros: small lengths, page-ish sizes, each bit.
MACRO_INPUTS: Final = tuple(sorted({*range(70), 4095, 4096, 16383, 16384, 65535, *(1 << k for k in range(32))}))


@dataclass(frozen=True)
class Finding:
    """One difference between the binding and C, or a note about one item.

    ``item`` names the C item (``struct exit_proc_event.exit_signal``,
    ``PROC_EVENT_EXIT``, ``NLMSG_ALIGN(5)``); ``binding`` and ``c`` are the two
    values, None where a side lacks the item; ``source`` is "headers" or "btf".
    """

    category: str
    item: str
    binding: Value
    c: Value
    source: str = "headers"
    note: str = ""

    @property
    def severity(self) -> str:
        """One of "mismatch", "note" or "info"."""
        return CATEGORIES[self.category][0]


@dataclass(frozen=True)
class Report:
    """What one check compared and found."""

    source: str  # "headers" or "btf"
    description: str  # "Linux 6.1 headers (/usr/include)"
    version: str | None  # the Linux version of the headers or kernel, when known
    checked: int  # facts compared
    findings: tuple[Finding, ...]

    def failed(self, strict: bool = False) -> bool:
        """A mismatch; with ``strict``, a note too."""
        bad = {"mismatch", "note"} if strict else {"mismatch"}
        return any(f.severity in bad for f in self.findings)


@dataclass(frozen=True)
class Binding:
    """What the mirror of one C header declares."""

    header: str  # "linux/cn_proc.h"
    types: tuple[CType, ...]
    constants: Mapping[str, int]
    macro_functions: Mapping[str, Callable[[int], int]] = field(default_factory=dict)
    not_mirrored: Mapping[str, str] = field(default_factory=dict)
    added_in: Mapping[str, str] = field(default_factory=dict)  # C item -> first Linux version with it

    @classmethod
    def from_module(cls, module: ModuleType) -> Binding:
        """Read a header module's HEADER, TYPES, CONSTANTS, MACRO_FUNCTIONS, NOT_MIRRORED, ADDED_IN."""
        return cls(
            header=module.HEADER,
            types=tuple(module.TYPES),
            constants={name: getattr(module, name) for name in module.CONSTANTS},
            macro_functions=dict(getattr(module, "MACRO_FUNCTIONS", {})),
            not_mirrored=dict(getattr(module, "NOT_MIRRORED", {})),
            added_in=dict(getattr(module, "ADDED_IN", {})),
        )


# ---------------------------------------------------------------------------
# The binding side: field paths of ctypes classes.


@dataclass(frozen=True)
class _Field:
    path: str  # "event_data.fork", from the outer struct
    offset: int  # from the start of the outer struct
    ctype: Any  # the ctypes type of the field
    nested: bool  # an anonymous member type, walked into
    named: CType | None  # a named struct/union member type, checked under its own tag
    bits: int  # bitfield width, 0 if none


def _is_record(t: object) -> bool:
    return isinstance(t, type) and issubclass(t, ctypes.Structure | ctypes.Union)


def _is_anonymous(cls: type) -> bool:
    """A class for an anonymous member type is named ``parent__member``."""
    return "__" in cls.__name__.lstrip("_")


def _tag(cls: type) -> str:
    return f"{'union' if issubclass(cls, ctypes.Union) else 'struct'} {cls.__name__}"


def _fields(cls: CType, prefix: str = "", base: int = 0) -> list[_Field]:
    out: list[_Field] = []
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for entry in cls._fields_:
        name, ftype = entry[0], entry[1]
        bits = int(entry[2]) if len(entry) > 2 else 0
        offset = base + getattr(cls, name).offset
        if name in anonymous:
            # A C11 unnamed member: its fields are reached as if they were this level's.
            out += _fields(ftype, prefix, offset)  # type: ignore[arg-type]
            continue
        path = prefix + name
        record = _is_record(ftype)
        nested = record and _is_anonymous(ftype)
        out.append(_Field(path, offset, ftype, nested, ftype if record and not nested else None, bits))  # type: ignore[arg-type]
        if nested:
            out += _fields(ftype, path + ".", offset)  # type: ignore[arg-type]
    return out


def _array(ftype: Any) -> tuple[Any, int] | None:
    """Element type and length of a ctypes array type, else None."""
    if isinstance(ftype, type) and issubclass(ftype, ctypes.Array):
        info = dict(vars(ftype))
        return info["_type_"], int(info["_length_"])
    return None


def _signed(ftype: Any) -> bool | None:
    """Whether a ctypes scalar is signed; None for char, pointers and the like."""
    code = getattr(ftype, "_type_", None)
    if not isinstance(ftype, type) or not issubclass(ftype, ctypes._SimpleCData) or not isinstance(code, str):
        return None
    if code in ("c", "u", "z", "Z", "P", "O"):  # plain char's signedness is the platform's
        return None
    return bool(ftype(-1).value < 0)


def _binding_types(binding: Binding) -> dict[str, CType]:
    """Tag -> class for the binding's types and the named member types they reach."""
    found: dict[str, CType] = {}

    def add(cls: CType) -> None:
        if _tag(cls) in found:
            return
        found[_tag(cls)] = cls
        for f in _fields(cls):
            if f.named is not None:
                add(f.named)

    for cls in binding.types:
        add(cls)
    return found


def _version(text: str) -> tuple[int, int]:
    major, minor = [*re.findall(r"\d+", text), "0", "0"][:2]
    return int(major), int(minor)


def _added_in(binding: Binding, key: str) -> str | None:
    """The newest version recorded for an item or any item that contains it."""
    parts = key.split(".")
    found = [binding.added_in[k] for n in range(len(parts), 0, -1) if (k := ".".join(parts[:n])) in binding.added_in]
    return max(found, key=_version, default=None)


def _absent(binding: Binding, key: str, value: Value, *, version: str | None, source: str) -> Finding:
    """An item the binding has and the C side lacks: newer when ADDED_IN says
    so and the C side is older (or of unknown version), else missing."""
    missing = "missing-in-headers" if source == "headers" else "missing-in-btf"
    added = _added_in(binding, key)
    side = "headers are" if source == "headers" else "kernel is"
    if added is not None and (version is None or _version(added) > _version(version)):
        have = f"{side} Linux {version}" if version else f"{side} of unknown version"
        return Finding("newer", key, value, None, source, f"added in Linux {added}; {have}")
    note = f"binding records Linux {added}" if added else ""
    return Finding(missing, key, value, None, source, note)


# ---------------------------------------------------------------------------
# Facts: one binding value with the C expression that states it.


@dataclass(frozen=True)
class _Fact:
    unit: str  # presence unit: "struct X", "struct X.path", a constant or macro name
    item: str  # as reported
    category: str
    expected: Value  # the binding's value; None for a fact only reported (missing-in-binding)
    expr: str


def _type_facts(tag: str, cls: CType) -> list[_Fact]:
    facts = [
        _Fact(tag, tag, "size", ctypes.sizeof(cls), f"sizeof({tag})"),
        _Fact(tag, tag, "align", ctypes.alignment(cls), f"_Alignof({tag})"),
    ]
    for f in _fields(cls):
        if f.bits:
            continue  # offsetof and sizeof do not apply to a bitfield
        item = f"{tag}.{f.path}"
        lvalue = f"(({tag} *)0)->{f.path}"
        # (category, binding value, C expression, item name if not the field's)
        rows: list[tuple[str, Value, str, str]] = [("offset", f.offset, f"offsetof({tag}, {f.path})", item)]
        array = _array(f.ctype)
        if array is not None:
            elem, length = array
            if length:
                rows.append(("size", ctypes.sizeof(f.ctype), f"sizeof({lvalue})", item))
                rows.append(("length", length, f"sizeof({lvalue}) / sizeof({lvalue}[0])", item))
            else:  # a flexible array member: no sizeof; check its element
                rows.append(("size", ctypes.sizeof(elem), f"sizeof({lvalue}[0])", f"{item}[0]"))
            if (signed := _signed(elem)) is not None:
                rows.append(("signedness", int(signed), f"(__typeof__({lvalue}[0]))-1 < 0", item))
        else:
            rows.append(("size", ctypes.sizeof(f.ctype), f"sizeof({lvalue})", item))
            if f.named is not None:
                named = f"__builtin_types_compatible_p(__typeof__({lvalue}), {_tag(f.named)})"
                rows.append(("type", 1, named, item))
            elif (signed := _signed(f.ctype)) is not None:
                rows.append(("signedness", int(signed), f"(__typeof__({lvalue}))-1 < 0", item))
        facts += [_Fact(item, name, category, expected, expr) for category, expected, expr, name in rows]
    return facts


def _display(fact: _Fact, value: Value) -> Value:
    """Values as a reader wants them: signedness as a word, a type check as the type."""
    if fact.category == "signedness" and isinstance(value, int):
        return "signed" if value else "unsigned"
    if fact.category == "type" and isinstance(value, int):
        named = fact.expr.rsplit(", ", 1)[1].rstrip(")")
        return named if value else f"not {named}"
    return value


def _call(fn: Callable[[int], int], n: int) -> Value:
    """A macro function's result; a Python exception is a value that matches no C value."""
    try:
        return fn(n)
    except Exception as e:  # any error is a finding, not a crash of the check
        return f"raises {type(e).__name__}"


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _binding_value(facts: Sequence[_Fact], unit: str) -> Value:
    for f in facts:
        if f.unit == unit and f.category in ("size", "offset", "value") and f.item == unit:
            return f.expected
    return None


def _ordered(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    rank = {"mismatch": 0, "note": 1, "info": 2}
    return tuple(sorted(findings, key=lambda f: rank[f.severity]))


def _covered(path: str, mine: Mapping[str, _Field], missing: Sequence[str]) -> bool:
    """Whether a C field path is already spoken for: inside a member that is
    missing from the binding, or inside a binding field that is not walked
    into (a named type or a scalar, whose own findings cover it)."""
    parts = path.split(".")
    for n in range(1, len(parts)):
        prefix = ".".join(parts[:n])
        if prefix in missing or (prefix in mine and not mine[prefix].nested):
            return True
    return False
