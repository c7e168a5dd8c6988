"""``kstructs watch``'s own work per event, without the kernel.

    python bench/watch_loop.py [--children N] [--batch B] [--reps R] [--inner K] [--baseline REV]

A fake listener hands the real ``watch`` (``kstructs._watch.watch``, stdout
on /dev/null) literal fork and exit events of one parent and N children:
datagrams built with ``encode_event`` and read back with
``read_kernel_event``, as the listener reads them, B to a ``read()``. The
options are a storm's: ``--events fork,exit --name cmdline``, text and
``--format json``. Only the CPU time of the read-format-write loop counts
(``time.process_time`` around ``_watch._loop``; the process table's seed
from /proc is outside it), per event: the least of ``--inner`` loops in one
process, the one other processes on the machine disturbed least.

Each run is a fresh process importing either this tree or the package at git
revision ``--baseline`` (extracted with ``git archive`` into a temporary
directory); runs alternate, this tree first, then the baseline first, R
times. The table gives the medians and the median of the paired ratios, with
the load average: CPU time cancels most of the background load, the pairs
the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import _common

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("text", "json")
# A child exits this many forks after its own: a storm's interleaving.
EXIT_LAG = 4


def _events(kstructs_events: Any, parent: int, children: int) -> list[Any]:
    """fork, fork, ..., exit, fork, exit: the events of ``children`` children
    of ``parent``, each read from the datagram the kernel would send."""
    ev = kstructs_events
    out = []
    at = time.monotonic_ns()
    first = 4_000_000 - children  # pids no process has
    for i in range(children + EXIT_LAG):
        at += 5_000
        if i < children:
            fork = ev.ForkEvent(2 * i, i % 2, at, parent, parent, first + i, first + i)
            out.append(fork)
        if i >= EXIT_LAG:
            pid = first + i - EXIT_LAG
            out.append(ev.ExitEvent(2 * i + 1, i % 2, at + 1_000, pid, pid, 0, 17, parent, parent))
    read = ev.read_kernel_event
    return [read(ev.encode_event(e), 0) for e in out]


class _FakeListener:
    """What ``watch`` uses of a ``Listener``: the batches, then a stop signal."""

    batches: ClassVar[list[list[Any]]] = []

    def __init__(self, events: object = None) -> None:
        from kstructs.stream import ListenerStats

        self.stats = ListenerStats()
        self._next = 0
        self._r, self._w = os.pipe()

    def open(self) -> None:
        pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def fileno(self) -> int:
        return self._r

    def pause(self) -> float:
        return 0.0

    def read(self) -> list[Any]:
        if self._next < len(self.batches):
            self._next += 1
            return list(self.batches[self._next - 1])
        os.kill(os.getpid(), signal.SIGTERM)  # the end: the loop's stop, as a user's
        return []


def run_one(fmt: str, children: int, batch: int, inner: int) -> None:
    """In a fresh process: CPU µs per event of watch's loop, as JSON on stdout."""
    import kstructs.events
    from kstructs import _watch

    events = _events(kstructs.events, os.getpid(), children)
    _FakeListener.batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    spent = []
    loop = _watch._loop

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return loop(*args, **kwargs)
        finally:
            spent.append(time.process_time() - start)

    _watch.Listener = _FakeListener  # type: ignore[attr-defined,assignment]
    _watch._loop = timed
    result = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    options = _watch.Options(format=fmt, events=frozenset({"fork", "exit"}), name="cmdline")
    statuses = [_watch.watch(options) for _ in range(inner)]
    _watch.ignore_stop_signals()
    # The least: the run that other processes on the machine disturbed least.
    us = min(spent) * 1e6 / len(events)
    os.write(result, json.dumps({"us": us, "status": max(statuses)}).encode() + b"\n")


def _run(tree: Path, fmt: str, args: argparse.Namespace) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = [sys.executable, "-s", __file__, "--child", fmt, str(args.children), str(args.batch), str(args.inner)]
    out = subprocess.run(code, env=env, cwd=tree, capture_output=True, check=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["status"] != 0:
        raise SystemExit(f"watch exited with {result['status']} in {tree}")
    return float(result["us"])


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        run_one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=20000, help="forks, and as many exits (default 20000)")
    parser.add_argument("--batch", type=int, default=256, help="events per read() (default 256)")
    parser.add_argument("--reps", type=int, default=5, help="alternating runs per tree and format (default 5)")
    parser.add_argument("--inner", type=int, default=3, help="loops per run, the least counts (default 3)")
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare (default HEAD)")
    args = parser.parse_args()
    with _common.baseline_tree(args.baseline) as old:
        load_before = os.getloadavg()[0]
        times: dict[tuple[str, str], list[float]] = {(f, t): [] for f in FORMATS for t in ("this", "base")}
        for rep in range(args.reps):
            for fmt in FORMATS:
                order = [("this", ROOT), ("base", old)]
                for name, tree in order if rep % 2 == 0 else order[::-1]:
                    times[fmt, name].append(_run(tree, fmt, args))
        load_after = os.getloadavg()[0]
    print(
        f"watch --events fork,exit --name cmdline, {2 * args.children} events, {args.batch} per read(), "
        f"{args.reps} alternating runs of {args.inner} loops; "
        f"load average {load_before:.2f} before, {load_after:.2f} after\n"
    )
    print(f"| format | this tree µs/event | {args.baseline} µs/event | ratio (median of pairs) | best pair |")
    print("|---|---|---|---|---|")
    for fmt in FORMATS:
        this, base = times[fmt, "this"], times[fmt, "base"]
        ratios = [a / b for a, b in zip(this, base, strict=True)]
        print(
            f"| {fmt} | {statistics.median(this):.2f} | {statistics.median(base):.2f} | "
            f"{statistics.median(ratios):.2f}x | {min(ratios):.2f}x |"
        )


if __name__ == "__main__":
    main()
