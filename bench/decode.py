"""In-memory parse throughput: kstructs against its code at a git revision,
struct.unpack and pyroute2.

    python bench/decode.py [--count N] [--repeat R] [--reps K] [--baseline REV]

The same datagrams -- built from the kstructs ctypes layouts, a quarter each
of fork, exec, comm and exit, as the kernel sends them: one event per
datagram -- go through these decoders, one datagram per call, as a reader
that does one recv per datagram would call them:

- ``kstructs.events.parse_events(data)``: typed event values (named tuples);
- the same function of the package at git revision ``--baseline`` (default
  ``ac30251``, the parser before its fast reader became
  ``read_kernel_event``), extracted with ``git archive`` into a temporary
  directory (removed at the end) and imported beside this tree's;
- a plain ``struct.unpack`` decoder (below): precompiled ``struct.Struct``s,
  checks the netlink type and connector id, returns one dict per event with
  the same keys and values as kstructs' ``to_dict()``;
- pyroute2's ``ProcEventMarshal().parse(data)``, when installed.

Each decoder runs ``--repeat`` times over all datagrams, interleaved with the
others; the best run (in CPU time of this process) counts. Speeds are
against the struct.unpack decoder and against the baseline revision.

A second table compares this tree with the baseline revision alone, in
``--reps`` alternating runs (this tree first, then the baseline first, ...),
CPU time, median and best: ``parse_events`` one call per datagram, and the
listener's batch loop, which reads each datagram where ``recvmmsg()`` left it
in a buffer of 64 slots: ``read_kernel_event(view, offset)``, and
``parse_events`` of the slice for anything it does not take. At a revision
without ``read_kernel_event`` the baseline is that revision's own batch loop
(``Listener._take_batch`` over the parser's ``_KERNEL`` table, which handed
comm events to ``parse_events``), when it has one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import io
import mmap
import os
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import _common

from kstructs import cn_proc, connector, events, netlink

# ---------------------------------------------------------------- the struct.unpack baseline

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_PROC_EVENT = struct.Struct("=IIQ")
_HEAD = struct.Struct("=" + _NLMSGHDR.format[1:] + _CN_MSG.format[1:] + _PROC_EVENT.format[1:])
# Offsets from the layouts, not typed in: nlmsghdr, then cn_msg, then proc_event.
_EVENT_AT = ctypes.sizeof(netlink.nlmsghdr) + ctypes.sizeof(connector.cn_msg)
_DATA_AT = _EVENT_AT + cn_proc.proc_event.event_data.offset
assert _HEAD.size == _DATA_AT

_BODIES: dict[int, tuple[str, struct.Struct, tuple[str, ...]]] = {
    cn_proc.PROC_EVENT_FORK: ("fork", struct.Struct("=iiii"), ("parent_pid", "parent_tgid", "child_pid", "child_tgid")),
    cn_proc.PROC_EVENT_EXEC: ("exec", struct.Struct("=ii"), ("process_pid", "process_tgid")),
    cn_proc.PROC_EVENT_COMM: ("comm", struct.Struct("=ii16s"), ("process_pid", "process_tgid", "comm")),
    cn_proc.PROC_EVENT_EXIT: (
        "exit",
        struct.Struct("=iiIIii"),
        ("process_pid", "process_tgid", "exit_code", "exit_signal", "parent_pid", "parent_tgid"),
    ),
}


def struct_decode(data: bytes) -> list[dict[str, Any]]:
    """A plain hand-written decoder of one kernel datagram."""
    if len(data) < _DATA_AT:
        raise ValueError("short datagram")
    (nl_len, nl_type, _, _, _, idx, val, seq, _, _, _, what, cpu, ts) = _HEAD.unpack_from(data)
    if nl_type != netlink.NLMSG_DONE or idx != connector.CN_IDX_PROC or val != connector.CN_VAL_PROC:
        raise ValueError("not a process event")
    if nl_len > len(data):
        raise ValueError("truncated")
    name, body, fields = _BODIES[what]
    event: dict[str, Any] = {"event": name, "cpu": cpu, "timestamp_ns": ts, "seq": seq}
    event.update(zip(fields, body.unpack_from(data, _DATA_AT), strict=True))
    if name == "comm":
        event["comm"] = event["comm"].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return [event]


# ---------------------------------------------------------------- the baseline revision

KSTRUCTS = "kstructs parse_events"
ROOT = Path(__file__).resolve().parent.parent


def _is_kstructs(name: str) -> bool:
    return name == "kstructs" or name.startswith("kstructs.")


@contextlib.contextmanager
def baseline_package(rev: str) -> Iterator[ModuleType | str]:
    """``kstructs.events`` of the package at git revision ``rev``, imported
    from a ``git archive`` of it in a temporary directory (removed on exit),
    or why not. This tree's modules stay what ``import kstructs`` gives."""
    with tempfile.TemporaryDirectory(prefix="kstructs-baseline-") as tmp:
        try:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "kstructs"],
                capture_output=True,
                check=True,
            ).stdout
        except subprocess.CalledProcessError as e:
            why = e.stderr.decode(errors="replace").strip().splitlines()
            yield f"not available (git archive {rev}: {why[0] if why else e.returncode})"
            return
        except OSError as e:
            yield f"not available (git: {e})"
            return
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        if not (Path(tmp) / "kstructs" / "events.py").is_file():
            yield f"not available (no kstructs/events.py at {rev})"
            return
        # Import it as "kstructs" with this tree's modules set aside, so that
        # its own imports find its own modules; then put this tree's back.
        ours = {name: module for name, module in sys.modules.items() if _is_kstructs(name)}
        for name in ours:
            del sys.modules[name]
        sys.path.insert(0, tmp)
        importlib.invalidate_caches()
        try:
            found: ModuleType | str = importlib.import_module("kstructs.events")
        except Exception as e:  # an old revision that does not import: say so in the table
            found = f"not available (import at {rev}: {e!r})"
        finally:
            sys.path.remove(tmp)
            theirs = {name: module for name, module in sys.modules.items() if _is_kstructs(name)}
            for name in theirs:
                del sys.modules[name]
            sys.modules.update(ours)
        # A module missing at rev would come from this tree (an editable
        # install's finder): then it is not the revision's code.
        strays = sorted(n for n, m in theirs.items() if not str(getattr(m, "__file__", tmp)).startswith(tmp))
        if strays and not isinstance(found, str):
            found = f"not available ({', '.join(strays)} not at {rev})"
        yield found


# ---------------------------------------------------------------- the listener's batch loop

# As kstructs' Batch lays out what recvmmsg() receives: datagram i at i * slot.
BATCH_SLOTS = 64
SLOT = netlink.nlmsg_space(ctypes.sizeof(connector.cn_msg) + connector.CONNECTOR_MAX_MSG_SIZE)

Frames = Sequence[tuple[int, int]]  # (offset, length) of each datagram in the batch
BatchLoop = Callable[[memoryview, Frames], list[object]]


def batch_loop(read: Callable[[memoryview, int], object], parse: Callable[[memoryview], list[Any]]) -> BatchLoop:
    """What EventStream.receive_frames does to read a batch: the fast reader
    in place, ``parse_events`` of the slice for anything it does not take."""
    size = events.KERNEL_EVENT_SIZE

    def loop(view: memoryview, frames: Frames) -> list[object]:
        out: list[object] = []
        append = out.append
        for offset, length in frames:
            ev = read(view, offset) if length == size else None
            if ev is None:
                out.extend(parse(view[offset : offset + length]))
            else:
                append(ev)
        return out

    return loop


def take_batch_loop(kernel: Any, parse: Callable[[memoryview], list[Any]]) -> BatchLoop:
    """What ``Listener._take_batch`` did to read a batch before
    ``read_kernel_event``: the parser's guard and readers (``_KERNEL``) in
    place for the kinds made of integers, anything else through
    ``parse_events`` of the slice."""
    guard, (nl_head, cn_id, cn_len), readers = kernel
    size, new = events.KERNEL_EVENT_SIZE, tuple.__new__

    def loop(view: memoryview, frames: Frames) -> list[object]:
        out: list[object] = []
        append = out.append
        for offset, length in frames:
            if length == size:
                head, ident, cn, what = guard(view, offset)
                if head == nl_head and ident == cn_id and cn == cn_len and what in readers:
                    read, cls = readers[what]
                    append(new(cls, read(view, offset)))
                    continue
            out.extend(parse(view[offset : offset + length]))
        return out

    return loop


def baseline_batch_loop(old: ModuleType) -> tuple[BatchLoop | None, str]:
    """The baseline revision's batch loop, and what it is."""
    if hasattr(old, "read_kernel_event"):
        return batch_loop(old.read_kernel_event, old.parse_events), "read_kernel_event"
    if hasattr(old, "_KERNEL"):
        return take_batch_loop(old._KERNEL, old.parse_events), "_take_batch over _KERNEL"
    return None, "none at this revision"


class BatchBuffer:
    """A batch buffer as kstructs' Batch makes one: anonymous memory, one
    slot per datagram, read through a flat memoryview of a ctypes array."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, BATCH_SLOTS * SLOT, flags=mmap.MAP_PRIVATE)
        self._data = (ctypes.c_char * (BATCH_SLOTS * SLOT)).from_buffer(self._memory)
        self.view = memoryview(self._data).cast("B")

    def fill(self, datagrams: Sequence[bytes]) -> list[tuple[int, int]]:
        frames = []
        for i, d in enumerate(datagrams):
            self.view[i * SLOT : i * SLOT + len(d)] = d
            frames.append((i * SLOT, len(d)))
        return frames

    def close(self) -> None:
        self.view.release()
        del self._data
        self._memory.close()


def batch_time(loop: BatchLoop, buffer: BatchBuffer, data: Sequence[bytes]) -> float:
    """CPU seconds ``loop`` takes over ``data``, one batch of BATCH_SLOTS at
    a time (filling the slots is not counted)."""
    total = 0.0
    gc.disable()
    try:
        for at in range(0, len(data), BATCH_SLOTS):
            frames = buffer.fill(data[at : at + BATCH_SLOTS])
            start = time.process_time()
            loop(buffer.view, frames)
            total += time.process_time() - start
    finally:
        gc.enable()
    return total


# ---------------------------------------------------------------- the runs


def decoders(old: ModuleType | str, rev: str) -> dict[str, Callable[[bytes], object] | str]:
    found: dict[str, Callable[[bytes], object] | str] = {KSTRUCTS: events.parse_events}
    found[f"kstructs parse_events at {rev}"] = old if isinstance(old, str) else old.parse_events
    found["struct.unpack decoder (baseline)"] = struct_decode
    try:
        from pyroute2.netlink.connector.cn_proc import ProcEventMarshal  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        found["pyroute2 ProcEventMarshal.parse"] = "not installed"
    else:
        marshal = ProcEventMarshal()
        found["pyroute2 ProcEventMarshal.parse"] = lambda data: list(marshal.parse(data))
    return found


def best_time(decode: Callable[[bytes], object], data: list[bytes]) -> float:
    gc.disable()
    try:
        # CPU time, not wall time: on a shared machine, the time others run
        # between our instructions does not count.
        start = time.process_time()
        for d in data:
            decode(d)
        return time.process_time() - start
    finally:
        gc.enable()


def check_agreement(decode: Callable[[bytes], object], data: list[bytes]) -> str:
    """Whether kstructs decodes each datagram to what the baseline does."""
    for d in data:
        parsed: Any = decode(d)
        got = [e.to_dict() for e in parsed]
        if got != struct_decode(d):
            return f"differs on {d.hex()}: {got} != {struct_decode(d)}"
    return "agrees"


def check_batch_agreement(loop: BatchLoop, buffer: BatchBuffer, data: list[bytes]) -> str:
    """Whether a batch loop reads what the struct.unpack decoder does."""
    for at in range(0, len(data), BATCH_SLOTS):
        chunk = data[at : at + BATCH_SLOTS]
        got: list[Any] = loop(buffer.view, buffer.fill(chunk))
        want = [e for d in chunk for e in struct_decode(d)]
        if [e.to_dict() for e in got] != want:
            return f"differs in the batch at datagram {at}"
    return "agrees"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5 min {five:.2f})"


def decoder_table(found: dict[str, Callable[[bytes], object] | str], data: list[bytes], args: Any) -> None:
    runnable = {name: f for name, f in found.items() if callable(f)}
    old_name = f"kstructs parse_events at {args.baseline}"
    ks = runnable[KSTRUCTS]
    agreement = check_agreement(ks, data[:2000])
    old = runnable.get(old_name)
    old_agreement = "-" if old is None else check_agreement(old, data[:2000])
    for f in runnable.values():  # warm up
        best_time(f, data[:1000])
    times: dict[str, float] = dict.fromkeys(runnable, float("inf"))
    before = load()
    for _ in range(args.repeat):
        for name, f in runnable.items():
            times[name] = min(times[name], best_time(f, data))
    base = times["struct.unpack decoder (baseline)"]
    rows: list[list[object]] = []
    for name, entry in found.items():
        if not callable(entry):
            rows.append([name, entry, "", "", ""])
            continue
        per = times[name] / len(data)
        vs_old = f"{times[old_name] / times[name]:.3f}x" if old_name in times else ""
        rows.append([name, f"{per * 1e6:.2f}", f"{1 / per:,.0f}", f"{base / times[name]:.2f}x", vs_old])
    print("## Parse throughput\n")
    print(_common.machine())
    print(
        f"\n{len(data):,} datagrams (fork/exec/comm/exit, 76 bytes each), one call per datagram; "
        f"best of {args.repeat} runs; load average {before} before, {load()} after.\n"
    )
    headers = ["decoder", "µs / event", "events / s", "speed vs struct.unpack", f"speed vs {args.baseline}"]
    print(_common.table(headers, rows))
    py = times.get("pyroute2 ProcEventMarshal.parse")
    if py is not None:
        print(f"\nkstructs vs pyroute2: {py / times[KSTRUCTS]:.1f}x faster")
    if old is not None:
        change = times[KSTRUCTS] / times[old_name] - 1
        print(f"\nkstructs parse_events vs its code at {args.baseline}: {change:+.1%} time per event")
    print(f"\nkstructs output vs the baseline's dicts: {agreement}")
    print(f"kstructs output at {args.baseline} vs the baseline's dicts: {old_agreement}")


def alternate(ours: Callable[[], float], theirs: Callable[[], float], reps: int) -> tuple[list[float], list[float]]:
    """``reps`` runs of each, alternating which goes first."""
    a: list[float] = []
    b: list[float] = []
    for rep in range(reps):
        if rep % 2:
            b.append(theirs())
            a.append(ours())
        else:
            a.append(ours())
            b.append(theirs())
    return a, b


def comparison_row(what: str, reader: str, ours: list[float], theirs: list[float] | None, n: int) -> list[object]:
    """Time per event in µs of this tree and the baseline; the ratio of their
    medians, the median of the ratios of runs made one after the other, and
    the ratio of their best runs."""
    med = statistics.median(ours)
    row: list[object] = [what, reader, f"{med / n * 1e6:.3f}"]
    if theirs is None:
        return [*row, "-", "-", "-", "-"]
    old = statistics.median(theirs)
    paired = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    return [*row, f"{old / n * 1e6:.3f}", f"{med / old:.3f}", f"{paired:.3f}", f"{min(ours) / min(theirs):.3f}"]


def batch_runs(
    ours: BatchLoop, theirs: BatchLoop | None, buffer: BatchBuffer, data: list[bytes], reps: int
) -> tuple[list[float], list[float] | None]:
    if theirs is None:
        return [batch_time(ours, buffer, data) for _ in range(reps)], None
    old = theirs
    return alternate(lambda: batch_time(ours, buffer, data), lambda: batch_time(old, buffer, data), reps)


def comparison_table(old: ModuleType | str, data: list[bytes], args: Any) -> None:
    rev, reps, n = args.baseline, args.reps, len(data)
    print(f"\n## This tree against {rev}, same run\n")
    if isinstance(old, str):
        print(f"The baseline is {old}.")
        return
    buffer = BatchBuffer()
    try:
        ours_loop = batch_loop(events.read_kernel_event, events.parse_events)
        old_loop, old_reader = baseline_batch_loop(old)
        agreement = check_batch_agreement(ours_loop, buffer, data[:2000])
        old_agreement = "-" if old_loop is None else check_batch_agreement(old_loop, buffer, data[:2000])
        for f in (events.parse_events, old.parse_events):  # warm up
            best_time(f, data[:1000])
        before = load()
        parse = alternate(lambda: best_time(events.parse_events, data), lambda: best_time(old.parse_events, data), reps)
        batch = batch_runs(ours_loop, old_loop, buffer, data, reps)
        # At ac30251 comm events left the batch loop for parse_events: the
        # kinds made of integers alone show what the loop itself costs.
        ints = [d for d in data if struct.unpack_from("=I", d, _EVENT_AT)[0] != cn_proc.PROC_EVENT_COMM]
        batch_ints = batch_runs(ours_loop, old_loop, buffer, ints, reps)
        after = load()
    finally:
        buffer.close()
    print(
        f"{n:,} datagrams (fork/exec/comm/exit), CPU time per event, median of {reps} runs alternating "
        f"which goes first; load average {before} before, {after} after. Ratios: this tree's time / "
        f"{rev}'s (below 1: faster).\n"
    )
    headers = [
        "what",
        f"reader at {rev}",
        "this tree µs / event",
        f"{rev} µs / event",
        "ratio of medians",
        "median of paired ratios",
        "ratio of bests",
    ]
    batch_what = f"batch loop, {BATCH_SLOTS} slots of {SLOT} bytes: read_kernel_event in place"
    rows = [
        comparison_row("parse_events, one call per datagram", "parse_events", *parse, n),
        comparison_row(batch_what, old_reader, *batch, n),
        comparison_row(f"{batch_what}, fork/exec/exit only ({len(ints):,})", old_reader, *batch_ints, len(ints)),
    ]
    print(_common.table(headers, rows))
    print(f"\nThe batch loop of this tree vs the struct.unpack decoder's dicts: {agreement}")
    print(f"The batch loop at {rev} vs the struct.unpack decoder's dicts: {old_agreement}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="datagrams per run (default 20000)")
    parser.add_argument("--repeat", type=int, default=15, help="runs per decoder, best kept (default 15)")
    parser.add_argument("--reps", type=int, default=9, help="alternating runs against the baseline (default 9)")
    parser.add_argument("--baseline", default="ac30251", help="git revision of the package to compare (ac30251)")
    args = parser.parse_args()
    data = _common.event_mix(args.count)
    with baseline_package(args.baseline) as old:
        decoder_table(decoders(old, args.baseline), data, args)
        comparison_table(old, data, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
