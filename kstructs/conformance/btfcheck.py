"""The BTF check: the bindings' layouts and enumerators against a BTF blob."""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kstructs.btf import Btf, Kind, Type
from kstructs.conformance.bits import bit_span
from kstructs.conformance.layout import FieldPath, RecordInfo, describe_type, field_paths, is_legacy_nested
from kstructs.conformance.layout import signed as layout_signed
from kstructs.conformance.model import (
    DEFAULT_BTF,
    Binding,
    Finding,
    Report,
    Value,
    _absent,
    _added_in,
    _ordered,
    _version,
)
from kstructs.errors import BtfError, CheckError

# ---------------------------------------------------------------------------
# The BTF check.

# Definitions of one tag compared at most: the kernel's BTF has up to four.
_MAX_CANDIDATES = 0x40


def check_btf(bindings: Sequence[Binding], btf: Btf | str | Path = DEFAULT_BTF, *, kernel: str | None = None) -> Report:
    """Check the bindings' layouts and enumerators against BTF.

    ``btf`` is a parsed ``Btf`` or a path (raw BTF or an ELF file with a
    ``.BTF`` section). ``kernel`` is the Linux version the BTF describes, for
    telling newer items from missing ones; for the running kernel's BTF it
    defaults to ``platform.release()``.
    """
    path = ""
    if not isinstance(btf, Btf):
        path = str(btf)
        if kernel is None and Path(path) == Path(DEFAULT_BTF):
            kernel = platform.release()
        try:
            btf = Btf.load(path)
        except OSError as e:
            raise CheckError(f"cannot read BTF {path}: {e.strerror or e}") from None
        except BtfError as e:
            raise CheckError(f"unreadable BTF {path}: {e}") from None
    version = "{}.{}".format(*_version(kernel)) if kernel else None
    description = (f"BTF of Linux {kernel}" if kernel else "BTF") + (f" ({path})" if path else "")
    checker = _BtfChecker(btf, bindings, version)
    try:
        checker.run()
    except BtfError as e:
        raise CheckError(f"unreadable BTF: {e}") from None
    return Report("btf", description, version, checker.checked, _ordered(checker.findings))


class _BtfChecker:
    def __init__(self, btf: Btf, bindings: Sequence[Binding], version: str | None) -> None:
        self.btf = btf
        self.bindings = bindings
        self.version = version
        self.checked = 0
        self.findings: list[Finding] = []

    def compare(self, category: str, item: str, expected: Value, got: Value, note: str = "") -> None:
        self.checked += 1
        if expected != got:
            self.findings.append(Finding(category, item, expected, got, "btf", note))

    def run(self) -> None:
        constants = {n: v for b in self.bindings for n, v in b.constants.items()}
        not_mirrored = {n for b in self.bindings for n in b.not_mirrored}
        for b in self.bindings:
            for rec, paths in self.standalone(b):
                self.record(b, rec, paths)
        self.enumerators(constants, not_mirrored)

    def has_name(self, rec: RecordInfo) -> bool:
        return bool(self.btf.named(rec.name, Kind.STRUCT) or self.btf.named(rec.name, Kind.UNION))

    def standalone(self, b: Binding) -> list[tuple[RecordInfo, list[FieldPath]]]:
        """The binding's classes that BTF names, with their field paths; the rest are walked into."""

        def walk_into(child: RecordInfo, path: str) -> bool:
            return b.tag_of(child) is None and (is_legacy_nested(child) or not self.has_name(child))

        nested = {
            c.key
            for r in b.records.values()
            for f in r.fields
            if f.type.get("kind") == "record"
            and (c := b.records.get(f.type["ref"])) is not None
            and (f.name in r.anonymous or walk_into(c, f.name))
        }
        out: list[tuple[RecordInfo, list[FieldPath]]] = []
        seen: set[str] = set()
        queue = [k for k in b.roots if k in b.records]
        while queue:
            key = queue.pop(0)
            if key in seen:
                continue
            seen.add(key)
            rec = b.records[key]
            if b.tag_of(rec) is None and (is_legacy_nested(rec) or (key in nested and not self.has_name(rec))):
                continue
            paths = field_paths(rec, b.records, walk_into=walk_into, cname=b.cname)
            out.append((rec, paths))
            queue += [fp.named.key for fp in paths if fp.named is not None]
        return out

    def lookup(self, b: Binding, rec: RecordInfo) -> tuple[str, list[Type]]:
        """The item name and the BTF candidates for a class."""
        text = b.tag_of(rec)
        if text is None:
            kind = Kind.UNION if rec.kind == "union" else Kind.STRUCT
            return rec.tag, self.btf.named(rec.name, kind)
        words = " ".join(text.split()).split(" ", 1)
        if len(words) == 2 and words[0] in ("struct", "union"):
            head, _, path = words[1].partition(".")
            kind = Kind.UNION if words[0] == "union" else Kind.STRUCT
            outer = self.btf.named(head, kind)
            if not path:
                return f"{words[0]} {head}", outer
            found = [f for t in outer if (f := self.btf.field(t.id, path)) is not None]
            return text, [self.btf.resolve(f.member.type_id) for f in found]
        typedefs = self.btf.named(text, Kind.TYPEDEF)
        records = self.btf.named(text, Kind.STRUCT) + self.btf.named(text, Kind.UNION)
        return text, records + [self.btf.resolve(t.id) for t in typedefs]

    def record(self, binding: Binding, rec: RecordInfo, paths: list[FieldPath]) -> None:
        tag, candidates = self.lookup(binding, rec)
        if rec.opaque:
            note = "an opaque class (no _fields_): only its name is compared"
            self.findings.append(Finding("not-compared", tag, None, None, "btf", note))
            return
        if not candidates:
            added = _added_in(binding, tag)
            if added is not None and (self.version is None or _version(added) > _version(self.version)):
                self.findings.append(_absent(binding, tag, rec.size, version=self.version, source="btf"))
            else:
                self.findings.append(Finding("not-in-btf", tag, rec.size, None, "btf"))
            return
        # Kernel BTF may hold several definitions of a tag (a few at most): take the
        # one closest to the binding. Each is walked on its own, so their number is bounded.
        if len(candidates) > _MAX_CANDIDATES:
            raise BtfError(f"BTF has 0x{len(candidates):x} definitions of {tag}, more than 0x{_MAX_CANDIDATES:x}")
        best: tuple[int, list[Finding], int] | None = None
        for t in candidates:
            sub = _BtfChecker(self.btf, self.bindings, self.version)
            sub.layout(binding, tag, rec, paths, t.id)
            if best is None or len(sub.findings) < len(best[1]):
                best = (sub.checked, sub.findings, t.id)
        assert best is not None
        self.checked += best[0]
        self.findings += best[1]

    def layout(self, binding: Binding, tag: str, rec: RecordInfo, mine: list[FieldPath], type_id: int) -> None:
        t = self.btf.type(type_id)
        if binding.is_prefix(rec) and rec.size <= t.size:
            self.checked += 1
            note = f"mirrors the first {rec.size} of {t.size} bytes"
            self.findings.append(Finding("prefix", tag, rec.size, t.size, "btf", note))
        else:
            self.compare("size", tag, rec.size, t.size)
        gone: list[str] = []
        big = sys.byteorder == "big"
        for f in mine:
            item = f"{tag}.{f.path}"
            found = self.btf.field(type_id, f.path)
            if found is None:
                if not any(item.startswith(g + ".") for g in gone):
                    gone.append(item)
                    self.findings.append(_absent(binding, item, f.offset, version=self.version, source="btf"))
                continue
            member, bit_offset = found.member, found.bit_offset
            if f.bits:
                span = bit_span(bytes.fromhex((f.masks or {}).get("-1", "")), big != f.owner.swapped)
                mine_words = "no bits" if span is None else f"bit {span[0] + f.base * 8}, {span[1]} bits"
                width = found.bitfield_size or 8 * self.btf.size_of(member.type_id)
                self.compare("bitfield", item, mine_words, f"bit {bit_offset}, {width} bits", "offset and width")
                continue
            if found.bitfield_size:
                self.checked += 1
                size = f.type.get("size")
                self.findings.append(Finding("type", item, f"a full field of {size} bytes", "a bitfield", "btf"))
                continue
            offset: Value = bit_offset // 8 if bit_offset % 8 == 0 else f"bit {bit_offset}"
            self.compare("offset", item, f.offset, offset)
            mt = self.btf.resolve(member.type_id)
            kind = f.type.get("kind")
            if kind == "array":
                elem, length = f.type["elem"], int(f.type["length"])
                if mt.kind is not Kind.ARRAY:
                    self.compare("type", item, describe_type(f.type, binding.records), _words(mt))
                    continue
                dims = self.dims(mt)
                # gcc -gbtf may record a multi-dimensional array innermost first: the order is not compared.
                self.compare("length", item, length, length if sorted(dims) == sorted(_dims(f.type)) else mt.nelems)
                if length:
                    self.compare("size", item, int(f.type["size"]), self.btf.size_of(member.type_id))
                else:
                    self.compare("size", f"{item}[0]", int(elem["size"]), self.btf.size_of(mt.type_id))
                self.signedness(item, elem, mt.type_id)
                continue
            if kind in ("pointer", "funcptr") and mt.kind is not Kind.PTR:
                self.compare("type", item, "pointer", _words(mt))
                continue
            self.compare("size", item, int(f.type["size"]), self.btf.size_of(member.type_id))
            if f.named is not None:
                named, _ = self.lookup(binding, f.named)
                got = f"{mt.kind.name.lower()} {mt.name}".strip()
                self.compare("type", item, named, named if got == named else got or "an anonymous type")
            else:
                self.signedness(item, f.type, member.type_id)
        # Members the binding lacks.
        if binding.is_prefix(rec) or not binding.complete:
            return
        paths = {f.path: f for f in mine}
        missing: set[str] = set()
        # Btf.fields walks iteratively, each (type, path prefix) once, within a
        # budget: hostile BTF ends in a BtfError, not a RecursionError or 2**n paths.
        for field in self.btf.fields(type_id):
            path, offset = field.path, field.bit_offset
            if path not in paths and not _spoken_for(path, paths, missing):
                missing.add(path)
                where: Value = offset // 8 if offset % 8 == 0 else f"bit {offset}"
                self.findings.append(Finding("missing-in-binding", f"{tag}.{path}", None, where, "btf"))

    def dims(self, t: Type) -> list[int]:
        """The lengths of an array type and the arrays it holds, outermost first."""
        out: list[int] = []
        while t.kind is Kind.ARRAY and len(out) < 64:
            out.append(t.nelems)
            t = self.btf.resolve(t.type_id)
        return out

    def signedness(self, item: str, ctype: Mapping[str, Any], type_id: int) -> None:
        signed = layout_signed(ctype)
        t = self.btf.resolve(type_id)
        if signed is None or t.kind not in (Kind.INT, Kind.ENUM, Kind.ENUM64):
            return
        self.compare("signedness", item, "signed" if signed else "unsigned", "signed" if t.signed else "unsigned")

    def enumerators(self, constants: Mapping[str, int], not_mirrored: set[str]) -> None:
        """Enumerators of the enums that are mostly the binding's, both ways."""
        ours: set[int] = set()
        seen: set[int] = set()
        for name in constants:
            for enum, _ in self.btf.enumerator(name):
                # Each enum is weighed once, however many of its enumerators the binding names.
                if enum.id in seen:
                    continue
                seen.add(enum.id)
                names = [e.name for e in enum.enumerators]
                if sum(n in constants for n in names) * 2 > len(names):
                    ours.add(enum.id)
        for type_id in ours:
            for e in self.btf.type(type_id).enumerators:
                if e.name in constants:
                    self.compare("value", e.name, constants[e.name], e.value)
                elif e.name not in not_mirrored:
                    self.findings.append(Finding("missing-in-binding", e.name, None, e.value, "btf", "enumerator"))


def _spoken_for(path: str, mine: Mapping[str, FieldPath], missing: set[str]) -> bool:
    """Whether a C field path lies inside a member already reported missing, or
    inside a binding field that is not walked into (its own findings cover it)."""
    prefix = ""
    for part in path.split(".")[:-1]:
        prefix += part
        if prefix in missing or (prefix in mine and not mine[prefix].nested):
            return True
        prefix += "."
    return False


def _words(t: Type) -> str:
    """A BTF type in words, for findings."""
    if t.kind is Kind.ARRAY:
        return "an array"
    if t.kind is Kind.PTR:
        return "a pointer"
    return f"{t.kind.name.lower()} {t.name}".strip()


def _dims(t: Mapping[str, Any]) -> list[int]:
    out: list[int] = []
    while t.get("kind") == "array":
        out.append(int(t["length"]))
        t = t["elem"]
    return out
