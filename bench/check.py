#!/usr/bin/env python3
"""Wall time of ``kstructs check`` on a module the size of linuxpy's video binding.

    python bench/check.py [--repeat N] [--structs N] [--linuxpy PYTHON]

A generated header and its correct ctypes mirror (by default 190 structs of
8 fields, scalars, arrays, nested records and bitfields, and 400 constants:
about 5,000 facts) are checked with ``python -m kstructs check`` in a fresh
process, the compiler included. The baseline, in the same run, is today's
``tools/header_diff.py`` on the project's own binding. Each row is the median
of N runs (default 5) of the wall time and of the CPU time of the process and
its compilers (on a loaded machine the CPU time is the steadier number);
facts per second are facts checked over wall time.
With --linuxpy, linuxpy's own video module is timed too (``--python`` that
interpreter).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "header_diff.py"
BUDGET = 2.0  # seconds, for about 5,000 facts

_C_TYPES = [("__u8", "c_uint8"), ("__s16", "c_int16"), ("__u32", "c_uint32"), ("__s64", "c_int64")]


def generate(where: Path, structs: int, constants: int) -> None:
    """bench.h and bench_mod.py: every struct correct, so the check finds nothing."""
    h = ["#include <linux/types.h>", ""]
    py = ["import ctypes", "", 'HEADER = "bench.h"', ""]
    for n in range(structs):
        h.append(f"struct bench_{n} {{")
        # The bitfields fill their unit: gcc packs a member after a partly used unit where ctypes
        # before 3.14 starts the next one (a true finding, but not what this measures).
        h.append("\tunsigned int flag : 3, rest : 29;")
        fields = ['("flag", ctypes.c_uint, 3)', '("rest", ctypes.c_uint, 29)']
        for k in range(6):
            ctype, pytype = _C_TYPES[(n + k) % len(_C_TYPES)]
            if k == 3:
                h.append(f"\t{ctype} arr{k}[{1 + n % 5}];")
                fields.append(f'("arr{k}", ctypes.{pytype} * {1 + n % 5})')
            else:
                h.append(f"\t{ctype} f{k};")
                fields.append(f'("f{k}", ctypes.{pytype})')
        h.append("\tstruct { __u16 lo; __u16 hi; } pair;")
        h.append("};")
        py.append(f"class bench_{n}__pair(ctypes.Structure):")
        py.append('    _fields_ = (("lo", ctypes.c_uint16), ("hi", ctypes.c_uint16))')
        py.append("")
        py.append(f"class bench_{n}(ctypes.Structure):")
        fields.append(f'("pair", bench_{n}__pair)')
        py.append(f"    _fields_ = ({', '.join(fields)})")
        py.append("")
    for n in range(constants):
        h.append(f"#define BENCH_CONSTANT_{n} {n * 7 + 1}")
        py.append(f"BENCH_CONSTANT_{n} = {n * 7 + 1}")
    (where / "bench.h").write_text("\n".join([*h, ""]))
    (where / "bench_mod.py").write_text("\n".join([*py, ""]))


CPU: list[float] = []  # CPU seconds (user + system, the compilers included) of the last run


def timed(argv: list[str], cwd: Path | None = None) -> tuple[float, dict[str, object] | None]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[:] = [after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime]
    if "--json" not in argv:
        return wall, None
    try:
        return wall, json.loads(done.stdout)
    except ValueError:
        print(f"bench/check.py: {' '.join(argv[:4])}...: {done.stderr.strip()[-200:]}", file=sys.stderr)
        return wall, None


def median_run(argv: list[str], repeat: int, cwd: Path | None = None) -> tuple[float, int, float]:
    """Median wall time, facts checked, median CPU time."""
    walls = []
    cpus = []
    checked = 0
    for _ in range(repeat):
        wall, doc = timed(argv, cwd)
        walls.append(wall)
        cpus.append(CPU[0])
        if doc is not None:
            checked = int(str(doc.get("checked", 0)))
    return statistics.median(walls), checked, statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--structs", type=int, default=190)
    parser.add_argument("--constants", type=int, default=400)
    parser.add_argument("--linuxpy", metavar="PYTHON", help="an interpreter with linuxpy installed")
    args = parser.parse_args()
    rows: list[tuple[str, float, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="kstructs-bench-") as tmp:
        where = Path(tmp)
        generate(where, args.structs, args.constants)
        py = sys.executable
        rows.append(("python -c pass", *median_run([py, "-c", "pass"], args.repeat)))
        rows.append(
            (
                "tools/header_diff.py (baseline: kstructs' own binding)",
                *median_run([py, str(TOOL), "--json"], args.repeat),
            )
        )
        argv = [py, "-m", "kstructs", "check", "kstructs.netlink", "kstructs.connector", "kstructs.cn_proc", "--json"]
        rows.append(
            ("kstructs check kstructs.netlink kstructs.connector kstructs.cn_proc", *median_run(argv, args.repeat))
        )
        argv = [py, "-m", "kstructs", "check", str(where / "bench_mod.py"), "--include-dir", str(where), "--json"]
        big = median_run(argv, args.repeat, where)
        rows.append((f"kstructs check bench_mod.py ({args.structs} structs, {args.constants} constants)", *big))
        if args.linuxpy:
            argv = [py, "-m", "kstructs", "check", "linuxpy.video.raw", "--header", "linux/videodev2.h"]
            argv += ["--header", "linux/v4l2-controls.h", "--python", args.linuxpy, "--json"]
            rows.append(("kstructs check linuxpy.video.raw --python", *median_run(argv, args.repeat)))
    base_wall, base_facts = rows[1][1], rows[1][2]
    base_rate = base_facts / base_wall if base_wall else 0.0
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'wall':>8}  {'CPU':>7}  {'facts':>6}  {'facts/s':>8}  {'x baseline facts/s':>18}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 7}  {'-' * 6}  {'-' * 8}  {'-' * 18}")
    for name, wall, facts, cpu in rows:
        rate = facts / wall if facts else 0.0
        ratio = f"{rate / base_rate:.2f}x" if facts and base_rate else "-"
        print(f"{name:<{width}}  {wall:>7.3f}s  {cpu:>6.2f}s  {facts:>6}  {rate:>8.0f}  {ratio:>18}")
    verdict = "within" if big[0] <= BUDGET else "OVER"
    print(f"\nbench_mod.py: {big[1]} facts in {big[0]:.3f} s wall ({big[2]:.2f} s CPU), {verdict} the {BUDGET:.0f} s")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
