"""Robustness: fuzzed input to the parser, spoofed senders, loss accounting
under overflow, and how ``kstructs watch`` ends on signals and a closed pipe.

The long forms (a million fuzzed inputs, a ten-minute soak, live storms
against the peers) are scripts in bench/; these are the quick forms.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import datagram, hang_guard, installed, native_order, proc_event_align, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kstructs import cn_proc, connector, netlink
from kstructs.cn_proc import EventKind
from kstructs.events import ExitEvent, ForkEvent, McastRequest, ParseError, parse_events, parse_request
from kstructs.listener import Item, Listener, Loss

# ---------------------------------------------------------------- datagrams from the layouts

HDR = ctypes.sizeof(netlink.nlmsghdr)
CN = ctypes.sizeof(connector.cn_msg)
NLMSG_LEN_AT = netlink.nlmsghdr.nlmsg_len.offset
CN_LEN_AT = HDR + connector.cn_msg.len.offset
WHAT_AT = HDR + CN + cn_proc.proc_event.what.offset

I32 = st.integers(-(2**31), 2**31 - 1)
U32 = st.integers(0, 2**32 - 1)


def _id_event(pid: int, tgid: int, r: int, e: int) -> cn_proc.id_proc_event:
    ev = cn_proc.id_proc_event(process_pid=pid, process_tgid=tgid)
    ev.r.ruid, ev.e.euid = r, e
    return ev


# what, member of event_data, and a payload from four 32-bit values (pids signed, the rest unsigned)
PayloadMaker = Callable[[int, int, int, int], ctypes.Structure]
KINDS: list[tuple[int, str, PayloadMaker]] = [
    (cn_proc.PROC_EVENT_NONE, "ack", lambda a, b, c, d: cn_proc.proc_event__ack(c)),
    (cn_proc.PROC_EVENT_FORK, "fork", lambda a, b, c, d: cn_proc.fork_proc_event(a, b, a, b)),
    (cn_proc.PROC_EVENT_EXEC, "exec", lambda a, b, c, d: cn_proc.exec_proc_event(a, b)),
    (cn_proc.PROC_EVENT_UID, "id", _id_event),
    (cn_proc.PROC_EVENT_GID, "id", _id_event),
    (cn_proc.PROC_EVENT_SID, "sid", lambda a, b, c, d: cn_proc.sid_proc_event(a, b)),
    (cn_proc.PROC_EVENT_PTRACE, "ptrace", lambda a, b, c, d: cn_proc.ptrace_proc_event(a, b, a, b)),
    (cn_proc.PROC_EVENT_COMM, "comm", lambda a, b, c, d: cn_proc.comm_proc_event(a, b, c.to_bytes(4, "little"))),
    (cn_proc.PROC_EVENT_COREDUMP, "coredump", lambda a, b, c, d: cn_proc.coredump_proc_event(a, b, a, b)),
    (cn_proc.PROC_EVENT_EXIT, "exit", lambda a, b, c, d: cn_proc.exit_proc_event(a, b, c, d, a, b)),
]


def every_kind() -> list[bytes]:
    """One valid datagram of each kind, plus an unknown kind."""
    out = [datagram(what, member, make(1234, 1234, 17, 0), cpu=1, seq=7) for what, member, make in KINDS]
    out.append(datagram(0x00000008, cpu=1, seq=8))
    return out


@st.composite
def valid_datagrams(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, len(KINDS)))
    what, member, make = KINDS[choice] if choice < len(KINDS) else (draw(U32), None, None)
    payload = make(draw(I32), draw(I32), draw(U32), draw(U32)) if make is not None else None
    return datagram(
        what, member, payload, cpu=draw(U32), seq=draw(U32), ack=draw(U32), timestamp_ns=draw(st.integers(0, 2**64 - 1))
    )


def _put32(data: bytearray, at: int, value: int) -> None:
    if at + 4 <= len(data):
        data[at : at + 4] = value.to_bytes(4, sys.byteorder)


@st.composite
def mutated_datagrams(draw: st.DrawFn) -> bytes:
    """Valid datagrams, one to three of them concatenated, then one mutation."""
    data = bytearray(b"".join(draw(st.lists(valid_datagrams(), min_size=1, max_size=3))))
    mutation = draw(st.sampled_from(["none", "flip", "truncate", "extend", "nlmsg_len", "cn_len", "what"]))
    if mutation == "flip":
        for bit in draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=8)):
            data[bit // 8] ^= 1 << (bit % 8)
    elif mutation == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif mutation == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif mutation == "nlmsg_len":
        edges = st.sampled_from([0, 1, 15, 16, 35, 36, 52, 75, 76, 77, len(data), len(data) + 1, 2**32 - 1])
        _put32(data, NLMSG_LEN_AT, draw(edges | U32))
    elif mutation == "cn_len":
        data[CN_LEN_AT : CN_LEN_AT + 2] = draw(st.sampled_from([0, 4, 15, 16, 39, 40, 41, 0xFFFF])).to_bytes(
            2, sys.byteorder
        )
    elif mutation == "what":
        _put32(data, WHAT_AT, draw(U32))
    return bytes(data)


def parse_or_refuse(data: bytes) -> None:
    """The parser's contract on any bytes: events, or ParseError. Nothing else."""
    with contextlib.suppress(ParseError):
        parse_events(data)


# ---------------------------------------------------------------- quick fuzz


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_datagrams())
def test_mutated_datagrams_parse_or_raise_parse_error(data: bytes) -> None:
    parse_or_refuse(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_parse_or_raise_parse_error(data: bytes) -> None:
    parse_or_refuse(data)


@pytest.mark.parametrize(
    "data", every_kind(), ids=lambda d: f"what={int.from_bytes(d[WHAT_AT : WHAT_AT + 4], sys.byteorder):#x}"
)
def test_every_prefix_and_bit_flip_of_every_kind(data: bytes) -> None:
    for n in range(len(data)):
        parse_or_refuse(data[:n])
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        parse_or_refuse(bytes(flipped))


# ---------------------------------------------------------------- live: helpers

NETLINK_CONNECTOR = netlink.NETLINK_CONNECTOR
NOBODY = 65534


def port_id(listener: Listener) -> int:
    """The listener socket's netlink port id, as a sender would address it."""
    sock = socket.socket(fileno=os.dup(listener.fileno()))
    try:
        return int(sock.getsockname()[0])
    finally:
        sock.close()


def kernel_drops(listener: Listener) -> int:
    """The kernel's count of datagrams dropped for the listener's socket
    (``Drops`` in /proc/net/netlink)."""
    inode = os.fstat(listener.fileno()).st_ino
    with open("/proc/net/netlink") as f:
        header = f.readline().split()
        for line in f:
            cols = line.split()
            if int(cols[header.index("Inode")]) == inode:
                return int(cols[header.index("Drops")])
    raise AssertionError("listener socket not in /proc/net/netlink")


def drain(
    listener: Listener, *, idle: float = 0.3, limit: float = 10.0, until: Callable[[], bool] | None = None
) -> list[Item]:
    """What the listener has and gets until ``idle`` seconds pass quietly, or
    ``until()`` holds, or ``limit`` seconds pass (other processes never stop
    making events)."""
    got: list[Item] = []
    deadline = time.monotonic() + limit
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        batch = listener.read()
        if until is not None and until():
            got += batch
            break
        if batch:
            got += batch
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= idle:
            break
        else:
            select.select([listener.fileno()], [], [], 0.05)
    return got


_FORKER = """
import os, sys
pids = []
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
print(os.getpid(), *pids)
"""


def storm(children: int) -> tuple[int, set[int]]:
    """A process that forks ``children`` children, each exiting at once: twice
    ``children`` events (its forks, their exits). Returns its pid and theirs."""
    out = subprocess.run([sys.executable, "-c", _FORKER, str(children)], capture_output=True, text=True, check=True)
    parent, *kids = (int(x) for x in out.stdout.split())
    return parent, set(kids)


def storm_events(items: list[Item], parent: int, children: set[int]) -> tuple[int, int]:
    forks = sum(1 for e in items if isinstance(e, ForkEvent) and e.parent_tgid == parent and e.child_pid in children)
    exits = sum(1 for e in items if isinstance(e, ExitEvent) and e.process_pid in children)
    return forks, exits


def probe_arrives(listener: Listener, timeout: float = hang_guard(5.0)) -> bool:
    """Whether the fork of a fresh child reaches the listener."""
    child = subprocess.Popen(["/bin/true"])
    child.wait()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in listener.read():
            if isinstance(e, ForkEvent) and e.child_pid == child.pid:
                return True
        select.select([listener.fileno()], [], [], 0.05)
    return False


# ---------------------------------------------------------------- spoofing

MAGIC = 0x5EADBEEF  # a pid no kernel hands out (above PID_MAX_LIMIT)
SPOOFED = [
    datagram(cn_proc.PROC_EVENT_FORK, "fork", cn_proc.fork_proc_event(MAGIC, MAGIC, MAGIC, MAGIC), seq=1),
    datagram(cn_proc.PROC_EVENT_EXEC, "exec", cn_proc.exec_proc_event(MAGIC, MAGIC), seq=2),
    datagram(cn_proc.PROC_EVENT_EXIT, "exit", cn_proc.exit_proc_event(MAGIC, MAGIC, 0, 17, MAGIC, MAGIC), seq=3),
    datagram(cn_proc.PROC_EVENT_COMM, "comm", cn_proc.comm_proc_event(MAGIC, MAGIC, b"spoofed"), seq=4),
    # What the listener's own subscribe reply looks like: an ack a spoofer could forge.
    datagram(cn_proc.PROC_EVENT_NONE, "ack", cn_proc.proc_event__ack(0), seq=5, ack=1),
]


def send_as_nobody(port: int, datagrams: list[bytes]) -> list[str]:
    """Fork a child that drops to uid/gid 65534, opens its own NETLINK_CONNECTOR
    socket and sends each datagram to ``port``; what each send did."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            results = []
            with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as sock:
                for d in datagrams:
                    try:
                        sock.sendto(d, (port, 0))
                        results.append("sent")
                    except OSError as e:
                        results.append(errno.errorcode.get(e.errno or 0, str(e.errno)))
            os.write(write_end, " ".join(results).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return out.split()


def is_spoofed(item: Item) -> bool:
    return MAGIC in (getattr(item, name, None) for name in ("parent_pid", "child_pid", "process_pid"))


@pytest.mark.root
def test_unprivileged_sender_cannot_reach_the_listener() -> None:
    # The kernel refuses a unicast to a port id on NETLINK_CONNECTOR without
    # CAP_NET_ADMIN (netlink_sendmsg: the connector does not set
    # NL_CFG_F_NONROOT_SEND), so nothing is delivered nor even received. Should a
    # kernel let one through, the listener must still reject it.
    with Listener() as listener:
        results = send_as_nobody(port_id(listener), SPOOFED)
        sent = results.count("sent")
        assert set(results) <= {"sent", "EPERM"}
        # A unicast is queued by the time sendto() returns: one second of reading is plenty.
        got = drain(listener, limit=1.0, until=lambda: sent > 0 and listener.stats.rejected >= sent)
        assert not [e for e in got if is_spoofed(e)]
        assert listener.stats.rejected == sent


@pytest.mark.root
def test_spoofed_datagrams_are_rejected_not_delivered() -> None:
    # A privileged process that is not the kernel: its datagrams arrive with
    # its own port id as the sender. Every one must be counted, none delivered.
    with Listener() as listener, socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as spoofer:
        spoofer.bind((0, 0))
        target = port_id(listener)
        rounds = 20
        for _ in range(rounds):
            for d in SPOOFED:
                spoofer.sendto(d, (target, 0))
        expected = rounds * len(SPOOFED)
        got = drain(listener, limit=5.0, until=lambda: listener.stats.rejected >= expected)
        assert not [e for e in got if is_spoofed(e)]
        assert listener.stats.rejected == expected
        assert probe_arrives(listener)


# ---------------------------------------------------------------- loss accounting

SMALL_RCVBUF = 4096  # the kernel doubles it: room for about ten events


@pytest.mark.root
@pytest.mark.parametrize("kinds", [EventKind.FORK | EventKind.EXIT, None], ids=["fork+exit", "all"])
def test_overflow_is_counted_and_the_listener_keeps_running(kinds: EventKind | None) -> None:
    # The listener does not read during the storm, so its queue overflows.
    # What can be asserted exactly against a live, shared kernel:
    # - D <= S: no storm event is delivered twice or made up (D: the storm's
    #   fork and exit events delivered, S: twice the children);
    # - D + L >= S, where L is the sum of every Loss.count: each storm event is
    #   delivered or counted lost. L may also count other processes' events,
    #   dropped in the same overflow, hence >= and not ==;
    # - the "enobufs" losses add up to the kernel's own Drops count for the
    #   socket: at least the drops made by the time the storm ended, at most
    #   those made by now (other processes keep making events, and a queue of
    #   ten events keeps overflowing on a busy machine);
    # - stats.lost is the sum of the Loss values yielded, and of the drops
    #   the kernel counted since;
    # - afterwards a fresh fork still arrives.
    with Listener(kinds, rcvbuf=SMALL_RCVBUF) as listener:
        parent, children = storm(1000)
        drops_after_storm = kernel_drops(listener)
        got: list[Item] = []

        def reported() -> int:
            return sum(e.count for e in got if isinstance(e, Loss) and e.reason == "enobufs")

        deadline = time.monotonic() + hang_guard(10)
        while reported() < drops_after_storm and time.monotonic() < deadline:
            got += drain(listener, limit=0.2)
        got += drain(listener, limit=0.5)
        storm_size = 2 * len(children)
        forks, exits = storm_events(got, parent, children)
        lost = sum(e.count for e in got if isinstance(e, Loss))
        assert drops_after_storm > 0, "the storm did not overflow the receive queue"
        assert forks + exits <= storm_size
        assert forks + exits + lost >= storm_size
        assert drops_after_storm <= reported() <= kernel_drops(listener)
        # stats.lost also counts the drops since the last read that no Loss reports yet.
        assert lost <= listener.stats.lost <= lost + kernel_drops(listener) - reported()
        # A queue of ten events can overflow again on a busy machine and drop
        # the probe itself (counted, like any drop): a few tries.
        assert any(probe_arrives(listener, timeout=1.0) for _ in range(10))


# ---------------------------------------------------------------- watch: signals and pipes

# Runs `python -m kstructs watch ...` with socket.socket.send wrapped to log every
# request the process sends (hex, one per line) to $KSTRUCTS_SENDLOG: the test
# reads the LISTEN and the IGNORE there, no strace needed.
_LOGGED_MAIN = """
import os, runpy, socket, sys
log = open(os.environ["KSTRUCTS_SENDLOG"], "a")
_send = socket.socket.send
def send(self, data, *args):
    n = _send(self, data, *args)
    log.write(bytes(data).hex() + "\\n")
    log.flush()
    return n
socket.socket.send = send
sys.argv[0] = "kstructs"
runpy.run_module("kstructs", run_name="__main__", alter_sys=True)
"""


class Watch:
    """``kstructs watch --format json`` in a subprocess, with its requests logged."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.sendlog = tmp / "sends"
        self.sendlog.touch()
        self.stderr_path = tmp / "stderr"
        env = {**os.environ, "KSTRUCTS_SENDLOG": str(self.sendlog)}
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _LOGGED_MAIN, "watch", "--format", "json", *args],
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )

    def requests(self) -> list[McastRequest]:
        return [parse_request(bytes.fromhex(line)) for line in self.sendlog.read_text().split()]

    def wait_listening(self, timeout: float = hang_guard(10.0)) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(r.op == cn_proc.PROC_CN_MCAST_LISTEN for r in self.requests()):
                time.sleep(0.2)  # the reply, then the first read
                return
            assert self.proc.poll() is None, self.stderr()
            time.sleep(0.02)
        raise AssertionError(f"watch did not subscribe within {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def ignores(self) -> int:
        return sum(1 for r in self.requests() if r.op == cn_proc.PROC_CN_MCAST_IGNORE)


def storm_in_background(children: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _FORKER, str(children)], stdout=subprocess.DEVNULL)


@pytest.mark.root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_watch_ends_cleanly_on_a_signal_during_a_storm(tmp_path: Path, sig: signal.Signals) -> None:
    watch = Watch(tmp_path)
    watch.wait_listening()
    forker = storm_in_background(2000)
    time.sleep(0.1)  # mid-storm
    watch.proc.send_signal(sig)
    out, _ = watch.proc.communicate(timeout=hang_guard(20))
    forker.wait(timeout=hang_guard(60))
    err = watch.stderr()
    assert watch.proc.returncode == 0, err
    assert "Traceback" not in err
    assert watch.ignores() == 1
    lines = out.split(b"\n")
    assert lines.pop() == b"", "the output does not end with a newline"
    assert lines, "no event written before the signal"
    for i, line in enumerate(lines):  # flushed whole: every line is a complete JSON object
        try:
            assert "event" in json.loads(line)
        except ValueError as e:
            context = b"\n".join(lines[max(i - 1, 0) : i + 2]).decode(errors="replace")
            raise AssertionError(f"line {i + 1} of {len(lines)} is not JSON ({e}):\n{context}\nstderr: {err}") from e


@pytest.mark.root
def test_watch_ends_cleanly_when_stdout_closes(tmp_path: Path) -> None:
    # `kstructs watch | head -1`: the reader goes away. The decision: this is
    # a normal way to stop a stream, so watch sends IGNORE and exits 0 (or
    # 141, the shell's status for "ended by SIGPIPE"), without a traceback.
    watch = Watch(tmp_path)
    watch.wait_listening()
    assert watch.proc.stdout is not None
    forker = storm_in_background(2000)
    watch.proc.stdout.readline()
    watch.proc.stdout.close()
    forker.wait(timeout=hang_guard(60))
    more = storm_in_background(200)  # in case the storm fitted in the pipe
    more.wait(timeout=hang_guard(60))
    try:
        status = watch.proc.wait(timeout=hang_guard(20))
    except subprocess.TimeoutExpired:
        watch.proc.kill()
        raise AssertionError(f"watch kept running after its stdout closed: {watch.stderr()}") from None
    err = watch.stderr()
    assert status in (0, 141), err
    assert "Traceback" not in err
    assert watch.ignores() == 1


# --- BTF reader ---
# Hostile BTF: each of these once ended in RecursionError, struct.error, a
# hang or an unbounded read. The blobs are built by test_btf's encoder.

import struct  # noqa: E402

from test_btf import Encoder  # noqa: E402
from test_btf import every_kind as every_btf_kind  # noqa: E402

from kstructs.btf import MAX_SIZE, Btf, BtfError, Kind, Type  # noqa: E402


def _btf_chain(e: Encoder, length: int, kinds: tuple[Kind, ...]) -> int:
    """``length`` types, each referring to the one before, cycling through ``kinds``; the first is an int."""
    type_id = e.int_("int", 4, signed=True)
    for i in range(length):
        kind = kinds[i % len(kinds)]
        type_id = (
            e.array(type_id, 1, 1) if kind is Kind.ARRAY else e.ref(kind, "t" if kind is Kind.TYPEDEF else "", type_id)
        )
    return type_id


@pytest.mark.parametrize(
    "loop",
    [(Kind.ARRAY,), (Kind.CONST, Kind.ARRAY), (Kind.TYPEDEF, Kind.VOLATILE, Kind.ARRAY)],
    ids=["itself", "through-const", "through-typedef"],
)
def test_btf_array_of_itself(loop: tuple[Kind, ...]) -> None:
    # Types 1..n: each refers to the next, the last back to the first.
    e = Encoder()
    for i, kind in enumerate(loop):
        nxt = 1 + (i + 1) % len(loop)
        e.array(nxt, nxt, 2) if kind is Kind.ARRAY else e.ref(kind, "", nxt)
    btf = Btf(e.blob())
    for type_id in range(1, len(loop) + 1):
        with pytest.raises(BtfError, match="BTF type loop at type id 0x"):
            btf.size_of(type_id)


@pytest.mark.parametrize(
    "kinds",
    [(Kind.ARRAY,), (Kind.TYPEDEF,), (Kind.CONST, Kind.ARRAY, Kind.TYPEDEF, Kind.VOLATILE, Kind.TYPE_TAG)],
    ids=["arrays", "typedefs", "mixed"],
)
def test_btf_long_acyclic_chains(kinds: tuple[Kind, ...]) -> None:
    # Far deeper than Python's recursion limit; every array has one element.
    e = Encoder()
    top = _btf_chain(e, 5000, kinds)
    e.record("holder", 4, [("deep", top, 0, 0)])
    btf = Btf(e.blob())
    assert btf.size_of(top) == 4
    assert btf.resolve(top).kind is (Kind.ARRAY if Kind.ARRAY in kinds else Kind.INT)
    (holder,) = btf.named("holder")
    assert [(f.path, f.bit_offset) for f in btf.fields(holder.id)] == [("deep", 0)]


def test_btf_chain_into_a_cycle_is_walked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2000 arrays ending in a 2-cycle of typedefs: asking the size of each
    # must not walk the rest of the chain again (2000**2 steps in all).
    e = Encoder()
    e.ref(Kind.TYPEDEF, "a", 2)
    e.ref(Kind.TYPEDEF, "b", 1)
    top = _btf_chain(e, 2000, (Kind.ARRAY,))  # its int is type 3
    e.types[2] = e.types[3][:12] + struct.pack("<III", 1, 1, 1)  # the first array now holds the cycle
    btf = Btf(e.blob())
    calls = 0
    resolve = Btf.resolve

    def counted(self: Btf, type_id: int) -> Type:
        nonlocal calls
        calls += 1
        return resolve(self, type_id)

    monkeypatch.setattr(Btf, "resolve", counted)
    for type_id in range(3, top + 1):
        with pytest.raises(BtfError, match="BTF type loop at type id 0x"):
            btf.size_of(type_id)
    assert calls < 4 * top


def test_btf_array_larger_than_any_size_t() -> None:
    e = Encoder()
    top = e.array(e.array(e.int_("int", 4), 1, 0xFFFFFFFF), 1, 0xFFFFFFFF)
    with pytest.raises(BtfError, match="BTF array 0x3 larger than 0xffffffffffffffff bytes"):
        Btf(e.blob()).size_of(top)


@pytest.mark.parametrize("union", [False, True], ids=["struct", "union"])
def test_btf_record_containing_itself(union: bool) -> None:
    # Type 2 holds an unnamed member of type 3, which holds one of type 2.
    e = Encoder()
    x = e.int_("int", 4)
    e.record("self", 8, [("x", x, 0, 0), ("", 3, 32, 0)], union=union)
    e.record("", 4, [("y", x, 0, 0), ("", 2, 0, 0)], union=union)
    btf = Btf(e.blob())
    with pytest.raises(BtfError, match="BTF type 0x2 contains itself"):
        btf.fields(2)
    with pytest.raises(BtfError, match="BTF type 0x2 contains itself"):
        btf.field(2, "absent")
    e = Encoder()
    e.record("", 4, [("", 1, 0, 0)], union=union)  # directly
    with pytest.raises(BtfError, match="BTF type 0x1 contains itself"):
        Btf(e.blob()).fields(1)


def test_btf_datasec_listing_itself() -> None:
    e = Encoder()
    e.add(Kind.DATASEC, ".data", 4, vlen=2, tail=struct.pack("<6I", 1, 0, 4, 2, 4, 4))
    e.add(Kind.VAR, "v", 1, tail=struct.pack("<I", 1))
    btf = Btf(e.blob())
    assert [(m.name, m.type_id) for m in btf.type(1).members] == [(".data", 1), ("v", 2)]


def _btf_doubling(depth: int, *, named: bool) -> tuple[Btf, int]:
    """``depth`` structs, each holding two members of the next: 2**depth ways down to ``x``."""
    e = Encoder()
    x = e.int_("int", 4)
    inner = e.record("", 4, [("x", x, 0, 0)])
    for _ in range(depth):
        members = [("a" if named else "", inner, 0, 0), ("b" if named else "", inner, 0, 0)]
        inner = e.record("", 4, members, union=True)
    top = e.record("top", 4, [("", inner, 0, 0)])
    return Btf(e.blob()), top


def test_btf_member_walks_are_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2**60 paths lead to one member: each type is walked once, so the number of
    # type lookups grows with the depth, not with the number of paths.
    calls = 0
    resolve = Btf.resolve

    def counted(self: Btf, type_id: int) -> Type:
        nonlocal calls
        calls += 1
        return resolve(self, type_id)

    monkeypatch.setattr(Btf, "resolve", counted)
    btf, top = _btf_doubling(60, named=False)
    assert [(f.path, f.bit_offset) for f in btf.fields(top)] == [("x", 0)]
    found = btf.field(top, "x")
    assert found is not None and found.member.name == "x"
    assert btf.field(top, "y") is None
    assert calls < 4 * 2 * 60


def test_btf_named_path_blowup_is_an_error() -> None:
    # Here the 2**40 paths are all different ("a.b.a...x"): a clear error, not a walk without end.
    btf, top = _btf_doubling(40, named=True)
    with pytest.raises(BtfError, match=f"BTF members of type 0x{top:x} past 0x40000 steps"):
        btf.fields(top)
    found = btf.field(top, ".".join(["a", "b"] * 20) + ".x")
    assert found is not None and found.bit_offset == 0


def test_btf_deep_unnamed_nesting_is_iterated() -> None:
    # 5000 nested anonymous structs, each with one named member of its own.
    e = Encoder()
    x = e.int_("int", 4)
    inner = e.record("", 4, [("m0", x, 0, 0)])
    for i in range(1, 5000):
        inner = e.record("", 4, [(f"m{i}", x, 0, 0), ("", inner, 0, 0)])
    btf = Btf(e.blob())
    assert len(btf.fields(inner)) == 5000
    found = btf.field(inner, "m0")
    assert found is not None and found.path == "m0"


def test_btf_long_string_is_an_error() -> None:
    e = Encoder()
    e.add(Kind.STRUCT, "n" * 0x2000, 0)
    with pytest.raises(BtfError, match="BTF string at 0x1 longer than 0x1000 bytes"):
        Btf(e.blob()).type(1)


def _load_in_child(path: Path | str) -> subprocess.CompletedProcess[str]:
    # A child, so that a reader that blocks or reads without end is cut off
    # (by the timeout, and by a 1 GiB address-space limit) instead of taking
    # the test run down with it.
    code = "import sys; from kstructs.btf import Btf; Btf.load(sys.argv[1])"

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
        check=False,
    )


def test_btf_load_refuses_devices_and_fifos(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases: list[tuple[Path | str, str]] = [
        ("/dev/zero", "a character device"),
        (fifo, "a FIFO"),
        (tmp_path, "a directory"),
    ]
    for path, kind in cases:
        done = _load_in_child(path)
        assert done.returncode == 1
        assert f"BtfError: BTF file is {kind}, not a regular file: st_mode 0x" in done.stderr
    with pytest.raises(BtfError, match="BTF file is a FIFO"):
        Btf.load(fifo)


def test_btf_load_size_limit(tmp_path: Path) -> None:
    blob, _ = every_btf_kind()
    path = tmp_path / "raw.btf"
    path.write_bytes(blob)
    assert len(Btf.load(path, max_size=len(blob))) > 1
    with pytest.raises(
        BtfError, match=f"BTF file of 0x{len(blob):x} bytes, larger than the limit of 0x{len(blob) - 1:x}"
    ):
        Btf.load(path, max_size=len(blob) - 1)
    # /proc files report a size of 0: the limit holds while reading. (Not /proc/self/maps, which
    # qemu-user replaces with a file of its own, size and all.)
    assert os.stat("/proc/version").st_size == 0
    with pytest.raises(BtfError, match="BTF file larger than the limit of 0x10 bytes"):
        Btf.load("/proc/version", max_size=0x10)
    # The default is far above what a kernel's BTF needs.
    if os.access("/sys/kernel/btf/vmlinux", os.R_OK):
        assert os.path.getsize("/sys/kernel/btf/vmlinux") * 16 < MAX_SIZE


def test_btf_check_of_an_anonymous_member_of_itself() -> None:
    from test_btf import BINDINGS

    from kstructs.conformance import CheckError, check_btf

    e = Encoder()
    u32 = e.int_("unsigned int", 4)
    e.record("cb_id", 8, [("idx", u32, 0, 0), ("val", u32, 32, 0), ("", 3, 64, 0)])
    e.record("", 4, [("", 3, 0, 0)])
    with pytest.raises(CheckError, match="BTF type 0x3 contains itself"):
        check_btf(BINDINGS, Btf(e.blob()))


def test_btf_check_of_2_to_the_60_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    # cb_id holds an anonymous union with 2**60 ways down to one more member:
    # the check walks each type once. A walk that takes 100,000 type lookups
    # is stopped here, since an exponential one would never end.
    from test_btf import BINDINGS

    from kstructs.conformance import check_btf

    calls = 0
    resolve = Btf.resolve

    def counted(self: Btf, type_id: int) -> Type:
        nonlocal calls
        calls += 1
        if calls > 100_000:
            raise AssertionError("the member walk is not linear")
        return resolve(self, type_id)

    monkeypatch.setattr(Btf, "resolve", counted)
    e = Encoder()
    u32 = e.int_("unsigned int", 4)
    inner = e.record("", 4, [("extra", u32, 0, 0)])
    for _ in range(60):
        inner = e.record("", 4, [("", inner, 0, 0), ("", inner, 0, 0)], union=True)
    e.record("cb_id", 8, [("idx", u32, 0, 0), ("val", u32, 32, 0), ("", inner, 32, 0)])
    report = check_btf(BINDINGS, Btf(e.blob()))
    assert ("missing-in-binding", "struct cb_id.extra") in {(f.category, f.item) for f in report.findings}


# --- CLI ---


def test_watch_text_never_writes_a_control_character() -> None:
    # A comm forging a line, moving the cursor, retitling the terminal or
    # reordering text: the text line stays one line of printable characters.
    from kstructs.cli import TextFormat
    from kstructs.events import CommEvent

    fmt = TextFormat()
    for raw in (b"\nforged", b"\x1b[3A\x1b[J", b"\x1b]0;t\x07", b"\xc2\x9b2J", b"\x9b", b"\xe2\x80\xae", b"\xff"):
        line = fmt(CommEvent(0, 0, 0, 7, 7, raw.decode("utf-8", "surrogateescape")))
        assert line.isprintable(), line
        assert "\n" not in line and "\u202e" not in line


def test_watch_json_is_strict_utf8_for_a_name_that_is_not() -> None:
    from kstructs.cli import JsonFormat
    from kstructs.events import CommEvent

    line = JsonFormat()(CommEvent(0, 0, 0, 7, 7, b"\xff\xc3".decode("utf-8", "surrogateescape")))
    obj = json.loads(line.encode("utf-8"))  # a lone surrogate cannot be encoded
    assert obj["comm"] == "\ufffd\ufffd" and obj["comm_hex"] == "ffc3"


@pytest.mark.root
def test_watch_survives_a_burst_of_signals(tmp_path: Path) -> None:
    # Signals keep coming, a few milliseconds apart, until watch has exited:
    # each run ends with status 0, never by a signal. Some runs mid-storm.
    for run in range(6):
        (tmp_path / str(run)).mkdir()
        watch = Watch(tmp_path / str(run))
        watch.wait_listening()
        forker = storm_in_background(500) if run % 2 else None
        sent = 0
        try:
            while watch.proc.poll() is None and sent < 5000:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(watch.proc.pid, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)[sent % 3])
                sent += 1
                time.sleep(0.001)
            watch.proc.communicate(timeout=hang_guard(20))
        finally:
            if forker is not None:
                forker.wait(timeout=hang_guard(60))
        assert watch.proc.returncode == 0, (run, sent, watch.stderr())
        assert "Traceback" not in watch.stderr()


@pytest.mark.root
def test_watch_accounts_for_a_backlog_behind_a_slow_pipe(tmp_path: Path) -> None:
    # Nobody reads stdout during a storm: the pipe fills, watch waits, the
    # events queue behind it. SIGINT then: what was not printed is counted in
    # the summary and in a last lost record, and nothing is unaccounted for.
    watch = Watch(tmp_path, "--events", "fork,exit")
    watch.wait_listening()
    parent, children = storm(3000)
    watch.proc.send_signal(signal.SIGINT)
    out, _ = watch.proc.communicate(timeout=hang_guard(30))
    err = watch.stderr()
    assert watch.proc.returncode == 0, err
    objs = [json.loads(line) for line in out.decode().splitlines()]
    printed = [o for o in objs if o["event"] != "lost"]
    forks = sum(1 for o in printed if o["event"] == "fork" and o["parent_tgid"] == parent)
    exits = sum(1 for o in printed if o["event"] == "exit" and o["process_pid"] in children)
    assert forks + exits < 2 * len(children), "no backlog: the pipe took every event"
    last = objs[-1]
    assert last["event"] == "lost" and last["reason"] in ("exit", "enobufs"), last
    missing = sum(o["count"] for o in objs if o["event"] == "lost")
    assert forks + exits + missing >= 2 * len(children), (forks, exits, missing, err)
    unprinted = sum(o["count"] for o in objs if o["event"] == "lost" and o["reason"] == "exit")
    assert f" {unprinted} unprinted at exit" in err and f"kstructs: {len(printed)} events" in err, err


# --- Listener ---
#
# The listener's promises under fork(), forged replies, interrupts, kernel
# drops nobody read, and close() from another thread. Each test below failed
# against the listener before its fix.

LISTENER_TIMEOUT = hang_guard(60.0)  # seconds one of these tests may take: SIGALRM ends it


@contextlib.contextmanager
def alarm(seconds: float = LISTENER_TIMEOUT) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"the test took over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def replies_to(items: list[Item], nonce: int) -> int:
    from kstructs.events import AckEvent

    return sum(1 for e in items if isinstance(e, AckEvent) and e.ack == (nonce + 1) & 0xFFFFFFFF)


def in_child(body: Callable[[], None]) -> int:
    """Run ``body`` in a forked child; its exit status (0: it returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.root
@pytest.mark.parametrize("how", ["close", "with"])
def test_a_child_closing_an_inherited_listener_leaves_the_parent_listening(how: str) -> None:
    # Linux 6.6 keeps the subscription per socket: an IGNORE from the child,
    # on the socket both share, would stop the parent's events.
    with alarm(), Listener() as watcher, Listener() as listener:

        def child() -> None:
            if how == "with":
                with listener:
                    pass
            else:
                listener.close()

        assert in_child(child) == 0
        assert probe_arrives(listener)
        nonce = listener._subscription.nonce
        listener.close()
        seen = drain(watcher, limit=5.0, until=lambda: False)
        assert replies_to(seen, nonce) == 2  # the LISTEN and the parent's IGNORE


@pytest.mark.root
def test_a_child_closing_after_the_parent_sends_no_second_ignore() -> None:
    with alarm(), Listener() as watcher:
        listener = Listener().open()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(go_w)
                os.read(go_r, 1)  # the parent has closed
                listener.close()
                code = 0
            finally:
                os._exit(code)
        os.close(go_r)
        nonce = listener._subscription.nonce
        listener.close()
        assert listener.ignore_sent
        os.write(go_w, b"x")
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        seen = drain(watcher, limit=5.0, until=lambda: False)
        assert replies_to(seen, nonce) == 2  # the LISTEN and one IGNORE


def sent_requests(
    monkeypatch: pytest.MonkeyPatch, around: Callable[[McastRequest], None] | None = None
) -> list[McastRequest]:
    """Log every request a Listener sends (``around`` runs before and after each)."""
    from kstructs import _socket

    sent: list[McastRequest] = []
    real = _socket.send

    def send(sock: socket.socket, message: bytes) -> None:
        request = parse_request(message)
        if around is not None:
            around(request)
        sent.append(request)
        real(sock, message)
        if around is not None:
            around(request)

    monkeypatch.setattr(_socket, "send", send)
    return sent


@pytest.mark.root
def test_the_subscribe_nonce_comes_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from kstructs import _subscription as subscription_module

    sent = sent_requests(monkeypatch)
    with Listener() as a, Listener() as b:
        assert [r.ack for r in sent if r.op == cn_proc.PROC_CN_MCAST_LISTEN] != [a.port_id, b.port_id]

    class Fixed:
        @staticmethod
        def randbits(k: int) -> int:
            assert k == 32
            return 0x5EC2E7

    monkeypatch.setattr(subscription_module, "secrets", Fixed)
    sent.clear()
    with alarm(), Listener():
        pass
    assert [(r.op, r.ack) for r in sent] == [
        (cn_proc.PROC_CN_MCAST_LISTEN, 0x5EC2E7),
        (cn_proc.PROC_CN_MCAST_IGNORE, 0x5EC2E7),  # the IGNORE under the LISTEN's nonce
    ]


@pytest.mark.root
@pytest.mark.parametrize("events", [None, EventKind.FORK], ids=["all", "filtered"])
def test_a_forged_error_reply_does_not_stop_open(monkeypatch: pytest.MonkeyPatch, events: EventKind | None) -> None:
    # A process that knows a request's nonce asks the kernel, under it, for
    # an invalid op: the kernel multicasts its EINVAL replies around ours.
    from kstructs.events import encode_mcast

    forger = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    forger.bind((0, 0))

    def forge(request: McastRequest) -> None:
        if request.op == cn_proc.PROC_CN_MCAST_LISTEN:
            forger.sendto(encode_mcast(0x7F, seq=1, ack=request.ack), (0, 0))

    sent = sent_requests(monkeypatch, forge)
    try:
        with alarm(), Listener(events) as listener:
            assert not listener.closed
            assert probe_arrives(listener)
    finally:
        forger.close()
    assert sent[0].op == cn_proc.PROC_CN_MCAST_LISTEN


@pytest.mark.root
def test_an_error_reply_is_confirmed_under_a_fresh_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    from kstructs._subscription import Exchange, Subscription
    from kstructs.events import AckEvent

    real = Subscription.request
    answers: list[int] = []

    def first_refused(self: Subscription, events: int | None, timeout: float, io: Exchange) -> AckEvent | None:
        ack = real(self, events, timeout, io)
        answers.append(self.nonce)
        if len(answers) == 1 and ack is not None:
            return ack._replace(err=errno.EINVAL)  # a forgery under the first nonce
        return ack

    monkeypatch.setattr(Subscription, "request", first_refused)
    with alarm(), Listener() as listener:
        assert len(answers) == 2 and answers[0] != answers[1]
        assert probe_arrives(listener)

    def always_refused(self: Subscription, events: int | None, timeout: float, io: Exchange) -> AckEvent | None:
        ack = real(self, events, timeout, io)
        return None if ack is None else ack._replace(err=errno.EINVAL)

    monkeypatch.setattr(Subscription, "request", always_refused)
    with alarm(), pytest.raises(OSError, match="refused PROC_CN_MCAST_LISTEN: Invalid argument") as info:
        Listener().open()
    assert info.value.errno == errno.EINVAL


def exits_of(command: str, n: int) -> list[int]:
    """Run ``command`` ``n`` times, one after the other; their pids."""
    pids = []
    for _ in range(n):
        proc = subprocess.Popen([command])
        proc.wait()
        pids.append(proc.pid)
    return pids


@pytest.mark.root
def test_an_interrupt_as_recvmmsg_returns_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # A signal that arrives during recvmmsg() is raised as the call returns,
    # before the caller has the count: the datagrams must still be there.
    from kstructs._receive import Batched
    from kstructs._recvmmsg import Batch

    real = Batch.receive
    interrupted = [False]

    def receive(self: Batch, fd: int, flags: int) -> int:
        n = real(self, fd, flags)
        if n > 0 and not interrupted[0]:
            interrupted[0] = True
            raise KeyboardInterrupt
        return n

    with alarm(), Listener(EventKind.EXIT) as listener:
        assert isinstance(listener._receiver, Batched)
        pids = exits_of("true", 5)
        time.sleep(0.1)  # all five queued: one recvmmsg() takes them
        monkeypatch.setattr(Batch, "receive", receive)
        with pytest.raises(KeyboardInterrupt):
            listener.read()
        assert interrupted[0]
        got: list[Item] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not set(pids) <= {getattr(e, "process_pid", None) for e in got}:
            got += listener.read()
            select.select([listener.fileno()], [], [], 0.05)
        mine = [e.process_pid for e in got if isinstance(e, ExitEvent) and e.process_pid in pids]
        assert mine == pids, (mine, pids)


@pytest.mark.root
def test_drops_nobody_read_are_counted_in_stats_and_at_close() -> None:
    # The reader stops while the queue is full: no ENOBUFS was ever
    # received, yet stats.lost must count the kernel's drops.
    with alarm():
        listener = Listener(EventKind.FORK | EventKind.EXIT, rcvbuf=SMALL_RCVBUF).open()
        try:
            storm(300)
            before = kernel_drops(listener)
            lost = listener.stats.lost
            after = kernel_drops(listener)
            assert before > 0, "the storm did not overflow the receive queue"
            assert before <= lost <= after
            items = listener.read()  # some of what is queued, then stop
            assert len(items) >= 1
            storm(300)
            last = kernel_drops(listener)
        finally:
            listener.close()
        assert listener.stats.lost >= last


@pytest.mark.root
def test_close_from_another_thread_wakes_the_reader() -> None:
    import threading

    with alarm():
        listener = Listener(EventKind.PTRACE).open()  # nothing here ptraces: the reader blocks
        ended: list[str] = []

        def read() -> None:
            try:
                for _ in listener:
                    pass
                ended.append("ended")
            except BaseException as e:  # pragma: no cover - reported below
                ended.append(repr(e))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.3)  # in poll()
        assert reader.is_alive()
        listener.close()
        reader.join(timeout=5)
        assert not reader.is_alive(), "the reader is still blocked after close()"
        assert ended == ["ended"]
        assert listener.closed


# --- Header checker ---
# tools/header_diff.py on hostile header trees and compilers: one line on
# stderr and exit 2 when the check cannot run, never a traceback, never a hang.

HEADER_DIFF = Path(__file__).resolve().parent.parent / "tools" / "header_diff.py"


def header_diff(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """The tool's exit status and raw output bytes (so that odd bytes cannot break the test)."""
    return subprocess.run(
        [sys.executable, str(HEADER_DIFF), *args], capture_output=True, check=False, timeout=120, **kwargs
    )


def cannot_check(done: subprocess.CompletedProcess[bytes]) -> str:
    """The one line a check that cannot run prints, after the exit status is checked."""
    err = done.stderr.decode("utf-8")  # strict: the tool's stderr is UTF-8
    assert (done.returncode, done.stdout) == (2, b""), err
    assert err.startswith("header_diff: cannot check: ") and err.count("\n") == 1 and err.endswith("\n"), err
    return err[len("header_diff: cannot check: ") : -1]


def ran(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """The --json document of a check that ran (exit 0 or 1), nothing on stderr."""
    assert done.stderr == b"", done.stderr.decode(errors="replace")
    assert done.returncode in (0, 1)
    doc: dict[str, Any] = json.loads(done.stdout.decode("utf-8"))
    assert doc["status"] == done.returncode
    return doc


def mismatches(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["category"], f["item"]) for f in doc["findings"] if f["severity"] == "mismatch"}


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def appended(root: Path, text: bytes, header: str = "linux/connector.h") -> Path:
    """A copy of an installed header with ``text`` inserted before its last #endif."""
    original = installed(header).read_bytes()
    at = original.rindex(b"#endif")
    (root / header).parent.mkdir(parents=True, exist_ok=True)
    (root / header).write_bytes(original[:at] + text + b"\n" + original[at:])
    return root


@pytest.mark.cc
@proc_event_align  # its mismatches would include proc_event's alignment
def test_header_diff_a_header_that_prints_at_startup(tmp_path: Path) -> None:
    # Nothing runs: a constructor that prints cannot pass for probe values.
    noise = b'#include <stdio.h>\n__attribute__((constructor)) static void cn_noise(void) { puts("1 0\\n2 1"); }'
    doc = ran(header_diff("--json", "--include-dir", str(appended(tmp_path, noise))))
    assert mismatches(doc) == {("missing-in-binding", "cn_noise")}


@pytest.mark.cc
@proc_event_align  # its mismatches would include proc_event's alignment
def test_header_diff_a_compiler_that_writes_junk(tmp_path: Path) -> None:
    cc = script(
        tmp_path / "junkcc",
        'echo "junk 1 2"; echo "more junk" >&2\n'
        'for a; do [ "$a" = -E ] && exec cc "$@"; done\n'
        'out=; prev=; for a; do [ "$prev" = -o ] && out=$a; prev=$a; done\n'
        'printf "#!/bin/sh\\necho 12 0 junk\\n" > "$out"; chmod +x "$out"\n',
    )
    assert cannot_check(header_diff("--cc", cc)).startswith(
        "the compiler's object file is unreadable: not an ELF file: magic 0x"
    )
    # A compiler that only chatters on stdout is still read right.
    chatty = script(tmp_path / "chattycc", 'echo "junk 3 4"; exec cc "$@"\n')
    assert mismatches(ran(header_diff("--json", "--cc", chatty))) == set()


@pytest.mark.cc
def test_header_diff_non_utf8_define_error_and_compiler_output(tmp_path: Path) -> None:
    include = appended(tmp_path / "define", b'#define CN_ODD_BYTES "\xff\xfe"')
    assert ("missing-in-binding", "CN_ODD_BYTES") in mismatches(
        ran(header_diff("--json", "--include-dir", str(include)))
    )
    include = appended(tmp_path / "error", b"#error odd \xff bytes")
    assert "#error odd \ufffd bytes" in cannot_check(header_diff("--include-dir", str(include)))
    cc = script(tmp_path / "oddcc", "printf 'probe.c:1:1: error: odd \\377\\033[2J bytes\\n' >&2; exit 1\n")
    assert cannot_check(header_diff("--cc", cc)).endswith("odd \ufffd\\x1b[2J bytes")


@pytest.mark.cc
@proc_event_align  # its mismatches would include proc_event's alignment
def test_header_diff_non_utf8_directory_name(tmp_path: Path) -> None:
    root = Path(os.fsdecode(bytes(tmp_path) + b"/odd\xff"))
    include = tree(root, "linux/connector.h", r"#define CN_IDX_PROC(\s+)0x1", r"#define CN_IDX_PROC\g<1>0x3")
    doc = ran(header_diff("--json", "--include-dir", str(include)))
    assert mismatches(doc) == {("value", "CN_IDX_PROC")}
    assert "odd\ufffd" in doc["sources"][0]["description"]


def test_header_diff_unbalanced_quote_in_cc(tmp_path: Path) -> None:
    assert (
        cannot_check(header_diff("--cc", "cc 'x"))
        == 'cannot read the compiler command (--cc) "cc \'x": No closing quotation'
    )
    env = {**os.environ, "CC": 'cc "x'}
    assert cannot_check(header_diff(env=env)) == "cannot read the compiler command ($CC) 'cc \"x': No closing quotation"


@pytest.mark.cc
def test_header_diff_symlink_loop_as_include_dir(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert cannot_check(header_diff("--include-dir", str(tmp_path / "loop"))) == (
        f"include directory not usable: {tmp_path / 'loop'}: symlink loop"
    )


@pytest.mark.cc
@proc_event_align  # its mismatches would include proc_event's alignment
def test_header_diff_version_code_with_a_unicode_digit(tmp_path: Path) -> None:
    (tmp_path / "linux").mkdir()
    (tmp_path / "linux/version.h").write_bytes("#define LINUX_VERSION_CODE \u00b2\n".encode())
    doc = ran(header_diff("--json", "--include-dir", str(tmp_path)))
    assert doc["sources"][0]["linux_version"] is None  # "²" is no version: unknown, not a crash
    assert mismatches(doc) == set()


@pytest.mark.cc
def test_header_diff_no_usable_temporary_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util
    import tempfile

    spec = importlib.util.spec_from_file_location("header_diff_tool", HEADER_DIFF)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/kstructs-tmp")
    assert tool.main([]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "header_diff: cannot check: no usable temporary directory: No such file or directory\n")


@pytest.mark.cc
def test_header_diff_full_temporary_directory(tmp_path: Path) -> None:
    """A temporary directory that takes no more bytes (RLIMIT_FSIZE stands in for a full disk)."""
    import resource

    def full() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    reason = cannot_check(header_diff(env=env, preexec_fn=full))
    assert reason.startswith(f"cannot write the probe to {tmp_path}/kstructs-")
    assert reason.endswith(": File too large")


@pytest.mark.cc
def test_header_diff_hanging_compiler_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    cc = script(tmp_path / "hangcc", f"sleep 600 &\necho $! > {pidfile}\nwait\n")
    assert cannot_check(header_diff("--cc", cc, "--cc-timeout", "1")) == (
        f"the C compiler {cc} took over 1 s (killed; see --cc-timeout)"
    )
    child = int(pidfile.read_text())
    for _ in range(200):  # the orphaned child is reaped by init once killed
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"the compiler's child {child} was left running")
    assert "(default 60)" in header_diff("--help").stdout.decode()


@pytest.mark.cc
def compiler_name() -> str:
    return os.environ.get("CC") or "cc"


def test_header_diff_50_mb_header(tmp_path: Path) -> None:
    decls = b"".join(b"extern int cn_filler_%d;\n" % i for i in range(2_000_000))
    assert len(decls) > 50_000_000
    include = appended(tmp_path, decls)
    assert cannot_check(header_diff("--include-dir", str(include))) == (
        f"the C compiler {compiler_name()} wrote over 0x1000000 bytes to scan.i (killed)"
    )


@pytest.mark.cc
@proc_event_align  # its mismatches would include proc_event's alignment
def test_header_diff_division_by_zero_fails_one_item(tmp_path: Path) -> None:
    include = tree(tmp_path, "linux/connector.h", r"#define CN_IDX_PROC(\s+)0x1", r"#define CN_IDX_PROC\g<1>(1/0)")
    baseline = ran(header_diff("--json"))
    doc = ran(header_diff("--json", "--include-dir", str(include)))
    assert mismatches(doc) == {("compile-error", "CN_IDX_PROC")}
    (gone,) = [f for f in doc["findings"] if f["item"] == "CN_IDX_PROC"]
    assert "not a constant" in gone["note"]
    assert doc["checked"] == baseline["checked"] - 1  # everything else was still compared


def test_header_diff_json_when_the_check_cannot_run() -> None:
    done = header_diff("--json", "--cc", "no-such-cc")
    assert done.returncode == 2
    assert done.stderr == b"header_diff: cannot check: no C compiler: 'no-such-cc' not found\n"
    doc = json.loads(done.stdout.decode("utf-8"))
    assert (doc["status"], doc["conforms"], doc["findings"]) == (2, None, [])
    assert doc["error"] == "no C compiler: 'no-such-cc' not found"
    usage = header_diff("--json", "--cc-timeout", "soon")
    assert usage.returncode == 2
    assert json.loads(usage.stdout)["error"] == "usage: argument --cc-timeout: not a number of seconds: 'soon'"
    assert usage.stderr.decode().count("\n") == 1


@pytest.mark.cc
def test_header_checker_fuzz_short_run() -> None:
    """A short run of bench/fuzz_headers.py: hostile trees and compilers end in findings or CheckError."""
    import importlib.util

    installed("linux/connector.h")  # skips without a compiler or the headers
    bench = Path(__file__).resolve().parent.parent / "bench"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("fuzz_headers", bench / "fuzz_headers.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = module.fuzz(count=12, seconds=60.0, seed=3)
    finally:
        sys.path.remove(str(bench))
    assert result["foreign"] == 0, result.get("first_foreign")
    assert result["inputs"] > 0
    assert result["target"] == "headers"


@pytest.mark.cc
def test_header_diff_junk_line_markers_from_the_preprocessor(tmp_path: Path) -> None:
    # Found by bench/fuzz_headers.py: "\9" is no octal escape.
    cc = script(
        tmp_path / "markercc",
        'for a; do [ "$a" = -E ] && pre=1; done\n'
        '[ -z "$pre" ] && exec cc "$@"\n'
        'out=; prev=; for a; do [ "$prev" = -o ] && out=$a; prev=$a; done\n'
        'printf \'# 1 "\\\\9\\\\377\\\\\\\\/linux/connector.h"\\n#define CN_IDX_PROC 0x1\\n\' > "$out"\n',
    )
    doc = ran(header_diff("--json", "--cc", cc))
    assert "9\ufffd\\" in doc["sources"][0]["description"]


@pytest.mark.root
def test_watch_reports_kernel_drops_behind_a_slow_pipe_at_exit(tmp_path: Path) -> None:
    # A storm larger than the receive queue while stdout is not read: the
    # kernel drops events, and nobody reads the queue to the end to see the
    # overflow. At SIGINT the listener counts the drops (at close); the last
    # lost records and the summary carry them, so every storm event is either
    # printed or counted.
    watch = Watch(tmp_path, "--events", "fork,exit")
    watch.wait_listening()
    parent, children = storm(12000)
    watch.proc.send_signal(signal.SIGINT)
    out, _ = watch.proc.communicate(timeout=hang_guard(60))
    err = watch.stderr()
    assert watch.proc.returncode == 0, err
    objs = [json.loads(line) for line in out.decode().splitlines()]
    forks = sum(1 for o in objs if o["event"] == "fork" and o["parent_tgid"] == parent)
    exits = sum(1 for o in objs if o["event"] == "exit" and o["process_pid"] in children)
    lost = [o for o in objs if o["event"] == "lost"]
    assert forks + exits + sum(o["count"] for o in lost) >= 2 * len(children), (forks, exits, lost, err)
    summary = re.search(r"kstructs: (\d+) events, (\d+) lost \(\d+ ENOBUFS\), (\d+) unprinted at exit", err)
    assert summary is not None, err
    printed, kernel_lost, unprinted = map(int, summary.groups())
    assert printed == len(objs) - len(lost)
    assert sum(o["count"] for o in lost if o["reason"] != "exit") == kernel_lost
    assert sum(o["count"] for o in lost if o["reason"] == "exit") == unprinted


# --- Parser ---
#
# Any buffer parses as its bytes do. Truth: a fork the kernel (Linux 6.18, x86_64)
# sent, captured from a socket, and its fields read off by hand; in the host's byte
# order, each field as a big-endian kernel sends it.

_FORK = native_order(
    "4c000000 0300 0000 70000000 00000000 "  # nlmsghdr: 76 bytes, NLMSG_DONE, seq 0x70
    "01000000 01000000 70000000 00000000 2800 0000 "  # cn_msg: 1:1, seq 0x70, ack 0, len 40
    "01000000 01000000 da1a5e0e6b000000 "  # proc_event: PROC_EVENT_FORK, cpu 1, timestamp_ns
    "d8060000 d8060000 d9060000 d9060000 0000000000000000"  # fork: 1752, 1752 -> 1753, 1753
)
_FORK_EVENT = ForkEvent(0x70, 1, 0x6B0E5E1ADA, 1752, 1752, 1753, 1753)


def test_a_2d_memoryview_parses_as_its_bytes() -> None:
    # Two forks viewed as 76 rows of 2 bytes: len() is 76, the bytes are 152.
    view = memoryview(_FORK + _FORK).cast("B", (76, 2))
    assert parse_events(view) == [_FORK_EVENT, _FORK_EVENT]
    # 2 rows of 76: len() is 2.
    assert parse_events(memoryview(_FORK + _FORK).cast("B", (2, 76))) == [_FORK_EVENT, _FORK_EVENT]


def test_a_wide_format_memoryview_parses_as_its_bytes() -> None:
    # 19 items of 4 bytes: len() is 19; and the first 76 of 152 bytes must not pass for the whole.
    assert parse_events(memoryview(_FORK).cast("I")) == [_FORK_EVENT]
    assert parse_events(memoryview(_FORK + _FORK).cast("I", (19, 2))) == [_FORK_EVENT, _FORK_EVENT]


def test_a_strided_memoryview_parses_as_its_bytes() -> None:
    spread = bytearray(2 * 2 * len(_FORK))
    spread[::2] = _FORK + _FORK
    assert parse_events(memoryview(spread)[::2]) == [_FORK_EVENT, _FORK_EVENT]
    backwards = bytearray(_FORK + _FORK)[::-1]
    assert parse_events(memoryview(backwards)[::-1]) == [_FORK_EVENT, _FORK_EVENT]


def test_a_closed_mmap_raises_parse_error() -> None:
    import mmap

    region = mmap.mmap(-1, len(_FORK))
    region.write(_FORK)
    assert parse_events(region) == [_FORK_EVENT]
    region.close()
    with pytest.raises(ParseError, match="cannot be read"):
        parse_events(region)


def test_a_released_memoryview_raises_parse_error() -> None:
    view = memoryview(_FORK)
    view.release()
    with pytest.raises(ParseError, match="cannot be read"):
        parse_events(view)


def test_a_short_parser_fuzz_finds_nothing_foreign() -> None:
    # bench/fuzz.py parser, bounded: every input parses or raises ParseError,
    # and parses alike as bytes and as other buffers.
    bench = str(Path(__file__).resolve().parent.parent / "bench")
    sys.path.insert(0, bench)
    try:
        import importlib

        fuzz_parser: Any = importlib.import_module("fuzz_parser")
    finally:
        sys.path.remove(bench)
    result = fuzz_parser.fuzz(3000, 60.0, 1)
    assert result["foreign"] == 0, result["findings"]


# --- BTF check ---
# Hostile BTF through both tools: the checker's own member walks once recursed
# on the input's depth, took 2**n steps, or compared every duplicate definition.

BTF_CHECK_TOOLS = {
    "header_diff": [sys.executable, str(Path(__file__).parent.parent / "tools" / "header_diff.py")],
    "check": [sys.executable, "-m", "kstructs", "check", "kstructs.netlink", "kstructs.connector", "kstructs.cn_proc"],
}


def _cb_id_holding(e: Encoder, inner: int) -> None:
    """struct cb_id as the binding has it, plus an unnamed member of type ``inner``."""
    u32 = e.int_("unsigned int", 4)
    e.record("cb_id", 8, [("idx", u32, 0, 0), ("val", u32, 32, 0), ("", inner, 64, 0)])


def _btf_check_blob(case: str) -> tuple[bytes, str]:
    """A hostile blob and the one line its check must end in."""
    e = Encoder()
    if case == "anonymous-member-of-itself":
        _cb_id_holding(e, 3)  # type 3: an anonymous struct whose only member is itself
        e.record("", 4, [("", 3, 0, 0)])
        return e.blob(), "unreadable BTF: BTF type 0x3 contains itself"
    if case == "record-member-of-itself":
        _cb_id_holding(e, 2)
        return e.blob(), "unreadable BTF: BTF type 0x2 contains itself"
    if case == "named-path-blowup":
        # 2**40 different paths a.b.a... under cb_id.
        x = e.int_("int", 4)
        inner = e.record("", 4, [("x", x, 0, 0)])
        for _ in range(40):
            inner = e.record("", 4, [("a", inner, 0, 0), ("b", inner, 0, 0)], union=True)
        _cb_id_holding(e, inner)
        return e.blob(), "unreadable BTF: BTF members of type 0x2c past 0x40000 steps"
    if case == "many-definitions":
        # 5000 cb_ids sharing one anonymous struct of 20000 members: 10**8 steps compared one by one.
        u32 = e.int_("unsigned int", 4)
        big = e.record("", 4, [(f"m{i}", u32, 0, 0) for i in range(20000)])
        for _ in range(5000):
            e.record("cb_id", 8, [("", big, 0, 0)])
        return e.blob(), "unreadable BTF: BTF has 0x1388 definitions of struct cb_id, more than 0x40"
    raise AssertionError(case)


def _run_btf_check(tool: str, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # The timeout bounds a walk that does not end; it is not a speed assertion.
    args = BTF_CHECK_TOOLS[tool] + ["--btf", str(path), *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("tool", sorted(BTF_CHECK_TOOLS))
@pytest.mark.parametrize(
    "case", ["anonymous-member-of-itself", "record-member-of-itself", "named-path-blowup", "many-definitions"]
)
def test_btf_check_hostile_blob_is_one_line_and_exit_2(tmp_path: Path, tool: str, case: str) -> None:
    blob, message = _btf_check_blob(case)
    path = tmp_path / "hostile.btf"
    path.write_bytes(blob)
    done = _run_btf_check(tool, path)
    prog = "header_diff" if tool == "header_diff" else "kstructs check"
    assert (done.returncode, done.stderr) == (2, f"{prog}: cannot check: {message}\n")


@pytest.mark.parametrize("tool", sorted(BTF_CHECK_TOOLS))
@pytest.mark.parametrize("case", ["deep-unnamed-chain", "unnamed-doubling"])
def test_btf_check_deep_and_doubling_anonymous_members(tmp_path: Path, tool: str, case: str) -> None:
    # Valid BTF that once ended in RecursionError (5000 nested unnamed structs)
    # or never ended (2**40 unnamed paths to one member): the check runs, and
    # finds the member the binding lacks at its one path.
    e = Encoder()
    u32 = e.int_("unsigned int", 4)
    inner = e.record("", 4, [("extra", u32, 0, 0)])
    for _ in range(5000 if case == "deep-unnamed-chain" else 40):
        members = [("", inner, 0, 0)] if case == "deep-unnamed-chain" else [("", inner, 0, 0), ("", inner, 0, 0)]
        inner = e.record("", 4, members, union=case == "unnamed-doubling")
    e.record("cb_id", 12, [("idx", u32, 0, 0), ("val", u32, 32, 0), ("", inner, 64, 0)])
    path = tmp_path / "deep.btf"
    path.write_bytes(e.blob())
    done = _run_btf_check(tool, path, "--json")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    doc = json.loads(done.stdout)
    findings = [f for f in doc["findings"] if f["source"] == "btf" and f["item"].startswith("struct cb_id")]
    assert {(f["category"], f["item"], f["c"]) for f in findings} == {
        ("size", "struct cb_id", 12),
        ("missing-in-binding", "struct cb_id.extra", 8),
    }


def test_btf_check_enum_repeating_one_name(tmp_path: Path) -> None:
    # One enum of 60000 enumerators all called PROC_EVENT_FORK: each enum is
    # weighed once (3.6 * 10**9 steps before), and its values compared.
    e = Encoder()
    name = e.name("PROC_EVENT_FORK")
    e.add(Kind.ENUM, "proc_cn_event", 4, vlen=60000, tail=struct.pack("<II", name, 2) * 60000)
    path = tmp_path / "enum.btf"
    path.write_bytes(e.blob())
    done = _run_btf_check("check", path, "--json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    values = [f for f in doc["findings"] if f["source"] == "btf" and f["category"] == "value"]
    assert len(values) == 60000
    assert {(f["item"], f["binding"], f["c"]) for f in values} == {("PROC_EVENT_FORK", 1, 2)}
