#!/usr/bin/env python3
"""Prove the binding against the installed headers, any header tree, and the running kernel's BTF.

    python tools/header_diff.py [--include-dir DIR]... [--btf [PATH]] [--json] [--strict] [--cc CC]

Exit status: 0 the binding conforms, 1 at least one mismatch (with --strict,
an item newer than the headers too), 2 the check could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

# Run from a checkout without installing: the package is next to tools/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kstructs import cn_proc, connector, netlink
from kstructs.conformance import CATEGORIES, DEFAULT_BTF, Binding, CheckError, Finding, Report, check_btf, check_headers

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
        "sources": [
            {"source": r.source, "description": r.description, "linux_version": r.version, "checked": r.checked}
            for r in reports
        ],
        "findings": [
            {
                "category": f.category,
                "severity": f.severity,
                "source": f.source,
                "item": f.item,
                "binding": f.binding,
                "c": f.c,
                "note": f.note,
            }
            for f in findings
        ],
    }
    return json.dumps(doc, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--cc", metavar="CC", help="the C compiler command (default: $CC, then cc, gcc, clang)")
    args = parser.parse_args(argv)

    bindings = [Binding.from_module(m) for m in MODULES]
    try:
        reports = [check_headers(bindings, include_dirs=args.include_dir, cc=args.cc)]
        if args.btf is not None:
            reports.append(check_btf(bindings, args.btf))
    except CheckError as e:
        print(f"header_diff: cannot check: {e}", file=sys.stderr)
        return 2

    status = 1 if any(r.failed(args.strict) for r in reports) else 0
    findings = [f for r in reports for f in r.findings]
    if args.json:
        out = [_document(reports, findings, status, args.strict)]
    else:
        out = [*_table(findings), _summary(reports, findings, status, args.strict)]
    try:
        print("\n".join(out), flush=True)
    except BrokenPipeError:
        # The reader (say, head) stopped early: the exit status still tells the answer.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status


if __name__ == "__main__":
    sys.exit(main())
