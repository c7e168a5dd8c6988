"""The facts a headers check asks the compiler for, planned from the bindings.

Every class is given its C spelling (a tag, a typedef name, or the type of a
member reached by a path), every field its C path and a set of facts with the
C expression that states each: ``offsetof``, ``sizeof``, element count,
signedness, and the field's type class (``__builtin_classify_type``), so that
a C bitfield mirrored as a full field, a flexible array mirrored as a pointer
or a struct mirrored as an array is named as such. Bitfields are checked by
their bytes (``bits``). Constants and enum members get their C expression.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kstructs.conformance.cscan import _CRecord, _record_paths, _Scan
from kstructs.conformance.layout import (
    FieldPath,
    RecordInfo,
    elem,
    expected_class,
    field_paths,
    is_legacy_nested,
    signed,
)
from kstructs.conformance.model import Binding, Value, _Fact

_IDENT = re.compile(r"[A-Za-z_]\w*\Z")


@dataclass(frozen=True)
class Spelling:
    """How C names the type a class mirrors."""

    item: str  # as reported: "struct foo", "foo", "union __sifields._sigchld"
    expr: str  # a C type: "struct foo", "foo", "__typeof__(((union __sifields *)0)->_sigchld)"
    present: bool  # the scanned headers have it (True when the scan cannot tell)
    tag: str | None  # the tag whose scanned definition holds its members, for paths
    record: _CRecord | None  # that definition (or the untagged member's), when scanned


class Have:
    """Presence of items in the scanned headers."""

    def __init__(self, scan: _Scan) -> None:
        self.records: dict[str, _CRecord] = {}
        self.names: set[str] = set()
        self.functions: set[str] = set()
        self.typedefs: set[str] = set()
        for items in scan.headers.values():
            self.records.update(items.records)
            self.names |= {n for n, fn in items.macros.items() if not fn} | set(items.enumerators)
            self.functions |= {n for n, fn in items.macros.items() if fn} | set(items.functions)
            self.typedefs |= set(items.typedefs)
        self._paths: dict[str, dict[str, _CRecord | None]] = {}
        self._suffixes: dict[str, list[str]] | None = None

    def record(self, tag: str) -> bool:
        return tag in self.records

    def prefixes(self, suffix: str) -> list[str]:
        """The prefixes ending in '_' that make a C constant of ``suffix``: V4L2_CID_ for BRIGHTNESS."""
        if self._suffixes is None:
            self._suffixes = {}
            for name in self.names:
                for at, c in enumerate(name):
                    if c == "_" and at + 1 < len(name):
                        self._suffixes.setdefault(name[at + 1 :], []).append(name[: at + 1])
        return self._suffixes.get(suffix, [])

    def paths(self, tag: str) -> dict[str, _CRecord | None]:
        if tag not in self._paths:
            r = self.records.get(tag)
            self._paths[tag] = dict(_record_paths(r)) if r is not None else {}
        return self._paths[tag]

    def path(self, tag: str, path: str) -> bool:
        return path in self.paths(tag)

    def constant(self, name: str) -> bool:
        return name in self.names

    def function(self, name: str) -> bool:
        return name in self.functions

    def named(self, rec: RecordInfo) -> bool:
        """C has a type of this class's name (a tag of either kind, or a typedef)."""
        return any(f"{k} {rec.name}" in self.records for k in ("struct", "union")) or rec.name in self.typedefs


def spell(binding: Binding, rec: RecordInfo, have: Have) -> Spelling:
    """The C type a class mirrors: from a setting, else from its name."""
    text = binding.tag_of(rec)
    if text is None:
        for kind in (rec.kind, "union" if rec.kind == "struct" else "struct"):
            tag = f"{kind} {rec.name}"
            if have.record(tag):
                return Spelling(tag, tag, True, tag, have.records[tag])
        if rec.name in have.typedefs:
            return Spelling(rec.name, rec.name, True, None, None)
        return Spelling(rec.tag, rec.tag, False, rec.tag, None)
    text = " ".join(text.split())
    words = text.split(" ", 1)
    if len(words) == 2 and words[0] in ("struct", "union"):
        head, _, path = words[1].partition(".")
        tag = f"{words[0]} {head}"
        if not path:
            return Spelling(tag, tag, have.record(tag), tag, have.records.get(tag))
        expr = f"__typeof__((({tag} *)0)->{path})"
        member = have.paths(tag).get(path) if have.record(tag) else None
        present = have.path(tag, path) if have.record(tag) else False
        return Spelling(text, expr, present, None, member)
    # A bare name: a tag of either kind, else a typedef.
    for kind in ("struct", "union"):
        tag = f"{kind} {text}"
        if have.record(tag):
            return Spelling(tag, tag, True, tag, have.records[tag])
    return Spelling(text, text, text in have.typedefs, None, None)


@dataclass
class RecordPlan:
    """The facts of one class checked under its own C name."""

    binding: Binding
    rec: RecordInfo
    spelling: Spelling
    fields: list[FieldPath]
    facts: list[_Fact] = field(default_factory=list)
    classes: dict[str, tuple[set[int], FieldPath]] = field(default_factory=dict)  # unit -> allowed C classes
    bitfields: list[tuple[str, FieldPath]] = field(default_factory=list)  # (item, field)


def walker(binding: Binding, have: Have) -> Any:
    def walk_into(child: RecordInfo, path: str) -> bool:
        if binding.tag_of(child) is not None:
            return False
        return is_legacy_nested(child) or not have.named(child)

    return walk_into


def nested_records(binding: Binding, have: Have) -> set[str]:
    """Keys of the records used as anonymous or untagged member types somewhere."""
    walk_into = walker(binding, have)
    out: set[str] = set()
    for r in binding.records.values():
        for f in r.fields:
            child = binding.records.get(f.type.get("ref", "")) if f.type.get("kind") == "record" else None
            if child is not None and (f.name in r.anonymous or walk_into(child, f.name)):
                out.add(child.key)
    return out


def standalone(binding: Binding, have: Have) -> list[tuple[RecordInfo, Spelling, list[FieldPath]]]:
    """The classes checked under their own C name, each with its spelling and field paths."""
    walk_into = walker(binding, have)
    nested = nested_records(binding, have)
    out: list[tuple[RecordInfo, Spelling, list[FieldPath]]] = []
    seen: set[str] = set()
    queue = [k for k in binding.roots if k in binding.records]
    while queue:
        key = queue.pop(0)
        if key in seen:
            continue
        seen.add(key)
        rec = binding.records[key]
        explicit = binding.tag_of(rec) is not None
        if not explicit and (is_legacy_nested(rec) or (key in nested and not have.named(rec))):
            continue  # checked through the record that holds it
        paths = field_paths(rec, binding.records, walk_into=walk_into, cname=binding.cname)
        out.append((rec, spell(binding, rec, have), paths))
        for fp in paths:
            if fp.named is not None:
                queue.append(fp.named.key)
            e = elem(fp.type)
            if e.get("kind") == "record" and fp.type.get("kind") == "array":
                queue.append(e["ref"])
    return out


def _ignored_align(rec: RecordInfo) -> str:
    """What to say when the class asks for an alignment its interpreter's ctypes did not give."""
    want = rec.align_requested
    if want is None or rec.align >= want:
        return ""
    return (
        f"known limit: the class asks for _align_ = {want}, which this interpreter's ctypes ignores"
        " (CPython 3.13 honours it), so a struct that embeds it is laid out short"
    )


def record_plan(
    binding: Binding, rec: RecordInfo, sp: Spelling, paths: list[FieldPath], have: Have, *, size: bool = True
) -> RecordPlan:
    plan = RecordPlan(binding, rec, sp, paths)
    item, t = sp.item, sp.expr
    facts = plan.facts
    if rec.opaque:
        return plan
    if size:
        facts.append(_Fact(item, item, "size", rec.size, f"sizeof({t})"))
        if not binding.is_prefix(rec):
            facts.append(
                _Fact(f"{item}#align", item, "align", rec.align, f"_Alignof({t})", item, "align", _ignored_align(rec))
            )

    def add(fitem: str, slot: str, category: str, expected: Value, expr: str, *, shown: str | None = None) -> None:
        unit = fitem if not slot else f"{fitem}#{slot}"
        facts.append(_Fact(unit, shown or fitem, category, expected, expr, fitem if slot else "", slot))

    for fp in paths:
        fitem = f"{item}.{fp.path}"
        lv = f"(({t} *)0)->{fp.path}"
        if fp.bits:
            plan.bitfields.append((fitem, fp))
            continue
        add(fitem, "", "offset", fp.offset, f"offsetof({t}, {fp.path})")
        allowed = expected_class(fp.type, binding.records)
        if allowed is not None:
            add(fitem, "class", "type", None, f"__builtin_classify_type({lv})")
            plan.classes[f"{fitem}#class"] = (allowed, fp)
        kind = fp.type.get("kind")
        if kind == "array":
            length = int(fp.type["length"])
            inner = fp.type["elem"]
            if length:
                add(fitem, "size", "size", int(fp.type["size"]), f"sizeof({lv})")
                add(fitem, "length", "length", length, f"sizeof({lv}) / sizeof({lv}[0])")
            else:  # a flexible array member: no sizeof; check its element
                add(fitem, "size", "size", int(inner["size"]), f"sizeof({lv}[0])", shown=f"{fitem}[0]")
            if (s := signed(inner)) is not None:
                add(fitem, "sign", "signedness", int(s), f"(__typeof__({lv}[0]))-1 < 0")
            if inner.get("kind") == "record" and (r := binding.records.get(inner["ref"])) is not None:
                named = spell(binding, r, have)
                add(fitem, "type", "type", 1, f"__builtin_types_compatible_p(__typeof__({lv}[0]), {named.expr})")
            continue
        add(fitem, "size", "size", int(fp.type["size"]), f"sizeof({lv})")
        if kind in ("pointer", "funcptr"):
            add(fitem, "ptr", "type", 1, f"__builtin_types_compatible_p(__typeof__({lv}), __typeof__(&*({lv})))")
        elif fp.named is not None:
            named = spell(binding, fp.named, have)
            add(fitem, "type", "type", 1, f"__builtin_types_compatible_p(__typeof__({lv}), {named.expr})")
        elif (s := signed(fp.type)) is not None:
            add(fitem, "sign", "signedness", int(s), f"(__typeof__({lv}))-1 < 0")
    return plan


def enum_names(binding: Binding, have: Have) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """C expressions of the enum members: {"Enum.MEMBER": (C name, value)}, and the members with none.

    ``constant_exprs`` may name a member (``Enum.MEMBER``) or all of them by a
    prefix (``Enum.*`` = ``PREFIX_*``); otherwise a member is the C name of
    the same spelling, or that spelling after the one prefix that makes a C
    name of every member (at least two members, and no other prefix as good:
    else the names do not say which C names they are, and none is used)."""
    out: dict[str, tuple[str, int]] = {}
    unnamed: list[str] = []
    for qualname, members in binding.enums.items():
        star = binding.constant_exprs.get(f"{qualname}.*")
        counts: dict[str, int] = {}
        if star is None:
            for m in members:
                for prefix in have.prefixes(m):
                    counts[prefix] = counts.get(prefix, 0) + 1
        ranked = sorted(counts.values(), reverse=True)
        best = max(counts, key=lambda p: counts[p], default=None)
        if best is not None and (counts[best] < 2 or (len(ranked) > 1 and ranked[1] == ranked[0])):
            best = None  # one member, or two prefixes as good: the names do not say which C names they are
        for m, value in members.items():
            name = f"{qualname}.{m}"
            if name in binding.constant_exprs:
                out[name] = (binding.constant_exprs[name], value)
            elif star is not None:
                out[name] = (star.rstrip("*") + m, value)
            elif have.constant(m):
                out[name] = (m, value)
            elif best is not None and all(have.constant(best + n) or best + n in binding.added_in for n in members):
                out[name] = (best + m, value)  # an item newer than the headers is still named, as newer
            else:
                unnamed.append(name)
    return out, unnamed


def constant_names(binding: Binding) -> Mapping[str, str]:
    """Python constant name -> the C expression it is compared with."""
    return {n: binding.constant_exprs.get(n, n) for n in binding.constants}


def is_name(expr: str) -> bool:
    return bool(_IDENT.match(expr))
