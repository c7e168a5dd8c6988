"""kstructs._receive without a kernel: which stream call each receiver makes
of what a system call returned, the fallback after an error, and the drop
count read from literal /proc/net/netlink text."""

from __future__ import annotations

import errno
import io
import os
import socket
from collections.abc import Iterable, Iterator, MutableSequence
from typing import Any, cast

import pytest

from kstructs import _receive
from kstructs._receive import RECV_SIZE, Batched, Single, drops_in
from kstructs._recvmmsg import Batch
from kstructs.stream import EventStream, FlatBuffer, Frame, Item

# /proc/net/netlink as Linux 6.18 writes it (net/netlink/af_netlink.c, netlink_seq_show()).
# (Each line ends in the padding of "%-8lu\n".)
PROC_NET_NETLINK = "".join(
    f"{line}\n"
    for line in (
        "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode",
        "00000000a2d54a6a 0   0          00000000 0        0        0     2        0        4       ",
        "00000000c61a0c29 11  4026531840 00000001 0        0        0     2        17       91234   ",
        "00000000753860cc 4   0          00000000 0        0        0     2        3        492     ",
    )
)


class Recording(EventStream):
    """A stream that notes how it was fed instead of reading the datagrams."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, ...]] = []

    def receive(self, sender: int, truncated: bool, data: Any, out: MutableSequence[Item]) -> None:
        self.calls.append(("receive", sender, truncated, bytes(data)))

    def receive_kernel(self, buffer: FlatBuffer, offsets: range, out: MutableSequence[Item]) -> None:
        self.calls.append(("kernel", offsets))

    def receive_frames(self, buffer: FlatBuffer, frames: Iterable[Frame], out: MutableSequence[Item]) -> None:
        self.calls.append(("frames", list(frames)))


class FakeBatch:
    """What ``Batched`` uses of a ``Batch``: slots of 100 bytes, ``n`` filled."""

    size = 100

    def __init__(self, n: int, sender: int | None) -> None:
        self.n, self.sender = n, sender
        self.cleared: list[int] = []
        self.view = memoryview(bytearray(8 * self.size))
        self.flags: list[int] = []

    def receive(self, fd: int, flags: int) -> int:
        assert fd == 42
        self.flags.append(flags)
        return self.n

    def filled(self) -> int:
        return self.n

    def uniform(self, n: int) -> int | None:
        return self.sender

    def frames(self, n: int) -> Iterator[Frame]:
        return iter([((0, 30), (7,), i * self.size) for i in range(n)])

    def clear(self, n: int) -> None:
        self.cleared.append(n)
        self.n = 0


class FakeSocket:
    def __init__(self, *answers: tuple[int, int, bytes] | OSError) -> None:
        self.answers = list(answers)
        self.flags: list[int] = []

    def fileno(self) -> int:
        return 42

    def recvfrom_into(self, buffer: bytearray, nbytes: int, flags: int) -> tuple[int, tuple[int, int]]:
        self.flags.append(flags)
        answer = self.answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        length, sender, data = answer
        buffer[: len(data)] = data
        return length, (sender, 0)


def batched(n: int, sender: int | None) -> tuple[Batched, FakeBatch]:
    fake = FakeBatch(n, sender)
    return Batched(cast(socket.socket, FakeSocket()), cast(Batch, fake)), fake


def test_a_batch_of_kernel_events_is_one_call_of_the_fast_path() -> None:
    receiver, fake = batched(3, 0)
    stream = Recording()
    assert receiver.receive(stream, []) == 3
    assert stream.calls == [("kernel", range(0, 300, 100))]
    assert fake.cleared == [3] and fake.flags == [socket.MSG_DONTWAIT]
    assert stream.offset == -100  # none of the batch taken: the fast path moves it on


@pytest.mark.parametrize("sender", [None, 7], ids=["mixed", "foreign"])
def test_any_other_batch_goes_by_its_frames(sender: int | None) -> None:
    receiver, fake = batched(2, sender)
    stream = Recording()
    assert receiver.receive(stream, []) == 2
    assert stream.calls == [("frames", [((0, 30), (7,), 0), ((0, 30), (7,), 100)])]
    assert fake.cleared == [2]


def test_an_error_takes_nothing() -> None:
    receiver, fake = batched(-errno.EAGAIN, 0)
    stream = Recording()
    assert receiver.receive(stream, []) == -errno.EAGAIN
    assert stream.calls == [] and fake.cleared == []


@pytest.mark.parametrize("sender", [0, None], ids=["kernel", "frames"])
def test_an_interrupted_batch_resumes_after_the_datagram_in_hand(sender: int | None) -> None:
    receiver, fake = batched(4, sender)
    stream = Recording()
    stream.offset = 100  # the second datagram was being taken
    assert receiver.resume(stream, [])
    expected = ("kernel", range(200, 400, 100)) if sender == 0 else ("frames", [((0, 30), (7,), i) for i in (200, 300)])
    assert stream.calls == [expected] and fake.cleared == [4]
    assert not receiver.resume(stream, [])  # nothing left
    assert len(stream.calls) == 1


def test_an_interrupt_in_the_stream_leaves_the_batch_marked_full() -> None:
    class Interrupted(Recording):
        def receive_kernel(self, buffer: FlatBuffer, offsets: range, out: MutableSequence[Item]) -> None:
            raise KeyboardInterrupt

    receiver, fake = batched(2, 0)
    with pytest.raises(KeyboardInterrupt):
        receiver.receive(Interrupted(), [])
    assert fake.cleared == [] and fake.filled() == 2


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EPERM])
def test_a_refused_recvmmsg_falls_back_to_recvfrom(err: int) -> None:
    receiver, _ = batched(0, 0)
    other = receiver.fallback(err)
    assert isinstance(other, Single) and other.sock is receiver.sock


@pytest.mark.parametrize("err", [errno.EAGAIN, errno.ENOBUFS, errno.EINTR, errno.EBADF])
def test_other_errors_stand(err: int) -> None:
    receiver, _ = batched(0, 0)
    assert receiver.fallback(err) is None
    assert Single(cast(socket.socket, FakeSocket())).fallback(err) is None


def test_recvfrom_takes_one_datagram_and_tells_truncation() -> None:
    full, longer = b"y" * RECV_SIZE, b"x" * RECV_SIZE
    sock = FakeSocket(
        (5, 0, b"hello"), (RECV_SIZE, 0, full), (RECV_SIZE + 1, 9, longer), OSError(errno.EAGAIN, "again")
    )
    receiver, stream = Single(cast(socket.socket, sock)), Recording()
    assert not receiver.resume(stream, [])
    assert [receiver.receive(stream, []) for _ in range(4)] == [1, 1, 1, -errno.EAGAIN]
    assert stream.calls == [
        ("receive", 0, False, b"hello"),
        ("receive", 0, False, full),  # the largest the connector sends, whole
        ("receive", 9, True, longer),  # MSG_TRUNC: its real length, one byte more than fitted
    ]
    assert sock.flags == [socket.MSG_DONTWAIT | socket.MSG_TRUNC] * 4


def test_an_oserror_without_errno_is_eio() -> None:
    receiver = Single(cast(socket.socket, FakeSocket(OSError("no errno"))))
    assert receiver.receive(Recording(), []) == -errno.EIO


def test_no_recvmmsg_means_one_recvfrom_per_datagram(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_receive, "new_batch", lambda: None)
    assert isinstance(_receive.receiver(cast(socket.socket, FakeSocket())), Single)


def test_drops_are_read_by_inode() -> None:
    assert drops_in(io.StringIO(PROC_NET_NETLINK), 91234) == 17
    assert drops_in(io.StringIO(PROC_NET_NETLINK), 492) == 3
    assert drops_in(io.StringIO(PROC_NET_NETLINK), 4) == 0


@pytest.mark.parametrize(
    ("text", "inode"),
    [
        (PROC_NET_NETLINK, 5),
        ("", 91234),
        ("sk Eth Pid Inode\n1 0 0 91234\n", 91234),
        (PROC_NET_NETLINK.replace(" 17 ", " x "), 91234),
    ],
    ids=["absent", "empty", "no-drops-column", "not-a-number"],
)
def test_drops_not_known(text: str, inode: int) -> None:
    assert drops_in(io.StringIO(text), inode) is None


@pytest.mark.parametrize(("count", "lost"), [(5, 5), (None, 0)])
def test_count_drops_tells_the_stream(monkeypatch: pytest.MonkeyPatch, count: int | None, lost: int) -> None:
    asked: list[int] = []

    def drops(inode: int) -> int | None:
        asked.append(inode)
        return count

    monkeypatch.setattr(_receive, "drops", drops)
    stream = EventStream()
    _receive.count_drops(stream, 91234)
    assert asked == [91234] and stream.stats.lost == lost


def test_an_unknown_count_leaves_the_one_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_receive, "drops", lambda inode: None)
    stream = EventStream()
    stream.kernel_drops(3)
    _receive.count_drops(stream, 91234)
    assert stream.stats.lost == 3


def test_the_drops_of_a_netlink_socket_of_this_kernel() -> None:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))  # listed once bound; no privilege needed
        assert _receive.drops(os.fstat(sock.fileno()).st_ino) == 0  # nothing sent to it
    assert _receive.drops(1 << 62) is None  # no such socket
