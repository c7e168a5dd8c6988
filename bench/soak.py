"""Soak: a long process churn under the kstructs listener, watching its memory.

    python bench/soak.py [--minutes M] [--rate R] [--interval S]

For ``--minutes`` (default 10), two C generators churn processes: one forks
children that exit at once (``--rate`` forks/s, default 2000), one forks
children that exec /bin/true (a tenth of that rate), so fork, exec and exit
events all flow. Two watchers subscribe to every event kind for the whole
run: the kstructs ``Listener`` iterator in a Python process that counts what
it gets, and ``kstructs watch --format json`` writing to /dev/null. Every
``--interval`` seconds the script samples each watcher's RSS
(/proc/PID/status VmRSS) and CPU time.

The RSS must stay flat: the verdict compares the last sample with the first
one after a warm-up (10 % of the run), allowing 1 MiB for allocator noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

import _common

_COUNTER = textwrap.dedent(
    """
    import collections, json, sys
    from kstructs.listener import Listener
    kinds = collections.Counter()
    lost = 0
    try:
        with Listener() as listener:
            print("ready", file=sys.stderr, flush=True)
            try:
                for ev in listener:
                    kinds[ev.event] += 1
                    if ev.event == "lost":
                        lost += ev.count
            except KeyboardInterrupt:
                pass
            s = listener.stats
            stats = {k: getattr(s, k) for k in ("received", "rejected", "lost", "enobufs")}
    except KeyboardInterrupt:
        stats = {}
    with open(sys.argv[1], "w") as f:
        json.dump({"kinds": kinds, "lost": lost, "stats": stats}, f)
    """
)

SLACK_KIB = 1024


class Counter(_common.Watcher):
    name = "kstructs Listener (all events)"

    def command(self) -> list[str]:
        return [sys.executable, "-c", _COUNTER, str(self.result)]


class WatchDevNull(_common.Watcher):
    name = "kstructs watch --format json > /dev/null"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "kstructs", "watch", "--format", "json"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10)")
    parser.add_argument("--rate", type=float, default=2000.0, help="forks/s of the exiting children (default 2000)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples (default 30)")
    args = parser.parse_args()
    _common.require_root()
    seconds = args.minutes * 60
    with _common.workdir() as work:
        exe = _common.build_storm(work)
        watchers: list[_common.Watcher] = [Counter(work)]
        if _common.KstructsWatch.available():
            watchers.append(WatchDevNull(work))
        else:
            print("soak: `kstructs watch` is not available; soaking the Listener only", file=sys.stderr)
        for w in watchers:
            w.start()
        started = time.monotonic()
        churn = _common.start_storm(exe, work, int(args.rate * seconds), rate=args.rate)
        churn += _common.start_storm(
            exe, work, int(args.rate / 10 * seconds), rate=args.rate / 10, exec_path="/bin/true"
        )
        samples: list[tuple[float, list[int], list[int]]] = []
        try:
            while True:
                now = time.monotonic() - started
                samples.append(
                    (now, [_common.rss_kib(w.pid) for w in watchers], [_common.cpu_ns(w.pid) for w in watchers])
                )
                print(f"  {now:6.0f} s  RSS {samples[-1][1]} KiB", file=sys.stderr)
                if now >= seconds or all(p.poll() is not None for p, _ in churn):
                    break
                time.sleep(min(args.interval, max(0.0, seconds - now) + 0.5))
        finally:
            storms = [_common.finish_storm([c]) for c in churn]
            for w in watchers:
                w.wait_drained()
            drops = [w.drops() for w in watchers]
            for w in watchers:
                w.stop()
        forks = sum(s.forks for s in storms)
        try:
            counted = json.loads(Path(watchers[0].result).read_text())
        except OSError:
            status = watchers[0].proc.returncode if watchers[0].proc else None
            print(
                f"soak: the Listener (status {status}) wrote no result; stderr:\n{watchers[0].stderr_path.read_text()}"
            )
            counted = {}
        watch = watchers[1] if len(watchers) > 1 else None
        watch_err = watch.stderr_path.read_text().strip().splitlines() if watch else []
        watch_status = watch.proc.returncode if watch and watch.proc else None

    warm = next((i for i, s in enumerate(samples) if s[0] >= seconds * 0.1), 0)
    rows: list[list[object]] = []
    for t, rss, cpu in samples:
        rows.append([f"{t:.0f}", *(f"{r:,}" for r in rss), *(f"{c / 1e9:.1f}" for c in cpu)])
    print("## Soak\n")
    print(_common.machine())
    print(
        f"\n{args.minutes:g} minutes of churn: {forks:,} forks "
        f"({args.rate:g}/s exiting at once, {args.rate / 10:g}/s exec'ing /bin/true).\n"
    )
    headers = ["t (s)", *(f"RSS KiB: {w.name}" for w in watchers), *(f"CPU s: {w.name}" for w in watchers)]
    print(_common.table(headers, rows))
    print()
    flat = True
    half = next((i for i, s in enumerate(samples) if s[0] >= samples[-1][0] / 2), warm)
    events = sum(counted.get("kinds", {}).values())
    for i, w in enumerate(watchers):
        grew = samples[-1][1][i] - samples[warm][1][i]
        second_half = samples[-1][1][i] - samples[half][1][i]
        peak = max(s[1][i] for s in samples[warm:])
        ok = grew <= SLACK_KIB
        flat &= ok
        cpu_us = (samples[-1][2][i] - samples[0][2][i]) / 1e3 / events if events else float("nan")
        print(
            f"- {w.name}: RSS {samples[warm][1][i]:,} KiB at {samples[warm][0]:.0f} s -> "
            f"{samples[-1][1][i]:,} KiB at the end ({grew:+,} KiB; {second_half:+,} KiB over the second half; "
            f"peak {peak:,} KiB): {'flat' if ok else 'GROWS'}; kernel drops {drops[i]}; "
            f"CPU {cpu_us:.1f} µs per event received"
        )
    kinds = dict(sorted(counted.get("kinds", {}).items()))
    print(f"- Listener received: {kinds}; Loss total {counted.get('lost')}; stats {counted.get('stats')}")
    if watch is not None:
        print(f"- watch exit status {watch_status}; its stderr ends: {watch_err[-1] if watch_err else '(nothing)'}")
    else:
        print("- `kstructs watch` was not available: not soaked")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
