"""The BTF check: the bindings' layouts and enumerators against a BTF blob."""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kstructs.btf import Btf, Kind, Member
from kstructs.conformance.model import (
    DEFAULT_BTF,
    Binding,
    CType,
    Finding,
    Report,
    Value,
    _absent,
    _added_in,
    _array,
    _binding_types,
    _covered,
    _fields,
    _ordered,
    _signed,
    _tag,
    _version,
)
from kstructs.errors import BtfError, CheckError

# ---------------------------------------------------------------------------
# The BTF check.


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
            for tag, cls in _binding_types(b).items():
                self.record(b, tag, cls)
        self.enumerators(constants, not_mirrored)

    def record(self, binding: Binding, tag: str, cls: CType) -> None:
        kind = Kind.UNION if issubclass(cls, ctypes.Union) else Kind.STRUCT
        candidates = self.btf.named(cls.__name__, kind)
        if not candidates:
            added = _added_in(binding, tag)
            if added is not None and (self.version is None or _version(added) > _version(self.version)):
                self.findings.append(_absent(binding, tag, ctypes.sizeof(cls), version=self.version, source="btf"))
            else:
                self.findings.append(Finding("not-in-btf", tag, ctypes.sizeof(cls), None, "btf"))
            return
        # Kernel BTF may hold several definitions of a tag: take the one closest to the binding.
        best: tuple[int, list[Finding], int] | None = None
        for t in candidates:
            sub = _BtfChecker(self.btf, self.bindings, self.version)
            sub.layout(binding, tag, cls, t.id)
            if best is None or len(sub.findings) < len(best[1]):
                best = (sub.checked, sub.findings, t.id)
        assert best is not None
        self.checked += best[0]
        self.findings += best[1]

    def layout(self, binding: Binding, tag: str, cls: CType, type_id: int) -> None:
        t = self.btf.type(type_id)
        self.compare("size", tag, ctypes.sizeof(cls), t.size)
        mine = _fields(cls)
        gone: list[str] = []
        for f in mine:
            item = f"{tag}.{f.path}"
            found = self.member(type_id, f.path)
            if found is None:
                if not any(item.startswith(g + ".") for g in gone):
                    gone.append(item)
                    self.findings.append(_absent(binding, item, f.offset, version=self.version, source="btf"))
                continue
            member, bit_offset = found
            if f.bits or member.bitfield_size:
                self.compare("size", item, f.bits, member.bitfield_size, "bitfield width in bits")
                continue
            offset: Value = bit_offset // 8 if bit_offset % 8 == 0 else f"bit {bit_offset}"
            self.compare("offset", item, f.offset, offset)
            mt = self.btf.resolve(member.type_id)
            array = _array(f.ctype)
            if array is not None:
                elem, length = array
                if mt.kind is not Kind.ARRAY:
                    self.compare("length", item, length, "not an array")
                    continue
                self.compare("length", item, length, mt.nelems)
                if length:
                    self.compare("size", item, ctypes.sizeof(f.ctype), self.btf.size_of(member.type_id))
                else:
                    self.compare("size", f"{item}[0]", ctypes.sizeof(elem), self.btf.size_of(mt.type_id))
                self.signedness(item, elem, mt.type_id)
                continue
            self.compare("size", item, ctypes.sizeof(f.ctype), self.btf.size_of(member.type_id))
            if f.named is not None:
                named = _tag(f.named)
                got = f"{mt.kind.name.lower()} {mt.name}".strip()
                self.compare("type", item, named, named if got == named else got or "an anonymous type")
            else:
                self.signedness(item, f.ctype, member.type_id)
        # Members the binding lacks.
        paths = {f.path: f for f in mine}
        missing: list[str] = []
        for path, offset in self.member_paths(type_id):
            if path not in paths and not _covered(path, paths, missing):
                missing.append(path)
                self.findings.append(Finding("missing-in-binding", f"{tag}.{path}", None, offset, "btf"))

    def signedness(self, item: str, ctype: Any, type_id: int) -> None:
        signed = _signed(ctype)
        t = self.btf.resolve(type_id)
        if signed is None or t.kind not in (Kind.INT, Kind.ENUM, Kind.ENUM64):
            return
        self.compare("signedness", item, "signed" if signed else "unsigned", "signed" if t.signed else "unsigned")

    def member(self, type_id: int, path: str) -> tuple[Member, int] | None:
        """The member at a dotted path, with its bit offset from the outer type."""
        found: tuple[Member, int] | None = None
        base = 0
        for name in path.split("."):
            found = self.find(self.btf.resolve(type_id).id, name, base)
            if found is None:
                return None
            member, base = found
            type_id = member.type_id
        return found

    def find(self, type_id: int, name: str, base: int) -> tuple[Member, int] | None:
        t = self.btf.type(type_id)
        for m in t.members:
            if m.name == name:
                return m, base + m.bit_offset
            if not m.name:  # a C11 unnamed member: its fields are reached through it
                inner = self.find(self.btf.resolve(m.type_id).id, name, base + m.bit_offset)
                if inner is not None:
                    return inner
        return None

    def member_paths(self, type_id: int, prefix: str = "", base: int = 0) -> Iterator[tuple[str, Value]]:
        for m in self.btf.resolve(type_id).members:
            mt = self.btf.resolve(m.type_id)
            offset = base + m.bit_offset
            nested = mt.kind in (Kind.STRUCT, Kind.UNION) and not mt.name
            if not m.name:
                if nested:
                    yield from self.member_paths(mt.id, prefix, offset)
                continue
            yield prefix + m.name, offset // 8 if offset % 8 == 0 else f"bit {offset}"
            if nested:
                yield from self.member_paths(mt.id, f"{prefix}{m.name}.", offset)

    def enumerators(self, constants: Mapping[str, int], not_mirrored: set[str]) -> None:
        """Enumerators of the enums that are mostly the binding's, both ways."""
        ours: dict[int, list[str]] = {}
        for name in constants:
            for enum, _ in self.btf.enumerator(name):
                names = [e.name for e in enum.enumerators]
                if sum(n in constants for n in names) * 2 > len(names):
                    ours[enum.id] = names
        for type_id in ours:
            for e in self.btf.type(type_id).enumerators:
                if e.name in constants:
                    self.compare("value", e.name, constants[e.name], e.value)
                elif e.name not in not_mirrored:
                    self.findings.append(Finding("missing-in-binding", e.name, None, e.value, "btf", "enumerator"))
