"""In-memory parse throughput: kstructs against struct.unpack and pyroute2.

    python bench/decode.py [--count N] [--repeat R]

The same datagrams -- built from the kstructs ctypes layouts, a quarter each
of fork, exec, comm and exit, as the kernel sends them: one event per
datagram -- go through three decoders, one datagram per call, as a reader
that does one recv per datagram would call them:

- ``kstructs.events.parse_events(data)``: typed event values (named tuples);
- a plain ``struct.unpack`` decoder (below): precompiled ``struct.Struct``s,
  checks the netlink type and connector id, returns one dict per event with
  the same keys and values as kstructs' ``to_dict()``;
- pyroute2's ``ProcEventMarshal().parse(data)``, when installed.

Each decoder runs ``--repeat`` times over all datagrams, interleaved with the
others; the best run counts. Ratios are against the struct.unpack decoder.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import struct
import sys
import time
from collections.abc import Callable
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


def decoders() -> dict[str, Callable[[bytes], object] | str]:
    found: dict[str, Callable[[bytes], object] | str] = {}
    try:
        from kstructs.events import parse_events
    except ImportError as e:
        found["kstructs parse_events"] = f"not available ({e})"
    else:
        found["kstructs parse_events"] = parse_events
    found["struct.unpack decoder (baseline)"] = struct_decode
    try:
        from pyroute2.netlink.connector.cn_proc import ProcEventMarshal
    except ImportError:
        found["pyroute2 ProcEventMarshal.parse"] = "not installed"
    else:
        marshal = ProcEventMarshal()
        found["pyroute2 ProcEventMarshal.parse"] = lambda data: list(marshal.parse(data))
    return found


def best_time(decode: Callable[[bytes], object], data: list[bytes]) -> float:
    gc.disable()
    try:
        start = time.perf_counter()
        for d in data:
            decode(d)
        return time.perf_counter() - start
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
    parser.add_argument("--repeat", type=int, default=9, help="runs per decoder, best kept (default 9)")
    args = parser.parse_args()
    data = _common.event_mix(args.count)
    found = decoders()
    runnable = {name: f for name, f in found.items() if callable(f)}
    agreement = "-"
    ks = runnable.get("kstructs parse_events")
    if ks is not None:
        agreement = check_agreement(ks, data[:2000])
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
            rows.append([name, entry, "", ""])
            continue
        per = times[name] / len(data)
        rows.append([name, f"{per * 1e6:.2f}", f"{1 / per:,.0f}", f"{base / times[name]:.2f}x"])
    print("## Parse throughput\n")
    print(_common.machine())
    print(
        f"\n{len(data):,} datagrams (fork/exec/comm/exit, 76 bytes each), one call per datagram; "
        f"best of {args.repeat} runs.\n"
    )
    print(_common.table(["decoder", "µs / event", "events / s", "speed vs struct.unpack"], rows))
    py = times.get("pyroute2 ProcEventMarshal.parse")
    if ks is not None and py is not None:
        print(f"\nkstructs vs pyroute2: {py / times['kstructs parse_events']:.1f}x faster")
    print(f"\nkstructs output vs the baseline's dicts: {agreement}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
