#!/usr/bin/env python3
"""Wall time of the compile-only check of the kstructs binding on every Debian cross target.

    python bench/check_targets.py [--repeat N] [--jobs J]

For the host and each of the 7 targets Debian ships cross compilers for
(x86_64, i686, aarch64, armhf, s390x, ppc64le, riscv64), the median of N runs
(default 3) of ``kstructs check kstructs.netlink kstructs.connector
kstructs.cn_proc --target TRIPLE`` as a user runs it (a fresh interpreter
each time), with its exit status and facts compared; then all 7 targets one
after another and J at a time (default: the number of cores), as wall time.
The baseline, measured in the same run, is the host check
(``tools/header_diff.py``, no target). CPU seconds (user and system, of the
checks and their compilers) are printed beside the wall time: on a shared,
loaded machine they are the figure that does not depend on the load. Nothing runs on the target: the
probe's values are read from the object files the cross compilers write.

Packages (Debian): gcc-TRIPLE and linux-libc-dev-ARCH-cross,
libc6-dev-ARCH-cross for each target; a missing one is a row saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "header_diff.py"
MODULES = ("kstructs.netlink", "kstructs.connector", "kstructs.cn_proc")
# triple -> Debian architecture of its linux-libc-dev-ARCH-cross
TARGETS = {
    "x86_64-linux-gnu": "amd64",
    "i686-linux-gnu": "i386",
    "aarch64-linux-gnu": "arm64",
    "arm-linux-gnueabihf": "armhf",
    "s390x-linux-gnu": "s390x",
    "powerpc64le-linux-gnu": "ppc64el",
    "riscv64-linux-gnu": "riscv64",
}
BUDGET = 10.0  # seconds of wall time for all 7 targets


def cpu() -> float:
    """CPU seconds (user and system) of the finished children: wall time without the machine's load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check(triple: str | None) -> tuple[float, int, dict[str, object]]:
    """One run: wall seconds, exit status, and the JSON document."""
    argv = [sys.executable, "-m", "kstructs", "check", *MODULES, "--json"]
    if triple is not None:
        argv += ["--target", triple]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False, cwd=ROOT, timeout=300)
    seconds = time.perf_counter() - start
    try:
        doc: dict[str, object] = json.loads(done.stdout)
    except ValueError:
        doc = {"error": done.stderr.decode(errors="replace").strip()}
    return seconds, done.returncode, doc


def host_baseline() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(TOOL)], capture_output=True, check=False, timeout=300)
    return time.perf_counter() - start


def missing(triple: str) -> str | None:
    if triple != "x86_64-linux-gnu" or os.uname().machine != "x86_64":
        if shutil.which(f"{triple}-gcc") is None:
            return f"no {triple}-gcc (gcc-{triple})"
        if not Path(f"/usr/{triple}/include/linux/types.h").exists():
            return f"no headers (linux-libc-dev-{TARGETS[triple]}-cross)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    baseline = statistics.median(host_baseline() for _ in range(args.repeat))
    rows: list[list[object]] = []

    def row(name: str, triple: str | None) -> None:
        before = cpu()
        runs = [check(triple) for _ in range(args.repeat)]
        cpu_s = (cpu() - before) / args.repeat
        seconds = statistics.median(r[0] for r in runs)
        _, status, doc = runs[-1]
        counts = doc.get("counts", {})
        mism = counts.get("mismatch", "-") if isinstance(counts, dict) else "-"
        note = str(doc.get("error") or "")[:70]
        facts = doc.get("checked", "-")
        rows.append([name, f"{seconds:.2f}", f"{cpu_s:.2f}", f"{seconds / baseline:.1f}x", status, facts, mism, note])

    row("host (no --target)", None)
    present = [t for t in TARGETS if missing(t) is None]
    for triple in TARGETS:
        why = missing(triple)
        if why is not None:
            rows.append([triple, "-", "-", "-", "-", "-", "-", why])
            continue
        row(triple, triple)

    start, before = time.perf_counter(), cpu()
    for triple in present:
        check(triple)
    sequential, sequential_cpu = time.perf_counter() - start, cpu() - before
    start, before = time.perf_counter(), cpu()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(check, present))
    parallel, parallel_cpu = time.perf_counter() - start, cpu() - before

    headers = ["target", "wall s (median)", "CPU s", "x host header_diff", "exit", "facts", "mismatches", "note"]
    print(_common.table(headers, rows))
    print()
    print(
        _common.table(
            ["all targets", "targets", "wall s", "CPU s", "verdict (wall)"],
            [
                [
                    "one after another",
                    len(present),
                    f"{sequential:.2f}",
                    f"{sequential_cpu:.2f}",
                    _verdict(sequential, len(present)),
                ],
                [
                    f"{args.jobs} at a time",
                    len(present),
                    f"{parallel:.2f}",
                    f"{parallel_cpu:.2f}",
                    _verdict(parallel, len(present)),
                ],
            ],
        )
    )
    print(f"\nbaseline: tools/header_diff.py on the host headers, {baseline:.2f} s (median of {args.repeat})")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(_common.machine())
    return 0


def _verdict(seconds: float, targets: int) -> str:
    if targets < len(TARGETS):
        return f"only {targets} of {len(TARGETS)} targets installed"
    return f"{'within' if seconds <= BUDGET else 'OVER'} the {BUDGET:.0f} s budget"


if __name__ == "__main__":
    sys.exit(main())
