"""The headers check: the bindings against their headers, through the C compiler."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kstructs.conformance import discover
from kstructs.conformance.bits import bit_span, bitfield_bytes
from kstructs.conformance.cc import Compiler, _compiler, _probe, include_paths
from kstructs.conformance.cscan import _record_paths, _scan
from kstructs.conformance.layout import C_CLASSES, FieldPath, describe_type
from kstructs.conformance.model import (
    MACRO_INPUTS,
    Binding,
    Finding,
    Report,
    Value,
    _absent,
    _added_in,
    _binding_value,
    _call,
    _display,
    _Fact,
    _join,
    _ordered,
    _version,
)
from kstructs.conformance.plan import (
    Have,
    RecordPlan,
    constant_names,
    enum_names,
    is_name,
    record_plan,
    standalone,
)
from kstructs.errors import CheckError

# The data model of the C side, compared with the binding interpreter's before any layout is.
ABI_FACTS: Mapping[str, str] = {
    "pointer_size": "sizeof(void *)",
    "long_size": "sizeof(long)",
    "long_long_align": "offsetof(struct { char c; long long x; }, x)",
    "double_align": "offsetof(struct { char c; double x; }, x)",
    "big_endian": "__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__",
}


def host_abi() -> dict[str, int]:
    """This interpreter's data model, as ``ABI_FACTS`` names it."""
    return discover.abi()


@dataclass
class _Run:
    """What one check collects while it runs."""

    version: str | None
    findings: list[Finding] = field(default_factory=list)
    facts: list[_Fact] = field(default_factory=list)
    owner: dict[str, Binding] = field(default_factory=dict)  # unit -> binding, for ADDED_IN
    absent: list[tuple[str, Value]] = field(default_factory=list)  # known absent and recorded newer
    layout_units: set[str] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)  # skip key -> reason, when it matched
    doubtful: set[str] = field(default_factory=set)  # presence units the scan did not find


def _skip_key(binding: Binding, item: str) -> str | None:
    for key in binding.skip:
        if item == key or item.startswith(key + ".") or item.startswith(key + "["):
            return key
    return None


def check_headers(
    bindings: Sequence[Binding],
    *,
    include_dirs: Sequence[str | Path] = (),
    cc: str | Compiler | None = None,
    discover: bool = True,
    macro_inputs: Sequence[int] = MACRO_INPUTS,
    defines: Sequence[str] = (),
    abi: Mapping[str, int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Check the bindings against their headers with the C compiler.

    ``include_dirs`` come before the compiler's own include path; ``cc`` is the
    compiler command (default: ``$CC``, then cc, gcc, clang); ``defines`` are
    ``NAME[=VALUE]`` for ``-D``. With ``discover``, the header items a complete
    binding lacks are findings too. ``abi`` is the data model of the
    interpreter that described the bindings (default: this one): when the C
    side's differs, layouts are not compared, only values.
    """
    say = progress or (lambda _: None)
    compiler = _compiler(cc, defines)
    dirs = include_paths(include_dirs)
    headers = list(dict.fromkeys(h for b in bindings for h in b.all_headers))
    if not headers:
        raise CheckError("no header to check against: name one with --header")
    say(f"scanning {len(headers)} headers")
    scan = _scan(compiler, headers, dirs)
    have = Have(scan)
    run = _Run(scan.version)
    plans: list[RecordPlan] = []
    for b in bindings:
        plans += _plan_binding(b, have, run, macro_inputs)
    extra: list[Finding] = []
    extra_facts: list[_Fact] = []
    if discover:
        extra, extra_facts = _header_extras([b for b in bindings if b.complete], scan, have, plans)
    abi_facts = [_Fact(f"#abi.{k}", k, "value", None, e) for k, e in ABI_FACTS.items()]
    every = [*run.facts, *abi_facts, *extra_facts]
    say(f"compiling {len(every)} facts")
    # Items the scan did not find would fail the big program's compile, round after round:
    # the compiler still judges them, in a small program of their own.
    doubtful = [i for i, f in enumerate(every) if f.presence in run.doubtful]
    sure = [i for i, f in enumerate(every) if f.presence not in run.doubtful]
    values: dict[int, int] = {}
    failed: dict[str, str] = {}
    for part in (sure, doubtful):
        if part:
            part_values, part_failed = _probe(compiler, headers, dirs, [every[i] for i in part])
            values.update({part[j]: v for j, v in part_values.items()})
            failed.update(part_failed)
    base = len(run.facts)
    c_abi = {f.item: values.get(base + i) for i, f in enumerate(abi_facts)}
    mine = dict(abi or host_abi())
    comparable = all(c_abi.get(k) == v for k, v in mine.items() if c_abi.get(k) is not None and k != "big_endian")
    same_order = c_abi.get("big_endian") in (None, mine.get("big_endian"))
    if comparable and not same_order:
        # Sizes and offsets follow the same rules in either byte order; bitfields do not.
        order = "big" if c_abi.get("big_endian") else "little"
        note = (
            f"the C target is {order}-endian, the binding's interpreter is not: sizes, offsets and values are "
            "compared, bitfields are not (give --python an interpreter of the target to compare them)"
        )
        run.findings.append(Finding("not-compared", "bitfields", None, None, "headers", note))
        for p in plans:
            p.bitfields = []
    if not comparable:
        run.findings.append(_foreign(mine, c_abi))
        keep = {i for i, f in enumerate(run.facts) if f.presence not in run.layout_units}
        values = {i: v for i, v in values.items() if i >= base or i in keep}
        failed = {u: m for u, m in failed.items() if u.split("#", 1)[0] not in run.layout_units}
        plans = []
    else:
        bit_entries = [(p, item, fp) for p in plans for item, fp in p.bitfields]
        if bit_entries:
            say(f"compiling {len(bit_entries)} bitfields")
            got, bad = bitfield_bytes(compiler, headers, dirs, [(p.spelling.expr, fp.path) for p, _, fp in bit_entries])
            for i, (p, item, fp) in enumerate(bit_entries):
                _bitfield(run, p, item, fp, got=got.get(i), bad=bad.get(i), big=bool(c_abi.get("big_endian")))
    checked = _interpret(run, values, failed, plans)
    checked += sum(1 for p in plans for _ in p.bitfields)
    c_values = {extra_facts[i - base - len(abi_facts)].unit: v for i, v in values.items() if i >= base + len(abi_facts)}
    for f in extra:
        run.findings.append(Finding(f.category, f.item, f.binding, c_values.get(f.item, f.c), f.source, f.note))
    findings = _apply_skips(bindings, run)
    version = f"Linux {scan.version} headers" if scan.version else "headers"
    description = f"{version} ({', '.join(scan.roots)})"
    return Report("headers", description, scan.version, checked, _ordered(findings))


def _foreign(mine: Mapping[str, int], c: Mapping[str, int | None]) -> Finding:
    def words(m: Mapping[str, int | None]) -> str:
        order = "big-endian" if m.get("big_endian") else "little-endian"
        return (
            f"{m.get('pointer_size')}-byte pointers, {m.get('long_size')}-byte long, long long aligned to "
            f"{m.get('long_long_align')}, {order}"
        )

    note = (
        f"the C target has {words(c)}; the binding's interpreter has {words(mine)}: layouts are not compared, "
        "values are (give --python an interpreter of the target to compare layouts)"
    )
    return Finding("not-compared", "layouts", None, None, "headers", note)


def _plan_binding(b: Binding, have: Have, run: _Run, macro_inputs: Sequence[int]) -> list[RecordPlan]:
    plans: list[RecordPlan] = []
    version = run.version

    def plan(unit: str, present: bool, value: Value, unit_facts: list[_Fact]) -> bool:
        run.owner[unit] = b
        key = _skip_key(b, unit)
        if key is not None:
            run.skipped[key] = b.skip[key]
            return False
        recorded = b.added_in.get(unit)
        too_late = recorded is not None and version is not None and _version(recorded) > _version(version)
        if present and too_late:
            # The version record is wrong (or these headers carry a backport): it would hide the item on
            # older headers, so say so.
            note = f"ADDED_IN says Linux {recorded}; Linux {version} headers have it"
            run.findings.append(Finding("added-in", unit, recorded, version, "headers", note))
        added = _added_in(b, unit)
        if not present and added is not None and (version is None or _version(added) > _version(version)):
            run.absent.append((unit, value))  # not probed: it would not compile
            return False
        if not present:
            run.doubtful.add(unit)
        run.facts.extend(unit_facts)
        return True

    for rec, sp, paths in standalone(b, have):
        p = record_plan(b, rec, sp, paths, have)
        if rec.opaque:
            note = "an opaque class (no _fields_): only its name is compared"
            if plan(sp.item, sp.present, None, []) and not sp.present:
                run.findings.append(_absent(b, sp.item, None, version=version, source="headers"))
            else:
                run.findings.append(Finding("not-compared", sp.item, None, None, "headers", note))
            continue
        if rec.swapped:
            note = f"a {'big' if sys.byteorder == 'little' else 'little'}-endian class: layout compared, byte order not"
            run.findings.append(Finding("not-compared", sp.item, None, None, "headers", note))
        by_unit: dict[str, list[_Fact]] = {}
        for fact in p.facts:
            by_unit.setdefault(fact.presence, []).append(fact)
        kept: list[tuple[str, FieldPath]] = []
        for unit, ufacts in by_unit.items():
            run.layout_units.add(unit)
            if unit == sp.item:
                plan(unit, sp.present, rec.size, ufacts)
            elif sp.present or _added_in(b, sp.item) is None:
                offset = next((f.expected for f in ufacts if f.category == "offset"), None)
                path = unit[len(sp.item) + 1 :]
                present = sp.present and (sp.tag is None or have.path(sp.tag, path))
                plan(unit, present, offset, ufacts)
        for item, fp in p.bitfields:
            run.layout_units.add(item)
            if _skip_key(b, item) is not None:
                run.skipped[_skip_key(b, item) or ""] = b.skip[_skip_key(b, item) or ""]
                continue
            kept.append((item, fp))
        p.bitfields = kept
        plans.append(p)
    for name, expr in constant_names(b).items():
        _constant(b, run, plan=plan, have=have, name=name, expr=expr, v=b.constants[name])
    enums, unnamed = enum_names(b, have)
    named = set(constant_names(b).values())
    for name, (expr, value) in enums.items():
        if expr in named and b.constants.get(expr) == value:
            continue  # the module-level constant of the same name and value is compared already
        _constant(b, run, plan=plan, have=have, name=name, expr=expr, v=value)
    for name in unnamed:
        note = "an IntEnum member with no C name: give one with --constant, or a prefix with Enum.*=PREFIX_*"
        run.findings.append(Finding("not-compared", name, None, None, "headers", note))
    for name, fn in b.macro_functions.items():
        mfacts = [_Fact(name, f"{name}({n})", "macro", _call(fn, n), f"{name}({n})") for n in macro_inputs]
        plan(name, have.function(name), None, mfacts)
    return plans


def _constant(
    b: Binding,
    run: _Run,
    *,
    plan: Callable[[str, bool, Value, list[_Fact]], bool],
    have: Have,
    name: str,
    expr: str,
    v: int,
) -> None:
    item = expr if is_name(expr) else name
    present = have.constant(expr) if is_name(expr) else True
    explicit = name in b.constant_exprs or f"{name.rpartition('.')[0]}.*" in b.constant_exprs
    if not present and not b.complete and not explicit and _added_in(b, item) is None:
        note = "no C macro or enumerator of this name: give one with --constant"
        run.findings.append(Finding("not-compared", name, v, None, "headers", note))
        return
    facts = [_Fact(item, item, "value", v, expr)]
    if b.value_mode(name) == "width" or b.value_mode(item) == "width":
        facts.append(_Fact(f"{item}#width", item, "width", None, f"sizeof({expr})", item, "width"))
    plan(item, present, v, facts)


def _bitfield(
    run: _Run, p: RecordPlan, item: str, fp: FieldPath, *, got: tuple[bytes, bytes] | None, bad: str | None, big: bool
) -> None:
    b = p.binding
    if got is None:
        finding = _absent(b, item, f"{fp.bits} bits", version=run.version, source="headers")
        run.findings.append(replace(finding, note=_join(finding.note, bad or "")))
        return
    size = p.rec.size if p.binding.is_prefix(p.rec) else len(got[0])
    masks = fp.masks or {}
    lo, hi = fp.base, fp.base + fp.owner.size
    mine = {v: bytes.fromhex(masks.get(v, "")) for v in ("-1", "1")}
    theirs = {"-1": got[0][:size][lo:hi], "1": got[1][:size][lo:hi]}
    if mine == theirs:
        return
    swapped = fp.owner.swapped
    span_b = bit_span(mine["-1"], big != swapped)
    span_c = bit_span(theirs["-1"], big)

    def words(span: tuple[int, int] | None) -> str:
        return "no bits" if span is None else f"bit {span[0] + lo * 8}, {span[1]} bits"

    if span_b != span_c:
        run.findings.append(Finding("bitfield", item, words(span_b), words(span_c), "headers", "offset and width"))
        return
    which = "-1" if mine["-1"] != theirs["-1"] else "1"
    note = f"bytes with the field set to {which}"
    run.findings.append(Finding("bitfield", item, mine[which].hex(), theirs[which].hex(), "headers", note))


def _interpret(run: _Run, values: dict[int, int], failed: dict[str, str], plans: Sequence[RecordPlan]) -> int:
    facts = run.facts
    classes = {u: v for p in plans for u, v in p.classes.items()}
    by_unit = {f.unit: i for i, f in enumerate(facts)}
    explained: set[str] = set()  # presence units whose other facts a type finding already covers
    checked = 0
    findings = run.findings
    # The kind of each field first: a type finding says more than the size it implies.
    for unit, (allowed, fp) in classes.items():
        i = by_unit.get(unit)
        base = unit.split("#", 1)[0]
        if i is None or i not in values:
            continue  # not counted: the kind of a field stands behind its other facts
        c = values[i]
        records = run.owner[base].records if base in run.owner else {}
        if c not in allowed:
            findings.append(Finding("type", base, describe_type(fp.type, records), C_CLASSES.get(c, f"class {c}")))
            explained.add(base)
        elif fp.type.get("kind") in ("pointer", "funcptr"):
            j = by_unit.get(f"{base}#ptr")
            if j is not None and values.get(j) == 0:
                flexible = "incomplete type" in failed.get(f"{base}#size", "")
                findings.append(
                    Finding("type", base, "pointer", "a flexible array" if flexible else "an array", "headers")
                )
                explained.add(base)
    reported_macros: set[str] = set()
    for i, fact in enumerate(facts):
        if fact.presence in explained and fact.slot != "":
            continue
        if fact.unit in classes or fact.unit in failed or fact.presence in failed or i not in values:
            continue
        if fact.slot == "width":
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
        if fact.category == "value" and isinstance(fact.expected, int):
            findings.append(_value(run, fact, c, values, by_unit))
            continue
        if fact.category == "size" and fact.slot == "" and _prefix(run, fact, c, findings):
            continue
        findings.append(
            Finding(fact.category, fact.item, _display(fact, fact.expected), _display(fact, c), "headers", fact.note)
        )
    # Units that did not compile; a field of a type that did not compile is not repeated.
    for unit, msg in failed.items():
        base = unit.split("#", 1)[0]
        if base in explained or unit.startswith("#"):
            continue
        if "#" in unit:
            if base not in failed and "bit-field" not in msg:
                slot = unit.split("#", 1)[1]
                if slot not in ("size", "length", "sign", "type", "ptr") or "incomplete type" not in msg:
                    findings.append(Finding("type", base, None, None, "headers", f"{slot}: {msg}"))
            continue
        if unit not in run.owner or any(unit.startswith(u + ".") for u in failed if "#" not in u):
            continue
        if "bit-field" in msg:
            j = by_unit.get(f"{unit}#size")
            size = facts[j].expected if j is not None else None
            findings.append(Finding("type", unit, f"a full field of {size} bytes", "a bitfield", "headers"))
            continue
        value = _binding_value(facts, unit)
        if unit not in run.doubtful:
            # The headers have it, yet it does not compile here: a header it needs is not included, say.
            findings.append(Finding("compile-error", unit, value, None, "headers", msg))
            continue
        finding = _absent(run.owner[unit], unit, value, version=run.version, source="headers")
        findings.append(finding if finding.category == "newer" else replace(finding, note=_join(finding.note, msg)))
    for unit, binding_value in run.absent:
        if not any(unit.startswith(u + ".") for u, _ in run.absent):
            findings.append(_absent(run.owner[unit], unit, binding_value, version=run.version, source="headers"))
    return checked


def _prefix(run: _Run, fact: _Fact, c: int, findings: list[Finding]) -> bool:
    b = run.owner[fact.unit]
    rec = next((r for r in b.records.values() if b.is_prefix(r) and fact.expected == r.size), None)
    if rec is None:
        return False
    if c >= rec.size:
        note = f"mirrors the first {rec.size} of {c} bytes"
        findings.append(Finding("prefix", fact.item, rec.size, c, "headers", note))
        return True
    return False


def _value(run: _Run, fact: _Fact, c: int, values: Mapping[int, int], by_unit: Mapping[str, int]) -> Finding:
    assert isinstance(fact.expected, int)
    b = run.owner[fact.unit]
    j = by_unit.get(f"{fact.unit}#width")
    width = values.get(j) if j is not None else None
    if width:
        bits = 8 * width
        if all(-(1 << 31) <= v < (1 << 32) for v in (fact.expected, c)):
            # An ioctl number is an unsigned int to the kernel, whatever the macro's C type.
            bits = min(bits, 32)
        if (fact.expected - c) % (1 << bits) == 0:
            note = f"equal as {bits}-bit values"
            return Finding("width", fact.item, fact.expected, c, "headers", note)
    for bits in (32, 64):
        if (fact.expected - c) % (1 << bits) == 0:
            hint = "values = 'width' compares at the C type's width" if b.values == "exact" else ""
            return Finding("value", fact.item, fact.expected, c, "headers", _join(f"equal modulo 2**{bits}", hint))
    return Finding("value", fact.item, fact.expected, c, "headers")


def _apply_skips(bindings: Sequence[Binding], run: _Run) -> list[Finding]:
    out: list[Finding] = []
    for f in run.findings:
        b = run.owner.get(f.item)
        owners = [b] if b is not None else list(bindings)
        key = next((k for o in owners if (k := _skip_key(o, f.item)) is not None), None)
        if key is None:
            out.append(f)
            continue
        run.skipped[key] = next(o.skip[key] for o in owners if key in o.skip)
    for key, reason in run.skipped.items():
        out.append(Finding("skipped", key, None, None, "headers", reason))
    for b in bindings:
        stale = [k for k in b.skip if k not in run.skipped]
        if stale:
            raise CheckError(f"--skip {stale[0]} matches nothing in {b.module or b.header}")
    return out


def _header_extras(
    bindings: Sequence[Binding], scan: object, have: Have, plans: Sequence[RecordPlan]
) -> tuple[list[Finding], list[_Fact]]:
    """Findings for the header items no binding has, and facts that give their C values."""
    from kstructs.conformance.cscan import _Scan

    assert isinstance(scan, _Scan)
    findings: list[Finding] = []
    facts: list[_Fact] = []
    types: dict[str, RecordPlan] = {p.spelling.item: p for p in plans}
    constants: set[str] = set()
    functions: set[str] = set()
    not_mirrored: dict[str, str] = {}
    for b in bindings:
        constants |= set(constant_names(b).values())
        constants |= {expr for expr, _ in enum_names(b, have)[0].values()}
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
        for header in b.all_headers:
            items = scan.headers[header]
            for tag, record in items.records.items():
                if tag not in types:
                    lacking(tag, f"sizeof({tag})", "C value: its size")
                    continue
                p = types[tag]
                if b.is_prefix(p.rec):
                    continue
                mine = {f.path: f for f in p.fields}
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


def _covered(path: str, mine: Mapping[str, FieldPath], missing: Sequence[str]) -> bool:
    """Whether a C field path is already spoken for: inside a member that is
    missing from the binding, or inside a binding field that is not walked
    into (a named type or a scalar, whose own findings cover it)."""
    parts = path.split(".")
    for n in range(1, len(parts)):
        prefix = ".".join(parts[:n])
        if prefix in missing or (prefix in mine and not mine[prefix].nested):
            return True
    return False
