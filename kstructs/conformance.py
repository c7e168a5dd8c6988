"""Prove ctypes layouts and constants against C: any header tree through the
C compiler, or the kernel's BTF.

A ``Binding`` says what one header's mirror declares: its ctypes classes
(named after the C tags; a class for an anonymous member type is named
``parent__member`` and reached through a field), its integer constants, its
Python versions of the header's function-like macros, the header items it
leaves out on purpose, and the Linux version that added each newer item.
``Binding.from_module`` reads that from a module with ``HEADER``, ``TYPES``,
``CONSTANTS``, ``MACRO_FUNCTIONS``, ``NOT_MIRRORED`` and ``ADDED_IN``.

``check_headers`` compiles one probe program against the headers and runs it:
``sizeof``, ``_Alignof``, ``offsetof``, signedness and array length of every
field path, every constant's value and every macro over a range of inputs.
It also preprocesses the headers to find the items they have and the binding
lacks. ``check_btf`` compares the same layouts and the enumerators with a BTF
blob such as ``/sys/kernel/btf/vmlinux``. Both return a ``Report`` of
``Finding`` values; no exception escapes for a difference, only
``CheckError`` when the check cannot run at all.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Final, TypeAlias

from kstructs.btf import Btf, Kind, Member
from kstructs.errors import BtfError, CheckError

__all__ = ["Binding", "CheckError", "Finding", "Report", "check_btf", "check_headers", "CATEGORIES", "DEFAULT_BTF"]

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


# ---------------------------------------------------------------------------
# The compiler.


def _compiler(cc: str | None) -> list[str]:
    spec = cc or os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if not spec:
        raise CheckError("no C compiler: pass --cc or set CC, or install gcc")
    argv = shlex.split(spec)
    if not argv or shutil.which(argv[0]) is None:
        raise CheckError(f"no C compiler: {spec!r} not found")
    return argv


_DIAGNOSTIC = re.compile(
    r"^(?P<file>[^:\n]+):(?P<line>\d+):(?:\d+:)? (?P<kind>fatal error|error|warning|note): (?P<msg>.*)$"
)


def _run(argv: list[str], what: str, cwd: str) -> subprocess.CompletedProcess[str]:
    try:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}  # diagnostics in English, for _errors()
        return subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=120, cwd=cwd)
    except OSError as e:
        raise CheckError(f"cannot run {what} {argv[0]}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise CheckError(f"{what} {argv[0]} took over 120 s") from None


def _errors(stderr: str) -> list[tuple[str, int, str, list[tuple[str, int]]]]:
    """Each error as (file, line, message, locations of its notes)."""
    errors: list[tuple[str, int, str, list[tuple[str, int]]]] = []
    for text in stderr.splitlines():
        m = _DIAGNOSTIC.match(text)
        if m is None:
            continue
        where = (m["file"], int(m["line"]))
        if m["kind"] in ("error", "fatal error"):
            errors.append((*where, m["msg"], []))
        elif m["kind"] == "note" and errors:
            errors[-1][3].append(where)
    return errors


def _missing_header(stderr: str) -> str | None:
    m = re.search(r"error: ([^:\s]+): No such file or directory|no include path in which to search for (\S+)", stderr)
    return (m[1] or m[2]) if m else None


def _probe(
    cc: list[str], headers: Sequence[str], include_dirs: Sequence[Path], facts: Sequence[_Fact]
) -> tuple[dict[int, int], dict[str, str]]:
    """Evaluate the facts' C expressions in one program: values by fact index,
    and the units that did not compile, with the compiler's first message."""
    flags = ["-Werror=implicit-function-declaration", *(f"-I{d}" for d in include_dirs)]
    live = [i for i, f in enumerate(facts) if f.expr]
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="kstructs-") as tmp:
        src, exe = Path(tmp, "probe.c"), Path(tmp, "probe")
        for _ in range(20):
            lines = [f"#include <{h}>" for h in headers]
            lines += ["#include <stddef.h>", "#include <stdio.h>", "int main(void) {"]
            lines.append("    struct { unsigned long long u; int neg; } v[] = {")
            first = len(lines) + 1
            for i in live:
                e = facts[i].expr
                lines.append(f"        {{ (unsigned long long)({e}), ({e}) < 0 }},")
            lines.append("        { 0, 0 } };")
            lines.append("    for (size_t i = 0; i + 1 < sizeof v / sizeof v[0]; i++)")
            lines.append('        printf("%llu %d\\n", v[i].u, v[i].neg);')
            lines += ["    return 0;", "}", ""]
            src.write_text("\n".join(lines))
            built = _run([*cc, *flags, "-o", str(exe), str(src)], "the C compiler", tmp)
            if built.returncode == 0:
                break
            if (name := _missing_header(built.stderr)) is not None:
                raise CheckError(f"headers not found: {name}")
            bad: dict[int, str] = {}
            for file, line, msg, notes in _errors(built.stderr):
                for f, n in [(file, line), *notes]:
                    if Path(f).name == src.name and first <= n < first + len(live):
                        bad.setdefault(live[n - first], msg)
            if not bad:
                first_error = _first_error(built.stderr)
                what = "the probe does" if first_error.startswith(str(src)) else "the headers do"
                raise CheckError(f"{what} not compile: {first_error}")
            for i, msg in bad.items():
                failed.setdefault(facts[i].unit, msg)
            live = [i for i in live if facts[i].unit not in failed]
        else:
            raise CheckError("the probe does not compile after 20 rounds of removing failed items")
        ran = _run([str(exe)], "the probe", tmp)
        if ran.returncode != 0:
            raise CheckError(f"the probe failed with status {ran.returncode}")
    values: dict[int, int] = {}
    for i, text in zip(live, ran.stdout.splitlines(), strict=True):
        u, neg = text.split()
        values[i] = int(u) - (1 << 64) if neg == "1" else int(u)
    return values, failed


def _first_error(stderr: str) -> str:
    for file, line, msg, _ in _errors(stderr):
        return f"{file}:{line}: {msg}"
    return stderr.strip().splitlines()[-1] if stderr.strip() else "no message"


# ---------------------------------------------------------------------------
# What the headers contain: their preprocessed text, read with a small parser
# for the declarations UAPI headers use.


@dataclass
class _CRecord:
    kind: str  # "struct" or "union"
    tag: str | None
    members: list[_CMember]


@dataclass
class _CMember:
    name: str | None  # None: a C11 unnamed struct/union member
    nested: _CRecord | None  # an untagged struct/union defined in place


@dataclass
class _HeaderItems:
    path: str = ""  # the file the compiler used
    macros: dict[str, bool] = field(default_factory=dict)  # name -> function-like
    records: dict[str, _CRecord] = field(default_factory=dict)  # "struct X" -> definition
    enumerators: list[str] = field(default_factory=list)
    functions: dict[str, bool] = field(default_factory=dict)  # name -> defined here (static inline)
    typedefs: list[str] = field(default_factory=list)


_TOKEN = re.compile(r"[A-Za-z_]\w*|\.?\d[\w.]*|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|\S")
_NOT_A_NAME: Final = frozenset(
    {
        *("auto", "char", "const", "double", "enum", "extern", "float", "inline", "int", "long", "register"),
        *("restrict", "short", "signed", "static", "struct", "typedef", "union", "unsigned", "void", "volatile"),
        *("_Bool", "_Atomic", "__const", "__inline", "__inline__", "__restrict", "__extension__", "__signed__"),
        "__volatile__",
    }
)
# Words followed by a parenthesised argument that declares nothing.
_ATTRIBUTE: Final = frozenset(
    {
        *("__attribute__", "__attribute", "__declspec", "__asm__", "__asm", "asm", "_Alignas"),
        *("_Static_assert", "static_assert", "__typeof__", "__typeof", "typeof"),
    }
)


class _Parser:
    """Declarations of preprocessed C: records, enumerators, functions, typedefs."""

    def __init__(self, text: str, items: _HeaderItems) -> None:
        self.tokens = _TOKEN.findall(text)
        self.pos = 0
        self.items = items

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def skip_group(self, opening: str, closing: str) -> None:
        """Skip from an opening bracket (already taken) to its closing one."""
        depth = 1
        while depth and (tok := self.take()) is not None:
            depth += (tok == opening) - (tok == closing)

    def skip_attribute(self) -> None:
        if self.peek() == "(":
            self.take()
            self.skip_group("(", ")")

    def parse(self) -> None:
        while self.peek() is not None:
            self.declaration(top=True)

    def record_or_enum(self, keyword: str) -> tuple[_CRecord | None, str | None]:
        """After struct/union/enum: the record defined here (if any) and its tag."""
        tag = None
        while (tok := self.peek()) in _ATTRIBUTE:
            self.take()
            self.skip_attribute()
        if tok is not None and re.match(r"[A-Za-z_]", tok):
            tag = self.take()
        while self.peek() in _ATTRIBUTE:
            self.take()
            self.skip_attribute()
        if self.peek() != "{":
            return None, tag
        self.take()
        if keyword == "enum":
            self.enumerators()
            return None, tag
        record = _CRecord(keyword, tag, [])
        while (tok := self.peek()) is not None and tok != "}":
            record.members += self.declaration(top=False)
        self.take()
        if tag is not None:
            self.items.records[f"{keyword} {tag}"] = record
        return record, tag

    def enumerators(self) -> None:
        expect_name = True
        while (tok := self.take()) is not None and tok != "}":
            if expect_name and re.match(r"[A-Za-z_]", tok):
                self.items.enumerators.append(tok)
                expect_name = False
            elif tok in ("(", "["):
                self.skip_group(tok, ")" if tok == "(" else "]")
            elif tok == ",":
                expect_name = True

    def declaration(self, top: bool) -> list[_CMember]:
        """One declaration up to its ';' (or a function body); the members it declares."""
        record: _CRecord | None = None
        tagged = False
        typedef = False
        declarators: list[list[str]] = [[]]
        depth = 0
        while (tok := self.peek()) is not None:
            if depth == 0 and tok == "}" and not top:
                break  # a member list without its final ';'
            self.take()
            if depth == 0 and tok == ";":
                break
            if tok in _ATTRIBUTE:
                self.skip_attribute()
                if "typeof" in tok:
                    declarators[-1].append("<type>")
            elif tok in ("struct", "union", "enum") and depth == 0:
                defined, tag = self.record_or_enum(tok)
                if tok != "enum":
                    record, tagged = defined, tag is not None
                declarators[-1].append("<type>")
            elif tok == "typedef":
                typedef = True
            elif tok == "{" and depth == 0:
                if declarators[-1][-1:] == ["="]:
                    self.skip_group("{", "}")  # an initializer
                    continue
                self.skip_group("{", "}")  # a function body
                if top and (name := _function_name(declarators[-1])):
                    self.items.functions[name] = True
                return []
            elif tok == "," and depth == 0:
                declarators.append([])
            else:
                depth += (tok in "([") - (tok in ")]")
                declarators[-1].append(tok)
        members: list[_CMember] = []
        for at, tokens in enumerate(declarators):
            if (name := _function_name(tokens)) is not None:
                if top and not typedef:
                    self.items.functions.setdefault(name, False)
                continue
            name = _declarator_name(tokens, first=at == 0)
            if typedef and name is not None:
                self.items.typedefs.append(name)
            elif not top and (name is not None or (record is not None and not tagged)):
                members.append(_CMember(name, record if record is not None and not tagged else None))
        return members


def _head(tokens: list[str]) -> list[str]:
    """A declarator up to its array bounds, bitfield width or initializer."""
    for at, tok in enumerate(tokens):
        if tok in ("[", ":", "="):
            return tokens[:at]
    return tokens


def _is_name(tok: str) -> bool:
    return bool(re.match(r"[A-Za-z_]", tok)) and tok not in _NOT_A_NAME


def _function_name(tokens: list[str]) -> str | None:
    """The name of a function declarator ``f(...)``; None for anything else."""
    head = _head(tokens)
    if "(" not in head:
        return None
    at = head.index("(")
    if at + 1 < len(head) and head[at + 1] == "*":
        return None  # a function pointer
    return head[at - 1] if at and _is_name(head[at - 1]) else None


def _declarator_name(tokens: list[str], first: bool) -> str | None:
    """The name a declarator declares. In the first declarator of a
    declaration the type comes first: ``__u32 len`` names ``len``."""
    head = _head(tokens)
    if "(" in head:  # a function pointer: ( * name )
        inner = head[head.index("(") + 1 :]
        inner = inner[: inner.index(")")] if ")" in inner else inner
        names = [t for t in inner if _is_name(t)]
        return names[-1] if names else None
    names = [t for t in head if _is_name(t)]
    if not names:
        return None
    if not first or len(names) >= 2 or len(names) < len(head):
        # the type was a keyword, a record or enum ("<type>"), or a typedef name before this one
        return names[-1]
    return None


def _record_paths(record: _CRecord, prefix: str = "") -> Iterator[tuple[str, _CRecord | None]]:
    """Field paths of a record, into untagged member types, unnamed members hoisted."""
    for m in record.members:
        if m.name is None:
            if m.nested is not None:
                yield from _record_paths(m.nested, prefix)
            continue
        yield prefix + m.name, m.nested
        if m.nested is not None:
            yield from _record_paths(m.nested, f"{prefix}{m.name}.")


@dataclass
class _Scan:
    headers: dict[str, _HeaderItems]
    version: str | None  # "6.1" from LINUX_VERSION_CODE
    roots: list[str]  # the include directories the headers came from


_LINE_MARKER = re.compile(r'^# \d+ "(?P<file>[^"]*)"')
_DEFINE = re.compile(r"^#define (?P<name>[A-Za-z_]\w*)(?P<paren>\()?(?P<body>.*)$")


def _include_guard(name: str, body: str, function_like: bool) -> bool:
    """An empty macro, or a header's include guard (``_SYS_INOTIFY_H 1``)."""
    return not function_like and (not body or (body == "1" and re.search(r"_H_*$|_INCLUDED_*$", name) is not None))


def _scan(cc: list[str], headers: Sequence[str], include_dirs: Sequence[Path]) -> _Scan:
    """Preprocess the headers once (``-E -dD``): their macros, with the C text of each, parsed."""
    lines = [f"#include <{h}>" for h in headers]
    lines += ["#if defined(__has_include)", "#if __has_include(<linux/version.h>)", "#include <linux/version.h>"]
    lines += ["#endif", "#endif", ""]
    with tempfile.TemporaryDirectory(prefix="kstructs-") as tmp:
        src = Path(tmp, "scan.c")
        src.write_text("\n".join(lines))
        flags = [f"-I{d}" for d in include_dirs]
        done = _run([*cc, "-E", "-dD", *flags, str(src)], "the C compiler", tmp)
    if done.returncode != 0:
        if (name := _missing_header(done.stderr)) is not None:
            raise CheckError(f"headers not found: {name}")
        raise CheckError(f"the headers do not preprocess: {_first_error(done.stderr)}")
    items = {h: _HeaderItems() for h in headers}
    texts: dict[str, list[str]] = {h: [] for h in headers}
    current: str | None = None
    version: str | None = None
    for text in done.stdout.splitlines():
        if (marker := _LINE_MARKER.match(text)) is not None:
            path = marker["file"]
            current = next((h for h in headers if path == h or path.endswith("/" + h)), None)
            if current is not None and not items[current].path:
                items[current].path = path
            continue
        if text.startswith("#define "):
            d = _DEFINE.match(text)
            if d is None:
                continue
            if d["name"] == "LINUX_VERSION_CODE" and d["body"].strip().isdigit():
                code = int(d["body"])
                version = f"{code >> 16}.{(code >> 8) & 0xFF}"
            if current is not None and not _include_guard(d["name"], d["body"].strip(), bool(d["paren"])):
                items[current].macros[d["name"]] = bool(d["paren"])
        elif text.startswith("#undef ") and current is not None:
            items[current].macros.pop(text.split()[1], None)
        elif current is not None and not text.startswith("#"):
            texts[current].append(text)
    for h in headers:
        _Parser("\n".join(texts[h]), items[h]).parse()
    roots = []
    for h in headers:
        root = items[h].path.removesuffix("/" + h) or "."
        if root not in roots:
            roots.append(root)
    return _Scan(items, version, roots)


# ---------------------------------------------------------------------------
# The headers check.


def check_headers(
    bindings: Sequence[Binding],
    *,
    include_dirs: Sequence[str | Path] = (),
    cc: str | None = None,
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
    dirs = [Path(d).resolve() for d in include_dirs]
    for d in dirs:
        if not d.is_dir():
            raise CheckError(f"include directory not found: {d}")
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
