"""``kstructs check``: prove any module's ctypes structs against C headers and BTF.

    kstructs check MODULE [MODULE ...] [--header H]... [--include-dir DIR]... [-D NAME[=VALUE]]...
                   [--tag CLASS=TAG]... [--field CLASS.NAME=CNAME]... [--constant NAME=C_EXPR]...
                   [--skip ITEM=REASON]... [--cc CC] [--target TRIPLE] [--python INTERP]
                   [--btf [PATH]] [--strict] [--json]

Exit status: 0 the modules conform, 1 at least one mismatch (with --strict, a
note too), 2 the check could not run (one line on stderr; with --json, a
document on stdout as well).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from kstructs.conformance import config, discover
from kstructs.conformance.btfcheck import check_btf
from kstructs.conformance.cc import compiler
from kstructs.conformance.headers import check_headers
from kstructs.conformance.layout import RecordInfo
from kstructs.conformance.model import CATEGORIES, DEFAULT_BTF, Binding, Finding, Report
from kstructs.conformance.progress import Progress
from kstructs.errors import CheckError

#: The version of the --json document; it changes only when a key changes meaning or goes away.
DOCUMENT_VERSION = 1

_LABELS = {"not-mirrored": "not mirrored", "not-in-btf": "not in BTF", "not-compared": "not compared"}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def parser(prog: str = "kstructs check") -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description="Prove a module's ctypes structs, constants and enums against C headers (and BTF).",
    )
    p.add_argument("modules", nargs="*", metavar="MODULE", help="an importable module name or a path to a .py file")
    p.add_argument("--header", action="append", default=[], metavar="H", help="a header to include: linux/foo.h")
    p.add_argument("--include-dir", action="append", default=[], metavar="DIR", help="headers under DIR come first")
    p.add_argument("-D", dest="define", action="append", default=[], metavar="NAME[=VALUE]", help="a C define")
    p.add_argument("--tag", action="append", default=[], metavar="CLASS=TAG", help="the C type a class mirrors")
    p.add_argument("--field", action="append", default=[], metavar="CLASS.NAME=CNAME", help="a field's C name")
    p.add_argument("--constant", action="append", default=[], metavar="NAME=C_EXPR", help="a constant's C name")
    p.add_argument("--skip", action="append", default=[], metavar="ITEM=REASON", help="leave an item out, saying why")
    p.add_argument("--cc", metavar="CC", help="the C compiler command (default: $CC, then cc, gcc, clang)")
    p.add_argument("--target", metavar="TRIPLE", help="a target triple: compile with TRIPLE-gcc unless --cc is given")
    p.add_argument("--python", metavar="INTERP", help="compute the binding's layouts in this interpreter")
    p.add_argument(
        "--btf", nargs="?", const=DEFAULT_BTF, metavar="PATH", help=f"compare with BTF (default {DEFAULT_BTF})"
    )
    p.add_argument("--strict", action="store_true", help="notes (items newer than the headers) fail the check too")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "kstructs check") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    try:
        args = parser(prog).parse_args(argv)
    except _UsageError as e:
        return _cannot(prog, f"usage: {e}", want_json)
    try:
        return run(args, prog)
    except CheckError as e:
        return _cannot(prog, str(e), args.json)


def _cannot(prog: str, message: str, want_json: bool) -> int:
    print(f"{prog}: cannot check: {_printable(message)}", file=sys.stderr)
    if want_json:
        _emit(json.dumps(_document([], [], 2, strict=False, error=message, modules=[]), indent=2))
    return 2


def options(args: argparse.Namespace) -> config.Options:
    """The run's options and each module's settings (command line over pyproject.toml)."""
    found = config.find_pyproject(Path.cwd())
    project: dict[str, Any] = {}
    tables: dict[str, config.ModuleSettings] = {}
    if found is not None:
        project, tables = config.read_pyproject(found)
    names = list(args.modules) or list(project.get("modules", ())) or list(tables)
    if not names:
        raise CheckError("no module to check: name one, or add [tool.kstructs.check.MODULE] to pyproject.toml")
    command_line = config.ModuleSettings(
        "",
        headers=list(args.header),
        include_dirs=[str(Path(d).resolve()) for d in args.include_dir],
        defines=list(args.define),
        tags=config.pairs("--tag", args.tag),
        fields=config.pairs("--field", args.field),
        constants=config.pairs("--constant", args.constant),
        skip=config.pairs("--skip", args.skip),
    )
    shared = project.get("shared")
    modules = []
    for name in names:
        table = tables.get(name)
        if shared is not None:
            table = config.resolve(shared, table, config.ModuleSettings(name)) if table else shared
        modules.append(config.resolve(config.ModuleSettings(name), table, command_line))
    return config.Options(
        modules,
        cc=args.cc or project.get("cc"),
        target=args.target or project.get("target"),
        python=args.python or project.get("python"),
        btf=args.btf if args.btf is not None else project.get("btf"),
        strict=args.strict or bool(project.get("strict", False)),
        json=args.json,
        project=str(found) if found is not None and (tables or project.get("modules")) else None,
    )


def describe(modules: Sequence[str], python: str | None) -> dict[str, Any]:
    """The discover document of the modules: here, or in another interpreter."""
    if python is None:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            return discover.document(list(modules))
        except discover.DiscoverError as e:
            raise CheckError(str(e)) from None
        except Exception as e:  # a class ctypes itself cannot describe: say which, in one line
            raise CheckError(f"cannot describe {', '.join(modules)}: {type(e).__name__}: {e}") from None
    argv = [python, "-I", str(Path(discover.__file__)), "--path", str(Path.cwd())]
    for root in _import_roots(modules):
        argv += ["--path", root]
    try:
        done = subprocess.run([*argv, *modules], capture_output=True, text=True, timeout=120, check=False)
    except OSError as e:
        raise CheckError(f"cannot run {python}: {e.strerror or e}") from None
    except subprocess.TimeoutExpired:
        raise CheckError(f"{python} took over 120 s to describe the modules") from None
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckError(f"{python} did not describe the modules (status {done.returncode}): {last}") from None
    if not isinstance(doc, dict) or doc.get("format") != discover.FORMAT:
        raise CheckError(f"{python} gave a description of another format")
    if "error" in doc:
        raise CheckError(f"{python}: {doc['error']}")
    return doc


def _import_roots(modules: Sequence[str]) -> list[str]:
    """Where this interpreter finds the modules' top packages, for another interpreter's sys.path."""
    roots: list[str] = []
    for m in modules:
        if m.endswith(".py") or os.sep in m:
            roots.append(str(Path(m).resolve().parent))
            continue
        try:
            spec = importlib.util.find_spec(m.split(".")[0])
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin:
            origin = Path(spec.origin)
            roots.append(str(origin.parent.parent if origin.name == "__init__.py" else origin.parent))
    return list(dict.fromkeys(roots))


def _macro_functions(name: str, python: str | None) -> dict[str, Any]:
    """A module's Python versions of C macros: plain functions, called in this interpreter."""
    try:
        module = discover.load(name)
    except discover.DiscoverError:
        if python is None:
            raise
        return {}  # the module imports in the other interpreter only: its macros are not compared
    return dict(getattr(module, "MACRO_FUNCTIONS", {}))


def bindings(doc: dict[str, Any], opts: config.Options) -> list[tuple[Binding, config.ModuleSettings]]:
    out = []
    for mdoc, cli_settings in zip(doc["modules"], opts.modules, strict=True):
        own = config.declared(mdoc["name"], mdoc.get("settings", {}))
        s = config.resolve(own, None, cli_settings)
        if not s.headers:
            raise CheckError(f"no header for {cli_settings.module}: pass --header, or set HEADER in the module")
        records = {r["key"]: RecordInfo.from_doc(r) for r in mdoc["records"]}
        b = Binding(
            header=s.headers[0],
            constants={str(k): int(v) for k, v in mdoc["constants"].items()},
            macro_functions=_macro_functions(cli_settings.module, opts.python),
            not_mirrored=s.not_mirrored,
            added_in=s.added_in,
            headers=tuple(s.headers[1:]),
            records=records,
            roots=tuple(mdoc["roots"]),
            tags=s.tags,
            field_names=s.fields,
            constant_exprs=s.constants,
            enums={q: {str(k): int(v) for k, v in m.items()} for q, m in mdoc["enums"].items()},
            prefix=frozenset(s.prefix),
            skip=s.skip,
            values=s.values or "exact",
            width=frozenset(s.width),
            complete=bool(s.complete),
            module=mdoc["name"],
        )
        out.append((b, s))
    return out


def run(args: argparse.Namespace, prog: str = "kstructs check") -> int:
    opts = options(args)
    progress = Progress(prog)
    try:
        progress("importing the modules")
        doc = describe([m.module for m in opts.modules], opts.python)
        pairs = bindings(doc, opts)
        cc = compiler(opts.cc, target=opts.target)
        reports: list[Report] = []
        # Modules that need other include directories or defines are compiled apart.
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Binding]] = {}
        for b, s in pairs:
            groups.setdefault((tuple(s.include_dirs), tuple(s.defines)), []).append(b)
        abi = doc.get("abi")
        for (dirs, defines), group in groups.items():
            try:
                reports.append(
                    check_headers(group, include_dirs=dirs, cc=cc, defines=defines, abi=abi, progress=progress)
                )
            except CheckError as e:
                if len(group) < 2 or "do not compile" not in str(e):
                    raise
                # Headers that cannot share one program (glibc's and the kernel's UAPI headers that
                # define the same struct): each module's headers in a program of their own.
                for b in group:
                    reports.append(
                        check_headers([b], include_dirs=dirs, cc=cc, defines=defines, abi=abi, progress=progress)
                    )
        if opts.btf is not None:
            progress("reading BTF")
            reports.append(check_btf([b for b, _ in pairs], opts.btf))
    finally:
        progress.done()
    status = 1 if any(r.failed(opts.strict) for r in reports) else 0
    findings = [f for r in reports for f in r.findings]
    modules = [
        {"name": b.module, "file": m.get("file"), "headers": list(b.all_headers), "records": len(b.records)}
        for (b, _), m in zip(pairs, doc["modules"], strict=True)
    ]
    binding = {
        "python": doc.get("python"),
        "interpreter": opts.python or sys.executable,
        "abi": doc.get("abi"),
    }
    if opts.json:
        out = json.dumps(
            _document(
                reports, findings, status, strict=opts.strict, modules=modules, binding=binding, target=opts.target
            ),
            indent=2,
        )
    else:
        out = "\n".join([*_table(findings), _summary(prog, reports, findings, status, opts.strict)])
    _emit(out)
    return status


def _emit(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # The reader (say, head) stopped early: the exit status still tells the answer.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _printable(text: str) -> str:
    """Header and compiler text as a terminal may show it: control characters escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _value(v: int | str | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and abs(v) >= 0x1000:
        return f"-0x{-v:x}" if v < 0 else f"0x{v:x}"
    return _printable(str(v))


def _table(findings: Sequence[Finding]) -> list[str]:
    rows = [
        (
            f.category,
            _printable(f.item),
            f"binding={_value(f.binding)}",
            f"{f.source}={_value(f.c)}",
            _printable(f.note),
        )
        for f in findings
    ]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
    return [
        _printable("  ".join(cell.ljust(w) for cell, w in zip(r, [*widths, 0], strict=True)).rstrip()) for r in rows
    ]


def counts(findings: Sequence[Finding]) -> dict[str, int]:
    """Mismatches in all, then each other category."""
    out = {"mismatch": sum(1 for f in findings if f.severity == "mismatch")}
    for f in findings:
        if f.severity != "mismatch":
            out[f.category] = out.get(f.category, 0) + 1
    return out


def _summary(prog: str, reports: Sequence[Report], findings: Sequence[Finding], status: int, strict: bool) -> str:
    verdict = "conforms" if status == 0 else "does not conform"
    checked = sum(r.checked for r in reports)
    against = " and ".join(dict.fromkeys(r.description for r in reports))
    c = counts(findings)
    parts = [f"{c.pop('mismatch')} mismatches"] + [f"{n} {_LABELS.get(k, k)}" for k, n in c.items()]
    tail = " (--strict: notes fail)" if strict and any(f.severity == "note" for f in findings) else ""
    return f"{prog}: {verdict}{tail}: {checked} facts checked against {_printable(against)}; {', '.join(parts)}"


def _document(
    reports: Sequence[Report],
    findings: Sequence[Finding],
    status: int,
    *,
    strict: bool,
    modules: list[dict[str, Any]],
    binding: dict[str, Any] | None = None,
    target: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    layouts = not any(f.category == "not-compared" and f.item == "layouts" for f in findings)
    bitfields = layouts and not any(f.category == "not-compared" and f.item == "bitfields" for f in findings)
    return {
        "kstructs_check": DOCUMENT_VERSION,
        "status": status,
        "conforms": None if status == 2 else status == 0,
        "strict": strict,
        "error": error,
        "checked": sum(r.checked for r in reports),
        "counts": counts(findings),
        "modules": modules,
        "binding": binding,
        "target": target,
        "compared": {"layouts": layouts and status != 2, "bitfields": bitfields and status != 2, "values": status != 2},
        "sources": [r.to_dict() for r in reports],
        "categories": {k: {"severity": s, "meaning": m} for k, (s, m) in CATEGORIES.items()},
        "findings": [f.to_dict() for f in findings],
    }
