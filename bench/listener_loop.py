"""The ``Listener`` iterator's own work per event, without the kernel.

    python bench/listener_loop.py [--events N] [--reps R] [--baseline REV] [--callgrind]

A stand-in for ``recvmmsg()`` fills the listener's real batch buffer with
literal fork and exit datagrams (consecutive ``cn_msg.seq`` on two CPUs, as a
storm sends them) and the real iterator (``for ev in listener``) takes them:
the receive strategy, ``EventStream``, the parser's fast reader, the user-space
filter, the statistics and the pacing, everything but the system calls. Two
shapes: a storm's listener (``FORK | EXIT`` under the kernel's filter, 64
datagrams per call, 15 calls per read) and one that takes everything (no
filter, per-CPU seq tracking, 64 per call, 8 calls per read); each is also
run with 8 datagrams per call, one call per read (a listener woken often).

Each run is a fresh process importing either this tree or the package at git
revision ``--baseline`` (extracted with ``git archive`` into a temporary
directory); runs alternate, this tree first, then the baseline first, R times.
The table gives the CPU time per event (``time.process_time``; in each run
the least of five stretches), medians and the median of the paired ratios, with the load average. With ``--callgrind``
(valgrind installed) it also counts instructions per event under callgrind:
the difference between a run of 3N events and one of N, over 2N. Instruction
counts do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import _common

ROOT = Path(__file__).resolve().parent.parent
#: (name, events: "kernel-filter" or "everything", datagrams per recvmmsg(), recvmmsg() calls per read)
SHAPES = (
    ("storm: fork+exit, kernel filter, 64 x 15 per read", "kernel-filter", 64, 15),
    ("woken often: fork+exit, kernel filter, 8 per read", "kernel-filter", 8, 1),
    ("everything, seq tracking, 64 x 8 per read", "everything", 64, 8),
)
_WARM = 2000  # events taken before the clock starts: caches, the comm table, specialisation


def run_one(mode: str, per_call: int, calls: int, total: int) -> None:
    """In a fresh process: CPU µs per event of the iterator, as JSON on stdout."""
    import errno
    import itertools
    import socket
    import struct
    import time

    from kstructs import listener
    from kstructs._recvmmsg import Batch

    # The datagrams, from literal layouts (nlmsghdr, cn_msg, proc_event's head),
    # not from the package's encoders: the baseline may lack them.
    nlmsghdr, cn_msg, head = struct.Struct("=IHHII"), struct.Struct("=IIIIHH"), struct.Struct("=IIQ")
    fork, exit_, size = 0x1, 0x80000000, 76

    def event(what: int, seq: int, cpu: int, data: bytes) -> bytes:
        payload = head.pack(what, cpu, 1000) + data.ljust(24, b"\0")
        cn = cn_msg.pack(1, 1, seq, 0, len(payload), 0) + payload
        return nlmsghdr.pack(16 + len(cn), 3, 0, 0, 0) + cn

    chunks, seqs = [], [0, 0]
    for _ in range(64):
        chunk = bytearray()
        for i in range(per_call):
            cpu = i & 1
            seqs[cpu] += 1
            if i & 2:
                chunk += event(fork, seqs[cpu], cpu, struct.pack("=4I", 100, 100, 200 + i, 200 + i))
            else:
                chunk += event(exit_, seqs[cpu], cpu, struct.pack("=6I", 200 + i, 200 + i, 0, 17, 100, 100))
        chunks.append(bytes(chunk))

    batch = Batch(64, size, size)
    results = bytes(batch._uniform[: per_call * batch._results.size])  # what recvmmsg() writes back
    state = {"chunk": 0, "call": 0}

    def receive(fd: int, flags: int) -> int:
        if state["call"] == calls:
            state["call"] = 0
            return -errno.EAGAIN  # the queue is empty: the read ends
        state["call"] += 1
        chunk = chunks[state["chunk"]]
        state["chunk"] = (state["chunk"] + 1) % len(chunks)
        batch.view[: len(chunk)] = chunk
        batch._msgs_view[: len(results)] = results
        return per_call

    batch.receive = receive  # type: ignore[method-assign]
    lst = listener.Listener((fork | exit_) if mode == "kernel-filter" else None, linger=0)
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stream = getattr(lst, "_stream", None)
    if stream is not None:  # the stream core: a gate holds the socket, a receiver the batch
        from kstructs._receive import Batched

        lst._gate.open(fake)
        lst._receiver = Batched(fake, batch)
        if mode == "kernel-filter":
            stream.kernel_filters()
    else:  # before it (ac30251): the listener held both
        lst._sock = fake  # type: ignore[attr-defined]
        lst._batch = batch  # type: ignore[attr-defined]
        if mode == "kernel-filter":
            lst._track = False  # type: ignore[attr-defined]
            lst.stats.kernel_filter = True
    events = iter(lst)
    keep: list[object] = []
    take = keep.append
    for ev in itertools.islice(events, _WARM):
        take(ev)
    # Five stretches of a fifth each; the least counts: the one other
    # processes on the machine disturbed least.
    part, spent = max(total // 5, 1), []
    for _ in range(5):
        keep.clear()
        start = time.process_time()
        for ev in itertools.islice(events, part):
            take(ev)
        spent.append(time.process_time() - start)
        lost = [ev for ev in keep if getattr(ev, "event", "") == "lost"]
        if len(keep) != part or lost:
            raise SystemExit(f"took {len(keep)} of {part} events, {len(lost)} losses")
    print(json.dumps({"us": min(spent) * 1e6 / part}))


Shape = tuple[str, str, int, int]


def _child(tree: Path, shape: Shape, total: int, prefix: list[str]) -> subprocess.CompletedProcess[str]:
    _, mode, per_call, calls = shape
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = [*prefix, sys.executable, "-s", __file__, "--child", mode, str(per_call), str(calls), str(total)]
    return subprocess.run(code, env=env, cwd=tree, capture_output=True, check=True, text=True)


def cpu_us(tree: Path, shape: Shape, total: int) -> float:
    out = _child(tree, shape, total, []).stdout
    return float(json.loads(out.strip().splitlines()[-1])["us"])


def instructions(tree: Path, shape: Shape, total: int) -> int:
    """Instructions per event under callgrind: runs of 3N and N events, the difference over 2N."""
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    counts = []
    for n in (total, 3 * total):
        found = re.search(r"Collected : (\d+)", _child(tree, shape, n, valgrind).stderr)
        if found is None:
            raise SystemExit("callgrind printed no instruction count")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) // (2 * total)


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        run_one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="events timed per run (default 300000)")
    parser.add_argument("--reps", type=int, default=5, help="alternating runs per tree and shape (default 5)")
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare (default HEAD)")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per event (valgrind)")
    args = parser.parse_args()
    if args.callgrind and shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind")
    with _common.baseline_tree(args.baseline) as old:
        load_before = os.getloadavg()[0]
        rows = []
        for shape in SHAPES:
            this: list[float] = []
            base: list[float] = []
            for rep in range(args.reps):
                order = [(this, ROOT), (base, old)]
                for times, tree in order if rep % 2 == 0 else order[::-1]:
                    times.append(cpu_us(tree, shape, args.events))
            ratios = [a / b for a, b in zip(this, base, strict=True)]
            row = [shape[0], f"{statistics.median(this):.3f}", f"{statistics.median(base):.3f}"]
            row.append(f"{statistics.median(ratios):.3f}")
            if args.callgrind:
                n = 10_000
                ours, theirs = instructions(ROOT, shape, n), instructions(old, shape, n)
                row += [f"{ours:,}", f"{theirs:,}", f"{ours / theirs:.3f}"]
            rows.append(row)
            print(f"  {' | '.join(row)}", file=sys.stderr)
        load_after = os.getloadavg()[0]
    print(
        f"Listener iterator, stand-in recvmmsg(), {args.events:,} events per run, {args.reps} alternating runs; "
        f"load average {load_before:.2f} before, {load_after:.2f} after\n"
    )
    head = ["shape", "this tree µs/event", f"{args.baseline} µs/event", "ratio (median of pairs)"]
    if args.callgrind:
        head += ["this tree instr/event", f"{args.baseline} instr/event", "instr ratio"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
