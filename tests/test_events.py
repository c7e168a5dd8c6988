"""kstructs.events: the parser and the encoders, on bytes only (no kernel)."""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import mmap
import pickle
import struct
import sys
from collections.abc import Callable
from typing import Any

import pytest
from conftest import datagram
from hypothesis import given, settings
from hypothesis import strategies as st

from kstructs import cn_proc, connector, events, netlink
from kstructs.cn_proc import EventKind, proc_event, proc_event__ack
from kstructs.connector import cn_msg
from kstructs.events import (
    KERNEL_EVENT_SIZE,
    PROCESS_EVENTS,
    AckEvent,
    CommEvent,
    CoredumpEvent,
    Event,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    GidEvent,
    KstructsError,
    McastRequest,
    NetlinkErrorMessage,
    Overrun,
    ParseError,
    ProcessEvent,
    PtraceEvent,
    SidEvent,
    UidEvent,
    UnknownEvent,
    _parse_all,
    encode_event,
    encode_ignore,
    encode_listen,
    encode_mcast,
    event_matches,
    parse_events,
    parse_request,
    read_kernel_event,
)
from kstructs.netlink import nlmsghdr

HDR = ctypes.sizeof(nlmsghdr)
CN = ctypes.sizeof(cn_msg)
PE = HDR + CN  # where struct proc_event starts: 36, 4-aligned only
PE_SIZE = ctypes.sizeof(proc_event)

# --- Datagrams built from the layout classes --------------------------------


# One datagram of each kind, with the value each field must decode to.
KINDS: list[tuple[bytes, Event]] = [
    (
        datagram(cn_proc.PROC_EVENT_FORK, "fork", parent_pid=100, parent_tgid=101, child_pid=200, child_tgid=201),
        ForkEvent(77, 1, 0x0102030405060708, 100, 101, 200, 201),
    ),
    (
        datagram(cn_proc.PROC_EVENT_EXEC, "exec", process_pid=300, process_tgid=301),
        ExecEvent(77, 1, 0x0102030405060708, 300, 301),
    ),
    (
        datagram(
            cn_proc.PROC_EVENT_UID,
            "id",
            cn_proc.id_proc_event(5, 6, cn_proc.id_proc_event__r(ruid=1000), cn_proc.id_proc_event__e(euid=0xFFFFFFFE)),
        ),
        UidEvent(77, 1, 0x0102030405060708, 5, 6, 1000, 0xFFFFFFFE),
    ),
    (
        datagram(
            cn_proc.PROC_EVENT_GID,
            "id",
            cn_proc.id_proc_event(5, 6, cn_proc.id_proc_event__r(rgid=7), cn_proc.id_proc_event__e(egid=8)),
        ),
        GidEvent(77, 1, 0x0102030405060708, 5, 6, 7, 8),
    ),
    (
        datagram(cn_proc.PROC_EVENT_SID, "sid", process_pid=9, process_tgid=9),
        SidEvent(77, 1, 0x0102030405060708, 9, 9),
    ),
    (
        datagram(cn_proc.PROC_EVENT_PTRACE, "ptrace", process_pid=10, process_tgid=10, tracer_pid=11, tracer_tgid=12),
        PtraceEvent(77, 1, 0x0102030405060708, 10, 10, 11, 12),
    ),
    (
        datagram(cn_proc.PROC_EVENT_COMM, "comm", process_pid=13, process_tgid=13, comm=b"kworker/0:1"),
        CommEvent(77, 1, 0x0102030405060708, 13, 13, "kworker/0:1"),
    ),
    (
        datagram(cn_proc.PROC_EVENT_COREDUMP, "coredump", process_pid=14, process_tgid=14, parent_pid=1, parent_tgid=1),
        CoredumpEvent(77, 1, 0x0102030405060708, 14, 14, 1, 1),
    ),
    (
        datagram(
            cn_proc.PROC_EVENT_EXIT,
            "exit",
            process_pid=15,
            process_tgid=15,
            exit_code=0x300,
            exit_signal=17,
            parent_pid=1,
            parent_tgid=1,
        ),
        ExitEvent(77, 1, 0x0102030405060708, 15, 15, 0x300, 17, 1, 1),
    ),
    (
        datagram(cn_proc.PROC_EVENT_NONE, "ack", ack=43, err=0),
        AckEvent(77, 43, 1, 0x0102030405060708, 0),
    ),
]


def native_order(fields: str) -> bytes:
    """Little-endian hex, one space-separated group per field, in the host's byte
    order: a big-endian kernel sends each field byte-reversed."""
    return b"".join(f if sys.byteorder == "little" else f[::-1] for f in map(bytes.fromhex, fields.split()))


# A fork the kernel (Linux 6.18, x86_64) sent, as captured from a socket.
KERNEL_FORK = native_order(
    "4c000000 0300 0000 70000000 00000000 "  # nlmsghdr: 76 bytes, NLMSG_DONE, seq 0x70, from port 0
    "01000000 01000000 70000000 00000000 2800 0000 "  # cn_msg: 1:1, seq, ack 0, len 40
    "01000000 01000000 da1a5e0e6b000000 "  # proc_event: PROC_EVENT_FORK, cpu 1, timestamp_ns
    "d8060000 d8060000 d9060000 d9060000 0000000000000000"  # fork: 1752, 1752 -> 1753, 1753
)


@pytest.mark.parametrize(("data", "expected"), KINDS, ids=[type(e).__name__ for _, e in KINDS])
def test_each_kind_decodes_every_field(data: bytes, expected: Event) -> None:
    assert len(data) == HDR + CN + PE_SIZE == 76
    assert parse_events(data) == [expected]


@pytest.mark.parametrize(("data", "expected"), KINDS, ids=[type(e).__name__ for _, e in KINDS])
def test_general_path_agrees_with_fast_path(data: bytes, expected: Event) -> None:
    # A trailing NLMSG_NOOP sends the datagram down the message-by-message path.
    assert parse_events(data + noop()) == [expected]


@pytest.mark.parametrize(("data", "expected"), KINDS, ids=[type(e).__name__ for _, e in KINDS])
def test_in_place_reader_agrees_with_parse_events(data: bytes, expected: Event) -> None:
    # What the listener does with a batch: read a datagram where it sits in a
    # larger buffer. The reply is not a process event: the general path takes it.
    buffer = bytes(100) + data + bytes(50)
    got = read_kernel_event(buffer, 100)
    if isinstance(expected, AckEvent):
        assert got is None
    else:
        assert got == expected


@pytest.mark.parametrize(("data", "expected"), KINDS, ids=[type(e).__name__ for _, e in KINDS])
@pytest.mark.parametrize(
    "wrap", [bytes, bytearray, lambda d: memoryview(d).cast("I")], ids=["bytes", "bytearray", "u32"]
)
def test_a_kernel_event_is_read_without_the_general_path(
    data: bytes, expected: Event, wrap: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # parse_events reads every process event the kernel sends with its own
    # guard, whatever the buffer; only the reply goes message by message.
    general: list[bytes] = []

    def spy(flat: Any) -> list[Event]:
        general.append(bytes(flat))
        return _parse_all(flat)

    monkeypatch.setattr(events, "_parse_all", spy)
    assert parse_events(wrap(data)) == [expected]
    assert general == ([data] if isinstance(expected, AckEvent) else [])


def test_in_place_reader_needs_one_whole_kernel_event() -> None:
    assert read_kernel_event(KERNEL_FORK, 0) == ForkEvent(0x70, 1, 0x6B0E5E1ADA, 1752, 1752, 1753, 1753)
    assert read_kernel_event(KERNEL_FORK[:-1], 0) is None  # one byte short
    assert read_kernel_event(KERNEL_FORK, 1) is None
    assert read_kernel_event(bytes(4) + KERNEL_FORK[:-1], 4) is None
    assert read_kernel_event(b"", 0) is None


def test_a_captured_kernel_datagram() -> None:
    assert parse_events(KERNEL_FORK) == [ForkEvent(0x70, 1, 0x6B0E5E1ADA, 1752, 1752, 1753, 1753)]


def test_proc_event_at_offset_36_is_only_four_aligned() -> None:
    # timestamp_ns is declared aligned(8), yet in the datagram it sits at 44.
    assert PE % 8 == 4
    assert PE + proc_event.timestamp_ns.offset == 44
    (ev,) = parse_events(memoryview(bytearray(KERNEL_FORK)))
    assert isinstance(ev, ForkEvent) and ev.timestamp_ns == 0x6B0E5E1ADA


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_buffers(wrap: Any) -> None:
    assert parse_events(wrap(KERNEL_FORK)) == parse_events(KERNEL_FORK)


def test_non_contiguous_and_wide_memoryviews() -> None:
    spread = bytearray(2 * len(KERNEL_FORK))
    spread[::2] = KERNEL_FORK
    assert parse_events(memoryview(spread)[::2]) == parse_events(KERNEL_FORK)
    assert parse_events(memoryview(KERNEL_FORK).cast("I")) == parse_events(KERNEL_FORK)


def test_comm_stops_at_the_first_nul_and_keeps_odd_bytes() -> None:
    data = datagram(cn_proc.PROC_EVENT_COMM, "comm", process_pid=1, process_tgid=1, comm=b"a\xffb")
    (ev,) = parse_events(data)
    assert isinstance(ev, CommEvent)
    assert ev.comm == "a\udcffb"  # surrogateescape: os.fsencode() gives the bytes back
    assert ev.comm.encode("utf-8", "surrogateescape") == b"a\xffb"
    full = datagram(cn_proc.PROC_EVENT_COMM, "comm", process_pid=1, process_tgid=1, comm=b"0123456789abcdef")
    assert parse_events(full) == [CommEvent(77, 1, 0x0102030405060708, 1, 1, "0123456789abcdef")]


def _comm_of(event: object) -> str:
    assert isinstance(event, CommEvent)
    return event.comm


def test_each_comm_name_is_decoded_once_and_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    # A handful of names recur: every reader decodes a name it has not seen,
    # and then hands out that same str for it.
    monkeypatch.setattr(events, "_COMMS", {})
    data = datagram(cn_proc.PROC_EVENT_COMM, "comm", process_pid=13, process_tgid=13, comm=b"kworker/0:1")
    batch = bytes(8) + data + bytes(8)
    readers: dict[str, Callable[[], object]] = {
        "parse_events": lambda: parse_events(data)[0],
        "read_kernel_event": lambda: read_kernel_event(batch, 8),
        "general path": lambda: parse_events(data + noop())[0],
    }
    for name, read in readers.items():
        monkeypatch.setattr(events, "_COMMS", {})
        first, second = _comm_of(read()), _comm_of(read())
        assert first == "kworker/0:1", name
        assert second is first, name
        assert events._COMMS == {b"kworker/0:1\0\0\0\0\0": "kworker/0:1"}, name


def test_the_comm_cache_holds_at_most_4096_names(monkeypatch: pytest.MonkeyPatch) -> None:
    # Names an attacker can choose (prctl(PR_SET_NAME)) must not grow it without bound.
    def comm(name: bytes, cached: int) -> dict[bytes, str]:
        cache = {i.to_bytes(16, "little"): str(i) for i in range(cached)}
        monkeypatch.setattr(events, "_COMMS", cache)
        data = datagram(cn_proc.PROC_EVENT_COMM, "comm", process_pid=1, process_tgid=1, comm=name)
        assert _comm_of(parse_events(data)[0]) == name.decode()
        return cache

    assert len(comm(b"sh", 4095)) == 4096
    assert comm(b"sh", 4096) == {b"sh" + bytes(14): "sh"}  # full: emptied first


def test_unknown_kind_keeps_the_raw_event_data() -> None:
    data = datagram(0x1000, "exit", process_pid=0x11223344)
    (ev,) = parse_events(data)
    assert ev == UnknownEvent(77, 1, 0x0102030405060708, 0x1000, struct.pack("=i", 0x11223344) + bytes(20))
    assert isinstance(ev, UnknownEvent) and ev.to_dict()["data"] == ev.data.hex()


def test_nonzero_exit_bit_is_a_filter_not_a_kind() -> None:
    (ev,) = parse_events(datagram(cn_proc.PROC_EVENT_NONZERO_EXIT))
    assert isinstance(ev, UnknownEvent) and ev.what == cn_proc.PROC_EVENT_NONZERO_EXIT


# --- Old kernels ------------------------------------------------------------


def test_exit_before_4_18_has_no_parent() -> None:
    # Before Linux 4.18 exit_proc_event ended after exit_signal; before 3.2
    # (no comm) the whole union was 16 bytes: cn_msg.len 32.
    data = datagram(cn_proc.PROC_EVENT_EXIT, "exit", cn_len=32, process_pid=5, process_tgid=5, exit_code=9)
    assert parse_events(data) == [ExitEvent(77, 1, 0x0102030405060708, 5, 5, 9, 0, 0, 0)]


def test_an_exit_before_4_18_after_another_message() -> None:
    # The shorter exit is read where its message starts, not at the datagram's start.
    old_exit = datagram(cn_proc.PROC_EVENT_EXIT, "exit", cn_len=32, process_pid=5, process_tgid=5, exit_code=9)
    fork, expected = KINDS[0]
    assert parse_events(fork + old_exit) == [expected, ExitEvent(77, 1, 0x0102030405060708, 5, 5, 9, 0, 0, 0)]


def test_coredump_before_4_18_has_no_parent() -> None:
    data = datagram(cn_proc.PROC_EVENT_COREDUMP, "coredump", cn_len=24, process_pid=5, process_tgid=6)
    assert parse_events(data) == [CoredumpEvent(77, 1, 0x0102030405060708, 5, 6, 0, 0)]


def test_fork_from_a_kernel_before_3_2() -> None:
    data = datagram(cn_proc.PROC_EVENT_FORK, "fork", cn_len=32, parent_pid=1, parent_tgid=1, child_pid=2, child_tgid=2)
    assert len(data) == 68
    assert parse_events(data) == [ForkEvent(77, 1, 0x0102030405060708, 1, 1, 2, 2)]


def test_a_longer_proc_event_from_a_future_kernel() -> None:
    data = datagram(cn_proc.PROC_EVENT_EXEC, "exec", cn_len=PE_SIZE + 8, process_pid=3, process_tgid=3)
    assert parse_events(data) == [ExecEvent(77, 1, 0x0102030405060708, 3, 3)]


# --- Netlink control messages and several messages per datagram -------------


def control(nl_type: int, payload: bytes = b"", seq: int = 0) -> bytes:
    nl = nlmsghdr(nlmsg_len=netlink.nlmsg_length(len(payload)), nlmsg_type=nl_type, nlmsg_seq=seq)
    return bytes(nl) + payload + bytes(netlink.nlmsg_align(len(payload)) - len(payload))


def noop() -> bytes:
    return control(netlink.NLMSG_NOOP)


def test_several_messages_in_one_datagram() -> None:
    fork, exit_ = KINDS[0], KINDS[8]
    data = fork[0] + noop() + exit_[0]
    assert parse_events(data) == [fork[1], exit_[1]]


def test_noop_alone_is_nothing() -> None:
    assert parse_events(noop()) == []
    assert parse_events(b"") == []


def test_nlmsg_error_and_overrun_are_values() -> None:
    err = netlink.nlmsgerr(error=-111)
    data = control(netlink.NLMSG_ERROR, bytes(err), seq=5) + control(netlink.NLMSG_OVERRUN, seq=6) + KINDS[1][0]
    assert parse_events(data) == [NetlinkErrorMessage(seq=5, error=-111), Overrun(seq=6), KINDS[1][1]]


def test_last_message_may_lack_its_padding() -> None:
    data = datagram(cn_proc.PROC_EVENT_EXEC, "exec", cn_len=PE_SIZE + 1, process_pid=3, process_tgid=3)
    assert len(data) % 4 == 1
    assert parse_events(data) == [ExecEvent(77, 1, 0x0102030405060708, 3, 3)]


# --- Malformed input: ParseError, one line, the offending value in hex --------

FORK = KINDS[0][0]


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


MALFORMED = {
    "trailing bytes": (FORK + b"\0" * 5, "0x5 trailing bytes are shorter than nlmsghdr 0x10"),
    "short header": (b"\x01\x02\x03", "0x3 trailing bytes are shorter than nlmsghdr 0x10"),
    "nlmsg_len too small": (patched(FORK, 0, "=I", 8), "nlmsg_len 0x8 is shorter than nlmsghdr 0x10"),
    "nlmsg_len past end": (patched(FORK, 0, "=I", 0x60), "nlmsg_len 0x60 runs past the datagram end 0x4c"),
    "no room for cn_msg": (
        control(netlink.NLMSG_DONE, b"\0" * 8),
        "nlmsg_len 0x18 is too short for cn_msg (needs 0x24)",
    ),
    "cn_msg.len past end": (patched(FORK, HDR + 16, "=H", 0x40), "cn_msg.len 0x40 runs past the message end 0x4c"),
    "cn_msg.len short": (
        patched(FORK, HDR + 16, "=H", 8),
        "cn_msg.len 0x8 is shorter than the proc_event header 0x10",
    ),
    "cn_msg.len short for kind": (
        datagram(cn_proc.PROC_EVENT_FORK, cn_len=24),
        "cn_msg.len 0x18 is too short for PROC_EVENT_FORK (needs 0x20)",
    ),
    "exit without exit_signal": (
        datagram(cn_proc.PROC_EVENT_EXIT, cn_len=28),
        "cn_msg.len 0x1c is too short for PROC_EVENT_EXIT (needs 0x20)",
    ),
    "foreign idx": (datagram(0, idx=connector.CN_IDX_CIFS), "cn_msg.id 0x2:0x1 is not CN_IDX_PROC:CN_VAL_PROC"),
    "foreign val": (datagram(0, val=7), "cn_msg.id 0x1:0x7 is not CN_IDX_PROC:CN_VAL_PROC"),
    "unknown nlmsg_type": (
        patched(FORK, 4, "=H", netlink.NLMSG_MIN_TYPE),
        "nlmsg_type 0x10 is not NLMSG_DONE or a netlink control type",
    ),
    "short nlmsgerr": (
        control(netlink.NLMSG_ERROR, b"\0" * 4),
        "nlmsg_len 0x14 is too short for nlmsgerr (needs 0x24)",
    ),
    "second message past end": (FORK + FORK[:40], "nlmsg_len 0x4c runs past the datagram end 0x28"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed(case: str) -> None:
    data, message = MALFORMED[case]
    with pytest.raises(ParseError) as info:
        parse_events(data)
    assert str(info.value) == message
    assert "\n" not in message and not message.endswith(".")


def test_parse_error_is_a_value_error_and_a_kstructs_error() -> None:
    assert issubclass(ParseError, ValueError) and issubclass(ParseError, KstructsError)
    with pytest.raises(ParseError) as info:
        parse_events(FORK + FORK[:40])
    assert info.value.offset == 76


# --- Values -----------------------------------------------------------------


def test_events_are_immutable_tuples_with_the_kernel_names() -> None:
    ev = ForkEvent(77, 1, 0x0102030405060708, 100, 101, 200, 201)
    with pytest.raises(AttributeError):
        ev.cpu = 2  # type: ignore[misc]
    assert not hasattr(ev, "__dict__")
    assert (ev.seq, ev.cpu, ev.timestamp_ns, ev.parent_pid, ev.child_tgid) == (77, 1, 0x0102030405060708, 100, 201)
    assert ev == ForkEvent(
        seq=77, cpu=1, timestamp_ns=0x0102030405060708, parent_pid=100, parent_tgid=101, child_pid=200, child_tgid=201
    )
    assert hash(ev) == hash(KINDS[0][1])
    assert ev._replace(cpu=0).cpu == 0
    assert pickle.loads(pickle.dumps(ev)) == ev
    # Parsed instances are ordinary instances of the public class.
    (parsed,) = parse_events(KINDS[0][0])
    assert type(parsed) is ForkEvent and parsed == ev
    with pytest.raises(AttributeError):
        parsed.cpu = 2  # type: ignore[misc]


def test_equality_counts_the_kind() -> None:
    exec_, sid = ExecEvent(1, 2, 3, 4, 4), SidEvent(1, 2, 3, 4, 4)
    assert tuple(exec_) == tuple(sid)
    assert exec_ != sid
    assert (exec_ == sid) is False
    assert len({exec_, sid, ExecEvent(1, 2, 3, 4, 4)}) == 2
    assert exec_ != (1, 2, 3, 4, 4)
    assert (exec_ != ExecEvent(1, 2, 3, 4, 4)) is False
    assert (exec_ != sid) is True
    assert exec_.__ne__(object()) is NotImplemented
    assert exec_.__eq__(object()) is NotImplemented


@pytest.mark.parametrize("cls", list(PROCESS_EVENTS.values()))
def test_fields_start_with_seq_cpu_timestamp(cls: type[ProcessEvent]) -> None:
    # The order of the datagram: cn_msg.seq, then proc_event.cpu and .timestamp_ns.
    assert cls._fields[:3] == ("seq", "cpu", "timestamp_ns")
    assert cls.what in set(EventKind)


def test_cli_names_and_kernel_bits() -> None:
    assert list(PROCESS_EVENTS) == ["fork", "exec", "uid", "gid", "sid", "ptrace", "comm", "coredump", "exit"]
    assert PROCESS_EVENTS["coredump"].what == cn_proc.PROC_EVENT_COREDUMP


@pytest.mark.parametrize(("data", "expected"), KINDS, ids=[type(e).__name__ for _, e in KINDS])
def test_to_dict_has_exactly_the_json_keys(data: bytes, expected: Event) -> None:
    d = expected.to_dict()
    assert list(d) == ["event", *expected._fields]
    assert d["event"] == expected.event
    assert json.loads(json.dumps(d)) == d


# --- event_matches: the kernel's cn_filter() ---------------------------------

EXIT0 = ExitEvent(0, 0, 0, 1, 1, 0, 17, 0, 0)
EXIT3 = ExitEvent(0, 0, 0, 1, 1, 0x300, 17, 0, 0)
ACK = AckEvent(0, 1, 0, 0, 0)


@pytest.mark.parametrize(
    ("kinds", "event", "passes"),
    [
        (EventKind.FORK, KINDS[0][1], True),
        (EventKind.FORK, KINDS[1][1], False),
        (EventKind.EXIT, EXIT0, True),
        (EventKind.NONZERO_EXIT, EXIT0, False),
        (EventKind.NONZERO_EXIT, EXIT3, True),
        (EventKind.NONZERO_EXIT | EventKind.EXIT, EXIT0, True),
        (EventKind.FORK, ACK, False),
        (cn_proc.PROC_EVENT_ALL, ACK, True),
        (0, ACK, True),  # the kernel reads an empty mask as "all"
        (EventKind.FORK, NetlinkErrorMessage(0, -1), True),
        (EventKind.FORK, UnknownEvent(0, 0, 0, 0x400, b""), False),
        (0x400, UnknownEvent(0, 0, 0, 0x400, b""), True),
    ],
)
def test_event_matches_mirrors_cn_filter(kinds: int, event: Event, passes: bool) -> None:
    assert event_matches(event, kinds) is passes


# --- Encoders ---------------------------------------------------------------


def test_listen_is_the_bare_op() -> None:
    assert encode_listen(seq=1, ack=0x1234, port_id=99) == native_order(
        "28000000 0300 0000 01000000 63000000 "  # nlmsghdr: 40 bytes, NLMSG_DONE, seq 1, port 99
        "01000000 01000000 01000000 34120000 0400 0000 "  # cn_msg: 1:1, seq 1, ack, len 4
        "01000000"  # PROC_CN_MCAST_LISTEN
    )


def test_listen_with_events_is_a_proc_input() -> None:
    data = encode_listen(EventKind.FORK | EventKind.EXIT)
    assert len(data) == HDR + CN + ctypes.sizeof(cn_proc.proc_input) == 44
    assert data[PE:] == struct.pack("=II", cn_proc.PROC_CN_MCAST_LISTEN, 0x80000001)
    assert struct.unpack_from("=H", data, HDR + 16) == (8,)  # cn_msg.len tells the kernel which


def test_ignore() -> None:
    assert encode_ignore()[PE:] == struct.pack("=I", cn_proc.PROC_CN_MCAST_IGNORE)
    filtered = encode_ignore(filtered=True)
    assert filtered[PE:] == struct.pack("=II", cn_proc.PROC_CN_MCAST_IGNORE, cn_proc.PROC_EVENT_ALL)


def test_requests_round_trip() -> None:
    assert parse_request(encode_listen(ack=5, seq=6, port_id=7)) == McastRequest(1, None, 6, 5, 7)
    assert parse_request(encode_listen(EventKind.EXEC)) == McastRequest(1, cn_proc.PROC_EVENT_EXEC, 0, 0, 0)
    assert parse_request(encode_mcast(cn_proc.PROC_CN_MCAST_IGNORE)).op == cn_proc.PROC_CN_MCAST_IGNORE
    with pytest.raises(ParseError, match=r"^cn_msg\.len 0x2 is neither a u32 op nor a proc_input 0x8$"):
        parse_request(patched(encode_listen(), HDR + 16, "=H", 2))


def test_a_request_is_not_an_event() -> None:
    with pytest.raises(ParseError, match=r"^cn_msg\.len 0x4 is shorter than the proc_event header 0x10$"):
        parse_events(encode_listen())


# --- Properties -------------------------------------------------------------

s32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
head = {"cpu": u32, "timestamp_ns": u64, "seq": u32}
comm = st.binary(max_size=16).map(lambda b: b.split(b"\0")[0].decode("utf-8", "surrogateescape"))

EVENTS = st.one_of(
    st.builds(ForkEvent, **head, parent_pid=s32, parent_tgid=s32, child_pid=s32, child_tgid=s32),
    st.builds(ExecEvent, **head, process_pid=s32, process_tgid=s32),
    st.builds(UidEvent, **head, process_pid=s32, process_tgid=s32, ruid=u32, euid=u32),
    st.builds(GidEvent, **head, process_pid=s32, process_tgid=s32, rgid=u32, egid=u32),
    st.builds(SidEvent, **head, process_pid=s32, process_tgid=s32),
    st.builds(PtraceEvent, **head, process_pid=s32, process_tgid=s32, tracer_pid=s32, tracer_tgid=s32),
    st.builds(CommEvent, **head, process_pid=s32, process_tgid=s32, comm=comm),
    st.builds(CoredumpEvent, **head, process_pid=s32, process_tgid=s32, parent_pid=s32, parent_tgid=s32),
    st.builds(
        ExitEvent,
        **head,
        process_pid=s32,
        process_tgid=s32,
        exit_code=u32,
        exit_signal=u32,
        parent_pid=s32,
        parent_tgid=s32,
    ),
    st.builds(AckEvent, **head, ack=u32, err=u32),
    st.builds(
        UnknownEvent,
        **head,
        what=u32.filter(lambda w: w not in {0, *(c.what for c in PROCESS_EVENTS.values())}),
        data=st.binary(max_size=64),
    ),
)


@given(EVENTS)
def test_encode_then_parse_round_trips(event: ProcessEvent | AckEvent | UnknownEvent) -> None:
    data = encode_event(event)
    assert parse_events(data) == [event]
    assert parse_events(data + bytes(-len(data) % 4) + noop()) == [event]


@given(st.lists(EVENTS, min_size=1, max_size=4))
def test_several_events_round_trip(events: list[ProcessEvent | AckEvent | UnknownEvent]) -> None:
    data = b"".join(encode_event(e) + b"\0" * (-len(encode_event(e)) % 4) for e in events)
    assert parse_events(data) == events


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_events(data)


@settings(max_examples=300, deadline=None)  # a loaded machine is not a bug
@given(EVENTS, st.data())
def test_mutated_datagrams_only_raise_parse_error(event: ProcessEvent | AckEvent | UnknownEvent, data: Any) -> None:
    raw = bytearray(encode_event(event))
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(["flip", "cut", "grow", "field"]))
        if how == "flip" and raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
        elif how == "cut":
            del raw[data.draw(st.integers(0, len(raw))) :]
        elif how == "grow":
            raw += data.draw(st.binary(min_size=1, max_size=40))
        elif how == "field" and len(raw) >= PE:
            # Lengths and ids are where the parser has to be careful.
            offset, fmt = data.draw(
                st.sampled_from([(0, "=I"), (4, "=H"), (HDR, "=I"), (HDR + 4, "=I"), (HDR + 16, "=H")])
            )
            struct.pack_into(fmt, raw, offset, data.draw(st.integers(0, 2 ** (8 * struct.calcsize(fmt)) - 1)))
    try:
        events = parse_events(bytes(raw))
    except ParseError:
        return
    for ev in events:
        assert isinstance(ev.to_dict(), dict)


def _outcome(parse: Any, data: Any) -> object:
    try:
        return parse(data)
    except ParseError as e:
        return ("ParseError", str(e))


def _spread(data: bytes, step: int) -> memoryview:
    """A strided view whose bytes, in order, are ``data``."""
    room = bytearray(max(1, len(data) * step))
    room[::step] = data
    return memoryview(room)[::step]


class _Bytes(bytes):
    pass


def buffer_types(data: bytes) -> dict[str, Any]:
    """The same bytes in at least 16 kinds of buffer: flat, wide formats,
    2-D (C-contiguous and not), strided, reversed, ctypes, array, mmap."""
    n = len(data)
    views: dict[str, Any] = {
        "bytes": data,
        "bytes subclass": _Bytes(data),
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "memoryview of bytearray": memoryview(bytearray(data)),
        "memoryview slice": memoryview(b"\xff" * 5 + data + b"\xee" * 3)[5 : 5 + n],
        "memoryview 'c'": memoryview(data).cast("c"),
        "memoryview 'b'": memoryview(data).cast("b"),
        "array 'B'": array.array("B", data),
        "array 'b'": array.array("b", data),
        "ctypes c_ubyte array": (ctypes.c_ubyte * n).from_buffer_copy(data) if n else bytearray(),
        "ctypes c_char array": (ctypes.c_char * n).from_buffer_copy(data) if n else bytearray(),
        "strided": _spread(data, 2),
        "strided by 3": _spread(data, 3),
        "reversed": memoryview(bytearray(data[::-1]))[::-1],
    }
    for fmt, size in (("H", 2), ("I", 4), ("Q", 8)):
        if n and n % size == 0:
            wide: Any = memoryview(data)  # a format typeshed's overloads do not list as a variable
            views[f"memoryview '{fmt}'"] = wide.cast(fmt)
            views[f"array '{fmt}'"] = array.array(fmt, data)
    for rows in (2, 4):
        if n and n % rows == 0:
            flat = memoryview(data).cast("B")
            views[f"2-D ({rows}, {n // rows})"] = flat.cast("B", (rows, n // rows))
            views[f"2-D ({n // rows}, {rows})"] = flat.cast("B", (n // rows, rows))
    if n:
        # A 2-D view that is not contiguous: every other row of a (2n, 1) view.
        room = bytearray(2 * n)
        room[::2] = data
        views["2-D strided rows"] = memoryview(room).cast("B", (2 * n, 1))[::2]
        region = mmap.mmap(-1, n)
        region.write(data)
        views["mmap"] = region
    return views


@settings(max_examples=150, deadline=None)
@given(st.lists(EVENTS, min_size=1, max_size=4), st.integers(0, 3), st.binary(max_size=8))
def test_fast_path_general_path_and_bytes_agree_for_every_buffer(
    events: list[ProcessEvent | AckEvent | UnknownEvent], cut: int, tail: bytes
) -> None:
    # The fast reader, the general parser and plain bytes must never disagree,
    # whatever the buffer: a 2-D view is measured in bytes, not rows.
    data = b"".join(encode_event(e) + b"\0" * (-len(encode_event(e)) % 4) for e in events)
    data = data[: len(data) - cut] + tail
    expected = _outcome(_parse_all, data)
    fast = read_kernel_event(data, 0) if len(data) == KERNEL_EVENT_SIZE else None
    if fast is not None:
        assert expected == [fast]
    views = buffer_types(data)
    assert len(views) >= 16
    for name, view in views.items():
        assert _outcome(parse_events, view) == expected, name


def test_every_buffer_type_of_a_kernel_fork() -> None:
    views = buffer_types(KERNEL_FORK)
    assert len(views) >= 16
    for name, view in views.items():
        assert parse_events(view) == [ForkEvent(0x70, 1, 0x6B0E5E1ADA, 1752, 1752, 1753, 1753)], name


# --- The parser's tables, rebuilt here from the layouts ----------------------
#
# The tables are built at import; rebuilding them in a test lets a wrong
# builder fail here. Truth: the datagram layout by hand (nlmsghdr at 0, cn_msg
# at 16: id 16, seq 24, ack 28, len 32, flags 34; proc_event at 36: what 36,
# cpu 40, timestamp_ns 44, event_data 52), as struct formats.

KIND_TABLE = [
    # what, class, member, fields, optional; full format, short format, minimum cn_msg.len
    (0x0, AckEvent, proc_event__ack, "ack", ["err"], 0, "=24xII8xIQI", "=24xII8xIQI", 20),
    (
        0x1,
        ForkEvent,
        cn_proc.fork_proc_event,
        "fork",
        ["parent_pid", "parent_tgid", "child_pid", "child_tgid"],
        0,
        "=24xI12xIQiiii",
        "=24xI12xIQiiii",
        32,
    ),
    (
        0x2,
        ExecEvent,
        cn_proc.exec_proc_event,
        "exec",
        ["process_pid", "process_tgid"],
        0,
        "=24xI12xIQii",
        "=24xI12xIQii",
        24,
    ),
    (
        0x40,
        GidEvent,
        cn_proc.id_proc_event,
        "id",
        ["process_pid", "process_tgid", "r.rgid", "e.egid"],
        0,
        "=24xI12xIQiiII",
        "=24xI12xIQiiII",
        32,
    ),
    (
        0x200,
        CommEvent,
        cn_proc.comm_proc_event,
        "comm",
        ["process_pid", "process_tgid", "comm"],
        0,
        "=24xI12xIQii16s",
        "=24xI12xIQii16s",
        40,
    ),
    (
        0x40000000,
        CoredumpEvent,
        cn_proc.coredump_proc_event,
        "coredump",
        ["process_pid", "process_tgid", "parent_pid", "parent_tgid"],
        2,
        "=24xI12xIQiiii",
        "=24xI12xIQii",
        24,
    ),
    (
        0x80000000,
        ExitEvent,
        cn_proc.exit_proc_event,
        "exit",
        ["process_pid", "process_tgid", "exit_code", "exit_signal", "parent_pid", "parent_tgid"],
        2,
        "=24xI12xIQiiIIii",
        "=24xI12xIQiiII",
        32,
    ),
]


@pytest.mark.parametrize("row", KIND_TABLE, ids=[r[3] + str(r[0]) for r in KIND_TABLE])
def test_a_kind_rebuilt_from_the_layouts(row: tuple[Any, ...]) -> None:
    what, cls, member, prefix, paths, optional, full, short, minimum = row
    kind = events._Kind(cls, member, prefix, paths, optional=optional)
    assert (kind.full.format, kind.short.format, kind.minimum) == (full, short, minimum)
    assert kind.missing == (0,) * optional
    assert kind.comm == (cls is CommEvent)
    assert kind.cls is cls and cls.what == what
    names = {0x0: "NONE", 0x1: "FORK", 0x2: "EXEC", 0x40: "GID", 0x200: "COMM", 0x40000000: "COREDUMP"}
    assert kind.name == "PROC_EVENT_" + names.get(what, "EXIT")


def test_a_kind_whose_fields_do_not_follow_the_member_is_refused() -> None:
    with pytest.raises(AssertionError, match="do not follow"):
        events._Kind(ExecEvent, cn_proc.exec_proc_event, "exec", ["process_tgid", "process_pid"])


def test_struct_formats_rebuilt_from_the_layouts() -> None:
    assert events._struct(0, [events._nl("nlmsg_len"), events._nl("nlmsg_type")]).format == "=IH"
    assert events._struct(0, [events._cn("id.idx"), events._cn("id.val"), events._cn("len")]).format == "=16xII8xH"
    assert events._struct(0, [events._pe("what")]).format == "=36xI"
    assert events._struct(0, [events._member(netlink.nlmsgerr, "error")]).format == "=i"
    assert events._span(events._nl("nlmsg_len"), events._nl("nlmsg_flags")) == (0, ctypes.c_uint64)
    assert events._span(events._cn("len"), events._cn("flags")) == (32, ctypes.c_uint32)
    assert events._member(cn_msg, "id.val") == (4, ctypes.c_uint32)
    assert events._pe("event_data.exit.exit_signal") == (64, ctypes.c_uint32)
    assert events._code(ctypes.c_uint16) == "H" and events._code(ctypes.c_int32) == "i"
    assert events._code(ctypes.c_uint64) == "Q" and events._code(ctypes.c_char * 16) == "16s"
    with pytest.raises(AssertionError, match="overlaps"):
        events._struct(0, [events._pe("cpu"), events._pe("what")])


def test_the_fast_table_rebuilt_from_the_layouts() -> None:
    # Eight bytes read as one native 64-bit word: nlmsg_len 76, nlmsg_type NLMSG_DONE and
    # nlmsg_flags 0; CN_IDX_PROC and CN_VAL_PROC; cn_msg.len 40, cn_msg.flags 0 and what.
    def word(fmt: str, *fields: int) -> int:
        return int.from_bytes(struct.pack(fmt, *fields), sys.byteorder)

    head, ident = word("=IHH", 76, 3, 0), word("=II", 1, 1)

    def kind(what: int) -> int:
        return word("=HHI", 40, 0, what)

    got_head, got_ident, kinds, comm = events._fast_table()
    assert (got_head, got_ident, comm) == (head, ident, kind(0x200))
    want: dict[int, type[ProcessEvent]] = {
        kind(0x1): ForkEvent,
        kind(0x2): ExecEvent,
        kind(0x4): UidEvent,
        kind(0x40): GidEvent,
        kind(0x80): SidEvent,
        kind(0x100): PtraceEvent,
        kind(0x4000_0000): CoredumpEvent,
        kind(0x8000_0000): ExitEvent,
    }
    if sys.byteorder == "little":
        assert (head, ident, kind(0x8000_0000)) == (0x3_0000_004C, 0x1_0000_0001, 0x8000_0000_0000_0028)
    else:
        assert (head, ident, kind(0x8000_0000)) == (0x4C_0003_0000, 0x1_0000_0001, 0x28_0000_8000_0000)
    assert {key: cls for key, (_, cls) in kinds.items()} == want
    assert events._FAST_GUARD(KERNEL_FORK, 0) == (head, ident, kind(0x1))  # a captured fork
    assert set(events._INT_KINDS) == {0x1, 0x2, 0x4, 0x40, 0x80, 0x100, 0x40000000, 0x80000000}


# --- Requests, byte for byte -------------------------------------------------

# PROC_CN_MCAST_IGNORE as a bare op, seq 6, ack 5, port 7, written out by hand.
IGNORE_6_5_7 = native_order(
    "28000000 0300 0000 06000000 07000000 "  # nlmsghdr: 40 bytes, NLMSG_DONE, seq 6, port 7
    "01000000 01000000 06000000 05000000 0400 0000 "  # cn_msg: 1:1, seq 6, ack 5, len 4
    "02000000"  # PROC_CN_MCAST_IGNORE
)


def test_requests_byte_for_byte() -> None:
    assert encode_ignore(seq=6, ack=5, port_id=7) == IGNORE_6_5_7
    assert encode_mcast(cn_proc.PROC_CN_MCAST_IGNORE, seq=6, ack=5, port_id=7) == IGNORE_6_5_7
    zero = encode_mcast(cn_proc.PROC_CN_MCAST_LISTEN)
    assert zero == native_order(
        "28000000 0300 0000 00000000 00000000 01000000 01000000 00000000 00000000 0400 0000 01000000"
    )
    assert encode_ignore(seq=6, ack=5, port_id=7, filtered=True)[:HDR] == native_order(
        "2c000000 0300 0000 06000000 07000000"
    )
    assert parse_request(IGNORE_6_5_7) == McastRequest(2, None, 6, 5, 7)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (IGNORE_6_5_7[:36], r"^nlmsg_len 0x28 runs past the datagram end 0x24$"),  # the headers, no op
        (IGNORE_6_5_7[:35], r"^request length 0x23 is shorter than nlmsghdr and cn_msg 0x24$"),
        (patched(IGNORE_6_5_7, 0, "=I", 0x29), r"^nlmsg_len 0x29 runs past the datagram end 0x28$"),
        (patched(IGNORE_6_5_7, 4, "=H", 2), r"^nlmsg_type 0x2 is not NLMSG_DONE$"),
        (patched(IGNORE_6_5_7, HDR, "=I", 2), r"^cn_msg\.id 0x2:0x1 is not CN_IDX_PROC:CN_VAL_PROC$"),
        (patched(IGNORE_6_5_7, HDR + 4, "=I", 2), r"^cn_msg\.id 0x1:0x2 is not CN_IDX_PROC:CN_VAL_PROC$"),
        (patched(IGNORE_6_5_7, HDR + 16, "=H", 5), r"^cn_msg\.len 0x5 runs past the message end 0x28$"),
    ],
)
def test_malformed_requests(data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_request(data)


def test_nonzero_exit_bit_alone_passes_only_nonzero_exits() -> None:
    exit0 = ExitEvent(1, 0, 0, 5, 5, 0, 17, 1, 1)
    exit3 = ExitEvent(1, 0, 0, 5, 5, 0x300, 17, 1, 1)
    fork = ForkEvent(1, 0, 0, 1, 1, 2, 2)
    assert event_matches(exit3, 0x20000000) and not event_matches(exit0, 0x20000000)
    assert not event_matches(fork, 0x20000000)
    assert not event_matches(exit3, 0x1)  # only fork: the exit_code does not matter


def test_unknown_event_to_dict_literal() -> None:
    event = UnknownEvent(7, 1, 0x10, 0x1000, b"\x01\xab")
    assert event.to_dict() == {"event": "unknown", "seq": 7, "cpu": 1, "timestamp_ns": 16, "what": 4096, "data": "01ab"}
