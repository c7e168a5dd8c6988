"""kstructs.stream without a socket: literal datagrams in, events and losses out.

Every datagram here is packed by the test itself from the kernel's layouts
as ``include/uapi/linux/{netlink,connector,cn_proc}.h`` give them (the
numbers below are those headers'), never by the code under test.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from kstructs.events import (
    AckEvent,
    CommEvent,
    ExitEvent,
    ForkEvent,
    NetlinkErrorMessage,
    Overrun,
    UnknownEvent,
)
from kstructs.stream import EventStream, Item, ListenerStats, Loss

# <linux/netlink.h>
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
# <linux/connector.h>
CN_IDX_PROC = CN_VAL_PROC = 1
# <linux/cn_proc.h>
NONE, FORK, EXEC, COMM, EXIT = 0, 0x1, 0x2, 0x200, 0x80000000
NONZERO_EXIT = 0x20000000
# struct nlmsghdr (16 bytes), struct cn_msg (20), struct proc_event (16 + a 24-byte union)
NLMSGHDR = struct.Struct("=IHHII")
CN_MSG = struct.Struct("=IIIIHH")
HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
EVENT_DATA = 24
KERNEL_EVENT = 16 + 20 + 16 + EVENT_DATA  # 76: what the kernel sends
MSG_TRUNC = 0x20  # <bits/socket.h>
STRIDE = 128  # room per datagram in a batch buffer


def message(payload: bytes, *, nl_type: int = NLMSG_DONE, cn_id: tuple[int, int] = (CN_IDX_PROC, CN_VAL_PROC)) -> bytes:
    cn = CN_MSG.pack(*cn_id, 0, 0, len(payload), 0) + payload if nl_type == NLMSG_DONE else payload
    return NLMSGHDR.pack(16 + len(cn), nl_type, 0, 0, 0) + cn


def event(what: int, seq: int, cpu: int, data: bytes, ts: int = 1000) -> bytes:
    """A datagram as the kernel sends it (cn_msg.seq: the per-CPU counter)."""
    payload = HEAD.pack(what, cpu, ts) + data.ljust(EVENT_DATA, b"\0")
    raw = bytearray(message(payload))
    struct.pack_into("=I", raw, 16 + 8, seq)
    return bytes(raw)


def fork(seq: int = 1, cpu: int = 0, child: int = 200) -> bytes:
    return event(FORK, seq, cpu, struct.pack("=4I", 100, 100, child, child))


def exit_(seq: int = 1, cpu: int = 0, pid: int = 200, code: int = 0) -> bytes:
    return event(EXIT, seq, cpu, struct.pack("=6I", pid, pid, code, 17, 100, 100))


def comm(seq: int = 1, cpu: int = 0, name: bytes = b"kid") -> bytes:
    return event(COMM, seq, cpu, struct.pack("=II16s", 200, 200, name))


def ack(ack_value: int, err: int = 0, seq: int = 1, cpu: int = 0) -> bytes:
    raw = bytearray(event(NONE, seq, cpu, struct.pack("=I", err)))
    struct.pack_into("=I", raw, 16 + 12, ack_value)
    return bytes(raw)


def take(stream: EventStream, *datagrams: bytes, sender: int = 0) -> list[Item]:
    out: list[Item] = []
    for d in datagrams:
        stream.receive(sender, False, d, out)
    return out


def batch(*datagrams: bytes | tuple[int, bytes]) -> tuple[bytearray, list[tuple[tuple[int, int], tuple[int], int]]]:
    """A buffer with one datagram every STRIDE bytes, as recvmmsg() fills one,
    and its frames; a (sender, bytes) pair comes from that sender."""
    buf = bytearray(STRIDE * len(datagrams))
    frames = []
    for i, d in enumerate(datagrams):
        sender, data = d if isinstance(d, tuple) else (0, d)
        buf[i * STRIDE : i * STRIDE + len(data)] = data
        frames.append(((0, len(data)), (sender,), i * STRIDE))
    return buf, frames


def take_batch(stream: EventStream, *datagrams: bytes | tuple[int, bytes]) -> list[Item]:
    out: list[Item] = []
    buf, frames = batch(*datagrams)
    stream.receive_frames(buf, frames, out)
    return out


def take_kernel(stream: EventStream, *datagrams: bytes) -> list[Item]:
    """The fast path: a batch of whole kernel-sized datagrams from the kernel."""
    assert all(len(d) == KERNEL_EVENT for d in datagrams)
    out: list[Item] = []
    buf, _ = batch(*datagrams)
    stream.receive_kernel(buf, range(0, len(datagrams) * STRIDE, STRIDE), out)
    return out


@pytest.fixture(params=["one", "batch", "kernel"])
def feed(request: pytest.FixtureRequest) -> Iterator[str]:
    """The ways datagrams reach a stream: one by one (recvfrom), in a batch
    view (recvmmsg), and a batch of kernel-sized datagrams from the kernel
    (the fast path), when they all are."""
    yield request.param


def fed(how: str, stream: EventStream, *datagrams: bytes) -> list[Item]:
    if how == "one":
        return take(stream, *datagrams)
    if how == "kernel" and all(len(d) == KERNEL_EVENT for d in datagrams):
        return take_kernel(stream, *datagrams)
    return take_batch(stream, *datagrams)


# --- Parsing and the sender check -----------------------------------------------


def test_a_kernel_event(feed: str) -> None:
    s = EventStream()
    assert fed(feed, s, fork(seq=7, cpu=1)) == [ForkEvent(7, 1, 1000, 100, 100, 200, 200)]
    assert (s.stats.received, s.stats.events, s.stats.rejected) == (1, 1, 0)


def test_events_the_fast_reader_leaves_to_the_parser(feed: str) -> None:
    s = EventStream()
    assert fed(feed, s, comm(seq=1), event(0x12345678, 2, 0, b"\x01\x02")) == [
        CommEvent(1, 0, 1000, 200, 200, "kid"),
        UnknownEvent(2, 0, 1000, 0x12345678, b"\x01\x02".ljust(EVENT_DATA, b"\0")),
    ]
    assert s.stats.received == 2


def test_two_messages_in_one_datagram() -> None:
    s = EventStream()
    assert take(s, fork(seq=1) + exit_(seq=2)) == [
        ForkEvent(1, 0, 1000, 100, 100, 200, 200),
        ExitEvent(2, 0, 1000, 200, 200, 0, 17, 100, 100),
    ]
    assert s.stats.received == 1


def test_a_foreign_sender_is_rejected(feed: str) -> None:
    s = EventStream()
    out = take(s, fork(), sender=4242) if feed == "one" else take_batch(s, (4242, fork()))
    assert out == []
    assert (s.stats.foreign, s.stats.rejected, s.stats.received, s.stats.malformed) == (1, 1, 0, 0)


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x02\x03",  # shorter than nlmsghdr
        message(HEAD.pack(FORK, 0, 0) + bytes(EVENT_DATA), cn_id=(2, 1)),  # not CN_IDX_PROC
        message(b"", nl_type=0x10),  # neither NLMSG_DONE nor a control type
        fork()[:-1] + b"",  # nlmsg_len past the end
    ],
    ids=["short", "cn-id", "nl-type", "cut"],
)
def test_malformed(feed: str, data: bytes) -> None:
    s = EventStream()
    assert fed(feed, s, data, fork(seq=2)) == [ForkEvent(2, 0, 1000, 100, 100, 200, 200)]
    assert (s.stats.malformed, s.stats.rejected, s.stats.received, s.stats.foreign) == (1, 1, 2, 0)


def test_a_kernel_event_with_a_foreign_connector_id_is_malformed() -> None:
    # The length of a kernel event, the wrong id: the fast reader must not take it.
    data = bytearray(fork())
    struct.pack_into("=I", data, 16, 7)
    s = EventStream()
    assert take_batch(s, bytes(data)) == []
    assert s.stats.malformed == 1


def test_truncated(feed: str) -> None:
    s = EventStream()
    out: list[Item] = []
    if feed == "one":
        s.receive(0, True, fork(), out)
    else:
        buf, _ = batch(fork())
        s.receive_frames(buf, [((MSG_TRUNC, KERNEL_EVENT), (0,), 0)], out)
    assert out == []
    assert (s.stats.malformed, s.stats.rejected, s.stats.received) == (1, 1, 1)


def test_a_truncated_datagram_of_another_length() -> None:
    s = EventStream()
    buf, _ = batch(comm())
    out: list[Item] = []
    s.receive_frames(buf, [((MSG_TRUNC, 40), (0,), 0)], out)
    assert out == [] and s.stats.malformed == 1


def test_netlink_control_messages_pass_and_carry_no_sequence() -> None:
    s = EventStream()
    error = NLMSGHDR.pack(36, NLMSG_ERROR, 0, 9, 0) + struct.pack("=i", -22) + NLMSGHDR.pack(16, 0, 0, 0, 0)
    overrun = NLMSGHDR.pack(16, NLMSG_OVERRUN, 0, 5, 0)
    noop = NLMSGHDR.pack(16, NLMSG_NOOP, 0, 0, 0)
    assert take(s, fork(seq=1), error, overrun, noop, fork(seq=2)) == [
        ForkEvent(1, 0, 1000, 100, 100, 200, 200),
        NetlinkErrorMessage(9, -22),
        Overrun(5),
        ForkEvent(2, 0, 1000, 100, 100, 200, 200),
    ]


class Interrupting(list[Item]):
    """An output list that raises KeyboardInterrupt as its second item comes."""

    def append(self, item: Item) -> None:
        if len(self) == 1:
            raise KeyboardInterrupt
        super().append(item)


def test_batch_offsets_and_an_interrupted_batch() -> None:
    s = EventStream()
    s.offset = -STRIDE
    buf, frames = batch(fork(seq=1), fork(seq=2), fork(seq=3))

    out = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        s.receive_frames(buf, frames, out)
    assert s.offset == STRIDE  # the second datagram was in hand
    assert s.stats.received == 2 and s.stats.events == 1
    rest: list[Item] = []
    s.receive_frames(buf, frames[2:], rest)
    assert rest == [ForkEvent(3, 0, 1000, 100, 100, 200, 200)] and s.offset == 2 * STRIDE
    s.receive_frames(buf, [], rest)
    assert s.offset == 2 * STRIDE  # nothing taken: unchanged


def test_the_fast_path_equals_the_general_path() -> None:
    # The same kernel-sized datagrams, by receive_kernel and by receive_frames:
    # the same values, statistics, reply, offset and pause.
    bad_id = bytearray(fork(9))
    struct.pack_into("=I", bad_id, 16, 7)
    datagrams = [fork(1), ack(0x1235, seq=2), comm(3), bytes(bad_id), event(0x12345678, 4, 0, b"\x05"), exit_(7)]
    datagrams += [exit_(8, code=1 << 8), fork(1, cpu=1), ack(0x4444, seq=9)]
    for events in (None, EXIT, NONZERO_EXIT | FORK):
        fast, general = EventStream(events, linger=0.004), EventStream(events, linger=0.004)
        for s in (fast, general):
            s.set_rcvbuf(4 * 1024 * 18)  # room for 18 events: 9 in 1 ms means 2 ms
            s.expect_ack(0x1234)
            s.pause(0.0)
        buf, frames = batch(*datagrams)
        fast_out: list[Item] = []
        general_out: list[Item] = []
        fast.receive_kernel(buf, range(0, len(datagrams) * STRIDE, STRIDE), fast_out)
        general.receive_frames(buf, frames, general_out)
        assert fast_out == general_out and Loss(2, "seq-gap", 0) in fast_out
        assert fast.stats == general.stats and fast.stats.malformed == 1
        assert fast.ack == general.ack == AckEvent(2, 0x1235, 0, 1000, 0)
        assert fast.offset == general.offset == (len(datagrams) - 1) * STRIDE
        fast.drained([])
        general.drained([])
        assert fast.pause(0.001) == general.pause(0.001) == pytest.approx(0.002)


def test_the_fast_path_counts() -> None:
    s = EventStream(FORK)
    out = take_kernel(s, fork(1), exit_(2), ack(9, seq=3), comm(4), fork(5), fork(7))
    fork_of = [ForkEvent(seq, 0, 1000, 100, 100, 200, 200) for seq in (1, 5, 7, 10)]
    assert out == [fork_of[0], fork_of[1], Loss(1, "seq-gap", 0), fork_of[2]]
    assert s.stats == ListenerStats(received=6, events=4, filtered=3, lost=1)
    assert s.backlog is True
    assert take_kernel(s, ack(9, seq=8), fork(10)) == [Loss(1, "seq-gap", 0), fork_of[3]]
    assert s.stats == ListenerStats(received=8, events=6, filtered=4, lost=2)


def test_the_fast_path_reads_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    # Kernel events of a kind the filter keeps need neither the parser nor event_matches().
    from kstructs import stream as stream_module

    def unused(*args: object) -> bool:
        raise AssertionError("not on the fast path")

    s = EventStream(FORK | EXIT)
    s.drained([])
    assert s.backlog is False
    monkeypatch.setattr(stream_module, "parse_events", unused)
    monkeypatch.setattr(stream_module, "event_matches", unused)
    monkeypatch.setattr(s, "receive_frames", unused)  # the general path
    out = take_kernel(s, fork(1), exit_(2), fork(3))
    assert [type(x) for x in out] == [ForkEvent, ExitEvent, ForkEvent] and s.backlog is True
    assert [type(v) for v in (s.stats.received, s.stats.events, s.offset)] == [int, int, int]
    assert (s.stats.received, s.stats.events, s.offset) == (3, 3, 2 * STRIDE)
    # The general path reads whole kernel events in place too.
    g = EventStream(FORK | EXIT)
    assert take_batch(g, fork(1), exit_(2)) == out[:2] and g.stats.received == 2


def test_the_fast_path_from_the_middle_of_a_batch_and_of_none() -> None:
    s = EventStream()
    buf, _ = batch(fork(1), fork(2), fork(3))
    out: list[Item] = []
    s.receive_kernel(buf, range(STRIDE, 3 * STRIDE, STRIDE), out)
    assert [x.seq for x in out if isinstance(x, ForkEvent)] == [2, 3] and s.offset == 2 * STRIDE
    s.receive_kernel(buf, range(STRIDE, STRIDE, STRIDE), out)
    assert s.offset == 2 * STRIDE and s.stats.received == 2 and s.stats.events == 2


@pytest.mark.parametrize("where", ["fast", "general"])
def test_an_interrupted_fast_batch(where: str) -> None:
    s = EventStream()
    s.offset = -STRIDE
    second = fork(seq=2) if where == "fast" else ack(7, seq=2)  # a reply takes the general path
    buf, _ = batch(fork(seq=1), second, fork(seq=3))

    out = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        s.receive_kernel(buf, range(0, 3 * STRIDE, STRIDE), out)
    assert s.offset == STRIDE  # the second datagram was in hand
    assert s.stats.received == 2 and s.stats.events == 1
    rest: list[Item] = []
    s.receive_kernel(buf, range(2 * STRIDE, 3 * STRIDE, STRIDE), rest)
    assert rest == [ForkEvent(3, 0, 1000, 100, 100, 200, 200)] and s.offset == 2 * STRIDE
    assert s.stats.received == 3 and s.stats.events == 2


def test_counts() -> None:
    s = EventStream()
    take_batch(s, fork(seq=1), (9, fork(seq=2)), b"junk", fork(seq=2))
    assert s.stats == ListenerStats(received=3, events=2, rejected=2, foreign=1, malformed=1)


# --- Sequence gaps --------------------------------------------------------------


def test_per_cpu_sequence_gaps(feed: str) -> None:
    s = EventStream()
    out = fed(feed, s, fork(1, cpu=0), fork(50, cpu=1), fork(2, cpu=0), fork(51, cpu=1), fork(5, cpu=0))
    assert out[-2:] == [Loss(2, "seq-gap", 0), ForkEvent(5, 0, 1000, 100, 100, 200, 200)]
    assert [x for x in out if isinstance(x, Loss)] == [Loss(2, "seq-gap", 0)]
    assert s.stats.lost == 2 and s.stats.events == 6
    assert fed(feed, s, fork(53, cpu=1))[0] == Loss(1, "seq-gap", 1)
    assert s.stats.lost == 3


def test_a_gap_of_one() -> None:
    s = EventStream()
    assert take(s, fork(1), fork(3))[1] == Loss(1, "seq-gap", 0)


def test_no_gap_across_a_wrap_a_restart_or_a_repeat() -> None:
    s = EventStream()
    out = take(s, fork(0xFFFFFFFE), fork(0xFFFFFFFF), fork(0), fork(1), fork(1), fork(0x7FFFFFF0))
    assert Loss(0x7FFFFFEE, "seq-gap", 0) in out
    s = EventStream()
    out = take(s, fork(0xFFFFFFFF), fork(1))  # 0 went missing across the wrap
    assert out[1] == Loss(1, "seq-gap", 0)
    s = EventStream()
    assert not [x for x in take(s, fork(100), fork(50), fork(0x80000064)) if isinstance(x, Loss)]


def test_a_gap_just_under_half_the_counter_is_a_loss() -> None:
    s = EventStream()
    assert take(s, fork(0), fork(0x80000000))[1] == Loss(0x7FFFFFFF, "seq-gap", 0)
    s = EventStream()
    assert len(take(s, fork(0), fork(0x80000001))) == 2  # a step back, not a loss


def test_a_reply_before_linux_6_6_carries_no_cpu() -> None:
    # cpu = -1, seq echoing the request's: never a gap.
    s = EventStream()
    out = take(s, ack(5, cpu=0xFFFFFFFF, seq=1), ack(5, cpu=0xFFFFFFFF, seq=9))
    assert [type(x) for x in out] == [AckEvent, AckEvent]
    assert s.stats.lost == 0


def test_no_gaps_under_a_kernel_filter(feed: str) -> None:
    s = EventStream(EXIT)
    fed(feed, s, exit_(seq=1))
    s.kernel_filters()
    assert s.stats.kernel_filter
    out = fed(feed, s, exit_(seq=9), exit_(seq=30))
    assert [type(x) for x in out] == [ExitEvent, ExitEvent]
    assert s.stats.lost == 0


# --- ENOBUFS and drops ----------------------------------------------------------


def test_enobufs_then_drained_with_the_kernels_count() -> None:
    s = EventStream()
    out = take(s, fork(1))
    assert not s.overflowing
    s.enobufs(out)
    assert s.overflowing and s.stats.enobufs == 1
    out += take(s, fork(4))  # 2 and 3 dropped: the overflow's Loss counts them
    assert not [x for x in out if isinstance(x, Loss)]
    s.drained(out, 2)
    assert out[-1] == Loss(2, "enobufs", None)
    assert not s.overflowing and s.stats.lost == 2 and s.stats.events == 3
    s.drained(out, 2)  # no new overflow: nothing more
    assert out[-1] == Loss(2, "enobufs", None) and s.stats.lost == 2


def test_more_gaps_than_drops() -> None:
    s = EventStream()
    out = take(s, fork(1))
    s.enobufs(out)
    out += take(s, fork(10))
    s.drained(out, 3)
    assert out[-2:] == [Loss(3, "enobufs", None), Loss(5, "seq-gap", None)]
    assert s.stats.lost == 8


def test_drops_whose_gaps_show_later() -> None:
    # Dropped events of a CPU that stayed quiet: its gap shows after the report.
    s = EventStream()
    out = take(s, fork(1, cpu=0), fork(1, cpu=1))
    s.enobufs(out)
    out += take(s, fork(3, cpu=0))
    s.drained(out, 5)  # 1 gap seen on cpu 0, 4 more to come
    assert out[-1] == Loss(5, "enobufs", None)
    out += take(s, fork(4, cpu=1), fork(5, cpu=1))  # cpu 1 shows 2 of the 4
    assert out[-1] == ForkEvent(5, 1, 1000, 100, 100, 200, 200)
    out += take(s, fork(6, cpu=0))  # cpu 0: 2 more, all credited
    out += take(s, fork(8, cpu=0))  # cpu 0: one more than credited
    assert out[-2] == Loss(1, "seq-gap", 0)
    assert s.stats.lost == 6


def test_enobufs_without_the_kernels_count() -> None:
    s = EventStream()
    out: list[Item] = []
    s.enobufs(out)
    s.drained(out, None)
    assert out == [Loss(1, "enobufs", None)]  # at least one was dropped
    take(s, fork(1))
    s.enobufs(out)
    out += take(s, fork(5))
    s.drained(out, None)
    assert out[-1] == Loss(2, "enobufs", None)  # the gaps seen, less the one already reported
    assert s.stats.lost == 3 and s.stats.enobufs == 2
    s = EventStream()
    take(s, fork(1))
    s.enobufs(out)
    out += take(s, fork(5))
    s.drained(out, None)
    assert out[-1] == Loss(3, "enobufs", None)


def test_a_second_enobufs_reports_the_first() -> None:
    s = EventStream()
    out: list[Item] = []
    s.enobufs(out, None)
    assert out == []
    s.enobufs(out, 7)
    assert out == [Loss(7, "enobufs", None)]
    assert s.overflowing and s.stats.enobufs == 2
    s.drained(out, 10)
    assert out[-1] == Loss(3, "enobufs", None) and s.stats.lost == 10


def test_an_overflow_already_reported() -> None:
    s = EventStream()
    out: list[Item] = []
    s.enobufs(out)
    s.drained(out, 4)
    s.enobufs(out)
    s.drained(out, 4)  # the counter read late took them the first time
    assert out == [Loss(4, "enobufs", None)]
    assert s.stats.lost == 4


def test_a_drop_count_that_goes_back_reports_nothing() -> None:
    s = EventStream()
    out: list[Item] = []
    s.enobufs(out)
    s.drained(out, 4)
    s.enobufs(out)
    s.drained(out, 2)
    s.enobufs(out)
    s.drained(out, 5)
    assert out == [Loss(4, "enobufs", None), Loss(1, "enobufs", None)]


def test_drops_counted_before_their_loss_is_reported() -> None:
    s = EventStream()
    out: list[Item] = []
    s.kernel_drops(0)
    assert s.stats.lost == 0
    s.kernel_drops(6)  # the reader stopped with the queue full
    assert s.stats.lost == 6 and out == []
    s.kernel_drops(9)
    assert s.stats.lost == 9
    s.enobufs(out)
    s.drained(out, 10)
    assert out == [Loss(10, "enobufs", None)]
    assert s.stats.lost == 10  # not 19
    s.kernel_drops(10)
    assert s.stats.lost == 10


def test_drops_counted_then_reported_in_two_overflows() -> None:
    s = EventStream()
    out: list[Item] = []
    s.kernel_drops(5)
    s.enobufs(out)
    s.drained(out, 3)  # a count read before the last drops: 3 of the 5
    assert s.stats.lost == 5
    s.enobufs(out)
    s.drained(out, 8)
    assert out == [Loss(3, "enobufs", None), Loss(5, "enobufs", None)] and s.stats.lost == 8


# --- Replies --------------------------------------------------------------------


def test_the_reply_to_our_request(feed: str) -> None:
    s = EventStream()
    s.expect_ack(0x1234)
    assert s.ack is None
    out = fed(feed, s, ack(0x1235), ack(0x9999), fork(2))
    assert s.ack == AckEvent(1, 0x1235, 0, 1000, 0)
    assert out == [AckEvent(1, 0x9999, 0, 1000, 0), ForkEvent(2, 0, 1000, 100, 100, 200, 200)]


def test_a_success_is_kept_over_an_error() -> None:
    s = EventStream()
    s.expect_ack(0xFFFFFFFF)  # the reply's ack wraps to 0
    take(s, ack(0, err=22), ack(0, err=0, seq=2), ack(0, err=1, seq=3))
    assert s.ack is not None and (s.ack.err, s.ack.seq) == (0, 2)
    s.expect_ack(7)
    take(s, ack(8, err=22, seq=4), ack(8, err=1, seq=5))
    assert s.ack is not None and (s.ack.err, s.ack.seq) == (22, 4)


def test_no_reply_expected() -> None:
    s = EventStream()
    s.expect_ack(3)
    s.expect_ack(None)
    assert take(s, ack(4)) == [AckEvent(1, 4, 0, 1000, 0)] and s.ack is None


def test_a_reply_counts_in_the_sequence() -> None:
    # Linux 6.6 sends replies from the per-CPU counter: no gap around ours.
    s = EventStream()
    s.expect_ack(1)
    out = take(s, fork(1), ack(2, seq=2), fork(3))
    assert [type(x) for x in out] == [ForkEvent, ForkEvent]


# --- The user-space filter ------------------------------------------------------


def test_user_space_filter(feed: str) -> None:
    s = EventStream(EXIT)
    assert s.events == EXIT
    out = fed(feed, s, fork(1), exit_(2), comm(3), ack(9, seq=4), event(0x12345678, 5, 0, b""))
    assert out == [ExitEvent(2, 0, 1000, 200, 200, 0, 17, 100, 100)]
    assert s.stats.filtered == 4 and s.stats.events == 1


def test_nonzero_exit_filter(feed: str) -> None:
    s = EventStream(NONZERO_EXIT)
    out = fed(feed, s, exit_(1, code=0), exit_(2, code=3 << 8), fork(3))
    assert out == [ExitEvent(2, 0, 1000, 200, 200, 3 << 8, 17, 100, 100)]
    assert s.stats.filtered == 2


def test_the_filter_keeps_control_messages_and_losses() -> None:
    s = EventStream(FORK)
    overrun = NLMSGHDR.pack(16, NLMSG_OVERRUN, 0, 5, 0)
    out = take(s, exit_(1), overrun, exit_(5))
    assert out == [Overrun(5), Loss(3, "seq-gap", 0)]


def test_every_kind_means_no_filter() -> None:
    everything = 0x1 | 0x2 | 0x4 | 0x40 | 0x80 | 0x100 | 0x200 | 0x40000000 | 0x80000000 | NONZERO_EXIT
    s = EventStream(everything)
    assert s.events is None
    assert len(take(s, fork(1), ack(9, seq=2))) == 2
    assert EventStream(0).events is None  # no valid bit: everything


def test_a_filter_of_several_kinds(feed: str) -> None:
    s = EventStream(FORK | COMM)
    assert [type(x) for x in fed(feed, s, fork(1), exit_(2), comm(3))] == [ForkEvent, CommEvent]


# --- Pacing ---------------------------------------------------------------------


def paced(rcvbuf: int, linger: float) -> EventStream:
    s = EventStream(linger=linger)
    s.set_rcvbuf(rcvbuf)
    assert s.stats.rcvbuf == rcvbuf
    return s


def after(s: EventStream, datagrams: int, seconds: float, *, drained: bool = True) -> float:
    """pause() after ``datagrams`` arrived over ``seconds``."""
    start = 100.0
    s.pause(start)
    take(s, *(fork(i + 1) for i in range(datagrams)))
    if drained:
        s.drained([])
    return s.pause(start + seconds)


def test_pause() -> None:
    # 128 KiB of queue: a quarter holds 32 events of 1 KiB.
    s = paced(131072, 0.004)
    assert after(s, 1, 0.010) == 0.004  # 100 events/s: a full linger is safe
    # 10,000 events/s: 32 events in 3.2 ms
    assert after(s, 100, 0.010) == pytest.approx(0.0032)
    assert after(s, 320, 0.010) == pytest.approx(0.001)  # just a millisecond
    assert after(s, 400, 0.010) == 0  # under one: not at all
    assert after(s, 1, 0.010, drained=False) == 0  # the read left some queued
    assert after(s, 0, 0.010) == 0.004  # nothing came
    assert paced(16 << 20, 0.004).pause(1.0) == 0.004
    assert after(paced(32 << 20, 0.004), 100, 0.001) == 0.004  # seconds of room
    assert after(paced(131072, 0), 1, 0.010) == 0
    assert paced(131072, 0.004).backlog is False


def test_pause_counts_foreign_datagrams_too() -> None:
    s = paced(131072, 0.004)
    s.pause(100.0)
    take(s, *(fork(i + 1) for i in range(100)), sender=5)
    s.drained([])
    assert s.pause(100.01) == pytest.approx(0.0032)


def test_pause_counts_since_the_last_call() -> None:
    s = paced(131072, 0.004)
    s.pause(100.0)
    take(s, *(fork(i + 1) for i in range(100)))
    s.drained([])
    s.pause(100.01)
    s.drained([])
    assert s.pause(100.02) == 0.004  # the hundred were counted once


def test_linger_must_not_be_negative() -> None:
    for bad in (-0.001, float("nan")):
        with pytest.raises(ValueError, match="linger must be a non-negative number of seconds"):
            EventStream(linger=bad)
    s = EventStream(linger=0)
    with pytest.raises(ValueError, match=r"seconds: -1\b"):
        s.linger = -1
    s.linger = 0.5
    assert s.linger == 0.5


def test_loss_values() -> None:
    assert Loss(12, "enobufs").to_dict() == {"event": "lost", "count": 12, "reason": "enobufs", "cpu": None}
    assert Loss(3, "seq-gap", 1).to_dict()["cpu"] == 1
    assert Loss.event == "lost"


# --- What mutation testing asked for ----------------------------------------------


def test_a_fresh_stream() -> None:
    s = EventStream()
    assert s.ack is None and s.offset == 0 and s.overflowing is False and s.backlog is False
    buf, _ = batch(fork())
    s.receive_frames(buf, [], [])
    assert s.offset == 0 and s.stats == ListenerStats()


def test_counts_add_up_within_and_across_calls() -> None:
    s = EventStream()
    noop = NLMSGHDR.pack(16, NLMSG_NOOP, 0, 0, 0)
    take_batch(s, (9, fork(1)), (9, fork(2)), b"junk", b"junk", noop, fork(3))
    take_batch(s, (9, fork(9)), b"junk", fork(4))
    assert s.stats == ListenerStats(received=6, events=2, rejected=6, foreign=3, malformed=3)


def test_a_batch_goes_on_after_a_truncated_a_malformed_and_an_empty_datagram() -> None:
    s = EventStream()
    noop = NLMSGHDR.pack(16, NLMSG_NOOP, 0, 0, 0)
    buf, frames = batch(fork(1), comm(1), b"junk", noop, fork(2))
    frames[0] = ((MSG_TRUNC, KERNEL_EVENT), (0,), 0)
    frames[1] = ((MSG_TRUNC, 40), (0,), STRIDE)
    out: list[Item] = []
    s.receive_frames(buf, frames, out)
    assert out == [ForkEvent(2, 0, 1000, 100, 100, 200, 200)]
    assert s.stats.malformed == 3 and s.offset == 4 * STRIDE


def test_gaps_during_an_overflow_add_up() -> None:
    s = EventStream()
    out = take(s, fork(1, cpu=0), fork(1, cpu=1))
    s.enobufs(out)
    out += take(s, fork(4, cpu=0), fork(4, cpu=1))  # 2 + 2 gaps
    s.drained(out, 3)
    assert out[-2:] == [Loss(3, "enobufs"), Loss(1, "seq-gap")]
    assert s.stats.lost == 4


def test_credit_from_two_overflows_adds_up() -> None:
    s = EventStream()
    out = take(s, fork(1, cpu=0), fork(1, cpu=1))
    s.enobufs(out)
    s.drained(out, 2)
    s.enobufs(out)
    s.drained(out, 4)
    assert out[2:] == [Loss(2, "enobufs"), Loss(2, "enobufs")]
    out += take(s, fork(6, cpu=1))  # 4 missing on cpu 1: the credit of both
    assert out[-1] == ForkEvent(6, 1, 1000, 100, 100, 200, 200) and s.stats.lost == 4
    out += take(s, fork(3, cpu=0))
    assert out[-2] == Loss(1, "seq-gap", 0)


def test_pause_from_a_fresh_stream() -> None:
    # The clock starts at 0; 1024 datagrams in 32 ms, a quarter of 128 KiB
    # (32 events) lasts exactly 1 ms.
    s = paced(131072, 0.004)
    take(s, *(fork(i + 1) for i in range(1024)))
    s.drained([])
    assert s.pause(0.032) == 0.001
    assert s.backlog is False and s.overflowing is False
    s.enobufs([])
    s.drained([], 0)
    assert s.overflowing is False


def test_pause_of_one_datagram_is_rate_limited() -> None:
    s = paced(16384, 0.01)  # room for 4 events
    s.pause(0.5)
    take(s, fork(1))
    s.drained([])
    assert s.pause(0.501) == pytest.approx(0.004)


def test_pause_without_a_receive_buffer_is_zero() -> None:
    s = EventStream(linger=0.004)
    take(s, fork(1))
    s.drained([])
    assert s.pause(1.0) == 0


def test_one_datagram_in_any_buffer_is_its_bytes() -> None:
    s = EventStream()
    two = fork(1) + fork(2)
    out: list[Item] = []
    s.receive(0, False, memoryview(two).cast("B", (76, 2)), out)
    s.receive(0, False, memoryview(bytearray(fork(3) + fork(4))[::-1])[::-1], out)
    assert [x.seq for x in out if isinstance(x, ForkEvent)] == [1, 2, 3, 4]
