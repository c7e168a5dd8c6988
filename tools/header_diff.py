#!/usr/bin/env python3
"""Prove the binding against the installed headers, any header tree, and the running kernel's BTF.

    python tools/header_diff.py [--include-dir DIR]... [--btf [PATH]] [--json] [--strict]
                                [--cc CC] [--target TRIPLE] [--cc-timeout SECONDS]

Exit status: 0 the binding conforms, 1 at least one mismatch (with --strict,
an item newer than the headers too), 2 the check could not run (one line on
stderr; with --json, a document with "status": 2 and the "error" on stdout).

Nothing is run but the compiler: the probe is compile-only, so ``--target
TRIPLE`` checks against a cross-compiler (``TRIPLE-gcc``) and its headers
(Debian: ``gcc-TRIPLE`` and ``linux-libc-dev-ARCH-cross``). A target whose
data model lays structures out otherwise than this Python (a 32-bit target
from a 64-bit Python) cannot be checked here: the binding's layouts are this
Python's, not the target's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

# Run from a checkout without installing: the package is next to tools/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kstructs import cn_proc, connector, netlink
from kstructs.conformance import CATEGORIES, DEFAULT_BTF, Binding, CheckError, Finding, Report, check_btf, check_headers
from kstructs.conformance.cc import DEFAULT_TIMEOUT, compiler, host_abi, target_abi
from kstructs.conformance.probe import _text

MODULES = (netlink, connector, cn_proc)
_LABELS = {"not-mirrored": "not mirrored", "not-in-btf": "not in BTF"}


def _value(v: int | str | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and abs(v) >= 0x1000:
        return f"-0x{-v:x}" if v < 0 else f"0x{v:x}"
    return str(v)


def _table(findings: Sequence[Finding]) -> list[str]:
    rows = [(f.category, f.item, f"binding={_value(f.binding)}", f"{f.source}={_value(f.c)}", f.note) for f in findings]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, [*widths, 0], strict=True)).rstrip() for r in rows]


def _counts(findings: Sequence[Finding]) -> dict[str, int]:
    counts = Counter(f.category for f in findings)
    summary = {"mismatch": sum(n for c, n in counts.items() if CATEGORIES[c][0] == "mismatch")}
    summary.update({c: n for c, n in counts.items() if CATEGORIES[c][0] != "mismatch"})
    return summary


def _summary(reports: Sequence[Report], findings: Sequence[Finding], status: int, strict: bool) -> str:
    verdict = "conforms" if status == 0 else "does not conform"
    checked = sum(r.checked for r in reports)
    against = " and ".join(r.description for r in reports)
    counts = _counts(findings)
    parts = [f"{counts.pop('mismatch')} mismatches"] + [f"{n} {_LABELS.get(c, c)}" for c, n in counts.items()]
    tail = " (--strict: newer items fail)" if strict and any(f.severity == "note" for f in findings) else ""
    return f"header_diff: {verdict}{tail}: {checked} facts checked against {against}; {', '.join(parts)}"


def _document(reports: Sequence[Report], findings: Sequence[Finding], status: int, strict: bool) -> str:
    doc = {
        "status": status,
        "conforms": status == 0,
        "strict": strict,
        "checked": sum(r.checked for r in reports),
        "counts": _counts(findings),
        "sources": [r.to_dict() for r in reports],
        "findings": [f.to_dict() for f in findings],
    }
    return json.dumps(doc, indent=2)


def _failure(message: str, strict: bool) -> str:
    """The JSON document when the check could not run."""
    doc: dict[str, object] = {
        "status": 2,
        "conforms": None,
        "strict": strict,
        "error": message,
        "checked": 0,
        "counts": {},
        "sources": [],
        "findings": [],
    }
    return json.dumps(doc, indent=2)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (and a JSON document with --json), exit 2."""

    def error(self, message: str) -> NoReturn:
        _cannot(f"usage: {message}", json_out="--json" in sys.argv[1:], strict=False)
        sys.exit(2)


def _cannot(message: str, *, json_out: bool, strict: bool) -> int:
    message = _text(message)
    print(f"header_diff: cannot check: {message}", file=sys.stderr)
    if json_out:
        _emit(_failure(message, strict))
    return 2


def _emit(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # The reader (say, head) stopped early: the exit status still tells the answer.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="header_diff.py",
        description="Check the kstructs binding against C headers (and the kernel's BTF).",
    )
    parser.add_argument(
        "--include-dir", action="append", default=[], metavar="DIR", help="headers under DIR come first (repeatable)"
    )
    parser.add_argument(
        "--btf", nargs="?", const=DEFAULT_BTF, metavar="PATH", help=f"compare with BTF as well (default {DEFAULT_BTF})"
    )
    parser.add_argument("--json", action="store_true", help="print the findings as one JSON document")
    parser.add_argument("--strict", action="store_true", help="items newer than the headers fail the check")
    parser.add_argument(
        "--cc",
        metavar="CC",
        help="the C compiler command (default: TRIPLE-gcc with --target, else $CC, cc, gcc, clang)",
    )
    parser.add_argument(
        "--target", metavar="TRIPLE", help="check against this target's cross-compiler and headers (TRIPLE-gcc)"
    )
    parser.add_argument(
        "--cc-timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"kill a compiler run (and its children) after this long (default {DEFAULT_TIMEOUT:g})",
    )
    args = parser.parse_args(argv)

    bindings = [Binding.from_module(m) for m in MODULES]
    try:
        cc = compiler(args.cc, target=args.target, timeout=args.cc_timeout)
        if args.target is not None:
            target, host = target_abi(cc), host_abi()
            if not target.lays_out_like(host):
                raise CheckError(
                    f"{args.target} is {target.describe()}; this Python is {host.describe()}: "
                    "the binding's layouts here are not the target's"
                )
        reports = [check_headers(bindings, include_dirs=args.include_dir, cc=cc)]
        if args.btf is not None:
            reports.append(check_btf(bindings, args.btf))
    except CheckError as e:
        return _cannot(str(e), json_out=args.json, strict=args.strict)

    status = 1 if any(r.failed(args.strict) for r in reports) else 0
    findings = [f for r in reports for f in r.findings]
    if args.json:
        out = [_document(reports, findings, status, args.strict)]
    else:
        out = [*_table(findings), _summary(reports, findings, status, args.strict)]
    _emit("\n".join(out))
    return status


if __name__ == "__main__":
    sys.exit(main())
