"""What a conformance check compares and reports: bindings, facts, findings, categories."""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Final, TypeAlias

from kstructs.conformance import discover
from kstructs.conformance.layout import RecordInfo, describe

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
    "type": (
        "mismatch",
        "a field is of another kind of type than the binding says: another struct or union, a"
        " bitfield mirrored as a full field, a flexible array as a pointer, a struct as an array",
    ),
    "value": ("mismatch", "a macro's or enumerator's value differs"),
    "macro": ("mismatch", "a Python macro function gives another result than the C macro for some input"),
    "missing-in-binding": ("mismatch", "the C side has this item and the binding lacks it (a header that grew)"),
    "missing-in-headers": ("mismatch", "the binding has this item, the headers lack it and it is not recorded newer"),
    "missing-in-btf": ("mismatch", "the binding has this field, the BTF struct lacks it and it is not recorded newer"),
    "added-in": ("mismatch", "ADDED_IN records a later Linux than these headers, yet they have the item"),
    "newer": ("note", "the binding has this item, the C side lacks it: ADDED_IN records a later Linux version"),
    "not-mirrored": ("info", "a header item the binding leaves out on purpose (NOT_MIRRORED says why)"),
    "not-in-btf": ("info", "a type the BTF does not contain (BTF need not hold every UAPI type): not compared"),
    "compile-error": ("mismatch", "the headers have the item, yet its C expression does not compile here"),
    "bitfield": ("mismatch", "a bitfield's bit offset or width differs, or its bytes when set to -1 or 1"),
    "prefix": ("info", "a class declared to mirror only the leading part of a C struct: its size is not held to C's"),
    "width": ("info", "a value equal to C's at the C type's width only (a signed 32-bit ioctl number, say)"),
    "skipped": ("info", "an item left out of the check with a reason (--skip)"),
    "not-compared": ("info", "an item the check cannot compare here: no C name, an opaque class, a foreign ABI"),
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

    def to_dict(self) -> dict[str, object]:
        """The finding in the JSON documents of ``kstructs check`` and ``tools/header_diff.py``."""
        return {
            "category": self.category,
            "severity": self.severity,
            "source": self.source,
            "item": self.item,
            "binding": self.binding,
            "c": self.c,
            "note": self.note,
        }


@dataclass(frozen=True)
class Report:
    """What one check compared and found."""

    source: str  # "headers" or "btf"
    description: str  # "Linux 6.1 headers (/usr/include)"
    version: str | None  # the Linux version of the headers or kernel, when known
    checked: int  # facts compared
    findings: tuple[Finding, ...]

    def to_dict(self) -> dict[str, object]:
        """What was checked, in the JSON documents' ``sources``."""
        return {
            "source": self.source,
            "description": self.description,
            "linux_version": self.version,
            "checked": self.checked,
        }

    def failed(self, strict: bool = False) -> bool:
        """A mismatch; with ``strict``, a note too."""
        bad = {"mismatch", "note"} if strict else {"mismatch"}
        return any(f.severity in bad for f in self.findings)


@dataclass(frozen=True)
class Binding:
    """What the mirror of one C header declares.

    ``types`` are ctypes classes described by this interpreter; ``records``
    (keyed ``module:Qualname``) may instead come from another interpreter's
    ``discover`` document, with ``roots`` naming the ones to check. The
    settings after ``added_in`` are those of ``kstructs check``: C names for
    classes (``tags``: a tag, a typedef name or a member path), fields
    (``field_names``, keyed ``Class.field``) and constants (``constant_exprs``),
    enum members, classes that mirror a leading part of a C struct only
    (``prefix``), items left out with a reason (``skip``), how values compare
    (``values``: "exact", or "width" for all; ``width`` for some), and whether
    header items the binding lacks are mismatches (``complete``).
    """

    header: str  # "linux/cn_proc.h"
    types: tuple[CType, ...] = ()
    constants: Mapping[str, int] = field(default_factory=dict)
    macro_functions: Mapping[str, Callable[[int], int]] = field(default_factory=dict)
    not_mirrored: Mapping[str, str] = field(default_factory=dict)
    added_in: Mapping[str, str] = field(default_factory=dict)  # C item -> first Linux version with it
    headers: tuple[str, ...] = ()  # more headers the same binding mirrors
    records: Mapping[str, RecordInfo] = field(default_factory=dict)
    roots: tuple[str, ...] = ()  # keys of the records checked under their own C name
    tags: Mapping[str, str] = field(default_factory=dict)  # class (key, qualname or name) -> C type
    field_names: Mapping[str, str] = field(default_factory=dict)  # "Class.field" -> C member name
    constant_exprs: Mapping[str, str] = field(default_factory=dict)  # Python name -> C expression
    enums: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # IntEnum qualname -> members
    prefix: frozenset[str] = frozenset()
    skip: Mapping[str, str] = field(default_factory=dict)  # C item -> reason
    values: str = "exact"
    width: frozenset[str] = frozenset()
    complete: bool = True
    module: str = ""

    def __post_init__(self) -> None:
        if self.types and not self.records:
            object.__setattr__(self, "records", describe(self.types))
        if self.types and not self.roots:
            object.__setattr__(self, "roots", tuple(dict.fromkeys(discover.key(t) for t in self.types)))

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
            module=module.__name__,
        )

    @property
    def all_headers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(h for h in (self.header, *self.headers) if h))

    def _lookup(self, table: Mapping[str, str], rec: RecordInfo, suffix: str = "") -> str | None:
        for name in (rec.key, rec.qualname, rec.name):
            if name + suffix in table:
                return table[name + suffix]
        return None

    def tag_of(self, rec: RecordInfo) -> str | None:
        """The C type a class mirrors when a setting names it."""
        return self._lookup(self.tags, rec)

    def cname(self, rec: RecordInfo, name: str) -> str:
        """The C member name of a binding field."""
        return self._lookup(self.field_names, rec, "." + name) or name

    def is_prefix(self, rec: RecordInfo) -> bool:
        return any(n in self.prefix for n in (rec.key, rec.qualname, rec.name))

    def value_mode(self, name: str) -> str:
        return "width" if self.values == "width" or name in self.width else "exact"


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
    base: str = ""  # the item whose presence the fact depends on, when the unit is one of its parts
    slot: str = ""  # which part: "size", "class", "sign"...; "" for the item itself
    note: str = ""  # said with a mismatch of this fact

    @property
    def presence(self) -> str:
        return self.base or self.unit


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
