"""Live fork storms: what each watcher receives of them and what it costs.

    python bench/storm.py [--children N] [--reps R] [--quick] [--baseline REV]

A tiny C generator (built on the fly with cc) forks N children that exit at
once, from 1 and from 2 parallel generator processes. Each watcher -- a C
recv loop that only records (the floor: what any watcher pays per event on
this machine), the kstructs ``Listener`` iterator (a loop that only keeps what
it yields, counted once the run is over), ``kstructs watch --format json``,
forkstat and pyroute2's ``ProcEventSocket`` -- runs alone during its
storm. pyroute2 0.9.7 raises ENOBUFS from every call once its queue has
overflowed, so its watcher reopens the socket then. For each we
report the fraction of the storm's events it received (fork events whose
parent is a generator, exit events of the children), its CPU time per storm
event (on-CPU time from /proc/PID/task/*/schedstat over storm + drain: what
rusage reports as utime + stime, at ns resolution), and the storm's rate.
CPU is also given as a ratio to forkstat's in the same run.

A second table splits the Listener's CPU: live (woken every few events) and
batched (stopped with SIGSTOP during the storm, then continued to drain a
full queue), which leaves only the per-event work.

A third table paces two generators at rising rates against the kstructs
Listener, with its default receive buffer and with a small one, to find the
rate at which it first loses events.

With ``--baseline REV`` only the Listener runs: this tree's and the one at
git revision REV (extracted to a temporary directory and loaded in its own
process), alternately (each first in turn), under both storms and batched
(as in the second table); the table gives each one's CPU per storm event,
the ratio of the medians and the median of the ratios rep by rep.

Needs root. Peers that are not installed are reported as such.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _common
from _common import Floor, Forkstat, KstructsLibrary, KstructsWatch, Pyroute2, Received, Storm, Watcher

SMALL_RCVBUF = 16384  # bytes asked for; the kernel doubles it for bookkeeping


# --- kstructs watch as a user runs it: names from the process table, the
# command line as the name, the lifetime on exits (always on) ---------------


class _Settled(KstructsWatch):
    """Starts the storm once watch is idle: its start (the /proc seed of the
    process table, after the subscription) is not a storm event's cost."""

    def start(self) -> None:
        super().start()
        self.wait_drained()


class WatchJson(_Settled):
    """JSON with ``--name cmdline``: every line carries ``comm`` and ``cmdline``, exits ``duration_ns``."""

    name = "kstructs watch --format json --events fork,exit --name cmdline"

    def command(self) -> list[str]:
        return [*super().command(), "--name", "cmdline"]


class WatchText(_Settled):
    """Text with ``--name cmdline``: every line ends with the command line, exits with the lifetime."""

    name = "kstructs watch --events fork,exit --name cmdline"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "kstructs", "watch", "--events", "fork,exit", "--name", "cmdline"]

    def stdout_path(self) -> Path:
        return self.workdir / "watch.txt"

    def received(self, storm: Storm) -> Received:
        # "HH:MM:SS fork PID parent PPID NAME", "HH:MM:SS exit PID status N parent P after Ts NAME",
        # "HH:MM:SS lost - N events (reason)".
        forks = lost = 0
        exits: list[int] = []
        with self.stdout_path().open(errors="replace") as f:
            for line in f:
                cols = line.split()
                if len(cols) < 4:
                    continue
                if cols[1] == "fork" and cols[3] == "parent" and int(cols[4]) in storm.generators:
                    forks += 1
                elif cols[1] == "exit" and cols[2].isdigit():
                    exits.append(int(cols[2]))
                elif cols[1] == "lost":
                    lost += int(cols[3])
        return Received(forks, storm.matched(exits), lost)


#: forkstat runs as ``forkstat -e fork,exit``: its default name is the
#: command line, read from /proc/PID/cmdline for each new pid (-c would use
#: comm, -s and -d shorten it), and it prints the lifetime on exits.
WATCHERS: list[type[Watcher]] = [WatchText, WatchJson]


@dataclass
class Run:
    storm: Storm
    forks: int
    exits: int
    cpu_ns: int
    drops: int
    lost: int | None
    stats: dict[str, int]
    load: float = 0.0  # the 1-minute load average when the run ended

    @property
    def fraction(self) -> float:
        return (self.forks + self.exits) / self.storm.events

    @property
    def cpu_per_event_us(self) -> float:
        return self.cpu_ns / 1000 / self.storm.events


def measure(watcher: Watcher, exe: Path, work: Path, children: int, generators: int, *, rate: float = 0.0) -> Run:
    watcher.start()
    try:
        before = _common.cpu_ns(watcher.pid)
        storm = _common.run_storm(exe, work, children, generators, rate=rate)
        watcher.wait_drained()
        used = _common.cpu_ns(watcher.pid) - before
        drops = watcher.drops()
    finally:
        status = watcher.stop()
    return finish(watcher, storm, used, drops, status)


class WatcherFailed(Exception):
    pass


def finish(watcher: Watcher, storm: Storm, used: int, drops: int, status: int) -> Run:
    try:
        got = watcher.received(storm)
    except OSError as e:
        tail = watcher.stderr_path.read_text(errors="replace")[-2000:]
        print(f"bench: {watcher.name} (exit status {status}) left no result: {e}\n{tail}", file=sys.stderr)
        raise WatcherFailed(watcher.name) from e
    return Run(storm, got.forks, got.exits, used, drops, got.lost_reported, got.stats, os.getloadavg()[0])


def measure_batched(watcher: Watcher, exe: Path, work: Path, children: int) -> Run:
    """The watcher is stopped during the storm; its CPU is counted from SIGCONT
    until it has drained the queue."""
    watcher.start()
    try:
        os.kill(watcher.pid, signal.SIGSTOP)
        storm = _common.run_storm(exe, work, children, 1)
        time.sleep(0.5)  # the children's last exits
        before = _common.cpu_ns(watcher.pid)
        os.kill(watcher.pid, signal.SIGCONT)
        watcher.wait_drained()
        used = _common.cpu_ns(watcher.pid) - before
        drops = watcher.drops()
    finally:
        os.kill(watcher.pid, signal.SIGCONT)
        status = watcher.stop()
    return finish(watcher, storm, used, drops, status)


def repeat(run: Callable[[], Run], times: int) -> list[Run]:
    """``times`` runs; a run whose watcher failed is left out (and reported on stderr)."""
    runs: list[Run] = []
    for _ in range(times):
        with contextlib.suppress(WatcherFailed):
            runs.append(run())
    return runs


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def received(fractions: list[float]) -> str:
    """Median, and the worst run when runs differ."""
    med, low = statistics.median(fractions), min(fractions)
    return pct(med) if low == med else f"{pct(med)} (min {pct(low)})"


def notes(runs: list[Run]) -> str:
    parts: list[str] = []
    missed = statistics.median(1 - r.fraction for r in runs)
    if missed > 0:
        parts.append(f"missed {pct(missed)} of the storm's events (median); CPU is per storm event all the same")
    if runs[0].lost is not None:
        parts.append(f"Loss reported: {max(r.lost or 0 for r in runs):,}")
    reopened = max(r.stats.get("reopened", 0) for r in runs)
    if reopened:
        parts.append(f"socket dead after ENOBUFS, reopened {reopened}x")
    return "; ".join(parts)


def peer_table(
    exe: Path, work: Path, children: int, reps: int, *, watch_only: bool = False
) -> tuple[str, dict[tuple[int, str], list[Run]]]:
    """Each rep runs every watcher once, in turn, so that all of them see the
    same background load; each row is the median of its reps."""
    kinds: list[type[Watcher]] = (
        # The Listener alone too: what is left of watch's cost that its formatting does not add.
        [KstructsLibrary, *WATCHERS, Forkstat]
        if watch_only
        else [Floor, KstructsLibrary, *WATCHERS, Forkstat, Pyroute2]
    )
    rows: list[list[object]] = []
    everything: dict[tuple[int, str], list[Run]] = {}
    for generators in (1, 2):
        label = f"{generators} x {children:,}"
        alone = [_common.run_storm(exe, work, children, generators).rate for _ in range(reps)]
        rows.append([label, "(no watcher)", "", "", "", "", f"{statistics.median(alone):,.0f}", "", "", ""])
        available = [kind for kind in kinds if kind.available()]
        watchers = {kind.name: kind(work) for kind in available}
        runs: dict[str, list[Run]] = {name: [] for name in watchers}
        for _ in range(reps):
            for name, watcher in watchers.items():
                with contextlib.suppress(WatcherFailed):
                    runs[name].append(measure(watcher, exe, work, children, generators))
                    print(f"  {label} {name}: {runs[name][-1].cpu_per_event_us:.2f} µs", file=sys.stderr)
        base = runs.get(Forkstat.name)
        forkstat_cpu = statistics.median(r.cpu_per_event_us for r in base) if base else None
        for kind in kinds:
            if kind.name not in runs:
                rows.append([label, kind.name, "not installed", "", "", "", "", "", "", ""])
                continue
            done = runs[kind.name]
            if not done:
                rows.append([label, kind.name, "failed: see stderr", "", "", "", "", "", "", ""])
                continue
            everything[(generators, kind.name)] = done
            cpu = statistics.median(r.cpu_per_event_us for r in done)
            rows.append(
                [
                    label,
                    kind.name,
                    received([r.forks / r.storm.forks for r in done]),
                    received([r.exits / r.storm.forks for r in done]),
                    f"{cpu:.2f}",
                    f"{cpu / forkstat_cpu:.2f}x" if forkstat_cpu else "n/a",
                    f"{statistics.median(r.storm.rate for r in done):,.0f}",
                    max(r.drops for r in done),
                    f"{statistics.median(r.load for r in done):.1f}",
                    notes(done),
                ]
            )
    headers = [
        "storm (generators x children)",
        "watcher",
        "fork events received",
        "exit events received",
        "CPU µs / storm event",
        "CPU vs forkstat",
        "storm forks/s",
        "kernel drops",
        "load (1 min)",
        "notes",
    ]
    return _common.table(headers, rows), everything


def batched_table(exe: Path, work: Path, children: int, reps: int, live: dict[tuple[int, str], list[Run]]) -> str:
    rows: list[list[object]] = []
    for kind in (Floor, KstructsLibrary, KstructsWatch):
        if not kind.available():
            rows.append([kind.name, "not installed", "", ""])
            continue
        runs = repeat(functools.partial(measure_batched, kind(work), exe, work, children), reps)
        if not runs:
            rows.append([kind.name, "failed: see stderr", "", ""])
            continue
        live_runs = live.get((1, kind.name), [])
        live_cpu = f"{statistics.median(r.cpu_per_event_us for r in live_runs):.2f}" if live_runs else "-"
        rows.append(
            [
                kind.name,
                live_cpu,
                f"{statistics.median(r.cpu_per_event_us for r in runs):.2f}",
                received([r.fraction for r in runs]),
            ]
        )
        print(f"  batched {kind.name}: {rows[-1][1:]}", file=sys.stderr)
    headers = ["watcher", "CPU µs / event, live (1 generator)", "CPU µs / event, batched", "received, batched"]
    return _common.table(headers, rows)


def loss_table(exe: Path, work: Path, rates: list[int], seconds: float) -> tuple[str, dict[str, str]]:
    rows: list[list[object]] = []
    first_loss: dict[str, str] = {}
    for label, rcvbuf in (("default (8 MiB asked)", 0), (f"rcvbuf={SMALL_RCVBUF}", SMALL_RCVBUF)):
        clean_up_to = "-"
        for rate in rates:
            per_gen = rate / 2
            children = max(100, int(per_gen * seconds)) if rate else int(6000 * seconds)
            try:
                run = measure(KstructsLibrary(work, rcvbuf), exe, work, children, 2, rate=per_gen)
            except WatcherFailed:
                rows.append([label, f"{rate:,}" if rate else "unpaced", "failed: see stderr", "", "", "", "", ""])
                continue
            missed = run.storm.events - run.forks - run.exits
            rows.append(
                [
                    label,
                    f"{rate:,}" if rate else "unpaced",
                    f"{run.storm.rate:,.0f}",
                    pct(run.fraction),
                    missed,
                    run.lost if run.lost is not None else "-",
                    run.drops,
                    f"{run.cpu_per_event_us:.2f}",
                ]
            )
            print(f"  {label}: {rows[-1][1:]}", file=sys.stderr)
            if missed or run.drops or run.lost:
                first_loss.setdefault(label, f"{run.storm.rate:,.0f} forks/s")
            elif label not in first_loss:
                clean_up_to = f"{run.storm.rate:,.0f}"
        first_loss.setdefault(label, f"none up to {clean_up_to} forks/s (the fastest storm here)")
    headers = [
        "Listener buffer",
        "target forks/s",
        "storm forks/s",
        "received",
        "missed",
        "Loss reported",
        "kernel drops",
        "CPU µs / event",
    ]
    return _common.table(headers, rows), first_loss


class BaselineLibrary(KstructsLibrary):
    """The kstructs Listener watcher, with the package imported from ``tree``."""

    def __init__(self, workdir: Path, tree: Path, rev: str) -> None:
        self.tree, self.rev = tree, rev
        super().__init__(workdir)
        self.name = f"kstructs Listener at {rev}"
        self.result = workdir / f"{self.slug()}.result"
        self.stderr_path = workdir / f"{self.slug()}.stderr"

    def command(self) -> list[str]:
        script = f"import sys; sys.path.insert(0, {str(self.tree)!r})\n" + _common._KSTRUCTS_LIB
        return [sys.executable, "-c", script, str(self.result), str(self.rcvbuf)]


def extract(rev: str, into: Path) -> Path:
    """The ``kstructs`` package at git revision ``rev``, under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(_common.ROOT), "archive", "--format=tar", rev, "kstructs"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def baseline_table(exe: Path, work: Path, children: int, reps: int, rev: str) -> str:
    tree = extract(rev, work / "baseline")
    rows: list[list[object]] = []
    batched = min(children, 8000)  # a stopped Listener's queue holds about 20 000 events
    for generators in (1, 2, 0):
        label = f"{generators} x {children:,}" if generators else f"1 x {batched:,}, batched"
        now, then = KstructsLibrary(work), BaselineLibrary(work, tree, rev)
        runs: dict[str, list[Run]] = {now.name: [], then.name: []}
        pairs: list[float] = []  # this tree's CPU over the baseline's, rep by rep
        for rep in range(reps):  # alternately, each first in turn, so that both see the same load
            got: dict[str, Run] = {}
            for watcher in (now, then) if rep % 2 == 0 else (then, now):
                with contextlib.suppress(WatcherFailed):
                    if generators:
                        got[watcher.name] = measure(watcher, exe, work, children, generators)
                    else:
                        got[watcher.name] = measure_batched(watcher, exe, work, batched)
                    runs[watcher.name].append(got[watcher.name])
            if len(got) == 2:
                pairs.append(got[now.name].cpu_per_event_us / got[then.name].cpu_per_event_us)
        cpu = {name: statistics.median(r.cpu_per_event_us for r in rs) for name, rs in runs.items() if rs}
        for name, rs in runs.items():
            if not rs:
                rows.append([label, name, "failed: see stderr", "", "", "", ""])
                continue
            each = ", ".join(f"{r.cpu_per_event_us:.2f}" for r in rs)
            ratio = f"{cpu[name] / cpu[then.name]:.3f}" if then.name in cpu else "n/a"
            paired = f"{statistics.median(pairs):.3f}" if name == now.name and pairs else ""
            rows.append([label, name, f"{cpu[name]:.2f}", each, ratio, paired, received([r.fraction for r in rs])])
            print(f"  {label} {name}: {rows[-1][2:]}", file=sys.stderr)
    headers = ["storm", "watcher", "CPU µs / storm event (median)", "runs", f"vs {rev}", "median of pairs", "received"]
    return _common.table(headers, rows)


def _loads(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.1f}" for x in load)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=None, help="children per generator (default 20000, quick 3000)")
    parser.add_argument("--reps", type=int, default=None, help="runs per cell, median reported (default 3, quick 1)")
    parser.add_argument("--quick", action="store_true", help="small storms, one run each: about a minute")
    parser.add_argument("--baseline", metavar="REV", help="only the Listener, against its code at git revision REV")

    parser.add_argument(
        "--watch-only",
        action="store_true",
        help="only kstructs watch (text and JSON) and the Listener alone against forkstat, in the first table",
    )
    args = parser.parse_args()
    _common.require_root()
    children = args.children or (3000 if args.quick else 20000)
    reps = args.reps or (1 if args.quick else 3)
    if args.baseline:
        with _common.workdir() as work:
            exe = _common.build_storm(work)
            print(f"the Listener against {args.baseline} ...", file=sys.stderr)
            compared = baseline_table(exe, work, children, reps, args.baseline)
        print("## The Listener's iterator against a baseline\n")
        print(_common.machine())
        print(f"\nMedian of {reps} run(s), alternating; each generator forks {children:,} children.\n")
        print(compared)
        return 0
    rates = [2000, 8000, 0] if args.quick else [1000, 2000, 4000, 6000, 8000, 10000, 0]
    seconds = 1.0 if args.quick else 2.0
    # The batched run must fit the default queue (about 20 000 events).
    batched_children = min(children, 8000)
    started = time.monotonic()
    with _common.workdir() as work:
        exe = _common.build_storm(work)
        print("storms against each watcher ...", file=sys.stderr)
        load_before = os.getloadavg()
        peers, live = peer_table(exe, work, children, reps, watch_only=args.watch_only)
        load_after = os.getloadavg()
        loads = f"Load average (1, 5, 15 min): {_loads(load_before)} before, {_loads(load_after)} after."
        if args.watch_only:
            print("## Fork storms: kstructs watch against forkstat\n")
            print(_common.machine())
            print(f"\n{loads}\n")
            print(
                f"Median of {reps} run(s) per row, the watchers in turn in each rep; "
                f"each generator forks {children:,} children.\n"
            )
            print(peers)
            return 0
        print("live and batched CPU ...", file=sys.stderr)
        batched = batched_table(exe, work, batched_children, reps, live)
        print("paced storms against the kstructs Listener ...", file=sys.stderr)
        losses, first = loss_table(exe, work, rates, seconds)
    print("## Fork storms\n")
    print(_common.machine())
    print(f"\n{loads}")
    print(
        f"\nMedian of {reps} run(s) per row (worst run in brackets when they differ); "
        f"each generator forks {children:,} children.\n"
    )
    print(peers)
    print("\n## Listener CPU: live against batched\n")
    print(
        f"One generator, {batched_children:,} children. Live: the Listener reads during the storm. "
        "Batched: it is stopped during the storm and drains the full queue afterwards.\n"
    )
    print(batched)
    print("\n## Where the kstructs Listener first loses events\n")
    print(
        f"Two generators paced to the target total rate for about {seconds:g} s (unpaced: as fast as they go), "
        "Listener kernel-filtered to fork and exit.\n"
    )
    print(losses)
    print()
    for label, rate in first.items():
        print(f"- first loss with the {label} buffer: {rate}")
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
