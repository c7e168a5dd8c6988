"""What headers contain: their preprocessed text, read with a small parser for the declarations UAPI headers use."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from kstructs.conformance.cc import MAX_PREPROCESSED, Compiler, _first_error, _missing_header, _write, workdir
from kstructs.conformance.probe import _text
from kstructs.errors import CheckError

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


_NAME_START: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


class _Parser:
    """Declarations of preprocessed C: records, enumerators, functions, typedefs."""

    def __init__(self, text: str, items: _HeaderItems) -> None:
        self.tokens: list[str | None] = [*_TOKEN.findall(text), None]  # None: the end
        self.pos = 0
        self.depth = 0
        self.items = items

    def peek(self) -> str | None:
        return self.tokens[self.pos]

    def take(self) -> str | None:
        tok = self.tokens[self.pos]
        if tok is not None:
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
        if tok is not None and tok[0] in _NAME_START:
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
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CheckError(f"the headers nest declarations over {MAX_DEPTH} levels deep")
        while (tok := self.peek()) is not None and tok != "}":
            record.members += self.declaration(top=False)
        self.depth -= 1
        self.take()
        if tag is not None:
            self.items.records[f"{keyword} {tag}"] = record
        return record, tag

    def enumerators(self) -> None:
        expect_name = True
        while (tok := self.take()) is not None and tok != "}":
            if expect_name and tok[0] in _NAME_START:
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
    return bool(tok[0] in _NAME_START) and tok not in _NOT_A_NAME


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


MAX_TEXT: Final = 2 << 20  # bytes of the checked headers' own declarations parsed
MAX_DEPTH: Final = 200  # nesting of records and enums in one declaration
_UNDEF = re.compile(r"^#undef\s+(?P<name>[A-Za-z_]\w*)")
_VERSION_CODE = re.compile(r"\s*(?P<code>[0-9]{1,10})\s*")


def _unescape(path: str) -> str:
    """A line marker's file name: C escapes undone, bytes decoded with replacement."""
    if "\\" not in path:
        return path
    raw = re.sub(
        rb"\\([0-7]{1,3}|.)",
        lambda m: bytes([int(m[1], 8) & 0xFF]) if m[1][:1] in b"01234567" else m[1],
        path.encode("utf-8", "surrogateescape"),
    )
    return raw.decode("utf-8", "replace")


def _scan(cc: Compiler, headers: Sequence[str], include_dirs: Sequence[Path]) -> _Scan:
    """Preprocess the headers once (``-E -dD``): their macros, with the C text of each, parsed.

    What is read is bounded: the preprocessed file (``MAX_OUTPUT``), the
    checked headers' own text (``MAX_TEXT``) and the nesting of their
    declarations (``MAX_DEPTH``)."""
    lines = [f"#include <{h}>" for h in headers]
    lines += ["#if defined(__has_include)", "#if __has_include(<linux/version.h>)", "#include <linux/version.h>"]
    lines += ["#endif", "#endif", ""]
    items = {h: _HeaderItems() for h in headers}
    texts: dict[str, list[str]] = {h: [] for h in headers}
    size = 0
    current: str | None = None
    version: str | None = None
    with workdir() as tmp:
        src, out = tmp / "scan.c", tmp / "scan.i"
        _write(src, "\n".join(lines))
        flags = [f"-I{d}" for d in include_dirs]
        done = cc.run(
            ["-E", "-dD", *flags, "-o", str(out), str(src)], "the C compiler", tmp, output=out, limit=MAX_PREPROCESSED
        )
        if done.returncode != 0:
            if (name := _missing_header(done.output)) is not None:
                raise CheckError(cc.headers_not_found(name))
            raise CheckError(f"the headers do not preprocess: {_text(_first_error(done.output))}")
        try:
            if out.stat().st_size > MAX_PREPROCESSED:
                raise CheckError(f"the preprocessed headers are over 0x{MAX_PREPROCESSED:x} bytes: too large to scan")
            with open(out, encoding="utf-8", errors="replace", newline="\n") as f:
                for raw in f:
                    text = raw.rstrip("\n")
                    if (marker := _LINE_MARKER.match(text)) is not None:
                        path = _unescape(marker["file"])
                        current = next((h for h in headers if path == h or path.endswith("/" + h)), None)
                        if current is not None and not items[current].path:
                            items[current].path = path
                        continue
                    if text.startswith("#define "):
                        d = _DEFINE.match(text)
                        if d is None:
                            continue
                        if d["name"] == "LINUX_VERSION_CODE" and (v := _VERSION_CODE.fullmatch(d["body"])):
                            code = int(v["code"])
                            version = f"{code >> 16}.{(code >> 8) & 0xFF}"
                        if current is not None and not _include_guard(d["name"], d["body"].strip(), bool(d["paren"])):
                            items[current].macros[d["name"]] = bool(d["paren"])
                    elif text.startswith("#undef"):
                        if current is not None and (u := _UNDEF.match(text)) is not None:
                            items[current].macros.pop(u["name"], None)
                    elif current is not None and not text.startswith("#"):
                        size += len(text) + 1
                        if size > MAX_TEXT:
                            raise CheckError(
                                f"the headers' declarations are over 0x{MAX_TEXT:x} bytes: too large to scan"
                            )
                        texts[current].append(text)
        except FileNotFoundError:
            raise CheckError("the compiler wrote no preprocessed file") from None
        except OSError as e:
            raise CheckError(f"cannot read the preprocessed headers: {_text(e.strerror or e)}") from None
    for h in headers:
        _Parser("\n".join(texts[h]), items[h]).parse()
    roots = []
    for h in headers:
        root = items[h].path.removesuffix("/" + h) or "."
        if root not in roots:
            roots.append(root)
    return _Scan(items, version, roots)
