#!/usr/bin/env python3
"""Wall time of tools/header_diff.py and its parts, against the compiler's own floor.

    python bench/header_diff.py [--repeat N]

Each row is the median of N runs (default 7). The baselines, measured in the
same run, are a bare compile of an empty C file, a compile-and-link of an
empty program, and an empty Python start; ratios are against the bare
compile: the probe is compile-only (it is never linked or run), and a check
needs at least a preprocessing and one compile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kstructs import cn_proc, connector, netlink
from kstructs.btf import Btf
from kstructs.conformance import DEFAULT_BTF, Binding, check_btf, check_headers

TOOL = Path(__file__).resolve().parent.parent / "tools" / "header_diff.py"
BUDGET = 2.0  # seconds: the default check's target on a 2-core machine


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(*argv: str) -> Callable[[], object]:
    def go() -> object:
        return subprocess.run(argv, capture_output=True, check=False)

    return go


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("bench/header_diff.py: no C compiler", file=sys.stderr)
        return 2
    bindings = [Binding.from_module(m) for m in (netlink, connector, cn_proc)]
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp, "empty.c")
        empty.write_text("int main(void) { return 0; }\n")
        compile_only = median_time(run(cc, "-c", "-o", f"{tmp}/e.o", str(empty)), args.repeat)
        rows.append(("cc -c empty.c (baseline)", compile_only))
        rows.append(
            ("cc empty.c -o e (compile + link)", median_time(run(cc, "-o", f"{tmp}/e", str(empty)), args.repeat))
        )
        rows.append(("python -c pass (baseline)", median_time(run(sys.executable, "-c", "pass"), args.repeat)))
    rows.append(("check_headers() in process", median_time(lambda: check_headers(bindings), args.repeat)))
    default = median_time(run(sys.executable, str(TOOL)), args.repeat)
    rows.append(("tools/header_diff.py (the default check)", default))
    if os.access(DEFAULT_BTF, os.R_OK):
        rows.append((f"Btf.load({DEFAULT_BTF})", median_time(lambda: Btf.load(DEFAULT_BTF), args.repeat)))
        rows.append(("check_btf() in process, load included", median_time(lambda: check_btf(bindings), args.repeat)))
        rows.append(("tools/header_diff.py --btf", median_time(run(sys.executable, str(TOOL), "--btf"), args.repeat)))
    else:
        print(f"(no readable {DEFAULT_BTF}: BTF rows left out)")

    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  {'median':>9}  {'x cc -c':>14}")
    print(f"{'-' * width}  {'-' * 9}  {'-' * 14}")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds * 1000:>7.1f}ms  {seconds / compile_only:>13.1f}x")
    verdict = "within" if default <= BUDGET else "OVER"
    print(f"\ndefault check: {default:.3f} s wall, {verdict} the {BUDGET:.0f} s budget ({args.repeat} runs, median)")
    print(f"machine: {os.cpu_count()} cores, {cc}, Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
