"""In-memory parse throughput: kstructs against struct.unpack and pyroute2.

    python bench/decode.py [--count N] [--repeat R] [--baseline REV]

The same datagrams -- built from the kstructs ctypes layouts, a quarter each
of fork, exec, comm and exit, as the kernel sends them: one event per
datagram -- go through three decoders, one datagram per call, as a reader
that does one recv per datagram would call them:

- ``kstructs.events.parse_events(data)``: typed event values (named tuples);
- the same function as it was at git revision ``--baseline`` (default
  ``ac30251``, the parser before its fast reader became ``read_kernel_event``),
  loaded from ``git show`` into a temporary module: the ratio against it says
  whether a change to the parser kept its speed;
- a plain ``struct.unpack`` decoder (below): precompiled ``struct.Struct``s,
  checks the netlink type and connector id, returns one dict per event with
  the same keys and values as kstructs' ``to_dict()``;
- pyroute2's ``ProcEventMarshal().parse(data)``, when installed.

Each decoder runs ``--repeat`` times over all datagrams, interleaved with the
others; the best run (in CPU time of this process) counts. Ratios are against the struct.unpack decoder.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common

from kstructs import cn_proc, connector, netlink

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


# ---------------------------------------------------------------- the runs


KSTRUCTS = "kstructs parse_events"
ROOT = Path(__file__).resolve().parent.parent


def baseline_parser(rev: str) -> Callable[[bytes], object] | str:
    """``parse_events`` of ``kstructs/events.py`` at git revision ``rev``, run
    as a temporary module beside today's (it imports the same layouts)."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:kstructs/events.py"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        return f"not available (git show {rev}: {e})"
    name = f"kstructs._events_at_{rev}"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it runs
    try:
        exec(compile(source, f"<git show {rev}:kstructs/events.py>", "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    parse: Callable[[bytes], object] = module.parse_events
    return parse


def decoders(baseline: str) -> dict[str, Callable[[bytes], object] | str]:
    found: dict[str, Callable[[bytes], object] | str] = {}
    try:
        from kstructs.events import parse_events
    except ImportError as e:
        found[KSTRUCTS] = f"not available ({e})"
    else:
        found[KSTRUCTS] = parse_events
    found[f"kstructs parse_events at {baseline}"] = baseline_parser(baseline)
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
        events: Any = decode(d)
        got = [e.to_dict() for e in events]
        if got != struct_decode(d):
            return f"differs on {d.hex()}: {got} != {struct_decode(d)}"
    return "agrees"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="datagrams per run (default 20000)")
    parser.add_argument("--repeat", type=int, default=15, help="runs per decoder, best kept (default 15)")
    parser.add_argument("--baseline", default="ac30251", help="git revision of the parser to compare (ac30251)")
    args = parser.parse_args()
    data = _common.event_mix(args.count)
    found = decoders(args.baseline)
    runnable = {name: f for name, f in found.items() if callable(f)}
    old_name = f"kstructs parse_events at {args.baseline}"
    agreement = "-"
    ks = runnable.get(KSTRUCTS)
    if ks is not None:
        agreement = check_agreement(ks, data[:2000])
    old = runnable.get(old_name)
    old_agreement = "-" if old is None else check_agreement(old, data[:2000])
    for f in runnable.values():  # warm up
        best_time(f, data[:1000])
    times: dict[str, float] = dict.fromkeys(runnable, float("inf"))
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
        f"best of {args.repeat} runs.\n"
    )
    headers = ["decoder", "µs / event", "events / s", "speed vs struct.unpack", f"speed vs {args.baseline}"]
    print(_common.table(headers, rows))
    py = times.get("pyroute2 ProcEventMarshal.parse")
    if ks is not None and py is not None:
        print(f"\nkstructs vs pyroute2: {py / times[KSTRUCTS]:.1f}x faster")
    if ks is not None and old is not None:
        change = times[KSTRUCTS] / times[old_name] - 1
        print(f"\nkstructs parse_events vs its code at {args.baseline}: {change:+.1%} time per event")
    print(f"\nkstructs output vs the baseline's dicts: {agreement}")
    print(f"kstructs output at {args.baseline} vs the baseline's dicts: {old_agreement}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
