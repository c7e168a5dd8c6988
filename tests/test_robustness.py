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
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import datagram
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


def probe_arrives(listener: Listener, timeout: float = 5.0) -> bool:
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
    # - stats.lost is the sum of the Loss values yielded;
    # - afterwards a fresh fork still arrives.
    with Listener(kinds, rcvbuf=SMALL_RCVBUF) as listener:
        parent, children = storm(1000)
        drops_after_storm = kernel_drops(listener)
        got: list[Item] = []

        def reported() -> int:
            return sum(e.count for e in got if isinstance(e, Loss) and e.reason == "enobufs")

        deadline = time.monotonic() + 10
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
        assert listener.stats.lost == lost
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

    def wait_listening(self, timeout: float = 10.0) -> None:
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
    out, _ = watch.proc.communicate(timeout=20)
    forker.wait(timeout=60)
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
    forker.wait(timeout=60)
    more = storm_in_background(200)  # in case the storm fitted in the pipe
    more.wait(timeout=60)
    try:
        status = watch.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        watch.proc.kill()
        raise AssertionError(f"watch kept running after its stdout closed: {watch.stderr()}") from None
    err = watch.stderr()
    assert status in (0, 141), err
    assert "Traceback" not in err
    assert watch.ignores() == 1


# --- Parser ---
#
# Any buffer parses as its bytes do. Truth: a fork the kernel (Linux 6.18)
# sent, captured from a socket, and its fields read off by hand.

_FORK = bytes.fromhex(
    "4c000000 0300 0000 70000000 00000000"  # nlmsghdr: 76 bytes, NLMSG_DONE, seq 0x70
    "01000000 01000000 70000000 00000000 2800 0000"  # cn_msg: 1:1, seq 0x70, ack 0, len 40
    "01000000 01000000 da1a5e0e6b000000"  # proc_event: PROC_EVENT_FORK, cpu 1, timestamp_ns
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
