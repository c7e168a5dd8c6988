"""A full receive queue drained by the Listener, timed in its own process.

    python bench/drain.py [--children N] [--reps R] [--baseline REV]

Each run is a fresh process: a ``Listener(FORK | EXIT)`` that does not read
while a fork storm of N children (the C generator of ``bench/storm.py``) fills
its queue, then ``read()`` until nothing is left. Its process time
(``time.process_time``: user and system, the receive system calls included)
over the drain, per event, is what the table gives. Runs alternate between
this tree and the package at git revision ``--baseline``, each first in turn;
the table gives the medians and the median of the paired ratios. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _common


def run_one(exe: str, children: int) -> None:
    """In a fresh process: CPU µs per event of the drain, as JSON on stdout."""
    import time

    from kstructs.cn_proc import EventKind
    from kstructs.listener import Listener

    with Listener(EventKind.FORK | EventKind.EXIT, linger=0) as listener:
        subprocess.run([exe, str(children), str(time.monotonic_ns()), "0", os.devnull], check=True)
        time.sleep(0.3)  # the children's last exits
        start, taken = time.process_time(), 0
        while items := listener.read():
            taken += len(items)
        spent = time.process_time() - start
    print(json.dumps({"us": spent * 1e6 / max(taken, 1), "events": taken}))


def _run(tree: Path, exe: Path, children: int) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = [sys.executable, "-s", __file__, "--child", str(exe), str(children)]
    out = subprocess.run(code, env=env, cwd=tree, capture_output=True, check=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["us"]), int(result["events"])


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        run_one(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=8000, help="children of the storm (default 8000)")
    parser.add_argument("--reps", type=int, default=10, help="alternating runs per tree (default 10)")
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare (default HEAD)")
    args = parser.parse_args()
    _common.require_root()
    with tempfile.TemporaryDirectory(prefix="kstructs-drain-") as work, _common.baseline_tree(args.baseline) as old:
        exe = _common.build_storm(Path(work))
        load_before = os.getloadavg()[0]
        this: list[float] = []
        base: list[float] = []
        counts: set[int] = set()
        for rep in range(args.reps):
            order = [(this, _common.ROOT), (base, old)]
            for times, tree in order if rep % 2 == 0 else order[::-1]:
                us, events = _run(tree, exe, args.children)
                times.append(us)
                counts.add(events)
        load_after = os.getloadavg()[0]
    ratios = [a / b for a, b in zip(this, base, strict=True)]
    print(
        f"A queue of {', '.join(f'{n:,}' for n in sorted(counts))} events drained, {args.reps} alternating runs; "
        f"load average {load_before:.2f} before, {load_after:.2f} after\n"
    )
    rev = args.baseline
    print(f"| this tree µs/event | {rev} µs/event | ratio (median of pairs) | runs (this / {rev}) |")
    print("|---|---|---|---|")
    runs = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(this, base, strict=True))
    print(
        f"| {statistics.median(this):.3f} | {statistics.median(base):.3f} | {statistics.median(ratios):.3f} | {runs} |"
    )


if __name__ == "__main__":
    main()
