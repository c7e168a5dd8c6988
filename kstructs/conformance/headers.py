"""The headers check: the bindings against their headers, through the C compiler."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from kstructs.conformance.cc import Compiler, _compiler, _probe, include_paths
from kstructs.conformance.cscan import _CRecord, _record_paths, _Scan, _scan
from kstructs.conformance.model import (
    MACRO_INPUTS,
    Binding,
    CType,
    Finding,
    Report,
    Value,
    _absent,
    _added_in,
    _binding_types,
    _binding_value,
    _call,
    _covered,
    _display,
    _Fact,
    _fields,
    _join,
    _ordered,
    _type_facts,
    _version,
)

# ---------------------------------------------------------------------------
# The headers check.


def check_headers(
    bindings: Sequence[Binding],
    *,
    include_dirs: Sequence[str | Path] = (),
    cc: str | Compiler | None = None,
    discover: bool = True,
    macro_inputs: Sequence[int] = MACRO_INPUTS,
) -> Report:
    """Check the bindings against their headers with the C compiler.

    ``include_dirs`` come before the compiler's own include path; ``cc`` is the
    compiler command (default: ``$CC``, then cc, gcc, clang). With
    ``discover``, the header items the bindings lack are findings too; without
    it, only what the bindings declare is checked.
    """
    compiler = _compiler(cc)
    dirs = include_paths(include_dirs)
    headers = list(dict.fromkeys(b.header for b in bindings))
    scan = _scan(compiler, headers, dirs)
    have = _Have(scan)

    facts: list[_Fact] = []
    findings: list[Finding] = []
    owner: dict[str, Binding] = {}  # unit -> binding, for ADDED_IN
    absent: list[tuple[str, Value]] = []  # (unit, binding value) known absent and recorded newer

    def plan(binding: Binding, unit: str, present: bool, value: Value, unit_facts: list[_Fact]) -> None:
        owner[unit] = binding
        added = _added_in(binding, unit)
        recorded = binding.added_in.get(unit)
        too_late = recorded is not None and scan.version is not None and _version(recorded) > _version(scan.version)
        if present and too_late:
            # The version record is wrong (or these headers carry a backport): it would hide the item on
            # older headers, so say so.
            note = f"ADDED_IN says Linux {recorded}; Linux {scan.version} headers have it"
            findings.append(Finding("added-in", unit, recorded, scan.version, "headers", note))
        if not present and added is not None and (scan.version is None or _version(added) > _version(scan.version)):
            absent.append((unit, value))  # not probed: it would not compile
            return
        facts.extend(unit_facts)

    for b in bindings:
        for tag, cls in _binding_types(b).items():
            tfacts = _type_facts(tag, cls)
            tag_present = have.record(tag)
            by_unit: dict[str, list[_Fact]] = {}
            for fact in tfacts:
                by_unit.setdefault(fact.unit, []).append(fact)
            for unit, ufacts in by_unit.items():
                if unit == tag:
                    plan(b, unit, tag_present, ctypes.sizeof(cls), ufacts)
                elif tag_present or _added_in(b, tag) is None:
                    offset = next(f.expected for f in ufacts if f.category == "offset")
                    plan(b, unit, tag_present and have.path(tag, unit[len(tag) + 1 :]), offset, ufacts)
        for name, value in b.constants.items():
            plan(b, name, have.constant(name), value, [_Fact(name, name, "value", value, name)])
        for name, fn in b.macro_functions.items():
            mfacts = [_Fact(name, f"{name}({n})", "macro", _call(fn, n), f"{name}({n})") for n in macro_inputs]
            plan(b, name, have.function(name), None, mfacts)

    extra: list[Finding] = []  # items of the headers the bindings lack, with their C value when it has one
    extra_facts: list[_Fact] = []
    if discover:
        extra, extra_facts = _header_extras(bindings, scan)
    values, failed = _probe(compiler, headers, dirs, facts + extra_facts)

    checked = 0
    reported_macros: set[str] = set()
    for i, fact in enumerate(facts):
        if fact.unit in failed or i not in values:
            continue
        checked += 1
        c = values[i]
        if c == fact.expected:
            continue
        if fact.category == "macro":
            if fact.unit in reported_macros:
                continue
            reported_macros.add(fact.unit)
            wrong = sum(1 for j, f in enumerate(facts) if f.unit == fact.unit and values.get(j) != f.expected)
            total = sum(1 for f in facts if f.unit == fact.unit)
            note = f"{wrong} of {total} inputs differ" if wrong > 1 else ""
            findings.append(Finding("macro", fact.item, fact.expected, c, "headers", note))
            continue
        findings.append(Finding(fact.category, fact.item, _display(fact, fact.expected), _display(fact, c)))

    # Units that did not compile; a field of a type that did not compile is not repeated.
    for unit, msg in failed.items():
        if unit not in owner or any(unit.startswith(u + ".") for u in failed):
            continue
        finding = _absent(owner[unit], unit, _binding_value(facts, unit), version=scan.version, source="headers")
        findings.append(finding if finding.category == "newer" else replace(finding, note=_join(finding.note, msg)))
    for unit, binding_value in absent:
        if not any(unit.startswith(u + ".") for u, _ in absent):
            findings.append(_absent(owner[unit], unit, binding_value, version=scan.version, source="headers"))

    base = len(facts)
    c_values = {extra_facts[i - base].unit: v for i, v in values.items() if i >= base}
    for f in extra:
        findings.append(Finding(f.category, f.item, f.binding, c_values.get(f.item, f.c), f.source, f.note))

    version = f"Linux {scan.version} headers" if scan.version else "headers"
    description = f"{version} ({', '.join(scan.roots)})"
    return Report("headers", description, scan.version, checked, _ordered(findings))


class _Have:
    """Presence of items in the scanned headers."""

    def __init__(self, scan: _Scan) -> None:
        self.records: dict[str, _CRecord] = {}
        self.names: set[str] = set()
        self.functions: set[str] = set()
        for items in scan.headers.values():
            self.records.update(items.records)
            self.names |= {n for n, fn in items.macros.items() if not fn} | set(items.enumerators)
            self.functions |= {n for n, fn in items.macros.items() if fn} | set(items.functions)
        self.paths = {tag: {p for p, _ in _record_paths(r)} for tag, r in self.records.items()}

    def record(self, tag: str) -> bool:
        return tag in self.records

    def path(self, tag: str, path: str) -> bool:
        return path in self.paths.get(tag, set())

    def constant(self, name: str) -> bool:
        return name in self.names

    def function(self, name: str) -> bool:
        return name in self.functions


def _header_extras(bindings: Sequence[Binding], scan: _Scan) -> tuple[list[Finding], list[_Fact]]:
    """Findings for the header items no binding has, and facts that give their C values."""
    findings: list[Finding] = []
    facts: list[_Fact] = []
    types: dict[str, CType] = {}
    constants: set[str] = set()
    functions: set[str] = set()
    not_mirrored: dict[str, str] = {}
    for b in bindings:
        types.update(_binding_types(b))
        constants |= set(b.constants)
        functions |= set(b.macro_functions)
        not_mirrored.update(b.not_mirrored)

    def lacking(item: str, expr: str | None, note: str = "") -> None:
        if item in not_mirrored:
            findings.append(Finding("not-mirrored", item, None, None, "headers", not_mirrored[item]))
            return
        findings.append(Finding("missing-in-binding", item, None, None, "headers", note))
        if expr is not None:
            facts.append(_Fact(item, item, "value", None, expr))

    for b in bindings:
        items = scan.headers[b.header]
        for tag, record in items.records.items():
            if tag not in types:
                lacking(tag, f"sizeof({tag})", "C value: its size")
                continue
            mine = {f.path: f for f in _fields(types[tag])}
            missing: list[str] = []
            for path, _ in _record_paths(record):
                if path not in mine and not _covered(path, mine, missing):
                    missing.append(path)
                    lacking(f"{tag}.{path}", f"offsetof({tag}, {path})", "C value: its offset")
        for name in items.enumerators:
            if name not in constants:
                lacking(name, name, "enumerator")
        for name, function_like in items.macros.items():
            if function_like:
                if name not in functions:
                    lacking(name, None, "function-like macro")
            elif name not in constants:
                lacking(name, name, "macro")
        for name, defined in items.functions.items():
            if name not in functions:
                lacking(name, None, "static inline function" if defined else "function declaration")
        for name in items.typedefs:
            lacking(f"typedef {name}", None)
    return findings, facts
