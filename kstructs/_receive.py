"""The two ways a listener takes datagrams off its socket, and its drop count.

``Batched`` takes a batch per ``recvmmsg()`` (``kstructs._recvmmsg.Batch``);
``Single`` one datagram per ``recvfrom_into()``, where libc lacks
``recvmmsg()`` or a seccomp filter refuses it. Both put what they receive
into an ``EventStream`` and answer the same three questions: ``resume`` (the
rest of a batch an exception interrupted), ``receive`` (one system call's
worth: how many datagrams, or a negative errno) and ``fallback`` (the
receiver to go on with after an error). ``drops`` reads the socket's
``Drops`` column of ``/proc/net/netlink``; ``count_drops`` tells the stream.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import socket
from collections.abc import Iterable, MutableSequence
from typing import Final, Protocol

from kstructs._recvmmsg import Batch
from kstructs.connector import CONNECTOR_MAX_MSG_SIZE, cn_msg
from kstructs.events import KERNEL_EVENT_SIZE
from kstructs.netlink import nlmsg_space
from kstructs.stream import EventStream, Item

# Room for the largest datagram the connector sends: one message of
# CONNECTOR_MAX_MSG_SIZE bytes of payload. A longer one (from a foreign
# sender: rejected anyway) is truncated.
RECV_SIZE: Final = nlmsg_space(ctypes.sizeof(cn_msg) + CONNECTOR_MAX_MSG_SIZE)
VLEN: Final = 64  # datagrams one recvmmsg() call takes at most
# Plain ints: the socket module's are IntFlag members, whose & runs in Python.
_MSG_TRUNC: Final = int(socket.MSG_TRUNC)
_MSG_DONTWAIT: Final = int(socket.MSG_DONTWAIT)


class Receiver(Protocol):
    """One way of receiving; both never block (``MSG_DONTWAIT``)."""

    def resume(self, stream: EventStream, out: MutableSequence[Item]) -> bool:
        """Take what an exception left in hand into ``stream``: whether there was any."""

    def receive(self, stream: EventStream, out: MutableSequence[Item]) -> int:
        """One system call into ``stream``: the datagrams received, or a negative errno."""

    def fallback(self, err: int) -> Receiver | None:
        """The receiver to go on with after ``err``, or None: ``err`` stands."""


def new_batch() -> Batch | None:
    """recvmmsg() slots, or None where libc lacks recvmmsg()."""
    try:
        return Batch(VLEN, RECV_SIZE, KERNEL_EVENT_SIZE)
    except OSError:
        return None


def receiver(sock: socket.socket) -> Receiver:
    """The fastest way to receive from ``sock`` that libc offers."""
    batch = new_batch()
    return Single(sock) if batch is None else Batched(sock, batch)


class Batched:
    """One ``recvmmsg()`` per batch of datagrams, read in ``batch``'s slots."""

    def __init__(self, sock: socket.socket, batch: Batch) -> None:
        self.sock, self.batch, self._fd = sock, batch, sock.fileno()

    def resume(self, stream: EventStream, out: MutableSequence[Item]) -> bool:
        # A batch an exception (a signal) interrupted, even before the
        # count came back from recvmmsg(): the rest of it first.
        batch = self.batch
        left = batch.filled()
        if left:
            self._take(stream, left, out, stream.offset // batch.size + 1)
        return bool(left)

    def receive(self, stream: EventStream, out: MutableSequence[Item]) -> int:
        batch = self.batch
        stream.offset = -batch.size  # none of the next batch taken yet
        n = batch.receive(self._fd, _MSG_DONTWAIT)
        if n > 0:
            self._take(stream, n, out, 0)
        return n

    def fallback(self, err: int) -> Receiver | None:
        # recvmmsg() refused: a seccomp filter answers ENOSYS or EPERM.
        return Single(self.sock) if err in (errno.ENOSYS, errno.EPERM) else None

    def _take(self, stream: EventStream, n: int, out: MutableSequence[Item], first: int) -> None:
        """Datagrams ``first`` to ``n`` of those the batch holds, into the
        stream. An exception (KeyboardInterrupt) leaves the rest of the batch,
        marked full, for the next read."""
        batch = self.batch
        size = batch.size
        if batch.uniform(n) == 0:  # whole kernel events, as the kernel sends them
            stream.receive_kernel(batch.view, range(first * size, n * size, size), out)
        else:
            frames = batch.frames(n)
            stream.receive_frames(batch.view, itertools.islice(frames, first, None) if first else frames, out)
        batch.clear(n)


class Single:
    """One ``recvfrom_into()`` per datagram, into one buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)

    def resume(self, stream: EventStream, out: MutableSequence[Item]) -> bool:
        return False  # a datagram in hand is in the stream, or lost with the exception

    def receive(self, stream: EventStream, out: MutableSequence[Item]) -> int:
        try:
            # MSG_TRUNC: the datagram's real length, to tell a truncated one.
            length, (sender, _groups) = self.sock.recvfrom_into(self._buf, 0, _MSG_DONTWAIT | _MSG_TRUNC)
        except OSError as e:
            return -(e.errno or errno.EIO)
        stream.receive(sender, length > RECV_SIZE, self._view[: min(length, RECV_SIZE)], out)
        return 1

    def fallback(self, err: int) -> Receiver | None:
        return None


def drops(inode: int) -> int | None:
    """The ``sk_drops`` of the netlink socket ``inode``: the Drops column of
    /proc/net/netlink (None: not known)."""
    try:
        with open("/proc/net/netlink") as f:
            return drops_in(f, inode)
    except OSError:
        return None


def count_drops(stream: EventStream, inode: int) -> None:
    """Tell ``stream`` the kernel's drop count for socket ``inode``, when known."""
    count = drops(inode)
    if count is not None:
        stream.kernel_drops(count)


def drops_in(lines: Iterable[str], inode: int) -> int | None:
    """``drops`` from the lines of a /proc/net/netlink."""
    rows = iter(lines)
    try:
        header = next(rows).split()
        drops_at, inode_at = header.index("Drops"), header.index("Inode")
        for line in rows:
            cols = line.split()
            if len(cols) > inode_at and int(cols[inode_at]) == inode:
                return int(cols[drops_at])
    except (StopIteration, ValueError):
        pass
    return None
